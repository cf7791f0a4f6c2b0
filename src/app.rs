//! Wiring of `sociogate serve`: the store, the engine, the AMQP consumer and outbox relay
//! (reconnecting while the process runs), the HTTP server, and graceful shutdown.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use lapin::{Connection, ConnectionProperties};
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::intake;
use crate::mappings::Mappings;
use crate::pipeline::Engine;
use crate::pipeline::gateway::Gateway;
use crate::store::Store;

/// How long a graceful shutdown may take before the remaining parts are aborted.
pub const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(20);

/// A running gateway, for tests and embedding: stop it with [`Running::shutdown`].
pub struct Running {
    /// Address the HTTP server listens on.
    pub http_addr: std::net::SocketAddr,
    /// Cancels everything.
    pub shutdown: CancellationToken,
    /// The pipeline (with its store).
    pub gateway: Gateway,
    tasks: tokio::task::JoinSet<()>,
}

impl Running {
    /// Stops consuming, finishes in-flight messages, drains the outbox, and waits, at most
    /// [`SHUTDOWN_GRACE`]: a part that does not stop by then (e.g. a broker that never answers
    /// a close) is aborted. Nothing is lost by that: messages are acked only after they are
    /// stored, and outbox rows stay until confirmed.
    pub async fn shutdown(mut self) {
        self.shutdown.cancel();
        let tasks = &mut self.tasks;
        let stopped = tokio::time::timeout(SHUTDOWN_GRACE, async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
        if stopped.is_err() {
            tracing::warn!(
                grace_s = SHUTDOWN_GRACE.as_secs(),
                "Not every part stopped within the grace period; aborting the rest"
            );
            self.tasks.abort_all();
            while self.tasks.join_next().await.is_some() {}
        }
        self.gateway.store().close().await;
    }
}

/// Starts every part of the service and returns once it is listening.
pub async fn start(config: Config) -> anyhow::Result<Running> {
    let problems = config.problems();
    if !problems.is_empty() {
        anyhow::bail!("invalid configuration: {}", problems.join("; "));
    }
    let mappings_dir = config
        .pipeline
        .mappings
        .clone()
        .unwrap_or_else(Mappings::default_dir);
    let engine = Engine::load(&mappings_dir, config.limits())
        .with_context(|| format!("loading mappings from {}", mappings_dir.display()))?;
    let store = Store::connect(&config.store.database_url, config.store.max_connections)
        .await
        .context("opening the store")?;
    tracing::info!(backend = ?store.backend(), "Store ready");
    // The provider's contract (tariffs, § 302 settings); without it billing periods cannot be
    // closed, everything else works.
    let contract_path = mappings_dir.join("de").join("billing.json");
    let contract = match crate::billing::Contract::load(&contract_path) {
        Ok(c) => Some(Arc::new(c)),
        Err(e) => {
            tracing::warn!(error = %e, "No billing contract: billing periods cannot be closed");
            None
        }
    };
    let mut gateway = Gateway::new(
        Arc::new(engine),
        store.clone(),
        config.amqp.clone(),
        &config.pipeline.default_language,
    )
    .with_billing(crate::pipeline::billing::Billing {
        config: config.billing.clone(),
        contract,
    });
    let amqp_enabled = !config.amqp.url.trim().is_empty();
    // Only with a relay in this process: without AMQP there is none to hand rows to.
    let handoff = if amqp_enabled {
        crate::forward::relay::handoff(&config.outbox)
    } else {
        None
    };
    let handoff_receiver = handoff.map(|(sender, receiver)| {
        gateway = gateway.clone().with_handoff(sender);
        receiver
    });
    let shutdown = CancellationToken::new();
    let mut tasks = tokio::task::JoinSet::new();

    let broker_ok = Arc::new(AtomicBool::new(!amqp_enabled));
    if amqp_enabled {
        tasks.spawn(supervise_amqp(
            gateway.clone(),
            store.clone(),
            config.clone(),
            handoff_receiver,
            broker_ok.clone(),
            shutdown.clone(),
        ));
    } else {
        tracing::warn!("AMQP is disabled (amqp.url is empty): serving HTTP only");
    }

    tasks.spawn(crate::forward::retention::run(
        store.clone(),
        config.outbox.sent_body_retention_days,
        shutdown.clone(),
    ));

    let listener = tokio::net::TcpListener::bind(&config.http.listen)
        .await
        .with_context(|| format!("listening on {}", config.http.listen))?;
    let http_addr = listener.local_addr()?;
    let state = intake::http::HttpState {
        gateway: gateway.clone(),
        max_bytes: config.pipeline.max_bytes,
        broker_ok,
        metrics: crate::telemetry::install_metrics(),
        close_token: Arc::from(config.billing.close_token.as_str()),
    };
    let router = intake::http::router(state);
    let http_shutdown = shutdown.clone();
    tasks.spawn(async move {
        let served = axum::serve(listener, router)
            .with_graceful_shutdown(async move { http_shutdown.cancelled().await })
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "HTTP server stopped");
        }
    });
    tracing::info!(%http_addr, "HTTP intake listening");
    Ok(Running {
        http_addr,
        shutdown,
        gateway,
        tasks,
    })
}

/// Connects to RabbitMQ and runs the consumer and the relay; reconnects after a failure. While
/// the broker is unreachable the gateway serves HTTP only and says so.
async fn supervise_amqp(
    gateway: Gateway,
    store: Store,
    config: Config,
    handoff: Option<Arc<crate::forward::relay::HandoffReceiver>>,
    broker_ok: Arc<AtomicBool>,
    shutdown: CancellationToken,
) {
    let cfg = Arc::new(config.amqp.clone());
    let mut warned = false;
    while !shutdown.is_cancelled() {
        let props = ConnectionProperties::default().with_connection_name("sociogate".into());
        let connection = match tokio::time::timeout(
            Duration::from_secs(5),
            Connection::connect(&cfg.url, props),
        )
        .await
        {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                if !warned {
                    tracing::warn!(error = %e, "RabbitMQ is not reachable: serving HTTP only until it is");
                    warned = true;
                }
                sleep_or_cancel(Duration::from_secs(2), &shutdown).await;
                continue;
            }
            Err(_) => {
                if !warned {
                    tracing::warn!(
                        "RabbitMQ did not answer within 5 s: serving HTTP only until it does"
                    );
                    warned = true;
                }
                continue;
            }
        };
        let connection = Arc::new(connection);
        warned = false;
        broker_ok.store(true, Ordering::Relaxed);
        tracing::info!("Connected to RabbitMQ");
        let relay_stop = shutdown.child_token();
        let start_relay = || {
            tokio::spawn(crate::forward::relay::run(
                store.clone(),
                connection.clone(),
                config.outbox.clone(),
                handoff.clone(),
                relay_stop.clone(),
            ))
        };
        let consumer =
            intake::amqp::run(gateway.clone(), &connection, cfg.clone(), shutdown.clone());
        let (consumed, relay) = with_task_beside(
            consumer,
            start_relay,
            &relay_stop,
            RESTART_PAUSE,
            |panicked| {
                crate::telemetry::relay_restarted();
                // Rows it had claimed are claimed again once their lease has run out.
                tracing::error!(
                    panicked,
                    "The outbox relay stopped unexpectedly; starting a new one"
                );
            },
        )
        .await;
        // The consumer has finished its in-flight messages; let the relay drain, then stop it.
        relay_stop.cancel();
        if let Some(relay) = relay {
            let _ = relay.await;
        }
        broker_ok.store(false, Ordering::Relaxed);
        match consumed {
            Ok(()) => {}
            Err(e) => {
                tracing::warn!(error = %e, "AMQP consumer stopped; reconnecting");
                sleep_or_cancel(Duration::from_secs(1), &shutdown).await;
            }
        }
        let _ = connection.close(200, "bye".into()).await;
    }
}

/// How long a relay that stopped unexpectedly stays away before a new one starts: a defect that
/// panics at once on every start costs a log line per pause, not a busy loop.
const RESTART_PAUSE: Duration = Duration::from_secs(1);

/// Runs `main` to its end with a task from `start` running beside it, and returns `main`'s
/// result and that task if it still runs (for the caller to stop).
///
/// The task is meant to end only after `stop` is cancelled, so one that ends before (a panic:
/// a defect) is reported to `restarted` (whether it panicked) and started again after
/// `pause`. Without this a relay that panicked left the consumer storing and acknowledging
/// messages whose outputs nobody published until the process was restarted.
async fn with_task_beside<T>(
    main: impl std::future::Future<Output = T>,
    start: impl Fn() -> tokio::task::JoinHandle<()>,
    stop: &CancellationToken,
    pause: Duration,
    restarted: impl Fn(bool),
) -> (T, Option<tokio::task::JoinHandle<()>>) {
    let mut main = std::pin::pin!(main);
    let mut task = Some(start());
    // Set while a task that ended waits out `pause`; `main` goes on meanwhile.
    let mut restart_at: Option<tokio::time::Instant> = None;
    loop {
        let task_ends = async {
            match task.as_mut() {
                Some(running) => running.await,
                None => std::future::pending().await,
            }
        };
        let pause_ends = async {
            match restart_at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            done = &mut main => return (done, task),
            ended = task_ends => {
                task = None;
                if !stop.is_cancelled() {
                    restarted(ended.is_err_and(|e| e.is_panic()));
                    restart_at = Some(tokio::time::Instant::now() + pause);
                }
            }
            () = pause_ends => {
                restart_at = None;
                task = Some(start());
            }
        }
    }
}

async fn sleep_or_cancel(d: Duration, shutdown: &CancellationToken) {
    tokio::select! {
        () = tokio::time::sleep(d) => {}
        () = shutdown.cancelled() => {}
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn termination_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;

    /// A task beside the main one that panics is started again, and the main one's result
    /// comes back with the task that runs at its end.
    #[tokio::test]
    async fn a_task_beside_that_panics_is_started_again() {
        let starts = Arc::new(AtomicUsize::new(0));
        let panics = Arc::new(AtomicUsize::new(0));
        let second_run = Arc::new(tokio::sync::Notify::new());
        let start = {
            let starts = starts.clone();
            let second_run = second_run.clone();
            move || {
                let first = starts.fetch_add(1, Ordering::SeqCst) == 0;
                if !first {
                    second_run.notify_one();
                }
                tokio::spawn(async move {
                    if first {
                        panic!("a defect in the first run");
                    }
                    std::future::pending::<()>().await;
                })
            }
        };
        // Ends once the second run has started (bounded, so that a missing restart fails).
        let main = async {
            let restarted = tokio::time::timeout(Duration::from_secs(10), second_run.notified());
            restarted.await.is_ok()
        };
        let counted = panics.clone();
        let stop = CancellationToken::new();
        let (second_run_started, task) =
            with_task_beside(main, start, &stop, Duration::from_millis(10), |panicked| {
                if panicked {
                    counted.fetch_add(1, Ordering::SeqCst);
                }
            })
            .await;
        assert!(second_run_started, "started again after the panic");
        assert_eq!(starts.load(Ordering::SeqCst), 2);
        assert_eq!(panics.load(Ordering::SeqCst), 1);
        let task = task.unwrap_or_else(|| panic!("the second run is still running"));
        assert!(!task.is_finished());
        task.abort();
    }

    /// A task that ends after it was told to stop (a relay that drained) is not started
    /// again, and the main one still runs to its end.
    #[tokio::test]
    async fn a_task_beside_that_was_told_to_stop_is_not_started_again() {
        let starts = Arc::new(AtomicUsize::new(0));
        let stop = CancellationToken::new();
        let start = {
            let starts = starts.clone();
            let stop = stop.clone();
            move || {
                starts.fetch_add(1, Ordering::SeqCst);
                let stop = stop.clone();
                tokio::spawn(async move { stop.cancelled().await })
            }
        };
        let main = {
            let stop = stop.clone();
            async move {
                stop.cancel();
                // Time for the task to see it and end (a restart would follow within 10 ms).
                tokio::time::sleep(Duration::from_millis(300)).await;
                7
            }
        };
        let (result, _task) =
            with_task_beside(main, start, &stop, Duration::from_millis(10), |_| {
                panic!("not a restart")
            })
            .await;
        assert_eq!(result, 7);
        assert_eq!(starts.load(Ordering::SeqCst), 1);
    }
}
