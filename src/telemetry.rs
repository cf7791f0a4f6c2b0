//! Telemetry: log setup and the Prometheus metrics the gateway exports.
//!
//! Metric names follow `sociogate_<stage>_<noun>_<unit>`. Logs carry gateway ids, message ids,
//! correlation ids and rule codes, never patient names, birth dates or identifiers.

use std::time::Duration;

use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::check::Verdict;

/// Installs the global Prometheus recorder; returns the handle that renders `/metrics`.
/// Installing twice (e.g. two gateways in one test process) reuses nothing and returns `None`.
pub fn install_metrics() -> Option<PrometheusHandle> {
    PrometheusBuilder::new()
        .set_buckets(&[
            0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
        ])
        .ok()?
        .install_recorder()
        .ok()
}

/// Initialises `tracing` for the service: JSON lines when `json` is set, else human-readable.
pub fn init_logs(json: bool) {
    install_logs("info,sqlx=warn,lapin=warn", json);
}

/// Initialises `tracing` for the one-shot commands (`check`, `bench`, ...): warnings and errors
/// only, unless `RUST_LOG` says otherwise.
pub fn init_command_logs() {
    install_logs("warn", false);
}

/// Logs to stderr, filtered by `RUST_LOG` or else `default_filter`.
fn install_logs(default_filter: &str, json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    // Colour codes only on a terminal: in a log file or the journal they are noise.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

/// Logs a panic with its place but not its message, in place of the default hook's print to
/// stderr: a panic's message can quote the value it failed on (a serde error does), which may
/// be a patient's data, and that never goes to the logs. The message in question ends with
/// `GW-INT-01` (see [`crate::pipeline::Engine::internal_failure`]). With `RUST_BACKTRACE` set,
/// the backtrace is logged too: it names functions and source lines, never values.
pub fn init_panic_log() {
    std::panic::set_hook(Box::new(|info| {
        let location = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let thread = std::thread::current()
            .name()
            .unwrap_or("unnamed")
            .to_owned();
        let backtrace = std::backtrace::Backtrace::capture();
        if backtrace.status() == std::backtrace::BacktraceStatus::Captured {
            tracing::error!(%location, %thread, %backtrace, "Panic (a defect of the gateway); its message is not logged, as it may quote message content");
        } else {
            tracing::error!(%location, %thread, "Panic (a defect of the gateway); its message is not logged, as it may quote message content");
        }
    }));
}

/// A message was received on `channel`.
pub fn received(channel: &'static str) {
    counter!("sociogate_intake_messages_received_total", "channel" => channel).increment(1);
}

/// A message was processed to a verdict.
pub fn processed(channel: &'static str, verdict: Verdict, took: Duration) {
    counter!("sociogate_pipeline_messages_total", "channel" => channel, "verdict" => verdict.as_str()).increment(1);
    histogram!("sociogate_pipeline_processing_seconds", "channel" => channel)
        .record(took.as_secs_f64());
}

/// One group commit of `messages` referrals succeeded (their ratio is the mean batch size) and
/// took `took` from its transaction's start to the commit's answer.
pub fn committed(messages: usize, took: Duration) {
    counter!("sociogate_store_commits_total").increment(1);
    counter!("sociogate_store_committed_messages_total").increment(messages as u64);
    histogram!("sociogate_store_commit_seconds").record(took.as_secs_f64());
}

/// A group commit failed and its messages were written one by one.
pub fn batch_failed() {
    counter!("sociogate_store_batch_failures_total").increment(1);
}

/// The gateway failed on a message in `stage` (a panic, a defect); the message ended
/// unreadable with `GW-INT-01`.
pub fn internal_failure(stage: &'static str) {
    counter!("sociogate_pipeline_internal_failures_total", "stage" => stage).increment(1);
}

/// A store writer panicked (a defect) and was replaced.
pub fn writer_restarted() {
    counter!("sociogate_store_writer_restarts_total").increment(1);
}

/// The outbox relay stopped unexpectedly (a panic, a defect) and was started again.
pub fn relay_restarted() {
    counter!("sociogate_forward_relay_restarts_total").increment(1);
}

/// A duplicate delivery was recognised.
pub fn duplicate(channel: &'static str) {
    counter!("sociogate_intake_duplicates_total", "channel" => channel).increment(1);
}

/// A delivery was put back for a retry after a transient failure.
pub fn retried() {
    counter!("sociogate_intake_retries_total").increment(1);
}

/// A message went to the dead-letter queue after transient failures.
pub fn dead_lettered() {
    counter!("sociogate_intake_dead_lettered_total").increment(1);
}

/// Outbox rows were published.
pub fn forwarded(kind: &str, n: u64) {
    counter!("sociogate_forward_messages_total", "kind" => kind.to_owned()).increment(n);
}

/// A publish failed.
pub fn forward_failed() {
    counter!("sociogate_forward_failures_total").increment(1);
}

/// Bodies of published outputs were deleted after their retention period.
pub fn pruned_bodies(n: u64) {
    counter!("sociogate_forward_pruned_bodies_total").increment(n);
}

/// Rows waiting in the outbox.
pub fn outbox_depth(depth: i64) {
    gauge!("sociogate_forward_outbox_depth").set(depth as f64);
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// Collects what the subscriber writes.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            if let Ok(mut held) = self.0.lock() {
                held.extend_from_slice(bytes);
            }
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// A panic's message may quote what it failed on; `serve`'s hook logs where it happened,
    /// never that message.
    #[test]
    fn a_panic_is_logged_with_its_place_and_without_its_message() {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        init_panic_log();
        // The hook runs on the panicking thread, so this thread's subscriber sees it.
        let caught = tracing::subscriber::with_default(subscriber, || {
            std::panic::catch_unwind(|| {
                panic!("invalid value: \"Erika Mustermann\", born 1961-04-12");
            })
        });
        // Back to the default hook for the other tests of this process.
        let _ = std::panic::take_hook();
        assert!(caught.is_err());
        let logged = captured
            .0
            .lock()
            .map(|held| String::from_utf8_lossy(&held).into_owned())
            .unwrap_or_default();
        assert!(
            logged.contains("Panic (a defect of the gateway)"),
            "{logged}"
        );
        assert!(logged.contains("src/telemetry.rs:"), "{logged}");
        assert!(!logged.contains("Mustermann"), "{logged}");
        assert!(!logged.contains("1961"), "{logged}");
    }
}
