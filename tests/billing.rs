//! Billing over the real RabbitMQ and PostgreSQL: referral -> the insurer's approval ->
//! delivered sessions -> billing period close -> FHIR Claim and § 302 interchange on the insurer
//! exchange, then a cancelled session -> a correction record. Every amount is asserted.

mod common;

use std::time::Duration;

use common::read;
use common::service::{Client, config, pg_database};
use serde_json::{Value, json};
use sociogate::app;
use sociogate::billing::dta302;

const WAIT: Duration = Duration::from_secs(30);
const REFERRAL_SYSTEM: &str = "https://sociogate.org/fhir/sid/referral";
const SESSION_SYSTEM: &str = "https://soziotherapie-spreeufer.example/fhir/sid/session";
const PROVIDER_IK: &str = "461782031";
const INSURER_IK: &str = "109519005";
const CLOSE_TOKEN: &str = "close-token-for-tests";

fn claim_response(referral_id: &str) -> Vec<u8> {
    json!({
        "resourceType": "ClaimResponse",
        "identifier": [{ "system": "https://aok-nordost.example/fhir/sid/claim-response", "value": "KZ-1" }],
        "status": "active",
        "type": { "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/claim-type", "code": "professional" }] },
        "use": "preauthorization",
        "patient": { "identifier": { "system": "http://fhir.de/sid/gkv/kvid-10", "value": "L204187362" } },
        "created": "2026-11-03T09:00:00+01:00",
        "insurer": { "identifier": { "system": "http://fhir.de/sid/arge-ik/iknr", "value": INSURER_IK } },
        "request": { "identifier": { "system": REFERRAL_SYSTEM, "value": referral_id } },
        "outcome": "complete",
        "disposition": "genehmigt",
        "preAuthRef": "GEN-2026-0815",
        "preAuthPeriod": { "start": "2026-11-02", "end": "2027-02-26" },
        "item": [{ "itemSequence": 1, "adjudication": [{
            "category": { "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/adjudication", "code": "eligible" }] },
            "value": 30
        }] }]
    })
    .to_string()
    .into_bytes()
}

/// One Encounter: `(id, status, start, minutes, delivery)`.
fn encounter(
    referral_id: &str,
    id: &str,
    status: &str,
    start: &str,
    minutes: u32,
    delivery: &str,
) -> Value {
    json!({
        "resourceType": "Encounter",
        "identifier": [{ "system": SESSION_SYSTEM, "value": id }],
        "status": status,
        "class": { "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "HH" },
        "type": [{ "coding": [{ "system": "https://sociogate.org/fhir/CodeSystem/delivery-mode", "code": delivery }] }],
        "basedOn": [{ "identifier": { "system": REFERRAL_SYSTEM, "value": referral_id } }],
        "period": { "start": start },
        "length": { "value": minutes, "unit": "min", "system": "http://unitsofmeasure.org", "code": "min" }
    })
}

fn session_report(encounters: Vec<Value>) -> Vec<u8> {
    let mut entries = vec![json!({
        "fullUrl": format!("urn:uuid:{}", uuid::Uuid::new_v4()),
        "resource": {
            "resourceType": "MessageHeader",
            "eventCoding": { "system": "https://sociogate.org/fhir/CodeSystem/message-event", "code": "session-report" },
            "source": { "name": "spreeufer", "endpoint": "https://soziotherapie-spreeufer.example/fhir" }
        }
    })];
    for e in encounters {
        entries.push(
            json!({ "fullUrl": format!("urn:uuid:{}", uuid::Uuid::new_v4()), "resource": e }),
        );
    }
    json!({
        "resourceType": "Bundle",
        "identifier": { "system": "urn:ietf:rfc:3986", "value": format!("urn:uuid:{}", uuid::Uuid::new_v4()) },
        "type": "message",
        "timestamp": "2026-11-20T18:00:00+01:00",
        "entry": entries
    })
    .to_string()
    .into_bytes()
}

fn rule_codes(outcome: &Value) -> Vec<String> {
    outcome["issue"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| {
            i["details"]["coding"][0]["code"]
                .as_str()
                .map(str::to_owned)
        })
        .collect()
}

async fn reply_to(client: &mut Client, queue: &str, n: usize) -> Vec<Value> {
    let ok = client
        .wait_for(WAIT, |r| {
            r.iter().filter(|m| m.routing_key == queue).count() >= n
        })
        .await;
    assert!(ok, "no {n} replies on {queue}");
    client
        .received
        .iter()
        .filter(|m| m.routing_key == queue)
        .map(|m| m.json())
        .collect()
}

async fn close(addr: std::net::SocketAddr, period: &str) -> Value {
    let response = reqwest::Client::new()
        .post(format!("http://{addr}/billing/{period}/close"))
        .bearer_auth(CLOSE_TOKEN)
        .send()
        .await
        .unwrap_or_else(|e| panic!("closing {period}: {e}"));
    assert_eq!(response.status(), 200);
    response.json().await.unwrap_or(Value::Null)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn referral_approval_sessions_and_billing_reach_the_insurer_with_exact_amounts() {
    let mut cfg = config(&pg_database().await);
    cfg.billing.provider_ik = PROVIDER_IK.to_owned();
    cfg.billing.provider_name = "Soziotherapie Spreeufer gGmbH".to_owned();
    cfg.billing.close_token = CLOSE_TOKEN.to_owned();
    let mut client = Client::connect(&cfg).await;
    let running = app::start(cfg.clone())
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    let replies = client.reply_queue().await;

    // 1. The referral (accepted; the provider gets it, the insurer the preauthorization).
    client
        .publish(
            &read("examples/de-first-prescription-message.json"),
            Some("b-referral"),
            None,
            None,
        )
        .await;
    assert!(
        client
            .wait_for(WAIT, |r| r.iter().any(|m| m.routing_key.ends_with(".fhir")))
            .await
    );
    let referral_id = client
        .received
        .iter()
        .find(|m| m.routing_key.ends_with(".fhir"))
        .and_then(|m| m.headers.get("x-sociogate-gateway-id").cloned())
        .unwrap_or_default();
    assert!(!referral_id.is_empty());

    // Sessions before the approval are refused.
    client
        .publish(
            &session_report(vec![encounter(
                &referral_id,
                "early",
                "finished",
                "2026-11-04T10:00:00+01:00",
                60,
                "individual",
            )]),
            Some("b-early"),
            Some(&replies),
            None,
        )
        .await;
    let answered = reply_to(&mut client, &replies, 1).await;
    assert_eq!(rule_codes(&answered[0]), ["DE-SE-01"]);

    // 2. The insurer approves: the provider's Task moves to accepted.
    client
        .publish(
            &claim_response(&referral_id),
            Some("b-approval"),
            None,
            None,
        )
        .await;
    assert!(
        client
            .wait_for(WAIT, |r| r.iter().any(|m| m.routing_key.ends_with(".task")))
            .await
    );
    let task_bundle = client
        .received
        .iter()
        .find(|m| m.routing_key.ends_with(".task"))
        .map(|m| m.json())
        .unwrap_or(Value::Null);
    let task = &task_bundle["entry"][1]["resource"];
    assert_eq!(task["status"], json!("accepted"));
    assert_eq!(task["identifier"][0]["value"], json!(referral_id));

    // 3. Sessions: two on 5 November (one co-payment on their sum), a group session, one
    // before the approved period, and (in a second message) the first one again.
    client
        .publish(
            &session_report(vec![
                encounter(
                    &referral_id,
                    "s1",
                    "finished",
                    "2026-11-05T10:00:00+01:00",
                    60,
                    "individual",
                ),
                encounter(
                    &referral_id,
                    "s2",
                    "finished",
                    "2026-11-05T15:00:00+01:00",
                    30,
                    "individual",
                ),
                encounter(
                    &referral_id,
                    "s3",
                    "finished",
                    "2026-11-12T10:00:00+01:00",
                    90,
                    "group",
                ),
                encounter(
                    &referral_id,
                    "s0",
                    "finished",
                    "2026-11-01T10:00:00+01:00",
                    60,
                    "individual",
                ),
            ]),
            Some("b-sessions"),
            Some(&replies),
            None,
        )
        .await;
    let answered = reply_to(&mut client, &replies, 2).await;
    assert_eq!(rule_codes(&answered[1]), ["DE-SE-02"], "{}", answered[1]);
    client
        .publish(
            &session_report(vec![encounter(
                &referral_id,
                "s1",
                "finished",
                "2026-11-05T10:00:00+01:00",
                60,
                "individual",
            )]),
            Some("b-sessions-again"),
            Some(&replies),
            None,
        )
        .await;
    let answered = reply_to(&mut client, &replies, 3).await;
    assert_eq!(rule_codes(&answered[2]), ["GW-BI-03"]);

    // 4. Close November: one Claim and one § 302 interchange for the insurer. Only with the
    // operator's token: a run sends files to insurers.
    let refused = reqwest::Client::new()
        .post(format!(
            "http://{}/billing/2026-11/close",
            running.http_addr
        ))
        .bearer_auth("wrong")
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(refused.status(), 401);
    let run = close(running.http_addr, "2026-11").await;
    assert_eq!(run["claims"], json!(1), "{run}");
    assert_eq!(run["interchanges"], json!(1));
    assert_eq!(run["sessions"], json!(3));
    let claim_key = format!("payer.{INSURER_IK}.claim");
    let file_key = format!("payer.{INSURER_IK}.dta302");
    assert!(
        client
            .wait_for(WAIT, |r| r.iter().any(|m| m.routing_key == claim_key)
                && r.iter().any(|m| m.routing_key == file_key))
            .await
    );
    let claim_msg = client
        .received
        .iter()
        .find(|m| m.routing_key == claim_key)
        .cloned();
    let claim_text = claim_msg
        .as_ref()
        .map(|m| String::from_utf8_lossy(&m.body).into_owned())
        .unwrap_or_default();
    let claim_bundle: Value = serde_json::from_str(&claim_text).unwrap_or(Value::Null);
    let claim = claim_bundle["entry"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| &e["resource"])
        .find(|r| r["resourceType"] == json!("Claim"))
        .cloned()
        .unwrap_or(Value::Null);
    assert_eq!(claim["use"], json!("claim"));
    assert_eq!(
        claim["insurance"][0]["preAuthRef"][0],
        json!("GEN-2026-0815")
    );
    assert_eq!(claim["item"].as_array().map(Vec::len), Some(3));
    // Individual 60.00 per hour: 60.00 + 30.00; group 30.00 per 90-minute unit. Exact decimals
    // with their trailing zeros.
    assert!(
        claim_text.contains("\"total\":{\"value\":120.00"),
        "{claim_text}"
    );
    let file = client
        .received
        .iter()
        .find(|m| m.routing_key == file_key)
        .map(|m| m.body.clone())
        .unwrap_or_default();
    let interchange = dta302::parse_interchange_latin1(&file).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(interchange.cases.len(), 1);
    let text = String::from_utf8_lossy(&file).into_owned();
    // Gross 120.00; co-payment 9.00 (10 % of 90.00 on 5 November) + 5.00 (the minimum on
    // 12 November, cost 30.00) = 14.00; net 106.00.
    for amount in ["120,00", "14,00", "106,00"] {
        assert!(text.contains(amount), "{amount} missing in {text}");
    }
    assert!(text.contains("GEN-2026-0815"), "{text}");
    assert!(
        text.contains("SKZ+GEN-2026-0815+20261103+N1'"),
        "SKZ with kind N1: {text}"
    );

    // 5. A billed November session is cancelled and a December session is delivered: closing
    // December bills the new session and sends a correction (Verarbeitungskennzeichen 04) that
    // restates November without the cancelled one; each in its own file, each Claim its own id.
    client
        .publish(
            &session_report(vec![
                encounter(
                    &referral_id,
                    "s2",
                    "entered-in-error",
                    "2026-11-05T15:00:00+01:00",
                    30,
                    "individual",
                ),
                encounter(
                    &referral_id,
                    "s4",
                    "finished",
                    "2026-12-03T10:00:00+01:00",
                    60,
                    "individual",
                ),
            ]),
            Some("b-cancel"),
            Some(&replies),
            None,
        )
        .await;
    let answered = reply_to(&mut client, &replies, 4).await;
    assert_eq!(rule_codes(&answered[3]), ["GW-BI-05"]);
    let run = close(running.http_addr, "2026-12").await;
    assert_eq!(run["claims"], json!(2), "{run}");
    assert_eq!(run["interchanges"], json!(2), "{run}");
    assert_eq!(run["sessions"], json!(1));
    assert!(
        client
            .wait_for(WAIT, |r| r
                .iter()
                .filter(|m| m.routing_key == file_key)
                .count()
                >= 3)
            .await
    );
    let files: Vec<String> = client
        .received
        .iter()
        .filter(|m| m.routing_key == file_key)
        .map(|m| String::from_utf8_lossy(&m.body).into_owned())
        .collect();
    let corrected = files
        .iter()
        .find(|f| f.contains("FKT+04"))
        .cloned()
        .unwrap_or_default();
    // Restated November: 60.00 + 30.00 = 90.00; co-payment 6.00 + 5.00 = 11.00; net 79.00.
    assert!(
        corrected.contains("BES+90,00+11,00+79,00"),
        "restated November: {corrected}"
    );
    let december = files
        .iter()
        .find(|f| f.contains("20261203") && f.contains("FKT+01"))
        .cloned()
        .unwrap_or_default();
    // December: one hour, 60.00, co-payment 6.00, net 54.00.
    assert!(
        december.contains("BES+60,00+6,00+54,00"),
        "December bill: {december}"
    );
    let claims: Vec<Value> = client
        .received
        .iter()
        .filter(|m| m.routing_key == claim_key)
        .map(|m| m.json())
        .map(|bundle| {
            bundle["entry"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|e| e["resource"].clone())
                .find(|r| r["resourceType"] == json!("Claim"))
                .unwrap_or(Value::Null)
        })
        .collect();
    assert_eq!(claims.len(), 3);
    let ids: std::collections::BTreeSet<String> = claims
        .iter()
        .map(|c| {
            c["identifier"][0]["value"]
                .as_str()
                .unwrap_or("")
                .to_owned()
        })
        .collect();
    assert_eq!(ids.len(), 3, "every Claim has its own id: {ids:?}");
    let related = claims
        .iter()
        .find(|c| c["related"].is_array())
        .map(|c| c["related"].clone())
        .unwrap_or(Value::Null);
    assert!(
        related.is_array(),
        "the correction names the Claim it replaces: {claims:?}"
    );
    running.shutdown().await;
}

/// A variant of the first-prescription example: its own KVNR and Bundle id, a birth date, and
/// the co-payment status (`0` liable, `1` exempt).
fn referral_variant(n: u32, birth_date: &str, copayment_status: &str) -> Vec<u8> {
    let kvnr = common::service::kvnr(n);
    let bytes = common::service::referral_for(&kvnr, 30, &uuid::Uuid::new_v4().to_string());
    let mut bundle: Value = serde_json::from_slice(&bytes).unwrap_or_default();
    for entry in bundle["entry"].as_array_mut().into_iter().flatten() {
        let resource = &mut entry["resource"];
        match resource["resourceType"].as_str() {
            Some("Patient") => resource["birthDate"] = json!(birth_date),
            Some("Coverage") => {
                resource["extension"][0]["valueCoding"]["code"] = json!(copayment_status);
            }
            _ => {}
        }
    }
    bundle.to_string().into_bytes()
}

fn approval_for(referral_id: &str, start: &str, end: &str, units: u32) -> Vec<u8> {
    let mut response: Value =
        serde_json::from_slice(&claim_response(referral_id)).unwrap_or_default();
    response["preAuthPeriod"] = json!({ "start": start, "end": end });
    response["item"][0]["adjudication"][0]["value"] = json!(units);
    response["identifier"][0]["value"] = json!(format!("KZ-{referral_id}"));
    response.to_string().into_bytes()
}

/// Publishes a referral and returns its gateway id.
async fn accepted_referral(client: &mut Client, body: &[u8], message_id: &str) -> String {
    client.publish(body, Some(message_id), None, None).await;
    let seen = |m: &common::service::Received| {
        m.routing_key.ends_with(".fhir")
            && m.headers
                .get("x-sociogate-inbound-message-id")
                .map(String::as_str)
                == Some(message_id)
    };
    assert!(
        client.wait_for(WAIT, |r| r.iter().any(seen)).await,
        "{message_id} not forwarded"
    );
    client
        .received
        .iter()
        .find(|m| seen(m))
        .and_then(|m| m.headers.get("x-sociogate-gateway-id").cloned())
        .unwrap_or_default()
}

/// Publishes an approval and waits for the provider's Task.
async fn approve(client: &mut Client, referral_id: &str, body: Vec<u8>) {
    let tasks_before = client
        .received
        .iter()
        .filter(|m| m.routing_key.ends_with(".task"))
        .count();
    client
        .publish(&body, Some(&format!("approval-{referral_id}")), None, None)
        .await;
    assert!(
        client
            .wait_for(WAIT, |r| r
                .iter()
                .filter(|m| m.routing_key.ends_with(".task"))
                .count()
                > tasks_before)
            .await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copayment_edge_cases_budget_limit_and_lapsed_discharge_units_over_the_gateway() {
    let mut cfg = config(&pg_database().await);
    cfg.billing.provider_ik = PROVIDER_IK.to_owned();
    cfg.billing.provider_name = "Soziotherapie Spreeufer gGmbH".to_owned();
    cfg.billing.close_token = CLOSE_TOKEN.to_owned();
    let mut client = Client::connect(&cfg).await;
    let running = app::start(cfg.clone())
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    let replies = client.reply_queue().await;
    let mut answers = 0;
    let mut report = async |client: &mut Client, id: &str, encounters: Vec<Value>| -> Vec<String> {
        client
            .publish(&session_report(encounters), Some(id), Some(&replies), None)
            .await;
        answers += 1;
        let all = reply_to(client, &replies, answers).await;
        rule_codes(&all[answers - 1])
    };

    // Three patients of one insurer: a minor, an exempt adult, a liable adult.
    let minor = accepted_referral(
        &mut client,
        &referral_variant(501, "2010-05-01", "0"),
        "r-minor",
    )
    .await;
    let exempt = accepted_referral(
        &mut client,
        &referral_variant(502, "1970-01-01", "1"),
        "r-exempt",
    )
    .await;
    let adult = accepted_referral(
        &mut client,
        &referral_variant(503, "1970-01-01", "0"),
        "r-adult",
    )
    .await;
    for id in [&minor, &exempt, &adult] {
        approve(
            &mut client,
            id,
            approval_for(id, "2026-11-02", "2027-02-26", 30),
        )
        .await;
    }
    let day = |d: u32, h: u32| format!("2026-11-{d:02}T{h:02}:00:00+01:00");
    // Minor and exempt: one hour each; they pay nothing.
    assert_eq!(
        report(
            &mut client,
            "s-minor",
            vec![encounter(
                &minor,
                "m1",
                "finished",
                &day(10, 10),
                60,
                "individual"
            )]
        )
        .await,
        ["GW-OK"]
    );
    assert_eq!(
        report(
            &mut client,
            "s-exempt",
            vec![encounter(
                &exempt,
                "e1",
                "finished",
                &day(10, 10),
                60,
                "individual"
            )]
        )
        .await,
        ["GW-OK"]
    );
    // Adult: 3 hours on one day (180.00: 10 % = 18.00, capped at 10.00), 15 minutes on another
    // (15.00: 10 % = 1.50, raised to the 5.00 minimum), 3 minutes on a third (3.00: never more
    // than the cost).
    let adult_sessions = vec![
        encounter(&adult, "a1", "finished", &day(10, 9), 60, "individual"),
        encounter(&adult, "a2", "finished", &day(10, 11), 60, "individual"),
        encounter(&adult, "a3", "finished", &day(10, 14), 60, "individual"),
        encounter(&adult, "a4", "finished", &day(11, 9), 15, "individual"),
        encounter(&adult, "a5", "finished", &day(12, 9), 3, "individual"),
    ];
    assert_eq!(
        report(&mut client, "s-adult", adult_sessions).await,
        ["GW-OK"]
    );

    let run = close(running.http_addr, "2026-11").await;
    assert_eq!(run["claims"], json!(3), "{run}");
    assert_eq!(run["interchanges"], json!(1), "{run}");
    let file_key = format!("payer.{INSURER_IK}.dta302");
    assert!(
        client
            .wait_for(WAIT, |r| r.iter().any(|m| m.routing_key == file_key))
            .await
    );
    let file = client
        .received
        .iter()
        .find(|m| m.routing_key == file_key)
        .map(|m| m.body.clone())
        .unwrap_or_default();
    let interchange = dta302::parse_interchange_latin1(&file).unwrap_or_else(|e| panic!("{e}"));
    let amounts = |kvnr: String| {
        interchange
            .cases
            .iter()
            .find(|c| c.inv.insurance_number == kvnr)
            .map(|c| {
                (
                    c.bes.gross.to_string(),
                    c.bes.copayment.to_string(),
                    c.bes.net.to_string(),
                )
            })
            .unwrap_or_default()
    };
    let s = |a: &str, b: &str, c: &str| (a.to_owned(), b.to_owned(), c.to_owned());
    assert_eq!(
        amounts(common::service::kvnr(501)),
        s("60.00", "0.00", "60.00"),
        "under 18"
    );
    assert_eq!(
        amounts(common::service::kvnr(502)),
        s("60.00", "0.00", "60.00"),
        "exempt"
    );
    assert_eq!(
        amounts(common::service::kvnr(503)),
        s("198.00", "18.00", "180.00"),
        "capped, minimum, below 5 EUR"
    );

    // The budget: 120 hours are accepted, the next minute is not. A fresh patient with 121
    // approved units, 120 one-hour sessions (two a day), then one minute more.
    let budget = accepted_referral(
        &mut client,
        &referral_variant(504, "1970-01-01", "0"),
        "r-budget",
    )
    .await;
    approve(
        &mut client,
        &budget,
        approval_for(&budget, "2026-11-02", "2027-02-26", 121),
    )
    .await;
    let first = time::macros::date!(2026 - 11 - 02);
    let hours: Vec<Value> = (0..120)
        .map(|n| {
            let d = first + time::Duration::days(n / 2);
            let start = format!("{d}T{:02}:00:00+01:00", 9 + (n % 2) * 3);
            encounter(
                &budget,
                &format!("b{n}"),
                "finished",
                &start,
                60,
                "individual",
            )
        })
        .collect();
    assert_eq!(report(&mut client, "s-budget", hours).await, ["GW-OK"]);
    let one_more = vec![encounter(
        &budget,
        "b120",
        "finished",
        "2027-01-15T09:00:00+01:00",
        1,
        "individual",
    )];
    assert_eq!(
        report(&mut client, "s-budget-over", one_more).await,
        ["DE-SE-04"]
    );

    // A discharge prescription (discharged 13 November): units lapse after the seventh day.
    let discharge = accepted_referral(
        &mut client,
        &read("examples/de-discharge-prescription.json"),
        "r-discharge",
    )
    .await;
    approve(
        &mut client,
        &discharge,
        approval_for(&discharge, "2026-11-13", "2026-12-31", 5),
    )
    .await;
    let seventh = vec![encounter(
        &discharge,
        "d1",
        "finished",
        "2026-11-20T10:00:00+01:00",
        60,
        "individual",
    )];
    assert_eq!(
        report(&mut client, "s-discharge-7", seventh).await,
        ["GW-OK"]
    );
    let eighth = vec![encounter(
        &discharge,
        "d2",
        "finished",
        "2026-11-21T10:00:00+01:00",
        60,
        "individual",
    )];
    assert_eq!(
        report(&mut client, "s-discharge-8", eighth).await,
        ["DE-SE-05"]
    );
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dutch_and_finnish_sessions_are_billed_in_their_funding_models() {
    let mut cfg = config(&pg_database().await);
    cfg.billing.provider_ik = PROVIDER_IK.to_owned();
    cfg.billing.provider_name = "Soziotherapie Spreeufer gGmbH".to_owned();
    cfg.billing.close_token = CLOSE_TOKEN.to_owned();
    let mut client = Client::connect(&cfg).await;
    let running = app::start(cfg.clone())
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    let nl = accepted_referral(
        &mut client,
        &read("examples/nl-clinical-sociotherapy-accepted.json"),
        "r-nl",
    )
    .await;
    let fi = accepted_referral(
        &mut client,
        &read("examples/fi-social-rehabilitation-accepted.json"),
        "r-fi",
    )
    .await;
    let replies = client.reply_queue().await;
    client
        .publish(
            &session_report(vec![
                encounter(
                    &nl,
                    "nl1",
                    "finished",
                    "2026-11-17T10:00:00+01:00",
                    90,
                    "group",
                ),
                encounter(
                    &nl,
                    "nl2",
                    "finished",
                    "2026-11-17T14:00:00+01:00",
                    45,
                    "individual",
                ),
                encounter(
                    &nl,
                    "nl3",
                    "finished",
                    "2026-11-19T10:00:00+01:00",
                    45,
                    "individual",
                ),
                encounter(
                    &fi,
                    "fi1",
                    "finished",
                    "2026-11-18T10:00:00+02:00",
                    90,
                    "group",
                ),
                encounter(
                    &fi,
                    "fi2",
                    "finished",
                    "2026-11-25T10:00:00+02:00",
                    90,
                    "group",
                ),
            ]),
            Some("s-nl-fi"),
            Some(&replies),
            None,
        )
        .await;
    let answered = reply_to(&mut client, &replies, 1).await;
    assert_eq!(rule_codes(&answered[0]), ["GW-OK"]);
    let run = close(running.http_addr, "2026-11").await;
    assert_eq!(run["claims"], json!(2), "{run}");
    assert_eq!(
        run["interchanges"],
        json!(0),
        "no § 302 file outside Germany"
    );
    assert_eq!(run["sessions"], json!(5));
    let nl_key = "payer.3311.claim";
    assert!(
        client
            .wait_for(WAIT, |r| r.iter().any(|m| m.routing_key == nl_key)
                && r.iter()
                    .filter(|m| m.routing_key.ends_with(".claim"))
                    .count()
                    >= 2)
            .await
    );
    let claim_of = |bundle: Value| {
        bundle["entry"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| e["resource"].clone())
            .find(|r| r["resourceType"] == json!("Claim"))
            .unwrap_or(Value::Null)
    };
    let nl_claim = claim_of(
        client
            .received
            .iter()
            .find(|m| m.routing_key == nl_key)
            .map(|m| m.json())
            .unwrap_or(Value::Null),
    );
    // Stay days of the zorgprestatiemodel: two days with sessions, one item each.
    assert_eq!(nl_claim["use"], json!("claim"));
    assert_eq!(nl_claim["item"].as_array().map(Vec::len), Some(2));
    assert_eq!(
        nl_claim["item"][0]["productOrService"]["coding"][0]["code"],
        json!("verblijfsdag")
    );
    assert_eq!(nl_claim["insurer"]["identifier"]["value"], json!("3311"));
    let fi_claim = claim_of(
        client
            .received
            .iter()
            .find(|m| m.routing_key.ends_with(".claim") && m.routing_key != nl_key)
            .map(|m| m.json())
            .unwrap_or(Value::Null),
    );
    // Social rehabilitation for the wellbeing services county: one item per session.
    assert_eq!(fi_claim["item"].as_array().map(Vec::len), Some(2));
    assert_eq!(fi_claim["item"][1]["quantity"]["value"], json!(90));
    assert_eq!(
        fi_claim["insurer"]["display"],
        json!("Pirkanmaan hyvinvointialue")
    );
    running.shutdown().await;
}
