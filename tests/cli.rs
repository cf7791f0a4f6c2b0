//! The `sociogate` command as users run it: verdicts, exit codes, JSON lines, bad input.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn sociogate(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sociogate"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap_or_else(|e| panic!("running sociogate: {e}"))
}

fn json_lines(output: &Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sociogate-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
    dir
}

/// The README's example table: file -> (verdict, issue codes).
fn readme_examples() -> Vec<(String, String, Vec<String>)> {
    let readme = String::from_utf8_lossy(&common::read("README.md")).into_owned();
    readme
        .lines()
        .filter(|l| l.starts_with("| `examples/"))
        .map(|l| {
            let cols: Vec<&str> = l.split('|').map(str::trim).collect();
            let file = cols[1].trim_matches('`').to_owned();
            let codes = cols[3]
                .split(',')
                .map(str::trim)
                .filter(|c| *c != "-" && !c.is_empty())
                .map(str::to_owned)
                .collect();
            (file, cols[2].to_owned(), codes)
        })
        .collect()
}

#[test]
fn examples_give_the_verdicts_the_readme_lists() {
    let expected = readme_examples();
    assert!(
        expected.len() >= 6,
        "README lists {} examples",
        expected.len()
    );
    let output = sociogate(&[
        "check",
        "--at",
        "2026-11-15",
        "--format",
        "json",
        "examples",
    ]);
    let lines = json_lines(&output);
    assert_eq!(
        lines.len(),
        expected.len(),
        "every file in examples/ is in the README table"
    );
    for (file, verdict, codes) in &expected {
        let line = lines
            .iter()
            .find(|l| {
                l["file"]
                    .as_str()
                    .is_some_and(|f| Path::new(f) == Path::new(file))
            })
            .unwrap_or_else(|| panic!("{file} missing from the output"));
        assert_eq!(
            line["verdict"],
            verdict.as_str(),
            "{file}: {}",
            line["outcome"]
        );
        let mut found: Vec<String> = line["outcome"]["issue"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|i| {
                i["details"]["coding"][0]["code"]
                    .as_str()
                    .map(str::to_owned)
            })
            .filter(|c| c != "GW-OK")
            .collect();
        found.sort();
        let mut codes = codes.clone();
        codes.sort();
        assert_eq!(found, codes, "{file}");
    }
    // Some are rejected, so the run exits 1.
    assert_eq!(output.status.code(), Some(1));
}

#[test]
fn accepted_files_exit_zero_and_carry_the_canonical_referral() {
    let output = sociogate(&[
        "check",
        "--at",
        "2026-11-15",
        "--format",
        "json",
        "examples/de-first-prescription-message.json",
    ]);
    assert_eq!(output.status.code(), Some(0));
    let line = &json_lines(&output)[0];
    assert_eq!(line["verdict"], "accepted");
    let referral = &line["referral"];
    assert_eq!(referral["jurisdiction"], "DE");
    assert_eq!(referral["kind"], "first-prescription");
    assert_eq!(referral["requested_units"]["count"], 30);
    assert_eq!(referral["requested_units"]["unit_minutes"], 60);
    assert_eq!(referral["diagnoses"][0]["code"], "F20.0");
    assert_eq!(referral["diagnoses"][0]["certainty"], "confirmed");
    assert_eq!(referral["functional_assessment"]["gaf_score"], 35);
    assert_eq!(referral["frequency"]["count"], 2);
    assert_eq!(referral["frequency"]["unit"], "week");
    assert_eq!(referral["goals"].as_array().map(Vec::len), Some(2));
    assert_eq!(referral["coverage"]["kind"], "statutory");
    assert_eq!(referral["coverage"]["payer_ids"][0]["value"], "109519005");
    assert_eq!(referral["prescriber"]["sociotherapy_approval"], true);
    // Dates are ISO 8601 strings, as the schema says.
    assert!(
        referral["issue_date"]
            .as_str()
            .is_some_and(|d| d.len() == 10 && d.starts_with("2026-"))
    );
    assert_eq!(
        line["outcome"]["issue"][0]["details"]["coding"][0]["code"],
        "GW-OK"
    );
}

#[test]
fn messages_come_in_german_on_request() {
    let output = sociogate(&[
        "check",
        "--at",
        "2026-11-15",
        "--lang",
        "de",
        "examples/de-rejected-gaf-too-high.json",
    ]);
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains("DE-DX-05"), "{text}");
    assert!(text.contains("überschreitet 50"), "{text}");
    assert_eq!(output.status.code(), Some(1));
}

#[test]
fn at_fixes_today_for_age_rules() {
    // The discharge example's period is in November 2026; the patient's age depends on --at only
    // through the transition-age rule, which does not apply here, so the verdict is stable.
    let a = sociogate(&[
        "check",
        "--at",
        "2026-11-15",
        "examples/de-discharge-prescription.json",
    ]);
    assert_eq!(a.status.code(), Some(0));
    let bad = sociogate(&[
        "check",
        "--at",
        "15.11.2026",
        "examples/de-discharge-prescription.json",
    ]);
    assert_eq!(
        bad.status.code(),
        Some(2),
        "a malformed --at is a usage error"
    );
}

#[test]
fn hostile_and_malformed_files_are_unreadable_with_a_reason() {
    let dir = temp_dir("hostile");
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("invalid.json", b"{\"resourceType\": \"Patient\",".to_vec(), "GW-DEC-01"),
        ("stu3.json", br#"{"resourceType":"ReferralRequest","status":"active","intent":"order","subject":{"reference":"Patient/1"}}"#.to_vec(), "GW-DEC-03"),
        // R5 made Coverage.subscriberId an Identifier: the R4 model cannot read it.
        ("r5-coverage.json", br#"{"resourceType":"Coverage","status":"active","kind":"insurance","subscriberId":[{"value":"A1"}],"beneficiary":{"reference":"Patient/1"},"payor":[{"reference":"Organization/1"}]}"#.to_vec(), "GW-DEC-02"),
        ("r5-transport.json", br#"{"resourceType":"Bundle","type":"collection","entry":[{"resource":{"resourceType":"Transport","status":"completed","intent":"order"}}]}"#.to_vec(), "GW-DEC-03"),
        ("unknown-type.json", br#"{"resourceType":"Referral"}"#.to_vec(), "GW-DEC-02"),
        ("deep.json", format!("{}{}", "[".repeat(100_000), "]".repeat(100_000)).into_bytes(), "GW-DEC-05"),
        ("empty.json", Vec::new(), "GW-DEC-07"),
        ("binary.json", vec![0u8, 159, 146, 150, 1, 2, 3], "GW-DEC-06"),
        ("divers-without-extension.json", br#"{"resourceType":"Patient","gender":"divers"}"#.to_vec(), "GW-DEC-02"),
    ];
    for (name, bytes, _) in &cases {
        std::fs::write(dir.join(name), bytes).unwrap_or_else(|e| panic!("{e}"));
    }
    // 50 MB: refused by its size, without being read.
    let big = dir.join("big.json");
    let file = std::fs::File::create(&big).unwrap_or_else(|e| panic!("{e}"));
    file.set_len(50 * 1024 * 1024)
        .unwrap_or_else(|e| panic!("{e}"));
    let dir_arg = dir.to_string_lossy().into_owned();
    let output = sociogate(&["check", "--format", "json", &dir_arg]);
    assert_eq!(output.status.code(), Some(2));
    let lines = json_lines(&output);
    assert_eq!(lines.len(), cases.len() + 1);
    let code_of = |name: &str| -> (String, String) {
        let line = lines
            .iter()
            .find(|l| l["file"].as_str().is_some_and(|f| f.ends_with(name)))
            .unwrap_or_else(|| panic!("{name} missing"));
        (
            line["verdict"].as_str().unwrap_or_default().to_owned(),
            line["outcome"]["issue"][0]["details"]["coding"][0]["code"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        )
    };
    for (name, _, code) in &cases {
        assert_eq!(
            code_of(name),
            ("unreadable".to_owned(), (*code).to_owned()),
            "{name}"
        );
    }
    assert_eq!(
        code_of("big.json"),
        ("unreadable".to_owned(), "GW-DEC-04".to_owned())
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_bundle_without_a_service_request_is_rejected_with_that_reason() {
    let dir = temp_dir("nosr");
    let path = dir.join("patients.json");
    let bundle = br#"{"resourceType":"Bundle","type":"collection","entry":[{"fullUrl":"urn:uuid:1","resource":{"resourceType":"Patient","identifier":[{"system":"http://fhir.de/sid/gkv/kvid-10","value":"X110411675"}]}}]}"#;
    std::fs::write(&path, bundle).unwrap_or_else(|e| panic!("{e}"));
    let output = sociogate(&["check", "--format", "json", &path.to_string_lossy()]);
    assert_eq!(output.status.code(), Some(1));
    let line = &json_lines(&output)[0];
    assert_eq!(line["verdict"], "rejected");
    assert_eq!(
        line["outcome"]["issue"][0]["details"]["coding"][0]["code"],
        "GW-MAP-01"
    );
    // The draft keeps the patient so the rejection can be routed.
    assert_eq!(line["referral"]["patient"]["ids"][0]["value"], "X110411675");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn translate_prints_the_canonical_referral() {
    let output = sociogate(&[
        "translate",
        "examples/de-lone-servicerequest-contained.json",
    ]);
    assert_eq!(output.status.code(), Some(0));
    let referral: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap_or_default();
    assert_eq!(referral["model_version"], "1");
    assert_eq!(referral["kind"], "follow-up-prescription");
    assert_eq!(referral["diagnoses"][0]["code"], "F31.5");
    assert_eq!(referral["coverage"]["copayment_exempt"], true);
    let missing = sociogate(&["translate", "no/such/file.json"]);
    assert_eq!(missing.status.code(), Some(2));
}

#[test]
fn readme_lists_every_rule_of_the_catalogue() {
    let readme = String::from_utf8_lossy(&common::read("README.md")).into_owned();
    let engine = common::engine();
    for rule in engine.mappings().rules().iter() {
        assert!(
            readme.contains(&format!("| `{}` |", rule.code)),
            "README lacks rule {}",
            rule.code
        );
    }
}
