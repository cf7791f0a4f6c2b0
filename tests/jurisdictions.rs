//! The Netherlands and Finland end to end: corpus patients map their identifiers, the
//! jurisdiction is decided from identifiers and profiles (or fixed by the intake), a
//! non-disclosure label (turvakielto) keeps address and contact details out of every output,
//! and outcomes come in Dutch and Finnish with the same rule codes.

mod common;

use common::{TODAY, codes, corpus, engine, process, read, verdict};
use serde_json::{Value, json};
use sociogate::check::Verdict;
use sociogate::config::Config;
use sociogate::forward::{self, Origin};
use sociogate::mappings::LANGUAGES;
use sociogate::model::{Identifier, IdentifierKind, Jurisdiction, Referral};
use sociogate::pipeline::{Engine, Inbound, Processed};
use sociogate::store::NewOutbound;
use sociogate::store::ledger::MemoryLedger;

const SERVICE: &str = "https://sociogate.org/fhir/CodeSystem/service";
const HETU: &str = "urn:oid:1.2.246.21";
const BSN: &str = "http://fhir.nl/fhir/NamingSystem/bsn";
const KVID: &str = "http://fhir.de/sid/gkv/kvid-10";
const UZOVI: &str = "http://fhir.nl/fhir/NamingSystem/uzovi";
const MUNICIPALITY_EXT: &str =
    "https://hl7.fi/fhir/finnish-base-profiles/StructureDefinition/municipality-code";

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// A collection Bundle with one ServiceRequest for `service` about `patient`, and `extra`
/// entries (e.g. a Coverage at `urn:uuid:coverage`, referenced when present).
fn bundle(service: &str, patient: Value, extra: Vec<Value>) -> Vec<u8> {
    let has_coverage = extra
        .iter()
        .any(|e| e["resource"]["resourceType"] == "Coverage");
    let mut sr = json!({
        "resourceType": "ServiceRequest",
        "status": "active",
        "intent": "order",
        "code": { "coding": [{ "system": SERVICE, "code": service }] },
        "subject": { "reference": "urn:uuid:patient" },
        "occurrencePeriod": { "start": "2026-11-16", "end": "2027-02-12" },
    });
    if has_coverage {
        sr["insurance"] = json!([{ "reference": "urn:uuid:coverage" }]);
    }
    let mut entries = vec![
        json!({ "fullUrl": "urn:uuid:request", "resource": sr }),
        json!({ "fullUrl": "urn:uuid:patient", "resource": patient }),
    ];
    entries.extend(extra);
    let b = json!({ "resourceType": "Bundle", "type": "collection", "entry": entries });
    b.to_string().into_bytes()
}

fn patient_with(identifiers: Value, profile: Option<&str>) -> Value {
    let mut p = json!({
        "resourceType": "Patient",
        "identifier": identifiers,
        "name": [{ "family": "Test", "given": ["Tessa"] }],
        "birthDate": "1990-01-01",
    });
    if let Some(profile) = profile {
        p["meta"] = json!({ "profile": [profile] });
    }
    p
}

fn id(system: &str, value: &str) -> Value {
    json!({ "system": system, "value": value })
}

fn coverage_paid_by(system: &str, value: &str) -> Value {
    json!({
        "fullUrl": "urn:uuid:coverage",
        "resource": {
            "resourceType": "Coverage",
            "status": "active",
            "beneficiary": { "reference": "urn:uuid:patient" },
            "payor": [{ "identifier": { "system": system, "value": value } }],
        },
    })
}

fn referral(processed: &Processed) -> &Referral {
    match &processed.referral {
        Some(r) => r,
        None => panic!("no referral: {:?}", codes(processed)),
    }
}

fn process_for(engine: &Engine, bytes: &[u8], jurisdiction: Option<Jurisdiction>) -> Processed {
    let mut ledger = MemoryLedger::default();
    let inbound = Inbound {
        bytes,
        content_type: None,
        message_id: None,
        jurisdiction,
    };
    match engine.process(inbound, &mut ledger, TODAY) {
        Ok(p) => p,
        Err(e) => panic!("the in-memory ledger cannot fail: {e}"),
    }
}

fn corpus_patient(name: &str) -> Value {
    let path = corpus().join("hl7fi-finnish-base-profiles").join(name);
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn hetu(value: &str) -> Identifier {
    Identifier {
        kind: IdentifierKind::Hetu,
        system: Some(HETU.to_owned()),
        value: value.to_owned(),
    }
}

fn patient_ids(processed: &Processed) -> Vec<Identifier> {
    referral(processed)
        .patient
        .as_ref()
        .map(|p| p.ids.clone())
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// (a) Finnish corpus patients
// ---------------------------------------------------------------------------------------------

#[test]
fn turvakielto_corpus_patient_maps_hetu_non_disclosure_and_jurisdiction() {
    let engine = engine();
    let patient = corpus_patient("Patient-patient-with-turvakielto.json");
    let processed = process(&engine, &bundle("social-rehabilitation", patient, vec![]));
    let r = referral(&processed);
    let p = r.patient.as_ref().unwrap_or_else(|| panic!("no patient"));
    assert_eq!(p.ids, [hetu("010190-999X")]);
    assert!(p.non_disclosure, "the TURVAKIELTO label must be read");
    assert_eq!(
        p.birth_date.map(|d| d.to_string()).as_deref(),
        Some("1990-01-01")
    );
    assert_eq!(
        p.name.as_ref().and_then(|n| n.family.as_deref()),
        Some("Henkilö")
    );
    assert_eq!(r.jurisdiction, Some(Jurisdiction::Fi));
    assert_eq!(
        r.jurisdiction_basis.as_deref(),
        Some("identifier urn:oid:1.2.246.21")
    );
    let found = codes(&processed);
    assert!(found.contains(&"GW-ND-01"), "{found:?}");
    // The corpus test identity has a temporary individual number whose check character is
    // not the computed one (010190999 mod 31 gives W), so the Finnish pack flags it.
    let invalid = processed
        .issues
        .iter()
        .find(|i| i.code == "FI-ID-01")
        .unwrap_or_else(|| panic!("FI-ID-01 expected: {found:?}"));
    assert_eq!(invalid.detail.as_deref(), Some("010190-999X"));
}

#[test]
fn other_finnish_corpus_patients_map_their_hetu() {
    let engine = engine();
    for (file, expected) in [
        ("Patient-patient-of-municipality.json", "010190-999Y"),
        ("Patient-patientesim1.json", "250810A999Y"),
    ] {
        let patient = corpus_patient(file);
        let processed = process(&engine, &bundle("social-rehabilitation", patient, vec![]));
        assert_eq!(patient_ids(&processed), [hetu(expected)], "{file}");
        let r = referral(&processed);
        assert_eq!(r.jurisdiction, Some(Jurisdiction::Fi), "{file}");
        assert_eq!(
            r.jurisdiction_basis.as_deref(),
            Some("identifier urn:oid:1.2.246.21"),
            "{file}"
        );
        assert!(
            !r.patient.as_ref().is_some_and(|p| p.non_disclosure),
            "{file} has no non-disclosure label"
        );
    }
}

#[test]
fn corpus_patient_of_municipality_keeps_its_address_without_a_label() {
    let engine = engine();
    let patient = corpus_patient("Patient-patient-of-municipality.json");
    let processed = process(&engine, &bundle("social-rehabilitation", patient, vec![]));
    let address = referral(&processed)
        .patient
        .as_ref()
        .and_then(|p| p.address.clone())
        .unwrap_or_else(|| panic!("address expected"));
    assert_eq!(address.lines, ["Testikatu 1", "37910 Akaa"]);
}

#[test]
fn corpus_patient_with_only_a_uuid_identifier_decides_no_jurisdiction() {
    let engine = engine();
    let patient = corpus_patient("Patient-25a53703-27f9-4354-8f1b-a8b2f8f3ee86.json");
    let processed = process(&engine, &bundle("social-rehabilitation", patient, vec![]));
    let ids = patient_ids(&processed);
    assert_eq!(ids.len(), 1);
    assert_eq!(ids[0].kind, IdentifierKind::Other);
    assert_eq!(ids[0].system.as_deref(), Some("urn:ietf:rfc:3986"));
    assert_eq!(
        ids[0].value,
        "urn:uuid:25a53703-27f9-4354-8f1b-a8b2f8f3ee86"
    );
    assert_eq!(codes(&processed), ["GW-MAP-06"]);
}

/// The Nictiz examples are FHIR XML: a lone Patient has no ServiceRequest (`GW-MAP-01`), but the
/// mapper keeps the patient and decides the jurisdiction so that the rejection can be routed.
#[test]
fn dutch_corpus_patients_map_their_bsn() {
    let engine = engine();
    let dir = corpus().join("nictiz-r4-zib2020").join("examples");
    for (file, expected) in [
        ("nl-core-Patient-01.xml", "111222333"),
        ("nl-core-TreatmentDirective2-02-Patient-01.xml", "999911120"),
    ] {
        let bytes = std::fs::read(dir.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        let processed = process(&engine, &bytes);
        assert_eq!(codes(&processed), ["GW-MAP-01"], "{file}");
        let ids = patient_ids(&processed);
        assert_eq!(
            ids,
            [Identifier {
                kind: IdentifierKind::Bsn,
                system: Some(BSN.to_owned()),
                value: expected.to_owned(),
            }],
            "{file}"
        );
        let r = referral(&processed);
        assert_eq!(r.jurisdiction, Some(Jurisdiction::Nl), "{file}");
        assert_eq!(
            r.jurisdiction_basis.as_deref(),
            Some("identifier http://fhir.nl/fhir/NamingSystem/bsn"),
            "{file}"
        );
    }
    // A patient without identifiers is Dutch by its nl-core profile.
    let bytes = std::fs::read(dir.join("nl-core-CareTeam-01-Patient-01.xml")).unwrap_or_default();
    let processed = process(&engine, &bytes);
    assert!(patient_ids(&processed).is_empty());
    assert_eq!(
        referral(&processed).jurisdiction_basis.as_deref(),
        Some("profile http://nictiz.nl/fhir/StructureDefinition/nl-core-Patient")
    );
}

// ---------------------------------------------------------------------------------------------
// (b) Jurisdiction detection
// ---------------------------------------------------------------------------------------------

fn decided(bytes: &[u8]) -> (Option<Jurisdiction>, Option<String>, Processed) {
    let processed = process(&engine(), bytes);
    let r = referral(&processed);
    (r.jurisdiction, r.jurisdiction_basis.clone(), processed)
}

#[test]
fn bsn_decides_the_netherlands() {
    let p = patient_with(json!([id(BSN, "908301662")]), None);
    let (j, basis, processed) = decided(&bundle("clinical-sociotherapy", p, vec![]));
    assert_eq!(j, Some(Jurisdiction::Nl));
    assert_eq!(
        basis.as_deref(),
        Some("identifier http://fhir.nl/fhir/NamingSystem/bsn")
    );
    assert!(codes(&processed).iter().all(|c| !c.starts_with("FI-")));
    assert!(codes(&processed).contains(&"NL-TP-01"));
}

#[test]
fn bsn_by_its_oid_is_normalised_and_decides_the_netherlands() {
    let p = patient_with(
        json!([id("urn:oid:2.16.840.1.113883.2.4.6.3", "908301662")]),
        None,
    );
    let (j, _, processed) = decided(&bundle("clinical-sociotherapy", p, vec![]));
    assert_eq!(j, Some(Jurisdiction::Nl));
    let ids = patient_ids(&processed);
    assert_eq!(ids[0].kind, IdentifierKind::Bsn);
    assert_eq!(ids[0].system.as_deref(), Some(BSN));
}

#[test]
fn hetu_decides_finland() {
    let p = patient_with(json!([id(HETU, "140387-264D")]), None);
    let (j, basis, processed) = decided(&bundle("social-rehabilitation", p, vec![]));
    assert_eq!(j, Some(Jurisdiction::Fi));
    assert_eq!(basis.as_deref(), Some("identifier urn:oid:1.2.246.21"));
    assert!(codes(&processed).contains(&"FI-AS-01"));
}

#[test]
fn kvid_decides_germany() {
    let p = patient_with(json!([id(KVID, "X110411675")]), None);
    let (j, basis, processed) = decided(&bundle("sociotherapy", p, vec![]));
    assert_eq!(j, Some(Jurisdiction::De));
    assert_eq!(
        basis.as_deref(),
        Some("identifier http://fhir.de/sid/gkv/kvid-10")
    );
    assert!(codes(&processed).iter().all(|c| !c.starts_with("NL-")));
}

#[test]
fn nl_core_profile_alone_decides_the_netherlands() {
    let profile = "http://nictiz.nl/fhir/StructureDefinition/nl-core-Patient";
    let p = patient_with(json!([]), Some(profile));
    let (j, basis, processed) = decided(&bundle("clinical-sociotherapy", p, vec![]));
    assert_eq!(j, Some(Jurisdiction::Nl));
    assert_eq!(basis, Some(format!("profile {profile}")));
    // Decided, but the Dutch pack still wants a BSN.
    assert!(codes(&processed).contains(&"NL-ID-05"));
}

#[test]
fn fi_base_profile_alone_decides_finland() {
    let profile = "https://hl7.fi/fhir/finnish-base-profiles/StructureDefinition/fi-base-patient";
    let p = patient_with(json!([]), Some(profile));
    let (j, basis, processed) = decided(&bundle("social-rehabilitation", p, vec![]));
    assert_eq!(j, Some(Jurisdiction::Fi));
    assert_eq!(basis, Some(format!("profile {profile}")));
    assert!(codes(&processed).contains(&"FI-ID-03"));
}

#[test]
fn nothing_to_decide_by_is_rejected_with_gw_map_06() {
    let p = patient_with(json!([id("urn:example:mrn", "4711")]), None);
    let (j, basis, processed) = decided(&bundle("social-rehabilitation", p, vec![]));
    assert_eq!(j, None);
    assert_eq!(basis, None);
    assert_eq!(processed.verdict, Verdict::Rejected);
    assert_eq!(codes(&processed), ["GW-MAP-06"]);
}

#[test]
fn the_patient_identifier_decides_before_the_payer() {
    let p = patient_with(json!([id(HETU, "140387-264D")]), None);
    let (j, _, _) = decided(&bundle(
        "social-rehabilitation",
        p,
        vec![coverage_paid_by(UZOVI, "3311")],
    ));
    assert_eq!(j, Some(Jurisdiction::Fi));
}

#[test]
fn the_payer_decides_when_the_patient_has_no_national_identifier() {
    let p = patient_with(json!([id("urn:example:mrn", "4711")]), None);
    let (j, basis, _) = decided(&bundle(
        "clinical-sociotherapy",
        p,
        vec![coverage_paid_by(UZOVI, "3311")],
    ));
    assert_eq!(j, Some(Jurisdiction::Nl));
    assert_eq!(
        basis.as_deref(),
        Some("identifier http://fhir.nl/fhir/NamingSystem/uzovi")
    );
}

#[test]
fn an_identifier_wins_over_a_profile_of_another_country() {
    let p = patient_with(
        json!([id(BSN, "908301662")]),
        Some("https://hl7.fi/fhir/finnish-base-profiles/StructureDefinition/fi-base-patient"),
    );
    let (j, _, _) = decided(&bundle("clinical-sociotherapy", p, vec![]));
    assert_eq!(j, Some(Jurisdiction::Nl));
}

#[test]
fn the_intake_configuration_overrides_detection() {
    let engine = engine();
    let bytes = read("examples/fi-social-rehabilitation-accepted.json");
    let processed = process_for(&engine, &bytes, Some(Jurisdiction::Nl));
    let r = referral(&processed);
    assert_eq!(r.jurisdiction, Some(Jurisdiction::Nl));
    assert_eq!(
        r.jurisdiction_basis.as_deref(),
        Some("configured for the intake")
    );
    // Judged by the Dutch rules: no BSN, no clinic ward, no UZOVI.
    let found = codes(&processed);
    for code in ["NL-ID-05", "NL-ST-01", "NL-PY-01"] {
        assert!(found.contains(&code), "{code} in {found:?}");
    }
    assert!(found.iter().all(|c| !c.starts_with("FI-")), "{found:?}");
    // Without the override the same file is Finnish and accepted.
    let processed = process_for(&engine, &bytes, None);
    assert_eq!(referral(&processed).jurisdiction, Some(Jurisdiction::Fi));
    assert_eq!(processed.verdict, Verdict::Accepted);
}

// ---------------------------------------------------------------------------------------------
// Examples: the canonical content the rules rely on
// ---------------------------------------------------------------------------------------------

#[test]
fn dutch_example_maps_what_the_dutch_rules_read() {
    let processed = process(
        &engine(),
        &read("examples/nl-clinical-sociotherapy-accepted.json"),
    );
    assert_eq!(verdict(&processed), "accepted", "{:?}", codes(&processed));
    let r = referral(&processed);
    let json = serde_json::to_value(r).unwrap_or(Value::Null);
    assert_eq!(json["jurisdiction"], "NL");
    assert_eq!(json["settings"], json!(["clinic-ward"]));
    assert_eq!(json["delivery_modes"], json!(["individual", "group"]));
    assert_eq!(json["plan_agreed_with_client"], true);
    assert_eq!(
        json["prescriber"]["qualifications"],
        json!(["psychiatrist"])
    );
    assert_eq!(json["coverage"]["payer_ids"][0]["kind"], "uzovi");
    assert_eq!(json["coverage"]["payer_ids"][0]["value"], "3311");
    assert_eq!(json["patient"]["ids"][0]["kind"], "bsn");
    assert_eq!(json["patient"]["ids"][0]["value"], "908301662");
    assert_eq!(json["diagnoses"][0]["code"], "F20.0");
}

#[test]
fn finnish_example_maps_what_the_finnish_rules_read() {
    let processed = process(
        &engine(),
        &read("examples/fi-social-rehabilitation-accepted.json"),
    );
    assert_eq!(verdict(&processed), "accepted", "{:?}", codes(&processed));
    let json = serde_json::to_value(referral(&processed)).unwrap_or(Value::Null);
    assert_eq!(json["jurisdiction"], "FI");
    assert_eq!(json["service_needs_assessment_date"], "2026-10-28");
    assert_eq!(
        json["plan_evaluation_dates"],
        json!(["2027-02-15", "2027-05-14"])
    );
    assert_eq!(json["frequency"]["count"], 1);
    assert_eq!(json["frequency"]["unit"], "week");
    assert_eq!(json["delivery_modes"], json!(["group"]));
    assert_eq!(json["coverage"]["kind"], "public");
    assert_eq!(
        json["coverage"]["payer_ids"][0]["value"],
        "urn:oid:1.2.246.10.3221308.10.0"
    );
    assert_eq!(json["patient"]["ids"][0]["value"], "140387-264D");
}

/// The inbound profile and the rule messages say that the patient as a CarePlan contributor
/// records the agreement with the client; the mapper reads only an active Consent.
#[test]
fn patient_as_care_plan_contributor_records_the_agreement() {
    let engine = engine();
    for file in [
        "examples/fi-social-rehabilitation-accepted.json",
        "examples/nl-clinical-sociotherapy-accepted.json",
    ] {
        let mut bundle: Value = serde_json::from_slice(&read(file)).unwrap_or(Value::Null);
        // Keep the CarePlan (whose contributors include the Patient), drop the Consent.
        let entries = bundle["entry"]
            .as_array_mut()
            .unwrap_or_else(|| panic!("{file}"));
        let consents: Vec<Value> = entries
            .iter()
            .filter(|e| e["resource"]["resourceType"] == "Consent")
            .map(|e| e["fullUrl"].clone())
            .collect();
        assert_eq!(consents.len(), 1, "{file}");
        entries.retain(|e| e["resource"]["resourceType"] != "Consent");
        for e in entries.iter_mut() {
            if e["resource"]["resourceType"] == "ServiceRequest"
                && let Some(info) = e["resource"]["supportingInfo"].as_array_mut()
            {
                info.retain(|r| !consents.contains(&r["reference"]));
            }
        }
        let bytes = bundle.to_string().into_bytes();
        let processed = process(&engine, &bytes);
        assert_eq!(
            referral(&processed).plan_agreed_with_client,
            Some(true),
            "{file}: {:?}",
            codes(&processed)
        );
        assert_eq!(processed.verdict, Verdict::Accepted, "{file}");
    }
}

// ---------------------------------------------------------------------------------------------
// (c) Non-disclosure on every outbound path
// ---------------------------------------------------------------------------------------------

/// What the turvakielto example's patient must never leak.
const WITHHELD: &[&str] = &[
    "Satakunnankatu",
    "33210",
    "+358457654321",
    "Tampere",
    MUNICIPALITY_EXT,
];

fn outputs(engine: &Engine, bytes: &[u8], reply_to: Option<&str>) -> (Processed, Vec<NewOutbound>) {
    let processed = process(engine, bytes);
    let outcome = engine.outcome(&processed, "fi").to_json();
    let origin = Origin {
        gateway_id: "0190e000-0000-7000-8000-0000000000c1",
        message_id: Some("turvakielto-1"),
        correlation_id: Some("corr-1"),
        reply_to,
        content_type: Some("application/fhir+json"),
        body: bytes,
    };
    let mut cfg = Config::default().amqp;
    cfg.publish_canonical = true;
    // As `serve` does: the unredacted referral text it stores is offered for reuse.
    let stored = processed.referral_json();
    let planned = forward::plan(
        &origin,
        &processed,
        &outcome,
        stored.as_deref(),
        &cfg,
        engine.mappings(),
    );
    (processed, planned)
}

fn kinds(planned: &[NewOutbound]) -> Vec<&str> {
    planned.iter().map(|o| o.kind.as_str()).collect()
}

fn body_text(out: &NewOutbound) -> String {
    String::from_utf8_lossy(&out.body).into_owned()
}

fn assert_nothing_withheld_leaks(planned: &[NewOutbound]) {
    for out in planned {
        let body = body_text(out);
        for secret in WITHHELD {
            assert!(
                !body.contains(secret),
                "{} body leaks {secret:?}: {body}",
                out.kind
            );
            assert!(
                !out.headers.contains(secret),
                "{} headers leak {secret:?}",
                out.kind
            );
            assert!(
                !out.routing_key.contains(secret),
                "{} routing key leaks {secret:?}",
                out.kind
            );
        }
    }
}

fn output<'a>(planned: &'a [NewOutbound], kind: &str) -> &'a NewOutbound {
    planned
        .iter()
        .find(|o| o.kind == kind)
        .unwrap_or_else(|| panic!("no {kind} output in {:?}", kinds(planned)))
}

#[test]
fn turvakielto_example_withholds_address_and_contact_from_every_output() {
    let engine = engine();
    let bytes = read("examples/fi-turvakielto-accepted.json");
    // The input itself carries everything that must be withheld.
    let input = String::from_utf8_lossy(&bytes).into_owned();
    for secret in WITHHELD {
        assert!(
            input.contains(secret),
            "the example must contain {secret:?}"
        );
    }
    let (processed, planned) = outputs(&engine, &bytes, Some("hospital.replies"));
    assert_eq!(processed.verdict, Verdict::Accepted);
    assert_eq!(codes(&processed), ["GW-ND-01"]);
    assert_eq!(
        kinds(&planned),
        ["provider", "provider-canonical", "insurer", "reply"]
    );
    assert_nothing_withheld_leaks(&planned);

    // What the provider still needs is there: the HETU, the name and the label itself.
    let provider = body_text(output(&planned, "provider"));
    assert!(provider.contains("230795-3188"), "{provider}");
    assert!(provider.contains("Nieminen"), "{provider}");
    assert!(provider.contains("TURVAKIELTO"), "{provider}");
    let insurer = body_text(output(&planned, "insurer"));
    assert!(insurer.contains("230795-3188"), "{insurer}");

    // The canonical referral says why the address is missing.
    let canonical: Value =
        serde_json::from_slice(&output(&planned, "provider-canonical").body).unwrap_or(Value::Null);
    assert_eq!(canonical["patient"]["non_disclosure"], true);
    assert_eq!(canonical["patient"]["address"], Value::Null);
    assert_eq!(canonical["patient"]["ids"][0]["value"], "230795-3188");

    // No region is derived from the postal code either.
    assert_eq!(
        output(&planned, "provider").routing_key,
        "unassigned.fi.x.fhir"
    );
}

/// `serve` hands `plan` the referral text it stores; without non-disclosure the canonical
/// output is that text, byte for byte what `plan` writes when given none.
#[test]
fn canonical_output_reuses_the_stored_referral_text() {
    let engine = engine();
    let bytes = read("examples/de-first-prescription-message.json");
    let processed = process(&engine, &bytes);
    assert_eq!(processed.verdict, Verdict::Accepted);
    let outcome = engine.outcome(&processed, "de").to_json();
    let origin = Origin {
        gateway_id: "0190e000-0000-7000-8000-0000000000c2",
        body: &bytes,
        ..Origin::default()
    };
    let mut cfg = Config::default().amqp;
    cfg.publish_canonical = true;
    let stored = processed.referral_json().unwrap_or_default();
    assert!(stored.contains("\"jurisdiction\":\"DE\""), "{stored}");
    let plan = |referral_json| {
        forward::plan(
            &origin,
            &processed,
            &outcome,
            referral_json,
            &cfg,
            engine.mappings(),
        )
    };
    let reused = plan(Some(stored.as_str()));
    let written = plan(None);
    assert_eq!(
        output(&reused, "provider-canonical").body,
        stored.as_bytes()
    );
    assert_eq!(
        output(&reused, "provider-canonical").body,
        output(&written, "provider-canonical").body
    );
    // A text that is not the referral's shows it is reused, not written again.
    let other = plan(Some("{\"stand-in\":true}"));
    assert_eq!(
        output(&other, "provider-canonical").body,
        b"{\"stand-in\":true}"
    );
}

#[test]
fn turvakielto_patient_resource_is_forwarded_without_withheld_elements() {
    let engine = engine();
    let bytes = read("examples/fi-turvakielto-accepted.json");
    let (_, planned) = outputs(&engine, &bytes, None);
    for kind in ["provider", "insurer"] {
        let bundle: Value =
            serde_json::from_slice(&output(&planned, kind).body).unwrap_or(Value::Null);
        let patients: Vec<&Value> = bundle["entry"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| &e["resource"])
            .filter(|r| r["resourceType"] == "Patient")
            .collect();
        assert_eq!(patients.len(), 1, "{kind}");
        let patient = patients[0];
        for element in ["address", "telecom", "contact", "photo", "text"] {
            assert!(patient.get(element).is_none(), "{kind}: Patient.{element}");
        }
        let extensions = patient["extension"].as_array().cloned().unwrap_or_default();
        assert!(
            extensions.iter().all(|e| e["url"] != MUNICIPALITY_EXT),
            "{kind}: municipality extension"
        );
        assert_eq!(patient["identifier"][0]["value"], "230795-3188", "{kind}");
        assert_eq!(
            patient["meta"]["security"][0]["code"], "TURVAKIELTO",
            "{kind}"
        );
    }
}

#[test]
fn rejected_turvakielto_referral_leaks_nothing_either() {
    let engine = engine();
    let mut bundle: Value = serde_json::from_slice(&read("examples/fi-turvakielto-accepted.json"))
        .unwrap_or(Value::Null);
    // Without its service-needs assessment the referral is rejected (FI-AS-01).
    if let Some(entries) = bundle["entry"].as_array_mut() {
        entries.retain(|e| e["resource"]["resourceType"] != "Observation");
    }
    let bytes = bundle.to_string().into_bytes();
    let (processed, planned) = outputs(&engine, &bytes, Some("hospital.replies"));
    assert_eq!(processed.verdict, Verdict::Rejected);
    assert!(codes(&processed).contains(&"FI-AS-01"));
    assert_eq!(kinds(&planned), ["rejected", "reply"]);
    assert_nothing_withheld_leaks(&planned);
}

/// The same example without the label forwards the address: the assertions above would see a
/// leak.
#[test]
fn without_a_label_the_address_is_forwarded() {
    let engine = engine();
    let bytes = read("examples/fi-social-rehabilitation-accepted.json");
    let (processed, planned) = outputs(&engine, &bytes, None);
    assert_eq!(processed.verdict, Verdict::Accepted);
    assert!(!codes(&processed).contains(&"GW-ND-01"));
    let provider = body_text(output(&planned, "provider"));
    assert!(provider.contains("Hämeenkatu 21 B 14"));
    assert!(provider.contains(MUNICIPALITY_EXT));
    assert_eq!(
        output(&planned, "provider").routing_key,
        "unassigned.fi.3.fhir"
    );
}

// ---------------------------------------------------------------------------------------------
// Claims per country (mappings/*/parameters.json `claim`)
// ---------------------------------------------------------------------------------------------

fn claim_of(engine: &Engine, file: &str) -> Value {
    let bytes = read(file);
    let (processed, planned) = outputs(engine, &bytes, None);
    assert_eq!(processed.verdict, Verdict::Accepted, "{file}");
    let bundle: Value =
        serde_json::from_slice(&output(&planned, "insurer").body).unwrap_or(Value::Null);
    bundle["entry"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| e["resource"].clone())
        .find(|r| r["resourceType"] == "Claim")
        .unwrap_or_else(|| panic!("{file}: no Claim"))
}

#[test]
fn claims_carry_the_funding_note_of_their_country() {
    let engine = engine();
    for (file, jurisdiction) in [
        (
            "examples/nl-clinical-sociotherapy-accepted.json",
            Jurisdiction::Nl,
        ),
        (
            "examples/fi-social-rehabilitation-accepted.json",
            Jurisdiction::Fi,
        ),
    ] {
        let claim = claim_of(&engine, file);
        let note = engine
            .mappings()
            .parameters(jurisdiction)
            .map(|p| p["claim"]["note"].clone())
            .unwrap_or(Value::Null);
        assert_eq!(claim["extension"][0]["valueString"], note, "{file}");
        assert_eq!(claim["use"], "preauthorization", "{file}");
    }
    let nl = claim_of(&engine, "examples/nl-clinical-sociotherapy-accepted.json");
    assert_eq!(nl["insurer"]["identifier"]["system"], UZOVI);
    assert_eq!(nl["insurer"]["identifier"]["value"], "3311");
    let fi = claim_of(&engine, "examples/fi-social-rehabilitation-accepted.json");
    assert_eq!(
        fi["insurer"]["identifier"]["value"],
        "urn:oid:1.2.246.10.3221308.10.0"
    );
    assert_eq!(
        fi["item"][0]["productOrService"]["coding"][0]["code"],
        "social-rehabilitation"
    );
}

/// `mappings/nl/parameters.json` says the Dutch Claim asks for stay days (`verblijfsdag`,
/// quantity `days`); `ClaimProduct` documents `days` as "stay days over the requested period".
#[test]
fn dutch_claim_asks_for_stay_days() {
    let engine = engine();
    let claim = claim_of(&engine, "examples/nl-clinical-sociotherapy-accepted.json");
    let coding = &claim["item"][0]["productOrService"]["coding"][0];
    assert_eq!(
        coding["system"],
        "https://sociogate.org/fhir/CodeSystem/nl-zorgprestatie"
    );
    assert_eq!(coding["code"], "verblijfsdag");
    // 2026-11-16 .. 2027-02-12, both ends inclusive.
    assert_eq!(claim["item"][0]["quantity"]["value"], 89);
}

// ---------------------------------------------------------------------------------------------
// (d) Outcomes in Dutch and Finnish
// ---------------------------------------------------------------------------------------------

fn outcome_codes_and_texts(outcome: &Value) -> (Vec<String>, Vec<String>) {
    let issues = outcome["issue"].as_array().cloned().unwrap_or_default();
    let codes = issues
        .iter()
        .map(|i| {
            i["details"]["coding"][0]["code"]
                .as_str()
                .unwrap_or("")
                .to_owned()
        })
        .collect();
    let texts = issues
        .iter()
        .map(|i| i["details"]["text"].as_str().unwrap_or("").to_owned())
        .collect();
    (codes, texts)
}

#[test]
fn rejected_dutch_example_answers_in_dutch_and_finnish_with_the_same_codes() {
    let engine = engine();
    for file in [
        "examples/nl-rejected-no-consent.json",
        "examples/nl-rejected-sociotherapist-responsible.json",
        "examples/fi-rejected-no-needs-assessment.json",
    ] {
        let processed = process(&engine, &read(file));
        assert_eq!(processed.verdict, Verdict::Rejected, "{file}");
        let en = engine.outcome(&processed, "en").to_json();
        let (en_codes, en_texts) = outcome_codes_and_texts(&en);
        assert!(!en_codes.is_empty());
        for lang in ["nl", "fi"] {
            let outcome = engine.outcome(&processed, lang).to_json();
            assert_eq!(outcome["language"], lang);
            let (codes, texts) = outcome_codes_and_texts(&outcome);
            assert_eq!(codes, en_codes, "{file} in {lang}");
            for (text, english) in texts.iter().zip(&en_texts) {
                assert!(!text.is_empty(), "{file} in {lang}");
                assert_ne!(text, english, "{file} in {lang}");
            }
        }
    }
    let processed = process(&engine, &read("examples/nl-rejected-no-consent.json"));
    let nl = engine.outcome(&processed, "nl").to_json();
    let (_, texts) = outcome_codes_and_texts(&nl);
    assert_eq!(
        texts,
        [
            "Het plan moet met de cliënt zijn overeengekomen (art. 7:450 BW): een actieve Consent of de patiënt als CarePlan-contributor is vereist"
        ]
    );
}

#[test]
fn unknown_language_falls_back_to_english() {
    let engine = engine();
    let processed = process(&engine, &read("examples/nl-rejected-no-consent.json"));
    let en = outcome_codes_and_texts(&engine.outcome(&processed, "en").to_json());
    let sv = outcome_codes_and_texts(&engine.outcome(&processed, "sv").to_json());
    assert_eq!(sv, en);
}

#[test]
fn every_rule_of_the_catalogue_has_a_dutch_and_a_finnish_message() {
    let engine = engine();
    assert!(LANGUAGES.contains(&"nl") && LANGUAGES.contains(&"fi"));
    let mut missing = Vec::new();
    let mut count = 0;
    for rule in engine.mappings().rules().iter() {
        count += 1;
        for lang in LANGUAGES {
            let text = rule.message.get(*lang).map(|m| m.trim());
            if text.is_none_or(str::is_empty) {
                missing.push(format!("{} lacks {lang}", rule.code));
            }
        }
        let en = rule.message.get("en");
        for lang in ["nl", "fi"] {
            if rule.message.get(lang) == en {
                missing.push(format!("{} has an untranslated {lang} message", rule.code));
            }
        }
    }
    assert!(count > 80, "the catalogue holds {count} rules");
    assert!(missing.is_empty(), "{missing:#?}");
}

#[test]
fn dutch_and_finnish_rules_are_all_in_the_catalogue() {
    let engine = engine();
    for code in sociogate::check::nl::RULES
        .iter()
        .chain(sociogate::check::fi::RULES)
    {
        assert!(engine.mappings().rules().get(code).is_some(), "{code}");
    }
}

/// Every example referral gives the same verdict and rule codes as FHIR XML as it does as JSON
/// (the XML twin is written by the gateway's own FHIR XML encoder).
#[test]
fn every_example_gives_the_same_verdict_as_fhir_xml() {
    let engine = common::engine();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    names.sort();
    let mut compared = 0;
    for path in names
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
    {
        let json = std::fs::read(path).unwrap_or_default();
        let value: serde_json::Value = serde_json::from_slice(&json).unwrap_or_default();
        let xml = sociogate::encode::fhir_xml::to_fhir_xml(&value)
            .unwrap_or_else(|e| panic!("{}: {e:?}", path.display()));
        let from_json = common::process(&engine, &json);
        let from_xml = common::process(&engine, xml.as_bytes());
        let codes = |p: &sociogate::pipeline::Processed| {
            let mut c: Vec<String> = p.issues.iter().map(|i| i.code.clone()).collect();
            c.sort();
            c
        };
        assert_eq!(from_xml.verdict, from_json.verdict, "{}", path.display());
        assert_eq!(codes(&from_xml), codes(&from_json), "{}", path.display());
        compared += 1;
    }
    assert!(compared >= 24, "compared {compared} examples");
}

/// A subscriber listed in `amqp.xml_subscribers` gets FHIR XML; everyone else keeps JSON.
#[test]
fn xml_subscribers_get_fhir_xml_and_others_json() {
    let engine = common::engine();
    let body = common::read("examples/de-first-prescription-message.json");
    let processed = common::process(&engine, &body);
    let outcome = engine.outcome(&processed, "en").to_json();
    let mut cfg = sociogate::config::Config::default().amqp;
    cfg.xml_subscribers = vec!["payer.109519005".to_owned()];
    let origin = sociogate::forward::Origin {
        gateway_id: "g-1",
        body: &body,
        ..Default::default()
    };
    let out =
        sociogate::forward::plan(&origin, &processed, &outcome, None, &cfg, engine.mappings());
    let insurer = out
        .iter()
        .find(|o| o.kind == "insurer")
        .unwrap_or_else(|| panic!("no insurer output"));
    assert_eq!(insurer.content_type, "application/fhir+xml");
    let xml = String::from_utf8_lossy(&insurer.body);
    assert!(
        xml.contains("<Bundle xmlns=\"http://hl7.org/fhir\""),
        "{}",
        &xml[..xml.len().min(200)]
    );
    assert!(xml.contains("<use value=\"preauthorization\"/>"));
    // The XML decodes back through the gateway's own XML intake.
    let decoded = sociogate::decode::decode(
        xml.as_bytes(),
        Some("application/fhir+xml"),
        &sociogate::decode::Limits::default(),
    );
    assert!(decoded.is_ok(), "{:?}", decoded.err());
    let provider = out
        .iter()
        .find(|o| o.kind == "provider")
        .unwrap_or_else(|| panic!("no provider output"));
    assert_eq!(provider.content_type, "application/fhir+json");
}
