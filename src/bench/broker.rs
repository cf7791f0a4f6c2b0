//! End-to-end through RabbitMQ: the real `sociogate serve` as a child process, against the
//! same messages relayed twice by a plain consumer/publisher with the same durability.

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use serde::Serialize;

/// Result of one end-to-end run.
#[derive(Debug, Clone, Serialize)]
pub struct EndToEndRow {
    /// `sqlite` or `postgres`.
    pub store: String,
    /// Messages published.
    pub messages: usize,
    /// Gateway: messages per second until every output was consumed.
    pub gateway_msgs_per_s: f64,
    /// Baseline: messages per second through two plain relay hops.
    pub baseline_msgs_per_s: f64,
    /// gateway / baseline of the round with the median ratio (the rates above are that round's).
    pub ratio: f64,
    /// gateway / baseline of every round, in the order they ran.
    pub round_ratios: Vec<f64>,
    /// Peak RSS of `serve` in MB (the highest of the rounds).
    pub peak_rss_mb: f64,
}

/// Latency at one offered load.
#[derive(Debug, Clone, Serialize)]
pub struct LatencyRow {
    /// `sqlite` or `postgres`.
    pub store: String,
    /// Offered messages per second.
    pub offered_per_s: u32,
    /// Messages measured.
    pub messages: usize,
    /// Percentiles in milliseconds, from the scheduled send time to the provider output.
    pub p50_ms: f64,
    /// 95th percentile.
    pub p95_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Maximum.
    pub max_ms: f64,
    /// Peak RSS of `serve` in MB.
    pub peak_rss_mb: f64,
}

/// Errors of a benchmark run.
pub type BenchResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// A `serve` child process with its own queue and exchange names.
pub struct Gateway {
    child: Child,
    /// Unique suffix of the names.
    pub suffix: String,
    amqp_url: String,
}

impl Gateway {
    fn name(&self, what: &str) -> String {
        format!("bench.{}.{what}", self.suffix)
    }

    /// Inbound queue.
    pub fn inbound(&self) -> String {
        self.name("inbound")
    }

    /// Peak resident set size so far (Linux `VmHWM`), in MB.
    pub fn peak_rss_mb(&self) -> f64 {
        peak_rss_mb(self.child.id())
    }
}

impl Drop for Gateway {
    /// Stops the child and deletes its queues and exchanges: RabbitMQ keeps a file handle per
    /// quorum queue, and leftovers of many runs exhaust them until the broker stops answering.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let url = self.amqp_url.clone();
        let queues: Vec<String> = ["inbound", "dead-letter", "collect"]
            .iter()
            .map(|q| self.name(q))
            .collect();
        let exchanges = ["referrals", "insurers", "rejected"].map(|x| self.name(x));
        super::block_on_own_thread(super::CLEANUP_BOUND, async move {
            let Ok((connection, channel)) = connect(&url).await else {
                return;
            };
            delete_queues(&channel, &queues).await;
            for x in &exchanges {
                let _ = channel
                    .exchange_delete(
                        x.as_str().into(),
                        lapin::options::ExchangeDeleteOptions::default(),
                    )
                    .await;
            }
            let _ = connection.close(200, "bench done".into()).await;
        });
    }
}

/// Peak RSS of a process in MB, from `/proc/<pid>/status`.
pub fn peak_rss_mb(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// How the bench runs `serve`: its defaults, except for these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServeSettings {
    /// `amqp.prefetch`: deliveries in flight.
    pub prefetch: u16,
    /// `amqp.publish_canonical`: the canonical JSON for providers as a third output of every
    /// accepted referral. `serve` has it on by default; the bench's series runs without it.
    pub publish_canonical: bool,
}

impl ServeSettings {
    /// Outputs every valid referral of the workload makes: the provider's Bundle, the
    /// insurer's, and the canonical JSON if it is published.
    pub fn outputs_per_referral(self) -> usize {
        if self.publish_canonical { 3 } else { 2 }
    }
}

/// Starts `serve` on `database_url` with `settings`.
pub fn start_gateway(
    amqp_url: &str,
    database_url: &str,
    settings: ServeSettings,
) -> BenchResult<Gateway> {
    let suffix = uuid::Uuid::new_v4().simple().to_string()[..10].to_owned();
    let exe = std::env::current_exe()?;
    let n = |what: &str| format!("bench.{suffix}.{what}");
    let child = Command::new(exe)
        .arg("serve")
        .env("SOCIOGATE_HTTP__LISTEN", "127.0.0.1:0")
        .env("AMQP_URL", amqp_url)
        .env("DATABASE_URL", database_url)
        .env("SOCIOGATE_AMQP__INBOUND_QUEUE", n("inbound"))
        .env("SOCIOGATE_AMQP__REFERRALS_EXCHANGE", n("referrals"))
        .env("SOCIOGATE_AMQP__INSURERS_EXCHANGE", n("insurers"))
        .env("SOCIOGATE_AMQP__REJECTED_EXCHANGE", n("rejected"))
        .env("SOCIOGATE_AMQP__DEAD_LETTER_QUEUE", n("dead-letter"))
        .env(
            "SOCIOGATE_AMQP__PUBLISH_CANONICAL",
            settings.publish_canonical.to_string(),
        )
        .env("SOCIOGATE_AMQP__PREFETCH", settings.prefetch.to_string())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    Ok(Gateway {
        child,
        suffix,
        amqp_url: amqp_url.to_owned(),
    })
}

async fn quorum_queue(channel: &Channel, name: &str) -> BenchResult<()> {
    // The same queue type and durability as the gateway's own inbound queue.
    crate::intake::amqp::declare_quorum_queue(channel, name).await?;
    Ok(())
}

async fn connect(amqp_url: &str) -> BenchResult<(Connection, Channel)> {
    let connection = Connection::connect(amqp_url, ConnectionProperties::default()).await?;
    let channel = connection.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    Ok((connection, channel))
}

/// The referrals a run sends, all in one format, with the AMQP `content-type` they carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payloads {
    /// The message bodies.
    pub bodies: Vec<Vec<u8>>,
    /// Their media type (`application/fhir+json`, `application/fhir+xml`,
    /// `application/hl7-cda+xml`).
    pub content_type: &'static str,
}

impl Payloads {
    /// FHIR JSON bodies.
    pub fn fhir_json(bodies: Vec<Vec<u8>>) -> Payloads {
        Payloads {
            bodies,
            content_type: crate::forward::FHIR_JSON,
        }
    }

    /// How many.
    pub fn len(&self) -> usize {
        self.bodies.len()
    }

    /// None at all.
    pub fn is_empty(&self) -> bool {
        self.bodies.is_empty()
    }
}

/// Publishes `messages` persistently to `queue`, pipelining confirms in windows.
async fn publish_all(
    channel: &Channel,
    queue: &str,
    messages: &Payloads,
    ids: impl Fn(usize) -> String,
) -> BenchResult<()> {
    let mut pending = Vec::with_capacity(512);
    for (i, body) in messages.bodies.iter().enumerate() {
        let props = BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type(messages.content_type.into())
            .with_message_id(ids(i).into());
        pending.push(
            channel
                .basic_publish(
                    "".into(),
                    queue.into(),
                    BasicPublishOptions::default(),
                    body,
                    props,
                )
                .await?,
        );
        if pending.len() == 512 {
            for confirm in pending.drain(..) {
                confirmed(confirm).await?;
            }
        }
    }
    for confirm in pending {
        confirmed(confirm).await?;
    }
    Ok(())
}

/// How long a publisher confirm may take before the run counts as failed: far above any
/// confirm of a working broker, so that a broker that stopped answering ends the bench with
/// an error instead of holding it forever.
const CONFIRM_BOUND: Duration = Duration::from_secs(120);

/// Waits for one publisher confirm, at most [`CONFIRM_BOUND`].
async fn confirmed(confirm: lapin::PublisherConfirm) -> BenchResult<()> {
    match tokio::time::timeout(CONFIRM_BOUND, confirm).await {
        Ok(result) => {
            result?;
            Ok(())
        }
        Err(_) => Err(format!("the broker confirmed no publish within {CONFIRM_BOUND:?}").into()),
    }
}

/// A queue bound to the gateway's provider and insurer exchanges, counting what arrives and
/// recording when each inbound message's provider output arrived.
async fn collector(channel: &Channel, gw: &Gateway) -> BenchResult<String> {
    let queue = gw.name("collect");
    channel
        .queue_declare(
            queue.as_str().into(),
            QueueDeclareOptions {
                auto_delete: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
    for exchange in ["referrals", "insurers"] {
        let exchange = gw.name(exchange);
        channel
            .exchange_declare(
                exchange.as_str().into(),
                ExchangeKind::Topic,
                ExchangeDeclareOptions {
                    durable: true,
                    ..ExchangeDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await?;
        channel
            .queue_bind(
                queue.as_str().into(),
                exchange.as_str().into(),
                "#".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
    }
    Ok(queue)
}

type Arrivals = Arc<Mutex<(usize, HashMap<String, Instant>)>>;

async fn consume_outputs(channel: Channel, queue: String, arrivals: Arrivals) -> BenchResult<()> {
    channel.basic_qos(1000, BasicQosOptions::default()).await?;
    let mut consumer = channel
        .basic_consume(
            queue.as_str().into(),
            "bench-collect".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..BasicConsumeOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
    while let Some(Ok(delivery)) = consumer.next().await {
        let now = Instant::now();
        let inbound = delivery
            .properties
            .headers()
            .as_ref()
            .and_then(|h| h.inner().get("x-sociogate-inbound-message-id").cloned());
        let provider = delivery.routing_key.as_str().starts_with("provider.")
            || delivery.routing_key.as_str().starts_with("unassigned.");
        if let Ok(mut a) = arrivals.lock() {
            a.0 += 1;
            if let (true, Some(AMQPValue::LongString(id))) = (provider, inbound) {
                // The first provider output counts (with the canonical JSON there are two).
                a.1.entry(String::from_utf8_lossy(id.as_bytes()).into_owned())
                    .or_insert(now);
            }
        }
    }
    Ok(())
}

async fn wait_count(arrivals: &Arrivals, expected: usize, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if arrivals.lock().map(|a| a.0 >= expected).unwrap_or(false) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    false
}

async fn wait_ready(gw: &Gateway, amqp_url: &str) -> BenchResult<()> {
    // The gateway declares its inbound queue when it starts consuming.
    let passive = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    for _ in 0..600 {
        if connection_probe(amqp_url, &gw.inbound(), passive).await {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err("the gateway did not start consuming within 30 s".into())
}

async fn connection_probe(amqp_url: &str, queue: &str, opts: QueueDeclareOptions) -> bool {
    // A failed passive declare closes the channel, so each probe uses its own.
    let Ok((_c, ch)) = connect(amqp_url).await else {
        return false;
    };
    ch.queue_declare(queue.into(), opts, FieldTable::default())
        .await
        .is_ok()
}

/// A started `serve` with a publishing channel and a consumer that records every output's
/// arrival.
struct Running {
    // Fields drop in this order: the connections (with the collector's consumer) before the
    // gateway, whose drop deletes the queues.
    _connections: [Connection; 2],
    channel: Channel,
    arrivals: Arrivals,
    gw: Gateway,
}

impl Running {
    async fn start(
        amqp_url: &str,
        database_url: &str,
        settings: ServeSettings,
    ) -> BenchResult<Running> {
        let gw = start_gateway(amqp_url, database_url, settings)?;
        wait_ready(&gw, amqp_url).await?;
        let (conn, channel) = connect(amqp_url).await?;
        let queue = collector(&channel, &gw).await?;
        let arrivals: Arrivals = Arc::new(Mutex::new((0, HashMap::new())));
        let (conn2, consume_channel) = connect(amqp_url).await?;
        tokio::spawn(consume_outputs(consume_channel, queue, arrivals.clone()));
        Ok(Running {
            gw,
            channel,
            arrivals,
            _connections: [conn, conn2],
        })
    }
}

/// Publishes `messages` (all valid) through the gateway and waits for the provider and insurer
/// outputs of every one.
pub async fn gateway_throughput(
    amqp_url: &str,
    database_url: &str,
    store: &str,
    messages: &Payloads,
    settings: ServeSettings,
) -> BenchResult<(f64, f64)> {
    let run = Running::start(amqp_url, database_url, settings).await?;
    let started = Instant::now();
    publish_all(&run.channel, &run.gw.inbound(), messages, |i| {
        format!("{store}-tp-{i}")
    })
    .await?;
    let expected = messages.len() * settings.outputs_per_referral();
    if !wait_count(&run.arrivals, expected, Duration::from_secs(600)).await {
        return Err(format!(
            "only {:?} of {expected} outputs arrived",
            run.arrivals.lock().map(|a| a.0).ok()
        )
        .into());
    }
    let rate = messages.len() as f64 / started.elapsed().as_secs_f64();
    Ok((rate, run.gw.peak_rss_mb()))
}

/// The broker-only path the gateway is measured against: three quorum queues and two hops
/// that consume with manual acks, republish persistently, wait for the confirm and ack, with no
/// processing. Each hop handles its deliveries concurrently (bounded by prefetch), as the
/// gateway's intake does, so the baseline is as fast as the broker allows.
struct BaselineRelay {
    suffix: String,
    amqp_url: String,
    channel: Channel,
    connections: Vec<Connection>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    arrivals: Arrivals,
}

impl BaselineRelay {
    fn queue(&self, n: u8) -> String {
        format!("bench.{}.baseline{n}", self.suffix)
    }

    async fn start(amqp_url: &str, prefetch: u16) -> BenchResult<BaselineRelay> {
        let suffix = uuid::Uuid::new_v4().simple().to_string()[..10].to_owned();
        let (connection, channel) = connect(amqp_url).await?;
        let mut relay = BaselineRelay {
            suffix,
            amqp_url: amqp_url.to_owned(),
            channel,
            connections: vec![connection],
            tasks: Vec::new(),
            arrivals: Arc::new(Mutex::new((0, HashMap::new()))),
        };
        for n in 1..=3 {
            quorum_queue(&relay.channel, &relay.queue(n)).await?;
        }
        for (from, to) in [
            (relay.queue(1), relay.queue(2)),
            (relay.queue(2), relay.queue(3)),
        ] {
            let (conn, ch) = connect(amqp_url).await?;
            ch.basic_qos(prefetch, BasicQosOptions::default()).await?;
            let mut consumer = ch
                .basic_consume(
                    from.as_str().into(),
                    "bench-hop".into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await?;
            relay.connections.push(conn);
            relay.tasks.push(tokio::spawn(async move {
                while let Some(Ok(delivery)) = consumer.next().await {
                    let ch = ch.clone();
                    let to = to.clone();
                    tokio::spawn(async move {
                        let mut props = BasicProperties::default().with_delivery_mode(2);
                        if let Some(id) = delivery.properties.message_id() {
                            props = props.with_message_id(id.clone());
                        }
                        if let Ok(confirm) = ch
                            .basic_publish(
                                "".into(),
                                to.as_str().into(),
                                BasicPublishOptions::default(),
                                &delivery.data,
                                props,
                            )
                            .await
                        {
                            let _ = confirm.await;
                        }
                        let _ = delivery.ack(BasicAckOptions::default()).await;
                    });
                }
            }));
        }
        let (conn, last) = connect(amqp_url).await?;
        last.basic_qos(1000, BasicQosOptions::default()).await?;
        let mut consumer = last
            .basic_consume(
                relay.queue(3).as_str().into(),
                "bench-last".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        relay.connections.push(conn);
        let arrivals = relay.arrivals.clone();
        relay.tasks.push(tokio::spawn(async move {
            while let Some(Ok(delivery)) = consumer.next().await {
                let now = Instant::now();
                let _ = delivery.ack(BasicAckOptions::default()).await;
                if let Ok(mut a) = arrivals.lock() {
                    a.0 += 1;
                    if let Some(id) = delivery.properties.message_id() {
                        a.1.insert(id.as_str().to_owned(), now);
                    }
                }
            }
        }));
        Ok(relay)
    }

    /// Stops the hops and deletes the queues; a queue that cannot be deleted is named on
    /// stderr, so that leftovers do not pile up unnoticed. Every step is bounded in time: the
    /// broker once left a close unanswered and the whole bench waited for it.
    async fn close(self) {
        for task in &self.tasks {
            task.abort();
        }
        // The consumers go first: RabbitMQ 3.10 sometimes answered the delete of a quorum
        // queue that still had a consumer with INTERNAL_ERROR and closed the connection.
        for connection in self.connections.iter().skip(1) {
            let _ = bounded(connection.close(200, "bench done".into())).await;
        }
        let queues: Vec<String> = (1..=3).map(|n| self.queue(n)).collect();
        let mut failed = bounded_delete(&self.channel, &queues).await;
        if !failed.is_empty() {
            // A hard error closes the connection it came on: once more on a fresh one.
            let names: Vec<String> = failed.iter().map(|(queue, _)| queue.clone()).collect();
            if let Ok(Ok((connection, channel))) = bounded(connect(&self.amqp_url)).await {
                failed = bounded_delete(&channel, &names).await;
                let _ = bounded(connection.close(200, "bench done".into())).await;
            }
        }
        for (queue, e) in failed {
            eprintln!("bench: could not delete queue {queue}: {e}");
        }
        if let Some(connection) = self.connections.first() {
            let _ = bounded(connection.close(200, "bench done".into())).await;
        }
    }
}

/// `step`, given at most [`super::CLEANUP_BOUND`].
async fn bounded<T>(step: impl std::future::Future<Output = T>) -> Result<T, String> {
    tokio::time::timeout(super::CLEANUP_BOUND, step)
        .await
        .map_err(|_| format!("no answer within {:?}", super::CLEANUP_BOUND))
}

/// [`delete_queues`], bounded in time; on a time-out every queue counts as not deleted.
async fn bounded_delete(channel: &Channel, queues: &[String]) -> Vec<(String, String)> {
    match bounded(delete_queues(channel, queues)).await {
        Ok(failed) => failed
            .into_iter()
            .map(|(queue, e)| (queue, e.to_string()))
            .collect(),
        Err(e) => queues.iter().map(|q| (q.clone(), e.clone())).collect(),
    }
}

/// Deletes `queues`; returns the ones that could not be deleted, with why.
async fn delete_queues(channel: &Channel, queues: &[String]) -> Vec<(String, lapin::Error)> {
    let mut failed = Vec::new();
    for queue in queues {
        if let Err(e) = channel
            .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
            .await
        {
            failed.push((queue.clone(), e));
        }
    }
    failed
}

/// The throughput baseline: the same messages through the same broker with the same
/// durability, consumed and republished twice with no processing.
pub async fn broker_baseline(
    amqp_url: &str,
    messages: &Payloads,
    prefetch: u16,
) -> BenchResult<f64> {
    let relay = BaselineRelay::start(amqp_url, prefetch).await?;
    let started = Instant::now();
    // On a failed publish the queues are still deleted below, then the error is returned.
    let published = publish_all(&relay.channel, &relay.queue(1), messages, |i| {
        format!("baseline-{i}")
    })
    .await;
    let done = published.is_ok()
        && wait_count(&relay.arrivals, messages.len(), Duration::from_secs(600)).await;
    let rate = messages.len() as f64 / started.elapsed().as_secs_f64();
    relay.close().await;
    published?;
    if !done {
        return Err("the baseline did not finish".into());
    }
    Ok(rate)
}

/// The latency baseline: the broker-only relay of [`broker_baseline`] at the same offered load
/// and on the same open-loop schedule as the gateway's latency run.
pub async fn broker_latency(
    amqp_url: &str,
    messages: &Payloads,
    rate: u32,
    prefetch: u16,
) -> BenchResult<LatencyRow> {
    let relay = BaselineRelay::start(amqp_url, prefetch).await?;
    let sent = send_open_loop(&relay.channel, &relay.queue(1), messages, rate, |i| {
        format!("baseline-lat-{rate}-{i}")
    })
    .await;
    let arrived = match &sent {
        Ok(_) => wait_count(&relay.arrivals, messages.len(), Duration::from_secs(300)).await,
        Err(_) => false,
    };
    let row = sent.and_then(|scheduled| {
        if !arrived {
            return Err("not every message went through the baseline relay".into());
        }
        latency_row("broker", rate, &scheduled, &relay.arrivals, 0.0)
    });
    relay.close().await;
    row
}

/// Publishes `messages` to `queue` on a fixed schedule that never waits for the system under
/// test (open loop: a stall delays the measured arrivals, not the sender). Returns each
/// message's id and scheduled send time.
async fn send_open_loop(
    channel: &Channel,
    queue: &str,
    messages: &Payloads,
    rate: u32,
    ids: impl Fn(usize) -> String,
) -> BenchResult<Vec<(String, Instant)>> {
    let interval = Duration::from_secs_f64(1.0 / f64::from(rate.max(1)));
    let started = Instant::now();
    let mut scheduled = Vec::with_capacity(messages.len());
    let mut confirms = Vec::new();
    for (i, body) in messages.bodies.iter().enumerate() {
        let at = started + interval * i as u32;
        tokio::time::sleep_until(at.into()).await;
        let id = ids(i);
        let props = BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type(messages.content_type.into())
            .with_message_id(id.as_str().into());
        confirms.push(
            channel
                .basic_publish(
                    "".into(),
                    queue.into(),
                    BasicPublishOptions::default(),
                    body,
                    props,
                )
                .await?,
        );
        scheduled.push((id, at));
    }
    for c in confirms {
        confirmed(c).await?;
    }
    Ok(scheduled)
}

/// Percentiles of scheduled send -> arrival over every scheduled message that arrived.
fn latency_row(
    store: &str,
    rate: u32,
    scheduled: &[(String, Instant)],
    arrivals: &Arrivals,
    peak_rss_mb: f64,
) -> BenchResult<LatencyRow> {
    let mut ms: Vec<f64> = {
        let a = arrivals.lock().map_err(|_| "poisoned")?;
        scheduled
            .iter()
            .filter_map(|(id, at)| {
                a.1.get(id)
                    .map(|done| done.saturating_duration_since(*at).as_secs_f64() * 1000.0)
            })
            .collect()
    };
    ms.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        ms.get(((ms.len() as f64 * p).ceil() as usize).saturating_sub(1))
            .copied()
            .unwrap_or(0.0)
    };
    Ok(LatencyRow {
        store: store.to_owned(),
        offered_per_s: rate,
        messages: ms.len(),
        p50_ms: pct(0.50),
        p95_ms: pct(0.95),
        p99_ms: pct(0.99),
        max_ms: ms.last().copied().unwrap_or(0.0),
        peak_rss_mb,
    })
}

/// Open-loop latency: sends at a fixed rate on a schedule that does not wait for answers, and
/// measures from each message's scheduled send time to its provider output (no coordinated
/// omission: a stall delays the measured outputs, it does not slow the sender down).
pub async fn latency(
    amqp_url: &str,
    database_url: &str,
    store: &str,
    messages: &Payloads,
    rate: u32,
    settings: ServeSettings,
) -> BenchResult<LatencyRow> {
    let run = Running::start(amqp_url, database_url, settings).await?;
    let scheduled = send_open_loop(&run.channel, &run.gw.inbound(), messages, rate, |i| {
        format!("{store}-lat-{rate}-{i}")
    })
    .await?;
    let expected = messages.len() * settings.outputs_per_referral();
    if !wait_count(&run.arrivals, expected, Duration::from_secs(300)).await {
        return Err("not every output arrived".into());
    }
    latency_row(store, rate, &scheduled, &run.arrivals, run.gw.peak_rss_mb())
}
