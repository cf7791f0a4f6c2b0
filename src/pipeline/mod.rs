//! The pipeline: the one place that sequences the stages
//! (intake -> decode -> map -> check -> store -> forward).

use sha2::{Digest, Sha256};

pub mod billing;
mod commit;
pub mod gateway;
use time::Date;

use crate::check::{self, CheckContext, Issue, RulePacks, Verdict};
use crate::decode::{self, Format, Limits};
use crate::map;
use crate::mappings::{Mappings, MappingsError};
use crate::model::{IdentifierKind, Jurisdiction, Referral, ReferralIds, ReferralKind};
use crate::outcome::OperationOutcome;
use crate::store::ledger::{Ledger, LedgerEntry, LedgerError, PriorUsage};

/// Rule codes the pipeline itself reports.
pub const RULES: &[&str] = &["GW-INT-01"];

/// The stage names `GW-INT-01` reports: where the gateway failed.
const DECODE_MAP: &str = "decode/map";
const CHECK: &str = "check";
/// In the writer: the check, the outcome and the planned outputs.
const CHECK_FORWARD: &str = "check/forward";

/// Runs `stage` of one message, turning a panic into `None`.
///
/// A panic is a defect of the gateway, never an expected path. Caught here, it costs only its
/// own message, which ends `unreadable` with `GW-INT-01` (see [`Engine::internal_failure`]),
/// stored and dead-lettered like any message that cannot be processed. Uncaught, on an
/// intake's task it would leave its delivery unacknowledged for good (a prefetch slot lost
/// until the channel closes) and in the writer it would end the writer. Going on after it is
/// sound: the engine is loaded once and only read, so a panic leaves nothing half-changed.
pub(crate) fn guarded<T>(stage: impl FnOnce() -> T) -> Option<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(stage)).ok()
}

/// For the tests: panics at named points, so that they can show what a defect costs (a
/// message whose id is `panic-at-<point>` panics there), a refusal of the writers' own
/// PostgreSQL pool, and gateways over a scratch database of the test's own.
#[cfg(test)]
pub(crate) mod faults {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::Engine;
    use super::gateway::{Envelope, Gateway};
    use crate::bench::ScratchStore;
    use crate::config::AmqpConfig;
    use crate::decode::Limits;
    use crate::mappings::Mappings;
    use crate::store::Store;

    /// Set: [`Store::with_own_pool`] fails on PostgreSQL, as when the server has no connection
    /// left for the writers. Only one test of this crate sets it.
    pub(crate) static REFUSE_OWN_POOL: AtomicBool = AtomicBool::new(false);

    /// Panics if `message_id` asks for a panic at `point`.
    pub(crate) fn hit(point: &str, message_id: Option<&str>) {
        if message_id.and_then(|id| id.strip_prefix("panic-at-")) == Some(point) {
            panic!("injected fault at {point}");
        }
    }

    /// Whether the writers' own pool is to be refused (see [`REFUSE_OWN_POOL`]).
    pub(crate) fn own_pool_refused() -> bool {
        REFUSE_OWN_POOL.load(Ordering::SeqCst)
    }

    /// A gateway with the project's mappings over `database` (a new SQLite file if `None`);
    /// keep the second value until the end of the test, which deletes the database.
    pub(crate) async fn gateway_over(database: Option<ScratchStore>) -> (Gateway, ScratchStore) {
        let database = database.unwrap_or_else(crate::bench::sqlite_url);
        let store = Store::connect(&database, 4)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let engine = Engine::load(&Mappings::default_dir(), Limits::default())
            .unwrap_or_else(|e| panic!("{e}"));
        let gateway = Gateway::new(Arc::new(engine), store, AmqpConfig::default(), "en");
        (gateway, database)
    }

    /// A gateway over a new SQLite file (see [`gateway_over`]).
    pub(crate) async fn sqlite_gateway() -> (Gateway, ScratchStore) {
        gateway_over(None).await
    }

    /// A FHIR JSON envelope as the AMQP intake builds it.
    pub(crate) fn envelope(body: &[u8], message_id: &str) -> Envelope {
        Envelope {
            channel: "amqp",
            body: body.to_vec().into(),
            content_type: Some("application/fhir+json".to_owned()),
            message_id: Some(message_id.to_owned()),
            headers: serde_json::json!({}),
            ..Envelope::default()
        }
    }
}

/// Everything loaded once at start that the stages need per message.
#[derive(Debug)]
pub struct Engine {
    mappings: Mappings,
    packs: RulePacks,
    limits: Limits,
}

/// One inbound message as an intake hands it over.
#[derive(Debug, Clone, Copy)]
pub struct Inbound<'a> {
    /// Raw payload.
    pub bytes: &'a [u8],
    /// Declared content type, if any.
    pub content_type: Option<&'a str>,
    /// Transport message id (AMQP `message-id`), if any.
    pub message_id: Option<&'a str>,
    /// Jurisdiction fixed by the intake's configuration (queue or HTTP route), if any.
    pub jurisdiction: Option<Jurisdiction>,
}

/// The result of processing one message.
#[derive(Debug)]
pub struct Processed {
    /// The decision.
    pub verdict: Verdict,
    /// Detected format (none when even that failed).
    pub format: Option<Format>,
    /// The canonical referral (none when unreadable).
    pub referral: Option<Referral>,
    /// All findings, in stage order.
    pub issues: Vec<Issue>,
    /// SHA-256 of the payload, hex.
    pub sha256: String,
    /// For FHIR XML: the FHIR JSON shape decode converted it to (forwarded instead of
    /// converting the XML again).
    pub fhir_json: Option<Box<serde_json::Value>>,
    /// For a FHIR JSON Bundle: where decode found each entry's resource in the payload
    /// (forwarding copies them from there instead of parsing the payload again).
    pub entries: Option<Vec<decode::fhir_json::EntrySpan>>,
}

impl Processed {
    /// The canonical referral as JSON text, as the message row stores it; [`forward::plan`]
    /// reuses this text for the canonical output instead of writing the referral again. `None`
    /// for an unreadable message.
    ///
    /// [`forward::plan`]: crate::forward::plan
    pub fn referral_json(&self) -> Option<String> {
        self.referral
            .as_ref()
            .and_then(|r| serde_json::to_string(r).ok())
    }
}

impl Engine {
    /// Loads `mappings/` from `dir` and builds the rule packs.
    pub fn load(dir: &std::path::Path, limits: Limits) -> Result<Engine, MappingsError> {
        let mappings = Mappings::load(dir)?;
        let packs = RulePacks::from_mappings(&mappings)?;
        Ok(Engine {
            mappings,
            packs,
            limits,
        })
    }

    /// The German rule pack, if configured.
    pub fn de_pack(&self) -> Option<&crate::check::de::DeRulePack> {
        self.packs.de()
    }

    /// The loaded mappings.
    pub fn mappings(&self) -> &Mappings {
        &self.mappings
    }

    /// Builds the OperationOutcome of a processed message in `lang`.
    pub fn outcome(&self, processed: &Processed, lang: &str) -> OperationOutcome {
        OperationOutcome::from_issues(&processed.issues, self.mappings.rules(), lang)
    }

    /// An unreadable result for input that never reached decode (e.g. an unreadable file).
    pub fn unreadable(&self, code: &str, detail: &str) -> Processed {
        Processed {
            verdict: Verdict::Unreadable,
            format: None,
            referral: None,
            issues: vec![Issue::new(self.mappings.rules(), code).detail(detail)],
            sha256: String::new(),
            fhir_json: None,
            entries: None,
        }
    }

    /// The unreadable result for a decode error found outside [`Engine::process`] (e.g. a file
    /// whose size alone is over the limit).
    pub fn undecodable(&self, error: &decode::DecodeError) -> Processed {
        let (detail, limit) = error.message_values();
        let mut issue = Issue::new(self.mappings.rules(), error.rule_code());
        issue.detail = detail;
        issue.limit = limit;
        Processed {
            verdict: Verdict::Unreadable,
            format: None,
            referral: None,
            issues: vec![issue],
            sha256: String::new(),
            fhir_json: None,
            entries: None,
        }
    }

    /// The configured limits.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Decodes and maps without checking (for `sociogate translate`).
    pub fn translate(&self, inbound: Inbound<'_>) -> Processed {
        match self.prepare(inbound) {
            Ok(mapped) => {
                let verdict = Verdict::from_issues(&mapped.issues);
                mapped.finish(verdict)
            }
            Err(unreadable) => *unreadable,
        }
    }

    /// Decodes, maps and checks one message; reads the patient's prior budget use from `ledger`
    /// and records an accepted German referral there.
    pub fn process(
        &self,
        inbound: Inbound<'_>,
        ledger: &mut dyn Ledger,
        today: Date,
    ) -> Result<Processed, LedgerError> {
        let mapped = match self.prepare(inbound) {
            Ok(mapped) => mapped,
            Err(unreadable) => return Ok(*unreadable),
        };
        let prior = match self.budget_query(&mapped, today) {
            Some(q) => ledger.prior_usage(&q.patient_key, q.start, q.window_years)?,
            None => PriorUsage::default(),
        };
        let (processed, entry) = guarded(|| self.finish(mapped, &prior, today))
            .unwrap_or_else(|| (self.internal_failure(CHECK, inbound.bytes), None));
        if let Some(entry) = entry {
            ledger.record(entry)?;
        }
        Ok(processed)
    }

    /// What the ledger must be asked before `mapped` can be checked, if anything.
    pub fn budget_query(&self, mapped: &Mapped, today: Date) -> Option<BudgetQuery> {
        let referral = &mapped.referral;
        if !self.wants_check(mapped) || referral.jurisdiction != Some(Jurisdiction::De) {
            return None;
        }
        Some(BudgetQuery {
            patient_key: patient_key(referral)?,
            start: start_of(referral, today),
            window_years: self.packs.de()?.budget.window_years,
        })
    }

    /// Not sociotherapy, or no request at all: the rule pack's findings would only bury the
    /// real reason.
    fn wants_check(&self, mapped: &Mapped) -> bool {
        mapped.referral.is_sociotherapy
            && !mapped
                .issues
                .iter()
                .any(|i| i.code == "GW-MAP-01" || i.code == "GW-MAP-12")
    }

    /// Checks a mapped message with the patient's prior budget use (pure). Returns the result
    /// and, for an accepted referral that charges the budget, the ledger entry to record.
    pub fn finish(
        &self,
        mut mapped: Mapped,
        prior: &PriorUsage,
        today: Date,
    ) -> (Processed, Option<LedgerEntry>) {
        if self.wants_check(&mapped) {
            let ctx = CheckContext { today, prior };
            let findings = check::check(&mapped.referral, &self.packs, self.mappings.rules(), &ctx);
            mapped.issues.extend(findings);
        }
        mapped.issues.sort_by_key(|i| std::cmp::Reverse(i.severity));
        let verdict = Verdict::from_issues(&mapped.issues);
        let entry = if verdict == Verdict::Accepted {
            self.ledger_entry(&mapped.referral, today)
        } else {
            None
        };
        (mapped.finish(verdict), entry)
    }

    /// Decodes and maps; an undecodable payload comes back as a finished unreadable result, and
    /// so does one the gateway failed on (a panic, see [`guarded`]).
    pub fn prepare(&self, inbound: Inbound<'_>) -> Result<Mapped, Box<Processed>> {
        guarded(|| self.decode_and_map(inbound))
            .unwrap_or_else(|| Err(Box::new(self.internal_failure(DECODE_MAP, inbound.bytes))))
    }

    /// The result for a message the gateway failed on in `stage` (a panic caught by
    /// [`guarded`]): `unreadable`, with `GW-INT-01`, so that it is stored and dead-lettered and
    /// its sender is answered. Counted and logged without the message's content.
    pub fn internal_failure(&self, stage: &'static str, bytes: &[u8]) -> Processed {
        crate::telemetry::internal_failure(stage);
        tracing::error!(
            stage,
            "The gateway failed on a message (a defect); it ends unreadable with GW-INT-01 and goes to the dead-letter queue"
        );
        let mut failed = self.unreadable("GW-INT-01", stage);
        failed.sha256 = hex::encode(Sha256::digest(bytes));
        failed
    }

    fn decode_and_map(&self, inbound: Inbound<'_>) -> Result<Mapped, Box<Processed>> {
        #[cfg(test)]
        faults::hit(DECODE_MAP, inbound.message_id);
        let sha256 = hex::encode(Sha256::digest(inbound.bytes));
        let (format, decoded) =
            match decode::decode(inbound.bytes, inbound.content_type, &self.limits) {
                Ok(ok) => ok,
                Err(e) => {
                    let mut unreadable = self.undecodable(&e);
                    unreadable.sha256 = sha256;
                    return Err(Box::new(unreadable));
                }
            };
        let idempotency_key = inbound
            .message_id
            .map(str::to_owned)
            .or_else(|| map::idempotency_hint(&decoded))
            .unwrap_or_else(|| format!("sha256:{sha256}"));
        let ids = ReferralIds {
            gateway_id: uuid::Uuid::now_v7().to_string(),
            sender_id: None,
            idempotency_key,
        };
        let (referral, issues) = map::map(&decoded, &self.mappings, ids, inbound.jurisdiction);
        let (fhir_json, entries) = match decoded {
            decode::Decoded::FhirXml(_, json) => (Some(json), None),
            decode::Decoded::Fhir(_, spans) => (None, spans),
            decode::Decoded::Cda(_) => (None, None),
        };
        Ok(Mapped {
            format,
            referral,
            issues,
            sha256,
            fhir_json,
            entries,
        })
    }

    fn ledger_entry(&self, referral: &Referral, today: Date) -> Option<LedgerEntry> {
        if referral.jurisdiction != Some(Jurisdiction::De) {
            return None;
        }
        let pack = self.packs.de()?;
        Some(LedgerEntry {
            patient_key: patient_key(referral)?,
            start: start_of(referral, today),
            minutes: pack.budget_minutes(referral),
            trial_units: match referral.kind {
                Some(ReferralKind::TrialSessions) => {
                    referral.requested_units.map_or(0, |u| u.count)
                }
                _ => 0,
            },
        })
    }
}

/// A decoded and mapped message waiting for its check.
#[derive(Debug)]
pub struct Mapped {
    /// Detected format.
    pub format: Format,
    /// The canonical referral.
    pub referral: Referral,
    /// Findings of decode and map.
    pub issues: Vec<Issue>,
    /// SHA-256 of the payload, hex.
    pub sha256: String,
    /// For FHIR XML: its FHIR JSON shape (see [`Processed::fhir_json`]).
    pub fhir_json: Option<Box<serde_json::Value>>,
    /// For a FHIR JSON Bundle: its entries' places (see [`Processed::entries`]).
    pub entries: Option<Vec<decode::fhir_json::EntrySpan>>,
}

/// A read of the ledger that the check of one referral needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BudgetQuery {
    /// The patient.
    pub patient_key: String,
    /// First day of the requested care.
    pub start: Date,
    /// Window length in years.
    pub window_years: i32,
}

impl Mapped {
    fn finish(self, verdict: Verdict) -> Processed {
        Processed {
            verdict,
            format: Some(self.format),
            referral: Some(self.referral),
            issues: self.issues,
            sha256: self.sha256,
            fhir_json: self.fhir_json,
            entries: self.entries,
        }
    }
}

/// The key under which a patient's budget is kept: the normalised national or insurance id.
pub fn patient_key(referral: &Referral) -> Option<String> {
    let patient = referral.patient.as_ref()?;
    [
        IdentifierKind::Kvid10,
        IdentifierKind::PkvId,
        IdentifierKind::Bsn,
        IdentifierKind::Hetu,
    ]
    .iter()
    .find_map(|kind| patient.ids.iter().find(|id| id.kind == *kind))
    .map(|id| format!("{}|{}", id.system.as_deref().unwrap_or(""), id.value))
}

fn start_of(referral: &Referral, today: Date) -> Date {
    referral
        .requested_period
        .and_then(|p| p.start)
        .or(referral.issue_date)
        .unwrap_or(today)
}
