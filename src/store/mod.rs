//! Store: the durable state of the gateway, over sqlx. SQLite (an embedded file) by default,
//! PostgreSQL when the configured URL names one. The only module with SQL.
//!
//! One inbound message is written in one transaction ([`Tx`]): its raw bytes and headers, its
//! verdict, the ledger claim and the outbox rows. The intake acks only after that commits.

use sqlx::any::{AnyPoolOptions, AnyRow};
use std::sync::Arc;

use sqlx::{AnyPool, Row};
use time::Date;
use tokio::sync::Notify;

use crate::store::ledger::LedgerEntry;

pub mod billing;
mod checkpoint;
pub mod ledger;

/// Errors of the store: nothing was stored, so the caller retries or reports them; never a
/// verdict. All are I/O but [`StoreError::Panicked`], a defect while handling the message, which
/// is retried the same way (a defect that repeats ends on the dead-letter queue).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database refused or failed a statement, or could not be reached.
    #[error("database error")]
    Database(#[from] sqlx::Error),
    /// Migrations failed at start.
    #[error("database migration failed")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A stored value does not have the shape the gateway wrote.
    #[error("corrupt stored value: {0}")]
    Corrupt(String),
    /// Another transaction changed what this one read; nothing was written, try again.
    #[error("conflict: {0}")]
    Conflict(String),
    /// The process's store writer is gone (the runtime is shutting down, or it panicked and is
    /// being replaced); nothing was written.
    #[error("store writer stopped")]
    WriterStopped,
    /// The gateway panicked while handling the message (a defect) before anything was
    /// stored; the intake retries it and, failing that, dead-letters it.
    #[error("the gateway failed while handling the message (a defect)")]
    Panicked,
}

/// Which database is behind the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Embedded SQLite file.
    Sqlite,
    /// PostgreSQL server.
    Postgres,
}

/// The gateway's database.
#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    /// The relay's connections. On PostgreSQL they commit without waiting for the WAL flush
    /// (`synchronous_commit = off`): a claim or a sent mark lost in a crash only makes the relay
    /// publish a row again, which at-least-once delivery with stable message ids already
    /// allows, and the messages' own transactions no longer queue behind the relay's fsyncs.
    /// On SQLite it is the one pool.
    relay_pool: AnyPool,
    backend: Backend,
    /// Raised when a transaction that enqueued outbox rows commits, so the relay of this
    /// process publishes them at once instead of at its next poll.
    outbox_signal: Arc<Notify>,
    /// SQLite's WAL checkpoints, run beside the writer (a file database only).
    checkpointer: Option<Arc<checkpoint::Checkpointer>>,
}

/// An inbound message as stored before its verdict.
#[derive(Debug, Clone)]
pub struct NewMessage<'a> {
    /// Gateway id (UUID v7).
    pub id: &'a str,
    /// Idempotency key.
    pub idempotency_key: &'a str,
    /// `amqp`, `http` or `replay`.
    pub channel: &'a str,
    /// Content type as declared.
    pub content_type: Option<&'a str>,
    /// AMQP `message-id` or HTTP equivalent.
    pub message_id: Option<&'a str>,
    /// AMQP `correlation-id`.
    pub correlation_id: Option<&'a str>,
    /// AMQP `reply-to`.
    pub reply_to: Option<&'a str>,
    /// Other headers as JSON.
    pub headers: &'a str,
    /// SHA-256 of the body, hex.
    pub sha256: &'a str,
    /// The raw body.
    pub body: &'a [u8],
}

/// The outcome of storing an inbound message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inserted {
    /// First time this idempotency key was seen.
    New,
    /// Seen before: nothing is written again.
    Duplicate(StoredSummary),
}

/// What is known of a message already stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSummary {
    /// Gateway id.
    pub id: String,
    /// Status (`accepted`, `rejected`, `unreadable`, `dead`).
    pub status: String,
    /// OperationOutcome JSON, when finished.
    pub outcome: Option<String>,
}

/// A stored inbound message, for replay.
#[derive(Debug, Clone)]
pub struct StoredMessage {
    /// Gateway id.
    pub id: String,
    /// Idempotency key.
    pub idempotency_key: String,
    /// Status.
    pub status: String,
    /// Content type.
    pub content_type: Option<String>,
    /// Transport message id.
    pub message_id: Option<String>,
    /// Correlation id.
    pub correlation_id: Option<String>,
    /// Reply-to.
    pub reply_to: Option<String>,
    /// Headers JSON.
    pub headers: String,
    /// Raw body.
    pub body: Vec<u8>,
}

/// The verdict part of a message row.
#[derive(Debug, Clone)]
pub struct Finished<'a> {
    /// `accepted`, `rejected`, `unreadable` or `dead`.
    pub status: &'a str,
    /// Jurisdiction code, when decided.
    pub jurisdiction: Option<&'a str>,
    /// Patient key, when known.
    pub patient_key: Option<&'a str>,
    /// Rule codes, comma-separated.
    pub rule_codes: &'a str,
    /// Canonical referral JSON.
    pub referral: Option<&'a str>,
    /// OperationOutcome JSON.
    pub outcome: &'a str,
}

/// One message waiting in the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxRow {
    /// Row id; also the outbound AMQP `message-id` suffix.
    pub id: i64,
    /// Gateway id of the inbound message.
    pub message: String,
    /// What the output is (`provider`, `insurer`, `reply`, `rejected`, `dead-letter`, ...).
    pub kind: String,
    /// Exchange ("" = default exchange).
    pub exchange: String,
    /// Routing key.
    pub routing_key: String,
    /// Content type.
    pub content_type: String,
    /// Correlation id.
    pub correlation_id: Option<String>,
    /// Headers JSON object.
    pub headers: String,
    /// Body.
    pub body: Vec<u8>,
    /// Publish attempts so far.
    pub attempts: i64,
}

/// Bound parameters per `IN (...)` list: well under SQLite's 32,766 and PostgreSQL's 65,535.
const IDS_PER_STATEMENT: usize = 500;

/// The parameters `first ..` of a statement, `n` of them, as the backend names them:
/// `$first, $first+1, ...` on PostgreSQL, plain `?` on SQLite, which numbers those by position.
/// Binding a named parameter (`$7`, `?7`) costs SQLite a linear search of the statement's names
/// (`sqlite3_bind_parameter_name`, called by sqlx for every parameter), quadratic in a
/// multi-row insert's hundreds of parameters: a tenth of the writer thread's time in the
/// end-to-end benchmark. Statements built with this bind each parameter once, in order.
fn placeholders(backend: Backend, first: usize, n: usize) -> String {
    let mut out = String::with_capacity(n * 5);
    push_placeholders(&mut out, backend, first, n);
    out
}

/// [`placeholders`], written onto the end of `out`.
fn push_placeholders(out: &mut String, backend: Backend, first: usize, n: usize) {
    use std::fmt::Write as _;
    for i in first..first + n {
        if i > first {
            out.push_str(", ");
        }
        match backend {
            // Writing into a String cannot fail.
            Backend::Postgres => _ = write!(out, "${i}"),
            Backend::Sqlite => out.push('?'),
        }
    }
}

/// The `VALUES` list of a multi-row insert: `rows` rows of `columns` parameters each,
/// numbered from 1, `(.., ..), (.., ..)`.
fn value_rows(backend: Backend, rows: usize, columns: usize) -> String {
    let mut out = String::with_capacity(rows * (columns * 5 + 4));
    for n in 0..rows {
        if n > 0 {
            out.push_str(", ");
        }
        out.push('(');
        push_placeholders(&mut out, backend, 1 + n * columns, columns);
        out.push(')');
    }
    out
}

/// PostgreSQL's read of the ledger rows of `n` patients, through the patient index whatever
/// the table's statistics say.
///
/// `patient_key IN (..)` left the choice to the planner, and without statistics (a new
/// database; autovacuum off, as on the benchmark machine, or not yet run) it guesses that each
/// key matches 0.5 % of the rows: for a group commit of 40 patients a fifth of the table, so it
/// scanned the whole ledger on every commit, more rows with every referral (BENCHMARKS.md).
/// Here each key is looked up on its own (`LATERAL`, kept apart from the outer query by
/// `OFFSET 0`), where the index is the cheaper plan at any guess.
fn ledger_lookup_per_key(n: usize) -> String {
    format!(
        "SELECT l.patient_key, l.start_date, l.minutes, l.trial_units \
         FROM (VALUES {}) AS k (patient_key) CROSS JOIN LATERAL \
         (SELECT patient_key, start_date, minutes, trial_units FROM ledger \
          WHERE ledger.patient_key = k.patient_key OFFSET 0) AS l",
        value_rows(Backend::Postgres, n, 1)
    )
}

fn now() -> String {
    timestamp(time::OffsetDateTime::now_utc()).unwrap_or_default()
}

/// How the store writes a moment (`created_at`, `sent_at`, ...): RFC 3339 in UTC, so that
/// text order is time order to the second. None for years outside 0-9999, which RFC 3339
/// cannot write, and for moments that have no UTC date in `time`'s range.
fn timestamp(at: time::OffsetDateTime) -> Option<String> {
    at.checked_to_offset(time::UtcOffset::UTC)?
        .format(&time::format_description::well_known::Rfc3339)
        .ok()
}

/// Now, in Unix milliseconds: the clock of outbox leases.
pub fn now_ms() -> i64 {
    i64::try_from(time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000)
        .unwrap_or(i64::MAX)
}

fn iso_date(date: Date) -> String {
    format!(
        "{:04}-{:02}-{:02}",
        date.year(),
        date.month() as u8,
        date.day()
    )
}

fn parse_date(s: &str) -> Result<Date, StoreError> {
    let format = time::macros::format_description!("[year]-[month]-[day]");
    Date::parse(s, format).map_err(|e| StoreError::Corrupt(format!("date {s:?}: {e}")))
}

impl Store {
    /// Connects to `url` (`sqlite://path?mode=rwc`, `sqlite::memory:`, `postgres://...`) and
    /// runs the migrations of that backend.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("postgres") {
            Backend::Postgres
        } else {
            Backend::Sqlite
        };
        let options = pool_options();
        let pool = match backend {
            // SQLite has one writer; one connection serialises every transaction, which is
            // also what keeps budget updates per patient serial.
            Backend::Sqlite => {
                options
                    .max_connections(1)
                    .after_connect(|conn, _| {
                        Box::pin(async move {
                            sqlx::query("PRAGMA journal_mode = WAL")
                                .execute(&mut *conn)
                                .await?;
                            sqlx::query("PRAGMA synchronous = NORMAL")
                                .execute(&mut *conn)
                                .await?;
                            sqlx::query("PRAGMA foreign_keys = ON")
                                .execute(&mut *conn)
                                .await?;
                            sqlx::query("PRAGMA busy_timeout = 5000")
                                .execute(&mut *conn)
                                .await?;
                            Ok(())
                        })
                    })
                    .connect(url)
                    .await?
            }
            Backend::Postgres => {
                options
                    .max_connections(max_connections.max(2))
                    .connect(url)
                    .await?
            }
        };
        let relay_pool = match backend {
            Backend::Sqlite => pool.clone(),
            Backend::Postgres => {
                pool_options()
                    .max_connections(2)
                    .after_connect(|conn, _| {
                        Box::pin(async move {
                            sqlx::query("SET synchronous_commit = off")
                                .execute(&mut *conn)
                                .await?;
                            Ok(())
                        })
                    })
                    .connect(url)
                    .await?
            }
        };
        match backend {
            Backend::Sqlite => {
                sqlx::migrate!("src/store/migrations/sqlite")
                    .run(&pool)
                    .await?
            }
            Backend::Postgres => {
                sqlx::migrate!("src/store/migrations/postgres")
                    .run(&pool)
                    .await?
            }
        }
        // An in-memory database has no WAL, and a second connection would open another one.
        let checkpointer = (backend == Backend::Sqlite
            && !url.contains(":memory:")
            && !url.contains("mode=memory"))
        .then(|| checkpoint::spawn(url.to_owned()));
        Ok(Store {
            pool,
            relay_pool,
            backend,
            outbox_signal: Arc::new(Notify::new()),
            checkpointer,
        })
    }

    /// Resolves when a transaction of this process has committed outbox rows since the last
    /// call returned (a commit while nobody waits is kept, not lost). Other processes sharing
    /// the database are not seen: the relay still polls.
    pub async fn outbox_committed(&self) {
        self.outbox_signal.notified().await;
    }

    /// The same store over a pool of its own of `max_connections` to the same database, its
    /// connections opened (and woken) on the calling runtime; the relay's pool and the rest are
    /// shared. `None` on SQLite, whose one connection is what serialises its writes.
    pub(crate) async fn with_own_pool(
        &self,
        max_connections: u32,
    ) -> Result<Option<Store>, StoreError> {
        if self.backend == Backend::Sqlite {
            return Ok(None);
        }
        #[cfg(test)]
        if crate::pipeline::faults::own_pool_refused() {
            return Err(StoreError::Corrupt("refused for the test".to_owned()));
        }
        let options = (*self.pool.connect_options()).clone();
        let pool = pool_options()
            .max_connections(max_connections)
            .connect_with(options)
            .await?;
        Ok(Some(Store {
            pool,
            ..self.clone()
        }))
    }

    /// Closes the pool a store from [`Store::with_own_pool`] has of its own (the shared relay
    /// pool stays open).
    pub(crate) async fn close_own_pool(&self) {
        self.pool.close().await;
    }

    /// Which database this is.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Starts the transaction for one message.
    pub async fn begin(&self) -> Result<Tx, StoreError> {
        Ok(Tx {
            tx: self.pool.begin().await?,
            backend: self.backend,
            outbox_signal: self.outbox_signal.clone(),
            checkpointer: self.checkpointer.clone(),
            enqueued: false,
        })
    }

    /// A stored message by gateway id.
    pub async fn load_message(&self, id: &str) -> Result<Option<StoredMessage>, StoreError> {
        let row = sqlx::query(
            "SELECT id, idempotency_key, status, content_type, message_id, correlation_id, reply_to, headers, body \
             FROM messages WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| -> Result<StoredMessage, StoreError> {
            Ok(StoredMessage {
                id: r.try_get("id")?,
                idempotency_key: r.try_get("idempotency_key")?,
                status: r.try_get("status")?,
                content_type: r.try_get("content_type")?,
                message_id: r.try_get("message_id")?,
                correlation_id: r.try_get("correlation_id")?,
                reply_to: r.try_get("reply_to")?,
                headers: r.try_get("headers")?,
                body: r.try_get("body")?,
            })
        })
        .transpose()
    }

    /// Gateway ids of messages with `status`, oldest first.
    pub async fn message_ids_with_status(
        &self,
        status: &str,
        limit: i64,
    ) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query(
            "SELECT id FROM messages WHERE status = $1 ORDER BY received_at, id LIMIT $2",
        )
        .bind(status)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| Ok(r.try_get("id")?)).collect()
    }

    /// Counts of messages per status.
    pub async fn status_counts(&self) -> Result<Vec<(String, i64)>, StoreError> {
        let rows = sqlx::query(
            "SELECT status, COUNT(*) AS n FROM messages GROUP BY status ORDER BY status",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("status")?, r.try_get("n")?)))
            .collect()
    }

    /// Claims up to `limit` outbox rows for the relay `relay_id` for `lease_ms`, oldest first:
    /// pending rows, and rows whose previous claim expired (its relay died).
    pub async fn claim_outbox(
        &self,
        relay_id: &str,
        limit: i64,
        lease_ms: i64,
    ) -> Result<Vec<OutboxRow>, StoreError> {
        let now = now_ms();
        // The status condition is repeated in the outer WHERE so that, on PostgreSQL, a claim
        // that waited for a concurrent one re-checks the row and skips what that one took.
        let sql = match self.backend {
            Backend::Postgres => {
                "UPDATE outbox SET status = 'sending', claimed_by = $1, lease_until = $2 \
                 WHERE id IN (SELECT id FROM outbox WHERE status = 'pending' OR (status = 'sending' AND lease_until < $3) \
                              ORDER BY id LIMIT $4 FOR UPDATE SKIP LOCKED) \
                   AND (status = 'pending' OR (status = 'sending' AND lease_until < $3)) \
                 RETURNING id, message, kind, exchange, routing_key, content_type, correlation_id, headers, attempts"
            }
            Backend::Sqlite => {
                "UPDATE outbox SET status = 'sending', claimed_by = $1, lease_until = $2 \
                 WHERE id IN (SELECT id FROM outbox WHERE status = 'pending' OR (status = 'sending' AND lease_until < $3) \
                              ORDER BY id LIMIT $4) \
                 RETURNING id, message, kind, exchange, routing_key, content_type, correlation_id, headers, attempts"
            }
        };
        let rows = sqlx::query(sql)
            .bind(relay_id)
            .bind(now + lease_ms)
            .bind(now)
            .bind(limit)
            .fetch_all(&self.relay_pool)
            .await?;
        let mut out: Vec<OutboxRow> = rows.iter().map(outbox_row).collect::<Result<_, _>>()?;
        out.sort_by_key(|r| r.id);
        self.read_outbox_bodies(&mut out).await?;
        Ok(out)
    }

    /// Fills in the bodies of claimed rows, one statement per [`IDS_PER_STATEMENT`] rows. The
    /// claim is committed already; bodies never change, so reading them after it is safe.
    async fn read_outbox_bodies(&self, rows: &mut [OutboxRow]) -> Result<(), StoreError> {
        for chunk in rows.chunks_mut(IDS_PER_STATEMENT) {
            let sql = format!(
                "SELECT id, body FROM outbox_bodies WHERE id IN ({})",
                placeholders(self.backend, 1, chunk.len())
            );
            // Only placeholders are formatted into the text; every value is bound.
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
            for row in chunk.iter() {
                query = query.bind(row.id);
            }
            let mut bodies: std::collections::HashMap<i64, Vec<u8>> = query
                .fetch_all(&self.relay_pool)
                .await?
                .iter()
                .map(|r| Ok((r.try_get("id")?, r.try_get("body")?)))
                .collect::<Result<_, StoreError>>()?;
            for row in chunk.iter_mut() {
                row.body = bodies.remove(&row.id).ok_or_else(|| {
                    StoreError::Corrupt(format!("outbox row {} has no body", row.id))
                })?;
            }
        }
        Ok(())
    }

    /// Marks rows this relay published as sent: one statement per [`IDS_PER_STATEMENT`] rows,
    /// not one per row.
    pub async fn mark_sent(&self, relay_id: &str, ids: &[i64]) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        let at = now();
        if ids.len() <= IDS_PER_STATEMENT {
            // One statement is atomic on its own: no BEGIN and COMMIT round trips around it.
            self.mark_sent_statement(relay_id, &at, ids)
                .execute(&self.relay_pool)
                .await?;
        } else {
            let mut tx = self.relay_pool.begin().await?;
            for chunk in ids.chunks(IDS_PER_STATEMENT) {
                self.mark_sent_statement(relay_id, &at, chunk)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
        }
        if let Some(checkpointer) = &self.checkpointer {
            checkpointer.committed();
        }
        Ok(())
    }

    /// The statement marking `ids` (at most [`IDS_PER_STATEMENT`]) sent by `relay_id`.
    fn mark_sent_statement<'q>(
        &self,
        relay_id: &'q str,
        at: &'q str,
        ids: &'q [i64],
    ) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments> {
        let sql = format!(
            "UPDATE outbox SET status = 'sent', sent_at = {}, attempts = attempts + 1 \
             WHERE claimed_by = {} AND id IN ({})",
            placeholders(self.backend, 1, 1),
            placeholders(self.backend, 2, 1),
            placeholders(self.backend, 3, ids.len())
        );
        // Only placeholders are formatted into the text; every value is bound.
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(at)
            .bind(relay_id);
        for id in ids {
            query = query.bind(*id);
        }
        query
    }

    /// Counts a failed publish attempt of a row `relay_id` holds; after `max_attempts` the row
    /// is parked as `failed`. A row another relay took over after this one's lease ran out is
    /// left to that relay: it may have published the row and marked it sent already, and
    /// putting it back would publish it once more.
    pub async fn mark_failed_attempt(
        &self,
        relay_id: &str,
        id: i64,
        max_attempts: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE outbox SET attempts = attempts + 1, lease_until = 0, \
             status = CASE WHEN attempts + 1 >= $1 THEN 'failed' ELSE 'pending' END \
             WHERE id = $2 AND claimed_by = $3 AND status = 'sending'",
        )
        .bind(max_attempts)
        .bind(id)
        .bind(relay_id)
        .execute(&self.relay_pool)
        .await?;
        Ok(())
    }

    /// Deletes the bodies of outputs whose publish was confirmed before `sent_before`, among
    /// the `window` bodies that follow `after_id` in id order. The outbox rows stay: they are
    /// the record of each delivery (when, where, under which message-id). Kept are the bodies
    /// of rows still pending, in flight or parked as failed, and those of billing runs (Claims,
    /// § 302 interchanges): they are the only copy of a billing record.
    ///
    /// Every statement reads only the ids the window listed, by primary key, whatever the
    /// planner knows of the tables and however many ids earlier windows left behind: one
    /// statement joining both tables and ordered by id read every published row on PostgreSQL
    /// without statistics (0.4 s per 500 bodies at 300,000 rows, and growing).
    pub async fn prune_sent_bodies(
        &self,
        sent_before: time::OffsetDateTime,
        after_id: i64,
        window: i64,
    ) -> Result<PrunedWindow, StoreError> {
        // Compared as text with `sent_at` and `created_at`, written the same way. Nothing was
        // sent in a year RFC 3339 cannot write.
        let Some(cutoff) = timestamp(sent_before) else {
            return Ok(PrunedWindow::END);
        };
        let window = window.clamp(1, IDS_PER_STATEMENT as i64);
        let ids: Vec<i64> =
            sqlx::query("SELECT id FROM outbox_bodies WHERE id > $1 ORDER BY id LIMIT $2")
                .bind(after_id)
                .bind(window)
                .fetch_all(&self.relay_pool)
                .await?
                .iter()
                .map(|row| row.try_get("id"))
                .collect::<Result<_, _>>()?;
        let Some(&last) = ids.last() else {
            return Ok(PrunedWindow::END);
        };
        let sql = format!(
            "DELETE FROM outbox_bodies WHERE id IN (SELECT o.id FROM outbox o \
             WHERE o.id IN ({}) AND o.status = 'sent' AND o.sent_at < {} \
             AND NOT EXISTS (SELECT 1 FROM messages m WHERE m.id = o.message AND m.status = 'billing-run'))",
            placeholders(self.backend, 1, ids.len()),
            placeholders(self.backend, ids.len() + 1, 1),
        );
        // Only placeholders are formatted into the text; every value is bound.
        let mut delete = sqlx::query(sqlx::AssertSqlSafe(sql));
        for id in &ids {
            delete = delete.bind(*id);
        }
        let deleted = delete
            .bind(&cutoff)
            .execute(&self.relay_pool)
            .await?
            .rows_affected();
        // An output created after the cutoff cannot have been published before it, and ids
        // grow with creation: the bodies after this window are all too young.
        let created: Option<String> = sqlx::query("SELECT created_at FROM outbox WHERE id = $1")
            .bind(last)
            .fetch_optional(&self.relay_pool)
            .await?
            .map(|row| row.try_get("created_at"))
            .transpose()?;
        Ok(PrunedWindow {
            deleted,
            last_id: Some(last),
            reached_cutoff: created.is_some_and(|at| at >= cutoff),
        })
    }

    /// Rows waiting in the outbox.
    pub async fn outbox_depth(&self) -> Result<i64, StoreError> {
        let row =
            sqlx::query("SELECT COUNT(*) AS n FROM outbox WHERE status IN ('pending', 'sending')")
                .fetch_one(&self.relay_pool)
                .await?;
        Ok(row.try_get("n")?)
    }

    /// Total minutes recorded for a patient (for operators and tests).
    pub async fn ledger_minutes(&self, patient_key: &str) -> Result<i64, StoreError> {
        let row =
            sqlx::query("SELECT CAST(COALESCE(SUM(minutes), 0) AS BIGINT) AS n FROM ledger WHERE patient_key = $1")
                .bind(patient_key)
                .fetch_one(&self.pool)
                .await?;
        Ok(row.try_get("n")?)
    }

    /// Closes the pool.
    pub async fn close(&self) {
        if let Some(checkpointer) = &self.checkpointer {
            checkpointer.stop();
        }
        self.relay_pool.close().await;
        self.pool.close().await;
    }
}

/// A connection idle for longer than this is pinged before the pool hands it out.
const PING_AFTER_IDLE: std::time::Duration = std::time::Duration::from_secs(1);

/// Pool options shared by every pool: sqlx pings a connection each time it goes back to the
/// pool, and by default again each time it comes out. Under load a connection comes out again
/// milliseconds after the ping that put it back, so that second ping only added a round trip to
/// every group commit; it is kept for connections that have been idle for a while (a database
/// restarted in between is found before a transaction starts).
fn pool_options() -> AnyPoolOptions {
    AnyPoolOptions::new()
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for > PING_AFTER_IDLE {
                    sqlx::Connection::ping(conn).await?;
                }
                Ok(true)
            })
        })
}

/// Binds a message's raw columns in the order both inserts name them: id, idempotency key,
/// channel, the time (received and updated), content type, message-id, correlation-id,
/// reply-to, headers, SHA-256, body.
fn bind_raw_message<'q>(
    query: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>,
    m: &NewMessage<'q>,
    at: String,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments> {
    query
        .bind(m.id)
        .bind(m.idempotency_key)
        .bind(m.channel)
        .bind(at)
        .bind(m.content_type)
        .bind(m.message_id)
        .bind(m.correlation_id)
        .bind(m.reply_to)
        .bind(m.headers)
        .bind(m.sha256)
        .bind(m.body)
}

/// What one window of [`Store::prune_sent_bodies`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrunedWindow {
    /// Bodies deleted.
    pub deleted: u64,
    /// The last body id the window looked at: the next window starts after it. `None`: there
    /// was no body after the given id.
    pub last_id: Option<i64>,
    /// The window reached outputs created at or after the cutoff: no later body is due yet.
    pub reached_cutoff: bool,
}

impl PrunedWindow {
    /// Nothing (more) to look at: the pass ends.
    const END: PrunedWindow = PrunedWindow {
        deleted: 0,
        last_id: None,
        reached_cutoff: true,
    };
}

/// An outbox row as a claim returns it, before its body is read from `outbox_bodies`.
fn outbox_row(r: &AnyRow) -> Result<OutboxRow, StoreError> {
    Ok(OutboxRow {
        id: r.try_get("id")?,
        message: r.try_get("message")?,
        kind: r.try_get("kind")?,
        exchange: r.try_get("exchange")?,
        routing_key: r.try_get("routing_key")?,
        content_type: r.try_get("content_type")?,
        correlation_id: r.try_get("correlation_id")?,
        headers: r.try_get("headers")?,
        body: Vec::new(),
        attempts: r.try_get("attempts")?,
    })
}

/// The ids an outbox insert returned (`RETURNING id, message, kind, routing_key`), in the
/// order of `outs`.
fn ids_in_order(
    outs: &[(&str, &NewOutbound)],
    returned: &[AnyRow],
) -> Result<Vec<i64>, StoreError> {
    let returned = returned
        .iter()
        .map(|row| {
            Ok((
                row.try_get::<i64, _>("id")?,
                row.try_get::<&str, _>("message")?,
                row.try_get::<&str, _>("kind")?,
                row.try_get::<&str, _>("routing_key")?,
            ))
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    let wanted: Vec<(&str, &str, &str)> = outs
        .iter()
        .map(|(message, out)| (*message, out.kind.as_str(), out.routing_key.as_str()))
        .collect();
    place_ids(&wanted, returned).ok_or_else(|| {
        StoreError::Corrupt("an outbox insert did not return one of its rows".to_owned())
    })
}

/// Each `wanted` output's id among the `returned` rows `(id, message, kind, routing_key)`;
/// `None` if one has no row. RETURNING promises no order, so a row is matched by what names
/// its output. A message has one output of each kind; were one repeated, its ids are handed
/// out in ascending order, the order in which a multi-row insert numbers its rows. A chunk has
/// at most a few dozen rows: a linear match, no keys copied.
fn place_ids(
    wanted: &[(&str, &str, &str)],
    mut returned: Vec<(i64, &str, &str, &str)>,
) -> Option<Vec<i64>> {
    returned.sort_unstable_by_key(|row| row.0);
    let mut ids: Vec<Option<i64>> = vec![None; wanted.len()];
    for (id, message, kind, routing_key) in returned {
        let place = wanted
            .iter()
            .zip(&ids)
            .position(|(&output, taken)| taken.is_none() && output == (message, kind, routing_key));
        if let Some(place) = place {
            ids[place] = Some(id);
        }
    }
    ids.into_iter().collect()
}

/// Outbox rows written already claimed, for the relay of the writing process.
#[derive(Debug, Clone, Copy)]
pub struct OutboxClaim<'a> {
    /// The relay that owns the rows.
    pub relay_id: &'a str,
    /// Until when (Unix milliseconds); then any relay may claim them.
    pub lease_until: i64,
}

/// An outbound message to enqueue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewOutbound {
    /// What the output is.
    pub kind: String,
    /// Exchange ("" = default exchange).
    pub exchange: String,
    /// Routing key.
    pub routing_key: String,
    /// Content type.
    pub content_type: String,
    /// Correlation id.
    pub correlation_id: Option<String>,
    /// Headers JSON object.
    pub headers: String,
    /// Body.
    pub body: Vec<u8>,
}

/// The transaction of one inbound message.
pub struct Tx {
    tx: sqlx::Transaction<'static, sqlx::Any>,
    backend: Backend,
    outbox_signal: Arc<Notify>,
    checkpointer: Option<Arc<checkpoint::Checkpointer>>,
    enqueued: bool,
}

impl Tx {
    /// Stores the raw message, unless its idempotency key was seen before. Its verdict follows
    /// with [`Tx::finish_message`] (billing writes rows that refer to it in between).
    pub async fn insert_message(&mut self, m: &NewMessage<'_>) -> Result<Inserted, StoreError> {
        let at = now();
        let query = sqlx::query(
            "INSERT INTO messages (id, idempotency_key, channel, received_at, updated_at, content_type, message_id, \
             correlation_id, reply_to, headers, sha256, body, status) \
             VALUES ($1, $2, $3, $4, $4, $5, $6, $7, $8, $9, $10, $11, 'received') \
             ON CONFLICT (idempotency_key) DO NOTHING",
        );
        let inserted = bind_raw_message(query, m, at)
            .execute(&mut *self.tx)
            .await?;
        self.new_or_duplicate(inserted.rows_affected(), m.idempotency_key)
            .await
    }

    /// Stores the raw message together with its verdict in one row write, unless its
    /// idempotency key was seen before. One write instead of insert-then-update: on PostgreSQL
    /// the update wrote a second row version and new entries in every index of `messages`.
    pub async fn insert_finished_message(
        &mut self,
        m: &NewMessage<'_>,
        f: &Finished<'_>,
    ) -> Result<Inserted, StoreError> {
        let written = self
            .insert_finished_messages(&[(m.clone(), f.clone())])
            .await?;
        self.new_or_duplicate(written, m.idempotency_key).await
    }

    /// `New` when the insert wrote its row, else what is stored under the key.
    async fn new_or_duplicate(
        &mut self,
        rows_affected: u64,
        idempotency_key: &str,
    ) -> Result<Inserted, StoreError> {
        if rows_affected == 1 {
            return Ok(Inserted::New);
        }
        self.stored_by_keys(&[idempotency_key])
            .await?
            .remove(idempotency_key)
            .map(Inserted::Duplicate)
            .ok_or_else(|| StoreError::Conflict("no row under a key that conflicted".to_owned()))
    }

    /// The rows of `select` (a query ending in `... IN`) for every one of `keys`, one
    /// statement per chunk of keys.
    async fn fetch_in(&mut self, select: &str, keys: &[&str]) -> Result<Vec<AnyRow>, StoreError> {
        let backend = self.backend;
        self.fetch_by_keys(keys, |n| {
            format!("{select} ({})", placeholders(backend, 1, n))
        })
        .await
    }

    /// The rows of `statement(n)` (a statement with `n` placeholders, bound to `n` keys) for
    /// every one of `keys`, one statement per chunk of keys.
    async fn fetch_by_keys(
        &mut self,
        keys: &[&str],
        statement: impl Fn(usize) -> String,
    ) -> Result<Vec<AnyRow>, StoreError> {
        let mut rows = Vec::new();
        for chunk in keys.chunks(IDS_PER_STATEMENT) {
            // Only placeholders are formatted into the text; every value is bound.
            let mut query = sqlx::query(sqlx::AssertSqlSafe(statement(chunk.len())));
            for key in chunk {
                query = query.bind(*key);
            }
            rows.extend(query.fetch_all(&mut *self.tx).await?);
        }
        Ok(rows)
    }

    /// What is already stored under each of `keys`, by key: a group commit's duplicates, found
    /// before anything is written.
    pub async fn stored_by_keys(
        &mut self,
        keys: &[&str],
    ) -> Result<std::collections::HashMap<String, StoredSummary>, StoreError> {
        let rows = self
            .fetch_in(
                "SELECT idempotency_key, id, status, outcome FROM messages WHERE idempotency_key IN",
                keys,
            )
            .await?;
        let mut found = std::collections::HashMap::with_capacity(rows.len());
        for row in rows {
            found.insert(
                row.try_get("idempotency_key")?,
                StoredSummary {
                    id: row.try_get("id")?,
                    status: row.try_get("status")?,
                    outcome: row.try_get("outcome")?,
                },
            );
        }
        Ok(found)
    }

    /// Takes the locks of several patients until commit, in the order given: callers sort the
    /// keys, so that two writers never wait for each other's locks in a cycle. `keys` must not
    /// repeat (PostgreSQL refuses to update one row twice in a statement).
    pub async fn lock_patients(&mut self, keys: &[&str]) -> Result<(), StoreError> {
        for chunk in keys.chunks(IDS_PER_STATEMENT) {
            let conflict = match self.backend {
                // An upsert that always updates takes each row lock in the same round trip.
                Backend::Postgres => "DO UPDATE SET patient_key = EXCLUDED.patient_key",
                Backend::Sqlite => "DO NOTHING",
            };
            let sql = format!(
                "INSERT INTO patients (patient_key) VALUES {} ON CONFLICT (patient_key) {conflict}",
                value_rows(self.backend, chunk.len(), 1)
            );
            // Only placeholders are formatted into the text; every value is bound.
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
            for key in chunk {
                query = query.bind(*key);
            }
            query.execute(&mut *self.tx).await?;
        }
        Ok(())
    }

    /// Every ledger claim of these patients (take their locks first).
    pub async fn ledger_entries(&mut self, keys: &[&str]) -> Result<Vec<LedgerEntry>, StoreError> {
        let rows = match self.backend {
            Backend::Sqlite => {
                self.fetch_in(
                    "SELECT patient_key, start_date, minutes, trial_units FROM ledger WHERE patient_key IN",
                    keys,
                )
                .await?
            }
            Backend::Postgres => {
                // A key given twice would be joined twice (`IN` matched it once).
                let mut keys = keys.to_vec();
                keys.sort_unstable();
                keys.dedup();
                self.fetch_by_keys(&keys, ledger_lookup_per_key).await?
            }
        };
        let mut entries = Vec::with_capacity(rows.len());
        for r in rows {
            let start_date: String = r.try_get("start_date")?;
            let minutes: i64 = r.try_get("minutes")?;
            let trial_units: i64 = r.try_get("trial_units")?;
            entries.push(LedgerEntry {
                patient_key: r.try_get("patient_key")?,
                start: parse_date(&start_date)?,
                minutes: u64::try_from(minutes).unwrap_or(0),
                trial_units: u32::try_from(trial_units).unwrap_or(0),
            });
        }
        Ok(entries)
    }

    /// Stores several finished messages, one statement per chunk. Returns how many rows were
    /// written: fewer than given means another writer claimed one of the idempotency keys
    /// after [`Tx::stored_by_keys`] looked (the caller gives up the transaction).
    pub async fn insert_finished_messages(
        &mut self,
        rows: &[(NewMessage<'_>, Finished<'_>)],
    ) -> Result<u64, StoreError> {
        const COLUMNS: usize = 18;
        let at = now();
        let mut written = 0;
        for chunk in rows.chunks(IDS_PER_STATEMENT / COLUMNS) {
            // updated_at last, so that every parameter is bound once and in order.
            let sql = format!(
                "INSERT INTO messages (id, idempotency_key, channel, received_at, content_type, message_id, \
                 correlation_id, reply_to, headers, sha256, body, status, jurisdiction, patient_key, rule_codes, \
                 referral, outcome, updated_at) VALUES {} ON CONFLICT (idempotency_key) DO NOTHING",
                value_rows(self.backend, chunk.len(), COLUMNS)
            );
            // Only placeholders are formatted into the text; every value is bound.
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
            for (m, f) in chunk {
                query = bind_raw_message(query, m, at.clone())
                    .bind(f.status)
                    .bind(f.jurisdiction)
                    .bind(f.patient_key)
                    .bind(f.rule_codes)
                    .bind(f.referral)
                    .bind(f.outcome)
                    .bind(at.clone());
            }
            written += query.execute(&mut *self.tx).await?.rows_affected();
        }
        Ok(written)
    }

    /// Appends several accepted referrals' claims to the ledger: (message id, claim).
    pub async fn record_ledger_all(
        &mut self,
        entries: &[(&str, &LedgerEntry)],
    ) -> Result<(), StoreError> {
        const COLUMNS: usize = 5;
        for chunk in entries.chunks(IDS_PER_STATEMENT / COLUMNS) {
            let sql = format!(
                "INSERT INTO ledger (patient_key, message, start_date, minutes, trial_units) VALUES {}",
                value_rows(self.backend, chunk.len(), COLUMNS)
            );
            // Only placeholders are formatted into the text; every value is bound.
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
            for (message, entry) in chunk {
                query = query
                    .bind(entry.patient_key.as_str())
                    .bind(*message)
                    .bind(iso_date(entry.start))
                    .bind(i64::try_from(entry.minutes).unwrap_or(i64::MAX))
                    .bind(i64::from(entry.trial_units));
            }
            query.execute(&mut *self.tx).await?;
        }
        Ok(())
    }

    /// Takes the per-patient lock until commit, so concurrent work on one patient's budget
    /// happens one after the other (on SQLite the single writer does this).
    pub async fn lock_patient(&mut self, patient_key: &str) -> Result<(), StoreError> {
        self.lock_patients(&[patient_key]).await
    }

    /// Writes the verdict of a message.
    pub async fn finish_message(&mut self, id: &str, f: &Finished<'_>) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE messages SET status = $1, jurisdiction = $2, patient_key = $3, rule_codes = $4, referral = $5, \
             outcome = $6, updated_at = $7 WHERE id = $8",
        )
        .bind(f.status)
        .bind(f.jurisdiction)
        .bind(f.patient_key)
        .bind(f.rule_codes)
        .bind(f.referral)
        .bind(f.outcome)
        .bind(now())
        .bind(id)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    /// Adds an outbound message to the outbox.
    pub async fn enqueue(&mut self, message: &str, out: &NewOutbound) -> Result<(), StoreError> {
        self.enqueue_all(message, std::slice::from_ref(out)).await
    }

    /// Adds the outbound messages of one inbound message to the outbox, in one statement.
    pub async fn enqueue_all(
        &mut self,
        message: &str,
        outs: &[NewOutbound],
    ) -> Result<(), StoreError> {
        let rows: Vec<(&str, &NewOutbound)> = outs.iter().map(|out| (message, out)).collect();
        self.enqueue_many(&rows).await
    }

    /// Adds outbound messages of several inbound messages to the outbox: (message id, output),
    /// one statement per chunk. The rows wait for a relay's claim.
    pub async fn enqueue_many(&mut self, outs: &[(&str, &NewOutbound)]) -> Result<(), StoreError> {
        self.insert_outbox(outs, None).await?;
        Ok(())
    }

    /// Adds outbound messages already claimed by `claim.relay_id` until `claim.lease_until`,
    /// for a relay of this process that is handed the rows after the commit and so never reads
    /// them back. Should that relay not mark them sent in time, any relay claims them again
    /// when the lease has run out, as after a crash. Returns the rows' ids in `outs`' order.
    pub async fn enqueue_claimed(
        &mut self,
        outs: &[(&str, &NewOutbound)],
        claim: &OutboxClaim<'_>,
    ) -> Result<Vec<i64>, StoreError> {
        self.insert_outbox(outs, Some(claim)).await
    }

    /// Per chunk, one multi-row insert of the rows and one of their bodies (a table of their
    /// own, see the migration `0003_outbox_bodies`). Returns the rows' ids in `outs`' order.
    async fn insert_outbox(
        &mut self,
        outs: &[(&str, &NewOutbound)],
        claim: Option<&OutboxClaim<'_>>,
    ) -> Result<Vec<i64>, StoreError> {
        const COLUMNS: usize = 11;
        let (status, claimed_by, lease_until) = match claim {
            None => ("pending", None, 0),
            Some(claim) => ("sending", Some(claim.relay_id), claim.lease_until),
        };
        let mut ids = Vec::with_capacity(outs.len());
        for chunk in outs.chunks(IDS_PER_STATEMENT / COLUMNS) {
            let sql = format!(
                "INSERT INTO outbox (message, kind, exchange, routing_key, content_type, correlation_id, headers, \
                 created_at, status, claimed_by, lease_until) VALUES {} RETURNING id, message, kind, routing_key",
                value_rows(self.backend, chunk.len(), COLUMNS)
            );
            let at = now();
            // Only placeholders are formatted into the text; every value is bound.
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
            for (message, out) in chunk {
                query = query
                    .bind(*message)
                    .bind(&out.kind)
                    .bind(&out.exchange)
                    .bind(&out.routing_key)
                    .bind(&out.content_type)
                    .bind(out.correlation_id.as_deref())
                    .bind(&out.headers)
                    .bind(at.clone())
                    .bind(status)
                    .bind(claimed_by)
                    .bind(lease_until);
            }
            let returned = query.fetch_all(&mut *self.tx).await?;
            let chunk_ids = ids_in_order(chunk, &returned)?;
            self.insert_outbox_bodies(chunk, &chunk_ids).await?;
            ids.extend(chunk_ids);
        }
        // Only unclaimed rows need the relay to look.
        if claim.is_none() && !outs.is_empty() {
            self.enqueued = true;
        }
        Ok(ids)
    }

    /// The bodies of outbox rows just inserted, `ids` in `outs`' order, in one statement.
    async fn insert_outbox_bodies(
        &mut self,
        outs: &[(&str, &NewOutbound)],
        ids: &[i64],
    ) -> Result<(), StoreError> {
        let sql = format!(
            "INSERT INTO outbox_bodies (id, body) VALUES {}",
            value_rows(self.backend, outs.len(), 2)
        );
        // Only placeholders are formatted into the text; every value is bound.
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for ((_, out), id) in outs.iter().zip(ids) {
            query = query.bind(*id).bind(&out.body);
        }
        query.execute(&mut *self.tx).await?;
        Ok(())
    }

    /// Commits everything written for this message.
    pub async fn commit(self) -> Result<(), StoreError> {
        self.tx.commit().await?;
        if let Some(checkpointer) = &self.checkpointer {
            checkpointer.committed();
        }
        if self.enqueued {
            self.outbox_signal.notify_one();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn value_rows_number_every_parameter_once_in_order() {
        assert_eq!(
            value_rows(Backend::Postgres, 2, 3),
            "($1, $2, $3), ($4, $5, $6)"
        );
        assert_eq!(value_rows(Backend::Sqlite, 2, 2), "(?, ?), (?, ?)");
        assert_eq!(placeholders(Backend::Postgres, 3, 2), "$3, $4");
    }

    #[test]
    fn returned_ids_are_placed_by_output_whatever_their_order() {
        let wanted = [
            ("m1", "provider", "provider.1"),
            ("m2", "provider", "provider.1"),
            ("m1", "insurer", "payer.9"),
            ("m1", "insurer", "payer.9"),
        ];
        // Out of order, two messages with the same kinds, one output repeated.
        let returned = vec![
            (14, "m1", "insurer", "payer.9"),
            (12, "m2", "provider", "provider.1"),
            (13, "m1", "insurer", "payer.9"),
            (11, "m1", "provider", "provider.1"),
        ];
        assert_eq!(place_ids(&wanted, returned), Some(vec![11, 12, 13, 14]));
        // A row that names no wanted output leaves that output without an id.
        let returned = vec![
            (11, "m1", "provider", "provider.1"),
            (12, "m3", "provider", "provider.1"),
            (13, "m1", "insurer", "payer.9"),
            (14, "m1", "insurer", "payer.9"),
        ];
        assert_eq!(place_ids(&wanted, returned), None);
    }
}
