//! Helpers for tests against the real RabbitMQ and PostgreSQL on this machine.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::time::Duration;

use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions,
    ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use serde_json::{Value, json};
use sociogate::config::Config;

/// RabbitMQ URL (`AMQP_URL`, default the local broker).
pub fn amqp_url() -> String {
    std::env::var("AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned())
}

/// The PostgreSQL server's `test` database (`TEST_DATABASE_URL`).
pub fn pg_admin_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// A short unique suffix.
pub fn unique() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_owned()
}

/// How long a single broker operation of a test may take. A broker that accepts TCP but does
/// not answer (RabbitMQ out of file handles does that) must fail the test, not hang it.
pub const BROKER_TIMEOUT: Duration = Duration::from_secs(30);

/// Awaits `operation` for at most [`BROKER_TIMEOUT`], panicking with `what` when it takes longer.
pub async fn bounded<T>(what: &str, operation: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(BROKER_TIMEOUT, operation).await {
        Ok(value) => value,
        Err(_) => panic!(
            "{what}: no answer within {}s (is RabbitMQ wedged? see .ci/run)",
            BROKER_TIMEOUT.as_secs()
        ),
    }
}

/// Name prefix of the databases [`pg_database`] creates; [`Client`] drops them again.
pub const TEST_DATABASE_PREFIX: &str = "sociogate_it_";

/// A fresh PostgreSQL database for one test.
pub async fn pg_database() -> String {
    use sqlx::Connection as _;
    let admin = pg_admin_url();
    let mut conn = sqlx::PgConnection::connect(&admin)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL must run at {admin}: {e}"));
    let name = format!("{TEST_DATABASE_PREFIX}{}", unique());
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("creating {name}: {e}"));
    let base = admin
        .rsplit_once('/')
        .map_or(admin.as_str(), |(b, _)| b)
        .to_owned();
    format!("{base}/{name}")
}

/// A fresh SQLite file for one test.
pub fn sqlite_database() -> String {
    let path = std::env::temp_dir().join(format!("sociogate-it-{}.db", unique()));
    format!("sqlite://{}?mode=rwc", path.display())
}

/// A configuration whose queue and exchange names are unique to this test.
pub fn config(database_url: &str) -> Config {
    let suffix = unique();
    let mut config = Config::default();
    config.http.listen = "127.0.0.1:0".to_owned();
    config.store.database_url = database_url.to_owned();
    config.amqp.url = amqp_url();
    config.amqp.inbound_queue = format!("it.{suffix}.inbound");
    config.amqp.referrals_exchange = format!("it.{suffix}.referrals");
    config.amqp.insurers_exchange = format!("it.{suffix}.insurers");
    config.amqp.rejected_exchange = format!("it.{suffix}.rejected");
    config.amqp.dead_letter_queue = format!("it.{suffix}.dead-letter");
    config.amqp.retry_backoff_ms = vec![50, 100];
    config.amqp.max_attempts = 3;
    config.outbox.poll_interval_ms = 20;
    config
}

/// One message received by a test consumer.
#[derive(Debug, Clone)]
pub struct Received {
    /// Exchange it was published to ("" for a direct queue publish).
    pub exchange: String,
    /// Routing key.
    pub routing_key: String,
    /// AMQP message-id.
    pub message_id: Option<String>,
    /// AMQP correlation-id.
    pub correlation_id: Option<String>,
    /// Content type.
    pub content_type: Option<String>,
    /// Headers as text.
    pub headers: BTreeMap<String, String>,
    /// Body.
    pub body: Vec<u8>,
}

impl Received {
    /// The body as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

/// A test client: publishes to the inbound queue and collects everything the gateway sends.
pub struct Client {
    _connection: Connection,
    channel: Channel,
    config: Config,
    tx: tokio::sync::mpsc::UnboundedSender<Received>,
    rx: tokio::sync::mpsc::UnboundedReceiver<Received>,
    /// Everything received so far.
    pub received: Vec<Received>,
}

async fn declare_queue(channel: &Channel, name: &str) {
    sociogate::intake::amqp::declare_quorum_queue(channel, name)
        .await
        .unwrap_or_else(|e| panic!("declaring {name}: {e}"));
}

fn text(value: &AMQPValue) -> String {
    match value {
        AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        AMQPValue::ShortString(s) => s.as_str().to_owned(),
        other => format!("{other:?}"),
    }
}

async fn spawn_collector(
    channel: &Channel,
    queue: &str,
    tx: tokio::sync::mpsc::UnboundedSender<Received>,
) {
    let mut consumer = channel
        .basic_consume(
            queue.into(),
            format!("test-{}", unique()).as_str().into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap_or_else(|e| panic!("consuming {queue}: {e}"));
    tokio::spawn(async move {
        while let Some(Ok(delivery)) = consumer.next().await {
            let props = &delivery.properties;
            let headers = props
                .headers()
                .as_ref()
                .map(|t| {
                    t.inner()
                        .iter()
                        .map(|(k, v)| (k.as_str().to_owned(), text(v)))
                        .collect()
                })
                .unwrap_or_default();
            let _ = tx.send(Received {
                exchange: delivery.exchange.as_str().to_owned(),
                routing_key: delivery.routing_key.as_str().to_owned(),
                message_id: props.message_id().as_ref().map(|s| s.as_str().to_owned()),
                correlation_id: props
                    .correlation_id()
                    .as_ref()
                    .map(|s| s.as_str().to_owned()),
                content_type: props.content_type().as_ref().map(|s| s.as_str().to_owned()),
                headers,
                body: delivery.data.clone(),
            });
            let _ = delivery.ack(BasicAckOptions::default()).await;
        }
    });
}

impl Client {
    /// Connects, declares the gateway's topology and binds a collecting queue to every output.
    pub async fn connect(config: &Config) -> Client {
        bounded(
            "connecting to RabbitMQ and declaring the test topology",
            Self::connect_unbounded(config),
        )
        .await
    }

    async fn connect_unbounded(config: &Config) -> Client {
        let connection = Connection::connect(&amqp_url(), ConnectionProperties::default())
            .await
            .unwrap_or_else(|e| panic!("RabbitMQ must run at {}: {e}", amqp_url()));
        let channel = connection
            .create_channel()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let a = &config.amqp;
        declare_queue(&channel, &a.inbound_queue).await;
        declare_queue(&channel, &a.dead_letter_queue).await;
        let collect = format!("{}.collect", a.inbound_queue);
        channel
            .queue_declare(
                collect.as_str().into(),
                QueueDeclareOptions {
                    auto_delete: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        for exchange in [
            &a.referrals_exchange,
            &a.insurers_exchange,
            &a.rejected_exchange,
        ] {
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
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            channel
                .queue_bind(
                    collect.as_str().into(),
                    exchange.as_str().into(),
                    "#".into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await
                .unwrap_or_else(|e| panic!("{e}"));
        }
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        for queue in [collect.clone(), a.dead_letter_queue.clone()] {
            spawn_collector(&channel, &queue, tx.clone()).await;
        }
        Client {
            _connection: connection,
            channel,
            config: config.clone(),
            tx,
            rx,
            received: Vec::new(),
        }
    }

    /// Publishes `body` to the inbound queue (persistent, with a confirm).
    pub async fn publish(
        &self,
        body: &[u8],
        message_id: Option<&str>,
        reply_to: Option<&str>,
        correlation_id: Option<&str>,
    ) {
        let mut props = BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type("application/fhir+json".into());
        if let Some(id) = message_id {
            props = props.with_message_id(id.into());
        }
        if let Some(r) = reply_to {
            props = props.with_reply_to(r.into());
        }
        if let Some(c) = correlation_id {
            props = props.with_correlation_id(c.into());
        }
        let confirmed = bounded("publishing with a confirm", async {
            self.channel
                .basic_publish(
                    "".into(),
                    self.config.amqp.inbound_queue.as_str().into(),
                    BasicPublishOptions::default(),
                    body,
                    props,
                )
                .await
                .unwrap_or_else(|e| panic!("{e}"))
                .await
                .unwrap_or_else(|e| panic!("{e}"))
        })
        .await;
        assert!(confirmed.is_ack(), "the broker confirmed the publish");
    }

    /// Declares a reply queue and collects what arrives there too.
    pub async fn reply_queue(&self) -> String {
        let name = format!("{}.reply", self.config.amqp.inbound_queue);
        self.channel
            .queue_declare(
                name.as_str().into(),
                QueueDeclareOptions {
                    auto_delete: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        spawn_collector(&self.channel, &name, self.tx.clone()).await;
        name
    }

    /// Waits until `done(&received)` holds or `timeout` passes; returns whether it held.
    pub async fn wait_for(
        &mut self,
        timeout: Duration,
        done: impl Fn(&[Received]) -> bool,
    ) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if done(&self.received) {
                return true;
            }
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(m)) => self.received.push(m),
                Ok(None) | Err(_) => return done(&self.received),
            }
        }
    }

    /// Collects for `d` more (to see that nothing else arrives).
    pub async fn settle(&mut self, d: Duration) {
        let _ = self.wait_for(d, |_| false).await;
    }

    /// Received messages whose routing key starts with `prefix`.
    pub fn with_key(&self, prefix: &str) -> Vec<&Received> {
        self.received
            .iter()
            .filter(|m| m.routing_key.starts_with(prefix))
            .collect()
    }
}

/// Deletes what a test left on the broker and in PostgreSQL, also when the test panicked.
/// RabbitMQ keeps a file handle per quorum queue; thousands of leftovers from earlier runs
/// exhaust its limit and it stops answering (seen: 1,500 leftovers wedged a broker with 1,024
/// handles, and every later run hung).
impl Drop for Client {
    fn drop(&mut self) {
        let config = self.config.clone();
        sociogate::bench::block_on_own_thread(2 * BROKER_TIMEOUT, async move {
            // Each part bounded, so a wedged broker does not keep the database.
            let _ = tokio::time::timeout(BROKER_TIMEOUT, remove_broker_topology(&config)).await;
            let _ = tokio::time::timeout(BROKER_TIMEOUT, remove_database(&config)).await;
        });
    }
}

/// A gateway serving HTTP only (no broker) on a SQLite file of its own, removed when this is
/// dropped.
pub struct HttpGateway {
    /// The gateway; shut it down at the end of the test.
    pub running: sociogate::app::Running,
    /// Its configuration.
    pub config: Config,
    /// `http://` and its address.
    pub base: String,
    _cleanup: DatabaseCleanup,
}

/// Starts a [`HttpGateway`].
pub async fn http_only_gateway() -> HttpGateway {
    let mut config = config(&sqlite_database());
    config.amqp.url = String::new();
    let cleanup = DatabaseCleanup(config.clone());
    let running = sociogate::app::start(config.clone())
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    HttpGateway {
        base: format!("http://{}", running.http_addr),
        running,
        config,
        _cleanup: cleanup,
    }
}

/// Drops a test's database (PostgreSQL) or file (SQLite) when it goes out of scope, for tests
/// that use the store without a broker [`Client`].
pub struct DatabaseCleanup(pub Config);

impl Drop for DatabaseCleanup {
    fn drop(&mut self) {
        let config = self.0.clone();
        sociogate::bench::block_on_own_thread(BROKER_TIMEOUT, async move {
            let _ = tokio::time::timeout(BROKER_TIMEOUT, remove_database(&config)).await;
        });
    }
}

/// Deletes the queues and exchanges named in `config` (and the client's own queues).
async fn remove_broker_topology(config: &Config) {
    let Ok(connection) = Connection::connect(&amqp_url(), ConnectionProperties::default()).await
    else {
        return;
    };
    let Ok(channel) = connection.create_channel().await else {
        return;
    };
    let a = &config.amqp;
    for queue in [
        a.inbound_queue.clone(),
        a.dead_letter_queue.clone(),
        format!("{}.collect", a.inbound_queue),
        format!("{}.reply", a.inbound_queue),
    ] {
        let _ = channel
            .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
            .await;
    }
    for exchange in [
        &a.referrals_exchange,
        &a.insurers_exchange,
        &a.rejected_exchange,
    ] {
        let _ = channel
            .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
            .await;
    }
    let _ = connection.close(200, "test done".into()).await;
}

/// Drops the test's PostgreSQL database or removes its SQLite file.
async fn remove_database(config: &Config) {
    use sqlx::Connection as _;
    let url = &config.store.database_url;
    if let Some(file) = url.strip_prefix("sqlite://") {
        let path = file.split('?').next().unwrap_or(file);
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{path}{suffix}"));
        }
        return;
    }
    let Some((_, name)) = url.rsplit_once('/') else {
        return;
    };
    // Only what pg_database made, and only a plain identifier.
    if !name.starts_with(TEST_DATABASE_PREFIX)
        || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    {
        return;
    }
    let Ok(mut admin) = sqlx::PgConnection::connect(&pg_admin_url()).await else {
        return;
    };
    let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
    )))
    .execute(&mut admin)
    .await;
}

/// A valid KVNR for `n` (letter from n, digits from n, check digit computed).
pub fn kvnr(n: u32) -> String {
    let letter = (b'A' + (n % 26) as u8) as char;
    let body = format!("{:08}", n % 100_000_000);
    for check in 0..10 {
        let candidate = format!("{letter}{body}{check}");
        if sociogate::check::ids::kvnr_valid(&candidate) {
            return candidate;
        }
    }
    unreachable!("one of ten check digits is valid")
}

/// The first-prescription example for patient `kvnr`, with its own Bundle.identifier.
pub fn referral_for(kvnr: &str, units: u32, bundle_id: &str) -> Vec<u8> {
    let bytes = super::read("examples/de-first-prescription-message.json");
    let mut bundle: Value = serde_json::from_slice(&bytes).unwrap_or_default();
    bundle["identifier"]["value"] = json!(format!("urn:uuid:{bundle_id}"));
    for entry in bundle["entry"].as_array_mut().into_iter().flatten() {
        let resource = &mut entry["resource"];
        match resource["resourceType"].as_str() {
            Some("Patient") => {
                for id in resource["identifier"].as_array_mut().into_iter().flatten() {
                    if id["system"] == "http://fhir.de/sid/gkv/kvid-10" {
                        id["value"] = json!(kvnr);
                    }
                }
            }
            Some("Coverage") => resource["subscriberId"] = json!(kvnr),
            Some("ServiceRequest") => resource["quantityQuantity"]["value"] = json!(units),
            _ => {}
        }
    }
    bundle.to_string().into_bytes()
}

/// An inbound message row as the store takes it, with `id` as gateway id and idempotency key.
pub fn raw_message<'a>(id: &'a str, body: &'a [u8]) -> sociogate::store::NewMessage<'a> {
    sociogate::store::NewMessage {
        id,
        idempotency_key: id,
        channel: "amqp",
        content_type: None,
        message_id: None,
        correlation_id: None,
        reply_to: None,
        headers: "{}",
        sha256: "0",
        body,
    }
}
