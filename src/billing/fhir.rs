//! FHIR R4 JSON at the edges of billing. Pure: bytes in, values out; values in, JSON text out.
//!
//! * [`parse_claim_response`]: the insurer's answer to the gateway's preauthorization Claim (a
//!   `ClaimResponse`, alone or as the focus of a message Bundle with the event
//!   `preauthorization-response`) becomes an [`ApprovalDecision`].
//! * [`parse_session_report`]: the provider's report of delivered sessions (a message Bundle
//!   with the event `session-report` and one `Encounter` per session) becomes
//!   [`SessionReport`]s.
//! * [`billing_claim`]: one referral's priced sessions in one billing month become a message
//!   Bundle (event `billing-claim`) with a `Claim` of `use = claim`.
//!
//! Inbound payloads are validated with fhir-sdk's R4B model (through the gateway's own FHIR JSON
//! decoder, so size, nesting and R4-only checks are the same as for referrals); structurally
//! broken input is refused there. **Values are read from the JSON text, never from the typed
//! model**: fhir-sdk reads decimals as `f64`, so quantities are taken from the exact number text
//! (`&RawValue`) and money is written as the exact text of the [`Decimal`] (`Box<RawValue>`), so
//! `60.00` stays `60.00`. The wire shapes are described in `docs/billing-fhir.md`.

use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::{Date, OffsetDateTime, Time};

use super::copayment::DayOutcome;
use super::{BillingPeriod, Settlement};
use crate::decode::{DecodeError, Limits};
use crate::forward::datatypes as out;
use crate::model::{Delivery, Identifier, IdentifierKind, Setting};

pub use crate::forward::fhir::REFERRAL_ID_SYSTEM;
/// Identifier system of the gateway's billing Claims (`Claim.identifier`, and the target of
/// `Claim.related.claim.identifier` in a correction).
pub const BILLING_CLAIM_ID_SYSTEM: &str = "https://sociogate.org/fhir/sid/billing-claim";
/// CodeSystem of `MessageHeader.eventCoding`.
pub const EVENT_SYSTEM: &str = "https://sociogate.org/fhir/CodeSystem/message-event";
/// Event of the insurer's answer to a preauthorization Claim.
pub const EVENT_PREAUTHORIZATION_RESPONSE: &str = "preauthorization-response";
/// Event of a provider's session report.
pub const EVENT_SESSION_REPORT: &str = "session-report";
/// Event of the gateway's billing Claim.
pub const EVENT_BILLING_CLAIM: &str = "billing-claim";
/// CodeSystem of the delivery mode (`individual`, `group`), in `Encounter.type`.
pub const DELIVERY_MODE_SYSTEM: &str = "https://sociogate.org/fhir/CodeSystem/delivery-mode";
/// CodeSystem of the setting (the kebab-case names of [`Setting`]), in
/// `Encounter.location.physicalType`.
pub const SETTING_SYSTEM: &str = "https://sociogate.org/fhir/CodeSystem/setting";
/// CodeSystem of session kinds (`trial` = Probestunde), in `Encounter.type`.
pub const SESSION_KIND_SYSTEM: &str = "https://sociogate.org/fhir/CodeSystem/session-kind";
/// CodeSystem of the billing Claim's `supportingInfo.category` (`copayment`,
/// `copayment-total`, `net-total`).
pub const CLAIM_INFO_SYSTEM: &str = "https://sociogate.org/fhir/CodeSystem/claim-info";
/// CodeSystem of why a day's co-payment is what it is (`charged`, `under-age`, `exempt`), in
/// `supportingInfo.reason`.
pub const COPAYMENT_OUTCOME_SYSTEM: &str =
    "https://sociogate.org/fhir/CodeSystem/copayment-outcome";

const ADJUDICATION_SYSTEM: &str = "http://terminology.hl7.org/CodeSystem/adjudication";
const IK_SYSTEM: &str = "http://fhir.de/sid/arge-ik/iknr";
const CLAIM_TYPE_SYSTEM: &str = "http://terminology.hl7.org/CodeSystem/claim-type";
const PRIORITY_SYSTEM: &str = "http://terminology.hl7.org/CodeSystem/processpriority";
const RELATED_CLAIM_SYSTEM: &str =
    "http://terminology.hl7.org/CodeSystem/ex-relatedclaimrelationship";
const ACT_REASON_SYSTEM: &str = "http://terminology.hl7.org/CodeSystem/v3-ActReason";
const CURRENCY_SYSTEM: &str = "urn:iso:std:iso:4217";

/// The longest session accepted, in minutes (one day).
const MAX_SESSION_MINUTES: u32 = 1440;

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/// Why an inbound billing payload is refused. Reasons name elements and repeat at most a code
/// (only when it looks like one), never values that could be patient data (quoted values in
/// the decoder's message are replaced by `"…"`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InputError {
    /// Not readable as a FHIR R4 resource: bad JSON, too large or deep, or not valid against
    /// the R4 (R4B) model. `code` is the gateway's decode rule code (`GW-DEC-..`).
    #[error("not a readable FHIR R4 resource ({code}): {reason}")]
    Unreadable {
        /// The decode rule code, e.g. `GW-DEC-01` for a JSON syntax error.
        code: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// A valid FHIR resource of another type or shape than this interface takes.
    #[error("expected {expected}, found {found}")]
    WrongResource {
        /// What the interface takes.
        expected: &'static str,
        /// What was sent (resource type, or Bundle type).
        found: String,
    },
    /// A message Bundle whose MessageHeader announces another event.
    #[error("MessageHeader.eventCoding must be {EVENT_SYSTEM}#{expected}, found {found}")]
    WrongEvent {
        /// The event code expected.
        expected: &'static str,
        /// The event found (`system#code`, or `none`).
        found: String,
    },
    /// A required element is absent.
    #[error("{element} is missing")]
    Missing {
        /// FHIRPath-like location of the element, with what it must contain.
        element: String,
    },
    /// An element is present but unusable.
    #[error("{element} is invalid: {reason}")]
    Invalid {
        /// FHIRPath-like location of the element.
        element: String,
        /// Why.
        reason: String,
    },
    /// `ClaimResponse.outcome = queued`: the insurer has not decided yet, so there is no
    /// approval or refusal to record.
    #[error("ClaimResponse.outcome is queued: the insurer has not decided yet")]
    NotDecided,
}

fn missing(element: impl Into<String>) -> InputError {
    InputError::Missing {
        element: element.into(),
    }
}

fn invalid(element: impl Into<String>, reason: impl Into<String>) -> InputError {
    InputError::Invalid {
        element: element.into(),
        reason: reason.into(),
    }
}

fn unreadable(error: &DecodeError) -> InputError {
    InputError::Unreadable {
        code: error.rule_code(),
        reason: redact_quoted(&error.to_string()),
    }
}

/// A code or URI as sent, for a refusal reason; anything that does not look like one (too long,
/// spaces, other characters) could be free text and is not repeated.
fn shown(code: &str) -> String {
    let looks_like_a_code = code.len() <= 128
        && code
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._:/#".contains(&b));
    if looks_like_a_code {
        code.to_owned()
    } else {
        "(not shown: not a code)".to_owned()
    }
}

/// Replaces every double-quoted part of a parser message by `"…"`: serde quotes the offending
/// value (`invalid type: string "A123456780", expected ...`), which may be patient data.
fn redact_quoted(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut chars = message.chars();
    while let Some(c) = chars.next() {
        out.push(c);
        if c == '"' {
            out.push_str("…\"");
            let mut escaped = false;
            for q in chars.by_ref() {
                if escaped {
                    escaped = false;
                } else if q == '\\' {
                    escaped = true;
                } else if q == '"' {
                    break;
                }
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Raw JSON views (only what is read; strings owned, decimals as their exact text)
// ---------------------------------------------------------------------------------------------

#[derive(Deserialize)]
struct Head {
    #[serde(rename = "resourceType")]
    resource_type: String,
}

#[derive(Deserialize)]
struct RawBundle<'a> {
    #[serde(rename = "type", default)]
    bundle_type: Option<String>,
    #[serde(default, borrow)]
    entry: Vec<RawEntry<'a>>,
}

#[derive(Deserialize)]
struct RawEntry<'a> {
    #[serde(default, borrow)]
    resource: Option<&'a RawValue>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Coding {
    system: Option<String>,
    code: Option<String>,
    display: Option<String>,
}

impl Coding {
    fn is(&self, system: &str, code: &str) -> bool {
        self.system.as_deref() == Some(system) && self.code.as_deref() == Some(code)
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct CodeableConcept {
    coding: Vec<Coding>,
    text: Option<String>,
}

impl CodeableConcept {
    /// `text`, else the first coding's display, else its code.
    fn readable(&self) -> Option<String> {
        self.text
            .clone()
            .or_else(|| self.coding.iter().find_map(|c| c.display.clone()))
            .or_else(|| self.coding.iter().find_map(|c| c.code.clone()))
            .filter(|s| !s.trim().is_empty())
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawIdentifier {
    system: Option<String>,
    value: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawReference {
    identifier: Option<RawIdentifier>,
}

impl RawReference {
    /// `identifier.value` when `identifier.system` is `system` and the value is not blank.
    fn identifier_in(&self, system: &str) -> Option<String> {
        self.identifier
            .as_ref()
            .filter(|i| i.system.as_deref() == Some(system))
            .and_then(|i| non_blank(i.value.as_deref()))
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawPeriod {
    start: Option<String>,
    end: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct MessageHeader {
    #[serde(rename = "eventCoding")]
    event_coding: Option<Coding>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawAdjudication<'a> {
    category: CodeableConcept,
    #[serde(borrow)]
    value: Option<&'a RawValue>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawResponseItem<'a> {
    #[serde(borrow)]
    adjudication: Vec<RawAdjudication<'a>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawResponseError {
    code: CodeableConcept,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawClaimResponse<'a> {
    id: Option<String>,
    identifier: Vec<RawIdentifier>,
    #[serde(rename = "use")]
    claim_use: Option<String>,
    created: Option<String>,
    insurer: Option<RawReference>,
    request: Option<RawReference>,
    outcome: Option<String>,
    disposition: Option<String>,
    #[serde(rename = "preAuthRef")]
    pre_auth_ref: Option<String>,
    #[serde(rename = "preAuthPeriod")]
    pre_auth_period: Option<RawPeriod>,
    #[serde(borrow)]
    item: Vec<RawResponseItem<'a>>,
    error: Vec<RawResponseError>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawDuration<'a> {
    #[serde(borrow)]
    value: Option<&'a RawValue>,
    unit: Option<String>,
    code: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawParticipant {
    individual: Option<RawReference>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawLocation {
    #[serde(rename = "physicalType")]
    physical_type: Option<CodeableConcept>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawEncounter<'a> {
    identifier: Vec<RawIdentifier>,
    status: Option<String>,
    #[serde(rename = "type")]
    encounter_type: Vec<CodeableConcept>,
    #[serde(rename = "basedOn")]
    based_on: Vec<RawReference>,
    participant: Vec<RawParticipant>,
    period: Option<RawPeriod>,
    #[serde(borrow)]
    length: Option<RawDuration<'a>>,
    location: Vec<RawLocation>,
}

fn non_blank(s: Option<&str>) -> Option<String> {
    s.map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

/// Parses a resource's JSON text into a raw view. Runs after the typed validation, so a
/// failure here means a shape the view does not expect (reported without position or values).
fn view<'a, T: Deserialize<'a>>(text: &'a str, what: &str) -> Result<T, InputError> {
    serde_json::from_str(text).map_err(|_| invalid(what, "unexpected JSON shape"))
}

/// Size, nesting and typed FHIR R4 validation through the gateway's decoder; returns the body
/// without a BOM as text and its `resourceType`.
fn validate(bytes: &[u8]) -> Result<(&str, String), InputError> {
    let limits = Limits::default();
    if bytes.len() > limits.max_bytes {
        return Err(unreadable(&DecodeError::TooLarge {
            size: bytes.len(),
            limit: limits.max_bytes,
        }));
    }
    let body = crate::decode::strip_bom(bytes);
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(unreadable(&DecodeError::Empty));
    }
    crate::decode::fhir_json::decode(body, &limits).map_err(|e| unreadable(&e))?;
    let text =
        std::str::from_utf8(body).map_err(|e| unreadable(&DecodeError::NotUtf8(e.to_string())))?;
    let head: Head = view(text, "resourceType")?;
    Ok((text, head.resource_type))
}

/// The resources of a message Bundle whose MessageHeader announces `event`, as
/// `(entry index, resourceType, JSON text)`. The MessageHeader is the first `MessageHeader`
/// entry (FHIR puts it first).
fn message_entries<'a>(
    text: &'a str,
    event: &'static str,
) -> Result<Vec<(usize, String, &'a str)>, InputError> {
    let bundle: RawBundle<'a> = view(text, "Bundle")?;
    if bundle.bundle_type.as_deref() != Some("message") {
        return Err(InputError::WrongResource {
            expected: "a Bundle of type message",
            found: format!(
                "a Bundle of type {}",
                bundle.bundle_type.as_deref().unwrap_or("(none)")
            ),
        });
    }
    let mut entries = Vec::with_capacity(bundle.entry.len());
    for (n, entry) in bundle.entry.iter().enumerate() {
        let Some(raw) = entry.resource else { continue };
        let head: Head = view(raw.get(), &format!("Bundle.entry[{n}].resource"))?;
        entries.push((n, head.resource_type, raw.get()));
    }
    let (n, _, header) = entries
        .iter()
        .find(|(_, rt, _)| rt == "MessageHeader")
        .ok_or_else(|| missing("Bundle.entry with a MessageHeader"))?;
    let header: MessageHeader = view(header, &format!("Bundle.entry[{n}].resource"))?;
    match header.event_coding {
        Some(c) if c.is(EVENT_SYSTEM, event) => Ok(entries),
        Some(c) => Err(InputError::WrongEvent {
            expected: event,
            found: shown(&format!(
                "{}#{}",
                c.system.as_deref().unwrap_or(""),
                c.code.as_deref().unwrap_or("")
            )),
        }),
        None => Err(InputError::WrongEvent {
            expected: event,
            found: "none".to_owned(),
        }),
    }
}

// ---------------------------------------------------------------------------------------------
// Dates and exact numbers
// ---------------------------------------------------------------------------------------------

/// A FHIR `date` or `dateTime` with at least a day: the local date and time as written, and
/// the instant when a time (always with a zone in FHIR) is given.
struct DateTimeText {
    date: Date,
    time: Option<Time>,
    instant: Option<OffsetDateTime>,
}

fn date_time(text: &str) -> Option<DateTimeText> {
    let text = text.trim();
    if text.len() == 10 {
        let date = Date::parse(text, format_description!("[year]-[month]-[day]")).ok()?;
        return Some(DateTimeText {
            date,
            time: None,
            instant: None,
        });
    }
    let instant = OffsetDateTime::parse(text, &Rfc3339).ok()?;
    Some(DateTimeText {
        date: instant.date(),
        time: Some(instant.time()),
        instant: Some(instant),
    })
}

fn date_at(text: Option<&str>, element: &str) -> Result<Option<DateTimeText>, InputError> {
    match text {
        None => Ok(None),
        Some(t) => date_time(t)
            .map(Some)
            .ok_or_else(|| invalid(element, "not a FHIR date or dateTime with at least a day")),
    }
}

/// The exact decimal written in a JSON number (`60`, `1.5`, `30.0`, `1e1`). `None` for
/// anything that is not a number or does not fit a [`Decimal`] exactly.
fn exact_decimal(raw: &RawValue) -> Option<Decimal> {
    let text = raw.get().trim();
    if !text.starts_with(|c: char| c == '-' || c.is_ascii_digit()) {
        return None;
    }
    if text.contains(['e', 'E']) {
        Decimal::from_scientific(text).ok()
    } else {
        Decimal::from_str_exact(text).ok()
    }
}

/// A whole, non-negative number that fits a `u32` (`30` or `30.0`).
fn whole_u32(d: Decimal) -> Option<u32> {
    if d.is_sign_negative() && !d.is_zero() {
        return None;
    }
    if !d.fract().is_zero() {
        return None;
    }
    d.trunc().to_u32()
}

// ---------------------------------------------------------------------------------------------
// 1. Approval: ClaimResponse
// ---------------------------------------------------------------------------------------------

/// The insurer's decision on the gateway's preauthorization Claim (Kostenzusage or refusal).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovalDecision {
    /// `ClaimResponse.identifier[*].value` (the first one with a value), else
    /// `ClaimResponse.id`: the insurer's id of this answer, for recognising a resent answer.
    pub claim_response_id: Option<String>,
    /// The gateway id of the referral: `ClaimResponse.request.identifier.value` where
    /// `request.identifier.system` is [`REFERRAL_ID_SYSTEM`] (required; `request.reference`
    /// is not read, because only the identifier survives the insurer's systems).
    pub referral_id: String,
    /// Approved: `outcome` is `complete` or `partial`, there is no `error`, and no item
    /// adjudication has a category coding with code `denied`. `outcome = error` is a refusal.
    pub approved: bool,
    /// Genehmigungskennzeichen: `ClaimResponse.preAuthRef`.
    pub approval_number: Option<String>,
    /// Genehmigungsdatum: the date of `ClaimResponse.created` as written.
    pub approval_date: Option<Date>,
    /// `ClaimResponse.preAuthPeriod` (start and end both required when the period is given).
    pub period: Option<(Date, Date)>,
    /// Approved units: `item[0].adjudication` with category
    /// `http://terminology.hl7.org/CodeSystem/adjudication#eligible`, its `value` (a whole
    /// number, read from the exact number text).
    pub approved_units: Option<u32>,
    /// `ClaimResponse.insurer.identifier` (system and value as sent; the kind is
    /// [`IdentifierKind::Other`] here, the wiring classifies it with the mappings).
    pub insurer_ids: Vec<Identifier>,
    /// For a refusal only: `disposition`, else the text of `error[0].code`.
    pub reason: Option<String>,
}

/// Reads the insurer's answer to a preauthorization: a `ClaimResponse` with
/// `use = preauthorization`, alone or in a message Bundle whose MessageHeader has the event
/// [`EVENT_PREAUTHORIZATION_RESPONSE`] and which holds exactly one ClaimResponse.
pub fn parse_claim_response(bytes: &[u8]) -> Result<ApprovalDecision, InputError> {
    let (text, resource_type) = validate(bytes)?;
    match resource_type.as_str() {
        "ClaimResponse" => decision(view(text, "ClaimResponse")?),
        "Bundle" => {
            let entries = message_entries(text, EVENT_PREAUTHORIZATION_RESPONSE)?;
            let mut responses = entries.iter().filter(|(_, rt, _)| rt == "ClaimResponse");
            let Some((n, _, json)) = responses.next() else {
                return Err(missing("Bundle.entry with a ClaimResponse"));
            };
            if responses.next().is_some() {
                return Err(invalid(
                    "Bundle.entry",
                    "more than one ClaimResponse; send one answer per message",
                ));
            }
            decision(view(json, &format!("Bundle.entry[{n}].resource"))?)
        }
        other => Err(InputError::WrongResource {
            expected: "a ClaimResponse or a message Bundle",
            found: other.to_owned(),
        }),
    }
}

fn decision(cr: RawClaimResponse<'_>) -> Result<ApprovalDecision, InputError> {
    match cr.claim_use.as_deref() {
        Some("preauthorization") => {}
        Some(other) => {
            return Err(invalid(
                "ClaimResponse.use",
                format!(
                    "`{}`: only the answer to a preauthorization is an approval",
                    shown(other)
                ),
            ));
        }
        None => return Err(missing("ClaimResponse.use")),
    }
    let referral_id = cr
        .request
        .as_ref()
        .and_then(|r| r.identifier_in(REFERRAL_ID_SYSTEM))
        .ok_or_else(|| {
            missing(format!(
                "ClaimResponse.request.identifier with system {REFERRAL_ID_SYSTEM} and a value \
                 (the gateway id of the referral)"
            ))
        })?;
    let denied_item = cr.item.iter().any(|i| {
        i.adjudication.iter().any(|a| {
            a.category
                .coding
                .iter()
                .any(|c| c.code.as_deref() == Some("denied"))
        })
    });
    let approved = match cr.outcome.as_deref() {
        Some("complete" | "partial") => cr.error.is_empty() && !denied_item,
        Some("error") => false,
        Some("queued") => return Err(InputError::NotDecided),
        Some(other) => {
            return Err(invalid(
                "ClaimResponse.outcome",
                format!(
                    "`{}` is not complete, partial, error or queued",
                    shown(other)
                ),
            ));
        }
        None => return Err(missing("ClaimResponse.outcome")),
    };
    let approval_date = date_at(cr.created.as_deref(), "ClaimResponse.created")?.map(|d| d.date);
    let period = match &cr.pre_auth_period {
        None => None,
        Some(p) => {
            let start = date_at(p.start.as_deref(), "ClaimResponse.preAuthPeriod.start")?
                .ok_or_else(|| missing("ClaimResponse.preAuthPeriod.start"))?;
            let end = date_at(p.end.as_deref(), "ClaimResponse.preAuthPeriod.end")?
                .ok_or_else(|| missing("ClaimResponse.preAuthPeriod.end"))?;
            if end.date < start.date {
                return Err(invalid(
                    "ClaimResponse.preAuthPeriod",
                    "the end lies before the start",
                ));
            }
            Some((start.date, end.date))
        }
    };
    let approved_units = match cr.item.first().and_then(|i| {
        i.adjudication.iter().find(|a| {
            a.category
                .coding
                .iter()
                .any(|c| c.is(ADJUDICATION_SYSTEM, "eligible"))
        })
    }) {
        None => None,
        Some(a) => match a.value {
            None => None,
            Some(raw) => Some(exact_decimal(raw).and_then(whole_u32).ok_or_else(|| {
                invalid(
                    "ClaimResponse.item[0].adjudication('eligible').value",
                    "not a whole, non-negative number of units",
                )
            })?),
        },
    };
    let insurer_ids = cr
        .insurer
        .as_ref()
        .and_then(|r| r.identifier.as_ref())
        .and_then(|i| {
            non_blank(i.value.as_deref()).map(|value| Identifier {
                kind: IdentifierKind::Other,
                system: i.system.clone(),
                value,
            })
        })
        .into_iter()
        .collect();
    let reason = if approved {
        None
    } else {
        non_blank(cr.disposition.as_deref())
            .or_else(|| cr.error.first().and_then(|e| e.code.readable()))
    };
    Ok(ApprovalDecision {
        claim_response_id: cr
            .identifier
            .iter()
            .find_map(|i| non_blank(i.value.as_deref()))
            .or_else(|| non_blank(cr.id.as_deref())),
        referral_id,
        approved,
        approval_number: non_blank(cr.pre_auth_ref.as_deref()),
        approval_date,
        period,
        approved_units,
        insurer_ids,
        reason,
    })
}

// ---------------------------------------------------------------------------------------------
// 2. Delivered sessions: session report Bundle with Encounters
// ---------------------------------------------------------------------------------------------

/// What a reported session is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SessionStatus {
    /// `Encounter.status = finished`: the session took place and is billable.
    Delivered,
    /// `Encounter.status = cancelled` or `entered-in-error`: a correction that withdraws an
    /// earlier report with the same [`SessionReport::session_key`].
    Cancelled,
}

/// One session as the provider reported it.
///
/// The chosen shape is a FHIR message Bundle (event [`EVENT_SESSION_REPORT`]) with one
/// `Encounter` per session: a sociotherapy session is an encounter with a time, a place and
/// participants, and prices are the gateway's business (from the contract), so `ChargeItem`,
/// which carries prices, is not used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionReport {
    /// `Encounter.identifier[0]` as `system|value` (both required): the idempotency key of a
    /// session; a resent or corrected report carries the same key.
    pub session_key: String,
    /// The gateway id of the referral: the `Encounter.basedOn` reference whose
    /// `identifier.system` is [`REFERRAL_ID_SYSTEM`] (required).
    pub referral_id: String,
    /// Delivered or withdrawn.
    pub status: SessionStatus,
    /// The date of `Encounter.period.start`, local as written (required).
    pub date: Date,
    /// The time of `Encounter.period.start`, local as written, when one is given.
    pub start: Option<Time>,
    /// `Encounter.length` (UCUM `min`, or `h` converted; a whole number of minutes), else
    /// `period.end - period.start` in whole minutes (seconds dropped). 1..=1440 for a delivered
    /// session; a cancelled one without either is 0.
    pub minutes: u32,
    /// `Encounter.type` coding of [`DELIVERY_MODE_SYSTEM`] (`individual` / `group`); individual
    /// when absent.
    pub delivery: Delivery,
    /// `Encounter.location.physicalType` coding of [`SETTING_SYSTEM`] (the first location that
    /// has one); other-place when absent. `Encounter.class` is not read.
    pub setting: Setting,
    /// `Encounter.type` contains [`SESSION_KIND_SYSTEM`]`#trial` (Probestunde).
    pub trial: bool,
    /// `Encounter.participant[0].individual.identifier.value`: the sociotherapist.
    pub professional_id: Option<String>,
}

/// Reads a session report: a message Bundle whose MessageHeader has the event
/// [`EVENT_SESSION_REPORT`]; every `Encounter` entry is one session (at least one; no two
/// with the same session key). Any unusable Encounter refuses the whole report, naming the
/// entry. Other entries (Patient, Practitioner, ...) are allowed and not read.
pub fn parse_session_report(bytes: &[u8]) -> Result<Vec<SessionReport>, InputError> {
    let (text, resource_type) = validate(bytes)?;
    if resource_type != "Bundle" {
        return Err(InputError::WrongResource {
            expected: "a message Bundle with Encounters",
            found: resource_type,
        });
    }
    let entries = message_entries(text, EVENT_SESSION_REPORT)?;
    let mut sessions: Vec<SessionReport> = Vec::new();
    for (n, _, json) in entries.iter().filter(|(_, rt, _)| rt == "Encounter") {
        let at = format!("Bundle.entry[{n}].resource");
        let s = session(&at, view(json, &at)?)?;
        if sessions
            .iter()
            .any(|prev| prev.session_key == s.session_key)
        {
            return Err(invalid(
                format!("{at}.identifier[0]"),
                "an earlier Encounter of this report has the same session key",
            ));
        }
        sessions.push(s);
    }
    if sessions.is_empty() {
        return Err(missing("Bundle.entry with an Encounter"));
    }
    Ok(sessions)
}

fn session(at: &str, e: RawEncounter<'_>) -> Result<SessionReport, InputError> {
    let session_key = e
        .identifier
        .first()
        .and_then(|i| {
            let system = non_blank(i.system.as_deref())?;
            let value = non_blank(i.value.as_deref())?;
            Some(format!("{system}|{value}"))
        })
        .ok_or_else(|| missing(format!("{at}.identifier[0] with system and value")))?;
    let status = match e.status.as_deref() {
        Some("finished") => SessionStatus::Delivered,
        Some("cancelled" | "entered-in-error") => SessionStatus::Cancelled,
        Some(other) => {
            return Err(invalid(
                format!("{at}.status"),
                format!(
                    "`{}`: a session report takes finished, cancelled or entered-in-error",
                    shown(other)
                ),
            ));
        }
        None => return Err(missing(format!("{at}.status"))),
    };
    let referral_id = e
        .based_on
        .iter()
        .find_map(|r| r.identifier_in(REFERRAL_ID_SYSTEM))
        .ok_or_else(|| {
            missing(format!(
                "{at}.basedOn.identifier with system {REFERRAL_ID_SYSTEM} and a value"
            ))
        })?;
    let period = e.period.unwrap_or_default();
    let start = date_at(period.start.as_deref(), &format!("{at}.period.start"))?
        .ok_or_else(|| missing(format!("{at}.period.start")))?;
    let end = date_at(period.end.as_deref(), &format!("{at}.period.end"))?;
    let minutes = minutes(at, e.length.as_ref(), &start, end.as_ref(), status)?;

    let mut delivery = None;
    for c in e.encounter_type.iter().flat_map(|t| &t.coding) {
        if c.system.as_deref() != Some(DELIVERY_MODE_SYSTEM) {
            continue;
        }
        let code = c.code.as_deref().unwrap_or("");
        let d = match code {
            "individual" => Delivery::Individual,
            "group" => Delivery::Group,
            other => {
                return Err(invalid(
                    format!("{at}.type"),
                    format!("`{}` is not a code of {DELIVERY_MODE_SYSTEM}", shown(other)),
                ));
            }
        };
        if delivery.is_some_and(|prev| prev != d) {
            return Err(invalid(
                format!("{at}.type"),
                "both individual and group: say one delivery mode",
            ));
        }
        delivery = Some(d);
    }
    let trial = e
        .encounter_type
        .iter()
        .flat_map(|t| &t.coding)
        .any(|c| c.is(SESSION_KIND_SYSTEM, "trial"));

    let mut setting = None;
    for (k, location) in e.location.iter().enumerate() {
        let found = location
            .physical_type
            .iter()
            .flat_map(|t| &t.coding)
            .find(|c| c.system.as_deref() == Some(SETTING_SYSTEM));
        if let Some(c) = found {
            let code = c.code.as_deref().unwrap_or("");
            setting = Some(
                serde_json::from_value::<Setting>(Value::String(code.to_owned())).map_err(
                    |_| {
                        invalid(
                            format!("{at}.location[{k}].physicalType"),
                            format!("`{}` is not a code of {SETTING_SYSTEM}", shown(code)),
                        )
                    },
                )?,
            );
            break;
        }
    }

    let professional_id = e
        .participant
        .first()
        .and_then(|p| p.individual.as_ref())
        .and_then(|r| r.identifier.as_ref())
        .and_then(|i| non_blank(i.value.as_deref()));

    Ok(SessionReport {
        session_key,
        referral_id,
        status,
        date: start.date,
        start: start.time,
        minutes,
        delivery: delivery.unwrap_or(Delivery::Individual),
        setting: setting.unwrap_or(Setting::OtherPlace),
        trial,
        professional_id,
    })
}

/// The session's minutes from `length`, else from the period.
fn minutes(
    at: &str,
    length: Option<&RawDuration<'_>>,
    start: &DateTimeText,
    end: Option<&DateTimeText>,
    status: SessionStatus,
) -> Result<u32, InputError> {
    let (source, minutes) = if let Some(length) = length {
        let element = format!("{at}.length");
        let raw = length
            .value
            .ok_or_else(|| missing(format!("{element}.value")))?;
        let value = exact_decimal(raw)
            .ok_or_else(|| invalid(format!("{element}.value"), "not a decimal number"))?;
        let unit = length.code.as_deref().or(length.unit.as_deref());
        let factor = match unit {
            Some("min") => Decimal::ONE,
            Some("h") => Decimal::from(60),
            _ => {
                return Err(invalid(
                    element,
                    "the unit (code, else unit) must be UCUM min or h",
                ));
            }
        };
        let minutes = value
            .checked_mul(factor)
            .and_then(whole_u32)
            .ok_or_else(|| invalid(&element, "not a whole, non-negative number of minutes"))?;
        (element, minutes)
    } else {
        let element = format!("{at}.period");
        match (start.instant, end.and_then(|e| e.instant)) {
            (Some(from), Some(to)) => {
                let seconds = (to - from).whole_seconds();
                if seconds < 0 {
                    return Err(invalid(element, "the end lies before the start"));
                }
                (element, u32::try_from(seconds / 60).unwrap_or(u32::MAX))
            }
            _ if status == SessionStatus::Cancelled => (element, 0),
            _ => {
                return Err(missing(format!(
                    "{at}.length, or {at}.period.start and .end with times"
                )));
            }
        }
    };
    if minutes > MAX_SESSION_MINUTES {
        return Err(invalid(
            source,
            format!("longer than {MAX_SESSION_MINUTES} minutes"),
        ));
    }
    if minutes == 0 && status == SessionStatus::Delivered {
        return Err(invalid(
            source,
            "a delivered session needs at least one minute",
        ));
    }
    Ok(minutes)
}

// ---------------------------------------------------------------------------------------------
// 3. The billing Claim
// ---------------------------------------------------------------------------------------------

/// Everything one billing Claim needs: one referral in one billing month.
#[derive(Debug, Clone, Copy)]
pub struct ClaimInput<'a> {
    /// The gateway's id of this billing message: `Claim.identifier` (system
    /// [`BILLING_CLAIM_ID_SYSTEM`]), `Bundle.identifier`, and the seed of the stable `urn:uuid`
    /// fullUrls. A resend of the same claim uses the same id; a correction a new one.
    pub gateway_id: &'a str,
    /// The gateway id of the referral: `Claim.referral.identifier`.
    pub referral_id: &'a str,
    /// The billing month: `Claim.billablePeriod`.
    pub period: BillingPeriod,
    /// The patient's identifiers; `Claim.patient.identifier` is the first KVNR (GKV), else
    /// PKV id, BSN, HETU, else the first one given.
    pub patient_ids: &'a [Identifier],
    /// IK of the Krankenkasse: `Claim.insurer.identifier`.
    pub insurer_ik: &'a str,
    /// IK of the provider: `Claim.provider.identifier`.
    pub provider_ik: &'a str,
    /// Genehmigungskennzeichen: `Claim.insurance[0].preAuthRef[0]`.
    pub approval_number: Option<&'a str>,
    /// The priced sessions and co-payments.
    pub settlement: &'a Settlement,
    /// `(system, code, display)` of the product: every `item.productOrService` (from the
    /// mappings' `ClaimProduct` when wired).
    pub service_code: (&'a str, &'a str, &'a str),
    /// For a correction: the `Claim.identifier` value (system [`BILLING_CLAIM_ID_SYSTEM`]) of
    /// the Claim this one replaces, sent as `Claim.related` with relationship `prior`.
    pub correction_of: Option<&'a str>,
    /// When the claim is made: `Claim.created` and `Bundle.timestamp` (a parameter so that
    /// this module stays pure and its output reproducible).
    pub created: OffsetDateTime,
}

// The output is written from these structs (field order = FHIR element order), never through
// `serde_json::Value`: a `Box<RawValue>` inside a `Value` would be parsed into an `f64`.

/// A money amount: its exact decimal text and EUR.
#[derive(Serialize)]
struct Money {
    value: Box<RawValue>,
    currency: &'static str,
}

#[derive(Serialize)]
struct ExactQuantity {
    value: Box<RawValue>,
}

#[derive(Serialize)]
struct EurQuantity {
    value: Box<RawValue>,
    unit: &'static str,
    system: &'static str,
    code: &'static str,
}

#[derive(Serialize)]
struct OutMeta {
    tag: [out::Coding<'static>; 1],
}

#[derive(Serialize)]
struct OutRelated<'a> {
    claim: out::Reference<'a>,
    relationship: out::CodeableConcept<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct OutSupportingInfo<'a> {
    sequence: usize,
    category: out::CodeableConcept<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    timing_date: Option<String>,
    value_quantity: EurQuantity,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<out::CodeableConcept<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct OutInsurance<'a> {
    sequence: u32,
    focal: bool,
    coverage: out::Reference<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pre_auth_ref: Option<[&'a str; 1]>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct OutItem<'a> {
    sequence: usize,
    product_or_service: out::CodeableConcept<'a>,
    modifier: [out::CodeableConcept<'a>; 1],
    serviced_date: String,
    quantity: ExactQuantity,
    unit_price: Money,
    net: Money,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct OutClaim<'a> {
    resource_type: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    meta: Option<OutMeta>,
    identifier: [out::Identifier<'a>; 1],
    status: &'static str,
    #[serde(rename = "type")]
    claim_type: out::CodeableConcept<'a>,
    #[serde(rename = "use")]
    claim_use: &'static str,
    patient: out::Reference<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    billable_period: Option<out::Period>,
    created: String,
    insurer: out::Reference<'a>,
    provider: out::Reference<'a>,
    priority: out::CodeableConcept<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    related: Option<[OutRelated<'a>; 1]>,
    referral: out::Reference<'a>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    supporting_info: Vec<OutSupportingInfo<'a>>,
    insurance: [OutInsurance<'a>; 1],
    #[serde(skip_serializing_if = "Vec::is_empty")]
    item: Vec<OutItem<'a>>,
    total: Money,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct OutEntry<'a, R> {
    full_url: &'a str,
    resource: R,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct OutBundle<'a> {
    resource_type: &'static str,
    identifier: out::Identifier<'a>,
    #[serde(rename = "type")]
    bundle_type: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    timestamp: Option<String>,
    entry: (
        OutEntry<'a, out::MessageHeader<'a>>,
        OutEntry<'a, OutClaim<'a>>,
    ),
}

/// The exact text of `d` as a JSON number. A [`Decimal`]'s `Display` is always one (optional
/// `-`, digits, optional `.` and digits; the scale, so trailing zeros, kept); the `null`
/// fallback, which no FHIR reader would accept, is unreachable.
fn exact(d: Decimal) -> Box<RawValue> {
    RawValue::from_string(d.to_string()).unwrap_or_default()
}

/// A number with at least two decimals (`60` -> `60.00`, as amounts and Anzahl in the § 302
/// file): padding only, never rounding, so a number with more decimals keeps them all.
fn cents(d: Decimal) -> Box<RawValue> {
    let mut padded = d;
    if padded.scale() < 2 {
        padded.rescale(2);
    }
    exact(padded)
}

fn eur(d: Decimal) -> Money {
    Money {
        value: cents(d),
        currency: "EUR",
    }
}

fn eur_quantity(d: Decimal) -> EurQuantity {
    EurQuantity {
        value: cents(d),
        unit: "EUR",
        system: CURRENCY_SYSTEM,
        code: "EUR",
    }
}

fn date_text(d: Date) -> String {
    format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day())
}

/// `Claim.patient`: the first KVNR, else PKV id, BSN, HETU, else the first identifier.
fn patient_reference(ids: &[Identifier]) -> out::Reference<'_> {
    let preferred = [
        IdentifierKind::Kvid10,
        IdentifierKind::PkvId,
        IdentifierKind::Bsn,
        IdentifierKind::Hetu,
    ];
    let chosen = preferred
        .iter()
        .find_map(|k| ids.iter().find(|i| i.kind == *k))
        .or_else(|| ids.first());
    chosen.map_or_else(
        || out::Reference::display("patient of the referral"),
        out::Reference::identified,
    )
}

/// The billing Claim for one referral and month, as the JSON text of a FHIR message Bundle:
/// a MessageHeader (event [`EVENT_BILLING_CLAIM`], focus the Claim) and the Claim.
///
/// The Claim (`use = claim`, type `professional`, priority `normal`) has one item per priced
/// session (productOrService = [`ClaimInput::service_code`], modifier = delivery mode,
/// servicedDate, quantity, unitPrice and net), `total` = gross, and in `supportingInfo` each
/// day's co-payment (category [`CLAIM_INFO_SYSTEM`]`#copayment`, timingDate = the day, reason
/// from [`COPAYMENT_OUTCOME_SYSTEM`]), then `copayment-total` and `net-total`. Every amount and
/// quantity is the exact text of its [`Decimal`], padded to at least two decimals (`60.00`,
/// `1.00`; padding only, never rounding). When any session is priced with a contract
/// placeholder, the Claim carries `meta.tag` `v3-ActReason#HTEST` (test data): such a Claim
/// must not reach a production endpoint.
pub fn billing_claim(input: &ClaimInput<'_>) -> String {
    let s = input.settlement;
    let claim_url = format!(
        "urn:uuid:{}",
        crate::forward::fhir::derived_uuid(input.gateway_id, 40_000)
    );
    let header_url = format!(
        "urn:uuid:{}",
        crate::forward::fhir::derived_uuid(input.gateway_id, 40_001)
    );
    // Rfc3339 fails only for years beyond 9999 or offsets with seconds; the date alone is
    // still a valid `dateTime` then, and `Bundle.timestamp` is optional.
    let timestamp = input.created.format(&Rfc3339).ok();
    let created = timestamp
        .clone()
        .unwrap_or_else(|| date_text(input.created.date()));

    let (system, code, display) = input.service_code;
    let product = out::CodeableConcept::of(out::Coding::new(system, code).with_display(display));
    let item = s
        .sessions
        .iter()
        .enumerate()
        .map(|(n, p)| OutItem {
            sequence: n + 1,
            product_or_service: product,
            modifier: [out::CodeableConcept::code(
                DELIVERY_MODE_SYSTEM,
                match p.delivery {
                    Delivery::Individual => "individual",
                    Delivery::Group => "group",
                },
            )],
            serviced_date: date_text(p.date),
            quantity: ExactQuantity {
                value: cents(p.quantity),
            },
            unit_price: eur(p.unit_price),
            net: eur(p.cost),
        })
        .collect();

    let days = s.copayment.days.iter().map(|day| {
        let outcome = match day.outcome {
            DayOutcome::Charged => "charged",
            DayOutcome::UnderAge => "under-age",
            DayOutcome::Exempt => "exempt",
        };
        (
            "copayment",
            Some(day.date),
            day.copayment,
            Some(out::CodeableConcept::code(
                COPAYMENT_OUTCOME_SYSTEM,
                outcome,
            )),
        )
    });
    let totals = [
        ("copayment-total", None, s.copayment_total, None),
        ("net-total", None, s.net, None),
    ];
    let supporting_info = days
        .chain(totals)
        .enumerate()
        .map(|(n, (category, day, amount, reason))| OutSupportingInfo {
            sequence: n + 1,
            category: out::CodeableConcept::code(CLAIM_INFO_SYSTEM, category),
            timing_date: day.map(date_text),
            value_quantity: eur_quantity(amount),
            reason,
        })
        .collect();

    let related = input.correction_of.map(|prior| {
        [OutRelated {
            claim: out::Reference::by_identifier(Some(BILLING_CLAIM_ID_SYSTEM), prior),
            relationship: out::CodeableConcept::code(RELATED_CLAIM_SYSTEM, "prior"),
        }]
    });
    let billable_period =
        input
            .period
            .first_day()
            .zip(input.period.last_day())
            .map(|(first, last)| out::Period {
                start: Some(date_text(first)),
                end: Some(date_text(last)),
            });
    let meta = s.sessions.iter().any(|p| p.placeholder).then_some(OutMeta {
        tag: [out::Coding::new(ACT_REASON_SYSTEM, "HTEST").with_display("test health data")],
    });

    let claim = OutClaim {
        resource_type: "Claim",
        meta,
        identifier: [out::Identifier {
            system: Some(BILLING_CLAIM_ID_SYSTEM),
            value: input.gateway_id,
        }],
        status: "active",
        claim_type: out::CodeableConcept::code(CLAIM_TYPE_SYSTEM, "professional"),
        claim_use: "claim",
        patient: patient_reference(input.patient_ids),
        billable_period,
        created,
        insurer: out::Reference::by_identifier(Some(IK_SYSTEM), input.insurer_ik),
        provider: out::Reference::by_identifier(Some(IK_SYSTEM), input.provider_ik),
        priority: out::CodeableConcept::code(PRIORITY_SYSTEM, "normal"),
        related,
        referral: out::Reference::by_identifier(Some(REFERRAL_ID_SYSTEM), input.referral_id),
        supporting_info,
        insurance: [OutInsurance {
            sequence: 1,
            focal: true,
            coverage: out::Reference::display("coverage of the referral"),
            pre_auth_ref: input.approval_number.map(|n| [n]),
        }],
        item,
        total: eur(s.gross),
    };
    let header = out::MessageHeader::new(
        EVENT_SYSTEM,
        EVENT_BILLING_CLAIM,
        vec![out::Reference::to(&claim_url)],
    );
    let bundle = OutBundle {
        resource_type: "Bundle",
        identifier: out::Identifier {
            system: Some(BILLING_CLAIM_ID_SYSTEM),
            value: input.gateway_id,
        },
        bundle_type: "message",
        timestamp,
        entry: (
            OutEntry {
                full_url: &header_url,
                resource: header,
            },
            OutEntry {
                full_url: &claim_url,
                resource: claim,
            },
        ),
    };
    // Plain structs, string keys and valid raw numbers: serialising cannot fail.
    serde_json::to_string(&bundle).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use std::fmt::{Debug, Display};

    use fhir_sdk::r4b::resources::Resource;
    use rust_decimal::Decimal;
    use serde_json::{Value, json};
    use time::Month;
    use time::macros::{date, datetime, time};

    use super::*;
    use crate::billing::tests::{case, eur, session, tariff};
    use crate::billing::{CopaymentRules, SessionCostRules};

    const CLAIM_RESPONSE: &[u8] = include_bytes!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/billing/claim-response-approved.json"
    ));
    const SESSION_REPORT: &[u8] = include_bytes!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/billing/session-report.json"
    ));
    const REFERRAL: &str = "01936b2e-7c3a-7def-8a1b-3c4d5e6f7a8b";

    fn ok<T, E: Display>(r: Result<T, E>) -> T {
        match r {
            Ok(t) => t,
            Err(e) => panic!("unexpected error: {e}"),
        }
    }

    fn refused<T: Debug>(r: Result<T, InputError>) -> InputError {
        match r {
            Ok(t) => panic!("expected a refusal, got {t:?}"),
            Err(e) => e,
        }
    }

    fn fixture(bytes: &[u8]) -> Value {
        ok(serde_json::from_slice(bytes))
    }

    fn bytes(v: &Value) -> Vec<u8> {
        v.to_string().into_bytes()
    }

    /// A message Bundle with a MessageHeader of `event` and `resources`.
    fn message(event: &str, resources: Vec<Value>) -> Vec<u8> {
        let mut entry = vec![json!({
            "fullUrl": "urn:uuid:9a4f0c1e-0000-4000-8000-000000000001",
            "resource": {
                "resourceType": "MessageHeader",
                "eventCoding": { "system": EVENT_SYSTEM, "code": event },
                "source": { "endpoint": "https://kasse.example/fhir" },
                "focus": [{ "reference": "urn:uuid:9a4f0c1e-0000-4000-8000-000000000002" }],
            },
        })];
        for (n, r) in resources.into_iter().enumerate() {
            entry.push(json!({
                "fullUrl": format!("urn:uuid:9a4f0c1e-0000-4000-8000-{:012}", n + 2),
                "resource": r,
            }));
        }
        bytes(&json!({ "resourceType": "Bundle", "type": "message", "entry": entry }))
    }

    // ----- 1. approval --------------------------------------------------------------------

    #[test]
    fn approved_claim_response_gives_every_field() {
        let d = ok(parse_claim_response(CLAIM_RESPONSE));
        assert_eq!(
            d,
            ApprovalDecision {
                claim_response_id: Some("KZ-2026-000471".to_owned()),
                referral_id: REFERRAL.to_owned(),
                approved: true,
                approval_number: Some("GEN-2026/4711".to_owned()),
                approval_date: Some(date!(2026 - 09 - 20)),
                period: Some((date!(2026 - 10 - 01), date!(2027 - 03 - 31))),
                approved_units: Some(30),
                insurer_ids: vec![Identifier {
                    kind: IdentifierKind::Other,
                    system: Some(IK_SYSTEM.to_owned()),
                    value: "109519005".to_owned(),
                }],
                reason: None,
            }
        );
    }

    #[test]
    fn outcome_error_is_a_refusal_with_the_disposition() {
        let mut v = fixture(CLAIM_RESPONSE);
        v["outcome"] = json!("error");
        v["disposition"] = json!("Voraussetzungen nach § 37a SGB V nicht erfüllt");
        v["error"] = json!([{ "code": { "coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/adjudication-error",
            "code": "a001", "display": "Missing Identifier" }] } }]);
        if let Some(o) = v.as_object_mut() {
            o.remove("preAuthRef");
            o.remove("preAuthPeriod");
            o.remove("item");
        }
        let d = ok(parse_claim_response(&bytes(&v)));
        assert!(!d.approved);
        assert_eq!(
            d.reason.as_deref(),
            Some("Voraussetzungen nach § 37a SGB V nicht erfüllt")
        );
        assert_eq!(d.approval_number, None);
        assert_eq!(d.period, None);
        assert_eq!(d.approved_units, None);
        assert_eq!(d.referral_id, REFERRAL);

        // Without a disposition the first error's text is the reason.
        if let Some(o) = v.as_object_mut() {
            o.remove("disposition");
        }
        let d = ok(parse_claim_response(&bytes(&v)));
        assert_eq!(d.reason.as_deref(), Some("Missing Identifier"));
    }

    #[test]
    fn denied_adjudication_or_errors_refuse_a_complete_outcome() {
        let mut v = fixture(CLAIM_RESPONSE);
        v["item"][0]["adjudication"][1]["category"]["coding"][0]["code"] = json!("denied");
        v["disposition"] = json!("abgelehnt");
        let d = ok(parse_claim_response(&bytes(&v)));
        assert!(!d.approved);
        assert_eq!(d.reason.as_deref(), Some("abgelehnt"));
        assert_eq!(d.approved_units, None, "no eligible adjudication left");

        let mut v = fixture(CLAIM_RESPONSE);
        v["outcome"] = json!("partial");
        assert!(ok(parse_claim_response(&bytes(&v))).approved);
        v["error"] = json!([{ "code": { "text": "Versichertennummer unbekannt" } }]);
        if let Some(o) = v.as_object_mut() {
            o.remove("disposition");
        }
        let d = ok(parse_claim_response(&bytes(&v)));
        assert!(!d.approved);
        assert_eq!(d.reason.as_deref(), Some("Versichertennummer unbekannt"));
    }

    #[test]
    fn missing_request_identifier_is_refused_with_a_clear_reason() {
        let mut v = fixture(CLAIM_RESPONSE);
        v["request"] = json!({ "reference": "Claim/preauth-1" });
        let e = refused(parse_claim_response(&bytes(&v)));
        assert!(matches!(&e, InputError::Missing { element }
            if element.starts_with("ClaimResponse.request.identifier")));
        let text = e.to_string();
        assert!(text.contains(REFERRAL_ID_SYSTEM), "{text}");
        assert!(text.ends_with("is missing"), "{text}");

        // Another identifier system is not the referral either.
        v["request"] = json!({ "identifier": { "system": "urn:other", "value": REFERRAL } });
        assert!(matches!(
            refused(parse_claim_response(&bytes(&v))),
            InputError::Missing { .. }
        ));
    }

    #[test]
    fn broken_input_is_refused_without_patient_data() {
        // JSON syntax.
        let e = refused(parse_claim_response(
            br#"{"resourceType": "ClaimResponse", "#,
        ));
        assert!(
            matches!(
                e,
                InputError::Unreadable {
                    code: "GW-DEC-01",
                    ..
                }
            ),
            "{e}"
        );
        // Empty.
        let e = refused(parse_claim_response(b"  \n"));
        assert!(matches!(
            e,
            InputError::Unreadable {
                code: "GW-DEC-07",
                ..
            }
        ));
        // Valid JSON, not a valid R4 ClaimResponse: the KVNR sent as a string where a
        // Reference belongs must not be echoed.
        let mut v = fixture(CLAIM_RESPONSE);
        v["patient"] = json!("A123456780");
        let e = refused(parse_claim_response(&bytes(&v)));
        assert!(
            matches!(
                e,
                InputError::Unreadable {
                    code: "GW-DEC-02",
                    ..
                }
            ),
            "{e}"
        );
        assert!(!e.to_string().contains("A123456780"), "{e}");
        // A closed code that is not R4.
        let mut v = fixture(CLAIM_RESPONSE);
        v["outcome"] = json!("approved");
        assert!(matches!(
            refused(parse_claim_response(&bytes(&v))),
            InputError::Unreadable {
                code: "GW-DEC-02",
                ..
            }
        ));
        // Another resource.
        let e = refused(parse_claim_response(
            br#"{"resourceType": "Patient", "id": "p1"}"#,
        ));
        assert!(matches!(e, InputError::WrongResource { .. }), "{e}");
        // The answer to a billing claim is not an approval.
        let mut v = fixture(CLAIM_RESPONSE);
        v["use"] = json!("claim");
        let e = refused(parse_claim_response(&bytes(&v)));
        assert!(
            matches!(&e, InputError::Invalid { element, .. } if element == "ClaimResponse.use")
        );
        // A half-open approval period.
        let mut v = fixture(CLAIM_RESPONSE);
        v["preAuthPeriod"] = json!({ "start": "2026-10-01" });
        let e = refused(parse_claim_response(&bytes(&v)));
        assert_eq!(e.to_string(), "ClaimResponse.preAuthPeriod.end is missing");
        // Fractional units.
        let mut v = fixture(CLAIM_RESPONSE);
        v["item"][0]["adjudication"][1]["value"] = json!(2.5);
        assert!(matches!(
            refused(parse_claim_response(&bytes(&v))),
            InputError::Invalid { .. }
        ));
    }

    #[test]
    fn units_are_read_from_the_exact_number_text() {
        let text = String::from_utf8_lossy(CLAIM_RESPONSE).replace(
            "\"code\": \"eligible\"\n              }\n            ]\n          },\n          \"value\": 30",
            "\"code\": \"eligible\"\n              }\n            ]\n          },\n          \"value\": 30.00",
        );
        assert!(text.contains("30.00"));
        assert_eq!(
            ok(parse_claim_response(text.as_bytes())).approved_units,
            Some(30)
        );
    }

    #[test]
    fn queued_is_not_a_decision() {
        let mut v = fixture(CLAIM_RESPONSE);
        v["outcome"] = json!("queued");
        assert_eq!(
            refused(parse_claim_response(&bytes(&v))),
            InputError::NotDecided
        );
    }

    #[test]
    fn claim_response_as_the_focus_of_a_message_bundle() {
        let cr = fixture(CLAIM_RESPONSE);
        let lone = ok(parse_claim_response(CLAIM_RESPONSE));
        let in_bundle = ok(parse_claim_response(&message(
            EVENT_PREAUTHORIZATION_RESPONSE,
            vec![cr.clone()],
        )));
        assert_eq!(in_bundle, lone);

        let e = refused(parse_claim_response(&message(
            "referral-request",
            vec![cr.clone()],
        )));
        assert_eq!(
            e,
            InputError::WrongEvent {
                expected: EVENT_PREAUTHORIZATION_RESPONSE,
                found: format!("{EVENT_SYSTEM}#referral-request"),
            }
        );
        let e = refused(parse_claim_response(&message(
            EVENT_PREAUTHORIZATION_RESPONSE,
            vec![],
        )));
        assert_eq!(
            e.to_string(),
            "Bundle.entry with a ClaimResponse is missing"
        );
        let e = refused(parse_claim_response(&message(
            EVENT_PREAUTHORIZATION_RESPONSE,
            vec![cr.clone(), cr],
        )));
        assert!(matches!(e, InputError::Invalid { .. }), "{e}");
    }

    // ----- 2. session report --------------------------------------------------------------

    #[test]
    fn session_report_with_an_individual_and_a_group_session() {
        let sessions = ok(parse_session_report(SESSION_REPORT));
        assert_eq!(
            sessions,
            vec![
                SessionReport {
                    session_key:
                        "https://soziotherapie-rhein-ruhr.example/fhir/sid/session|2026-10-05-0001"
                            .to_owned(),
                    referral_id: REFERRAL.to_owned(),
                    status: SessionStatus::Delivered,
                    date: date!(2026 - 10 - 05),
                    start: Some(time!(10:00)),
                    minutes: 60,
                    delivery: Delivery::Individual,
                    setting: Setting::Home,
                    trial: false,
                    professional_id: Some("st-07".to_owned()),
                },
                SessionReport {
                    session_key:
                        "https://soziotherapie-rhein-ruhr.example/fhir/sid/session|2026-10-07-0003"
                            .to_owned(),
                    referral_id: REFERRAL.to_owned(),
                    status: SessionStatus::Delivered,
                    date: date!(2026 - 10 - 07),
                    start: Some(time!(14:00)),
                    minutes: 90,
                    delivery: Delivery::Group,
                    setting: Setting::GroupRoom,
                    trial: false,
                    professional_id: Some("st-03".to_owned()),
                },
            ]
        );
    }

    fn encounter(n: usize) -> Value {
        fixture(SESSION_REPORT)["entry"][n]["resource"].clone()
    }

    fn report(encounters: Vec<Value>) -> Result<Vec<SessionReport>, InputError> {
        parse_session_report(&message(EVENT_SESSION_REPORT, encounters))
    }

    fn one(encounter: Value) -> SessionReport {
        match ok(report(vec![encounter])).pop() {
            Some(s) => s,
            None => panic!("no session"),
        }
    }

    #[test]
    fn cancelled_sessions_are_corrections() {
        let mut e = encounter(1);
        e["status"] = json!("cancelled");
        let s = one(e.clone());
        assert_eq!(s.status, SessionStatus::Cancelled);
        assert_eq!(s.minutes, 60, "the length is still read when given");
        assert_eq!(
            s.session_key,
            "https://soziotherapie-rhein-ruhr.example/fhir/sid/session|2026-10-05-0001"
        );
        // Without length or end a cancellation has 0 minutes; a delivered session is refused.
        if let Some(o) = e.as_object_mut() {
            o.remove("length");
        }
        e["period"] = json!({ "start": "2026-10-05" });
        e["status"] = json!("entered-in-error");
        let s = one(e.clone());
        assert_eq!(
            (s.status, s.minutes, s.start),
            (SessionStatus::Cancelled, 0, None)
        );
        e["status"] = json!("finished");
        let err = refused(report(vec![e]));
        assert!(matches!(err, InputError::Missing { .. }), "{err}");
    }

    #[test]
    fn trial_sessions_are_flagged() {
        let mut e = encounter(1);
        e["type"] = json!([
            { "coding": [{ "system": SESSION_KIND_SYSTEM, "code": "trial", "display": "Probestunde" }] },
            { "coding": [{ "system": DELIVERY_MODE_SYSTEM, "code": "individual" }] },
        ]);
        assert!(one(e).trial);
    }

    #[test]
    fn defaults_and_period_minutes() {
        let mut e = encounter(1);
        for key in ["type", "location", "length", "participant"] {
            if let Some(o) = e.as_object_mut() {
                o.remove(key);
            }
        }
        e["period"] =
            json!({ "start": "2026-10-05T10:00:00+02:00", "end": "2026-10-05T11:30:45+02:00" });
        let s = one(e.clone());
        assert_eq!(s.delivery, Delivery::Individual);
        assert_eq!(s.setting, Setting::OtherPlace);
        assert_eq!(s.professional_id, None);
        assert_eq!(s.minutes, 90, "seconds are dropped");
        // Across a zone change the instants count, the date stays as written.
        e["period"] =
            json!({ "start": "2026-10-25T01:30:00+02:00", "end": "2026-10-25T02:15:00+01:00" });
        let s = one(e.clone());
        assert_eq!((s.date, s.minutes), (date!(2026 - 10 - 25), 105));
        // An end before the start, or a period of more than a day, is refused.
        e["period"] =
            json!({ "start": "2026-10-25T10:00:00+01:00", "end": "2026-10-25T09:00:00+01:00" });
        assert!(
            matches!(refused(report(vec![e.clone()])), InputError::Invalid { element, .. }
            if element == "Bundle.entry[1].resource.period")
        );
        e["period"] =
            json!({ "start": "2026-10-01T10:00:00+02:00", "end": "2026-10-25T09:00:00+01:00" });
        assert_eq!(
            refused(report(vec![e])).to_string(),
            "Bundle.entry[1].resource.period is invalid: longer than 1440 minutes"
        );
    }

    #[test]
    fn bad_sessions_are_refused_naming_the_entry() {
        let mut e = encounter(1);
        if let Some(o) = e.as_object_mut() {
            o.remove("identifier");
        }
        let err = refused(report(vec![encounter(2), e]));
        assert_eq!(
            err.to_string(),
            "Bundle.entry[2].resource.identifier[0] with system and value is missing"
        );

        let mut e = encounter(1);
        e["basedOn"] = json!([{ "reference": "ServiceRequest/sr-1" }]);
        assert!(
            matches!(refused(report(vec![e])), InputError::Missing { element }
            if element.starts_with("Bundle.entry[1].resource.basedOn"))
        );

        let mut e = encounter(1);
        e["status"] = json!("planned");
        assert!(
            matches!(refused(report(vec![e])), InputError::Invalid { element, .. }
            if element == "Bundle.entry[1].resource.status")
        );

        let mut e = encounter(1);
        e["length"] = json!({ "value": 0.01, "unit": "h" });
        assert!(matches!(
            refused(report(vec![e])),
            InputError::Invalid { .. }
        ));
        let mut e = encounter(1);
        e["length"] = json!({ "value": 60, "unit": "s", "code": "s" });
        assert!(matches!(
            refused(report(vec![e])),
            InputError::Invalid { .. }
        ));
        let mut e = encounter(1);
        e["length"] = json!({ "value": 25, "code": "h" });
        assert!(matches!(
            refused(report(vec![e])),
            InputError::Invalid { .. }
        ));

        let mut e = encounter(1);
        e["type"] = json!([{ "coding": [
            { "system": DELIVERY_MODE_SYSTEM, "code": "individual" },
            { "system": DELIVERY_MODE_SYSTEM, "code": "group" },
        ] }]);
        assert!(matches!(
            refused(report(vec![e])),
            InputError::Invalid { .. }
        ));
        let mut e = encounter(1);
        e["type"][0]["coding"][0]["code"] = json!("Jürgen Müller-Lüdenscheidt");
        let err = refused(report(vec![e]));
        assert!(!err.to_string().contains("Müller"), "{err}");
        let mut e = encounter(1);
        e["location"][0]["physicalType"]["coding"][0]["code"] = json!("garden");
        assert!(
            matches!(refused(report(vec![e])), InputError::Invalid { element, .. }
            if element == "Bundle.entry[1].resource.location[0].physicalType")
        );

        // The same session twice in one report.
        let err = refused(report(vec![encounter(1), encounter(2), encounter(1)]));
        assert!(matches!(err, InputError::Invalid { element, .. }
            if element == "Bundle.entry[3].resource.identifier[0]"));

        // No Encounter, another event, a lone Encounter.
        assert!(matches!(
            refused(report(vec![])),
            InputError::Missing { .. }
        ));
        assert!(matches!(
            refused(parse_session_report(&message(
                "billing-claim",
                vec![encounter(1)]
            ))),
            InputError::WrongEvent { .. }
        ));
        assert!(matches!(
            refused(parse_session_report(&bytes(&encounter(1)))),
            InputError::WrongResource { .. }
        ));
        // A collection Bundle is not a message.
        let mut b = fixture(SESSION_REPORT);
        b["type"] = json!("collection");
        assert!(matches!(
            refused(parse_session_report(&bytes(&b))),
            InputError::WrongResource { .. }
        ));
    }

    // ----- 3. billing claim ---------------------------------------------------------------

    /// October 2026: 60.00 EUR per individual hour, 29.36 per group unit of 90 minutes.
    fn settlement() -> Settlement {
        let mut c = case();
        c.tariff.individual = Some(tariff("60.00", 60, "6900001"));
        c.sessions = vec![
            session(date!(2026 - 10 - 05), 60, Delivery::Individual),
            session(date!(2026 - 10 - 07), 90, Delivery::Group),
            session(date!(2026 - 10 - 07), 44, Delivery::Individual),
            session(date!(2026 - 10 - 14), 150, Delivery::Individual),
        ];
        ok(c.settle(&SessionCostRules::default(), &CopaymentRules::default()))
    }

    fn patient_ids() -> Vec<Identifier> {
        vec![
            Identifier {
                kind: IdentifierKind::Other,
                system: Some("urn:other".to_owned()),
                value: "x-1".to_owned(),
            },
            Identifier {
                kind: IdentifierKind::Kvid10,
                system: Some("http://fhir.de/sid/gkv/kvid-10".to_owned()),
                value: "A123456780".to_owned(),
            },
        ]
    }

    fn claim_text(settlement: &Settlement, correction_of: Option<&str>) -> String {
        let ids = patient_ids();
        billing_claim(&ClaimInput {
            gateway_id: "0193a0c4-1b2c-7d3e-8f40-516273849500",
            referral_id: REFERRAL,
            period: BillingPeriod {
                year: 2026,
                month: Month::October,
            },
            patient_ids: &ids,
            insurer_ik: "109519005",
            provider_ik: "260326822",
            approval_number: Some("GEN-2026/4711"),
            settlement,
            service_code: (
                "https://sociogate.org/fhir/CodeSystem/service",
                "sociotherapy",
                "Soziotherapie (§ 37a SGB V)",
            ),
            correction_of,
            created: datetime!(2026-11-03 14:07:00 +01:00),
        })
    }

    fn claim_of(bundle: &Value) -> &Value {
        &bundle["entry"][1]["resource"]
    }

    #[test]
    fn the_settlement_is_what_the_test_expects() {
        let s = settlement();
        let costs: Vec<String> = s.sessions.iter().map(|p| p.cost.to_string()).collect();
        assert_eq!(costs, ["60.00", "29.36", "44.00", "150.00"]);
        assert_eq!(
            (s.gross, s.copayment_total, s.net),
            (eur("283.36"), eur("23.34"), eur("260.02"))
        );
    }

    #[test]
    fn billing_claim_writes_exact_decimals() {
        let text = claim_text(&settlement(), None);
        // Money keeps its trailing zeros: never through f64.
        for literal in [
            r#""unitPrice":{"value":60.00,"currency":"EUR"}"#,
            r#""net":{"value":60.00,"currency":"EUR"}"#,
            r#""net":{"value":150.00,"currency":"EUR"}"#,
            r#""unitPrice":{"value":29.36,"currency":"EUR"}"#,
            r#""total":{"value":283.36,"currency":"EUR"}"#,
            r#""value":6.00,"unit":"EUR""#,
            r#""value":7.34,"unit":"EUR""#,
            r#""value":10.00,"unit":"EUR""#,
            r#""value":23.34,"unit":"EUR""#,
            r#""value":260.02,"unit":"EUR""#,
            r#""quantity":{"value":1.00}"#,
            r#""quantity":{"value":0.73}"#,
            r#""quantity":{"value":2.50}"#,
        ] {
            assert!(text.contains(literal), "{literal} missing in {text}");
        }
        assert!(
            !text.contains("60.0,") && !text.contains(":60.0}"),
            "{text}"
        );

        let bundle: Value = ok(serde_json::from_str(&text));
        let claim = claim_of(&bundle);
        assert_eq!(claim["use"], "claim");
        assert_eq!(claim["item"].as_array().map(Vec::len), Some(4));
        assert_eq!(claim["item"][1]["servicedDate"], "2026-10-07");
        assert_eq!(
            claim["item"][1]["modifier"][0]["coding"][0]["code"],
            "group"
        );
        let info = claim["supportingInfo"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let categories: Vec<&str> = info
            .iter()
            .filter_map(|i| i["category"]["coding"][0]["code"].as_str())
            .collect();
        assert_eq!(
            categories,
            [
                "copayment",
                "copayment",
                "copayment",
                "copayment-total",
                "net-total"
            ]
        );
        let days: Vec<&str> = info
            .iter()
            .filter_map(|i| i["timingDate"].as_str())
            .collect();
        assert_eq!(days, ["2026-10-05", "2026-10-07", "2026-10-14"]);
        let sequences: Vec<u64> = info.iter().filter_map(|i| i["sequence"].as_u64()).collect();
        assert_eq!(sequences, [1, 2, 3, 4, 5]);
        assert_eq!(info[0]["reason"]["coding"][0]["code"], "charged");
        assert_eq!(
            claim["patient"],
            json!({ "identifier": { "system": "http://fhir.de/sid/gkv/kvid-10", "value": "A123456780" } })
        );
        assert_eq!(
            claim["referral"]["identifier"],
            json!({ "system": REFERRAL_ID_SYSTEM, "value": REFERRAL })
        );
        assert_eq!(
            claim["insurance"][0]["preAuthRef"],
            json!(["GEN-2026/4711"])
        );
        assert_eq!(
            claim["billablePeriod"],
            json!({ "start": "2026-10-01", "end": "2026-10-31" })
        );
        assert_eq!(claim["created"], "2026-11-03T14:07:00+01:00");
        assert_eq!(claim.get("related"), None);
        assert_eq!(claim.get("meta"), None);
        // Same input, same bytes (stable fullUrls, no clock).
        assert_eq!(text, claim_text(&settlement(), None));
    }

    #[test]
    fn amounts_are_padded_to_cents_never_rounded() {
        assert_eq!(cents(Decimal::from(60)).get(), "60.00");
        assert_eq!(cents(eur("7.5")).get(), "7.50");
        assert_eq!(cents(eur("0.125")).get(), "0.125");
        assert_eq!(exact(eur("1.00")).get(), "1.00");
        assert_eq!(exact(Decimal::MAX).get(), Decimal::MAX.to_string());
        assert_eq!(exact(Decimal::MIN).get(), Decimal::MIN.to_string());
        assert_eq!(
            exact(Decimal::new(1, 28)).get(),
            "0.0000000000000000000000000001"
        );
    }

    #[test]
    fn a_correction_references_the_prior_claim() {
        let text = claim_text(&settlement(), Some("0193a0c4-0000-7000-8000-000000000001"));
        let bundle: Value = ok(serde_json::from_str(&text));
        assert_eq!(
            claim_of(&bundle)["related"],
            json!([{
                "claim": { "identifier": {
                    "system": BILLING_CLAIM_ID_SYSTEM,
                    "value": "0193a0c4-0000-7000-8000-000000000001",
                } },
                "relationship": { "coding": [{
                    "system": "http://terminology.hl7.org/CodeSystem/ex-relatedclaimrelationship",
                    "code": "prior",
                }] },
            }])
        );
        assert_ne!(
            claim_of(&bundle)["identifier"][0]["value"],
            "0193a0c4-0000-7000-8000-000000000001"
        );
    }

    #[test]
    fn the_claim_bundle_is_valid_r4_for_fhir_sdk() {
        let text = claim_text(&settlement(), Some("0193a0c4-0000-7000-8000-000000000001"));
        let resource: Resource = ok(serde_json::from_str(&text));
        let Resource::Bundle(bundle) = resource else {
            panic!("not a Bundle")
        };
        let claims: Vec<_> = bundle
            .entry
            .iter()
            .flatten()
            .filter_map(|e| match &e.resource {
                Some(Resource::Claim(c)) => Some(c),
                _ => None,
            })
            .collect();
        assert_eq!(claims.len(), 1);
        assert_eq!(claims[0].item.len(), 4);
        // The gateway's own decoder (size, depth, R4-only types) reads it as well.
        assert!(
            crate::decode::fhir_json::decode(text.as_bytes(), &crate::decode::Limits::default())
                .is_ok()
        );

        // The elements the base R4 Claim requires (the typed model does not enforce 1..*).
        let bundle: Value = ok(serde_json::from_str(&text));
        assert_eq!(bundle["type"], "message");
        assert_eq!(
            bundle["entry"][0]["resource"]["resourceType"],
            "MessageHeader"
        );
        assert_eq!(
            bundle["entry"][0]["resource"]["eventCoding"]["code"],
            EVENT_BILLING_CLAIM
        );
        assert_eq!(
            bundle["entry"][0]["resource"]["focus"][0]["reference"],
            bundle["entry"][1]["fullUrl"]
        );
        let claim = claim_of(&bundle);
        for element in [
            "status",
            "type",
            "use",
            "patient",
            "created",
            "provider",
            "priority",
            "insurance",
            "item",
        ] {
            assert!(claim.get(element).is_some(), "Claim.{element} missing");
        }
        assert_eq!(claim["status"], "active");
        assert_eq!(claim["type"]["coding"][0]["code"], "professional");
        assert_eq!(claim["priority"]["coding"][0]["code"], "normal");
        assert_eq!(claim["insurance"][0]["sequence"], 1);
        assert_eq!(claim["insurance"][0]["focal"], true);
        assert!(claim["insurance"][0].get("coverage").is_some());
        for (n, item) in claim["item"].as_array().into_iter().flatten().enumerate() {
            assert_eq!(item["sequence"].as_u64(), Some(n as u64 + 1));
            assert!(item["productOrService"]["coding"][0]["code"].is_string());
        }
    }

    #[test]
    fn placeholder_prices_mark_the_claim_as_test_data() {
        let mut s = settlement();
        s.sessions[0].placeholder = true;
        let bundle: Value = ok(serde_json::from_str(&claim_text(&s, None)));
        assert_eq!(claim_of(&bundle)["meta"]["tag"][0]["code"], "HTEST");
    }

    /// The JSON blocks of `docs/billing-fhir.md`, in order.
    fn doc_examples() -> Vec<String> {
        let doc = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/billing-fhir.md"));
        let mut blocks = Vec::new();
        let mut current: Option<String> = None;
        for line in doc.lines() {
            match (&mut current, line.trim_end()) {
                (None, "```json") => current = Some(String::new()),
                (Some(block), "```") => {
                    blocks.push(std::mem::take(block));
                    current = None;
                }
                (Some(block), l) => {
                    block.push_str(l);
                    block.push('\n');
                }
                (None, _) => {}
            }
        }
        blocks
    }

    /// JSON text without the white space between tokens (strings untouched).
    fn squeeze(text: &str) -> String {
        let mut out = String::with_capacity(text.len());
        let (mut in_string, mut escaped) = (false, false);
        for c in text.chars() {
            if in_string {
                out.push(c);
                if escaped {
                    escaped = false;
                } else if c == '\\' {
                    escaped = true;
                } else if c == '"' {
                    in_string = false;
                }
            } else if c == '"' {
                in_string = true;
                out.push(c);
            } else if !c.is_whitespace() {
                out.push(c);
            }
        }
        out
    }

    #[test]
    fn the_examples_in_the_docs_are_true() {
        let blocks = doc_examples();
        assert_eq!(
            blocks.len(),
            3,
            "docs/billing-fhir.md has three JSON examples"
        );

        let d = ok(parse_claim_response(blocks[0].as_bytes()));
        assert!(d.approved);
        assert_eq!(d.referral_id, REFERRAL);
        assert_eq!(d.approved_units, Some(30));

        let sessions = ok(parse_session_report(blocks[1].as_bytes()));
        assert_eq!(sessions.len(), 1);
        assert_eq!(
            (sessions[0].minutes, sessions[0].trial, sessions[0].setting),
            (60, true, Setting::Home)
        );

        let mut c = case();
        c.tariff.individual = Some(tariff("60.00", 60, "6900001"));
        c.sessions = vec![
            session(date!(2026 - 10 - 05), 60, Delivery::Individual),
            session(date!(2026 - 10 - 07), 90, Delivery::Group),
        ];
        let s = ok(c.settle(&SessionCostRules::default(), &CopaymentRules::default()));
        let written = claim_text(&s, None);
        assert_eq!(squeeze(&blocks[2]), written);
        assert!(matches!(
            serde_json::from_str::<Resource>(&blocks[2]),
            Ok(Resource::Bundle(_))
        ));
    }

    #[test]
    fn date_texts() {
        assert!(date_time("2026-10").is_none());
        assert!(date_time("2026-10-05T10:00").is_none());
        assert!(date_time("2026-02-30").is_none());
        let d = date_time("2026-10-05T23:30:00-01:00");
        assert_eq!(
            d.map(|d| (d.date, d.time)),
            Some((date!(2026 - 10 - 05), Some(time!(23:30))))
        );
    }
}
