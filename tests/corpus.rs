//! Third-party material (`../shared/corpus`): every file ends in a verdict without a panic, the
//! validator's fatal cases are unreadable, and German identifiers are extracted.

mod common;

use common::{all_files, codes, corpus, engine, process, verdict};
use sociogate::check::Verdict;
use sociogate::model::IdentifierKind;

#[test]
fn every_corpus_file_gets_a_verdict_with_an_outcome() {
    let engine = engine();
    let files = all_files(&corpus());
    assert!(
        files.len() > 1000,
        "corpus looks incomplete: {} files",
        files.len()
    );
    let mut counts = [0usize; 3];
    for path in &files {
        let bytes = std::fs::read(path).unwrap_or_default();
        let processed = process(&engine, &bytes);
        let outcome = engine.outcome(&processed, "en").to_json();
        assert_eq!(
            outcome["resourceType"],
            "OperationOutcome",
            "{}",
            path.display()
        );
        let issues = outcome["issue"].as_array().map_or(0, Vec::len);
        assert!(issues > 0, "{} has an empty outcome", path.display());
        let slot = match processed.verdict {
            Verdict::Accepted => 0,
            Verdict::Rejected => 1,
            Verdict::Unreadable => 2,
        };
        counts[slot] += 1;
        if processed.verdict == Verdict::Unreadable {
            assert!(processed.referral.is_none());
        }
    }
    // None of the corpus is a sociotherapy referral, so nothing is accepted.
    assert_eq!(counts[0], 0, "accepted/rejected/unreadable = {counts:?}");
    assert!(
        counts[1] > 300,
        "most JSON files decode and are rejected: {counts:?}"
    );
}

#[test]
fn validator_cases_with_a_fatal_outcome_are_unreadable() {
    let engine = engine();
    let dir = corpus().join("fhir-test-cases-validator");
    let summary = std::fs::read_to_string(dir.join("EXPECTED_SUMMARY.tsv")).unwrap_or_default();
    let mut fatal_cases = 0;
    for line in summary.lines().skip(1) {
        let cols: Vec<&str> = line.split('\t').collect();
        if cols.len() < 5 || cols[4].parse::<u32>().unwrap_or(0) == 0 {
            continue;
        }
        fatal_cases += 1;
        let bytes = std::fs::read(dir.join(cols[1])).unwrap_or_default();
        let processed = process(&engine, &bytes);
        assert_eq!(
            verdict(&processed),
            "unreadable",
            "{} ({:?})",
            cols[1],
            codes(&processed)
        );
    }
    assert!(
        fatal_cases >= 14,
        "expected the 14 fatal cases, found {fatal_cases}"
    );
}

#[test]
fn broken_json_cases_name_line_and_column() {
    let engine = engine();
    let dir = corpus().join("fhir-test-cases-validator");
    for name in [
        "bad-json-close-1.json",
        "bad-json-close-2.json",
        "bad-json-close-3.json",
    ] {
        let processed = process(&engine, &std::fs::read(dir.join(name)).unwrap_or_default());
        assert_eq!(codes(&processed), ["GW-DEC-01"], "{name}");
        let text = engine.outcome(&processed, "en").issue[0]
            .details
            .text
            .clone();
        assert!(text.contains("line "), "{name}: {text}");
    }
}

#[test]
fn gematik_message_bundles_yield_kvnr_and_lanr_and_are_not_sociotherapy() {
    let engine = engine();
    let dir = corpus().join("gematik-erp-servicerequest/fsh-generated/resources");
    let mut lanr_seen = 0;
    for name in [
        "Bundle-UC1-1-Prescription-Request-To-Prescriber.json",
        "Bundle-UC3-2-Fullfilled-Prescription-Request.json",
        "Bundle-UC4-2-Prescription-Request-To-Pharmacy.json",
    ] {
        let processed = process(&engine, &std::fs::read(dir.join(name)).unwrap_or_default());
        assert_eq!(verdict(&processed), "rejected", "{name}");
        assert!(
            codes(&processed).contains(&"GW-MAP-03"),
            "{name}: {:?}",
            codes(&processed)
        );
        let message = engine
            .outcome(&processed, "en")
            .issue
            .iter()
            .map(|i| i.details.text.clone())
            .collect::<Vec<_>>()
            .join(" ");
        assert!(message.contains("not sociotherapy"), "{name}: {message}");
        let referral = processed.referral.unwrap_or_else(|| panic!("{name} maps"));
        let patient = referral.patient.unwrap_or_default();
        let kvnr: Vec<&str> = patient
            .ids
            .iter()
            .filter(|i| i.kind == IdentifierKind::Kvid10)
            .map(|i| i.value.as_str())
            .collect();
        assert_eq!(kvnr, ["X234567890"], "{name}");
        assert_eq!(
            referral.jurisdiction_basis.as_deref(),
            Some("identifier http://fhir.de/sid/gkv/kvid-10")
        );
        let lanr = referral
            .requested_provider
            .iter()
            .flat_map(|p| p.ids.iter())
            .chain(referral.prescriber.iter().flat_map(|p| p.person_ids.iter()))
            .find(|i| i.kind == IdentifierKind::Lanr);
        if let Some(lanr) = lanr {
            assert_eq!(lanr.value, "838382202");
            assert_eq!(
                lanr.system.as_deref(),
                Some("https://fhir.kbv.de/NamingSystem/KBV_NS_Base_ANR")
            );
            lanr_seen += 1;
        }
    }
    assert_eq!(
        lanr_seen, 2,
        "UC3-2 and UC4-2 address a practitioner by LANR"
    );
}

#[test]
fn isik_coverage_and_patient_identifiers_are_normalised() {
    // The gematik message bundles carry no IK; the ISiK examples do.
    let dir = corpus().join("gematik-isik-basismodul/Resources/fsh-generated/resources");
    let bytes = std::fs::read(dir.join("Coverage-CoverageGesetzlich.json")).unwrap_or_default();
    let value: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
    let iks: Vec<String> = value["payor"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["identifier"]["value"].as_str().map(str::to_owned))
        .collect();
    assert!(
        !iks.is_empty(),
        "the ISiK statutory coverage names its payer by IK"
    );
    // Wrap the coverage in a minimal sociotherapy referral so the mapper reads it.
    let bundle = serde_json::json!({
        "resourceType": "Bundle", "type": "collection",
        "entry": [
            {"fullUrl": "urn:uuid:00000000-0000-4000-8000-000000000001", "resource": {
                "resourceType": "ServiceRequest", "status": "active", "intent": "order",
                "code": {"coding": [{"system": "https://sociogate.org/fhir/CodeSystem/service", "code": "sociotherapy"}]},
                "subject": {"reference": "Patient/DorisQuelle"},
                "insurance": [{"reference": "Coverage/CoverageGesetzlich"}]}},
            {"fullUrl": "http://example.org/fhir/Coverage/CoverageGesetzlich", "resource": value},
            {"fullUrl": "http://example.org/fhir/Patient/DorisQuelle", "resource": {"resourceType": "Patient", "id": "DorisQuelle",
                "identifier": [{"system": "http://fhir.de/NamingSystem/gkv/kvid-10", "value": "X110411675"}]}}
        ]
    });
    let engine = engine();
    let processed = process(&engine, bundle.to_string().as_bytes());
    let found = codes(&processed).join(",");
    let referral = processed
        .referral
        .unwrap_or_else(|| panic!("maps: {found}"));
    let coverage = referral.coverage.unwrap_or_default();
    let payer_iks: Vec<&str> = coverage
        .payer_ids
        .iter()
        .filter(|i| i.kind == IdentifierKind::Iknr)
        .map(|i| i.value.as_str())
        .collect();
    assert_eq!(
        payer_iks,
        iks.iter().map(String::as_str).collect::<Vec<_>>()
    );
    let patient = referral.patient.unwrap_or_default();
    assert_eq!(
        patient.ids[0].system.as_deref(),
        Some("http://fhir.de/sid/gkv/kvid-10"),
        "old spelling normalised"
    );
}

/// The Bundle with the bytes of its DocumentReference and Binary attachments emptied.
fn without_attachment_bytes(
    resource: fhir_sdk::r4b::resources::Resource,
) -> fhir_sdk::r4b::resources::Resource {
    use fhir_sdk::r4b::resources::Resource;
    let Resource::Bundle(mut bundle) = resource else {
        return resource;
    };
    for entry in bundle.entry.iter_mut().flatten() {
        match &mut entry.resource {
            Some(Resource::DocumentReference(doc)) => {
                for content in doc.content.iter_mut().flatten() {
                    if let Some(data) = content.attachment.data.as_mut() {
                        data.0.clear();
                    }
                }
            }
            Some(Resource::Binary(binary)) => {
                if let Some(data) = binary.data.as_mut() {
                    data.0.clear();
                }
            }
            _ => {}
        }
    }
    Resource::Bundle(bundle)
}

#[test]
fn every_corpus_bundle_decodes_alike_by_the_bundle_fast_path_and_by_the_resource_enum() {
    use fhir_sdk::r4b::resources::Resource;
    let files = all_files(&corpus());
    let limits = sociogate::decode::Limits::default();
    let (mut bundles, mut both_failed) = (0, 0);
    for path in files
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
    {
        let bytes = std::fs::read(path).unwrap_or_default();
        let bytes = sociogate::decode::strip_bom(&bytes);
        let Ok(shape) = sociogate::decode::fhir_json::scan(bytes, 64) else {
            continue;
        };
        if shape.top_level_type != Some(b"Bundle".as_slice()) {
            continue;
        }
        bundles += 1;
        // Large attachments are checked in place and not kept as bytes by the fast path; every
        // other value must be equal.
        let fast = sociogate::decode::fhir_json::decode(bytes, &limits)
            .ok()
            .map(without_attachment_bytes);
        let by_enum = serde_json::from_slice::<Resource>(bytes)
            .ok()
            .map(without_attachment_bytes);
        if fast.is_none() {
            both_failed += 1;
        }
        assert_eq!(fast, by_enum, "{}", path.display());
    }
    assert!(bundles > 50, "the corpus has many Bundles: {bundles}");
    assert!(
        both_failed < bundles,
        "{both_failed} of {bundles} failed on both paths"
    );
}

/// FHIR XML Bundles are read entry by entry too (from the JSON shape decode builds): the
/// typed result must equal what the `Resource` enum makes of the same shape, the shape must
/// come back unchanged, and forwarding must take the same entries (fullUrl, type, text) from
/// the entries written alone as from the whole Bundle written and read back.
#[test]
fn every_corpus_xml_bundle_decodes_and_forwards_alike_by_the_fast_path_and_by_the_enum() {
    use fhir_sdk::r4b::resources::Resource;
    use serde::Deserialize as _;
    use sociogate::decode::fhir_xml;
    use sociogate::forward::fhir::{forwarded_entries, written_shape};
    let limits = sociogate::decode::Limits::default();
    let wide = sociogate::decode::Limits {
        max_bytes: usize::MAX,
        max_depth: 256,
    };
    let (mut bundles, mut decoded) = (0, 0);
    for path in all_files(&corpus())
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "xml"))
    {
        let bytes = std::fs::read(path).unwrap_or_default();
        let Ok(shape) = fhir_xml::to_json_value(&bytes, &limits) else {
            continue;
        };
        if shape["resourceType"] != "Bundle" {
            continue;
        }
        bundles += 1;
        // What decode did before the fast path: the enum over the shape, else the JSON path
        // over the shape written out.
        // Large attachments are checked in place and not kept as bytes by the fast path; every
        // other value must be equal.
        let by_enum = Resource::deserialize(&shape)
            .ok()
            .or_else(|| {
                let written = serde_json::to_vec(&shape).unwrap_or_default();
                sociogate::decode::fhir_json::decode(&written, &wide).ok()
            })
            .map(without_attachment_bytes);
        let fast = fhir_xml::decode(&bytes, &limits)
            .ok()
            .map(|(resource, kept)| (without_attachment_bytes(resource), kept));
        if let Some((_, kept)) = &fast {
            decoded += 1;
            assert_eq!(kept, &shape, "{}: the shape changed", path.display());
        }
        assert_eq!(
            fast.map(|(resource, _)| resource),
            by_enum,
            "{}",
            path.display()
        );

        let Some((written, spans)) = written_shape(&shape) else {
            panic!("{}: the shape cannot be written", path.display());
        };
        let whole = serde_json::to_vec(&shape).unwrap_or_default();
        assert_eq!(
            forwarded_entries("gw", &written, None, spans.as_deref()),
            forwarded_entries("gw", &whole, None, None),
            "{}",
            path.display()
        );
    }
    assert!(bundles > 20, "the corpus has many XML Bundles: {bundles}");
    assert!(decoded > bundles / 2, "{decoded} of {bundles} decoded");
}

/// Forwarding copies a Bundle's resources from where decode found them; that must give the
/// same entries (fullUrl, type, text) as reading the body again, on every corpus Bundle, with
/// and without a byte order mark in front.
#[test]
fn forwarding_from_decodes_entry_spans_equals_reading_the_body_again() {
    use sociogate::decode::{Decoded, decode};
    use sociogate::forward::fhir::forwarded_entries;
    let limits = sociogate::decode::Limits::default();
    let mut compared = 0;
    for path in all_files(&corpus())
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
    {
        let plain = std::fs::read(path).unwrap_or_default();
        let mut with_bom = vec![0xEF, 0xBB, 0xBF];
        with_bom.extend_from_slice(sociogate::decode::strip_bom(&plain));
        for bytes in [plain.as_slice(), with_bom.as_slice()] {
            let Ok((_, Decoded::Fhir(_, Some(spans)))) = decode(bytes, None, &limits) else {
                continue;
            };
            let from_spans = forwarded_entries("gw", bytes, None, Some(&spans));
            let reread = forwarded_entries("gw", bytes, None, None);
            assert_eq!(from_spans, reread, "{}", path.display());
            compared += usize::from(!reread.is_empty());
        }
    }
    assert!(
        compared > 50,
        "compared {compared} Bundles with forwarded entries"
    );
}

#[test]
fn the_scan_finds_every_corpus_bundles_entry_resources_where_serde_does() {
    use sociogate::decode::fhir_json::{entry_ranges_by_serde, scan};
    let (mut from_scan, mut left_to_serde) = (0, 0);
    for path in all_files(&corpus())
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
    {
        let bytes = std::fs::read(path).unwrap_or_default();
        let bytes = sociogate::decode::strip_bom(&bytes);
        let Ok(shape) = scan(bytes, 64) else {
            continue;
        };
        if shape.top_level_type != Some(b"Bundle".as_slice()) {
            continue;
        }
        match shape.entries {
            Some(entries) => {
                // Where the scan answers, serde reads the same ranges (or fails on the whole
                // payload, which the general path then explains).
                if let Some(by_serde) = entry_ranges_by_serde(bytes) {
                    assert_eq!(entries, by_serde, "{}", path.display());
                    from_scan += 1;
                }
            }
            None => left_to_serde += 1,
        }
    }
    assert!(
        from_scan > 50 && left_to_serde * 10 < from_scan,
        "the scan found the entries of {from_scan} Bundles, left {left_to_serde} to serde"
    );
}
