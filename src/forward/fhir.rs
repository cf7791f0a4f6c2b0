//! Outbound FHIR R4 payloads. Resources the sender wrote are forwarded as the sender wrote them
//! (fhir-sdk's model drops unknown elements, so nothing is re-serialised from it); only the
//! gateway's own resources (MessageHeader, Task, Claim) are built here.

use serde_json::{Map, Value, json};

use crate::check::Verdict;
use crate::model::{IdentifierKind, Referral};

const EVENT_SYSTEM: &str = "https://sociogate.org/fhir/CodeSystem/message-event";
const REFERRAL_ID_SYSTEM: &str = "https://sociogate.org/fhir/sid/referral";
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

/// The original entries worth forwarding, with their fullUrls (generated where missing).
fn original_entries(gateway_id: &str, original: &Value) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    match original.get("resourceType").and_then(Value::as_str) {
        Some("Bundle") => {
            for (n, entry) in original["entry"]
                .as_array()
                .into_iter()
                .flatten()
                .enumerate()
            {
                let resource = &entry["resource"];
                let Some(rt) = resource.get("resourceType").and_then(Value::as_str) else {
                    continue;
                };
                if !FORWARDED.contains(&rt) {
                    continue;
                }
                let full_url = entry.get("fullUrl").and_then(Value::as_str).map_or_else(
                    || format!("urn:uuid:{}", derived_uuid(gateway_id, n)),
                    str::to_owned,
                );
                out.push((full_url, resource.clone()));
            }
        }
        Some("ServiceRequest") => {
            out.push((
                format!("urn:uuid:{}", derived_uuid(gateway_id, 0)),
                original.clone(),
            ));
        }
        _ => {}
    }
    out
}

/// A stable UUID for the n-th generated fullUrl of a message.
fn derived_uuid(gateway_id: &str, n: usize) -> uuid::Uuid {
    uuid::Uuid::new_v5(
        &uuid::Uuid::NAMESPACE_URL,
        format!("{gateway_id}/{n}").as_bytes(),
    )
}

fn entry(full_url: &str, resource: Value) -> Value {
    json!({ "fullUrl": full_url, "resource": resource })
}

fn service_request_url(entries: &[(String, Value)]) -> Option<String> {
    entries
        .iter()
        .find(|(_, r)| r["resourceType"] == "ServiceRequest")
        .map(|(u, _)| u.clone())
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
pub fn provider_bundle(gateway_id: &str, original: &Value) -> Value {
    let entries = original_entries(gateway_id, original);
    let sr_url = service_request_url(&entries);
    let task_url = format!("urn:uuid:{}", derived_uuid(gateway_id, 10_000));
    let header_url = format!("urn:uuid:{}", derived_uuid(gateway_id, 10_001));
    let sr = entries
        .iter()
        .find(|(_, r)| r["resourceType"] == "ServiceRequest")
        .map(|(_, r)| r);
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
    if let Some(subject) = sr.and_then(|r| r.get("subject")) {
        task.insert("for".into(), subject.clone());
    }
    if let Some(requester) = sr.and_then(|r| r.get("requester")) {
        task.insert("requester".into(), requester.clone());
    }
    if let Some(owner) = sr
        .and_then(|r| r["performer"].as_array())
        .and_then(|p| p.first())
    {
        task.insert("owner".into(), owner.clone());
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
    let mut all = vec![
        entry(&header_url, header),
        entry(&task_url, Value::Object(task)),
    ];
    all.extend(entries.into_iter().map(|(u, r)| entry(&u, r)));
    json!({
        "resourceType": "Bundle",
        "identifier": { "system": REFERRAL_ID_SYSTEM, "value": format!("{gateway_id}/provider") },
        "type": "message",
        "timestamp": now(),
        "entry": all,
    })
}

/// What the Claim asks for, per jurisdiction (`claim` in `mappings/<j>/parameters.json`): the
/// funding model of each country.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct ClaimProduct {
    /// Code system of the product or service.
    pub product_system: String,
    /// Code.
    pub product_code: String,
    /// Display.
    pub product_display: String,
    /// `units` (requested units) or `days` (stay days over the requested period).
    pub quantity: String,
    /// Why this is the product, for the insurer's reader.
    pub note: String,
}

/// FHIR message Bundle for the insurer: a Claim with `use = preauthorization` that references
/// the referral, beside the sender's resources.
pub fn preauthorization_bundle(
    gateway_id: &str,
    referral: &Referral,
    original: &Value,
    product: Option<&ClaimProduct>,
) -> Value {
    let entries = original_entries(gateway_id, original);
    let sr_url = service_request_url(&entries);
    let claim_url = format!("urn:uuid:{}", derived_uuid(gateway_id, 20_000));
    let header_url = format!("urn:uuid:{}", derived_uuid(gateway_id, 20_001));
    let coverage_url = entries
        .iter()
        .find(|(_, r)| r["resourceType"] == "Coverage")
        .map(|(u, _)| u.clone());
    let patient_url = entries
        .iter()
        .find(|(_, r)| r["resourceType"] == "Patient")
        .map(|(u, _)| u.clone());

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
    let mut all = vec![entry(&header_url, header), entry(&claim_url, claim)];
    all.extend(entries.into_iter().map(|(u, r)| entry(&u, r)));
    json!({
        "resourceType": "Bundle",
        "identifier": { "system": REFERRAL_ID_SYSTEM, "value": format!("{gateway_id}/insurer") },
        "type": "message",
        "timestamp": now(),
        "entry": all,
    })
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
        "entry": [entry(&header_url, header), entry(&outcome_url, outcome.clone())],
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
