//! The outbox relay: publishes pending outbox rows to RabbitMQ with publisher confirms and marks
//! them sent. Delivery is at least once; every output carries a stable `message-id`
//! (`sociogate:<gateway-id>:<kind>`) so a consumer can drop a repeat after a crash.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Connection};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use crate::config::OutboxConfig;
use crate::forward::outbound_message_id;
use crate::store::{NewOutbound, OutboxClaim, OutboxRow, Store, now_ms};
use crate::telemetry;

/// The writers' end of the hand-over: outbox rows a writer of this process commits already
/// claimed by this process's relay, which then publishes them from memory. Without it the
/// relay claimed every row with an `UPDATE ... RETURNING` that read each body back, and marked
/// it sent with a second update; on SQLite's one connection that claim held up the writer,
/// on PostgreSQL it scanned an index full of the dead versions of rows already sent.
///
/// Memory is bounded by a budget of body bytes: a writer reserves its rows' bytes before its
/// transaction and, when the budget is spent (the broker is slow or away), writes them
/// unclaimed, to be claimed from the store as before. Rows the relay cannot publish go back to
/// the store's path too: a failed publish marks them pending, and rows not published within
/// their lease (the relay stopped) are claimed again by any relay once it has run out.
#[derive(Debug, Clone)]
pub struct Handoff {
    relay_id: Arc<str>,
    lease_ms: i64,
    budget: Arc<Semaphore>,
    sender: mpsc::UnboundedSender<Handed>,
}

/// The relay's end of the hand-over; kept across reconnects, so rows handed over while the
/// broker was away are published by the next relay (the relay id stays the process's).
#[derive(Debug)]
pub struct HandoffReceiver {
    relay_id: Arc<str>,
    receiver: tokio::sync::Mutex<mpsc::UnboundedReceiver<Handed>>,
}

/// Rows handed over after their commit.
#[derive(Debug)]
struct Handed {
    rows: Vec<OutboxRow>,
    lease_until: i64,
    /// The rows' share of the budget, given back when they are published (dropped).
    budget: OwnedSemaphorePermit,
}

/// Budget reserved for one transaction's outbox rows: claim them with [`Reservation::claim`],
/// then [`Reservation::hand_over`] after the commit. Dropped unused, it gives the budget back.
#[derive(Debug)]
pub struct Reservation {
    relay_id: Arc<str>,
    lease_until: i64,
    permit: OwnedSemaphorePermit,
    sender: mpsc::UnboundedSender<Handed>,
}

/// The hand-over for `cfg`, or `None` when `outbox.handoff_bytes` is 0.
pub fn handoff(cfg: &OutboxConfig) -> Option<(Handoff, Arc<HandoffReceiver>)> {
    let budget = usize::try_from(cfg.handoff_bytes)
        .ok()
        .filter(|&b| b > 0)?
        .min(Semaphore::MAX_PERMITS);
    let relay_id: Arc<str> = Arc::from(uuid::Uuid::new_v4().to_string());
    let (sender, receiver) = mpsc::unbounded_channel();
    Some((
        Handoff {
            relay_id: relay_id.clone(),
            lease_ms: cfg.lease_ms,
            budget: Arc::new(Semaphore::new(budget)),
            sender,
        },
        Arc::new(HandoffReceiver {
            relay_id,
            receiver: tokio::sync::Mutex::new(receiver),
        }),
    ))
}

impl Handoff {
    /// Reserves `bytes` of the budget (the outputs' bodies), or `None` when it is spent: then
    /// the caller writes the rows unclaimed.
    pub fn reserve(&self, bytes: usize) -> Option<Reservation> {
        let permit = self
            .budget
            .clone()
            .try_acquire_many_owned(u32::try_from(bytes.max(1)).ok()?)
            .ok()?;
        Some(Reservation {
            relay_id: self.relay_id.clone(),
            lease_until: now_ms().saturating_add(self.lease_ms),
            permit,
            sender: self.sender.clone(),
        })
    }
}

impl Reservation {
    /// The claim to write the rows with.
    pub fn claim(&self) -> OutboxClaim<'_> {
        OutboxClaim {
            relay_id: &self.relay_id,
            lease_until: self.lease_until,
        }
    }

    /// Hands the committed rows to the relay: `(row id, gateway id, output)`.
    pub fn hand_over(self, rows: Vec<(i64, String, NewOutbound)>) {
        let rows = rows
            .into_iter()
            .map(|(id, message, out)| OutboxRow {
                id,
                message,
                kind: out.kind,
                exchange: out.exchange,
                routing_key: out.routing_key,
                content_type: out.content_type,
                correlation_id: out.correlation_id,
                headers: out.headers,
                body: out.body,
                attempts: 0,
            })
            .collect();
        // A relay that is gone leaves the rows to their lease.
        let _ = self.sender.send(Handed {
            rows,
            lease_until: self.lease_until,
            budget: self.permit,
        });
    }
}

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

/// Claims and publishes one batch of at most `limit` rows from the store; returns how many
/// rows were claimed and their body bytes (for [`next_batch_size`]).
pub async fn publish_batch(
    store: &Store,
    channel: &Channel,
    cfg: &OutboxConfig,
    relay_id: &str,
    limit: i64,
) -> Result<(usize, usize), RelayError> {
    let rows = store.claim_outbox(relay_id, limit, cfg.lease_ms).await?;
    let bytes: usize = rows.iter().map(|r| r.body.len()).sum();
    publish_rows(store, channel, cfg, relay_id, &rows).await?;
    Ok((rows.len(), bytes))
}

/// Publishes rows this relay owns, then marks them sent, or counts a failed attempt.
async fn publish_rows(
    store: &Store,
    channel: &Channel,
    cfg: &OutboxConfig,
    relay_id: &str,
    rows: &[OutboxRow],
) -> Result<(), RelayError> {
    if rows.is_empty() {
        return Ok(());
    }
    // Publish the whole batch, then wait for the confirms: pipelined, not one round trip each.
    let mut pending = Vec::with_capacity(rows.len());
    for row in rows {
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
            store
                .mark_failed_attempt(relay_id, row.id, cfg.max_attempts)
                .await?;
        }
    }
    store.mark_sent(relay_id, &sent).await?;
    for (kind, n) in kinds {
        telemetry::forwarded(kind, n);
    }
    Ok(())
}

/// Takes what was handed over (`first`, then what waits), up to the batch limits. Rows whose
/// lease has run out are left to the store's claim path, since another relay may own them by
/// now. Returns the rows and their budget, to be held until they are published.
fn take_handed(
    receiver: &mut mpsc::UnboundedReceiver<Handed>,
    first: Option<Handed>,
    cfg: &OutboxConfig,
) -> (Vec<OutboxRow>, Vec<OwnedSemaphorePermit>) {
    let max_rows = usize::try_from(cfg.batch_size).unwrap_or(usize::MAX).max(1);
    let max_bytes = usize::try_from(cfg.batch_bytes)
        .unwrap_or(usize::MAX)
        .max(1);
    let (mut rows, mut budget) = (Vec::new(), Vec::new());
    let mut bytes = 0;
    let mut next = first.or_else(|| receiver.try_recv().ok());
    while let Some(handed) = next {
        if handed.lease_until > now_ms() {
            bytes += handed.rows.iter().map(|r| r.body.len()).sum::<usize>();
            rows.extend(handed.rows);
            budget.push(handed.budget);
        }
        if rows.len() >= max_rows || bytes >= max_bytes {
            break;
        }
        next = receiver.try_recv().ok();
    }
    (rows, budget)
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

/// Runs the relay until `shutdown`; reconnects a channel when the broker fails. Rows handed
/// over by this process's writers (`handoff`) go first; the store is looked at when a commit
/// wrote unclaimed rows, every `poll_interval_ms` (rows of other instances, expired leases),
/// and until a claim comes back empty.
pub async fn run(
    store: Store,
    connection: Arc<Connection>,
    cfg: OutboxConfig,
    handoff: Option<Arc<HandoffReceiver>>,
    shutdown: CancellationToken,
) {
    let idle = Duration::from_millis(cfg.poll_interval_ms.max(10));
    let relay_id: Arc<str> = match &handoff {
        Some(h) => h.relay_id.clone(),
        None => Arc::from(uuid::Uuid::new_v4().to_string()),
    };
    // One relay at a time takes the hand-over (the next one starts after this one returned).
    let mut handed = match &handoff {
        Some(h) => Some(h.receiver.lock().await),
        None => None,
    };
    let mut channel: Option<Channel> = None;
    // Start small: the first batch's rows say how large messages are.
    let mut limit = cfg.batch_size.min(16);
    let mut last_depth: Option<Instant> = None;
    // Rows of an earlier run may be waiting.
    let mut look_in_store = true;
    let mut received: Option<Handed> = None;
    loop {
        if shutdown.is_cancelled() {
            // Drain what is already committed before stopping.
            if let Some(ch) = &channel {
                if let Some(rx) = handed.as_deref_mut() {
                    let mut first = received.take();
                    while let Ok(true) =
                        publish_handed(&store, ch, &cfg, &relay_id, rx, first.take()).await
                    {
                    }
                }
                while let Ok((n, bytes)) = publish_batch(&store, ch, &cfg, &relay_id, limit).await {
                    if n == 0 {
                        break;
                    }
                    limit = next_batch_size(&cfg, n, bytes);
                }
                close_channel(ch).await;
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
        // The gauge needs no more than one count a second, however busy the relay is.
        if last_depth.is_none_or(|at: Instant| at.elapsed() >= Duration::from_secs(1)) {
            if let Ok(depth) = store.outbox_depth().await {
                telemetry::outbox_depth(depth);
            }
            last_depth = Some(Instant::now());
        }
        let mut failed: Option<RelayError> = None;
        let mut busy = false;
        if let Some(rx) = handed.as_deref_mut() {
            match publish_handed(&store, ch, &cfg, &relay_id, rx, received.take()).await {
                Ok(any) => busy = any,
                Err(e) => failed = Some(e),
            }
        }
        // A commit of unclaimed rows while the relay was busy with handed-over ones.
        look_in_store |= store.outbox_committed().now_or_never().is_some();
        if look_in_store && failed.is_none() {
            match publish_batch(&store, ch, &cfg, &relay_id, limit).await {
                Ok((0, _)) => look_in_store = false,
                Ok((n, bytes)) => limit = next_batch_size(&cfg, n, bytes),
                Err(e) => failed = Some(e),
            }
        }
        if let Some(e) = failed {
            tracing::warn!(error = %e, "Outbox relay batch failed; retrying");
            channel = None;
            sleep_or_cancel(Duration::from_millis(500), &shutdown).await;
            continue;
        }
        if busy || look_in_store {
            continue;
        }
        // Idle. A commit in this process hands its rows over or wakes the relay at once; the
        // poll interval is for rows written by other instances and for leases that expired.
        tokio::select! {
            next = next_handed(handed.as_deref_mut()) => match next {
                Some(h) => received = Some(h),
                // Every writer is gone; the store's path remains.
                None => handed = None,
            },
            () = store.outbox_committed() => look_in_store = true,
            () = tokio::time::sleep(idle) => look_in_store = true,
            () = shutdown.cancelled() => {}
        }
    }
}

/// Publishes what was handed over (`first`, then what waits, up to the batch limits);
/// returns whether there was anything.
async fn publish_handed(
    store: &Store,
    channel: &Channel,
    cfg: &OutboxConfig,
    relay_id: &str,
    receiver: &mut mpsc::UnboundedReceiver<Handed>,
    first: Option<Handed>,
) -> Result<bool, RelayError> {
    // The budget is given back once the rows are published (or failed back to the store).
    let (rows, _budget) = take_handed(receiver, first, cfg);
    publish_rows(store, channel, cfg, relay_id, &rows).await?;
    Ok(!rows.is_empty())
}

/// The next rows handed over; never resolves without a hand-over.
async fn next_handed(receiver: Option<&mut mpsc::UnboundedReceiver<Handed>>) -> Option<Handed> {
    match receiver {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Closes `channel` and waits for the broker's answer (at most five seconds: a broker that does
/// not answer must not hold up the shutdown). Dropping the last handle would close it too, but
/// without waiting: the connection's close that follows then finds the channel still closing,
/// and lapin logs that as an error on every clean shutdown.
pub(crate) async fn close_channel(channel: &Channel) {
    if channel.status().connected() {
        let _ = tokio::time::timeout(
            Duration::from_secs(5),
            channel.close(200, "shutting down".into()),
        )
        .await;
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
