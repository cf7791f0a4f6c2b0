//! The service pipeline: one inbound message through decode, map, check, store and the
//! outbox; its rows are committed in one transaction (shared with other referrals written at
//! the same moment: see `commit`). Intakes (AMQP, HTTP, replay) call [`Gateway::handle`]
//! and acknowledge only after it returns `Ok`.

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

use super::commit::{self, Pending};
use crate::check::Verdict;
use crate::config::AmqpConfig;
use crate::forward::relay::Handoff;
use crate::forward::{self, Origin};
use crate::pipeline::Engine;
use crate::store::{Finished, Inserted, NewMessage, Store, StoreError, StoredSummary};
use crate::telemetry;

/// One inbound message with its transport metadata.
#[derive(Debug, Clone, Default)]
pub struct Envelope {
    /// `amqp`, `http` or `replay`.
    pub channel: &'static str,
    /// Raw payload (shared, not copied, by the group commit and retries).
    pub body: bytes::Bytes,
    /// Declared content type.
    pub content_type: Option<String>,
    /// AMQP `message-id` (or HTTP `Idempotency-Key`).
    pub message_id: Option<String>,
    /// AMQP `correlation-id`.
    pub correlation_id: Option<String>,
    /// AMQP `reply-to`.
    pub reply_to: Option<String>,
    /// Preferred language of the outcome (`Accept-Language` or the `x-sociogate-language` header).
    pub language: Option<String>,
    /// Other headers worth keeping, as JSON.
    pub headers: Value,
    /// Jurisdiction fixed by the intake's configuration (queue or HTTP route).
    pub jurisdiction: Option<crate::model::Jurisdiction>,
}

/// The row of an inbound message before its verdict.
pub(super) fn new_message<'a>(
    envelope: &'a Envelope,
    gateway_id: &'a str,
    idempotency_key: &'a str,
    headers: &'a str,
    sha256: &'a str,
) -> NewMessage<'a> {
    NewMessage {
        id: gateway_id,
        idempotency_key,
        channel: envelope.channel,
        content_type: envelope.content_type.as_deref(),
        message_id: envelope.message_id.as_deref(),
        correlation_id: envelope.correlation_id.as_deref(),
        reply_to: envelope.reply_to.as_deref(),
        headers,
        sha256,
        body: &envelope.body,
    }
}

/// What happened to one message.
#[derive(Debug, Clone, PartialEq)]
pub enum Handled {
    /// Processed now; its outputs are in the outbox.
    New {
        /// Gateway id.
        gateway_id: String,
        /// The verdict.
        verdict: Verdict,
        /// The OperationOutcome.
        outcome: Value,
    },
    /// Seen before: nothing was written or sent again.
    Duplicate {
        /// Gateway id of the first delivery.
        gateway_id: String,
        /// Its status.
        status: String,
        /// Its OperationOutcome, when finished.
        outcome: Option<Value>,
    },
}

impl Handled {
    /// The answer to a message whose key is stored already: what was stored under it.
    pub fn seen(stored: StoredSummary) -> Handled {
        Handled::Duplicate {
            gateway_id: stored.id,
            status: stored.status,
            outcome: stored.outcome.and_then(|o| serde_json::from_str(&o).ok()),
        }
    }

    /// What a repeat of this message is answered with: the same message, seen before.
    pub fn repeated(&self) -> Handled {
        match self {
            Handled::New {
                gateway_id,
                verdict,
                outcome,
            } => Handled::Duplicate {
                gateway_id: gateway_id.clone(),
                status: verdict.as_str().to_owned(),
                outcome: Some(outcome.clone()),
            },
            Handled::Duplicate { .. } => self.clone(),
        }
    }
}

/// The service pipeline.
#[derive(Debug, Clone)]
pub struct Gateway {
    engine: Arc<Engine>,
    store: Store,
    amqp: Arc<AmqpConfig>,
    default_language: Arc<str>,
    pub(super) billing: Arc<super::billing::Billing>,
    /// The group-commit writer of referrals, started by the first one (on a thread of its own).
    committer: Arc<OnceLock<mpsc::Sender<Pending>>>,
    /// The relay of this process, handed committed outbox rows directly.
    handoff: Option<Handoff>,
}

impl Gateway {
    /// Builds the gateway over a loaded engine and an open store.
    pub fn new(
        engine: Arc<Engine>,
        store: Store,
        amqp: AmqpConfig,
        default_language: &str,
    ) -> Gateway {
        Gateway {
            engine,
            store,
            amqp: Arc::new(amqp),
            default_language: Arc::from(default_language),
            billing: Arc::default(),
            committer: Arc::default(),
            handoff: None,
        }
    }

    /// Hands the outbox rows of referrals to this process's relay directly after their commit
    /// (see [`Handoff`]); set before the first message.
    pub fn with_handoff(mut self, handoff: Handoff) -> Gateway {
        self.handoff = Some(handoff);
        self
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The AMQP settings (exchanges and queues of the outputs).
    pub(super) fn amqp_config(&self) -> &AmqpConfig {
        &self.amqp
    }

    /// The outcome language for a message: its `Accept-Language` / header, else the default.
    pub(super) fn language(&self, envelope: &Envelope) -> String {
        let supported = crate::mappings::LANGUAGES;
        envelope
            .language
            .as_deref()
            .and_then(|header| {
                // First supported tag of an Accept-Language list ("de-DE,de;q=0.9,en;q=0.8").
                header.split(',').find_map(|part| {
                    let tag = part.split(';').next().unwrap_or("").trim();
                    let primary = tag.split('-').next().unwrap_or("").to_ascii_lowercase();
                    supported
                        .iter()
                        .find(|l| **l == primary)
                        .map(|l| (*l).to_owned())
                })
            })
            .unwrap_or_else(|| self.default_language.to_string())
    }

    /// Processes one message and stores it with its verdict and outputs, in one transaction
    /// (for referrals, possibly together with others). Returns after the commit. `Err` means
    /// nothing was stored: the caller must not acknowledge, and retries later.
    pub async fn handle(&self, envelope: &Envelope) -> Result<Handled, StoreError> {
        #[cfg(test)]
        super::faults::hit("handle", envelope.message_id.as_deref());
        match super::billing::message_kind(&envelope.body) {
            super::billing::MessageKind::Approval => return self.handle_approval(envelope).await,
            super::billing::MessageKind::SessionReport => {
                return self.handle_sessions(envelope).await;
            }
            super::billing::MessageKind::Referral => {}
        }
        let started = Instant::now();
        let today = time::OffsetDateTime::now_utc().date();
        // Decode, map and the budget question happen here, on the caller's task; the writer
        // only checks against the ledger and writes (see `commit`).
        let prepared = self.engine.prepare(commit::inbound(envelope));
        let (gateway_id, idempotency_key, sha256) = match &prepared {
            Ok(mapped) => (
                mapped.referral.ids.gateway_id.clone(),
                mapped.referral.ids.idempotency_key.clone(),
                mapped.sha256.clone(),
            ),
            Err(unreadable) => (
                uuid::Uuid::now_v7().to_string(),
                envelope
                    .message_id
                    .clone()
                    .unwrap_or_else(|| format!("sha256:{}", unreadable.sha256)),
                unreadable.sha256.clone(),
            ),
        };
        let budget = prepared
            .as_ref()
            .ok()
            .and_then(|mapped| self.engine.budget_query(mapped, today));
        let (reply, answer) = oneshot::channel();
        let pending = Pending {
            envelope: envelope.clone(),
            prepared: Some(prepared),
            gateway_id,
            idempotency_key,
            sha256,
            budget,
            language: self.language(envelope),
            today,
            started,
            reply,
        };
        let committer = self.committer.get_or_init(|| {
            commit::spawn(commit::Writer {
                engine: self.engine.clone(),
                store: self.store.clone(),
                amqp: self.amqp.clone(),
                handoff: self.handoff.clone(),
            })
        });
        committer
            .send(pending)
            .await
            .map_err(|_| StoreError::WriterStopped)?;
        answer.await.map_err(|_| StoreError::WriterStopped)?
    }

    /// Stores a message that failed transiently too often and routes it to the dead-letter queue.
    pub async fn dead_letter(
        &self,
        envelope: &Envelope,
        reason: &str,
    ) -> Result<String, StoreError> {
        let gateway_id = uuid::Uuid::now_v7().to_string();
        let sha256 = {
            use sha2::Digest;
            hex::encode(sha2::Sha256::digest(&envelope.body))
        };
        let key = envelope
            .message_id
            .clone()
            .unwrap_or_else(|| format!("sha256:{sha256}"));
        let mut tx = self.store.begin().await?;
        let headers = envelope.headers.to_string();
        let inserted = tx
            .insert_finished_message(
                &new_message(envelope, &gateway_id, &key, &headers, &sha256),
                &Finished {
                    status: "dead",
                    jurisdiction: None,
                    patient_key: None,
                    rule_codes: "",
                    referral: None,
                    outcome: "{}",
                },
            )
            .await?;
        if let Inserted::Duplicate(seen) = inserted {
            return Ok(seen.id);
        }
        let origin = Origin {
            gateway_id: &gateway_id,
            message_id: envelope.message_id.as_deref(),
            correlation_id: envelope.correlation_id.as_deref(),
            reply_to: envelope.reply_to.as_deref(),
            content_type: envelope.content_type.as_deref(),
            body: &envelope.body,
        };
        tx.enqueue(
            &gateway_id,
            &forward::dead_letter(&origin, reason, &self.amqp),
        )
        .await?;
        tx.commit().await?;
        telemetry::dead_lettered();
        Ok(gateway_id)
    }
}
