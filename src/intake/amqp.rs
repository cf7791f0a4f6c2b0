//! AMQP intake: consumes the durable quorum queue with manual acks and bounded prefetch.
//! A delivery is acknowledged only after [`Gateway::handle`] committed it; a transient failure
//! is retried with backoff and, after `max_attempts` deliveries, dead-lettered.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{FutureExt, StreamExt};
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions, BasicQosOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection};
use serde_json::{Map, Value};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::AmqpConfig;
use crate::pipeline::gateway::{Envelope, Gateway, Handled};
use crate::store::StoreError;
use crate::telemetry;

/// Declares a durable quorum queue (the inbound queue and the dead-letter queue are both).
pub async fn declare_quorum_queue(channel: &Channel, name: &str) -> Result<(), lapin::Error> {
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    channel
        .queue_declare(
            name.into(),
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            args,
        )
        .await?;
    Ok(())
}

fn header_text(value: &AMQPValue) -> Option<String> {
    match value {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        AMQPValue::LongLongInt(n) => Some(n.to_string()),
        AMQPValue::LongInt(n) => Some(n.to_string()),
        AMQPValue::ShortInt(n) => Some(n.to_string()),
        AMQPValue::LongUInt(n) => Some(n.to_string()),
        AMQPValue::Boolean(b) => Some(b.to_string()),
        _ => None,
    }
}

/// The envelope of a delivery, and how often it was delivered before (quorum queues count).
/// The payload is moved out, not copied: the delivery is only acked or nacked afterwards,
/// which needs its tag, not its data.
fn envelope_of(delivery: &mut Delivery, cfg: &AmqpConfig) -> (Envelope, u32) {
    let props = &delivery.properties;
    let mut headers = Map::new();
    let mut language = None;
    let mut delivery_count = 0u32;
    if let Some(table) = props.headers() {
        for (key, value) in table.inner() {
            let key = key.as_str();
            let Some(text) = header_text(value) else {
                continue;
            };
            match key {
                "x-delivery-count" => delivery_count = text.parse().unwrap_or(0),
                "x-sociogate-language" | "accept-language" | "Accept-Language" => {
                    language = Some(text.clone())
                }
                _ => {}
            }
            // Only routing metadata is kept; custom headers could carry anything.
            if key.starts_with("x-") || key.eq_ignore_ascii_case("accept-language") {
                headers.insert(key.to_owned(), Value::String(text));
            }
        }
    }
    let envelope = Envelope {
        channel: "amqp",
        body: std::mem::take(&mut delivery.data).into(),
        content_type: props.content_type().as_ref().map(|s| s.as_str().to_owned()),
        message_id: props
            .message_id()
            .as_ref()
            .map(|s| s.as_str().to_owned())
            .filter(|s| !s.is_empty()),
        correlation_id: props
            .correlation_id()
            .as_ref()
            .map(|s| s.as_str().to_owned()),
        reply_to: props
            .reply_to()
            .as_ref()
            .map(|s| s.as_str().to_owned())
            .filter(|s| !s.is_empty()),
        language,
        headers: Value::Object(headers),
        jurisdiction: cfg.jurisdiction,
    };
    (envelope, delivery_count)
}

/// [`Gateway::handle`], with a panic turned into [`StoreError::Panicked`].
///
/// The last line against a defect: the referral pipeline catches its own panics per message
/// (`pipeline::guarded`), but a panic anywhere else in handling (the billing flows, say) would
/// end the delivery's task with the delivery neither acked nor nacked, its prefetch slot lost
/// until the channel closes. As a failure it is retried and then dead-lettered.
async fn handle_guarded(gateway: &Gateway, envelope: &Envelope) -> Result<Handled, StoreError> {
    AssertUnwindSafe(gateway.handle(envelope))
        .catch_unwind()
        .await
        .unwrap_or(Err(StoreError::Panicked))
}

/// Handles one delivery to the end: ack, or nack for a retry, or dead-letter.
async fn handle_delivery(
    gateway: &Gateway,
    channel: &Channel,
    cfg: &AmqpConfig,
    mut delivery: Delivery,
) {
    telemetry::received("amqp");
    let (envelope, delivered_before) = envelope_of(&mut delivery, cfg);
    match handle_guarded(gateway, &envelope).await {
        Ok(_) => {
            if let Err(e) = delivery.ack(BasicAckOptions::default()).await {
                // The broker redelivers; the store recognises the duplicate.
                tracing::warn!(error = %e, "Ack failed after commit; the redelivery will be a duplicate");
            }
        }
        Err(e) => {
            let attempt = delivered_before + 1;
            tracing::warn!(error = %e, attempt, message_id = envelope.message_id.as_deref().unwrap_or(""), "Transient failure");
            if attempt >= cfg.max_attempts {
                let reason = format!("transient failure after {attempt} attempts: {e}");
                let parked = match gateway.dead_letter(&envelope, &reason).await {
                    Ok(_) => true,
                    // The store itself is down: hand the raw message to the broker's DLQ directly.
                    Err(_) => publish_dead_letter(channel, cfg, &envelope, &reason).await,
                };
                if parked {
                    let _ = delivery.ack(BasicAckOptions::default()).await;
                    return;
                }
            }
            telemetry::retried();
            let wait = cfg
                .retry_backoff_ms
                .get(delivered_before as usize)
                .or(cfg.retry_backoff_ms.last())
                .copied()
                .unwrap_or(1_000);
            tokio::time::sleep(Duration::from_millis(wait)).await;
            let _ = delivery
                .nack(BasicNackOptions {
                    requeue: true,
                    ..BasicNackOptions::default()
                })
                .await;
        }
    }
}

async fn publish_dead_letter(
    channel: &Channel,
    cfg: &AmqpConfig,
    envelope: &Envelope,
    reason: &str,
) -> bool {
    let mut headers = FieldTable::default();
    headers.insert(
        "x-sociogate-reason".into(),
        AMQPValue::LongString(reason.into()),
    );
    let mut props = BasicProperties::default()
        .with_delivery_mode(2)
        .with_headers(headers);
    if let Some(ct) = &envelope.content_type {
        props = props.with_content_type(ct.as_str().into());
    }
    if let Some(id) = &envelope.message_id {
        props = props.with_message_id(id.as_str().into());
    }
    let published = channel
        .basic_publish(
            "".into(),
            cfg.dead_letter_queue.as_str().into(),
            BasicPublishOptions::default(),
            &envelope.body,
            props,
        )
        .await;
    match published {
        Ok(confirm) => matches!(confirm.await, Ok(c) if c.is_ack()),
        Err(_) => false,
    }
}

/// Bounds the bytes of the delivered bodies being handled at once (`amqp.max_bytes_in_flight`),
/// counted in KiB. RabbitMQ does not implement AMQP's `prefetch-size`, so the bound is kept
/// here: a delivery waits, as the broker delivered it, until its bytes fit.
struct InFlightBytes {
    permits: Arc<tokio::sync::Semaphore>,
    total_kib: u32,
}

impl InFlightBytes {
    fn new(max_bytes: usize) -> InFlightBytes {
        // Within what a semaphore can hold (it refuses more than `MAX_PERMITS`).
        let most = u32::try_from(tokio::sync::Semaphore::MAX_PERMITS).unwrap_or(u32::MAX);
        let total_kib = kib(max_bytes).min(most);
        InFlightBytes {
            permits: Arc::new(tokio::sync::Semaphore::new(total_kib as usize)),
            total_kib,
        }
    }

    /// What a body of `len` bytes takes: its KiB, at least one, at most the whole bound (a
    /// larger body is handled alone rather than never).
    fn cost(&self, len: usize) -> u32 {
        kib(len).min(self.total_kib)
    }

    /// Waits until a body of `len` bytes fits; the permit gives its bytes back when dropped.
    async fn admit(&self, len: usize) -> Option<tokio::sync::OwnedSemaphorePermit> {
        // The semaphore is never closed, so this does not fail.
        self.permits
            .clone()
            .acquire_many_owned(self.cost(len))
            .await
            .ok()
    }
}

/// `len` bytes in KiB, rounded up, at least one.
fn kib(len: usize) -> u32 {
    u32::try_from(len.div_ceil(1024)).unwrap_or(u32::MAX).max(1)
}

/// Consumes until `shutdown` or until the connection fails; in-flight deliveries finish first.
pub async fn run(
    gateway: Gateway,
    connection: &Connection,
    cfg: Arc<AmqpConfig>,
    shutdown: CancellationToken,
) -> Result<(), lapin::Error> {
    let channel = connection.create_channel().await?;
    channel
        .confirm_select(lapin::options::ConfirmSelectOptions::default())
        .await?;
    declare_quorum_queue(&channel, &cfg.inbound_queue).await?;
    crate::forward::relay::declare_topology(&channel, &cfg).await?;
    channel
        .basic_qos(cfg.prefetch, BasicQosOptions::default())
        .await?;
    let tag = format!("sociogate-{}", uuid::Uuid::new_v4());
    let mut consumer = channel
        .basic_consume(
            cfg.inbound_queue.as_str().into(),
            tag.as_str().into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    tracing::info!(queue = %cfg.inbound_queue, prefetch = cfg.prefetch, "Consuming");
    let tracker = TaskTracker::new();
    let in_flight = InFlightBytes::new(cfg.max_bytes_in_flight);
    let result = loop {
        tokio::select! {
            () = shutdown.cancelled() => break Ok(()),
            next = consumer.next() => match next {
                Some(Ok(delivery)) => {
                    // Prefetch bounds how many of these run at once, the byte bound how much.
                    let permit = tokio::select! {
                        () = shutdown.cancelled() => {
                            // Not handled: back to the queue for the next consumer.
                            let _ = delivery
                                .nack(BasicNackOptions { requeue: true, ..BasicNackOptions::default() })
                                .await;
                            break Ok(());
                        }
                        permit = in_flight.admit(delivery.data.len()) => permit,
                    };
                    let gateway = gateway.clone();
                    let channel = channel.clone();
                    let cfg = cfg.clone();
                    tracker.spawn(async move {
                        let _bytes = permit;
                        handle_delivery(&gateway, &channel, &cfg, delivery).await;
                    });
                }
                Some(Err(e)) => break Err(e),
                None => break Ok(()),
            }
        }
    };
    // Stop taking new deliveries, then let the ones in flight finish and ack.
    let _ = channel
        .basic_cancel(
            tag.as_str().into(),
            lapin::options::BasicCancelOptions::default(),
        )
        .await;
    tracker.close();
    tracker.wait().await;
    crate::forward::relay::close_channel(&channel).await;
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::faults::{envelope, sqlite_gateway};

    /// A panic outside the referral pipeline's own guard is a failure of that delivery, to be
    /// retried and dead-lettered, and the next delivery is handled.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_panic_while_handling_is_a_failure_of_that_delivery() {
        let (gateway, _file) = sqlite_gateway().await;
        let referral = include_bytes!("../../examples/de-first-prescription-message.json");
        let failed = handle_guarded(&gateway, &envelope(referral, "panic-at-handle")).await;
        assert!(matches!(failed, Err(StoreError::Panicked)), "{failed:?}");
        let next = handle_guarded(&gateway, &envelope(referral, "next")).await;
        assert!(matches!(&next, Ok(Handled::New { .. })), "{next:?}");
        gateway.store().close().await;
    }

    /// The byte bound lets a referral of every-day size through 64 at a time, holds a delivery
    /// back while the bytes in flight are taken, and lets a body larger than the whole bound
    /// through alone instead of never.
    #[tokio::test]
    async fn deliveries_wait_while_the_bytes_in_flight_are_taken() {
        let default = InFlightBytes::new(AmqpConfig::default().max_bytes_in_flight);
        // A plain German referral is ~11 KB: prefetch, not the byte bound, limits those.
        assert!(64 * default.cost(11_000) <= default.total_kib);
        assert_eq!(default.cost(533_530), 522);
        assert_eq!(default.cost(0), 1);

        let small = InFlightBytes::new(4 * 1024);
        assert_eq!(
            small.cost(1_000_000),
            4,
            "a larger body takes the whole bound"
        );
        let Some(alone) = small.admit(1_000_000).await else {
            panic!("the semaphore is never closed");
        };
        assert_eq!(small.permits.available_permits(), 0);
        assert!(small.permits.clone().try_acquire_many_owned(1).is_err());
        drop(alone);
        assert_eq!(small.permits.available_permits(), 4);
        let Some(half) = small.admit(2 * 1024).await else {
            panic!("the semaphore is never closed");
        };
        assert!(small.permits.clone().try_acquire_many_owned(2).is_ok());
        drop(half);
    }
}
