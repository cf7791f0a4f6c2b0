//! CDA R2 intake: every CDA of the third-party corpus ends in a verdict, the C-CDA Referral Note
//! maps its patient, author and problems, the example CDA referrals reach the same canonical
//! referral and verdict as their FHIR JSON twins, and an accepted CDA referral is forwarded as
//! FHIR with the original document attached.

mod common;

use std::path::{Path, PathBuf};

use common::{codes, corpus, engine, process, read, verdict};
use serde_json::{Value, json};
use sociogate::config::Config;
use sociogate::forward::{self, Origin};
use sociogate::model::{Gender, IdentifierKind, Referral};
use time::macros::date;

fn xml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            xml_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "xml") {
            out.push(path);
        }
    }
}

fn referral_of(processed: &sociogate::pipeline::Processed) -> Referral {
    match &processed.referral {
        Some(r) => r.clone(),
        None => panic!("no referral: {:?}", codes(processed)),
    }
}

/// Corpus files with a `ClinicalDocument` root that are not valid CDA R2, and why.
const NOT_VALID_CDA: &[(&str, &str)] = &[
    (
        "Patient and Provider Organization Direct Address",
        "a header excerpt: literal `...` for omitted parts, no author or custodian",
    ),
    (
        "Consult Document Closing Referral",
        "a stray `>` after the root start tag and a component without a section",
    ),
    (
        "validator-cda-example.xml",
        "a validator case without typeId, effectiveTime, confidentialityCode, author, custodian and component",
    ),
];

#[test]
fn every_corpus_cda_ends_in_a_verdict_with_its_reason() {
    let engine = engine();
    let mut files = Vec::new();
    xml_files(&corpus().join("hl7-c-cda-examples"), &mut files);
    xml_files(&corpus().join("fhir-test-cases-cda"), &mut files);
    files.sort();
    assert!(files.len() >= 48, "corpus CDA files found: {}", files.len());
    let mut documents = 0;
    for file in &files {
        let bytes = std::fs::read(file).unwrap_or_default();
        let processed = process(&engine, &bytes);
        let text = String::from_utf8_lossy(&bytes);
        let is_document = text.contains("<ClinicalDocument") && text.contains("urn:hl7-org:v3");
        assert!(
            !processed.issues.is_empty(),
            "{}: a verdict needs its reason",
            file.display()
        );
        let name = file.to_string_lossy();
        if let Some((_, why)) = NOT_VALID_CDA.iter().find(|(f, _)| name.contains(f)) {
            // Broken samples: refused by the subset schema, with the reason.
            assert_eq!(codes(&processed), ["GW-DEC-10"], "{name} ({why})");
        } else if is_document && !file.ends_with("validator-cda-cda.xml") {
            documents += 1;
            // None of them orders sociotherapy: each is a readable draft, rejected for that.
            assert_eq!(
                verdict(&processed),
                "rejected",
                "{}: {:?}",
                file.display(),
                codes(&processed)
            );
            assert!(
                codes(&processed).contains(&"GW-MAP-12"),
                "{}",
                file.display()
            );
            assert!(
                processed
                    .referral
                    .as_ref()
                    .is_some_and(|r| r.patient.is_some())
            );
        } else if file.ends_with("validator-cda-cda.xml") {
            // A FHIR StructureDefinition (of CDA): FHIR XML, but no referral.
            assert_eq!(
                codes(&processed),
                ["GW-MAP-01", "GW-MAP-06"],
                "{}",
                file.display()
            );
        } else {
            // Fragments (a section, a recordTarget) are not documents.
            assert_eq!(verdict(&processed), "unreadable", "{}", file.display());
        }
    }
    assert_eq!(documents, 18, "CDA documents read and judged");
}

#[test]
fn referral_note_maps_patient_author_and_active_problems() {
    let engine = engine();
    let bytes = std::fs::read(
        corpus().join("hl7-c-cda-examples/Documents/Referral Note/Referral_Note.xml"),
    )
    .unwrap_or_default();
    let processed = process(&engine, &bytes);
    let referral = referral_of(&processed);

    let patient = referral
        .patient
        .as_ref()
        .unwrap_or_else(|| panic!("patient"));
    assert_eq!(patient.ids.len(), 1);
    assert_eq!(
        patient.ids[0].system.as_deref(),
        Some("urn:oid:2.16.840.1.113883.4.1")
    );
    assert_eq!(patient.ids[0].value, "444222222");
    let name = patient.name.as_ref().unwrap_or_else(|| panic!("name"));
    assert_eq!(name.family.as_deref(), Some("Betterhalf"));
    assert_eq!(name.given, ["Eve"]);
    assert_eq!(patient.birth_date, Some(date!(1975 - 05 - 01)));
    assert_eq!(patient.gender, Some(Gender::Female));
    let address = patient
        .address
        .as_ref()
        .unwrap_or_else(|| panic!("address"));
    assert_eq!(address.lines, ["2222 Home Street"]);
    assert_eq!(address.city.as_deref(), Some("Beaverton"));
    assert_eq!(address.postal_code.as_deref(), Some("97867"));
    assert_eq!(address.country.as_deref(), Some("US"));

    let author = referral
        .prescriber
        .as_ref()
        .unwrap_or_else(|| panic!("author"));
    assert_eq!(
        author.person_ids[0].system.as_deref(),
        Some("urn:oid:2.16.840.1.113883.4.6")
    );
    assert_eq!(author.person_ids[0].value, "5555555555");
    let author_name = author
        .name
        .as_ref()
        .unwrap_or_else(|| panic!("author name"));
    assert_eq!(author_name.family.as_deref(), Some("Primary"));
    // "Patty" is a call-me name (qualifier CL), not part of the name.
    assert_eq!(author_name.given, ["Patricia"]);
    assert_eq!(author_name.suffix, ["M.D."]);
    assert_eq!(referral.issue_date, Some(date!(2013 - 03 - 11)));

    // The active problems; the resolved pneumonia and the family history are not the patient's
    // current problems.
    let problems: Vec<(&str, Option<&str>)> = referral
        .diagnoses
        .iter()
        .map(|d| (d.code.as_str(), d.system.as_deref()))
        .collect();
    let snomed = Some("http://snomed.info/sct");
    assert_eq!(
        problems,
        [
            ("190389009", snomed),
            ("195977004", snomed),
            ("304527002", snomed)
        ]
    );
    assert_eq!(
        referral.diagnoses[0].display.as_deref(),
        Some("Type II diabetes mellitus with ulcer (disorder)")
    );
    assert_eq!(
        referral.ids.idempotency_key,
        "6f1bd58b-c58f-40b7-b314-caf1294ed98b"
    );
    // A referral note to a US specialist is no sociotherapy order, and no jurisdiction of ours.
    assert_eq!(verdict(&processed), "rejected");
    let found = codes(&processed);
    assert!(
        found.contains(&"GW-MAP-12") && found.contains(&"GW-MAP-06"),
        "{found:?}"
    );
}

/// The canonical referral without what differs by transport or format:
/// - the per-message ids and how the jurisdiction was decided;
/// - the care plan's reference and the systems of its ids (FHIR names them by URL, CDA by OID;
///   the values are compared);
/// - Telematik-IDs: no OID for them is in the facts, so a CDA sender cannot name them;
/// - diagnosis certainty outside Germany: CDA carries it in the KBV Diagnosesicherheit system
///   only, and the Dutch and Finnish rules do not use it.
fn comparable(referral: &Referral) -> Value {
    let mut referral = referral.clone();
    for ids in [
        referral.prescriber.as_mut().map(|p| &mut p.person_ids),
        referral.requested_provider.as_mut().map(|p| &mut p.ids),
    ]
    .into_iter()
    .flatten()
    {
        ids.retain(|id| id.kind != IdentifierKind::TelematikId);
    }
    if let Some(plan) = referral.care_plan.as_mut() {
        plan.reference.clear();
        for id in &mut plan.ids {
            id.system = None;
        }
    }
    if referral.jurisdiction != Some(sociogate::model::Jurisdiction::De) {
        for d in &mut referral.diagnoses {
            d.certainty = None;
        }
    }
    let mut value = serde_json::to_value(&referral).unwrap_or_default();
    if let Some(obj) = value.as_object_mut() {
        obj.remove("ids");
        obj.remove("jurisdiction_basis");
    }
    sort_lists(&mut value);
    value
}

fn sort_lists(value: &mut Value) {
    match value {
        Value::Array(items) => {
            items.iter_mut().for_each(sort_lists);
            items.sort_by_key(|v| v.to_string());
        }
        Value::Object(obj) => obj.values_mut().for_each(sort_lists),
        _ => {}
    }
}

const TWINS: &[(&str, &str)] = &[
    (
        "examples/de-first-prescription.cda.xml",
        "examples/de-first-prescription-message.json",
    ),
    (
        "examples/nl-clinical-sociotherapy.cda.xml",
        "examples/nl-clinical-sociotherapy-accepted.json",
    ),
    (
        "examples/fi-social-rehabilitation.cda.xml",
        "examples/fi-social-rehabilitation-accepted.json",
    ),
];

#[test]
fn example_cda_referrals_equal_their_fhir_twins() {
    let engine = engine();
    for (cda, json_twin) in TWINS {
        let from_cda = process(&engine, &read(cda));
        let from_json = process(&engine, &read(json_twin));
        assert_eq!(
            verdict(&from_cda),
            "accepted",
            "{cda}: {:?}",
            codes(&from_cda)
        );
        assert_eq!(verdict(&from_cda), verdict(&from_json), "{cda}");
        let mut cda_codes = codes(&from_cda);
        let mut json_codes = codes(&from_json);
        cda_codes.sort_unstable();
        json_codes.sort_unstable();
        assert_eq!(cda_codes, json_codes, "{cda}");
        assert_eq!(
            comparable(&referral_of(&from_cda)),
            comparable(&referral_of(&from_json)),
            "{cda} differs from {json_twin}"
        );
    }
}

#[test]
fn discharge_letter_without_order_is_a_draft_rejected_for_the_missing_order() {
    let engine = engine();
    let processed = process(
        &engine,
        &read("examples/de-discharge-letter-no-order.cda.xml"),
    );
    assert_eq!(verdict(&processed), "rejected");
    assert_eq!(codes(&processed), ["GW-MAP-12"]);
    let missing = &processed.issues[0];
    assert!(
        missing
            .detail
            .as_deref()
            .is_some_and(|d| d.contains("encounter")),
        "the rejection names what the letter plans instead: {:?}",
        missing.detail
    );
    let referral = referral_of(&processed);
    assert!(!referral.is_sociotherapy);
    let patient = referral
        .patient
        .as_ref()
        .unwrap_or_else(|| panic!("patient"));
    assert!(patient.ids.iter().any(|i| i.kind == IdentifierKind::Kvid10));
    assert!(referral.prescriber.is_some());
    assert!(referral.diagnoses.iter().any(|d| d.code.starts_with('F')));
    assert!(
        referral
            .hospital_stay
            .is_some_and(|s| s.discharge.is_some())
    );
}

#[test]
fn accepted_cda_is_forwarded_as_fhir_with_the_original_document() {
    let engine = engine();
    let bytes = read("examples/de-first-prescription.cda.xml");
    let processed = process(&engine, &bytes);
    assert_eq!(verdict(&processed), "accepted", "{:?}", codes(&processed));
    let outcome = engine.outcome(&processed, "de").to_json();
    let origin = Origin {
        gateway_id: "0190e000-0000-7000-8000-0000000000d1",
        message_id: Some("cda-1"),
        content_type: Some("application/hl7-cda+xml"),
        body: &bytes,
        ..Origin::default()
    };
    let planned = forward::plan(
        &origin,
        &processed,
        &outcome,
        None,
        &Config::default().amqp,
        engine.mappings(),
    );
    let provider = planned
        .iter()
        .find(|o| o.kind == "provider")
        .unwrap_or_else(|| panic!("provider output"));
    let bundle: Value = serde_json::from_slice(&provider.body).unwrap_or_default();
    // The recipient's FHIR library reads it.
    let typed: Result<fhir_sdk::r4b::resources::Resource, _> =
        serde_json::from_value(bundle.clone());
    assert!(typed.is_ok(), "{typed:?}");
    let resources: Vec<&Value> = bundle["entry"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| &e["resource"])
        .collect();
    let of_type = |t: &str| {
        resources
            .iter()
            .filter(|r| r["resourceType"] == json!(t))
            .count()
    };
    assert_eq!(of_type("Task"), 1);
    assert_eq!(of_type("ServiceRequest"), 1);
    assert_eq!(of_type("Patient"), 1);
    assert!(of_type("Condition") >= 1);
    let document = resources
        .iter()
        .find(|r| r["resourceType"] == json!("DocumentReference"))
        .unwrap_or_else(|| panic!("the original document"));
    let data = document["content"][0]["attachment"]["data"]
        .as_str()
        .unwrap_or_default();
    use base64::Engine as _;
    let original = base64::engine::general_purpose::STANDARD
        .decode(data)
        .unwrap_or_default();
    assert_eq!(original, bytes);
    let patient = resources
        .iter()
        .find(|r| r["resourceType"] == json!("Patient"))
        .unwrap_or_else(|| panic!("patient"));
    assert_eq!(
        patient["identifier"][0]["system"],
        json!("http://fhir.de/sid/gkv/kvid-10")
    );
    let insurer = planned
        .iter()
        .find(|o| o.kind == "insurer")
        .unwrap_or_else(|| panic!("insurer output"));
    assert!(
        insurer.routing_key.starts_with("payer."),
        "{}",
        insurer.routing_key
    );
}
