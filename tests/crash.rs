//! Crash safety of `sociogate serve` as a separate process: SIGKILL in the middle of 1,000
//! messages, restart, and every message is forwarded, none twice; and transient database
//! failures retry and then dead-letter instead of losing the message.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::service::{Client, config, kvnr, pg_database, referral_for, sqlite_database};
use sociogate::config::Config;

/// Starts `serve` with warnings and errors going to `stderr`.
fn spawn_gateway(cfg: &Config, stderr: Stdio) -> Child {
    Command::new(env!("CARGO_BIN_EXE_sociogate"))
        .arg("serve")
        .env("SOCIOGATE_HTTP__LISTEN", "127.0.0.1:0")
        .env("DATABASE_URL", &cfg.store.database_url)
        .env("AMQP_URL", &cfg.amqp.url)
        .env("SOCIOGATE_AMQP__INBOUND_QUEUE", &cfg.amqp.inbound_queue)
        .env(
            "SOCIOGATE_AMQP__REFERRALS_EXCHANGE",
            &cfg.amqp.referrals_exchange,
        )
        .env(
            "SOCIOGATE_AMQP__INSURERS_EXCHANGE",
            &cfg.amqp.insurers_exchange,
        )
        .env(
            "SOCIOGATE_AMQP__REJECTED_EXCHANGE",
            &cfg.amqp.rejected_exchange,
        )
        .env(
            "SOCIOGATE_AMQP__DEAD_LETTER_QUEUE",
            &cfg.amqp.dead_letter_queue,
        )
        .env("SOCIOGATE_AMQP__PUBLISH_CANONICAL", "false")
        .env("SOCIOGATE_OUTBOX__POLL_INTERVAL_MS", "20")
        .env(
            "SOCIOGATE_OUTBOX__LEASE_MS",
            cfg.outbox.lease_ms.to_string(),
        )
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .unwrap_or_else(|e| panic!("starting sociogate serve: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_a_batch_of_1000_then_restart_forwards_every_message_once() {
    const N: usize = 1_000;
    let mut cfg = config(&sqlite_database());
    // Rows the killed relay had claimed wait for their lease to expire; a short one keeps the
    // test short.
    cfg.outbox.lease_ms = 3_000;
    let mut client = Client::connect(&cfg).await;
    let mut gateway = spawn_gateway(&cfg, Stdio::null());
    for n in 0..N {
        let body = referral_for(
            &kvnr(100_000 + n as u32),
            10,
            &uuid::Uuid::new_v4().to_string(),
        );
        client
            .publish(&body, Some(&format!("kill-{n}")), None, None)
            .await;
    }
    let provider = |r: &[common::service::Received]| {
        r.iter()
            .filter(|m| m.routing_key.starts_with("provider."))
            .count()
    };
    // Kill it while it is busy: some outputs are out, most are not.
    assert!(
        client
            .wait_for(Duration::from_secs(120), |r| provider(r) >= 50)
            .await,
        "the gateway started forwarding"
    );
    gateway.kill().unwrap_or_else(|e| panic!("SIGKILL: {e}"));
    let _ = gateway.wait();
    let before_restart = provider(&client.received);
    assert!(
        before_restart < N,
        "the kill came before the batch was done ({before_restart})"
    );

    // The restarted gateway's log, to see that its clean shutdown logs no error.
    let log_path = std::env::temp_dir().join(format!(
        "sociogate-crash-{}.log",
        uuid::Uuid::new_v4().simple()
    ));
    let log = std::fs::File::create(&log_path).unwrap_or_else(|e| panic!("{e}"));
    let mut restarted = spawn_gateway(&cfg, Stdio::from(log));
    let distinct_inputs = |r: &[common::service::Received]| {
        r.iter()
            .filter(|m| m.routing_key.starts_with("provider."))
            .filter_map(|m| m.headers.get("x-sociogate-inbound-message-id").cloned())
            .collect::<BTreeSet<_>>()
            .len()
    };
    let complete = client
        .wait_for(Duration::from_secs(300), |r| distinct_inputs(r) == N)
        .await;
    client.settle(Duration::from_secs(2)).await;
    assert!(
        complete,
        "forwarded {} of {N}",
        distinct_inputs(&client.received)
    );

    // Exactly one output per input: a repeat after the crash can only be the same output
    // (same message-id) published again, never a second, different output.
    let mut outputs: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut deliveries = 0;
    for m in client
        .received
        .iter()
        .filter(|m| m.routing_key.starts_with("provider."))
    {
        deliveries += 1;
        let input = m
            .headers
            .get("x-sociogate-inbound-message-id")
            .cloned()
            .unwrap_or_default();
        outputs
            .entry(input)
            .or_default()
            .insert(m.message_id.clone().unwrap_or_default());
    }
    assert_eq!(outputs.len(), N);
    assert!(
        outputs.values().all(|ids| ids.len() == 1),
        "one distinct output per input"
    );
    let redelivered = deliveries - N;
    // The relay marks a batch sent right after its confirms; only that window can repeat.
    assert!(redelivered <= 256, "{redelivered} repeats");

    // Graceful shutdown: SIGTERM finishes in-flight work and exits 0.
    let term = Command::new("kill")
        .arg("-TERM")
        .arg(restarted.id().to_string())
        .status();
    assert!(term.is_ok_and(|s| s.success()));
    let status = restarted.wait().unwrap_or_else(|e| panic!("{e}"));
    assert!(status.success(), "exit status after SIGTERM: {status}");
    // Closing its channels before the connection: lapin used to log "invalid channel state:
    // Closing" as an ERROR on every clean shutdown.
    let log = std::fs::read_to_string(&log_path).unwrap_or_else(|e| panic!("{e}"));
    let _ = std::fs::remove_file(&log_path);
    let errors: Vec<&str> = log.lines().filter(|l| l.contains("ERROR")).collect();
    assert!(errors.is_empty(), "errors logged: {errors:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_failure_retries_then_dead_letters_without_losing_the_message() {
    let database = pg_database().await;
    let cfg = config(&database);
    let mut client = Client::connect(&cfg).await;
    let running = sociogate::app::start(cfg.clone())
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    // Break the store: the messages table disappears under the running gateway.
    let admin = {
        use sqlx::Connection as _;
        sqlx::PgConnection::connect(&database)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    };
    let mut admin = admin;
    sqlx::query("ALTER TABLE messages RENAME TO messages_away")
        .execute(&mut admin)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let body = referral_for(&kvnr(77), 5, &uuid::Uuid::new_v4().to_string());
    client.publish(&body, Some("transient-1"), None, None).await;
    let dlq = cfg.amqp.dead_letter_queue.clone();
    let dead = client
        .wait_for(Duration::from_secs(30), |r| {
            r.iter().any(|m| m.routing_key == dlq)
        })
        .await;
    assert!(dead, "the message reached the dead-letter queue");
    let parked = client
        .received
        .iter()
        .find(|m| m.routing_key == dlq)
        .cloned()
        .unwrap_or_else(|| panic!("no DLQ message"));
    assert_eq!(parked.body, body, "the raw bytes are kept");
    let reason = parked
        .headers
        .get("x-sociogate-reason")
        .cloned()
        .unwrap_or_default();
    assert!(reason.contains("after 3 attempts"), "{reason}");
    assert!(
        client.with_key("provider.").is_empty(),
        "nothing was forwarded while the store was down"
    );

    // Repaired, the gateway carries on with the next message.
    sqlx::query("ALTER TABLE messages_away RENAME TO messages")
        .execute(&mut admin)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    client
        .publish(
            &referral_for(&kvnr(78), 5, &uuid::Uuid::new_v4().to_string()),
            Some("transient-2"),
            None,
            None,
        )
        .await;
    assert!(
        client
            .wait_for(Duration::from_secs(30), |r| r
                .iter()
                .any(|m| m.routing_key.starts_with("provider.")))
            .await
    );
    running.shutdown().await;
}
