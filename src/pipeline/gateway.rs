//! The service pipeline: one inbound message through decode, map, check, store and the
//! outbox, in one database transaction. Intakes (AMQP, HTTP, replay) call [`Gateway::handle`]
//! and acknowledge only after it returns `Ok`.

use std::sync::Arc;
use std::time::Instant;

use serde_json::Value;

use crate::check::Verdict;
use crate::config::AmqpConfig;
use crate::forward::{self, Origin};
use crate::pipeline::{Engine, Inbound, patient_key};
use crate::store::ledger::PriorUsage;
use crate::store::{Finished, Inserted, NewMessage, Store, StoreError};
use crate::telemetry;

/// One inbound message with its transport metadata.
#[derive(Debug, Clone, Default)]
pub struct Envelope {
    /// `amqp`, `http` or `replay`.
    pub channel: &'static str,
    /// Raw payload.
    pub body: Vec<u8>,
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
fn new_message<'a>(
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

/// The service pipeline.
#[derive(Debug, Clone)]
pub struct Gateway {
    engine: Arc<Engine>,
    store: Store,
    amqp: Arc<AmqpConfig>,
    default_language: Arc<str>,
    pub(super) billing: Arc<super::billing::Billing>,
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
        }
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

    /// Processes one message and stores it with its verdict and outputs, in one transaction.
    /// `Err` means nothing was stored: the caller must not acknowledge, and retries later.
    pub async fn handle(&self, envelope: &Envelope) -> Result<Handled, StoreError> {
        match super::billing::message_kind(&envelope.body) {
            super::billing::MessageKind::Approval => return self.handle_approval(envelope).await,
            super::billing::MessageKind::SessionReport => {
                return self.handle_sessions(envelope).await;
            }
            super::billing::MessageKind::Referral => {}
        }
        let started = Instant::now();
        let today = time::OffsetDateTime::now_utc().date();
        let inbound = Inbound {
            bytes: &envelope.body,
            content_type: envelope.content_type.as_deref(),
            message_id: envelope.message_id.as_deref(),
            jurisdiction: envelope.jurisdiction,
        };
        let prepared = self.engine.prepare(inbound);
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
        let mut tx = self.store.begin().await?;
        let (processed, ledger_entry) = match prepared {
            Err(unreadable) => (*unreadable, None),
            Ok(mut mapped) => {
                mapped.referral.ids.gateway_id = gateway_id.clone();
                let prior = match self.engine.budget_query(&mapped, today) {
                    Some(q) => {
                        // Serialises budget checks and ledger updates per patient until commit.
                        tx.lock_patient(&q.patient_key).await?;
                        tx.prior_usage(&q.patient_key, q.start, q.window_years)
                            .await?
                    }
                    None => PriorUsage::default(),
                };
                self.engine.finish(mapped, &prior, today)
            }
        };
        let lang = self.language(envelope);
        let outcome = self.engine.outcome(&processed, &lang).to_json();
        let outcome_text = outcome.to_string();
        let referral_json = processed
            .referral
            .as_ref()
            .and_then(|r| serde_json::to_string(r).ok());
        let codes: Vec<&str> = processed.issues.iter().map(|i| i.code.as_str()).collect();
        let codes = codes.join(",");
        let key = processed.referral.as_ref().and_then(patient_key);
        let headers = envelope.headers.to_string();
        // The idempotency key is claimed by this insert: a duplicate rolls back everything
        // above (the patient lock included) and writes nothing.
        let inserted = tx
            .insert_finished_message(
                &new_message(envelope, &gateway_id, &idempotency_key, &headers, &sha256),
                &Finished {
                    status: processed.verdict.as_str(),
                    jurisdiction: processed
                        .referral
                        .as_ref()
                        .and_then(|r| r.jurisdiction)
                        .map(|j| j.code()),
                    patient_key: key.as_deref(),
                    rule_codes: &codes,
                    referral: referral_json.as_deref(),
                    outcome: &outcome_text,
                },
            )
            .await?;
        if let Inserted::Duplicate(seen) = inserted {
            // Nothing new to write; the first delivery's outputs stand.
            drop(tx);
            telemetry::duplicate(envelope.channel);
            tracing::info!(gateway_id = %seen.id, channel = envelope.channel, "Duplicate message ignored");
            return Ok(Handled::Duplicate {
                gateway_id: seen.id,
                status: seen.status,
                outcome: seen.outcome.and_then(|o| serde_json::from_str(&o).ok()),
            });
        }
        if let Some(entry) = ledger_entry {
            tx.record_ledger(&gateway_id, &entry).await?;
        }
        let origin = Origin {
            gateway_id: &gateway_id,
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
        tx.enqueue_all(&gateway_id, &outputs).await?;
        tx.commit().await?;
        telemetry::processed(envelope.channel, processed.verdict, started.elapsed());
        tracing::info!(
            gateway_id = %gateway_id,
            message_id = envelope.message_id.as_deref().unwrap_or(""),
            correlation_id = envelope.correlation_id.as_deref().unwrap_or(""),
            verdict = processed.verdict.as_str(),
            rules = %codes,
            "Message processed"
        );
        Ok(Handled::New {
            gateway_id,
            verdict: processed.verdict,
            outcome,
        })
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
