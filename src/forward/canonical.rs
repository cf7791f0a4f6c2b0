//! FHIR R4 resources built from the canonical referral, for inputs that carry no FHIR of their
//! own (CDA R2). The original document travels beside them as a DocumentReference, so the
//! recipient loses nothing the sender wrote (except under non-disclosure, see
//! [`canonical_entries`]).

use std::borrow::Cow;

use base64::Engine as _;
use serde_json::{Map, Value, json};

use crate::model::{Address, Certainty, HumanName, Identifier, Referral, code_of};

use super::fhir::Forwarded;

const SOCIOGATE_CS: &str = "https://sociogate.org/fhir/CodeSystem/";

/// The FHIR content type of an HL7 CDA R2 document in a DocumentReference.
pub const CDA_CONTENT_TYPE: &str = "application/hl7-cda+xml";

fn url(gateway_id: &str, n: usize) -> String {
    format!(
        "urn:uuid:{}",
        uuid::Uuid::new_v5(
            &uuid::Uuid::NAMESPACE_URL,
            format!("{gateway_id}/canonical/{n}").as_bytes(),
        )
    )
}

fn coding(system: &str, value: &impl serde::Serialize) -> Option<Value> {
    code_of(value).map(|code| json!({ "system": format!("{SOCIOGATE_CS}{system}"), "code": code }))
}

fn identifiers(ids: &[Identifier]) -> Value {
    Value::Array(
        ids.iter()
            .map(|i| match &i.system {
                Some(system) => json!({ "system": system, "value": i.value }),
                None => json!({ "value": i.value }),
            })
            .collect(),
    )
}

fn name(n: &HumanName) -> Value {
    let mut out = Map::new();
    if let Some(text) = &n.text {
        out.insert("text".into(), json!(text));
    }
    if let Some(family) = &n.family {
        out.insert("family".into(), json!(family));
    }
    for (key, parts) in [
        ("given", &n.given),
        ("prefix", &n.prefix),
        ("suffix", &n.suffix),
    ] {
        if !parts.is_empty() {
            out.insert(key.into(), json!(parts));
        }
    }
    Value::Object(out)
}

fn address(a: &Address) -> Value {
    let mut out = Map::new();
    if !a.lines.is_empty() {
        out.insert("line".into(), json!(a.lines));
    }
    for (key, value) in [
        ("city", &a.city),
        ("district", &a.district),
        ("postalCode", &a.postal_code),
        ("country", &a.country),
    ] {
        if let Some(v) = value {
            out.insert(key.into(), json!(v));
        }
    }
    Value::Object(out)
}

/// Removes what FHIR JSON forbids: `null` members, empty arrays and empty objects.
fn prune(value: &mut Value) -> bool {
    match value {
        Value::Null => false,
        Value::Array(items) => {
            items.retain_mut(prune);
            !items.is_empty()
        }
        Value::Object(members) => {
            members.retain(|_, v| prune(v));
            !members.is_empty()
        }
        _ => true,
    }
}

fn push(out: &mut Vec<Forwarded<'static>>, full_url: String, mut resource: Value) {
    prune(&mut resource);
    let resource_type = resource["resourceType"].as_str().unwrap_or("").to_owned();
    out.push(Forwarded {
        full_url,
        resource_type,
        json: Cow::Owned(resource.to_string()),
    });
}

/// Patient, Practitioner, Organization, Coverage, Condition and ServiceRequest from the
/// canonical referral, and a DocumentReference with the original document (`original`, of
/// `content_type`). With `withhold_original` (non-disclosure), the original is left out: it
/// would carry the address the label withholds.
pub fn canonical_entries(
    gateway_id: &str,
    referral: &Referral,
    original: &[u8],
    content_type: &str,
    withhold_original: bool,
) -> Vec<Forwarded<'static>> {
    let mut out = Vec::new();
    let patient_url = url(gateway_id, 1);
    let practitioner_url = url(gateway_id, 2);
    let organization_url = url(gateway_id, 3);
    let payer_url = url(gateway_id, 4);
    let coverage_url = url(gateway_id, 5);
    let request_url = url(gateway_id, 6);
    let document_url = url(gateway_id, 7);

    if let Some(p) = &referral.patient {
        let mut patient = json!({ "resourceType": "Patient", "identifier": identifiers(&p.ids) });
        if let Some(n) = &p.name {
            patient["name"] = json!([name(n)]);
        }
        if let Some(g) = p.gender.as_ref().and_then(code_of) {
            // FHIR's administrative-gender has no `diverse`/`undetermined`: both are `other`.
            let fhir = match g.as_str() {
                "male" | "female" | "unknown" => g,
                _ => "other".to_owned(),
            };
            patient["gender"] = json!(fhir);
        }
        if let Some(b) = p.birth_date {
            patient["birthDate"] = json!(b.to_string());
        }
        if let Some(a) = &p.address {
            patient["address"] = json!([address(a)]);
        }
        push(&mut out, patient_url.clone(), patient);
    }
    if let Some(pr) = &referral.prescriber {
        let mut practitioner = json!({
            "resourceType": "Practitioner",
            "identifier": identifiers(&pr.person_ids),
        });
        if let Some(n) = &pr.name {
            practitioner["name"] = json!([name(n)]);
        }
        let qualifications: Vec<Value> = pr
            .qualifications
            .iter()
            .filter_map(|q| coding("prescriber-qualification", q))
            .map(|c| json!({ "code": { "coding": [c] } }))
            .collect();
        if !qualifications.is_empty() {
            practitioner["qualification"] = json!(qualifications);
        }
        push(&mut out, practitioner_url.clone(), practitioner);
        if !pr.organisation_ids.is_empty() || pr.organisation_name.is_some() {
            let mut org = json!({
                "resourceType": "Organization",
                "identifier": identifiers(&pr.organisation_ids),
            });
            if let Some(n) = &pr.organisation_name {
                org["name"] = json!(n);
            }
            push(&mut out, organization_url, org);
        }
    }
    if let Some(c) = &referral.coverage {
        let mut payer =
            json!({ "resourceType": "Organization", "identifier": identifiers(&c.payer_ids) });
        if let Some(n) = &c.payer_name {
            payer["name"] = json!(n);
        }
        push(&mut out, payer_url.clone(), payer);
        let mut coverage = json!({
            "resourceType": "Coverage",
            "status": "active",
            "beneficiary": { "reference": patient_url },
            "payor": [{ "reference": payer_url }],
        });
        if let Some(kind) = c.kind.as_ref().and_then(|k| coding("coverage-kind", k)) {
            coverage["type"] = json!({ "coding": [kind] });
        }
        if let Some(m) = &c.member_number {
            coverage["subscriberId"] = json!(m);
        }
        push(&mut out, coverage_url.clone(), coverage);
    }
    let mut condition_urls = Vec::new();
    for (n, d) in referral.diagnoses.iter().enumerate() {
        let condition_url = url(gateway_id, 100 + n);
        let mut coding = json!({ "code": d.code });
        for (key, value) in [
            ("system", &d.system),
            ("version", &d.system_version),
            ("display", &d.display),
        ] {
            if let Some(v) = value {
                coding[key] = json!(v);
            }
        }
        let mut condition = json!({
            "resourceType": "Condition",
            "code": { "coding": [coding] },
            "subject": { "reference": patient_url },
        });
        // FHIR binds verificationStatus to its own code system (required binding).
        let status = match d.certainty {
            Some(Certainty::Confirmed) => Some("confirmed"),
            Some(Certainty::Suspected) => Some("provisional"),
            Some(Certainty::Excluded) => Some("refuted"),
            Some(Certainty::StatusAfter) | None => None,
        };
        if let Some(code) = status {
            condition["verificationStatus"] = json!({ "coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/condition-ver-status",
                "code": code,
            }] });
        }
        push(&mut out, condition_url.clone(), condition);
        condition_urls.push(json!({ "reference": condition_url }));
    }
    let mut request = json!({
        "resourceType": "ServiceRequest",
        "status": "active",
        "intent": "order",
        "subject": { "reference": patient_url },
    });
    if let Some(id) = &referral.ids.sender_id {
        request["identifier"] = identifiers(std::slice::from_ref(id));
    }
    if let Some(s) = &referral.service {
        let mut coding = json!({ "code": s.code });
        if let Some(system) = &s.system {
            coding["system"] = json!(system);
        }
        if let Some(display) = &s.display {
            coding["display"] = json!(display);
        }
        request["code"] = json!({ "coding": [coding] });
    }
    if let Some(kind) = referral
        .kind
        .as_ref()
        .and_then(|k| coding("referral-kind", k))
    {
        request["category"] = json!([{ "coding": [kind] }]);
    }
    let details: Vec<Value> = referral
        .delivery_modes
        .iter()
        .filter_map(|m| coding("delivery-mode", m))
        .map(|c| json!({ "coding": [c] }))
        .collect();
    if !details.is_empty() {
        request["orderDetail"] = json!(details);
    }
    let settings: Vec<Value> = referral
        .settings
        .iter()
        .filter_map(|s| coding("setting", s))
        .map(|c| json!({ "coding": [c] }))
        .collect();
    if !settings.is_empty() {
        request["locationCode"] = json!(settings);
    }
    if let Some(u) = &referral.requested_units {
        request["quantityQuantity"] = json!({ "value": u.count, "unit": "units" });
    }
    if let Some(p) = &referral.requested_period {
        let mut period = Map::new();
        if let Some(s) = p.start {
            period.insert("start".into(), json!(s.to_string()));
        }
        if let Some(e) = p.end {
            period.insert("end".into(), json!(e.to_string()));
        }
        request["occurrencePeriod"] = Value::Object(period);
    }
    if let Some(d) = referral.issue_date {
        request["authoredOn"] = json!(d.to_string());
    }
    if referral.prescriber.is_some() {
        request["requester"] = json!({ "reference": practitioner_url });
    }
    if let Some(provider) = &referral.requested_provider {
        let mut performer = Map::new();
        if let Some(id) = provider.ids.first() {
            performer.insert(
                "identifier".into(),
                json!({ "system": id.system, "value": id.value }),
            );
        }
        if let Some(n) = &provider.name {
            performer.insert("display".into(), json!(n));
        }
        request["performer"] = json!([Value::Object(performer)]);
    }
    if !condition_urls.is_empty() {
        request["reasonReference"] = json!(condition_urls);
    }
    if referral.coverage.is_some() {
        request["insurance"] = json!([{ "reference": coverage_url }]);
    }
    if !withhold_original {
        request["supportingInfo"] = json!([{ "reference": document_url }]);
    }
    push(&mut out, request_url, request);
    if !withhold_original {
        let document = json!({
            "resourceType": "DocumentReference",
            "status": "current",
            "subject": { "reference": patient_url },
            "description": "The referral as the sender wrote it",
            "content": [{
                "attachment": {
                    "contentType": content_type,
                    "data": base64::engine::general_purpose::STANDARD.encode(original),
                }
            }],
        });
        push(&mut out, document_url, document);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Diagnosis, Patient, ReferralIds};

    #[test]
    fn builds_linked_resources_and_keeps_the_original() -> Result<(), serde_json::Error> {
        let mut referral = Referral::draft(ReferralIds {
            gateway_id: "g-1".into(),
            sender_id: None,
            idempotency_key: "k".into(),
        });
        referral.patient = Some(Patient {
            ids: vec![Identifier {
                kind: crate::model::IdentifierKind::Kvid10,
                system: Some("http://fhir.de/sid/gkv/kvid-10".into()),
                value: "A123456780".into(),
            }],
            ..Patient::default()
        });
        referral.diagnoses.push(Diagnosis {
            code: "F20.0".into(),
            system: Some("http://fhir.de/CodeSystem/bfarm/icd-10-gm".into()),
            system_version: Some("2026".into()),
            display: None,
            certainty: None,
        });
        let entries = canonical_entries(
            "g-1",
            &referral,
            b"<ClinicalDocument/>",
            CDA_CONTENT_TYPE,
            false,
        );
        let types: Vec<&str> = entries.iter().map(|e| e.resource_type.as_str()).collect();
        assert_eq!(
            types,
            [
                "Patient",
                "Condition",
                "ServiceRequest",
                "DocumentReference"
            ]
        );
        let request: Value = serde_json::from_str(&entries[2].json)?;
        assert_eq!(request["subject"]["reference"], json!(entries[0].full_url));
        assert_eq!(
            request["reasonReference"][0]["reference"],
            json!(entries[1].full_url)
        );
        let document: Value = serde_json::from_str(&entries[3].json)?;
        assert_eq!(
            document["content"][0]["attachment"]["data"],
            json!("PENsaW5pY2FsRG9jdW1lbnQvPg==")
        );
        let withheld = canonical_entries("g-1", &referral, b"<x/>", CDA_CONTENT_TYPE, true);
        assert!(
            withheld
                .iter()
                .all(|e| e.resource_type != "DocumentReference")
        );
        Ok(())
    }
}
