//! Deterministic workload: realistic German, Dutch and Finnish referrals in three sizes, valid
//! and invalid in a configurable mix, distinct patients or a shared pool, all from one seed.
//!
//! Each jurisdiction's messages are made from its accepted examples in `examples/` (FHIR JSON
//! and CDA), with a patient identifier of their own that passes its check (KVNR, BSN, HETU).

use base64::Engine as _;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{Value, json};

use crate::model::Jurisdiction;

/// Message sizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Size {
    /// The referral without narrative (a few KB).
    Plain,
    /// With narrative and extra resources (about 50 KB).
    Medium,
    /// With an attached PDF (about 500 KB).
    Large,
}

impl Size {
    /// Name for tables.
    pub fn name(self) -> &'static str {
        match self {
            Size::Plain => "plain",
            Size::Medium => "50k",
            Size::Large => "500k",
        }
    }
}

/// What to generate.
#[derive(Debug, Clone, Copy)]
pub struct Spec {
    /// Seed of the generator.
    pub seed: u64,
    /// Share of invalid referrals (GAF above the limit: rejected), 0.0 to 1.0.
    pub invalid_share: f64,
    /// Patients to draw from; 0 = every referral has its own patient.
    pub shared_patients: u32,
    /// Size class.
    pub size: Size,
    /// Whose referrals: German (§ 37a SGB V), Dutch (clinical sociotherapie) or Finnish
    /// (sosiaalinen kuntoutus).
    pub jurisdiction: Jurisdiction,
}

const TEMPLATE: &str = include_str!("../../examples/de-first-prescription-message.json");
const NL_TEMPLATE: &str = include_str!("../../examples/nl-clinical-sociotherapy-accepted.json");
/// The Dutch invalid referral: no agreement with the client on the plan (NL-CN-01).
const NL_REJECTED: &str = include_str!("../../examples/nl-rejected-no-consent.json");
const FI_TEMPLATE: &str = include_str!("../../examples/fi-social-rehabilitation-accepted.json");
/// The Finnish invalid referral: no service-needs assessment before the service (FI-AS-01).
const FI_REJECTED: &str = include_str!("../../examples/fi-rejected-no-needs-assessment.json");

const BSN_SYSTEM: &str = "http://fhir.nl/fhir/NamingSystem/bsn";
const HETU_SYSTEM: &str = "urn:oid:1.2.246.21";

/// Patient `n`'s identifier in `jurisdiction`: a KVNR, BSN or HETU that passes its check,
/// distinct for every `n` below ten million.
pub fn patient_id(jurisdiction: Jurisdiction, n: u64) -> String {
    match jurisdiction {
        Jurisdiction::De => kvnr(10_000_000 + n),
        Jurisdiction::Nl => bsn(n),
        Jurisdiction::Fi => hetu(n),
    }
}

/// A BSN for `n` that passes the 11-proef: eight digits from `n`, then the check digit that
/// the gateway's own check accepts (as [`kvnr`] does).
pub fn bsn(n: u64) -> String {
    let with_check = |body: u64| {
        (0..10)
            .map(|check| format!("{body:08}{check}"))
            .find(|c| crate::check::ids::bsn_valid(c))
    };
    let body = 20_000_000 + n % 10_000_000;
    // For a tenth of the bodies no check digit fits; a leading 3 instead of 2 changes the
    // weighted sum by 9, so one fits there, and no other n gives that body.
    with_check(body)
        .or_else(|| with_check(body + 10_000_000))
        .unwrap_or_else(|| format!("{body:08}0"))
}

/// A HETU for `n`: a birth date from 1950 to 1989, an individual number from 002 to 899 (not a
/// temporary one) and the check character that the gateway's own check accepts.
pub fn hetu(n: u64) -> String {
    let day = 1 + n % 28;
    let month = 1 + (n / 28) % 12;
    let year = 50 + (n / 336) % 40;
    let individual = 2 + (n / 13_440) % 898;
    let stem = format!("{day:02}{month:02}{year:02}-{individual:03}");
    ('0'..='9')
        .chain('A'..='Z')
        .map(|check| format!("{stem}{check}"))
        .find(|c| crate::check::ids::hetu_parse(c).is_some())
        .unwrap_or_else(|| format!("{stem}0"))
}

/// The birth date a HETU made by [`hetu`] encodes, as FHIR writes it (`19YY-MM-DD`).
fn hetu_birth_date(hetu: &str) -> String {
    format!("19{}-{}-{}", &hetu[4..6], &hetu[2..4], &hetu[0..2])
}

/// A valid KVNR for `n`.
pub fn kvnr(n: u64) -> String {
    let letter = (b'A' + (n % 26) as u8) as char;
    let body = format!("{:08}", n % 100_000_000);
    (0..10)
        .map(|check| format!("{letter}{body}{check}"))
        .find(|c| crate::check::ids::kvnr_valid(c))
        .unwrap_or_else(|| format!("{letter}{body}0"))
}

/// Removes every resource's narrative (`text` holding a `div`). A CodeableConcept's `text` is
/// data (a Finnish plan's goals are written there) and stays.
fn strip_narrative(value: &mut Value) {
    match value {
        Value::Object(obj) => {
            if obj.get("text").is_some_and(|t| t.get("div").is_some()) {
                obj.remove("text");
            }
            obj.values_mut().for_each(strip_narrative);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_narrative),
        _ => {}
    }
}

fn words(rng: &mut ChaCha8Rng, bytes: usize) -> String {
    const WORDS: &[&str] = &[
        "Patient",
        "berichtet",
        "über",
        "Antriebsminderung",
        "und",
        "sozialen",
        "Rückzug",
        "Termine",
        "werden",
        "ohne",
        "Begleitung",
        "nicht",
        "wahrgenommen",
        "Ziel",
        "ist",
        "die",
        "Anbindung",
        "an",
        "die",
        "Institutsambulanz",
        "Tagesstruktur",
        "Wohnung",
    ];
    let mut out = String::with_capacity(bytes + 16);
    while out.len() < bytes {
        out.push_str(WORDS[rng.random_range(0..WORDS.len())]);
        out.push(' ');
    }
    out
}

/// Generates `n` referrals as compact FHIR JSON.
pub fn generate(spec: Spec, n: usize) -> Vec<Vec<u8>> {
    let mut rng = ChaCha8Rng::seed_from_u64(spec.seed);
    let parse = |text: &str| {
        let mut template: Value = serde_json::from_str(text).unwrap_or(Value::Null);
        strip_narrative(&mut template);
        template
    };
    let de = spec.jurisdiction == Jurisdiction::De;
    // Germany's invalid referrals are the accepted one with a GAF above the limit; the others'
    // are their rejected examples.
    let (template, rejected) = match spec.jurisdiction {
        Jurisdiction::De => (parse(TEMPLATE), None),
        Jurisdiction::Nl => (parse(NL_TEMPLATE), Some(parse(NL_REJECTED))),
        Jurisdiction::Fi => (parse(FI_TEMPLATE), Some(parse(FI_REJECTED))),
    };
    (0..n)
        .map(|i| {
            let patient = if spec.shared_patients > 0 {
                rng.random_range(0..u64::from(spec.shared_patients))
            } else {
                i as u64
            };
            let patient_id = patient_id(spec.jurisdiction, patient);
            let invalid = rng.random_bool(spec.invalid_share.clamp(0.0, 1.0));
            let mut bundle = match (&rejected, invalid) {
                (Some(rejected), true) => rejected.clone(),
                _ => template.clone(),
            };
            bundle["identifier"]["value"] = json!(format!("urn:uuid:{}", uuid::Uuid::from_u64_pair(spec.seed, i as u64)));
            for entry in bundle["entry"].as_array_mut().into_iter().flatten() {
                let resource = &mut entry["resource"];
                match resource["resourceType"].as_str() {
                    Some("Patient") => {
                        for id in resource["identifier"].as_array_mut().into_iter().flatten() {
                            let system = id["system"].as_str();
                            if de || system == Some(BSN_SYSTEM) || system == Some(HETU_SYSTEM) {
                                id["value"] = json!(patient_id);
                            }
                        }
                        if spec.jurisdiction == Jurisdiction::Fi {
                            resource["birthDate"] = json!(hetu_birth_date(&patient_id));
                        }
                    }
                    Some("Coverage") if de => resource["subscriberId"] = json!(patient_id),
                    Some("ServiceRequest") => {
                        if de {
                            // 10 units: a shared patient reaches the budget after 12 referrals.
                            resource["quantityQuantity"]["value"] = json!(10);
                        }
                        if spec.size != Size::Plain {
                            let text = words(&mut rng, 40_000);
                            resource["text"] = json!({
                                "status": "generated",
                                "div": format!("<div xmlns=\"http://www.w3.org/1999/xhtml\"><p>{text}</p></div>"),
                            });
                        }
                    }
                    Some("Observation") if invalid && de => resource["valueInteger"] = json!(55),
                    _ => {}
                }
            }
            if spec.size == Size::Large {
                let mut pdf = vec![0u8; 360_000];
                rng.fill(&mut pdf[..]);
                pdf[..8].copy_from_slice(b"%PDF-1.7");
                let data = base64::engine::general_purpose::STANDARD.encode(&pdf);
                if let Some(entries) = bundle["entry"].as_array_mut() {
                    entries.push(json!({
                        "fullUrl": format!("urn:uuid:{}", uuid::Uuid::from_u64_pair(spec.seed ^ 0xD0C, i as u64)),
                        "resource": {
                            "resourceType": "DocumentReference",
                            "status": "current",
                            "type": { "coding": [{ "system": "http://loinc.org", "code": "18842-5", "display": "Discharge summary" }] },
                            "content": [{ "attachment": { "contentType": "application/pdf", "data": data } }]
                        }
                    }));
                }
            }
            serde_json::to_vec(&ResourceTypeFirst(&bundle)).unwrap_or_default()
        })
        .collect()
}

/// Writes a JSON value with `resourceType` as each object's first member, as FHIR writers do
/// (`serde_json::Value` alone would sort it among the other keys).
struct ResourceTypeFirst<'a>(&'a Value);

impl serde::Serialize for ResourceTypeFirst<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{SerializeMap, SerializeSeq};
        match self.0 {
            Value::Object(obj) => {
                let mut map = serializer.serialize_map(Some(obj.len()))?;
                if let Some(rt) = obj.get("resourceType") {
                    map.serialize_entry("resourceType", rt)?;
                }
                for (k, v) in obj.iter().filter(|(k, _)| *k != "resourceType") {
                    map.serialize_entry(k, &ResourceTypeFirst(v))?;
                }
                map.end()
            }
            Value::Array(items) => {
                let mut seq = serializer.serialize_seq(Some(items.len()))?;
                for v in items {
                    seq.serialize_element(&ResourceTypeFirst(v))?;
                }
                seq.end()
            }
            other => other.serialize(serializer),
        }
    }
}

/// The same messages as FHIR XML (the gateway's own encoder).
pub fn to_fhir_xml(messages: &[Vec<u8>]) -> Vec<Vec<u8>> {
    messages
        .iter()
        .filter_map(|m| serde_json::from_slice::<Value>(m).ok())
        .filter_map(|v| crate::encode::fhir_xml::to_fhir_xml(&v).ok())
        .map(String::into_bytes)
        .collect()
}

const CDA_TEMPLATE: &str = include_str!("../../examples/de-first-prescription.cda.xml");
const CDA_KVNR: &str = "extension=\"L204187362\"";
const CDA_DOCUMENT_ID: &str = "extension=\"CDA-SV-2026-0815\"";
const CDA_GAF: &str = "<value xsi:type=\"INT\" value=\"35\"/>";
const CDA_BODY_END: &str = "</structuredBody>";
const NL_CDA_TEMPLATE: &str = include_str!("../../examples/nl-clinical-sociotherapy.cda.xml");
const NL_CDA_BSN: &str = "<id root=\"2.16.840.1.113883.2.4.6.3\" extension=\"908301662\"/>";
const NL_CDA_DOCUMENT_ID: &str = "extension=\"CDA-VW-2026-004711\"";
const FI_CDA_TEMPLATE: &str = include_str!("../../examples/fi-social-rehabilitation.cda.xml");
const FI_CDA_HETU: &str = "<id root=\"1.2.246.21\" extension=\"140387-264D\"/>";
const FI_CDA_DOCUMENT_ID: &str = "extension=\"CDA-SK-2026-0418\"";
const FI_CDA_BIRTH_TIME: &str = "<birthTime value=\"19870314\"/>";

/// `id` with its last character changed: a BSN or HETU that fails its check (the Dutch and
/// Finnish invalid CDA referrals; NL-ID-01, FI-ID-01).
fn spoil_check(id: &str) -> String {
    let mut out = id.to_owned();
    let last = out.pop().map_or('0', |c| if c == '0' { '1' } else { '0' });
    out.push(last);
    out
}

/// Generates `n` referrals as CDA R2 documents (the twin of the JSON workload): the
/// jurisdiction's example CDA referral with its own patient identifier and document id; 50 KB
/// adds a narrative section, 500 KB a PDF as an `observationMedia` entry. Invalid German
/// documents carry a GAF above the limit (DE-DX-05), Dutch and Finnish ones a patient
/// identifier that fails its check.
pub fn generate_cda(spec: Spec, n: usize) -> Vec<Vec<u8>> {
    let mut rng = ChaCha8Rng::seed_from_u64(spec.seed);
    (0..n)
        .map(|i| {
            let patient = if spec.shared_patients > 0 {
                rng.random_range(0..u64::from(spec.shared_patients))
            } else {
                i as u64
            };
            let patient_id = patient_id(spec.jurisdiction, patient);
            let invalid = rng.random_bool(spec.invalid_share.clamp(0.0, 1.0));
            let document_id = format!("extension=\"{}\"", uuid::Uuid::from_u64_pair(spec.seed, i as u64));
            let mut doc = match spec.jurisdiction {
                Jurisdiction::De => {
                    let doc = CDA_TEMPLATE
                        .replace(CDA_KVNR, &format!("extension=\"{patient_id}\""))
                        .replace(CDA_DOCUMENT_ID, &document_id);
                    if invalid {
                        doc.replace(CDA_GAF, "<value xsi:type=\"INT\" value=\"55\"/>")
                    } else {
                        doc
                    }
                }
                Jurisdiction::Nl => {
                    let bsn = if invalid { spoil_check(&patient_id) } else { patient_id };
                    NL_CDA_TEMPLATE
                        .replace(
                            NL_CDA_BSN,
                            &format!("<id root=\"2.16.840.1.113883.2.4.6.3\" extension=\"{bsn}\"/>"),
                        )
                        .replace(NL_CDA_DOCUMENT_ID, &document_id)
                }
                Jurisdiction::Fi => {
                    let birth = hetu_birth_date(&patient_id).replace('-', "");
                    let hetu = if invalid { spoil_check(&patient_id) } else { patient_id };
                    FI_CDA_TEMPLATE
                        .replace(FI_CDA_HETU, &format!("<id root=\"1.2.246.21\" extension=\"{hetu}\"/>"))
                        .replace(FI_CDA_DOCUMENT_ID, &document_id)
                        .replace(FI_CDA_BIRTH_TIME, &format!("<birthTime value=\"{birth}\"/>"))
                }
            };
            let mut extra = String::new();
            if spec.size != Size::Plain {
                extra.push_str(&format!(
                    "<component><section><code code=\"8648-8\" codeSystem=\"2.16.840.1.113883.6.1\"/>\
                     <title>Verlauf</title><text><paragraph>{}</paragraph></text></section></component>",
                    words(&mut rng, 40_000)
                ));
            }
            if spec.size == Size::Large {
                let mut pdf = vec![0u8; 360_000];
                rng.fill(&mut pdf[..]);
                pdf[..8].copy_from_slice(b"%PDF-1.7");
                let data = base64::engine::general_purpose::STANDARD.encode(&pdf);
                extra.push_str(&format!(
                    "<component><section><code code=\"55107-7\" codeSystem=\"2.16.840.1.113883.6.1\"/>\
                     <title>Anlagen</title><text>Entlassbrief (PDF)</text><entry><observationMedia \
                     classCode=\"OBS\" moodCode=\"EVN\"><value mediaType=\"application/pdf\" \
                     representation=\"B64\">{data}</value></observationMedia></entry></section></component>"
                ));
            }
            if !extra.is_empty() {
                doc = doc.replacen(CDA_BODY_END, &format!("{extra}{CDA_BODY_END}"), 1);
            }
            doc.into_bytes()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_workload_and_sizes_differ() {
        let spec = Spec {
            seed: 7,
            invalid_share: 0.2,
            shared_patients: 0,
            size: Size::Plain,
            jurisdiction: Jurisdiction::De,
        };
        assert_eq!(generate(spec, 5), generate(spec, 5));
        let plain = generate(spec, 1)[0].len();
        let medium = generate(
            Spec {
                size: Size::Medium,
                ..spec
            },
            1,
        )[0]
        .len();
        let large = generate(
            Spec {
                size: Size::Large,
                ..spec
            },
            1,
        )[0]
        .len();
        assert!(plain < 12_000, "{plain}");
        assert!((40_000..70_000).contains(&medium), "{medium}");
        assert!((450_000..600_000).contains(&large), "{large}");
    }
}

/// Tests that run the workload through the engine.
#[cfg(test)]
pub(crate) mod engine_tests {
    use super::*;
    use crate::check::Verdict;
    use crate::check::ids::{bsn_valid, hetu_parse, kvnr_valid};
    use crate::config::AmqpConfig;
    use crate::decode::Limits;
    use crate::mappings::Mappings;
    use crate::pipeline::{Engine, Inbound};
    use crate::store::ledger::MemoryLedger;

    /// `doc` through `engine` on an empty ledger, as of `today`.
    fn process(engine: &Engine, doc: &[u8], today: time::Date) -> crate::pipeline::Processed {
        let inbound = Inbound {
            bytes: doc,
            content_type: None,
            message_id: None,
            jurisdiction: None,
        };
        match engine.process(inbound, &mut MemoryLedger::default(), today) {
            Ok(p) => p,
            Err(e) => panic!("{e}"),
        }
    }

    /// The engine with the project's mappings.
    pub(crate) fn engine() -> Engine {
        match Engine::load(&Mappings::default_dir(), Limits::default()) {
            Ok(e) => e,
            Err(e) => panic!("mappings must load: {e}"),
        }
    }

    #[test]
    fn cda_workload_documents_pass_the_schema_and_keep_their_verdicts() {
        let engine = engine();
        let today = time::macros::date!(2026 - 11 - 15);
        for size in [Size::Plain, Size::Medium, Size::Large] {
            for (invalid_share, expected) in [(0.0, Verdict::Accepted), (1.0, Verdict::Rejected)] {
                let spec = Spec {
                    seed: 3,
                    invalid_share,
                    shared_patients: 0,
                    size,
                    jurisdiction: Jurisdiction::De,
                };
                let docs = generate_cda(spec, 2);
                assert_ne!(docs[0], docs[1], "distinct patients and ids");
                for doc in &docs {
                    let processed = process(&engine, doc, today);
                    let codes: Vec<&str> =
                        processed.issues.iter().map(|i| i.code.as_str()).collect();
                    assert_eq!(processed.verdict, expected, "{} {codes:?}", size.name());
                    if expected == Verdict::Rejected {
                        assert_eq!(codes, ["DE-DX-05"]);
                    }
                }
            }
        }
        let large = generate_cda(
            Spec {
                seed: 3,
                invalid_share: 0.0,
                shared_patients: 0,
                size: Size::Large,
                jurisdiction: Jurisdiction::De,
            },
            1,
        );
        assert!(large[0].len() > 450_000, "{}", large[0].len());
    }

    #[test]
    fn patient_ids_pass_their_checks_and_are_distinct() {
        let mut seen = std::collections::HashSet::new();
        for n in (0..200_000u64).chain([9_999_999, 1_234_567]) {
            let (bsn, hetu) = (bsn(n), hetu(n));
            assert!(bsn_valid(&bsn), "BSN {bsn} of {n}");
            let parsed = hetu_parse(&hetu).unwrap_or_else(|| panic!("HETU {hetu} of {n}"));
            assert!(!parsed.temporary, "{hetu}");
            assert!((1950..1990).contains(&parsed.birth_year), "{hetu}");
            assert_eq!(hetu_birth_date(&hetu).len(), 10);
            assert!(seen.insert(bsn), "BSN of {n} repeats");
            assert!(seen.insert(hetu), "HETU of {n} repeats");
        }
        assert!(kvnr_valid(&patient_id(Jurisdiction::De, 5)));
        assert_eq!(patient_id(Jurisdiction::Nl, 5), bsn(5));
        assert_eq!(patient_id(Jurisdiction::Fi, 5), hetu(5));
    }

    #[test]
    fn a_spoiled_check_fails_it() {
        for n in [0u64, 7, 99, 12_345] {
            assert!(!bsn_valid(&spoil_check(&bsn(n))), "{}", bsn(n));
            assert!(hetu_parse(&spoil_check(&hetu(n))).is_none(), "{}", hetu(n));
        }
    }

    /// Every jurisdiction's workload, in every format and size, gets the verdict it was made
    /// for: accepted when valid, rejected for the one reason it was spoiled with.
    #[test]
    fn every_jurisdiction_format_and_size_keeps_its_verdict() {
        let engine = engine();
        let today = time::macros::date!(2026 - 11 - 15);
        let cases = [
            (Jurisdiction::De, "DE-DX-05", "DE-DX-05"),
            (Jurisdiction::Nl, "NL-CN-01", "NL-ID-01"),
            (Jurisdiction::Fi, "FI-AS-01", "FI-ID-01"),
        ];
        for (jurisdiction, fhir_rejection, cda_rejection) in cases {
            for size in [Size::Plain, Size::Medium, Size::Large] {
                for invalid in [false, true] {
                    let spec = Spec {
                        seed: 11,
                        invalid_share: if invalid { 1.0 } else { 0.0 },
                        shared_patients: 0,
                        size,
                        jurisdiction,
                    };
                    let json = generate(spec, 2);
                    let xml = to_fhir_xml(&json);
                    let cda = generate_cda(spec, 2);
                    assert_eq!(xml.len(), 2, "every JSON referral has its XML twin");
                    for (format, docs, rejection) in [
                        ("json", &json, fhir_rejection),
                        ("xml", &xml, fhir_rejection),
                        ("cda", &cda, cda_rejection),
                    ] {
                        assert_ne!(docs[0], docs[1], "distinct patients and ids");
                        for doc in docs {
                            let processed = process(&engine, doc, today);
                            let errors: Vec<&str> = processed
                                .issues
                                .iter()
                                .filter(|i| i.severity >= crate::check::Severity::Error)
                                .map(|i| i.code.as_str())
                                .collect();
                            let what = format!("{} {format} {}", jurisdiction.code(), size.name());
                            let mapped = processed.referral.as_ref().and_then(|r| r.jurisdiction);
                            assert_eq!(mapped, Some(jurisdiction), "{what}");
                            if invalid {
                                assert_eq!(processed.verdict, Verdict::Rejected, "{what}");
                                assert_eq!(errors, [rejection], "{what}");
                            } else {
                                assert_eq!(
                                    processed.verdict,
                                    Verdict::Accepted,
                                    "{what} {errors:?}"
                                );
                            }
                        }
                    }
                }
            }
        }
    }

    /// The end-to-end run waits for one provider and one insurer output per valid referral,
    /// whatever the jurisdiction.
    #[test]
    fn a_valid_referral_of_every_jurisdiction_plans_one_provider_and_one_insurer_output() {
        let engine = engine();
        let cfg = AmqpConfig {
            publish_canonical: false,
            ..AmqpConfig::default()
        };
        let today = time::macros::date!(2026 - 11 - 15);
        for jurisdiction in Jurisdiction::ALL {
            let spec = Spec {
                seed: 5,
                invalid_share: 0.0,
                shared_patients: 0,
                size: Size::Plain,
                jurisdiction,
            };
            for json in generate(spec, 3) {
                let mut ledger = MemoryLedger::default();
                let outputs = crate::bench::inprocess::pipeline_once(
                    &engine,
                    &cfg,
                    &json,
                    &mut ledger,
                    today,
                )
                .unwrap_or_default();
                let mut kinds: Vec<&str> = outputs.iter().map(|o| o.kind.as_str()).collect();
                kinds.sort_unstable();
                assert_eq!(kinds, ["insurer", "provider"], "{}", jurisdiction.code());
            }
        }
    }
}
