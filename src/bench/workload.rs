//! Deterministic workload: realistic German referrals in three sizes, valid and invalid in a
//! configurable mix, distinct patients or a shared pool, all from one seed.

use base64::Engine as _;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{Value, json};

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
}

const TEMPLATE: &str = include_str!("../../examples/de-first-prescription-message.json");

/// A valid KVNR for `n`.
pub fn kvnr(n: u64) -> String {
    let letter = (b'A' + (n % 26) as u8) as char;
    let body = format!("{:08}", n % 100_000_000);
    (0..10)
        .map(|check| format!("{letter}{body}{check}"))
        .find(|c| crate::check::ids::kvnr_valid(c))
        .unwrap_or_else(|| format!("{letter}{body}0"))
}

fn strip_narrative(value: &mut Value) {
    match value {
        Value::Object(obj) => {
            obj.remove("text");
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
    let mut template: Value = serde_json::from_str(TEMPLATE).unwrap_or(Value::Null);
    strip_narrative(&mut template);
    (0..n)
        .map(|i| {
            let mut bundle = template.clone();
            let patient = if spec.shared_patients > 0 {
                rng.random_range(0..u64::from(spec.shared_patients))
            } else {
                i as u64
            };
            let kvnr = kvnr(10_000_000 + patient);
            let invalid = rng.random_bool(spec.invalid_share.clamp(0.0, 1.0));
            bundle["identifier"]["value"] = json!(format!("urn:uuid:{}", uuid::Uuid::from_u64_pair(spec.seed, i as u64)));
            for entry in bundle["entry"].as_array_mut().into_iter().flatten() {
                let resource = &mut entry["resource"];
                match resource["resourceType"].as_str() {
                    Some("Patient") => {
                        for id in resource["identifier"].as_array_mut().into_iter().flatten() {
                            id["value"] = json!(kvnr);
                        }
                    }
                    Some("Coverage") => resource["subscriberId"] = json!(kvnr),
                    Some("ServiceRequest") => {
                        // 10 units: a shared patient reaches the budget after 12 referrals.
                        resource["quantityQuantity"]["value"] = json!(10);
                        if spec.size != Size::Plain {
                            let text = words(&mut rng, 40_000);
                            resource["text"] = json!({
                                "status": "generated",
                                "div": format!("<div xmlns=\"http://www.w3.org/1999/xhtml\"><p>{text}</p></div>"),
                            });
                        }
                    }
                    Some("Observation") if invalid => resource["valueInteger"] = json!(55),
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

/// Generates `n` German referrals as CDA R2 documents (the twin of the JSON workload): the
/// example CDA referral with its own KVNR and document id; 50 KB adds a narrative section, 500 KB
/// a PDF as an `observationMedia` entry.
pub fn generate_cda(spec: Spec, n: usize) -> Vec<Vec<u8>> {
    let mut rng = ChaCha8Rng::seed_from_u64(spec.seed);
    (0..n)
        .map(|i| {
            let patient = if spec.shared_patients > 0 {
                rng.random_range(0..u64::from(spec.shared_patients))
            } else {
                i as u64
            };
            let kvnr = kvnr(10_000_000 + patient);
            let invalid = rng.random_bool(spec.invalid_share.clamp(0.0, 1.0));
            let mut doc = CDA_TEMPLATE
                .replace(CDA_KVNR, &format!("extension=\"{kvnr}\""))
                .replace(
                    CDA_DOCUMENT_ID,
                    &format!("extension=\"{}\"", uuid::Uuid::from_u64_pair(spec.seed, i as u64)),
                );
            if invalid {
                doc = doc.replace(CDA_GAF, "<value xsi:type=\"INT\" value=\"55\"/>");
            }
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

#[cfg(test)]
mod cda_tests {
    use super::*;
    use crate::check::Verdict;
    use crate::decode::Limits;
    use crate::mappings::Mappings;
    use crate::pipeline::{Engine, Inbound};
    use crate::store::ledger::MemoryLedger;

    #[test]
    fn cda_workload_documents_pass_the_schema_and_keep_their_verdicts() {
        let engine = match Engine::load(&Mappings::default_dir(), Limits::default()) {
            Ok(e) => e,
            Err(e) => panic!("mappings must load: {e}"),
        };
        let today = time::macros::date!(2026 - 11 - 15);
        for size in [Size::Plain, Size::Medium, Size::Large] {
            for (invalid_share, expected) in [(0.0, Verdict::Accepted), (1.0, Verdict::Rejected)] {
                let spec = Spec {
                    seed: 3,
                    invalid_share,
                    shared_patients: 0,
                    size,
                };
                let docs = generate_cda(spec, 2);
                assert_ne!(docs[0], docs[1], "distinct patients and ids");
                for doc in &docs {
                    let inbound = Inbound {
                        bytes: doc,
                        content_type: None,
                        message_id: None,
                        jurisdiction: None,
                    };
                    let mut ledger = MemoryLedger::default();
                    let processed = match engine.process(inbound, &mut ledger, today) {
                        Ok(p) => p,
                        Err(e) => panic!("{e}"),
                    };
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
            },
            1,
        );
        assert!(large[0].len() > 450_000, "{}", large[0].len());
    }
}
