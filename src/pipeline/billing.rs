//! The billing flows of the service pipeline, beside the referral flow in `gateway.rs`:
//!
//! 1. the insurer's answer to a preauthorization (a ClaimResponse) is recorded against the
//!    referral and the provider is told (a Task, `accepted` or `rejected`);
//! 2. delivered sessions (Encounters in a session report) are checked against the approval,
//!    the approved units and the 120-hour budget, under the patient's lock, and stored;
//! 3. closing a billing period prices the unbilled sessions per referral and writes a FHIR
//!    Claim (`use = claim`) per referral and one § 302 interchange per insurer to the outbox.
//!
//! Which flow a message takes is read from the message itself (`MessageHeader.eventCoding`,
//! as FHIR's `$process-message` does), so one queue and one HTTP route take all of them.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::{Value, json};
use time::{Date, OffsetDateTime, PrimitiveDateTime};

use super::gateway::{Envelope, Gateway, Handled};
use crate::billing::contract::Contract;
use crate::billing::dta302::{self, InterchangeRef, InvoiceRequest};
use crate::billing::fhir::{self as billing_fhir, ClaimInput, SessionStatus};
use crate::billing::funding::{BilledSession, FundingClaimInput, funding_claim};
use crate::billing::{
    Approval, BillingCase, BillingPeriod, CopaymentStatus, DeliveredSession, InsuredPerson,
    OriginalBill, PostalAddress, Prescription, Verarbeitungskennzeichen,
};
use crate::check::de::sessions::SessionFacts;
use crate::check::{Issue, Verdict};
use crate::config::BillingConfig;
use crate::forward::{self, FHIR_JSON};
use crate::model::{
    Delivery, IdentifierKind, Jurisdiction, Referral, ReferralKind, code_of, from_code,
};
use crate::outcome::OperationOutcome;
use crate::store::billing::{ApprovalRow, SessionRow};
use crate::store::{Finished, Inserted, NewMessage, NewOutbound, StoreError, Tx};

/// Rule codes of the billing flows (verified against the catalogue at start).
pub const RULES: &[&str] = &["GW-BI-01", "GW-BI-02", "GW-BI-03", "GW-BI-04", "GW-BI-05"];

/// Which flow an inbound message belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageKind {
    /// A referral (the default).
    Referral,
    /// An insurer's ClaimResponse to a preauthorization.
    Approval,
    /// A provider's report of delivered sessions.
    SessionReport,
}

#[derive(Deserialize)]
struct Head {
    #[serde(rename = "resourceType", default)]
    resource_type: String,
    #[serde(default)]
    entry: Vec<HeadEntry>,
}

#[derive(Deserialize)]
struct HeadEntry {
    #[serde(default)]
    resource: Option<HeadResource>,
}

#[derive(Deserialize)]
struct HeadResource {
    #[serde(rename = "resourceType", default)]
    resource_type: String,
    #[serde(rename = "eventCoding", default)]
    event: Option<HeadCoding>,
}

#[derive(Deserialize)]
struct HeadCoding {
    #[serde(default)]
    code: Option<String>,
}

/// Reads which flow a message takes: a ClaimResponse (alone or as a `preauthorization-response`
/// message) or a `session-report` message. Everything else is a referral. Only FHIR JSON
/// carries billing messages; a cheap text search keeps referrals from a second parse.
pub fn message_kind(body: &[u8]) -> MessageKind {
    let body = crate::decode::strip_bom(body);
    let is_json = body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
    let names_billing = |needle: &[u8]| memchr::memmem::find(body, needle).is_some();
    if !is_json || !(names_billing(b"ClaimResponse") || names_billing(b"session-report")) {
        return MessageKind::Referral;
    }
    let Ok(head) = serde_json::from_slice::<Head>(body) else {
        return MessageKind::Referral;
    };
    if head.resource_type == "ClaimResponse" {
        return MessageKind::Approval;
    }
    let event = head.entry.iter().find_map(|e| {
        e.resource
            .as_ref()
            .filter(|r| r.resource_type == "MessageHeader")
            .and_then(|r| r.event.as_ref())
            .and_then(|c| c.code.as_deref())
    });
    match event {
        Some(billing_fhir::EVENT_PREAUTHORIZATION_RESPONSE) => MessageKind::Approval,
        Some(billing_fhir::EVENT_SESSION_REPORT) => MessageKind::SessionReport,
        _ => MessageKind::Referral,
    }
}

/// Billing settings and the provider's contract, loaded at start.
#[derive(Debug, Clone, Default)]
pub struct Billing {
    /// Who bills, and where files go.
    pub config: BillingConfig,
    /// Tariffs and § 302 settings (`mappings/de/billing.json`); `None` disables closing periods.
    pub contract: Option<Arc<Contract>>,
}

/// The result of closing a billing period.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BillingRun {
    /// Gateway id of the run (its message row; the outbox rows hang on it).
    pub run_id: String,
    /// Billing Claims written (corrections included).
    pub claims: usize,
    /// § 302 interchanges written: insurer IK and the file's bytes (ISO 8859-1).
    pub interchanges: Vec<(String, Vec<u8>)>,
    /// Sessions billed.
    pub sessions: usize,
    /// Referrals that could not be billed, with the reason (no patient data).
    pub skipped: Vec<String>,
}

/// Why a billing period could not be closed.
#[derive(Debug, thiserror::Error)]
pub enum CloseError {
    /// The store failed; nothing was written.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Billing is not configured (no contract or no provider IK).
    #[error("billing is not configured: {0}")]
    NotConfigured(String),
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

fn row<'a>(
    envelope: &'a Envelope,
    id: &'a str,
    key: &'a str,
    headers: &'a str,
    sha: &'a str,
) -> NewMessage<'a> {
    NewMessage {
        id,
        idempotency_key: key,
        channel: envelope.channel,
        content_type: envelope.content_type.as_deref(),
        message_id: envelope.message_id.as_deref(),
        correlation_id: envelope.correlation_id.as_deref(),
        reply_to: envelope.reply_to.as_deref(),
        headers,
        sha256: sha,
        body: &envelope.body,
    }
}

fn referral_of(json: Option<&str>) -> Option<Referral> {
    json.and_then(|j| serde_json::from_str(j).ok())
}

fn codes_of(issues: &[Issue]) -> String {
    issues
        .iter()
        .map(|i| i.code.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

impl Gateway {
    /// Adds billing: the settings and the provider's contract.
    pub fn with_billing(mut self, billing: Billing) -> Gateway {
        self.billing = Arc::new(billing);
        self
    }

    /// Stores a billing message (idempotently) and opens its transaction. `None` when the
    /// message was seen before.
    async fn begin_billing_message(
        &self,
        envelope: &Envelope,
        gateway_id: &str,
    ) -> Result<(Tx, Option<Handled>), StoreError> {
        let sha = sha256_hex(&envelope.body);
        let key = envelope
            .message_id
            .clone()
            .unwrap_or_else(|| format!("sha256:{sha}"));
        let headers = envelope.headers.to_string();
        let mut tx = self.store().begin().await?;
        let inserted = tx
            .insert_message(&row(envelope, gateway_id, &key, &headers, &sha))
            .await?;
        let duplicate = match inserted {
            Inserted::New => None,
            Inserted::Duplicate(seen) => Some(Handled::seen(seen)),
        };
        Ok((tx, duplicate))
    }

    /// Writes the verdict, the reply and (for problems) the rejection or dead letter of a
    /// billing message, then commits.
    async fn finish_billing_message(
        &self,
        mut tx: Tx,
        envelope: &Envelope,
        gateway_id: &str,
        issues: Vec<Issue>,
        patient_key: Option<&str>,
        mut outputs: Vec<NewOutbound>,
    ) -> Result<Handled, StoreError> {
        let verdict = Verdict::from_issues(&issues);
        let lang = self.language(envelope);
        let outcome =
            OperationOutcome::from_issues(&issues, self.engine().mappings().rules(), &lang)
                .to_json();
        let codes = codes_of(&issues);
        tx.finish_message(
            gateway_id,
            &Finished {
                status: verdict.as_str(),
                jurisdiction: Some("de"),
                patient_key,
                rule_codes: &codes,
                referral: None,
                outcome: &outcome.to_string(),
            },
        )
        .await?;
        let correlation = envelope
            .correlation_id
            .clone()
            .or_else(|| envelope.message_id.clone());
        let amqp = self.amqp_config();
        let headers = json!({
            "x-sociogate-gateway-id": gateway_id,
            "x-sociogate-verdict": verdict.as_str(),
            "x-sociogate-rules": codes,
        })
        .to_string();
        match verdict {
            Verdict::Rejected => outputs.push(NewOutbound {
                kind: "rejected".to_owned(),
                exchange: amqp.rejected_exchange.clone(),
                routing_key: "de.billing.rejected".to_owned(),
                content_type: FHIR_JSON.to_owned(),
                correlation_id: correlation.clone(),
                headers: headers.clone(),
                body: outcome.to_string().into_bytes(),
            }),
            Verdict::Unreadable => {
                let origin = forward::Origin {
                    gateway_id,
                    message_id: envelope.message_id.as_deref(),
                    correlation_id: envelope.correlation_id.as_deref(),
                    reply_to: envelope.reply_to.as_deref(),
                    content_type: envelope.content_type.as_deref(),
                    body: &envelope.body,
                };
                let reason = issues
                    .first()
                    .map(|i| format!("{}: {}", i.code, i.detail.as_deref().unwrap_or("")))
                    .unwrap_or_default();
                outputs.push(forward::dead_letter(&origin, &reason, amqp));
            }
            Verdict::Accepted => {}
        }
        if let Some(reply_to) = envelope.reply_to.as_deref().filter(|r| !r.is_empty()) {
            outputs.push(NewOutbound {
                kind: "reply".to_owned(),
                exchange: String::new(),
                routing_key: reply_to.to_owned(),
                content_type: FHIR_JSON.to_owned(),
                correlation_id: correlation,
                headers,
                body: outcome.to_string().into_bytes(),
            });
        }
        tx.enqueue_all(gateway_id, &outputs).await?;
        tx.commit().await?;
        tracing::info!(
            gateway_id = %gateway_id,
            verdict = verdict.as_str(),
            rules = %codes_of(&issues),
            "Billing message processed"
        );
        Ok(Handled::New {
            gateway_id: gateway_id.to_owned(),
            verdict,
            outcome,
        })
    }

    /// The insurer's answer to a preauthorization: recorded, and the provider's Task moves on.
    pub(super) async fn handle_approval(&self, envelope: &Envelope) -> Result<Handled, StoreError> {
        let gateway_id = uuid::Uuid::now_v7().to_string();
        let (mut tx, duplicate) = self.begin_billing_message(envelope, &gateway_id).await?;
        if let Some(seen) = duplicate {
            return Ok(seen);
        }
        let rules = self.engine().mappings().rules();
        let decision = match billing_fhir::parse_claim_response(&envelope.body) {
            Ok(d) => d,
            Err(e) => {
                let issue = Issue::new(rules, "GW-BI-01").detail(e);
                return self
                    .finish_billing_message(tx, envelope, &gateway_id, vec![issue], None, vec![])
                    .await;
            }
        };
        let stored = tx.referral(&decision.referral_id).await?;
        let referral = stored
            .as_ref()
            .filter(|s| s.status == "accepted")
            .and_then(|s| referral_of(s.referral.as_deref()));
        let Some(referral) = referral else {
            let issue = Issue::new(rules, "GW-BI-02")
                .detail(&decision.referral_id)
                .at("ClaimResponse.request");
            return self
                .finish_billing_message(tx, envelope, &gateway_id, vec![issue], None, vec![])
                .await;
        };
        let approval = ApprovalRow {
            approved: decision.approved,
            approval_number: decision.approval_number.clone(),
            approval_date: decision.approval_date,
            period: decision.period,
            units: decision.approved_units,
        };
        tx.record_approval(&decision.referral_id, &gateway_id, &approval)
            .await?;
        let task = provider_task(&gateway_id, &decision.referral_id, &approval);
        let provider_key = forward::provider_routing_key(&referral);
        let out = NewOutbound {
            kind: "provider-task".to_owned(),
            exchange: self.amqp_config().referrals_exchange.clone(),
            routing_key: format!("{provider_key}.task"),
            content_type: FHIR_JSON.to_owned(),
            correlation_id: Some(decision.referral_id.clone()),
            headers: json!({
                "x-sociogate-gateway-id": gateway_id,
                "x-sociogate-event": if approval.approved { "referral-approved" } else { "referral-refused" },
            })
            .to_string(),
            body: task.to_string().into_bytes(),
        };
        let patient_key = crate::pipeline::patient_key(&referral);
        self.finish_billing_message(
            tx,
            envelope,
            &gateway_id,
            vec![Issue::new(rules, "GW-OK")],
            patient_key.as_deref(),
            vec![out],
        )
        .await
    }

    /// Delivered sessions: each is checked and stored on its own; the message is rejected
    /// when any session is, and its OperationOutcome names each rejected session.
    pub(super) async fn handle_sessions(&self, envelope: &Envelope) -> Result<Handled, StoreError> {
        let gateway_id = uuid::Uuid::now_v7().to_string();
        let (mut tx, duplicate) = self.begin_billing_message(envelope, &gateway_id).await?;
        if let Some(seen) = duplicate {
            return Ok(seen);
        }
        let rules = self.engine().mappings().rules();
        let reports = match billing_fhir::parse_session_report(&envelope.body) {
            Ok(r) => r,
            Err(e) => {
                let issue = Issue::new(rules, "GW-BI-01").detail(e);
                return self
                    .finish_billing_message(tx, envelope, &gateway_id, vec![issue], None, vec![])
                    .await;
            }
        };
        let mut issues = Vec::new();
        let mut last_patient = None;
        // Patients are locked in one order (their keys sorted), so two reports covering the same
        // patients in another order cannot deadlock each other.
        let mut order = Vec::with_capacity(reports.len());
        for (n, report) in reports.iter().enumerate() {
            let key = tx
                .referral(&report.referral_id)
                .await?
                .and_then(|s| s.patient_key);
            order.push((key, n));
        }
        order.sort();
        for (_, n) in order {
            let report = &reports[n];
            let at = format!("Bundle.entry.resource.ofType(Encounter)[{n}]");
            if report.status == SessionStatus::Cancelled {
                if tx
                    .cancel_session(&report.session_key, &report.referral_id)
                    .await?
                {
                    issues.push(Issue::new(rules, "GW-BI-05").detail(n).at(at));
                } else {
                    issues.push(Issue::new(rules, "GW-BI-04").detail(n).at(at));
                }
                continue;
            }
            if tx.session_status(&report.session_key).await?.is_some() {
                // Reported before: idempotent, never counted twice.
                issues.push(Issue::new(rules, "GW-BI-03").detail(n).at(at));
                continue;
            }
            let stored = tx.referral(&report.referral_id).await?;
            let found = stored
                .as_ref()
                .filter(|s| s.status == "accepted")
                .and_then(|s| Some((referral_of(s.referral.as_deref())?, s.patient_key.clone()?)));
            let Some((referral, patient_key)) = found else {
                issues.push(
                    Issue::new(rules, "GW-BI-02")
                        .detail(&report.referral_id)
                        .at(format!("{at}.basedOn")),
                );
                continue;
            };
            let facts = SessionFacts {
                date: report.date,
                minutes: report.minutes,
                delivery: report.delivery,
            };
            // Serialises the budget read and the session write per patient until commit.
            tx.lock_patient(&patient_key).await?;
            let (found, budget_minutes, unit_minutes) = match self.engine().de_pack() {
                Some(pack) if referral.jurisdiction == Some(Jurisdiction::De) => {
                    let approval = tx.approval(&report.referral_id).await?;
                    let usage = tx
                        .session_usage(
                            &report.referral_id,
                            &patient_key,
                            report.date,
                            pack.budget.window_years,
                        )
                        .await?;
                    let facts_of = approval.as_ref().map(ApprovalRow::facts);
                    let check =
                        pack.check_session(rules, &referral, facts_of.as_ref(), &facts, &usage);
                    (check.issues, check.budget_minutes, check.unit_minutes)
                }
                // No session rules for NL and FI yet: the session is stored as reported.
                _ => (
                    Vec::new(),
                    u64::from(report.minutes),
                    u64::from(report.minutes),
                ),
            };
            let rejected = Verdict::from_issues(&found) != Verdict::Accepted;
            issues.extend(found.into_iter().map(|i| i.at(at.clone())));
            if rejected {
                continue;
            }
            let inserted = tx
                .insert_session(
                    &gateway_id,
                    &SessionRow {
                        session_key: report.session_key.clone(),
                        referral: report.referral_id.clone(),
                        patient_key: patient_key.clone(),
                        date: report.date,
                        start_time: report.start.map(|t| {
                            format!("{:02}:{:02}:{:02}", t.hour(), t.minute(), t.second())
                        }),
                        minutes: report.minutes,
                        delivery: code_of(&report.delivery).unwrap_or_default(),
                        setting: code_of(&report.setting).unwrap_or_default(),
                        trial: report.trial,
                        professional: report.professional_id.clone(),
                        budget_minutes,
                        unit_minutes,
                        billed_in: None,
                    },
                )
                .await?;
            if !inserted {
                // Reported concurrently by another message: counted there, not here.
                issues.push(Issue::new(rules, "GW-BI-03").detail(n).at(at));
                continue;
            }
            last_patient = Some(patient_key);
        }
        if issues.is_empty() {
            issues.push(Issue::new(rules, "GW-OK"));
        }
        self.finish_billing_message(
            tx,
            envelope,
            &gateway_id,
            issues,
            last_patient.as_deref(),
            vec![],
        )
        .await
    }

    /// Closes a billing period: every accepted, unbilled session of `period` is priced per
    /// referral into a Claim (`use = claim`), the cases of each insurer go into one § 302
    /// interchange, and sessions cancelled after billing produce correction records
    /// (Verarbeitungskennzeichen 04, and a Claim related to the one it replaces). All outputs
    /// go to the outbox in one transaction; the files are also written to `output_dir`.
    pub async fn close_period(
        &self,
        period: BillingPeriod,
        now: OffsetDateTime,
    ) -> Result<BillingRun, CloseError> {
        let billing = Arc::clone(&self.billing);
        let Some(contract) = billing.contract.as_deref() else {
            return Err(CloseError::NotConfigured("no contract loaded".to_owned()));
        };
        let cfg = &billing.config;
        if cfg.provider_ik.is_empty() || cfg.provider_name.is_empty() {
            return Err(CloseError::NotConfigured(
                "billing.provider_ik and billing.provider_name must be set".to_owned(),
            ));
        }
        let (Some(first), Some(last)) = (period.first_day(), period.last_day()) else {
            return Err(CloseError::NotConfigured("period out of range".to_owned()));
        };
        let run_id = uuid::Uuid::now_v7().to_string();
        let mut tx = self.store().begin().await?;
        // One billing run at a time (PostgreSQL row lock; SQLite has one writer anyway).
        tx.lock_billing().await?;
        let request = json!({ "period": format!("{}-{:02}", period.year, u8::from(period.month)) });
        let body = request.to_string().into_bytes();
        let envelope = Envelope {
            channel: "billing",
            body: body.into(),
            ..Envelope::default()
        };
        let key = format!("billing:{run_id}");
        let sha = sha256_hex(&envelope.body);
        tx.insert_message(&row(&envelope, &run_id, &key, "{}", &sha))
            .await?;

        let mut run = BillingRun {
            run_id: run_id.clone(),
            ..BillingRun::default()
        };
        let today = now.date();
        let mut outputs = Vec::new();
        let mut summary = RunSummary::default();

        // First bills.
        let sessions = tx.unbilled_sessions(first, last).await?;
        let mut by_referral: BTreeMap<String, Vec<SessionRow>> = BTreeMap::new();
        for s in sessions {
            by_referral.entry(s.referral.clone()).or_default().push(s);
        }
        let mut cases: BTreeMap<String, Vec<Pending>> = BTreeMap::new();
        for (referral_id, rows) in &by_referral {
            if self
                .funding_bill(
                    &mut tx,
                    period,
                    now,
                    &run_id,
                    referral_id,
                    rows,
                    None,
                    &mut run,
                    &mut summary,
                    &mut outputs,
                )
                .await?
            {
                continue;
            }
            match self
                .billing_case(&mut tx, contract, cfg, period, referral_id, rows, None)
                .await?
            {
                Ok(case) => {
                    let keys = rows.iter().map(|r| r.session_key.clone()).collect();
                    cases.entry(file_key(&case)).or_default().push(Pending {
                        case,
                        referral_id: referral_id.clone(),
                        keys,
                        correction_of: None,
                    });
                }
                Err(reason) => run
                    .skipped
                    .push(format!("referral {referral_id}: {reason}")),
            }
        }
        self.write_bills(
            &mut tx,
            contract,
            cfg,
            period,
            now,
            &run_id,
            cases,
            Verarbeitungskennzeichen::FirstBill,
            &mut run,
            &mut summary,
            &mut outputs,
        )
        .await?;

        // Corrections: restate each bill that lost a session after it was sent.
        let cancelled = tx.sessions_to_correct().await?;
        let mut to_restate: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
        for s in &cancelled {
            if let Some(billed_in) = &s.billed_in {
                to_restate
                    .entry((billed_in.clone(), s.referral.clone()))
                    .or_default()
                    .push(s.session_key.clone());
            }
        }
        let mut corrections: BTreeMap<String, Vec<Pending>> = BTreeMap::new();
        for ((billed_in, referral_id), cancelled_keys) in &to_restate {
            let original = tx.referral(billed_in).await?;
            let original_summary: RunSummary = original
                .and_then(|o| o.referral)
                .and_then(|j| serde_json::from_str(&j).ok())
                .unwrap_or_default();
            let Some(bill) = original_summary.cases.get(referral_id) else {
                run.skipped.push(format!(
                    "correction of referral {referral_id}: original bill unknown"
                ));
                continue;
            };
            let remaining = tx.billed_sessions(referral_id, billed_in).await?;
            let bill_period = parse_iso(&bill.period_first)
                .map(BillingPeriod::of)
                .unwrap_or(period);
            if !remaining.is_empty()
                && self
                    .funding_bill(
                        &mut tx,
                        bill_period,
                        now,
                        &run_id,
                        referral_id,
                        &remaining,
                        Some((bill.claim_id.clone(), cancelled_keys.clone())),
                        &mut run,
                        &mut summary,
                        &mut outputs,
                    )
                    .await?
            {
                continue;
            }
            if remaining.is_empty() {
                run.skipped.push(format!(
                    "correction of referral {referral_id}: every session was cancelled; a full \
                     cancellation is not produced yet"
                ));
                continue;
            }
            let original_bill = OriginalBill {
                invoice_number: bill.invoice_number.clone(),
                invoice_date: parse_iso(&bill.invoice_date).unwrap_or(today),
                receipt_number: bill.receipt_number.clone(),
            };
            match self
                .billing_case(
                    &mut tx,
                    contract,
                    cfg,
                    bill_period,
                    referral_id,
                    &remaining,
                    Some(original_bill),
                )
                .await?
            {
                Ok(case) => corrections
                    .entry(file_key(&case))
                    .or_default()
                    .push(Pending {
                        case,
                        referral_id: referral_id.clone(),
                        keys: cancelled_keys.clone(),
                        correction_of: Some(bill.claim_id.clone()),
                    }),
                Err(reason) => run
                    .skipped
                    .push(format!("correction of referral {referral_id}: {reason}")),
            }
        }
        self.write_bills(
            &mut tx,
            contract,
            cfg,
            period,
            now,
            &run_id,
            corrections,
            Verarbeitungskennzeichen::Correction,
            &mut run,
            &mut summary,
            &mut outputs,
        )
        .await?;

        tx.enqueue_all(&run_id, &outputs).await?;
        let summary_json = serde_json::to_string(&summary).unwrap_or_default();
        tx.finish_message(
            &run_id,
            &Finished {
                // Not a referral: `replay` and the referral counts leave it alone.
                status: "billing-run",
                jurisdiction: Some("de"),
                patient_key: None,
                rule_codes: "",
                referral: Some(&summary_json),
                outcome: "{}",
            },
        )
        .await?;
        tx.commit().await?;
        if !cfg.output_dir.is_empty() {
            write_files(&cfg.output_dir, &run_id, &outputs);
        }
        tracing::info!(
            run_id = %run_id,
            claims = run.claims,
            interchanges = run.interchanges.len(),
            sessions = run.sessions,
            skipped = run.skipped.len(),
            "Billing period closed"
        );
        Ok(run)
    }

    /// Bills a Dutch or Finnish referral's sessions as a FHIR Claim in that country's funding
    /// model (`billing::funding`); `false` for a German referral (billed as a § 302 case).
    /// `correction`: the Claim replaced and the cancelled sessions it corrects.
    #[allow(clippy::too_many_arguments)]
    async fn funding_bill(
        &self,
        tx: &mut Tx,
        period: BillingPeriod,
        now: OffsetDateTime,
        run_id: &str,
        referral_id: &str,
        rows: &[SessionRow],
        correction: Option<(String, Vec<String>)>,
        run: &mut BillingRun,
        summary: &mut RunSummary,
        outputs: &mut Vec<NewOutbound>,
    ) -> Result<bool, StoreError> {
        let Some(referral) = referral_of(
            tx.referral(referral_id)
                .await?
                .and_then(|s| s.referral)
                .as_deref(),
        ) else {
            return Ok(false);
        };
        let Some(jurisdiction) = referral.jurisdiction.filter(|j| *j != Jurisdiction::De) else {
            return Ok(false);
        };
        let Some(product) = self.engine().mappings().claim_product(jurisdiction) else {
            run.skipped.push(format!(
                "referral {referral_id}: no claim product for {jurisdiction:?}"
            ));
            return Ok(true);
        };
        let approval_number = tx
            .approval(referral_id)
            .await?
            .filter(|a| a.approved)
            .and_then(|a| a.approval_number);
        let sessions: Vec<BilledSession> = rows
            .iter()
            .map(|r| BilledSession {
                date: r.date,
                minutes: r.minutes,
                delivery: from_code(&r.delivery).unwrap_or(Delivery::Individual),
            })
            .collect();
        let patient_ids = referral
            .patient
            .as_ref()
            .map(|p| p.ids.clone())
            .unwrap_or_default();
        let coverage = referral.coverage.clone().unwrap_or_default();
        let provider_ids = referral
            .requested_provider
            .as_ref()
            .map(|p| p.ids.clone())
            .unwrap_or_default();
        let claim_id = match &correction {
            Some(_) => format!("{run_id}/{referral_id}/k"),
            None => format!("{run_id}/{referral_id}"),
        };
        let claim = funding_claim(&FundingClaimInput {
            claim_id: &claim_id,
            referral_id,
            period,
            patient_ids: &patient_ids,
            payer_ids: &coverage.payer_ids,
            payer_name: coverage.payer_name.as_deref(),
            provider_ids: &provider_ids,
            approval_number: approval_number.as_deref(),
            product,
            sessions: &sessions,
            correction_of: correction.as_ref().map(|c| c.0.as_str()),
            created: now,
        });
        let payer_key = forward::payer_routing_key(&referral);
        outputs.push(NewOutbound {
            kind: if correction.is_some() {
                "billing-claim-correction".to_owned()
            } else {
                "billing-claim".to_owned()
            },
            exchange: self.amqp_config().insurers_exchange.clone(),
            routing_key: format!("{payer_key}.claim"),
            content_type: FHIR_JSON.to_owned(),
            correlation_id: Some(referral_id.to_owned()),
            headers: json!({
                "x-sociogate-gateway-id": run_id,
                "x-sociogate-event": "billing-claim",
                "x-sociogate-referral": referral_id,
                "x-sociogate-jurisdiction": jurisdiction.code(),
            })
            .to_string(),
            body: claim.into_bytes(),
        });
        run.claims += 1;
        let record = CaseSummary {
            claim_id,
            invoice_number: String::new(),
            invoice_date: now.date().to_string(),
            receipt_number: String::new(),
            period_first: period
                .first_day()
                .map(|d| d.to_string())
                .unwrap_or_default(),
        };
        match correction {
            Some((_, cancelled)) => {
                tx.mark_corrected(&cancelled, run_id).await?;
                summary.corrections.insert(referral_id.to_owned(), record);
            }
            None => {
                let keys: Vec<String> = rows.iter().map(|r| r.session_key.clone()).collect();
                run.sessions += keys.len();
                tx.mark_billed(&keys, run_id).await?;
                summary.cases.insert(referral_id.to_owned(), record);
            }
        }
        Ok(true)
    }

    /// One referral's sessions as a billing case, or why it cannot be billed (no patient data
    /// in the reason).
    #[allow(clippy::too_many_arguments)]
    async fn billing_case(
        &self,
        tx: &mut Tx,
        contract: &Contract,
        cfg: &BillingConfig,
        period: BillingPeriod,
        referral_id: &str,
        rows: &[SessionRow],
        original: Option<OriginalBill>,
    ) -> Result<Result<BillingCase, String>, StoreError> {
        let Some(referral) = referral_of(
            tx.referral(referral_id)
                .await?
                .and_then(|s| s.referral)
                .as_deref(),
        ) else {
            return Ok(Err("the referral is not stored".to_owned()));
        };
        let approval = match tx.approval(referral_id).await? {
            Some(a) if a.approved => a,
            _ => return Ok(Err("no approval recorded".to_owned())),
        };
        let (Some(number), Some(date)) = (approval.approval_number.clone(), approval.approval_date)
        else {
            return Ok(Err("the approval has no number or date".to_owned()));
        };
        Ok(build_case(
            contract,
            cfg,
            period,
            &referral,
            Approval { number, date },
            rows,
            original,
        ))
    }

    #[allow(clippy::too_many_arguments)]
    async fn write_bills(
        &self,
        tx: &mut Tx,
        contract: &Contract,
        cfg: &BillingConfig,
        period: BillingPeriod,
        now: OffsetDateTime,
        run_id: &str,
        cases: BTreeMap<String, Vec<Pending>>,
        processing: Verarbeitungskennzeichen,
        run: &mut BillingRun,
        summary: &mut RunSummary,
        outputs: &mut Vec<NewOutbound>,
    ) -> Result<(), StoreError> {
        let amqp = self.amqp_config();
        let product = self.engine().mappings().claim_product(Jurisdiction::De);
        let service = product.map_or(
            (
                "https://sociogate.org/fhir/CodeSystem/service",
                "sociotherapy",
                "Soziotherapie",
            ),
            |p| {
                (
                    p.product_system.as_str(),
                    p.product_code.as_str(),
                    p.product_display.as_str(),
                )
            },
        );
        let today = now.date();
        let prepared = PrimitiveDateTime::new(today, now.time());
        for (_, list) in cases {
            let Some(insurer_ik) = list.first().map(|p| p.case.insurer_ik.clone()) else {
                continue;
            };
            // A case the file cannot carry (a name outside ISO 8859-1, a street too long) is
            // left out on its own, so it cannot hold back the insurer's other cases.
            let mut kept = Vec::with_capacity(list.len());
            for pending in list {
                match check_case(contract, cfg, &pending.case, processing, now) {
                    Ok(()) => kept.push(pending),
                    Err(reason) => run
                        .skipped
                        .push(format!("referral {}: {reason}", pending.referral_id)),
                }
            }
            let list = kept;
            if list.is_empty() {
                continue;
            }
            let recipient = if cfg.recipient_ik.is_empty() {
                insurer_ik.clone()
            } else {
                cfg.recipient_ik.clone()
            };
            let counter = tx
                .next_counter(&format!("dta302:{}:{recipient}", cfg.provider_ik))
                .await?;
            let wrapped = u32::try_from((counter - 1).rem_euclid(99_999) + 1).unwrap_or(1);
            let Some(reference) = InterchangeRef::new(wrapped) else {
                continue;
            };
            // Rechnungsnummer: at most 14 characters (TA3), so the year has two digits.
            let invoice_number = format!(
                "sg{:02}{:02}-{}{:05}",
                period.year.rem_euclid(100),
                u8::from(period.month),
                if processing == Verarbeitungskennzeichen::Correction {
                    "k"
                } else {
                    ""
                },
                wrapped
            );
            let mut billed_cases: Vec<BillingCase> = list.iter().map(|p| p.case.clone()).collect();
            for (n, case) in billed_cases.iter_mut().enumerate() {
                case.receipt_number = format!("{}", n + 1);
            }
            let request = InvoiceRequest {
                sender_ik: cfg.provider_ik.clone(),
                recipient_ik: recipient.clone(),
                kostentraeger_ik: insurer_ik.clone(),
                prepared,
                reference,
                application_reference: None,
                processing,
                invoice_number: invoice_number.clone(),
                invoice_date: today,
                provider_name: cfg.provider_name.clone(),
                provider_contact: cfg.provider_contact.clone(),
                rechnungssteller_ik: None,
                cases: &billed_cases,
            };
            let file = dta302::build_interchange(&request, contract)
                .and_then(|i| dta302::write_interchange_latin1(&i, &contract.write_options()));
            let file = match file {
                Ok(f) => f,
                Err(e) => {
                    run.skipped.push(format!(
                        "insurer {insurer_ik}: the § 302 file cannot be built: {e}"
                    ));
                    continue;
                }
            };
            for (pending, billed) in list.iter().zip(&billed_cases) {
                let (referral_id, keys) = (&pending.referral_id, &pending.keys);
                let case = billed;
                let Ok(settlement) = case.settle(&contract.session_cost, &contract.copayment)
                else {
                    continue;
                };
                let referral = referral_of(
                    tx.referral(referral_id)
                        .await?
                        .and_then(|s| s.referral)
                        .as_deref(),
                );
                let patient_ids = referral
                    .as_ref()
                    .and_then(|r| r.patient.as_ref())
                    .map(|p| p.ids.clone())
                    .unwrap_or_default();
                let claim_id = match processing {
                    Verarbeitungskennzeichen::Correction => format!("{run_id}/{referral_id}/k"),
                    _ => format!("{run_id}/{referral_id}"),
                };
                let correction_of = pending.correction_of.clone();
                let claim = billing_fhir::billing_claim(&ClaimInput {
                    gateway_id: &claim_id,
                    referral_id,
                    period: case.period,
                    patient_ids: &patient_ids,
                    insurer_ik: &insurer_ik,
                    provider_ik: &cfg.provider_ik,
                    approval_number: Some(case.approval.number.as_str()),
                    settlement: &settlement,
                    service_code: service,
                    correction_of: correction_of.as_deref(),
                    created: now,
                });
                outputs.push(NewOutbound {
                    kind: if processing == Verarbeitungskennzeichen::Correction {
                        "billing-claim-correction".to_owned()
                    } else {
                        "billing-claim".to_owned()
                    },
                    exchange: amqp.insurers_exchange.clone(),
                    routing_key: format!("payer.{insurer_ik}.claim"),
                    content_type: FHIR_JSON.to_owned(),
                    correlation_id: Some(referral_id.clone()),
                    headers: json!({
                        "x-sociogate-gateway-id": run_id,
                        "x-sociogate-event": "billing-claim",
                        "x-sociogate-referral": referral_id,
                    })
                    .to_string(),
                    body: claim.into_bytes(),
                });
                run.claims += 1;
                match processing {
                    Verarbeitungskennzeichen::Correction => {
                        tx.mark_corrected(keys, run_id).await?;
                    }
                    _ => {
                        run.sessions += keys.len();
                        tx.mark_billed(keys, run_id).await?;
                    }
                }
                let recorded = match processing {
                    Verarbeitungskennzeichen::Correction => &mut summary.corrections,
                    _ => &mut summary.cases,
                };
                recorded.insert(
                    referral_id.clone(),
                    CaseSummary {
                        claim_id,
                        invoice_number: invoice_number.clone(),
                        invoice_date: today.to_string(),
                        receipt_number: billed.receipt_number.clone(),
                        period_first: case
                            .period
                            .first_day()
                            .map(|d| d.to_string())
                            .unwrap_or_default(),
                    },
                );
            }
            outputs.push(NewOutbound {
                kind: "billing-302".to_owned(),
                exchange: amqp.insurers_exchange.clone(),
                routing_key: format!("payer.{insurer_ik}.dta302"),
                content_type: "application/EDIFACT".to_owned(),
                correlation_id: Some(invoice_number.clone()),
                headers: json!({
                    "x-sociogate-gateway-id": run_id,
                    "x-sociogate-event": "billing-302",
                    "x-sociogate-interchange-reference": format!("{wrapped:05}"),
                    "x-sociogate-invoice": invoice_number,
                })
                .to_string(),
                body: file.clone(),
            });
            run.interchanges.push((insurer_ik.clone(), file));
        }
        Ok(())
    }
}

/// One case waiting for its bill.
struct Pending {
    case: BillingCase,
    referral_id: String,
    /// Sessions billed (first bill) or corrected (correction) by it.
    keys: Vec<String>,
    /// For a correction: the Claim it replaces.
    correction_of: Option<String>,
}

/// What a billing run recorded per referral, kept on the run's message row so a later
/// correction can name the bill it replaces.
#[derive(Debug, Clone, Default, serde::Serialize, Deserialize)]
struct RunSummary {
    /// First bills by referral.
    cases: BTreeMap<String, CaseSummary>,
    /// Corrections by referral.
    #[serde(default)]
    corrections: BTreeMap<String, CaseSummary>,
}

#[derive(Debug, Clone, serde::Serialize, Deserialize)]
struct CaseSummary {
    claim_id: String,
    invoice_number: String,
    invoice_date: String,
    receipt_number: String,
    period_first: String,
}

/// Cases go into one file per insurer and billing month (a § 302 file holds one month).
fn file_key(case: &BillingCase) -> String {
    format!(
        "{}|{}-{:02}",
        case.insurer_ik,
        case.period.year,
        u8::from(case.period.month)
    )
}

/// Whether one case alone makes a valid file (names in ISO 8859-1, field lengths, amounts):
/// the reason when not (file errors name the field, never the offending text).
fn check_case(
    contract: &Contract,
    cfg: &BillingConfig,
    case: &BillingCase,
    processing: Verarbeitungskennzeichen,
    now: OffsetDateTime,
) -> Result<(), String> {
    let mut alone = case.clone();
    alone.receipt_number = "1".to_owned();
    let cases = [alone];
    let request = InvoiceRequest {
        sender_ik: cfg.provider_ik.clone(),
        recipient_ik: case.insurer_ik.clone(),
        kostentraeger_ik: case.insurer_ik.clone(),
        prepared: PrimitiveDateTime::new(now.date(), now.time()),
        reference: InterchangeRef::FIRST,
        application_reference: None,
        processing,
        invoice_number: "check".to_owned(),
        invoice_date: now.date(),
        provider_name: cfg.provider_name.clone(),
        provider_contact: cfg.provider_contact.clone(),
        rechnungssteller_ik: None,
        cases: &cases,
    };
    dta302::build_interchange(&request, contract)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

fn parse_iso(s: &str) -> Option<Date> {
    Date::parse(s, time::macros::format_description!("[year]-[month]-[day]")).ok()
}

/// A billing case from the stored referral and sessions, or why not.
fn build_case(
    contract: &Contract,
    cfg: &BillingConfig,
    period: BillingPeriod,
    referral: &Referral,
    approval: Approval,
    rows: &[SessionRow],
    original: Option<OriginalBill>,
) -> Result<BillingCase, String> {
    let patient = referral.patient.as_ref().ok_or("no patient")?;
    let kvnr = patient
        .ids
        .iter()
        .find(|i| i.kind == IdentifierKind::Kvid10)
        .ok_or("no KVNR")?;
    let name = patient.name.as_ref().ok_or("no patient name")?;
    let birth_date = patient.birth_date.ok_or("no birth date")?;
    let insurer_ik = referral
        .coverage
        .as_ref()
        .and_then(|c| c.payer_ids.iter().find(|i| i.kind == IdentifierKind::Iknr))
        .map(|i| i.value.clone())
        .ok_or("no insurer IK")?;
    let first = period.first_day().ok_or("period out of range")?;
    let tariff = contract
        .case_tariff(&insurer_ik, &cfg.state, first)
        .map_err(|e| format!("no tariff: {e}"))?;
    // Non-disclosure withholds the address from every output, the § 302 file included.
    let address = patient
        .address
        .as_ref()
        .filter(|_| !patient.non_disclosure)
        .map(|a| PostalAddress {
            street: a.lines.join(" "),
            postal_code: a.postal_code.clone().unwrap_or_default(),
            city: a.city.clone().unwrap_or_default(),
            country: a.country.clone().filter(|c| {
                !matches!(
                    c.trim().to_ascii_uppercase().as_str(),
                    "DE" | "D" | "DEU" | "DEUTSCHLAND" | "GERMANY"
                )
            }),
        });
    let prescriber = referral.prescriber.as_ref();
    let lanr = prescriber
        .and_then(|p| p.person_ids.iter().find(|i| i.kind == IdentifierKind::Lanr))
        .map(|i| i.value.clone());
    let bsnr = prescriber
        .and_then(|p| {
            p.organisation_ids
                .iter()
                .find(|i| i.kind == IdentifierKind::Bsnr)
        })
        .map(|i| i.value.clone());
    let sessions = rows
        .iter()
        .map(|r| DeliveredSession {
            date: r.date,
            start: None,
            minutes: r.minutes,
            delivery: from_code(&r.delivery).unwrap_or(Delivery::Individual),
            setting: from_code(&r.setting).unwrap_or(crate::model::Setting::OtherPlace),
            professional_id: r.professional.clone(),
        })
        .collect();
    let exempt = referral
        .coverage
        .as_ref()
        .and_then(|c| c.copayment_exempt)
        .unwrap_or(false);
    Ok(BillingCase {
        period,
        insured: InsuredPerson {
            kvnr: kvnr.value.clone(),
            // Versichertenstatus is not in the canonical referral yet: members (1) by default.
            status: "1".to_owned(),
            surname: name.family.clone().unwrap_or_default(),
            first_name: name.given.join(" "),
            birth_date,
            address,
        },
        insurer_ik,
        provider_ik: cfg.provider_ik.clone(),
        receipt_number: String::new(),
        approval,
        prescription: Prescription {
            date: referral
                .issue_date
                .or_else(|| referral.requested_period.and_then(|p| p.start))
                .unwrap_or(first),
            lanr,
            bsnr,
            discharge_management: referral.kind == Some(ReferralKind::DischargePrescription),
        },
        diagnoses: referral.diagnoses.iter().map(|d| d.code.clone()).collect(),
        copayment: if exempt {
            CopaymentStatus::Exempt
        } else {
            CopaymentStatus::Liable
        },
        tariff,
        sessions,
        original,
    })
}

/// Writes the run's files (Claims as JSON, interchanges as ISO 8859-1) to `dir`. A failure is
/// logged: the outbox already holds every output.
fn write_files(dir: &str, run_id: &str, outputs: &[NewOutbound]) {
    let dir = std::path::Path::new(dir);
    if let Err(e) = std::fs::create_dir_all(dir) {
        tracing::warn!(error = %e, "Billing output folder cannot be created");
        return;
    }
    for (n, out) in outputs.iter().enumerate() {
        let ext = if out.kind == "billing-302" {
            "edi"
        } else {
            "json"
        };
        let name = format!(
            "{run_id}-{}-{n:03}.{ext}",
            out.routing_key.replace('.', "-")
        );
        if let Err(e) = std::fs::write(dir.join(name), &out.body) {
            tracing::warn!(error = %e, "Billing file cannot be written");
        }
    }
}

/// The provider's Task after the insurer's answer: a message Bundle (event
/// `referral-approved` or `referral-refused`) with the Task `accepted` or `rejected`.
fn provider_task(gateway_id: &str, referral_id: &str, a: &ApprovalRow) -> Value {
    let status = if a.approved { "accepted" } else { "rejected" };
    let event = if a.approved {
        "referral-approved"
    } else {
        "referral-refused"
    };
    let mut task = json!({
        "resourceType": "Task",
        "identifier": [{ "system": billing_fhir::REFERRAL_ID_SYSTEM, "value": referral_id }],
        "status": status,
        "intent": "order",
        "code": { "coding": [{ "system": "http://hl7.org/fhir/CodeSystem/task-code", "code": "fulfill" }] },
        "lastModified": OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default(),
    });
    if let Some(number) = &a.approval_number {
        task["businessStatus"] = json!({ "text": format!("approved: {number}") });
    }
    if let Some((start, end)) = a.period {
        task["restriction"] =
            json!({ "period": { "start": start.to_string(), "end": end.to_string() } });
        if let Some(units) = a.units {
            task["restriction"]["repetitions"] = json!(units);
        }
    }
    let task_url = format!(
        "urn:uuid:{}",
        uuid::Uuid::new_v5(
            &uuid::Uuid::NAMESPACE_URL,
            format!("{gateway_id}/task").as_bytes()
        )
    );
    json!({
        "resourceType": "Bundle",
        "identifier": { "system": billing_fhir::REFERRAL_ID_SYSTEM, "value": format!("{gateway_id}/task") },
        "type": "message",
        "timestamp": OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default(),
        "entry": [
            { "fullUrl": format!("urn:uuid:{}", uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_URL, format!("{gateway_id}/header").as_bytes())),
              "resource": {
                "resourceType": "MessageHeader",
                "eventCoding": { "system": "https://sociogate.org/fhir/CodeSystem/message-event", "code": event },
                "source": { "name": "sociogate", "endpoint": "urn:sociogate" },
                "focus": [{ "reference": task_url }]
              } },
            { "fullUrl": task_url, "resource": task }
        ]
    })
}
