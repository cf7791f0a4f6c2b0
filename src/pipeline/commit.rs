//! Group commit: referrals are decoded and mapped on their own tasks, then written by one
//! writer per process, several to a transaction.
//!
//! A transaction per message paid, per message, a commit (on PostgreSQL an fsync) and on
//! SQLite a hand-over to its one connection's thread for every statement; profiles of `serve`
//! showed most of its CPU in those hand-overs and the wake-ups around them. The writer takes
//! whatever is waiting when it is free (nothing is held back for a timer, so a lone message
//! is written at once) and commits it in one transaction. Each caller still gets its own
//! answer only after that commit, so "acked only after stored" holds per message.
//!
//! Within a batch, messages are written in the order of their patient key (a stable sort, so
//! one patient's messages keep their order): every writer takes patient locks in the same
//! order, so two instances cannot deadlock on them. A message sees the ledger claims of the
//! ones before it in the same transaction, as it would have seen them committed.
//!
//! If a batch fails, each of its messages is written again in a transaction of its own, so a
//! message the database refuses fails alone and does not take its batch-mates' attempts with it.

use std::sync::Arc;
use std::time::Instant;

use serde_json::Value;
use time::Date;
use tokio::sync::{mpsc, oneshot};

use super::gateway::{Envelope, Handled, new_message};
use super::{BudgetQuery, Engine, Inbound, Mapped, Processed, patient_key};
use crate::config::AmqpConfig;
use crate::forward::{self, Origin};
use crate::store::ledger::PriorUsage;
use crate::store::{Finished, Inserted, Store, StoreError, Tx};
use crate::telemetry;

/// At most this many messages in one transaction.
const BATCH_MESSAGES: usize = 64;
/// A batch stops growing once its payloads reach this many bytes (outbox rows are about twice
/// that), so large messages do not make one transaction hold hundreds of megabytes.
const BATCH_BYTES: usize = 8 * 1024 * 1024;
/// Messages waiting for the writer; callers wait beyond that (the intake's prefetch bounds
/// them anyway).
const QUEUE: usize = 256;

/// One referral waiting to be written: decoded and mapped by its caller.
pub(super) struct Pending {
    pub(super) envelope: Envelope,
    /// `None` once the batch attempt consumed it (a retry alone prepares it again).
    pub(super) prepared: Option<Result<Mapped, Box<Processed>>>,
    pub(super) gateway_id: String,
    pub(super) idempotency_key: String,
    pub(super) sha256: String,
    /// The ledger read its check needs (also what the batch is ordered by).
    pub(super) budget: Option<BudgetQuery>,
    /// Outcome language.
    pub(super) language: String,
    pub(super) today: Date,
    pub(super) started: Instant,
    pub(super) reply: oneshot::Sender<Result<Handled, StoreError>>,
}

/// What the writer needs of the gateway (not the gateway itself: the writer must not hold the
/// sender it receives from, or it would never learn that every gateway is gone).
#[derive(Debug, Clone)]
pub(super) struct Writer {
    pub(super) engine: Arc<Engine>,
    pub(super) store: Store,
    pub(super) amqp: Arc<AmqpConfig>,
}

/// A written message, to be answered and logged once its transaction is committed.
struct Written {
    handled: Handled,
    rule_codes: String,
}

/// Starts the writer on the current runtime; it ends when every sender is dropped.
pub(super) fn spawn(writer: Writer) -> mpsc::Sender<Pending> {
    let (sender, receiver) = mpsc::channel(QUEUE);
    tokio::spawn(writer.run(receiver));
    sender
}

impl Writer {
    async fn run(self, mut queue: mpsc::Receiver<Pending>) {
        while let Some(first) = queue.recv().await {
            let mut bytes = first.envelope.body.len();
            let mut batch = vec![first];
            while batch.len() < BATCH_MESSAGES && bytes < BATCH_BYTES {
                match queue.try_recv() {
                    Ok(next) => {
                        bytes += next.envelope.body.len();
                        batch.push(next);
                    }
                    Err(_) => break,
                }
            }
            self.commit(batch).await;
        }
    }

    /// Writes and commits one batch, then answers each caller.
    async fn commit(&self, mut batch: Vec<Pending>) {
        fn key(p: &Pending) -> Option<&str> {
            p.budget.as_ref().map(|q| q.patient_key.as_str())
        }
        batch.sort_by(|a, b| key(a).cmp(&key(b)));
        if batch.len() > 1 {
            match self.write_together(&mut batch).await {
                Ok(written) => {
                    for (pending, written) in batch.into_iter().zip(written) {
                        answer(pending, Ok(written));
                    }
                    return;
                }
                Err(e) => {
                    telemetry::batch_failed();
                    tracing::warn!(error = %e, messages = batch.len(), "Batch failed; writing its messages one by one");
                }
            }
        }
        for mut pending in batch {
            let result = self
                .write_together(std::slice::from_mut(&mut pending))
                .await
                .map(|mut written| written.remove(0));
            answer(pending, result);
        }
    }

    /// One transaction for all of `batch`, committed; the results in `batch`'s order.
    async fn write_together(&self, batch: &mut [Pending]) -> Result<Vec<Written>, StoreError> {
        let mut tx = self.store.begin().await?;
        let mut written = Vec::with_capacity(batch.len());
        for pending in batch.iter_mut() {
            written.push(self.write(&mut tx, pending).await?);
        }
        tx.commit().await?;
        telemetry::committed(batch.len());
        Ok(written)
    }

    /// Checks one message against the ledger as it stands in `tx` and writes it with its
    /// verdict and outputs.
    async fn write(&self, tx: &mut Tx, pending: &mut Pending) -> Result<Written, StoreError> {
        let envelope = &pending.envelope;
        let prepared = match pending.prepared.take() {
            Some(prepared) => prepared,
            // The batch this message was in failed after consuming it; prepare it again
            // (pure and deterministic but for the gateway id, which is set below).
            None => self.engine.prepare(inbound(envelope)),
        };
        let (processed, ledger_entry) = match prepared {
            Err(unreadable) => (*unreadable, None),
            Ok(mut mapped) => {
                mapped.referral.ids.gateway_id = pending.gateway_id.clone();
                let prior = match &pending.budget {
                    Some(q) => {
                        // Serialises budget checks and ledger updates per patient until commit.
                        tx.lock_patient(&q.patient_key).await?;
                        tx.prior_usage(&q.patient_key, q.start, q.window_years)
                            .await?
                    }
                    None => PriorUsage::default(),
                };
                self.engine.finish(mapped, &prior, pending.today)
            }
        };
        let outcome = self.engine.outcome(&processed, &pending.language).to_json();
        let outcome_text = outcome.to_string();
        let referral_json = processed
            .referral
            .as_ref()
            .and_then(|r| serde_json::to_string(r).ok());
        let codes: Vec<&str> = processed.issues.iter().map(|i| i.code.as_str()).collect();
        let rule_codes = codes.join(",");
        let key = processed.referral.as_ref().and_then(patient_key);
        let headers = envelope.headers.to_string();
        // The idempotency key is claimed by this insert; a duplicate writes nothing further.
        let inserted = tx
            .insert_finished_message(
                &new_message(
                    envelope,
                    &pending.gateway_id,
                    &pending.idempotency_key,
                    &headers,
                    &pending.sha256,
                ),
                &Finished {
                    status: processed.verdict.as_str(),
                    jurisdiction: processed
                        .referral
                        .as_ref()
                        .and_then(|r| r.jurisdiction)
                        .map(|j| j.code()),
                    patient_key: key.as_deref(),
                    rule_codes: &rule_codes,
                    referral: referral_json.as_deref(),
                    outcome: &outcome_text,
                },
            )
            .await?;
        if let Inserted::Duplicate(seen) = inserted {
            // The first delivery's outputs stand.
            return Ok(Written {
                handled: Handled::Duplicate {
                    gateway_id: seen.id,
                    status: seen.status,
                    outcome: seen
                        .outcome
                        .and_then(|o| serde_json::from_str::<Value>(&o).ok()),
                },
                rule_codes: String::new(),
            });
        }
        if let Some(entry) = ledger_entry {
            tx.record_ledger(&pending.gateway_id, &entry).await?;
        }
        let origin = Origin {
            gateway_id: &pending.gateway_id,
            message_id: envelope.message_id.as_deref(),
            correlation_id: envelope.correlation_id.as_deref(),
            reply_to: envelope.reply_to.as_deref(),
            content_type: envelope.content_type.as_deref(),
            body: &envelope.body,
        };
        let outputs = forward::plan(
            &origin,
            &processed,
            &outcome,
            &self.amqp,
            self.engine.mappings(),
        );
        tx.enqueue_all(&pending.gateway_id, &outputs).await?;
        Ok(Written {
            handled: Handled::New {
                gateway_id: pending.gateway_id.clone(),
                verdict: processed.verdict,
                outcome,
            },
            rule_codes,
        })
    }
}

/// The pipeline's view of an envelope.
pub(super) fn inbound(envelope: &Envelope) -> Inbound<'_> {
    Inbound {
        bytes: &envelope.body,
        content_type: envelope.content_type.as_deref(),
        message_id: envelope.message_id.as_deref(),
        jurisdiction: envelope.jurisdiction,
    }
}

/// Answers the caller of a committed (or failed) message, with its log line and metrics.
fn answer(pending: Pending, result: Result<Written, StoreError>) {
    let envelope = &pending.envelope;
    let result = result.map(|written| {
        match &written.handled {
            Handled::New {
                gateway_id,
                verdict,
                ..
            } => {
                telemetry::processed(envelope.channel, *verdict, pending.started.elapsed());
                tracing::info!(
                    gateway_id = %gateway_id,
                    message_id = envelope.message_id.as_deref().unwrap_or(""),
                    correlation_id = envelope.correlation_id.as_deref().unwrap_or(""),
                    verdict = verdict.as_str(),
                    rules = %written.rule_codes,
                    "Message processed"
                );
            }
            Handled::Duplicate { gateway_id, .. } => {
                telemetry::duplicate(envelope.channel);
                tracing::info!(gateway_id = %gateway_id, channel = envelope.channel, "Duplicate message ignored");
            }
        }
        written.handled
    });
    // A caller that went away (an HTTP client that hung up) needs no answer; its message is
    // stored either way.
    let _ = pending.reply.send(result);
}
