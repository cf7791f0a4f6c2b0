//! The service's logs carry ids and rule codes, never patient data.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::read;
use common::service::{DatabaseCleanup, config, sqlite_database};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_name_messages_but_no_patient() {
    let database = sqlite_database();
    let _cleanup = DatabaseCleanup(config(&database));
    let mut child = Command::new(env!("CARGO_BIN_EXE_sociogate"))
        .args(["serve", "--log-json"])
        .env("SOCIOGATE_HTTP__LISTEN", "127.0.0.1:0")
        .env("SOCIOGATE_AMQP__URL", "")
        .env("DATABASE_URL", &database)
        .env("RUST_LOG", "debug")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    let stderr = child
        .stderr
        .take()
        .unwrap_or_else(|| panic!("stderr is piped"));
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut lines = Vec::new();
    let addr = loop {
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|e| panic!("no listen line: {e}; {lines:?}"));
        let parsed: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
        lines.push(line);
        if let Some(addr) = parsed["fields"]["http_addr"].as_str() {
            break addr.to_owned();
        }
    };
    let http = reqwest::Client::new();
    for example in [
        "examples/de-first-prescription-message.json",
        "examples/de-rejected-invalid-kvnr.json",
    ] {
        let response = http
            .post(format!("http://{addr}/referrals"))
            .header("content-type", "application/fhir+json")
            .header("idempotency-key", "log-test-".to_owned() + example)
            .body(read(example))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(response.status().is_success() || response.status().as_u16() == 422);
    }
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let _ = child.wait();
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(2)) {
        lines.push(line);
    }
    let log = lines.join("\n");
    assert!(
        log.contains("Message processed"),
        "the processing is logged: {log}"
    );
    assert!(log.contains("DE-ID-01"), "rule codes are logged");
    // The patients of both examples: KVNRs, names, birth dates.
    for secret in [
        "L204187362",
        "X110411674",
        "Lindner",
        "Markus",
        "1980-03-14",
        "Fischer",
        "Oliver",
        "1982-02-28",
    ] {
        assert!(!log.contains(secret), "{secret} appears in the logs");
    }
}
