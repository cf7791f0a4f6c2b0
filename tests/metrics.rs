//! The Prometheus metrics of a running gateway count what it did. A test binary of its own: the
//! metrics recorder is global, and only the first gateway of a process installs it.

mod common;

use common::read;
use common::service::{http_only_gateway, unique};

/// The value of the first sample named `name` (without labels or with them) whose line holds
/// every one of `labels`, e.g. `verdict="accepted"`.
fn sample(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.split(['{', ' ']).next() == Some(name))
        .find(|l| labels.iter().all(|label| l.contains(label)))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_verdicts_and_group_commits_with_their_duration() {
    let gateway = http_only_gateway().await;
    let base = &gateway.base;
    let http = reqwest::Client::new();
    for (example, status) in [
        ("examples/de-first-prescription-message.json", 200),
        ("examples/de-rejected-no-approval.json", 422),
    ] {
        let response = http
            .post(format!("{base}/referrals"))
            .header("content-type", "application/fhir+json")
            .header("idempotency-key", unique())
            .body(read(example))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(response.status().as_u16(), status, "{example}");
    }
    let text = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .text()
        .await
        .unwrap_or_else(|e| panic!("{e}"));

    let verdicts = |verdict: &str| {
        sample(
            &text,
            "sociogate_pipeline_messages_total",
            &[&format!("verdict=\"{verdict}\"")],
        )
    };
    assert_eq!(verdicts("accepted"), Some(1.0), "{text}");
    assert_eq!(verdicts("rejected"), Some(1.0), "{text}");
    // Each referral came alone, so each was a group commit of one.
    assert_eq!(
        sample(&text, "sociogate_store_committed_messages_total", &[]),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "sociogate_store_commits_total", &[]),
        Some(2.0)
    );
    assert_eq!(
        sample(&text, "sociogate_store_commit_seconds_count", &[]),
        Some(2.0),
        "{text}"
    );
    let took = sample(&text, "sociogate_store_commit_seconds_sum", &[]).unwrap_or(0.0);
    assert!(took > 0.0 && took < 60.0, "commit seconds {took}");
    assert_eq!(
        sample(
            &text,
            "sociogate_store_commit_seconds_bucket",
            &["le=\"+Inf\""]
        ),
        Some(2.0)
    );
    gateway.running.shutdown().await;
}
