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
            serde_json::to_vec(&bundle).unwrap_or_default()
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
