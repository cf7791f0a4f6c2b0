//! Outbound FHIR R4 payloads. Resources the sender wrote are forwarded as the sender wrote them
//! (fhir-sdk's model drops unknown elements, so nothing is re-serialised from it); only the
//! gateway's own resources (MessageHeader, Task, Claim) are built here.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Value, json};

use crate::decode::fhir_json::EntrySpan;
use crate::mappings::{ClaimProduct, NonDisclosure};

use super::datatypes::{CodeableConcept, Coding, Identifier, MessageHeader, Period, Reference};
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
#[derive(Debug, Clone, PartialEq, Eq)]
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

/// A FHIR XML payload's JSON shape written out for [`forwarded_entries`]. For a Bundle, only
/// its entries' resources are written, one after another, with where each lies (the buffer is
/// not one JSON document; the spans are what forwarding reads), which spares writing the whole
/// Bundle and reading it back. Any other resource is written whole, without spans. `None` if
/// the shape cannot be written.
pub fn written_shape(json: &Value) -> Option<(Vec<u8>, Option<Vec<EntrySpan>>)> {
    if json.get("resourceType").and_then(Value::as_str) != Some("Bundle") {
        return serde_json::to_vec(json).ok().map(|bytes| (bytes, None));
    }
    let mut buf = Vec::new();
    let mut spans = Vec::new();
    let entries = json.get("entry").and_then(Value::as_array);
    for (index, entry) in entries.into_iter().flatten().enumerate() {
        let Some(resource) = entry.get("resource") else {
            continue;
        };
        let Some(resource_type) = resource.get("resourceType").and_then(Value::as_str) else {
            continue;
        };
        let start = buf.len();
        serde_json::to_writer(&mut buf, resource).ok()?;
        spans.push(EntrySpan {
            index,
            full_url: entry
                .get("fullUrl")
                .and_then(Value::as_str)
                .map(str::to_owned),
            resource_type: resource_type.to_owned(),
            resource: start..buf.len(),
        });
    }
    Some((buf, Some(spans)))
}

/// The inbound resources worth forwarding. With `redaction`, the resources it names are
/// parsed, stripped and written again; all others stay byte for byte. `spans` are where decode
/// found a Bundle's resources in `body` (then `body` is not parsed again); without them the
/// body is read here.
pub fn forwarded_entries<'a>(
    gateway_id: &str,
    body: &'a [u8],
    redaction: Option<&NonDisclosure>,
    spans: Option<&[EntrySpan]>,
) -> Vec<Forwarded<'a>> {
    let mut out = Vec::new();
    let mut push = |full_url: String, resource_type: &str, raw: &'a str| {
        if !FORWARDED.contains(&resource_type) {
            return;
        }
        let mut json = Cow::Borrowed(raw);
        if let Some(rules) = redaction {
            // Only parse what might hold withheld data (the resource itself or a contained one).
            if rules
                .resource_types
                .iter()
                .any(|t| raw.contains(&format!("\"{t}\"")))
                && let Ok(mut value) = serde_json::from_str::<Value>(raw)
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
    let generated = |n: usize| format!("urn:uuid:{}", derived_uuid(gateway_id, n));
    if let Some(spans) = spans {
        // Decode read these spans from valid UTF-8; the body is checked once, not span by span.
        let Ok(text) = simdutf8::basic::from_utf8(body) else {
            return out;
        };
        for span in spans {
            // Decode took these ranges from this very body; a body they do not fit (a caller
            // that passed other bytes) yields nothing rather than a wrong resource.
            let Some(raw) = text.get(span.resource.clone()) else {
                continue;
            };
            let full_url = span
                .full_url
                .clone()
                .unwrap_or_else(|| generated(span.index));
            push(full_url, &span.resource_type, raw);
        }
        return out;
    }
    let body = crate::decode::strip_bom(body);
    let Ok(message) = serde_json::from_slice::<RawMessage<'a>>(body) else {
        return out;
    };
    // The resource's own type, by the byte scan rather than a second parse of the resource.
    let type_of = |raw: &'a RawValue| {
        crate::decode::fhir_json::scan(raw.get().as_bytes(), usize::MAX)
            .ok()
            .and_then(|shape| shape.top_level_type)
            .and_then(|t| std::str::from_utf8(t).ok())
    };
    match message.resource_type.as_ref() {
        "Bundle" => {
            for (n, entry) in message.entry.iter().enumerate() {
                let Some(raw) = entry.resource else { continue };
                let Some(resource_type) = type_of(raw) else {
                    continue;
                };
                let full_url = entry
                    .full_url
                    .as_ref()
                    .map_or_else(|| generated(n), |u| u.to_string());
                push(full_url, resource_type, raw.get());
            }
        }
        "ServiceRequest" => {
            if let Ok(raw) = serde_json::from_slice::<&'a RawValue>(body) {
                push(generated(0), "ServiceRequest", raw.get());
            }
        }
        _ => {}
    }
    out
}

/// A Bundle of type message: the gateway's own entries, then the forwarded ones as they were.
/// Written straight into one string: the gateway's resources are borrowed structs, the
/// forwarded ones are copied as text (no `serde_json::Value` tree in between). Only what
/// serde_json writes is checked as UTF-8 (a few hundred bytes); the forwarded text is `&str`
/// already, and checking it again cost as much as hashing it (a 50 KB referral, 2026-12-07).
fn message_bundle(
    identifier: &str,
    header: (&str, &MessageHeader<'_>),
    resource: (&str, &impl Serialize),
    forwarded: &[Forwarded<'_>],
) -> String {
    let head = BundleHead {
        resource_type: "Bundle",
        identifier: Identifier {
            system: Some(REFERRAL_ID_SYSTEM),
            value: identifier,
        },
        kind: "message",
        timestamp: &now(),
    };
    let mut out =
        String::with_capacity(forwarded.iter().map(|f| f.json.len() + 96).sum::<usize>() + 4096);
    let mut scratch = Vec::with_capacity(1024);
    push_json(&mut out, &mut scratch, &head);
    // `head` is an object: reopen it to append the entries.
    out.pop();
    out.push_str(",\"entry\":[");
    write_entry(&mut out, &mut scratch, header.0, header.1);
    out.push(',');
    write_entry(&mut out, &mut scratch, resource.0, resource.1);
    for f in forwarded {
        out.push_str(",{\"fullUrl\":");
        push_json(&mut out, &mut scratch, f.full_url.as_str());
        out.push_str(",\"resource\":");
        out.push_str(&f.json);
        out.push('}');
    }
    out.push_str("]}");
    out
}

/// Appends `value` as JSON. serde_json writes UTF-8 and cannot fail on these values (strings,
/// numbers and structs of them); should it fail, nothing is appended.
fn push_json(out: &mut String, scratch: &mut Vec<u8>, value: &(impl Serialize + ?Sized)) {
    scratch.clear();
    if serde_json::to_writer(&mut *scratch, value).is_ok()
        && let Ok(text) = std::str::from_utf8(scratch)
    {
        out.push_str(text);
    }
}

/// Appends `{"fullUrl":…,"resource":…}`.
fn write_entry(out: &mut String, scratch: &mut Vec<u8>, url: &str, resource: &impl Serialize) {
    out.push_str("{\"fullUrl\":");
    push_json(out, scratch, url);
    out.push_str(",\"resource\":");
    push_json(out, scratch, resource);
    out.push('}');
}

/// The fields of a message Bundle before its entries.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct BundleHead<'a> {
    resource_type: &'static str,
    identifier: Identifier<'a>,
    #[serde(rename = "type")]
    kind: &'static str,
    timestamp: &'a str,
}

/// The references of the ServiceRequest the Task repeats, as the sender wrote them.
#[derive(Deserialize, Default)]
struct RequestRefs<'a> {
    #[serde(default, borrow)]
    subject: Option<&'a RawValue>,
    #[serde(default, borrow)]
    requester: Option<&'a RawValue>,
    #[serde(default, borrow)]
    performer: Vec<&'a RawValue>,
}

/// The Task that asks a provider to take the referral on.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Task<'a> {
    resource_type: &'static str,
    identifier: [Identifier<'a>; 1],
    status: &'static str,
    intent: &'static str,
    code: CodeableConcept<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    focus: Option<Reference<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    based_on: Option<[Reference<'a>; 1]>,
    #[serde(rename = "for", skip_serializing_if = "Option::is_none")]
    for_patient: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    requester: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    owner: Option<&'a RawValue>,
    authored_on: &'a str,
}

/// A stable UUID for the n-th generated fullUrl of a message.
pub(crate) fn derived_uuid(gateway_id: &str, n: usize) -> uuid::Uuid {
    uuid::Uuid::new_v5(
        &uuid::Uuid::NAMESPACE_URL,
        format!("{gateway_id}/{n}").as_bytes(),
    )
}

fn service_request<'e, 'a>(entries: &'e [Forwarded<'a>]) -> Option<&'e Forwarded<'a>> {
    entries.iter().find(|f| f.resource_type == "ServiceRequest")
}

fn first_identifier<'r>(
    referral: &'r Referral,
    kinds: &[IdentifierKind],
) -> Option<&'r crate::model::Identifier> {
    let patient = referral.patient.as_ref()?;
    kinds
        .iter()
        .find_map(|k| patient.ids.iter().find(|i| i.kind == *k))
}

/// FHIR message Bundle for providers: MessageHeader `referral-validated`, a Task with status
/// `ready`, and the sender's ServiceRequest, Patient, Practitioner, Condition, Coverage, ...
pub fn provider_bundle(gateway_id: &str, entries: &[Forwarded<'_>]) -> String {
    let request = service_request(entries);
    let sr_url = request.map(|f| f.full_url.as_str());
    let task_url = format!("urn:uuid:{}", derived_uuid(gateway_id, 10_000));
    let header_url = format!("urn:uuid:{}", derived_uuid(gateway_id, 10_001));
    let refs: RequestRefs<'_> = request
        .and_then(|f| serde_json::from_str(&f.json).ok())
        .unwrap_or_default();
    let authored_on = now();
    let task = Task {
        resource_type: "Task",
        identifier: [Identifier {
            system: Some(REFERRAL_ID_SYSTEM),
            value: gateway_id,
        }],
        status: "ready",
        intent: "order",
        code: CodeableConcept::code("http://hl7.org/fhir/CodeSystem/task-code", "fulfill"),
        focus: sr_url.map(Reference::to),
        based_on: sr_url.map(|url| [Reference::to(url)]),
        for_patient: refs.subject,
        requester: refs.requester,
        owner: refs.performer.first().copied(),
        authored_on: &authored_on,
    };
    let mut focus = vec![Reference::to(&task_url)];
    focus.extend(sr_url.map(Reference::to));
    let header = MessageHeader::new(EVENT_SYSTEM, "referral-validated", focus);
    message_bundle(
        &format!("{gateway_id}/provider"),
        (&header_url, &header),
        (&task_url, &task),
        entries,
    )
}

/// The Claim with `use = preauthorization` the insurer is asked to approve.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PreauthorizationClaim<'a> {
    resource_type: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    extension: Option<[StringExtension<'a>; 1]>,
    identifier: [Identifier<'a>; 1],
    status: &'static str,
    #[serde(rename = "type")]
    kind: CodeableConcept<'a>,
    #[serde(rename = "use")]
    claim_use: &'static str,
    patient: Reference<'a>,
    created: &'a str,
    insurer: Reference<'a>,
    provider: Reference<'a>,
    priority: CodeableConcept<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    referral: Option<Reference<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    diagnosis: Vec<ClaimDiagnosis<'a>>,
    insurance: [ClaimInsurance<'a>; 1],
    item: [ClaimItem<'a>; 1],
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct StringExtension<'a> {
    url: &'static str,
    value_string: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ClaimDiagnosis<'a> {
    sequence: usize,
    diagnosis_codeable_concept: CodeableConcept<'a>,
}

#[derive(Serialize)]
struct ClaimInsurance<'a> {
    sequence: u32,
    focal: bool,
    coverage: Reference<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ClaimItem<'a> {
    sequence: u32,
    product_or_service: CodeableConcept<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    serviced_period: Option<Period>,
    #[serde(skip_serializing_if = "Option::is_none")]
    quantity: Option<Quantity>,
}

#[derive(Serialize)]
struct Quantity {
    value: i64,
    unit: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    system: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    code: Option<&'static str>,
}

/// FHIR message Bundle for the insurer: a Claim with `use = preauthorization` that references
/// the referral, beside the sender's resources.
pub fn preauthorization_bundle(
    gateway_id: &str,
    referral: &Referral,
    entries: &[Forwarded<'_>],
    product: Option<&ClaimProduct>,
) -> String {
    let sr_url = service_request(entries).map(|f| f.full_url.as_str());
    let claim_url = format!("urn:uuid:{}", derived_uuid(gateway_id, 20_000));
    let header_url = format!("urn:uuid:{}", derived_uuid(gateway_id, 20_001));
    let url_of = |rt: &str| {
        entries
            .iter()
            .find(|f| f.resource_type == rt)
            .map(|f| f.full_url.as_str())
    };
    let patient = match (
        url_of("Patient"),
        first_identifier(
            referral,
            &[
                IdentifierKind::Kvid10,
                IdentifierKind::PkvId,
                IdentifierKind::Bsn,
                IdentifierKind::Hetu,
            ],
        ),
    ) {
        (Some(url), _) => Reference::to(url),
        (None, Some(id)) => Reference::identified(id),
        (None, None) => Reference::display("patient of the referral"),
    };
    let insurer = referral
        .coverage
        .as_ref()
        .and_then(|c| c.payer_ids.first())
        .map_or_else(
            || Reference::display("unknown insurer"),
            Reference::identified,
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
            || Reference::display("not yet chosen"),
            Reference::identified,
        );
    let coverage = url_of("Coverage").map_or_else(
        || Reference::display("coverage of the referral"),
        Reference::to,
    );
    let product_coding = match product {
        Some(p) => Coding::new(&p.product_system, &p.product_code).with_display(&p.product_display),
        None => Coding::new(SERVICE_SYSTEM, "sociotherapy"),
    };
    let stay_days = referral
        .requested_period
        .and_then(|p| Some((p.end? - p.start?).whole_days() + 1));
    let quantity = match (
        product.map(|p| p.quantity.as_str()),
        referral.requested_units,
        stay_days,
    ) {
        (Some("days"), _, Some(days)) => Some(Quantity {
            value: days,
            unit: "day".to_owned(),
            system: Some("http://unitsofmeasure.org"),
            code: Some("d"),
        }),
        (_, Some(units), _) => Some(Quantity {
            value: i64::from(units.count),
            unit: format!("unit of {} min", units.unit_minutes),
            system: None,
            code: None,
        }),
        _ => None,
    };
    let serviced_period = referral.requested_period.map(|period| Period {
        start: period.start.map(date),
        end: period.end.map(date),
    });
    let diagnosis = referral
        .diagnoses
        .iter()
        .enumerate()
        .map(|(n, d)| ClaimDiagnosis {
            sequence: n + 1,
            diagnosis_codeable_concept: CodeableConcept::of(Coding {
                system: d.system.as_deref(),
                version: d.system_version.as_deref(),
                code: &d.code,
                display: None,
            }),
        })
        .collect();
    let created = now();
    let claim = PreauthorizationClaim {
        resource_type: "Claim",
        extension: product.map(|p| {
            [StringExtension {
                url: "https://sociogate.org/fhir/StructureDefinition/funding-note",
                value_string: &p.note,
            }]
        }),
        identifier: [Identifier {
            system: Some(REFERRAL_ID_SYSTEM),
            value: gateway_id,
        }],
        status: "active",
        kind: CodeableConcept::code(
            "http://terminology.hl7.org/CodeSystem/claim-type",
            "professional",
        ),
        claim_use: "preauthorization",
        patient,
        created: &created,
        insurer,
        provider,
        priority: CodeableConcept::code(
            "http://terminology.hl7.org/CodeSystem/processpriority",
            "normal",
        ),
        referral: sr_url.map(Reference::to),
        diagnosis,
        insurance: [ClaimInsurance {
            sequence: 1,
            focal: true,
            coverage,
        }],
        item: [ClaimItem {
            sequence: 1,
            product_or_service: CodeableConcept::of(product_coding),
            serviced_period,
            quantity,
        }],
    };
    let header = MessageHeader::new(
        EVENT_SYSTEM,
        "preauthorization-request",
        vec![Reference::to(&claim_url)],
    );
    message_bundle(
        &format!("{gateway_id}/insurer"),
        (&header_url, &header),
        (&claim_url, &claim),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Coverage, Diagnosis, Identifier as ModelIdentifier, ReferralIds};

    const SERVICE_REQUEST: &str = r#"{"resourceType":"ServiceRequest","id":"sr","status":"active","intent":"order",
        "subject":{"reference":"urn:uuid:p-1"},"requester":{"reference":"urn:uuid:pr-1","display":"Dr. A"},
        "performer":[{"identifier":{"system":"http://fhir.de/sid/arge-ik/iknr","value":"123456789"}}]}"#;

    fn entries() -> Vec<Forwarded<'static>> {
        vec![
            Forwarded {
                full_url: "urn:uuid:sr-1".into(),
                resource_type: "ServiceRequest".into(),
                json: Cow::Borrowed(SERVICE_REQUEST),
            },
            Forwarded {
                full_url: "urn:uuid:p-1".into(),
                resource_type: "Patient".into(),
                json: Cow::Borrowed(r#"{"resourceType":"Patient","unknownElement":[1.50]}"#),
            },
        ]
    }

    fn nulls(value: &Value) -> usize {
        match value {
            Value::Null => 1,
            Value::Array(items) => items.iter().map(nulls).sum(),
            Value::Object(obj) => obj.values().map(nulls).sum(),
            _ => 0,
        }
    }

    /// A sender's German text (umlauts, `ß`, an escaped quote) reaches the provider byte for
    /// byte through decode's spans; spans that do not fit the body (or a body that is not
    /// UTF-8) forward nothing rather than a wrong resource.
    #[test]
    fn forwarded_text_is_the_senders_byte_for_byte_and_foreign_spans_forward_nothing() {
        let body = r#"{"resourceType":"Bundle","entry":[{"fullUrl":"urn:uuid:sr-9","resource":{"resourceType":"ServiceRequest","note":[{"text":"Rückzug über \"Straße\" – 1.50"}]}}]}"#;
        let start = body
            .find("{\"resourceType\":\"ServiceRequest\"")
            .unwrap_or(0);
        let spans = [EntrySpan {
            index: 0,
            full_url: Some("urn:uuid:sr-9".into()),
            resource_type: "ServiceRequest".into(),
            resource: start..body.len() - 3,
        }];
        let entries = forwarded_entries("g-9", body.as_bytes(), None, Some(&spans));
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].json, &body[start..body.len() - 3]);
        let bundle = provider_bundle("g-9", &entries);
        assert!(bundle.contains(r#""note":[{"text":"Rückzug über \"Straße\" – 1.50"}]"#));
        let parsed: Value = serde_json::from_str(&bundle).unwrap_or_default();
        assert_eq!(
            parsed["entry"][2]["resource"]["note"][0]["text"],
            "Rückzug über \"Straße\" – 1.50"
        );
        // A span that ends inside `ü` is not a resource of this body.
        let inside = body.find('ü').unwrap_or(0) + 1;
        let foreign = [EntrySpan {
            resource: start..inside,
            ..spans[0].clone()
        }];
        assert!(forwarded_entries("g-9", body.as_bytes(), None, Some(&foreign)).is_empty());
        let mut not_utf8 = body.as_bytes().to_vec();
        not_utf8[start + 40] = 0xFF;
        assert!(forwarded_entries("g-9", &not_utf8, None, Some(&spans)).is_empty());
    }

    #[test]
    fn provider_bundle_has_a_task_that_repeats_the_senders_references()
    -> Result<(), serde_json::Error> {
        let bundle: Value = serde_json::from_str(&provider_bundle("g-1", &entries()))?;
        assert_eq!(bundle["resourceType"], "Bundle");
        assert_eq!(bundle["type"], "message");
        assert_eq!(bundle["identifier"]["value"], "g-1/provider");
        let header = &bundle["entry"][0]["resource"];
        assert_eq!(header["eventCoding"]["code"], "referral-validated");
        let task_url = bundle["entry"][1]["fullUrl"].clone();
        assert_eq!(header["focus"][0]["reference"], task_url);
        assert_eq!(header["focus"][1]["reference"], "urn:uuid:sr-1");
        let task = &bundle["entry"][1]["resource"];
        assert_eq!(task["resourceType"], "Task");
        assert_eq!(task["status"], "ready");
        assert_eq!(task["identifier"][0]["value"], "g-1");
        assert_eq!(task["basedOn"][0]["reference"], "urn:uuid:sr-1");
        assert_eq!(task["for"]["reference"], "urn:uuid:p-1");
        assert_eq!(task["requester"]["display"], "Dr. A");
        assert_eq!(task["owner"]["identifier"]["value"], "123456789");
        // The sender's resources follow as they were written, unknown elements and all.
        assert_eq!(bundle["entry"][2]["fullUrl"], "urn:uuid:sr-1");
        assert_eq!(bundle["entry"][3]["resource"]["unknownElement"][0], 1.5);
        assert_eq!(nulls(&bundle), 0);
        Ok(())
    }

    #[test]
    fn preauthorization_claim_names_insurer_diagnoses_and_units_without_nulls()
    -> Result<(), serde_json::Error> {
        let mut referral = Referral::draft(ReferralIds {
            gateway_id: "g-2".into(),
            sender_id: None,
            idempotency_key: "k".into(),
        });
        referral.coverage = Some(Coverage {
            // An insurer identifier without a system must not become `"system": null`.
            payer_ids: vec![ModelIdentifier {
                kind: IdentifierKind::Iknr,
                system: None,
                value: "109519005".into(),
            }],
            ..Coverage::default()
        });
        referral.diagnoses.push(Diagnosis {
            code: "F20.0".into(),
            system: Some("http://fhir.de/CodeSystem/bfarm/icd-10-gm".into()),
            system_version: None,
            display: None,
            certainty: None,
        });
        referral.requested_units = Some(crate::model::RequestedUnits {
            count: 30,
            unit_minutes: 60,
            delivery: crate::model::Delivery::Individual,
        });
        let bundle: Value =
            serde_json::from_str(&preauthorization_bundle("g-2", &referral, &entries(), None))?;
        let claim = &bundle["entry"][1]["resource"];
        assert_eq!(claim["resourceType"], "Claim");
        assert_eq!(claim["use"], "preauthorization");
        assert_eq!(claim["patient"]["reference"], "urn:uuid:p-1");
        assert_eq!(
            claim["insurer"]["identifier"],
            json!({ "value": "109519005" })
        );
        assert_eq!(claim["referral"]["reference"], "urn:uuid:sr-1");
        assert_eq!(
            claim["insurance"][0]["coverage"]["display"],
            "coverage of the referral"
        );
        assert_eq!(
            claim["diagnosis"][0]["diagnosisCodeableConcept"]["coding"][0],
            json!({ "system": "http://fhir.de/CodeSystem/bfarm/icd-10-gm", "code": "F20.0" })
        );
        assert_eq!(
            claim["item"][0]["quantity"],
            json!({ "value": 30, "unit": "unit of 60 min" })
        );
        assert_eq!(
            bundle["entry"][0]["resource"]["focus"][0]["reference"],
            bundle["entry"][1]["fullUrl"]
        );
        assert_eq!(nulls(&bundle), 0);
        Ok(())
    }

    /// What forwarding takes from a FHIR XML payload's JSON shape: the same resources, the
    /// same fullUrls (generated where the sender gave none) and the same text, whether the
    /// entries are written alone with their spans or the whole Bundle is written and read back.
    #[test]
    fn the_written_entries_of_a_json_shape_forward_as_the_whole_bundle_does() {
        let shape = json!({
            "resourceType": "Bundle",
            "type": "message",
            "entry": [
                {"fullUrl": "urn:uuid:mh", "resource": {"resourceType": "MessageHeader", "id": "mh"}},
                {"resource": {"resourceType": "ServiceRequest", "status": "active", "note": [{"text": "a \"quoted\" é"}]}},
                {"fullUrl": "urn:uuid:none"},
                {"fullUrl": "urn:uuid:p", "resource": {"resourceType": "Patient", "birthDate": "1970-01-01", "unknown": [1.5, null]}},
                {"fullUrl": "urn:uuid:x", "resource": {"id": "no-type"}},
                {"fullUrl": "urn:uuid:c", "resource": {"resourceType": "Condition", "id": "c"}}
            ]
        });
        let Some((written, spans)) = written_shape(&shape) else {
            panic!("a Bundle's shape is written");
        };
        let whole = serde_json::to_vec(&shape).unwrap_or_default();
        let by_spans = forwarded_entries("gw", &written, None, spans.as_deref());
        let by_reading = forwarded_entries("gw", &whole, None, None);
        assert_eq!(by_spans, by_reading);
        let types: Vec<_> = by_spans.iter().map(|e| e.resource_type.as_str()).collect();
        assert_eq!(types, ["ServiceRequest", "Patient", "Condition"]);
        assert!(by_spans[0].full_url.starts_with("urn:uuid:"));
        assert_eq!(by_spans[1].full_url, "urn:uuid:p");
        assert!(by_spans[1].json.contains(r#""unknown":[1.5,null]"#));

        // Anything but a Bundle is written whole, for the reader to take apart.
        let lone = json!({"resourceType": "ServiceRequest", "status": "active"});
        let Some((written, spans)) = written_shape(&lone) else {
            panic!("a resource's shape is written");
        };
        assert!(spans.is_none());
        assert_eq!(written, serde_json::to_vec(&lone).unwrap_or_default());
    }
}
