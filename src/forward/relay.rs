//! The outbox relay: publishes pending outbox rows to RabbitMQ with publisher confirms and marks
//! them sent. Delivery is at least once; every output carries a stable `message-id`
//! (`sociogate:<gateway-id>:<kind>`) so a consumer can drop a repeat after a crash.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Connection};
use tokio_util::sync::CancellationToken;

use crate::config::OutboxConfig;
use crate::forward::outbound_message_id;
use crate::store::{OutboxRow, Store};
use crate::telemetry;

/// Declares the exchanges and queues the gateway publishes to.
pub async fn declare_topology(
    channel: &Channel,
    cfg: &crate::config::AmqpConfig,
) -> Result<(), lapin::Error> {
    use lapin::ExchangeKind;
    use lapin::options::ExchangeDeclareOptions;
    let durable = ExchangeDeclareOptions {
        durable: true,
        ..ExchangeDeclareOptions::default()
    };
    for exchange in [
        &cfg.referrals_exchange,
        &cfg.insurers_exchange,
        &cfg.rejected_exchange,
    ] {
        channel
            .exchange_declare(
                exchange.as_str().into(),
                ExchangeKind::Topic,
                durable,
                FieldTable::default(),
            )
            .await?;
    }
    crate::intake::amqp::declare_quorum_queue(channel, &cfg.dead_letter_queue).await?;
    Ok(())
}

fn properties(row: &OutboxRow, gateway_id: &str) -> BasicProperties {
    let mut headers = FieldTable::default();
    if let Ok(map) = serde_json::from_str::<BTreeMap<String, String>>(&row.headers) {
        for (k, v) in map {
            headers.insert(ShortString::from(k), AMQPValue::LongString(v.into()));
        }
    }
    let mut props = BasicProperties::default()
        .with_content_type(row.content_type.as_str().into())
        .with_delivery_mode(2)
        .with_message_id(outbound_message_id(gateway_id, &row.kind).into())
        .with_app_id("sociogate".into())
        .with_headers(headers);
    if let Some(c) = &row.correlation_id {
        props = props.with_correlation_id(c.as_str().into());
    }
    props
}

/// The batch size for the next claim: `batch_size`, or fewer rows when the last batch's rows
/// were so large that `batch_bytes` would be exceeded.
pub fn next_batch_size(cfg: &OutboxConfig, last_rows: usize, last_bytes: usize) -> i64 {
    if last_rows == 0 || last_bytes == 0 {
        return cfg.batch_size;
    }
    let per_row = (last_bytes / last_rows).max(1);
    let fits = usize::try_from(cfg.batch_bytes.max(1)).unwrap_or(usize::MAX) / per_row;
    i64::try_from(fits)
        .unwrap_or(i64::MAX)
        .clamp(1, cfg.batch_size.max(1))
}

/// Publishes one batch of at most `limit` rows; returns how many rows were claimed and their
/// body bytes (for [`next_batch_size`]).
pub async fn publish_batch(
    store: &Store,
    channel: &Channel,
    cfg: &OutboxConfig,
    relay_id: &str,
    limit: i64,
) -> Result<(usize, usize), RelayError> {
    let rows = store.claim_outbox(relay_id, limit, cfg.lease_ms).await?;
    if rows.is_empty() {
        return Ok((0, 0));
    }
    let bytes: usize = rows.iter().map(|r| r.body.len()).sum();
    // Publish the whole batch, then wait for the confirms: pipelined, not one round trip each.
    let mut pending = Vec::with_capacity(rows.len());
    for row in &rows {
        let confirm = channel
            .basic_publish(
                row.exchange.as_str().into(),
                row.routing_key.as_str().into(),
                BasicPublishOptions::default(),
                &row.body,
                properties(row, &row.message),
            )
            .await;
        pending.push((row, confirm));
    }
    let mut sent = Vec::with_capacity(rows.len());
    let mut kinds: BTreeMap<&str, u64> = BTreeMap::new();
    for (row, confirm) in pending {
        let acked = match confirm {
            Ok(c) => matches!(c.await, Ok(conf) if conf.is_ack()),
            Err(_) => false,
        };
        if acked {
            sent.push(row.id);
            *kinds.entry(row.kind.as_str()).or_default() += 1;
        } else {
            telemetry::forward_failed();
            store.mark_failed_attempt(row.id, cfg.max_attempts).await?;
        }
    }
    store.mark_sent(relay_id, &sent).await?;
    for (kind, n) in kinds {
        telemetry::forwarded(kind, n);
    }
    Ok((rows.len(), bytes))
}

/// Errors of the relay.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// The broker failed.
    #[error("broker error")]
    Broker(#[from] lapin::Error),
}

/// Runs the relay until `shutdown`; reconnects a channel when the broker fails.
pub async fn run(
    store: Store,
    connection: std::sync::Arc<Connection>,
    cfg: OutboxConfig,
    shutdown: CancellationToken,
) {
    let idle = Duration::from_millis(cfg.poll_interval_ms.max(10));
    let relay_id = uuid::Uuid::new_v4().to_string();
    let mut channel: Option<Channel> = None;
    // Start small: the first batch's rows say how large messages are.
    let mut limit = cfg.batch_size.min(16);
    let mut last_depth: Option<Instant> = None;
    loop {
        if shutdown.is_cancelled() {
            // Drain what is already committed before stopping.
            if let Some(ch) = &channel {
                while let Ok((n, bytes)) = publish_batch(&store, ch, &cfg, &relay_id, limit).await {
                    if n == 0 {
                        break;
                    }
                    limit = next_batch_size(&cfg, n, bytes);
                }
            }
            return;
        }
        if channel.as_ref().is_none_or(|c| !c.status().connected()) {
            match open_channel(&connection).await {
                Ok(ch) => channel = Some(ch),
                Err(e) => {
                    tracing::warn!(error = %e, "Outbox relay cannot open a channel; retrying");
                    sleep_or_cancel(Duration::from_secs(1), &shutdown).await;
                    continue;
                }
            }
        }
        let Some(ch) = channel.as_ref() else { continue };
        match publish_batch(&store, ch, &cfg, &relay_id, limit).await {
            Ok((0, _)) => {
                // The gauge needs no more than one count a second, however often the relay idles.
                if last_depth.is_none_or(|at: Instant| at.elapsed() >= Duration::from_secs(1)) {
                    if let Ok(depth) = store.outbox_depth().await {
                        telemetry::outbox_depth(depth);
                    }
                    last_depth = Some(Instant::now());
                }
                // A commit in this process wakes the relay at once; the poll interval is for
                // rows written by other instances and for leases that expired.
                tokio::select! {
                    () = store.outbox_committed() => {}
                    () = tokio::time::sleep(idle) => {}
                    () = shutdown.cancelled() => {}
                }
            }
            Ok((n, bytes)) => limit = next_batch_size(&cfg, n, bytes),
            Err(e) => {
                tracing::warn!(error = %e, "Outbox relay batch failed; retrying");
                channel = None;
                sleep_or_cancel(Duration::from_millis(500), &shutdown).await;
            }
        }
    }
}

async fn open_channel(connection: &Connection) -> Result<Channel, lapin::Error> {
    let channel = connection.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    Ok(channel)
}

async fn sleep_or_cancel(d: Duration, shutdown: &CancellationToken) {
    tokio::select! {
        () = tokio::time::sleep(d) => {}
        () = shutdown.cancelled() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_messages_shrink_the_batch_and_small_ones_restore_it() {
        let cfg = OutboxConfig::default();
        assert_eq!(cfg.batch_bytes, 8 * 1024 * 1024);
        // 16 rows of 1 MB: 8 rows fit the budget.
        assert_eq!(next_batch_size(&cfg, 16, 16 * 1024 * 1024), 8);
        // 16 rows of 10 KB: the configured maximum.
        assert_eq!(next_batch_size(&cfg, 16, 16 * 10 * 1024), cfg.batch_size);
        // A single row larger than the budget still goes out alone.
        assert_eq!(next_batch_size(&cfg, 1, 20 * 1024 * 1024), 1);
        assert_eq!(next_batch_size(&cfg, 0, 0), cfg.batch_size);
    }
}
