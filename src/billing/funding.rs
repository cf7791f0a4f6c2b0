//! Billing records for the Netherlands and Finland: a FHIR R4 Claim (`use = claim`) per referral
//! and month in the funding model of each country, from the `claim` block of
//! `mappings/<j>/parameters.json` (the same product the preauthorization Claim asked for).
//!
//! * NL: clinical sociotherapy is financed through the institution's stay days (verblijfsdag
//!   prestaties of the zorgprestatiemodel, facts 57-58); sociotherapists do not bill consults.
//!   One item per calendar day with a delivered session, quantity 1 day.
//! * FI: the wellbeing services county organises and pays social rehabilitation (fact 64). One
//!   item per delivered session, quantity its minutes.
//!
//! Neither country's tariffs are in the facts, so these Claims carry no prices (`unitPrice`,
//! `net` and `total` are optional in FHIR R4): the payer prices them under its contract. Pure:
//! no I/O, no clock.

use std::collections::BTreeSet;

use serde_json::{Value, json};
use time::{Date, OffsetDateTime};

use crate::mappings::ClaimProduct;
use crate::model::{Delivery, Identifier};

use super::BillingPeriod;
use super::fhir::{BILLING_CLAIM_ID_SYSTEM, EVENT_BILLING_CLAIM, EVENT_SYSTEM, REFERRAL_ID_SYSTEM};

/// One delivered session as billed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BilledSession {
    /// Day.
    pub date: Date,
    /// Minutes.
    pub minutes: u32,
    /// Individual or group.
    pub delivery: Delivery,
}

/// Everything one NL or FI billing Claim needs.
#[derive(Debug, Clone, Copy)]
pub struct FundingClaimInput<'a> {
    /// Id of this Claim (`Claim.identifier`, system [`BILLING_CLAIM_ID_SYSTEM`]).
    pub claim_id: &'a str,
    /// Gateway id of the referral (`Claim.referral.identifier`).
    pub referral_id: &'a str,
    /// The month billed (`Claim.billablePeriod`).
    pub period: BillingPeriod,
    /// The patient's identifiers (BSN, HETU, ...): the first is `Claim.patient.identifier`.
    pub patient_ids: &'a [Identifier],
    /// The payer's identifiers (UZOVI, the county's organisation OID): `Claim.insurer`.
    pub payer_ids: &'a [Identifier],
    /// The payer's name, if known.
    pub payer_name: Option<&'a str>,
    /// The provider's identifiers (AGB, URA, organisation OID): `Claim.provider`.
    pub provider_ids: &'a [Identifier],
    /// The approval or commitment number, if the payer gave one.
    pub approval_number: Option<&'a str>,
    /// What is billed and how it is counted (`days` or `units`).
    pub product: &'a ClaimProduct,
    /// The sessions of the month.
    pub sessions: &'a [BilledSession],
    /// For a correction: the `Claim.identifier` value of the Claim this one replaces
    /// (`Claim.related`, relationship `prior`).
    pub correction_of: Option<&'a str>,
    /// When the Claim is made.
    pub created: OffsetDateTime,
}

fn reference(ids: &[Identifier], fallback: &str) -> Value {
    match ids.first() {
        Some(id) => match &id.system {
            Some(system) => json!({ "identifier": { "system": system, "value": id.value } }),
            None => json!({ "identifier": { "value": id.value } }),
        },
        None => json!({ "display": fallback }),
    }
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// A FHIR message Bundle (event `billing-claim`) with the Claim, as JSON text.
pub fn funding_claim(input: &FundingClaimInput<'_>) -> String {
    let product = json!({ "coding": [{
        "system": input.product.product_system,
        "code": input.product.product_code,
        "display": input.product.product_display,
    }] });
    let items: Vec<Value> = if input.product.quantity == "days" {
        let days: BTreeSet<Date> = input.sessions.iter().map(|s| s.date).collect();
        days.into_iter()
            .enumerate()
            .map(|(n, day)| {
                json!({
                    "sequence": n + 1,
                    "productOrService": product,
                    "servicedDate": day.to_string(),
                    "quantity": { "value": 1, "unit": "d", "system": "http://unitsofmeasure.org", "code": "d" },
                })
            })
            .collect()
    } else {
        let mut sessions = input.sessions.to_vec();
        sessions.sort_by_key(|s| s.date);
        sessions
            .iter()
            .enumerate()
            .map(|(n, s)| {
                let delivery = match s.delivery {
                    Delivery::Individual => "individual",
                    Delivery::Group => "group",
                };
                json!({
                    "sequence": n + 1,
                    "productOrService": product,
                    "modifier": [{ "coding": [{
                        "system": "https://sociogate.org/fhir/CodeSystem/delivery-mode",
                        "code": delivery,
                    }] }],
                    "servicedDate": s.date.to_string(),
                    "quantity": { "value": s.minutes, "unit": "min", "system": "http://unitsofmeasure.org", "code": "min" },
                })
            })
            .collect()
    };
    let mut insurer = reference(input.payer_ids, input.payer_name.unwrap_or("payer"));
    if let (Some(name), Some(obj)) = (input.payer_name, insurer.as_object_mut()) {
        obj.insert("display".to_owned(), json!(name));
    }
    let mut claim = json!({
        "resourceType": "Claim",
        "identifier": [{ "system": BILLING_CLAIM_ID_SYSTEM, "value": input.claim_id }],
        "status": "active",
        "type": { "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/claim-type", "code": "institutional" }] },
        "use": "claim",
        "patient": reference(input.patient_ids, "patient of the referral"),
        "created": rfc3339(input.created),
        "insurer": insurer,
        "provider": reference(input.provider_ids, "provider"),
        "priority": { "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/processpriority", "code": "normal" }] },
        "referral": { "identifier": { "system": REFERRAL_ID_SYSTEM, "value": input.referral_id } },
        "insurance": [{ "sequence": 1, "focal": true, "coverage": { "display": "coverage of the referral" } }],
        "item": items,
    });
    if let (Some(start), Some(end)) = (input.period.first_day(), input.period.last_day()) {
        claim["billablePeriod"] = json!({ "start": start.to_string(), "end": end.to_string() });
    }
    if let Some(prior) = input.correction_of {
        claim["related"] = json!([{
            "claim": { "identifier": { "system": BILLING_CLAIM_ID_SYSTEM, "value": prior } },
            "relationship": { "coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/ex-relatedclaimrelationship",
                "code": "prior",
            }] },
        }]);
    }
    if let Some(number) = input.approval_number {
        claim["insurance"][0]["preAuthRef"] = json!([number]);
    }
    let claim_url = format!(
        "urn:uuid:{}",
        uuid::Uuid::new_v5(
            &uuid::Uuid::NAMESPACE_URL,
            format!("{}/claim", input.claim_id).as_bytes()
        )
    );
    json!({
        "resourceType": "Bundle",
        "identifier": { "system": BILLING_CLAIM_ID_SYSTEM, "value": input.claim_id },
        "type": "message",
        "timestamp": rfc3339(input.created),
        "entry": [
            { "fullUrl": format!("urn:uuid:{}", uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_URL, format!("{}/header", input.claim_id).as_bytes())),
              "resource": {
                "resourceType": "MessageHeader",
                "eventCoding": { "system": EVENT_SYSTEM, "code": EVENT_BILLING_CLAIM },
                "source": { "name": "sociogate", "endpoint": "urn:sociogate" },
                "focus": [{ "reference": claim_url }]
              } },
            { "fullUrl": claim_url, "resource": claim }
        ]
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::IdentifierKind;
    use time::macros::{date, datetime};

    fn product(quantity: &str) -> ClaimProduct {
        ClaimProduct {
            product_system: "https://sociogate.org/fhir/CodeSystem/nl-zorgprestatie".into(),
            product_code: "verblijfsdag".into(),
            product_display: "Verblijfsdag".into(),
            quantity: quantity.into(),
            note: String::new(),
        }
    }

    fn bsn() -> Vec<Identifier> {
        vec![Identifier {
            kind: IdentifierKind::Bsn,
            system: Some("http://fhir.nl/fhir/NamingSystem/bsn".into()),
            value: "999911120".into(),
        }]
    }

    const SESSIONS: [BilledSession; 3] = [
        BilledSession {
            date: date!(2026 - 11 - 10),
            minutes: 90,
            delivery: Delivery::Group,
        },
        BilledSession {
            date: date!(2026 - 11 - 10),
            minutes: 60,
            delivery: Delivery::Individual,
        },
        BilledSession {
            date: date!(2026 - 11 - 12),
            minutes: 60,
            delivery: Delivery::Individual,
        },
    ];

    fn claim_of(text: &str) -> Value {
        let bundle: Value = serde_json::from_str(text).unwrap_or(Value::Null);
        bundle["entry"][1]["resource"].clone()
    }

    #[test]
    fn dutch_claims_count_stay_days_and_finnish_ones_sessions() {
        let patient = bsn();
        let nl_product = product("days");
        let input = FundingClaimInput {
            claim_id: "run/ref",
            referral_id: "ref",
            period: BillingPeriod {
                year: 2026,
                month: time::Month::November,
            },
            patient_ids: &patient,
            payer_ids: &[],
            payer_name: Some("Zilveren Kruis"),
            provider_ids: &[],
            approval_number: None,
            correction_of: None,
            product: &nl_product,
            sessions: &SESSIONS,
            created: datetime!(2026-12-01 09:00 UTC),
        };
        let text = funding_claim(&input);
        let typed: Result<fhir_sdk::r4b::resources::Resource, _> = serde_json::from_str(&text);
        assert!(typed.is_ok(), "{typed:?}");
        let nl = claim_of(&text);
        assert_eq!(nl["use"], json!("claim"));
        // Two days with sessions: two stay days.
        assert_eq!(nl["item"].as_array().map(Vec::len), Some(2));
        assert_eq!(nl["item"][1]["servicedDate"], json!("2026-11-12"));
        assert_eq!(nl["billablePeriod"]["end"], json!("2026-11-30"));
        assert_eq!(nl["patient"]["identifier"]["value"], json!("999911120"));

        let fi_product = product("units");
        let fi = claim_of(&funding_claim(&FundingClaimInput {
            product: &fi_product,
            approval_number: Some("PK-2026-17"),
            ..input
        }));
        assert_eq!(fi["item"].as_array().map(Vec::len), Some(3));
        assert_eq!(fi["item"][0]["quantity"]["value"], json!(90));
        assert_eq!(
            fi["item"][0]["modifier"][0]["coding"][0]["code"],
            json!("group")
        );
        assert_eq!(fi["insurance"][0]["preAuthRef"][0], json!("PK-2026-17"));
        assert!(fi.get("total").is_none(), "no prices without a tariff");
    }
}
