//! Configuration: built-in defaults, then a TOML file (`--config`), then environment variables
//! `SOCIOGATE_<SECTION>__<KEY>` (and `DATABASE_URL`, `AMQP_URL` as the usual shortcuts).
//!
//! Every key is documented in `docker/sociogate.toml`, which shows the defaults.

use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

/// The whole configuration.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// HTTP intake and operations endpoints.
    pub http: HttpConfig,
    /// RabbitMQ intake and forwarding.
    pub amqp: AmqpConfig,
    /// The database.
    pub store: StoreConfig,
    /// Decoding limits and data folders.
    pub pipeline: PipelineConfig,
    /// The outbox relay.
    pub outbox: OutboxConfig,
    /// Billing records for insurers.
    pub billing: BillingConfig,
}

/// Billing settings: who bills, and where the § 302 files go.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct BillingConfig {
    /// IK of the provider (Leistungserbringer) the gateway bills for; sender of the § 302 files.
    pub provider_ik: String,
    /// Name of the provider (NAM segment).
    pub provider_name: String,
    /// Contact person or phone for the insurer's questions (NAM segment), if any.
    pub provider_contact: Option<String>,
    /// German state of the contract (`NW`, `BE`, ...): selects the tariff in
    /// `mappings/de/billing.json`.
    pub state: String,
    /// IK of the insurer's data acceptance office (Datenannahmestelle, from the
    /// Kostenträgerdatei); empty: the insurer's own IK.
    pub recipient_ik: String,
    /// Folder the § 302 interchanges and billing Claims are also written to; empty: none.
    pub output_dir: String,
    /// Bearer token an operator or scheduler sends to `POST /billing/{period}/close`; empty
    /// disables closing periods over HTTP (a run sends files to insurers).
    pub close_token: String,
}

impl Default for BillingConfig {
    fn default() -> Self {
        BillingConfig {
            provider_ik: String::new(),
            provider_name: String::new(),
            provider_contact: None,
            state: "NW".to_owned(),
            recipient_ik: String::new(),
            output_dir: String::new(),
            close_token: String::new(),
        }
    }
}

/// HTTP settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Address to listen on.
    pub listen: String,
}

/// AMQP settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AmqpConfig {
    /// Broker URL; `AMQP_URL` overrides. Empty disables AMQP (HTTP only).
    pub url: String,
    /// Durable quorum queue the gateway consumes.
    pub inbound_queue: String,
    /// Unacknowledged deliveries in flight.
    pub prefetch: u16,
    /// Most bytes of delivered bodies handled at once; further deliveries wait, unhandled,
    /// until earlier ones are done. Handling a message holds several copies of it (decoded,
    /// forwarded, its outputs), so this bounds memory where `prefetch` alone would let 64
    /// large messages in at once. A larger message than this is handled alone.
    pub max_bytes_in_flight: usize,
    /// Deliveries of one message before it goes to the dead-letter queue.
    pub max_attempts: u32,
    /// Wait before redelivering after a transient failure, per attempt (milliseconds).
    pub retry_backoff_ms: Vec<u64>,
    /// Topic exchange for validated referrals (routing key per provider).
    pub referrals_exchange: String,
    /// Topic exchange for insurers (routing key per payer).
    pub insurers_exchange: String,
    /// Topic exchange for rejected referrals.
    pub rejected_exchange: String,
    /// Queue for messages that cannot be decoded or keep failing.
    pub dead_letter_queue: String,
    /// Also publish the canonical JSON beside the FHIR Bundle for providers.
    pub publish_canonical: bool,
    /// Routing-key prefixes of subscribers that want FHIR XML (`application/fhir+xml`) instead
    /// of JSON, e.g. `provider.461782031` or `payer.109519005`.
    pub xml_subscribers: Vec<String>,
    /// Fix the jurisdiction of everything on the inbound queue (`DE`, `NL`, `FI`) instead of
    /// detecting it from identifiers and profiles.
    pub jurisdiction: Option<crate::model::Jurisdiction>,
}

/// Database settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// `sqlite://path?mode=rwc` (default, embedded) or `postgres://...`; `DATABASE_URL` overrides.
    pub database_url: String,
    /// Pool size for PostgreSQL (SQLite always uses one writer). The referral writers and the
    /// outbox relay have two connections each beside it: at most `max_connections + 4`.
    pub max_connections: u32,
}

/// Pipeline settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PipelineConfig {
    /// Largest payload in bytes.
    pub max_bytes: usize,
    /// Deepest nesting.
    pub max_depth: usize,
    /// Folder of `mappings/` (default: see `Mappings::default_dir`).
    pub mappings: Option<PathBuf>,
    /// Language of outcome messages when the sender names none.
    pub default_language: String,
}

/// Outbox relay settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct OutboxConfig {
    /// How often an idle relay looks for rows it was not told of (milliseconds): rows other
    /// instances wrote, and claims whose lease expired. Commits in this process wake it at once.
    pub poll_interval_ms: u64,
    /// Rows published per batch.
    pub batch_size: i64,
    /// Bytes of message bodies one batch should hold at most: with large messages (a referral
    /// with an attached PDF) the relay claims fewer rows, so memory stays flat.
    pub batch_bytes: i64,
    /// Publish attempts before a row is parked as failed.
    pub max_attempts: i64,
    /// How long a relay owns a claimed batch before another instance may take it over
    /// (milliseconds); after a crash, the rows are published again with the same message-id.
    pub lease_ms: i64,
    /// Bytes of outbound bodies this process's writers may hand to its own relay directly: the
    /// rows are written already claimed by that relay, which publishes them from memory instead
    /// of claiming and reading them back from the store. Beyond this budget (the broker is slow
    /// or away) rows wait in the store for a claim as usual. 0 turns the hand-over off.
    /// 8 MiB by default: with 500 KB referrals, 16 MiB put `serve`'s peak RSS at 141 MB, 8 MiB
    /// at 123 MB; plain referrals use a fraction of it.
    pub handoff_bytes: i64,
    /// Days the body of a published output is kept after the broker confirmed it; then the
    /// body is deleted and the outbox row stays as the record of the delivery (when, where,
    /// under which message-id). 0 keeps every body. Without it the store grows by every
    /// output's body forever (~10 KB per output of a plain referral, ~500 KB with an attached
    /// PDF). The inbound message, its verdict and its outcome are never deleted, and the
    /// outputs of billing runs (Claims, § 302 interchanges) keep their bodies: they are the
    /// billing record.
    pub sent_body_retention_days: u32,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: "127.0.0.1:8080".to_owned(),
        }
    }
}

impl Default for AmqpConfig {
    fn default() -> Self {
        AmqpConfig {
            url: "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned(),
            inbound_queue: "sociogate.inbound".to_owned(),
            prefetch: 64,
            max_bytes_in_flight: 24 * 1024 * 1024,
            max_attempts: 5,
            retry_backoff_ms: vec![200, 1_000, 5_000, 15_000],
            referrals_exchange: "sociogate.referrals".to_owned(),
            insurers_exchange: "sociogate.insurers".to_owned(),
            rejected_exchange: "sociogate.rejected".to_owned(),
            dead_letter_queue: "sociogate.dead-letter".to_owned(),
            publish_canonical: true,
            xml_subscribers: Vec::new(),
            jurisdiction: None,
        }
    }
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            database_url: "sqlite://sociogate.db?mode=rwc".to_owned(),
            max_connections: 16,
        }
    }
}

impl Default for PipelineConfig {
    fn default() -> Self {
        let limits = crate::decode::Limits::default();
        PipelineConfig {
            max_bytes: limits.max_bytes,
            max_depth: limits.max_depth,
            mappings: None,
            default_language: "en".to_owned(),
        }
    }
}

impl Default for OutboxConfig {
    fn default() -> Self {
        OutboxConfig {
            poll_interval_ms: 100,
            batch_size: 256,
            batch_bytes: 8 * 1024 * 1024,
            max_attempts: 20,
            lease_ms: 30_000,
            handoff_bytes: 8 * 1024 * 1024,
            sent_body_retention_days: 30,
        }
    }
}

impl Config {
    /// Loads defaults, then `file` (if given), then the environment.
    pub fn load(file: Option<&Path>) -> Result<Config, Box<figment::Error>> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(file) = file {
            figment = figment.merge(Toml::file_exact(file));
        }
        // SOCIOGATE_MAPPINGS names the data folder for every subcommand (Mappings::default_dir),
        // not a configuration key.
        figment = figment.merge(
            Env::prefixed("SOCIOGATE_")
                .ignore(&["MAPPINGS"])
                .split("__"),
        );
        if let Ok(url) = std::env::var("DATABASE_URL") {
            figment = figment.merge(Serialized::default("store.database_url", url));
        }
        if let Ok(url) = std::env::var("AMQP_URL") {
            figment = figment.merge(Serialized::default("amqp.url", url));
        }
        figment.extract().map_err(Box::new)
    }

    /// Problems that make the configuration unusable, all at once.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.http.listen.parse::<std::net::SocketAddr>().is_err() {
            problems.push(format!(
                "http.listen {:?} is not an address:port",
                self.http.listen
            ));
        }
        if !(self.store.database_url.starts_with("sqlite:")
            || self.store.database_url.starts_with("postgres"))
        {
            problems.push("store.database_url must start with sqlite: or postgres://".to_owned());
        }
        if self.amqp.prefetch == 0 {
            problems.push("amqp.prefetch must be at least 1".to_owned());
        }
        if self.amqp.max_bytes_in_flight < 1024 {
            problems.push("amqp.max_bytes_in_flight must be at least 1024".to_owned());
        }
        if self.amqp.max_attempts == 0 {
            problems.push("amqp.max_attempts must be at least 1".to_owned());
        }
        if !crate::mappings::LANGUAGES.contains(&self.pipeline.default_language.as_str()) {
            problems.push(format!(
                "pipeline.default_language {:?} is not one of {:?}",
                self.pipeline.default_language,
                crate::mappings::LANGUAGES
            ));
        }
        if self.outbox.handoff_bytes < 0 {
            problems.push("outbox.handoff_bytes must not be negative".to_owned());
        }
        if self.outbox.lease_ms < 1_000 || self.outbox.batch_size < 1 {
            problems.push(
                "outbox.lease_ms must be at least 1000 and outbox.batch_size at least 1".to_owned(),
            );
        }
        if self.pipeline.max_bytes == 0 || self.pipeline.max_depth == 0 {
            problems.push("pipeline.max_bytes and pipeline.max_depth must be positive".to_owned());
        }
        problems
    }

    /// Decoding limits.
    pub fn limits(&self) -> crate::decode::Limits {
        crate::decode::Limits {
            max_bytes: self.pipeline.max_bytes,
            max_depth: self.pipeline.max_depth,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_values_override_defaults_and_keep_the_rest() {
        let dir = std::env::temp_dir().join(format!("sociogate-config-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("c.toml");
        let written = std::fs::write(
            &path,
            "[amqp]\nprefetch = 7\n[http]\nlisten = \"0.0.0.0:9000\"\n",
        );
        assert!(written.is_ok());
        let config = Config::load(Some(&path)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config.amqp.prefetch, 7);
        assert_eq!(config.http.listen, "0.0.0.0:9000");
        assert_eq!(config.amqp.inbound_queue, "sociogate.inbound");
        assert!(config.problems().is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn unknown_keys_are_refused() {
        let dir = std::env::temp_dir().join(format!("sociogate-config-bad-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("c.toml");
        assert!(std::fs::write(&path, "[amqp]\nprefetsh = 7\n").is_ok());
        assert!(Config::load(Some(&path)).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
