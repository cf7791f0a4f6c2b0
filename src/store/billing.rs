//! Billing state: the insurer's answers, delivered sessions and counters. Written in the same
//! transaction as the message that carries them (see [`Tx`]).

use sqlx::Row;
use sqlx::any::AnyRow;
use time::Date;

use super::{StoreError, Tx, iso_date, now, parse_date};
use crate::check::de::sessions::{ApprovalFacts, SessionUsage};
use crate::store::ledger::{LedgerEntry, minutes_in_window_of};

/// The recorded answer of an insurer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovalRow {
    /// Approved or refused.
    pub approved: bool,
    /// Genehmigungskennzeichen / preAuthRef.
    pub approval_number: Option<String>,
    /// Date of the approval.
    pub approval_date: Option<Date>,
    /// Approved period.
    pub period: Option<(Date, Date)>,
    /// Approved units.
    pub units: Option<u32>,
}

impl ApprovalRow {
    /// What the session check needs of it.
    pub fn facts(&self) -> ApprovalFacts {
        ApprovalFacts {
            approved: self.approved,
            period: self.period,
            units: self.units,
        }
    }
}

/// A referral as stored with its verdict.
#[derive(Debug, Clone)]
pub struct StoredReferral {
    /// `accepted`, `rejected` or `unreadable`.
    pub status: String,
    /// The patient's budget key.
    pub patient_key: Option<String>,
    /// The canonical referral, JSON.
    pub referral: Option<String>,
}

/// One delivered session as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRow {
    /// `system|value` of the provider's Encounter identifier.
    pub session_key: String,
    /// Gateway id of the referral.
    pub referral: String,
    /// Patient key.
    pub patient_key: String,
    /// Day.
    pub date: Date,
    /// Start time as sent (`HH:MM[:SS]`).
    pub start_time: Option<String>,
    /// Minutes delivered.
    pub minutes: u32,
    /// `individual` or `group`.
    pub delivery: String,
    /// Canonical setting code.
    pub setting: String,
    /// A trial session.
    pub trial: bool,
    /// The delivering professional.
    pub professional: Option<String>,
    /// Minutes charged against the budget.
    pub budget_minutes: u64,
    /// Minutes used of the approved units.
    pub unit_minutes: u64,
    /// The billing run that billed it, if any.
    pub billed_in: Option<String>,
}

fn opt_date(row: &AnyRow, column: &str) -> Result<Option<Date>, StoreError> {
    let value: Option<String> = row.try_get(column)?;
    value.as_deref().map(parse_date).transpose()
}

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn session_row(row: &AnyRow) -> Result<SessionRow, StoreError> {
    let date: String = row.try_get("session_date")?;
    let minutes: i64 = row.try_get("minutes")?;
    let trial: i64 = row.try_get("trial")?;
    Ok(SessionRow {
        session_key: row.try_get("session_key")?,
        referral: row.try_get("referral")?,
        patient_key: row.try_get("patient_key")?,
        date: parse_date(&date)?,
        start_time: row.try_get("start_time")?,
        minutes: u32::try_from(minutes).unwrap_or(0),
        delivery: row.try_get("delivery")?,
        setting: row.try_get("setting")?,
        trial: trial != 0,
        professional: row.try_get("professional")?,
        budget_minutes: to_u64(row.try_get("budget_minutes")?),
        unit_minutes: to_u64(row.try_get("unit_minutes")?),
        billed_in: row.try_get("billed_in")?,
    })
}

const SESSION_COLUMNS: &str = "session_key, referral, patient_key, session_date, start_time, minutes, delivery, setting, \
     trial, professional, budget_minutes, unit_minutes, billed_in";

impl Tx {
    /// A referral message by gateway id.
    pub async fn referral(&mut self, id: &str) -> Result<Option<StoredReferral>, StoreError> {
        let row = sqlx::query("SELECT status, patient_key, referral FROM messages WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *self.tx)
            .await?;
        row.map(|r| {
            Ok(StoredReferral {
                status: r.try_get("status")?,
                patient_key: r.try_get("patient_key")?,
                referral: r.try_get("referral")?,
            })
        })
        .transpose()
    }

    /// Records the insurer's answer to a referral. A newer answer (by its date) replaces an older
    /// one; a replayed older answer does not bring the old decision back.
    pub async fn record_approval(
        &mut self,
        referral: &str,
        message: &str,
        a: &ApprovalRow,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO approvals (referral, message, approved, approval_number, approval_date, period_start, \
             period_end, units, recorded_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
             ON CONFLICT (referral) DO UPDATE SET message = $2, approved = $3, approval_number = $4, \
             approval_date = $5, period_start = $6, period_end = $7, units = $8, recorded_at = $9 \
             WHERE approvals.approval_date IS NULL OR $5 IS NULL OR approvals.approval_date <= $5",
        )
        .bind(referral)
        .bind(message)
        .bind(i64::from(a.approved))
        .bind(a.approval_number.as_deref())
        .bind(a.approval_date.map(iso_date))
        .bind(a.period.map(|p| iso_date(p.0)))
        .bind(a.period.map(|p| iso_date(p.1)))
        .bind(a.units.map(i64::from))
        .bind(now())
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    /// The recorded answer to a referral.
    pub async fn approval(&mut self, referral: &str) -> Result<Option<ApprovalRow>, StoreError> {
        let row = sqlx::query(
            "SELECT approved, approval_number, approval_date, period_start, period_end, units \
             FROM approvals WHERE referral = $1",
        )
        .bind(referral)
        .fetch_optional(&mut *self.tx)
        .await?;
        let Some(r) = row else { return Ok(None) };
        let approved: i64 = r.try_get("approved")?;
        let units: Option<i64> = r.try_get("units")?;
        let start = opt_date(&r, "period_start")?;
        let end = opt_date(&r, "period_end")?;
        Ok(Some(ApprovalRow {
            approved: approved != 0,
            approval_number: r.try_get("approval_number")?,
            approval_date: opt_date(&r, "approval_date")?,
            period: start.zip(end),
            units: units.and_then(|u| u32::try_from(u).ok()),
        }))
    }

    /// The status of a session already stored under `key`.
    pub async fn session_status(&mut self, key: &str) -> Result<Option<String>, StoreError> {
        let row = sqlx::query("SELECT status FROM sessions WHERE session_key = $1")
            .bind(key)
            .fetch_optional(&mut *self.tx)
            .await?;
        row.map(|r| r.try_get("status").map_err(StoreError::from))
            .transpose()
    }

    /// What a referral and its patient have used by their accepted sessions: the referral's unit
    /// minutes and sessions, and the patient's budget minutes in the window containing `date`
    /// (sessions dated later in that window count too). Call under the patient's lock.
    pub async fn session_usage(
        &mut self,
        referral: &str,
        patient_key: &str,
        date: Date,
        window_years: i32,
    ) -> Result<SessionUsage, StoreError> {
        let rows = sqlx::query(
            "SELECT referral, session_date, budget_minutes, unit_minutes FROM sessions \
             WHERE patient_key = $1 AND status = 'accepted'",
        )
        .bind(patient_key)
        .fetch_all(&mut *self.tx)
        .await?;
        let mut usage = SessionUsage::default();
        let mut entries = Vec::with_capacity(rows.len());
        for r in rows {
            let of: String = r.try_get("referral")?;
            let day: String = r.try_get("session_date")?;
            let budget = to_u64(r.try_get("budget_minutes")?);
            if of == referral {
                usage.referral_unit_minutes += to_u64(r.try_get("unit_minutes")?);
                usage.referral_sessions += 1;
            }
            entries.push(LedgerEntry {
                patient_key: patient_key.to_owned(),
                start: parse_date(&day)?,
                minutes: budget,
                trial_units: 0,
            });
        }
        // The window the session's date falls in (a late report is charged to its own window).
        usage.patient_budget_minutes = minutes_in_window_of(&entries, date, window_years);
        Ok(usage)
    }

    /// Stores an accepted session; `false` when a session with its key exists already (a
    /// concurrent report of the same session: never counted twice).
    pub async fn insert_session(
        &mut self,
        message: &str,
        s: &SessionRow,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "INSERT INTO sessions (session_key, message, referral, patient_key, session_date, start_time, minutes, \
             delivery, setting, trial, professional, budget_minutes, unit_minutes, status) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, 'accepted') \
             ON CONFLICT (session_key) DO NOTHING",
        )
        .bind(&s.session_key)
        .bind(message)
        .bind(&s.referral)
        .bind(&s.patient_key)
        .bind(iso_date(s.date))
        .bind(s.start_time.as_deref())
        .bind(i64::from(s.minutes))
        .bind(&s.delivery)
        .bind(&s.setting)
        .bind(i64::from(s.trial))
        .bind(s.professional.as_deref())
        .bind(i64::try_from(s.budget_minutes).unwrap_or(i64::MAX))
        .bind(i64::try_from(s.unit_minutes).unwrap_or(i64::MAX))
        .execute(&mut *self.tx)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Cancels an accepted session; one that was billed already is marked for a correction
    /// record. Returns whether a session was cancelled.
    pub async fn cancel_session(&mut self, key: &str, referral: &str) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE sessions SET status = 'cancelled', \
             cancelled_after_billing = CASE WHEN billed_in IS NULL THEN 0 ELSE 1 END \
             WHERE session_key = $1 AND referral = $2 AND status = 'accepted'",
        )
        .bind(key)
        .bind(referral)
        .execute(&mut *self.tx)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Accepted sessions of the period not billed yet, oldest first.
    pub async fn unbilled_sessions(
        &mut self,
        first: Date,
        last: Date,
    ) -> Result<Vec<SessionRow>, StoreError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {SESSION_COLUMNS} FROM sessions WHERE status = 'accepted' AND billed_in IS NULL \
             AND session_date >= $1 AND session_date <= $2 ORDER BY session_date, session_key"
        )))
        .bind(iso_date(first))
        .bind(iso_date(last))
        .fetch_all(&mut *self.tx)
        .await?;
        rows.iter().map(session_row).collect()
    }

    /// Sessions cancelled after they were billed and not corrected yet.
    pub async fn sessions_to_correct(&mut self) -> Result<Vec<SessionRow>, StoreError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {SESSION_COLUMNS} FROM sessions WHERE status = 'cancelled' \
             AND cancelled_after_billing = 1 AND corrected_in IS NULL ORDER BY session_date, session_key"
        )))
        .fetch_all(&mut *self.tx)
        .await?;
        rows.iter().map(session_row).collect()
    }

    /// Accepted sessions billed in `run` for a referral (to restate a corrected bill).
    pub async fn billed_sessions(
        &mut self,
        referral: &str,
        run: &str,
    ) -> Result<Vec<SessionRow>, StoreError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {SESSION_COLUMNS} FROM sessions WHERE referral = $1 AND billed_in = $2 \
             AND status = 'accepted' ORDER BY session_date, session_key"
        )))
        .bind(referral)
        .bind(run)
        .fetch_all(&mut *self.tx)
        .await?;
        rows.iter().map(session_row).collect()
    }

    /// Marks sessions as billed in `run`. Fails (so the run rolls back) when a session is no
    /// longer accepted and unbilled: cancelled or billed by another run meanwhile.
    pub async fn mark_billed(&mut self, keys: &[String], run: &str) -> Result<(), StoreError> {
        for key in keys {
            let done = sqlx::query(
                "UPDATE sessions SET billed_in = $1 \
                 WHERE session_key = $2 AND billed_in IS NULL AND status = 'accepted'",
            )
            .bind(run)
            .bind(key)
            .execute(&mut *self.tx)
            .await?;
            if done.rows_affected() != 1 {
                return Err(StoreError::Conflict(
                    "a session changed while the billing run read it".to_owned(),
                ));
            }
        }
        Ok(())
    }

    /// Marks cancelled sessions as corrected in `run` (fails like [`Tx::mark_billed`]).
    pub async fn mark_corrected(&mut self, keys: &[String], run: &str) -> Result<(), StoreError> {
        for key in keys {
            let done = sqlx::query(
                "UPDATE sessions SET corrected_in = $1 WHERE session_key = $2 AND corrected_in IS NULL",
            )
            .bind(run)
            .bind(key)
            .execute(&mut *self.tx)
            .await?;
            if done.rows_affected() != 1 {
                return Err(StoreError::Conflict(
                    "a correction was written by another run meanwhile".to_owned(),
                ));
            }
        }
        Ok(())
    }

    /// Serialises billing runs: holds a lock on the `billing-run` counter row until commit
    /// (PostgreSQL `FOR UPDATE`; SQLite has one writer).
    pub async fn lock_billing(&mut self) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO counters (name, value) VALUES ('billing-run', 0) ON CONFLICT (name) DO NOTHING",
        )
        .execute(&mut *self.tx)
        .await?;
        if self.backend == super::Backend::Postgres {
            sqlx::query("SELECT value FROM counters WHERE name = 'billing-run' FOR UPDATE")
                .fetch_one(&mut *self.tx)
                .await?;
        }
        Ok(())
    }

    /// Increments the counter `name` and returns its new value (1 for a new counter).
    pub async fn next_counter(&mut self, name: &str) -> Result<i64, StoreError> {
        sqlx::query(
            "INSERT INTO counters (name, value) VALUES ($1, 1) \
             ON CONFLICT (name) DO UPDATE SET value = counters.value + 1",
        )
        .bind(name)
        .execute(&mut *self.tx)
        .await?;
        let row = sqlx::query("SELECT value FROM counters WHERE name = $1")
            .bind(name)
            .fetch_one(&mut *self.tx)
            .await?;
        Ok(row.try_get("value")?)
    }
}
