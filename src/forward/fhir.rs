//! Outbound FHIR R4 payloads. Resources the sender wrote are forwarded as the sender wrote them
//! (fhir-sdk's model drops unknown elements, so nothing is re-serialised from it); only the
//! gateway's own resources (MessageHeader, Task, Claim) are built here.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};

use crate::mappings::{ClaimProduct, NonDisclosure};

use crate::check::Verdict;
use crate::model::{IdentifierKind, Referral};

const EVENT_SYSTEM: &str = "https://sociogate.org/fhir/CodeSystem/message-event";
/// Identifier system of the gateway's referral ids (Task, Claim, Bundle identifiers).
pub const REFERRAL_ID_SYSTEM: &str = "https://sociogate.org/fhir/sid/referral";
const SERVICE_SYSTEM: &str = "https://sociogate.org/fhir/CodeSystem/service";

/// Resource types forwarded from the inbound message.
const FORWARDED: &[&str] = &[
    "ServiceRequest",
    "Patient",
    "Practitioner",
    "PractitionerRole",
    "Organization",
    "Condition",
    "Coverage",
    "Observation",
    "Encounter",
    "CarePlan",
    "Goal",
    "DocumentReference",
    "Consent",
];

fn now() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// One resource of the inbound message, forwarded exactly as the sender wrote it (fhir-sdk's
/// typed model drops unknown elements, so nothing is re-serialised from it).
#[derive(Debug, Clone)]
pub struct Forwarded<'a> {
    /// fullUrl in the inbound Bundle (generated where the sender gave none).
    pub full_url: String,
    /// resourceType.
    pub resource_type: String,
    /// The resource's JSON text.
    pub json: Cow<'a, str>,
}

#[derive(Deserialize)]
struct RawMessage<'a> {
    #[serde(rename = "resourceType", borrow)]
    resource_type: Cow<'a, str>,
    #[serde(default, borrow)]
    entry: Vec<RawEntry<'a>>,
}

#[derive(Deserialize)]
struct RawEntry<'a> {
    #[serde(rename = "fullUrl", default, borrow)]
    full_url: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    resource: Option<&'a RawValue>,
}

/// The inbound resources worth forwarding. With `redaction`, the resources it names are
/// parsed, stripped and written again; all others stay byte for byte.
pub fn forwarded_entries<'a>(
    gateway_id: &str,
    body: &'a [u8],
    redaction: Option<&NonDisclosure>,
) -> Vec<Forwarded<'a>> {
    let body = crate::decode::strip_bom(body);
    let mut out = Vec::new();
    let Ok(message) = serde_json::from_slice::<RawMessage<'a>>(body) else {
        return out;
    };
    let mut push = |full_url: String, raw: &'a RawValue| {
        // The resource's own type, by the byte scan rather than a second parse of the resource
        // (it was parsed once already by decode, and is copied below as it is).
        let Some(resource_type) = crate::decode::fhir_json::scan(raw.get().as_bytes(), usize::MAX)
            .ok()
            .and_then(|shape| shape.top_level_type)
            .and_then(|t| std::str::from_utf8(t).ok())
        else {
            return;
        };
        if !FORWARDED.contains(&resource_type) {
            return;
        }
        let mut json = Cow::Borrowed(raw.get());
        if let Some(rules) = redaction {
            // Only parse what might hold withheld data (the resource itself or a contained one).
            if rules
                .resource_types
                .iter()
                .any(|t| raw.get().contains(&format!("\"{t}\"")))
                && let Ok(mut value) = serde_json::from_str::<Value>(raw.get())
            {
                super::redact(&mut value, rules);
                json = Cow::Owned(value.to_string());
            }
        }
        out.push(Forwarded {
            full_url,
            resource_type: resource_type.to_owned(),
            json,
        });
    };
    match message.resource_type.as_ref() {
        "Bundle" => {
            for (n, entry) in message.entry.iter().enumerate() {
                let Some(raw) = entry.resource else { continue };
                let full_url = entry.full_url.as_ref().map_or_else(
                    || format!("urn:uuid:{}", derived_uuid(gateway_id, n)),
                    |u| u.to_string(),
                );
                push(full_url, raw);
            }
        }
        "ServiceRequest" => {
            if let Ok(raw) = serde_json::from_slice::<&'a RawValue>(body) {
                push(format!("urn:uuid:{}", derived_uuid(gateway_id, 0)), raw);
            }
        }
        _ => {}
    }
    out
}

/// A Bundle of type message: the gateway's own entries, then the forwarded ones as they were.
fn message_bundle(
    identifier: &str,
    own: Vec<(String, Value)>,
    forwarded: &[Forwarded<'_>],
) -> String {
    let head = json!({
        "resourceType": "Bundle",
        "identifier": { "system": REFERRAL_ID_SYSTEM, "value": identifier },
        "type": "message",
        "timestamp": now(),
    })
    .to_string();
    let mut out = String::with_capacity(
        head.len() + forwarded.iter().map(|f| f.json.len() + 96).sum::<usize>() + 2048,
    );
    // `head` is an object: reopen it to append the entries.
    out.push_str(&head[..head.len() - 1]);
    out.push_str(",\"entry\":[");
    let mut first = true;
    for (url, resource) in own {
        if !first {
            out.push(',');
        }
        first = false;
        out.push_str(&json!({ "fullUrl": url, "resource": resource }).to_string());
    }
    for f in forwarded {
        if !first {
            out.push(',');
        }
        first = false;
        out.push_str("{\"fullUrl\":");
        out.push_str(&Value::String(f.full_url.clone()).to_string());
        out.push_str(",\"resource\":");
        out.push_str(&f.json);
        out.push('}');
    }
    out.push_str("]}");
    out
}

/// The references of the ServiceRequest the Task repeats.
#[derive(Deserialize, Default)]
struct RequestRefs {
    #[serde(default)]
    subject: Option<Value>,
    #[serde(default)]
    requester: Option<Value>,
    #[serde(default)]
    performer: Vec<Value>,
}

/// A stable UUID for the n-th generated fullUrl of a message.
pub(crate) fn derived_uuid(gateway_id: &str, n: usize) -> uuid::Uuid {
    uuid::Uuid::new_v5(
        &uuid::Uuid::NAMESPACE_URL,
        format!("{gateway_id}/{n}").as_bytes(),
    )
}

fn service_request_url(entries: &[Forwarded<'_>]) -> Option<String> {
    entries
        .iter()
        .find(|f| f.resource_type == "ServiceRequest")
        .map(|f| f.full_url.clone())
}

fn identifier_json(referral: &Referral, kinds: &[IdentifierKind]) -> Option<Value> {
    let patient = referral.patient.as_ref()?;
    kinds
        .iter()
        .find_map(|k| patient.ids.iter().find(|i| i.kind == *k))
        .map(|i| json!({ "system": i.system, "value": i.value }))
}

/// FHIR message Bundle for providers: MessageHeader `referral-validated`, a Task with status
/// `ready`, and the sender's ServiceRequest, Patient, Practitioner, Condition, Coverage, ...
pub fn provider_bundle(gateway_id: &str, entries: &[Forwarded<'_>]) -> String {
    let sr_url = service_request_url(entries);
    let task_url = format!("urn:uuid:{}", derived_uuid(gateway_id, 10_000));
    let header_url = format!("urn:uuid:{}", derived_uuid(gateway_id, 10_001));
    let refs: RequestRefs = entries
        .iter()
        .find(|f| f.resource_type == "ServiceRequest")
        .and_then(|f| serde_json::from_str(&f.json).ok())
        .unwrap_or_default();
    let mut task = Map::new();
    task.insert("resourceType".into(), json!("Task"));
    task.insert(
        "identifier".into(),
        json!([{ "system": REFERRAL_ID_SYSTEM, "value": gateway_id }]),
    );
    task.insert("status".into(), json!("ready"));
    task.insert("intent".into(), json!("order"));
    task.insert(
        "code".into(),
        json!({ "coding": [{ "system": "http://hl7.org/fhir/CodeSystem/task-code", "code": "fulfill" }] }),
    );
    if let Some(url) = &sr_url {
        task.insert("focus".into(), json!({ "reference": url }));
        task.insert("basedOn".into(), json!([{ "reference": url }]));
    }
    if let Some(subject) = refs.subject {
        task.insert("for".into(), subject);
    }
    if let Some(requester) = refs.requester {
        task.insert("requester".into(), requester);
    }
    if let Some(owner) = refs.performer.into_iter().next() {
        task.insert("owner".into(), owner);
    }
    task.insert("authoredOn".into(), json!(now()));
    let mut header = json!({
        "resourceType": "MessageHeader",
        "eventCoding": { "system": EVENT_SYSTEM, "code": "referral-validated" },
        "source": { "name": "sociogate", "endpoint": "urn:sociogate" },
        "focus": [{ "reference": task_url }],
    });
    if let (Some(url), Some(focus)) = (&sr_url, header["focus"].as_array_mut()) {
        focus.push(json!({ "reference": url }));
    }
    message_bundle(
        &format!("{gateway_id}/provider"),
        vec![(header_url, header), (task_url, Value::Object(task))],
        entries,
    )
}

/// FHIR message Bundle for the insurer: a Claim with `use = preauthorization` that references
/// the referral, beside the sender's resources.
pub fn preauthorization_bundle(
    gateway_id: &str,
    referral: &Referral,
    entries: &[Forwarded<'_>],
    product: Option<&ClaimProduct>,
) -> String {
    let sr_url = service_request_url(entries);
    let claim_url = format!("urn:uuid:{}", derived_uuid(gateway_id, 20_000));
    let header_url = format!("urn:uuid:{}", derived_uuid(gateway_id, 20_001));
    let url_of = |rt: &str| {
        entries
            .iter()
            .find(|f| f.resource_type == rt)
            .map(|f| f.full_url.clone())
    };
    let coverage_url = url_of("Coverage");
    let patient_url = url_of("Patient");

    let patient = match (
        &patient_url,
        identifier_json(
            referral,
            &[
                IdentifierKind::Kvid10,
                IdentifierKind::PkvId,
                IdentifierKind::Bsn,
                IdentifierKind::Hetu,
            ],
        ),
    ) {
        (Some(url), _) => json!({ "reference": url }),
        (None, Some(id)) => json!({ "identifier": id }),
        (None, None) => json!({ "display": "patient of the referral" }),
    };
    let insurer = referral
        .coverage
        .as_ref()
        .and_then(|c| c.payer_ids.first())
        .map_or_else(
            || json!({ "display": "unknown insurer" }),
            |i| json!({ "identifier": { "system": i.system, "value": i.value } }),
        );
    let provider = referral
        .requested_provider
        .as_ref()
        .and_then(|p| p.ids.first())
        .or_else(|| {
            referral
                .prescriber
                .as_ref()
                .and_then(|p| p.organisation_ids.first().or(p.person_ids.first()))
        })
        .map_or_else(
            || json!({ "display": "not yet chosen" }),
            |i| json!({ "identifier": { "system": i.system, "value": i.value } }),
        );
    let coverage = match &coverage_url {
        Some(url) => json!({ "reference": url }),
        None => json!({ "display": "coverage of the referral" }),
    };
    let mut item = Map::new();
    item.insert("sequence".into(), json!(1));
    let (system, code, display) = match product {
        Some(p) => (
            p.product_system.as_str(),
            p.product_code.as_str(),
            Some(p.product_display.as_str()),
        ),
        None => (SERVICE_SYSTEM, "sociotherapy", None),
    };
    let mut coding = json!({ "system": system, "code": code });
    if let Some(d) = display {
        coding["display"] = json!(d);
    }
    item.insert("productOrService".into(), json!({ "coding": [coding] }));
    let stay_days = referral
        .requested_period
        .and_then(|p| Some((p.end? - p.start?).whole_days() + 1));
    match (
        product.map(|p| p.quantity.as_str()),
        referral.requested_units,
        stay_days,
    ) {
        (Some("days"), _, Some(days)) => {
            item.insert(
                "quantity".into(),
                json!({ "value": days, "unit": "day", "system": "http://unitsofmeasure.org", "code": "d" }),
            );
        }
        (_, Some(units), _) => {
            item.insert(
                "quantity".into(),
                json!({ "value": units.count, "unit": format!("unit of {} min", units.unit_minutes) }),
            );
        }
        _ => {}
    }
    if let Some(period) = referral.requested_period {
        let mut p = Map::new();
        if let Some(s) = period.start {
            p.insert("start".into(), json!(date(s)));
        }
        if let Some(e) = period.end {
            p.insert("end".into(), json!(date(e)));
        }
        item.insert("servicedPeriod".into(), Value::Object(p));
    }
    let diagnosis: Vec<Value> = referral
        .diagnoses
        .iter()
        .enumerate()
        .map(|(n, d)| {
            let mut coding = Map::new();
            if let Some(s) = &d.system {
                coding.insert("system".into(), json!(s));
            }
            if let Some(v) = &d.system_version {
                coding.insert("version".into(), json!(v));
            }
            coding.insert("code".into(), json!(d.code));
            json!({ "sequence": n + 1, "diagnosisCodeableConcept": { "coding": [coding] } })
        })
        .collect();
    let mut claim = json!({
        "resourceType": "Claim",
        "identifier": [{ "system": REFERRAL_ID_SYSTEM, "value": gateway_id }],
        "status": "active",
        "type": { "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/claim-type", "code": "professional" }] },
        "use": "preauthorization",
        "patient": patient,
        "created": now(),
        "insurer": insurer,
        "provider": provider,
        "priority": { "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/processpriority", "code": "normal" }] },
        "insurance": [{ "sequence": 1, "focal": true, "coverage": coverage }],
        "item": [Value::Object(item)],
    });
    if !diagnosis.is_empty() {
        claim["diagnosis"] = Value::Array(diagnosis);
    }
    if let Some(url) = &sr_url {
        claim["referral"] = json!({ "reference": url });
    }
    if let Some(p) = product {
        claim["extension"] = json!([{
            "url": "https://sociogate.org/fhir/StructureDefinition/funding-note",
            "valueString": p.note,
        }]);
    }
    let header = json!({
        "resourceType": "MessageHeader",
        "eventCoding": { "system": EVENT_SYSTEM, "code": "preauthorization-request" },
        "source": { "name": "sociogate", "endpoint": "urn:sociogate" },
        "focus": [{ "reference": claim_url }],
    });
    message_bundle(
        &format!("{gateway_id}/insurer"),
        vec![(header_url, header), (claim_url, claim)],
        entries,
    )
}

/// The answer to the sender: a message Bundle whose MessageHeader.response says `ok` or
/// `fatal-error` and points at the OperationOutcome.
pub fn response_bundle(
    gateway_id: &str,
    inbound_message_id: Option<&str>,
    verdict: Verdict,
    outcome: &Value,
) -> Value {
    let code = match verdict {
        Verdict::Accepted => "ok",
        Verdict::Rejected | Verdict::Unreadable => "fatal-error",
    };
    let outcome_url = format!("urn:uuid:{}", derived_uuid(gateway_id, 30_000));
    let header_url = format!("urn:uuid:{}", derived_uuid(gateway_id, 30_001));
    let header = json!({
        "resourceType": "MessageHeader",
        "eventCoding": { "system": EVENT_SYSTEM, "code": "referral-response" },
        "source": { "name": "sociogate", "endpoint": "urn:sociogate" },
        "response": {
            "identifier": inbound_message_id.filter(|id| is_fhir_id(id)).unwrap_or(gateway_id),
            "code": code,
            "details": { "reference": outcome_url },
        },
        "focus": [{ "reference": outcome_url }],
    });
    json!({
        "resourceType": "Bundle",
        "identifier": { "system": REFERRAL_ID_SYSTEM, "value": format!("{gateway_id}/response") },
        "type": "message",
        "timestamp": now(),
        "entry": [
            { "fullUrl": header_url, "resource": header },
            { "fullUrl": outcome_url, "resource": outcome },
        ],
    })
}

/// FHIR `id`: `[A-Za-z0-9\-\.]{1,64}`.
fn is_fhir_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

fn date(d: time::Date) -> String {
    format!("{:04}-{:02}-{:02}", d.year(), d.month() as u8, d.day())
}
