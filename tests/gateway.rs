//! `sociogate serve` against the real RabbitMQ and PostgreSQL on this machine (no mocks): each
//! test has its own queue and exchange names and its own database.

mod common;

use std::time::Duration;

use common::read;
use common::service::{
    Client, DatabaseCleanup, config, http_only_gateway, kvnr, pg_admin_url, pg_database,
    raw_message, referral_for, sqlite_database, unique,
};
use serde_json::Value;
use sociogate::app;
use sociogate::check::Verdict;
use sociogate::pipeline::gateway::{Envelope, Gateway, Handled};
use sociogate::store::Store;

const WAIT: Duration = Duration::from_secs(30);

fn provider_bundles(client: &Client) -> Vec<Value> {
    client
        .received
        .iter()
        .filter(|m| m.routing_key.starts_with("provider.") && m.routing_key.ends_with(".fhir"))
        .map(|m| m.json())
        .collect()
}

fn provider_bundles_in(received: &[common::service::Received]) -> usize {
    received
        .iter()
        .filter(|m| m.routing_key.starts_with("provider.") && m.routing_key.ends_with(".fhir"))
        .count()
}

async fn end_to_end(database_url: String) {
    let cfg = config(&database_url);
    let mut client = Client::connect(&cfg).await;
    let running = app::start(cfg.clone())
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    client
        .publish(
            &read("examples/de-first-prescription-message.json"),
            Some("m-accepted"),
            None,
            None,
        )
        .await;
    client
        .publish(
            &read("examples/de-rejected-gaf-too-high.json"),
            Some("m-rejected"),
            None,
            None,
        )
        .await;
    client
        .publish(b"{ this is not json", Some("m-garbage"), None, None)
        .await;
    let all_there = client
        .wait_for(WAIT, |r| {
            let has = |p: &str| r.iter().any(|m| m.routing_key.starts_with(p));
            has("provider.")
                && has("payer.")
                && has("de.rejected")
                && r.iter()
                    .any(|m| m.exchange.is_empty() && m.routing_key == cfg.amqp.dead_letter_queue)
        })
        .await;
    assert!(
        all_there,
        "outputs: {:?}",
        client
            .received
            .iter()
            .map(|m| &m.routing_key)
            .collect::<Vec<_>>()
    );

    // Providers: a FHIR message Bundle per provider IK, plus the canonical JSON.
    let provider = client.with_key("provider.461782031.fhir");
    assert_eq!(
        provider.len(),
        1,
        "keys: {:?}",
        client
            .received
            .iter()
            .map(|m| &m.routing_key)
            .collect::<Vec<_>>()
    );
    let bundle = provider[0].json();
    assert_eq!(bundle["type"], "message");
    assert_eq!(
        bundle["entry"][0]["resource"]["eventCoding"]["code"],
        "referral-validated"
    );
    let task = &bundle["entry"][1]["resource"];
    assert_eq!(task["resourceType"], "Task");
    assert_eq!(task["status"], "ready");
    let types: Vec<&str> = bundle["entry"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["resource"]["resourceType"].as_str())
        .collect();
    for needed in [
        "ServiceRequest",
        "Patient",
        "Practitioner",
        "Condition",
        "Coverage",
    ] {
        assert!(types.contains(&needed), "{needed} in {types:?}");
    }
    assert_eq!(
        provider[0]
            .message_id
            .as_deref()
            .map(|m| m.ends_with(":provider")),
        Some(true)
    );
    assert_eq!(provider[0].correlation_id.as_deref(), Some("m-accepted"));
    let canonical = client.with_key("provider.461782031.canonical");
    assert_eq!(canonical.len(), 1);
    assert_eq!(canonical[0].json()["diagnoses"][0]["code"], "F20.0");

    // Insurers: a preauthorization Claim per payer IK, readable by the FHIR model.
    let insurer = client.with_key("payer.109519005");
    assert_eq!(insurer.len(), 1);
    let message = insurer[0].json();
    let claim = &message["entry"][1]["resource"];
    assert_eq!(claim["resourceType"], "Claim");
    assert_eq!(claim["use"], "preauthorization");
    assert_eq!(claim["insurer"]["identifier"]["value"], "109519005");
    assert!(claim["referral"]["reference"].as_str().is_some_and(|r| {
        message["entry"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|e| e["fullUrl"] == r)
    }));
    let typed: Result<fhir_sdk::r4b::resources::Resource, _> =
        serde_json::from_value(message.clone());
    assert!(typed.is_ok(), "the insurer Bundle is valid FHIR: {typed:?}");

    // Rejected: the OperationOutcome on the rejected exchange.
    let rejected = client.with_key("de.rejected");
    assert_eq!(rejected.len(), 1);
    assert_eq!(
        rejected[0]
            .headers
            .get("x-sociogate-rules")
            .map(String::as_str),
        Some("DE-DX-05")
    );
    assert_eq!(rejected[0].json()["resourceType"], "OperationOutcome");

    // Undecodable: the raw bytes on the dead-letter queue with the reason.
    let dead: Vec<_> = client
        .received
        .iter()
        .filter(|m| m.routing_key == cfg.amqp.dead_letter_queue)
        .collect();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].body, b"{ this is not json");
    assert!(
        dead[0]
            .headers
            .get("x-sociogate-reason")
            .is_some_and(|r| r.starts_with("GW-DEC-01"))
    );

    let counts = running
        .gateway
        .store()
        .status_counts()
        .await
        .unwrap_or_default();
    assert_eq!(
        counts,
        vec![
            ("accepted".to_owned(), 1),
            ("rejected".to_owned(), 1),
            ("unreadable".to_owned(), 1)
        ]
    );
    // The relay marks rows sent right after the broker's confirms; give it that moment.
    let mut depth = None;
    for _ in 0..100 {
        depth = running.gateway.store().outbox_depth().await.ok();
        if depth == Some(0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(depth, Some(0));
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn end_to_end_over_sqlite_forwards_to_providers_insurers_rejected_and_dead_letter() {
    end_to_end(sqlite_database()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn end_to_end_over_postgres_forwards_to_providers_insurers_rejected_and_dead_letter() {
    end_to_end(pg_database().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redelivered_or_resent_message_produces_one_output() {
    let cfg = config(&pg_database().await);
    let mut client = Client::connect(&cfg).await;
    let running = app::start(cfg.clone())
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    let body = referral_for(&kvnr(4711), 10, &uuid::Uuid::new_v4().to_string());
    client.publish(&body, Some("dup-1"), None, None).await;
    client.publish(&body, Some("dup-1"), None, None).await;
    // Without a message-id the Bundle.identifier is the key: the same payload again is a duplicate too.
    client.publish(&body, None, None, None).await;
    assert!(
        client
            .wait_for(WAIT, |r| r
                .iter()
                .any(|m| m.routing_key.starts_with("provider.")))
            .await
    );
    client.settle(Duration::from_secs(2)).await;
    assert_eq!(
        provider_bundles(&client).len(),
        2,
        "one output for message-id dup-1, one for the Bundle.identifier key"
    );
    let counts = running
        .gateway
        .store()
        .status_counts()
        .await
        .unwrap_or_default();
    assert_eq!(counts, vec![("accepted".to_owned(), 2)]);
    running.shutdown().await;
}

/// Both ways a commit reaches the relay at once: rows handed over in memory, and (with the
/// hand-over off, or its budget spent) the wake-up to claim them from the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_wakes_the_relay_instead_of_waiting_for_its_next_poll() {
    for handoff_bytes in [0, 16 * 1024 * 1024] {
        commit_reaches_the_relay_at_once(handoff_bytes).await;
    }
}

async fn commit_reaches_the_relay_at_once(handoff_bytes: i64) {
    let mut cfg = config(&pg_database().await);
    cfg.outbox.handoff_bytes = handoff_bytes;
    // An hour between polls: outputs can only arrive within WAIT if the commit wakes the relay.
    cfg.outbox.poll_interval_ms = 3_600_000;
    let mut client = Client::connect(&cfg).await;
    let running = app::start(cfg.clone())
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    for n in 0..3 {
        let body = referral_for(&kvnr(5100 + n), 10, &uuid::Uuid::new_v4().to_string());
        client
            .publish(&body, Some(&format!("wake-{n}")), None, None)
            .await;
        // One at a time, so each is published from an idle relay.
        assert!(
            client
                .wait_for(WAIT, |r| provider_bundles_in(r) == n as usize + 1
                    && r.iter()
                        .filter(|m| m.routing_key.starts_with("payer."))
                        .count()
                        == n as usize + 1)
                .await,
            "referral {n} was not forwarded (hand-over budget {handoff_bytes})"
        );
    }
    // Every published row was marked sent, in one statement per batch.
    let mut depth = -1;
    for _ in 0..100 {
        depth = running.gateway.store().outbox_depth().await.unwrap_or(-1);
        if depth == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(depth, 0);
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reply_to_gets_a_response_bundle_with_the_correlation_id() {
    let cfg = config(&sqlite_database());
    let mut client = Client::connect(&cfg).await;
    let reply_queue = client.reply_queue().await;
    let running = app::start(cfg.clone())
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    client
        .publish(
            &read("examples/de-first-prescription-message.json"),
            Some("r-1"),
            Some(&reply_queue),
            Some("corr-ok"),
        )
        .await;
    client
        .publish(
            &read("examples/de-rejected-not-f-diagnosis.json"),
            Some("r-2"),
            Some(&reply_queue),
            Some("corr-bad"),
        )
        .await;
    let replies =
        |r: &[common::service::Received]| r.iter().filter(|m| m.routing_key == reply_queue).count();
    assert!(client.wait_for(WAIT, |r| replies(r) == 2).await);
    let reply = |corr: &str| {
        client
            .received
            .iter()
            .find(|m| m.routing_key == reply_queue && m.correlation_id.as_deref() == Some(corr))
            .map(|m| m.json())
            .unwrap_or_else(|| panic!("no reply for {corr}"))
    };
    let ok = reply("corr-ok");
    assert_eq!(ok["entry"][0]["resource"]["response"]["code"], "ok");
    assert_eq!(ok["entry"][0]["resource"]["response"]["identifier"], "r-1");
    let bad = reply("corr-bad");
    assert_eq!(
        bad["entry"][0]["resource"]["response"]["code"],
        "fatal-error"
    );
    assert_eq!(
        bad["entry"][1]["resource"]["issue"][0]["details"]["coding"][0]["code"],
        "DE-DX-02"
    );
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_messages_end_on_the_dead_letter_queue_or_rejected_exchange_and_the_gateway_keeps_running()
 {
    let cfg = config(&sqlite_database());
    let mut client = Client::connect(&cfg).await;
    let running = app::start(cfg.clone())
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    let oversized = vec![b' '; cfg.pipeline.max_bytes + 1];
    client.publish(&oversized, Some("p-big"), None, None).await;
    client.publish(b"", Some("p-empty"), None, None).await;
    client.publish(br#"{"resourceType":"ReferralRequest","status":"active","intent":"order","subject":{"reference":"Patient/1"}}"#, Some("p-stu3"), None, None).await;
    // A referral whose jurisdiction nothing decides: rejected with that reason.
    let nowhere = br##"{"resourceType":"ServiceRequest","status":"active","intent":"order",
        "contained":[{"resourceType":"Patient","id":"p","identifier":[{"system":"urn:example:local","value":"42"}]}],
        "code":{"coding":[{"system":"https://sociogate.org/fhir/CodeSystem/service","code":"sociotherapy"}]},
        "subject":{"reference":"#p"}}"##;
    client.publish(nowhere, Some("p-nowhere"), None, None).await;
    // After all that, a good referral still goes through.
    client
        .publish(
            &read("examples/de-first-prescription-message.json"),
            Some("p-good"),
            None,
            None,
        )
        .await;
    let dlq = cfg.amqp.dead_letter_queue.clone();
    assert!(
        client
            .wait_for(WAIT, |r| r.iter().filter(|m| m.routing_key == dlq).count()
                == 3
                && r.iter().any(|m| m.routing_key.starts_with("provider."))
                && r.iter().any(|m| m.routing_key == "unknown.rejected"))
            .await,
        "received: {:?}",
        client
            .received
            .iter()
            .map(|m| &m.routing_key)
            .collect::<Vec<_>>()
    );
    let reasons: Vec<String> = client
        .received
        .iter()
        .filter(|m| m.routing_key == dlq)
        .filter_map(|m| m.headers.get("x-sociogate-rules").cloned())
        .collect();
    for code in ["GW-DEC-04", "GW-DEC-07", "GW-DEC-03"] {
        assert!(reasons.iter().any(|r| r == code), "{code} in {reasons:?}");
    }
    let nowhere = client.with_key("unknown.rejected");
    assert_eq!(
        nowhere[0]
            .headers
            .get("x-sociogate-rules")
            .map(String::as_str),
        Some("GW-MAP-06")
    );
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_over_postgres_never_exceed_the_120_hour_budget() {
    let database = pg_database().await;
    let cfg = config(&database);
    let mut client = Client::connect(&cfg).await;
    // Two instances on separate connections and pools, consuming the same queue.
    let first = app::start(cfg.clone())
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    let second = app::start(cfg.clone())
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    let patient = kvnr(9_000_001);
    // 12 referrals of 30 hours for one patient: only 4 fit into 120 hours.
    for n in 0..12 {
        client
            .publish(
                &referral_for(&patient, 30, &uuid::Uuid::new_v4().to_string()),
                Some(&format!("race-{n}")),
                None,
                None,
            )
            .await;
    }
    let settled = client
        .wait_for(WAIT, |r| {
            r.iter()
                .filter(|m| {
                    m.routing_key.starts_with("provider.") && m.routing_key.ends_with(".fhir")
                })
                .count()
                + r.iter().filter(|m| m.routing_key == "de.rejected").count()
                == 12
        })
        .await;
    assert!(settled, "received {}", client.received.len());
    let accepted = provider_bundles(&client).len();
    let rejected: Vec<_> = client.with_key("de.rejected");
    assert_eq!(accepted, 4);
    assert_eq!(rejected.len(), 8);
    assert!(
        rejected
            .iter()
            .all(|m| m.headers.get("x-sociogate-rules").map(String::as_str) == Some("DE-BU-01"))
    );
    let key = format!("http://fhir.de/sid/gkv/kvid-10|{patient}");
    assert_eq!(
        first.gateway.store().ledger_minutes(&key).await.ok(),
        Some(7_200)
    );
    first.shutdown().await;
    second.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_intake_answers_with_verdicts_and_fhir_response_bundles() {
    let gateway = http_only_gateway().await;
    let (cfg, base) = (&gateway.config, &gateway.base);
    let http = reqwest::Client::new();
    let post = |path: &str, body: Vec<u8>, ct: &str, key: Option<&str>| {
        let mut req = http
            .post(format!("{base}{path}"))
            .header("content-type", ct.to_owned())
            .body(body);
        if let Some(k) = key {
            req = req.header("idempotency-key", k.to_owned());
        }
        req.send()
    };
    let ok = post(
        "/referrals",
        read("examples/de-first-prescription-message.json"),
        "application/fhir+json",
        Some(&unique()),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(ok.status().as_u16(), 200);
    let body: Value = ok.json().await.unwrap_or_default();
    assert_eq!(body["verdict"], "accepted");

    let key = unique();
    let rejected = post(
        "/referrals",
        read("examples/de-rejected-no-approval.json"),
        "application/fhir+json",
        Some(&key),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(rejected.status().as_u16(), 422);
    let again = post(
        "/referrals",
        read("examples/de-rejected-no-approval.json"),
        "application/fhir+json",
        Some(&key),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let again: Value = again.json().await.unwrap_or_default();
    assert_eq!(again["duplicate"], true);
    assert_eq!(again["verdict"], "rejected");

    let message = post(
        "/fhir/$process-message",
        read("examples/de-gp-muster28.json"),
        "application/fhir+json",
        None,
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(message.status().as_u16(), 200);
    let bundle: Value = message.json().await.unwrap_or_default();
    assert_eq!(bundle["entry"][0]["resource"]["response"]["code"], "ok");

    let garbage = post(
        "/fhir/$process-message",
        b"<<<".to_vec(),
        "application/fhir+json",
        None,
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(garbage.status().as_u16(), 400);
    let wrong_type = post("/referrals", b"hello".to_vec(), "text/plain", None)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(wrong_type.status().as_u16(), 415);
    let big = post(
        "/referrals",
        vec![b' '; cfg.pipeline.max_bytes + 10],
        "application/fhir+json",
        None,
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(big.status().as_u16(), 413);
    let big: Value = big.json().await.unwrap_or_default();
    assert_eq!(big["resourceType"], "OperationOutcome");

    let health = http
        .get(format!("{base}/health"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(health.status().as_u16(), 200);
    let ready = http
        .get(format!("{base}/ready"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        ready.status().as_u16(),
        200,
        "AMQP disabled: ready needs only the store"
    );
    gateway.running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cda_and_fhir_xml_are_accepted_over_amqp_and_http_and_forwarded_as_fhir() {
    let cfg = config(&sqlite_database());
    let mut client = Client::connect(&cfg).await;
    let running = app::start(cfg.clone())
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));

    // AMQP: a CDA referral and a FHIR XML referral (the XML twin of the JSON example).
    let cda = read("examples/de-first-prescription.cda.xml");
    client.publish(&cda, Some("m-cda"), None, None).await;
    let json: Value =
        serde_json::from_slice(&read("examples/nl-clinical-sociotherapy-accepted.json"))
            .unwrap_or_default();
    let xml = sociogate::encode::fhir_xml::to_fhir_xml(&json).unwrap_or_else(|e| panic!("{e}"));
    client
        .publish(xml.as_bytes(), Some("m-xml"), None, None)
        .await;
    let forwarded = |r: &[common::service::Received], id: &str| {
        r.iter().any(|m| {
            m.routing_key.ends_with(".fhir")
                && m.headers
                    .get("x-sociogate-inbound-message-id")
                    .map(String::as_str)
                    == Some(id)
        })
    };
    assert!(
        client
            .wait_for(WAIT, |r| forwarded(r, "m-cda") && forwarded(r, "m-xml"))
            .await,
        "both referrals reach the provider"
    );
    let bundle_of = |id: &str| {
        client
            .received
            .iter()
            .find(|m| {
                m.routing_key.ends_with(".fhir")
                    && m.headers
                        .get("x-sociogate-inbound-message-id")
                        .map(String::as_str)
                        == Some(id)
            })
            .map(|m| m.json())
            .unwrap_or(Value::Null)
    };
    let types = |bundle: &Value| -> Vec<String> {
        bundle["entry"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e["resource"]["resourceType"].as_str().map(str::to_owned))
            .collect()
    };
    let from_cda = types(&bundle_of("m-cda"));
    for t in [
        "Task",
        "ServiceRequest",
        "Patient",
        "Condition",
        "DocumentReference",
    ] {
        assert!(from_cda.iter().any(|x| x == t), "{t} missing: {from_cda:?}");
    }
    // FHIR XML forwards the sender's resources (in their JSON shape), like FHIR JSON does.
    let from_xml = types(&bundle_of("m-xml"));
    for t in ["Task", "ServiceRequest", "Patient", "Practitioner"] {
        assert!(from_xml.iter().any(|x| x == t), "{t} missing: {from_xml:?}");
    }

    // HTTP: the same CDA document (another idempotency key), declared as CDA.
    let answer = reqwest::Client::new()
        .post(format!("http://{}/referrals", running.http_addr))
        .header("content-type", "application/hl7-cda+xml")
        .header("idempotency-key", unique())
        .body(cda)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(answer.status().as_u16(), 200);
    let body: Value = answer.json().await.unwrap_or_default();
    assert_eq!(body["verdict"], "accepted", "{body}");
    running.shutdown().await;
}

fn envelope(body: Vec<u8>, message_id: &str) -> Envelope {
    Envelope {
        channel: "amqp",
        body: body.into(),
        content_type: Some("application/fhir+json".to_owned()),
        message_id: Some(message_id.to_owned()),
        headers: serde_json::json!({}),
        ..Envelope::default()
    }
}

/// On PostgreSQL the writers run on a thread of their own with connections of their own. They
/// must end, and close those connections, when the last gateway goes: a process that builds
/// gateways again and again (tests, embedding) must not collect threads and connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_writers_connections_close_when_the_last_gateway_is_dropped() {
    use sqlx::Connection as _;
    let database = pg_database().await;
    let cfg = config(&database);
    let _cleanup = DatabaseCleanup(cfg.clone());
    let name = database.rsplit('/').next().unwrap_or_default().to_owned();
    let admin = pg_admin_url();
    let mut observer = sqlx::PgConnection::connect(&admin)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let mut connections = async || -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE datname = $1")
            .bind(&name)
            .fetch_one(&mut observer)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    };
    let store = Store::connect(&database, 8)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let before = connections().await;

    let gateway = Gateway::new(
        std::sync::Arc::new(common::engine()),
        store.clone(),
        cfg.amqp.clone(),
        "en",
    );
    let body = referral_for(&kvnr(9_300_001), 30, &uuid::Uuid::new_v4().to_string());
    let handled = gateway
        .handle(&envelope(body, "writers-connections"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        matches!(
            handled,
            Handled::New {
                verdict: Verdict::Accepted,
                ..
            }
        ),
        "{handled:?}"
    );
    let with_writers = connections().await;
    assert!(
        with_writers > before,
        "the writers opened no connections of their own: {before} before, {with_writers} with them"
    );

    drop(gateway);
    let mut now = connections().await;
    for _ in 0..100 {
        if now == before {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        now = connections().await;
    }
    assert_eq!(
        now, before,
        "the writers' connections stayed open after the last gateway was dropped"
    );
    // The store itself is still usable: only the writers' own pool was closed.
    let accepted = store
        .message_ids_with_status("accepted", 10)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(accepted.len(), 1, "{accepted:?}");
}

/// Referrals handled at the same moment are written by one writer, several to a transaction.
/// The invariants of one transaction per message must still hold: one patient's budget is
/// never exceeded, a repeat is one output, and a message the database refuses fails alone
/// instead of taking its batch-mates with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn referrals_committed_together_keep_the_budget_and_idempotency_and_fail_alone() {
    let database = pg_database().await;
    let cfg = config(&database);
    let _cleanup = DatabaseCleanup(cfg.clone());
    let store = Store::connect(&database, 8)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let gateway = Gateway::new(
        std::sync::Arc::new(common::engine()),
        store.clone(),
        cfg.amqp.clone(),
        "en",
    );
    let patient = kvnr(9_000_002);
    let mut envelopes = Vec::new();
    // Ten referrals of 30 hours for one patient: four fit into 120 hours.
    for n in 0..10 {
        let body = referral_for(&patient, 30, &uuid::Uuid::new_v4().to_string());
        envelopes.push(envelope(body, &format!("same-patient-{n}")));
    }
    // The first two again, as a broker redelivers them.
    envelopes.push(envelopes[0].clone());
    envelopes.push(envelopes[1].clone());
    // Six other patients, one referral each.
    for n in 0..6 {
        let body = referral_for(&kvnr(9_100_000 + n), 30, &uuid::Uuid::new_v4().to_string());
        envelopes.push(envelope(body, &format!("other-patient-{n}")));
    }
    // PostgreSQL refuses text with a NUL character: this message's row cannot be written.
    let refused = referral_for(&kvnr(9_200_000), 30, &uuid::Uuid::new_v4().to_string());
    envelopes.push(envelope(refused, "refused\0id"));

    let tasks: Vec<_> = envelopes
        .into_iter()
        .map(|e| {
            let gateway = gateway.clone();
            tokio::spawn(async move { (e.message_id.clone(), gateway.handle(&e).await) })
        })
        .collect();
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.unwrap_or_else(|e| panic!("{e}")));
    }

    let refused: Vec<_> = results
        .iter()
        .filter(|(id, _)| id.as_deref() == Some("refused\0id"))
        .collect();
    assert_eq!(refused.len(), 1);
    assert!(refused[0].1.is_err(), "{:?}", refused[0].1);

    let verdicts = |prefix: &str| -> (usize, usize, usize) {
        let mut counts = (0, 0, 0);
        for (id, result) in &results {
            if !id.as_deref().is_some_and(|id| id.starts_with(prefix)) {
                continue;
            }
            match result {
                Ok(Handled::New { verdict, .. }) if *verdict == Verdict::Accepted => counts.0 += 1,
                Ok(Handled::New { .. }) => counts.1 += 1,
                Ok(Handled::Duplicate { .. }) => counts.2 += 1,
                Err(e) => panic!("{id:?} failed: {e}"),
            }
        }
        counts
    };
    // (accepted, rejected, duplicate)
    assert_eq!(verdicts("same-patient-"), (4, 6, 2));
    assert_eq!(verdicts("other-patient-"), (6, 0, 0));

    // Each repeat names the gateway id of the one delivery that was written.
    for id in ["same-patient-0", "same-patient-1"] {
        let ids: Vec<&str> = results
            .iter()
            .filter(|(m, _)| m.as_deref() == Some(id))
            .filter_map(|(_, r)| match r {
                Ok(Handled::New { gateway_id, .. } | Handled::Duplicate { gateway_id, .. }) => {
                    Some(gateway_id.as_str())
                }
                Err(_) => None,
            })
            .collect();
        assert_eq!(ids.len(), 2);
        assert_eq!(ids[0], ids[1], "{id}");
    }

    let key = format!("http://fhir.de/sid/gkv/kvid-10|{patient}");
    assert_eq!(store.ledger_minutes(&key).await.ok(), Some(4 * 30 * 60));
    let mut counts = store.status_counts().await.unwrap_or_default();
    counts.sort();
    assert_eq!(
        counts,
        vec![("accepted".to_owned(), 10), ("rejected".to_owned(), 6)]
    );
    store.close().await;
}

/// A relay running in the test's runtime, as `serve` runs it.
struct Relay {
    stop: tokio_util::sync::CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Relay {
    fn start(
        store: &Store,
        connection: &std::sync::Arc<lapin::Connection>,
        cfg: &sociogate::config::Config,
        handoff: Option<&std::sync::Arc<sociogate::forward::relay::HandoffReceiver>>,
    ) -> Relay {
        let stop = tokio_util::sync::CancellationToken::new();
        let task = tokio::spawn(sociogate::forward::relay::run(
            store.clone(),
            connection.clone(),
            cfg.outbox.clone(),
            handoff.cloned(),
            stop.clone(),
        ));
        Relay { stop, task }
    }

    /// Stops the relay and waits until it has returned (after its drain).
    async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

/// What a relay test runs against: a broker client bound to `cfg`'s exchanges, the store and
/// a broker connection of the relay's own.
async fn relay_parts(
    cfg: &sociogate::config::Config,
) -> (Client, Store, std::sync::Arc<lapin::Connection>) {
    let client = Client::connect(cfg).await;
    let store = Store::connect(&cfg.store.database_url, 1)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let connection = std::sync::Arc::new(
        lapin::Connection::connect(&cfg.amqp.url, lapin::ConnectionProperties::default())
            .await
            .unwrap_or_else(|e| panic!("{e}")),
    );
    (client, store, connection)
}

/// Writes one message row and one provider output claimed for `handoff`'s relay, commits, and
/// hands the row over; returns the output's row id.
async fn write_handed_over(
    store: &Store,
    handoff: &sociogate::forward::relay::Handoff,
    cfg: &sociogate::config::Config,
    gateway_id: &str,
) -> i64 {
    use sociogate::store::NewOutbound;
    let out = NewOutbound {
        kind: "provider".to_owned(),
        exchange: cfg.amqp.referrals_exchange.clone(),
        routing_key: format!("handed.{gateway_id}.fhir"),
        content_type: "application/fhir+json".to_owned(),
        correlation_id: None,
        headers: "{}".to_owned(),
        body: format!(r#"{{"resourceType":"Bundle","id":"{gateway_id}"}}"#).into_bytes(),
    };
    let mut tx = store.begin().await.unwrap_or_else(|e| panic!("{e}"));
    tx.insert_message(&raw_message(gateway_id, b"{}"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let reservation = handoff
        .reserve(out.body.len())
        .unwrap_or_else(|| panic!("a 1 MiB budget holds one small row"));
    let ids = tx
        .enqueue_claimed(&[(gateway_id, &out)], &reservation.claim())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    tx.commit().await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(ids.len(), 1);
    reservation.hand_over(vec![(ids[0], gateway_id.to_owned(), out)]);
    ids[0]
}

/// The writers hand committed outbox rows to the relay of their process, claimed for it in the
/// same transaction: the relay publishes them from memory, and no other relay may take them
/// while the lease lasts. When the handing relay is gone, the rows are not lost: once the
/// lease has run out, any relay claims them from the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handed_over_rows_are_published_from_memory_and_claimed_from_the_store_after_their_lease() {
    use sociogate::forward::relay;
    let mut cfg = config(&sqlite_database());
    cfg.outbox.handoff_bytes = 1024 * 1024;
    // Longer than the test waits: a row that arrives was published from memory.
    cfg.outbox.lease_ms = 120_000;
    let (mut client, store, connection) = relay_parts(&cfg).await;

    let (handoff, receiver) =
        relay::handoff(&cfg.outbox).unwrap_or_else(|| panic!("a budget turns the hand-over on"));
    let first = write_handed_over(&store, &handoff, &cfg, "handed-1").await;
    // Claimed for the handing relay: another relay finds nothing to take.
    let taken = store
        .claim_outbox("another-relay", 10, 1_000)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(taken.is_empty(), "{taken:?}");
    let running = Relay::start(&store, &connection, &cfg, Some(&receiver));
    assert!(
        client
            .wait_for(WAIT, |r| r
                .iter()
                .any(|m| m.routing_key == "handed.handed-1.fhir"))
            .await,
        "the handed-over row was published"
    );
    let published = client.with_key("handed.handed-1");
    assert_eq!(
        published[0].message_id.as_deref(),
        Some("sociogate:handed-1:provider")
    );
    assert_eq!(published[0].json()["id"], "handed-1");
    let mut depth = -1;
    for _ in 0..100 {
        depth = store.outbox_depth().await.unwrap_or(-1);
        if depth == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(depth, 0, "row {first} was marked sent");
    running.stop().await;

    // A hand-over whose relay is gone (a crash between commit and publish).
    cfg.outbox.lease_ms = 2_000;
    let (orphaned, gone) =
        relay::handoff(&cfg.outbox).unwrap_or_else(|| panic!("a budget turns the hand-over on"));
    drop(gone);
    write_handed_over(&store, &orphaned, &cfg, "handed-2").await;
    let other = Relay::start(&store, &connection, &cfg, None);
    assert!(
        client
            .wait_for(WAIT, |r| r
                .iter()
                .any(|m| m.routing_key == "handed.handed-2.fhir"))
            .await,
        "another relay published the orphaned row after its lease"
    );
    client.settle(Duration::from_millis(500)).await;
    assert_eq!(client.with_key("handed.").len(), 2, "each row once");
    other.stop().await;
    store.close().await;
}

/// A relay publishing many small batches (a sent mark after each batch's confirms) that is
/// stopped mid-way: every row reaches the broker once and is marked sent by the time the relay
/// has stopped and `serve` has closed the broker connection and the store, so none is left to
/// be published again by another relay after its lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_that_stops_has_marked_every_row_it_published_sent() {
    use sociogate::forward::relay;
    let mut cfg = config(&sqlite_database());
    cfg.outbox.handoff_bytes = 1024 * 1024;
    cfg.outbox.lease_ms = 120_000;
    // Small batches: many of them.
    cfg.outbox.batch_size = 4;
    let (mut client, store, connection) = relay_parts(&cfg).await;
    let (handoff, receiver) =
        relay::handoff(&cfg.outbox).unwrap_or_else(|| panic!("a budget turns the hand-over on"));
    const ROWS: usize = 500;
    for n in 0..ROWS {
        write_handed_over(&store, &handoff, &cfg, &format!("stop-{n}")).await;
    }
    let running = Relay::start(&store, &connection, &cfg, Some(&receiver));
    assert!(
        client
            .wait_for(WAIT, |r| r
                .iter()
                .any(|m| m.routing_key.starts_with("handed.stop-")))
            .await,
        "the relay publishes"
    );
    running.stop().await;
    // What `serve` does next: close the broker connection, then the store.
    let _ = connection.close(200, "test done".into()).await;
    store.close().await;
    let store = Store::connect(&cfg.store.database_url, 1)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        store.outbox_depth().await.unwrap_or(-1),
        0,
        "every row was published and marked sent before the relay returned"
    );
    assert!(
        client
            .wait_for(WAIT, |r| r
                .iter()
                .filter(|m| m.routing_key.starts_with("handed.stop-"))
                .count()
                >= ROWS)
            .await
    );
    client.settle(Duration::from_millis(300)).await;
    assert_eq!(client.with_key("handed.stop-").len(), ROWS, "each row once");
    store.close().await;
}

/// The bench's broker baseline (two hops over quorum queues, persistent, confirmed, acked)
/// carries every message to the last queue and cleans up after itself within its bounds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bench_broker_baseline_relays_every_message_through_both_hops() {
    let url = common::service::amqp_url();
    let messages: Vec<Vec<u8>> = (0..300)
        .map(|i| format!(r#"{{"n":{i}}}"#).into_bytes())
        .collect();
    let rate = common::service::bounded(
        "bench baseline",
        sociogate::bench::broker::broker_baseline(
            &url,
            &sociogate::bench::broker::Payloads::fhir_json(messages),
            16,
        ),
    )
    .await;
    // Ok only when all 300 arrived from the third queue (the baseline counts them there).
    match rate {
        Ok(rate) => assert!(rate.is_finite() && rate > 0.0, "rate {rate}"),
        Err(e) => panic!("the baseline failed: {e}"),
    }
}
