//! The pipeline end to end in-process: every reference style yields the same referral, the
//! budget ledger carries across referrals of one patient, and idempotency keys are chosen as
//! documented.

mod common;

use common::{codes, engine, process, process_with, read, verdict};
use serde_json::{Value, json};
use sociogate::model::Referral;
use sociogate::store::ledger::MemoryLedger;

/// The accepted first-prescription example (a message Bundle with `urn:uuid` references).
fn message_bundle() -> Value {
    serde_json::from_slice(&read("examples/de-first-prescription-message.json")).unwrap_or_default()
}

/// Rewrites every `reference` value through `map`.
fn rewrite_references(value: &mut Value, map: &dyn Fn(&str) -> Option<String>) {
    match value {
        Value::Object(obj) => {
            for (key, v) in obj.iter_mut() {
                if key == "reference" {
                    if let Some(new) = v.as_str().and_then(map) {
                        *v = Value::String(new);
                    }
                } else {
                    rewrite_references(v, map);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| rewrite_references(v, map)),
        _ => {}
    }
}

/// `(fullUrl, "Type/id")` of every entry.
fn entry_names(bundle: &Value) -> Vec<(String, String)> {
    bundle["entry"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            let r = &e["resource"];
            (
                e["fullUrl"].as_str().unwrap_or_default().to_owned(),
                format!(
                    "{}/{}",
                    r["resourceType"].as_str().unwrap_or_default(),
                    r["id"].as_str().unwrap_or_default()
                ),
            )
        })
        .collect()
}

/// The referral with the per-message identifiers blanked, for comparisons.
fn comparable(processed: &sociogate::pipeline::Processed) -> Referral {
    let mut referral = processed
        .referral
        .clone()
        .unwrap_or_else(|| panic!("no referral: {:?}", codes(processed)));
    referral.ids.gateway_id.clear();
    referral.ids.idempotency_key.clear();
    referral.care_plan = referral.care_plan.map(|mut c| {
        c.reference.clear();
        c
    });
    referral
}

#[test]
fn urn_uuid_relative_absolute_and_contained_references_map_alike() {
    let engine = engine();
    let original = message_bundle();
    let names = entry_names(&original);

    // 1. urn:uuid (as written).
    let by_uuid = process(&engine, original.to_string().as_bytes());
    assert_eq!(verdict(&by_uuid), "accepted", "{:?}", codes(&by_uuid));

    // 2. Relative Type/id references with http fullUrls on one base.
    let mut relative = original.clone();
    let lookup = names.clone();
    rewrite_references(&mut relative, &|r| {
        lookup.iter().find(|(u, _)| u == r).map(|(_, t)| t.clone())
    });
    for (entry, (_, type_id)) in relative["entry"]
        .as_array_mut()
        .into_iter()
        .flatten()
        .zip(&names)
    {
        entry["fullUrl"] = json!(format!("https://kis.example.org/fhir/{type_id}"));
    }
    let by_relative = process(&engine, relative.to_string().as_bytes());

    // 3. Absolute references equal to the fullUrls.
    let mut absolute = relative.clone();
    rewrite_references(&mut absolute, &|r| {
        Some(format!("https://kis.example.org/fhir/{r}"))
    });
    let by_absolute = process(&engine, absolute.to_string().as_bytes());

    // 4. A lone ServiceRequest with everything contained and `#id` references.
    let mut contained: Vec<Value> = Vec::new();
    let mut service_request = Value::Null;
    for entry in original["entry"].as_array().into_iter().flatten() {
        match entry["resource"]["resourceType"].as_str() {
            Some("ServiceRequest") => service_request = entry["resource"].clone(),
            Some("MessageHeader") => {}
            _ => contained.push(entry["resource"].clone()),
        }
    }
    service_request["contained"] = Value::Array(contained);
    let lookup = names.clone();
    rewrite_references(&mut service_request, &|r| {
        lookup
            .iter()
            .find(|(u, _)| u == r)
            .map(|(_, t)| format!("#{}", t.rsplit('/').next().unwrap_or_default()))
    });
    let by_contained = process(&engine, service_request.to_string().as_bytes());

    let expected = comparable(&by_uuid);
    assert_eq!(expected.goals.len(), 2);
    assert!(
        expected
            .prescriber
            .as_ref()
            .is_some_and(|p| !p.organisation_ids.is_empty()),
        "PractitionerRole.organization resolved"
    );
    for (style, processed) in [
        ("relative", &by_relative),
        ("absolute", &by_absolute),
        ("contained", &by_contained),
    ] {
        assert_eq!(
            verdict(processed),
            "accepted",
            "{style}: {:?}",
            codes(processed)
        );
        assert_eq!(comparable(processed), expected, "{style}");
    }
}

#[test]
fn an_unresolvable_reference_is_a_warning_naming_it() {
    let engine = engine();
    let mut bundle = message_bundle();
    let names = entry_names(&bundle);
    let goal_url = names
        .iter()
        .find(|(_, t)| t.starts_with("Goal/"))
        .map(|(u, _)| u.clone())
        .unwrap_or_default();
    rewrite_references(&mut bundle, &|r| {
        (r == goal_url).then(|| "urn:uuid:00000000-dead-4000-8000-000000000000".to_owned())
    });
    let processed = process(&engine, bundle.to_string().as_bytes());
    assert_eq!(verdict(&processed), "accepted");
    let issue = processed.issues.iter().find(|i| i.code == "GW-MAP-02");
    assert_eq!(
        issue.and_then(|i| i.detail.as_deref()),
        Some("urn:uuid:00000000-dead-4000-8000-000000000000")
    );
    assert_eq!(
        issue.map(|i| i.expression.as_str()),
        Some("CarePlan.goal[0]")
    );
}

/// The first-prescription example for a given number of 60-minute units and a start date.
fn prescription(units: u32, start: &str, end: &str, id: &str) -> Vec<u8> {
    let mut bundle = message_bundle();
    bundle["identifier"]["value"] = json!(format!("urn:uuid:{id}"));
    for entry in bundle["entry"].as_array_mut().into_iter().flatten() {
        let resource = &mut entry["resource"];
        if resource["resourceType"] == "ServiceRequest" {
            resource["quantityQuantity"]["value"] = json!(units);
            resource["occurrenceTiming"]["repeat"]["boundsPeriod"] =
                json!({"start": start, "end": end});
        }
    }
    bundle.to_string().into_bytes()
}

#[test]
fn the_budget_counts_earlier_referrals_of_the_same_patient() {
    let engine = engine();
    let mut ledger = MemoryLedger::default();
    // 30 + 30 + 30 + 30 units of 60 minutes = 120 hours: all accepted.
    for (n, start) in ["2026-11-16", "2027-03-01", "2027-07-01", "2027-11-01"]
        .iter()
        .enumerate()
    {
        let p = process_with(
            &engine,
            &prescription(
                30,
                start,
                "2028-06-30",
                &format!("00000000-0000-4000-8000-00000000000{n}"),
            ),
            &mut ledger,
        );
        assert_eq!(verdict(&p), "accepted", "referral {n}: {:?}", codes(&p));
    }
    // One more unit in the same three-year window exceeds the budget.
    let over = process_with(
        &engine,
        &prescription(
            1,
            "2028-01-10",
            "2028-06-30",
            "00000000-0000-4000-8000-000000000009",
        ),
        &mut ledger,
    );
    assert_eq!(codes(&over), ["DE-BU-01"]);
    assert_eq!(over.issues[0].detail.as_deref(), Some("60"));
    assert_eq!(over.issues[0].limit.as_deref(), Some("0"));
    // A rejected referral charges nothing; after the window (3 years from 2026-11-16) a new one opens.
    let next_window = process_with(
        &engine,
        &prescription(
            30,
            "2029-11-16",
            "2030-03-01",
            "00000000-0000-4000-8000-00000000000a",
        ),
        &mut ledger,
    );
    assert_eq!(
        verdict(&next_window),
        "accepted",
        "{:?}",
        codes(&next_window)
    );
}

#[test]
fn idempotency_key_prefers_message_id_then_bundle_identifier_then_hash() {
    let engine = engine();
    let bytes = read("examples/de-first-prescription-message.json");
    let mut ledger = MemoryLedger::default();
    let inbound = |message_id| sociogate::pipeline::Inbound {
        bytes: &bytes,
        content_type: None,
        message_id,
        jurisdiction: None,
    };
    let with_id = engine
        .process(inbound(Some("amqp-42")), &mut ledger, common::TODAY)
        .ok();
    assert_eq!(
        with_id
            .and_then(|p| p.referral)
            .map(|r| r.ids.idempotency_key),
        Some("amqp-42".to_owned())
    );
    let from_bundle = process(&engine, &bytes);
    let bundle: Value = serde_json::from_slice(&bytes).unwrap_or_default();
    let expected = format!(
        "{}|{}",
        bundle["identifier"]["system"].as_str().unwrap_or_default(),
        bundle["identifier"]["value"].as_str().unwrap_or_default()
    );
    assert_eq!(
        from_bundle.referral.map(|r| r.ids.idempotency_key),
        Some(expected)
    );
    let lone = read("examples/de-lone-servicerequest-contained.json");
    let hashed = process(&engine, &lone);
    let key = hashed
        .referral
        .map(|r| r.ids.idempotency_key)
        .unwrap_or_default();
    assert_eq!(key, format!("sha256:{}", hashed.sha256));
    assert_eq!(hashed.sha256.len(), 64);
}
