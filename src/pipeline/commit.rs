//! Group commit: referrals are decoded and mapped on their own tasks, then written by the
//! process's writer (two on PostgreSQL), several to a transaction.
//!
//! A transaction per message paid, per message, a commit (on PostgreSQL an fsync) and about
//! eight statements, each on SQLite a hand-over to its one connection's thread and back;
//! profiles of `serve` showed most of its CPU in those hand-overs and the wake-ups around
//! them. The writer takes whatever is waiting when it is free (nothing is held back for a
//! timer, so a lone message is written at once) and writes it with a fixed number of
//! statements: the patients' locks, the keys already stored, the patients' ledger, then one
//! insert each for messages, ledger claims and outbox rows. Each caller gets its own answer only after the
//! commit, so "acked only after stored" holds per message.
//!
//! The checks run in memory between the reads and the inserts, in batch order, each against
//! the patient's ledger plus the claims of the messages before it in the batch: the same
//! answers as one transaction per message in that order. Within a batch, messages are ordered
//! by patient key (a stable sort, so one patient's messages keep their order), and the locks
//! are taken in that order, so two writers (two instances) cannot deadlock on them.
//!
//! On PostgreSQL two writers take turns (see [`spawn`]). The writers run on a thread of their
//! own, beside the runtime that decodes (see [`spawn_on_own_thread`]).
//!
//! If a batch fails, each of its messages is written again in a transaction of its own, so a
//! message the database refuses fails alone and does not take its batch-mates' attempts with it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use time::Date;
use tokio::sync::{mpsc, oneshot};

use super::gateway::{Envelope, Handled, new_message};
use super::{BudgetQuery, CHECK_FORWARD, Engine, Inbound, Mapped, Processed, guarded, patient_key};
use crate::config::AmqpConfig;
use crate::forward::relay::Handoff;
use crate::forward::{self, Origin};
use crate::store::ledger::{LedgerEntry, PriorUsage, usage_from_entries};
use crate::store::{Backend, Finished, NewMessage, NewOutbound, Store, StoreError};
use crate::telemetry;

/// At most this many messages in one transaction.
const BATCH_MESSAGES: usize = 64;
/// A batch stops growing once its payloads reach this many bytes: its outbox rows are two to
/// three times that, held in memory and again in the statement's arguments, so with 500 KB
/// messages a larger budget showed directly in the peak RSS (8 MiB: 234 MB over 150).
const BATCH_BYTES: usize = 4 * 1024 * 1024;
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
    /// This process's relay, handed the committed outbox rows directly (`serve`).
    pub(super) handoff: Option<Handoff>,
}

/// A written message, to be answered and logged once its transaction is committed.
struct Written {
    handled: Handled,
    rule_codes: String,
}

/// Starts the writers, on a thread of their own (see [`spawn_on_own_thread`]); they end when
/// every sender is dropped.
///
/// SQLite has one connection, so one writer. On PostgreSQL two: while one waits for its
/// commit to reach the disk, the other writes the next batch (one writer left the database
/// idle during every flush). Their batches lock patients in the same order, so they cannot
/// deadlock; one that finds a key the other just claimed retries its messages one by one.
pub(super) fn spawn(writer: Writer) -> mpsc::Sender<Pending> {
    let (sender, receiver) = mpsc::channel(QUEUE);
    let queue = Arc::new(tokio::sync::Mutex::new(receiver));
    let writers = match writer.store.backend() {
        Backend::Sqlite => 1,
        Backend::Postgres => 2,
    };
    spawn_on_own_thread(writer, queue, writers);
    sender
}

type Queue = Arc<tokio::sync::Mutex<mpsc::Receiver<Pending>>>;

/// Runs the writers on a thread and runtime of their own; on PostgreSQL with connections of
/// their own, opened there so that this runtime's reactor wakes them (SQLite's connection has
/// a thread of its own, which wakes the writer directly).
///
/// On the process's runtime the writers' statements, wake-ups and checks shared the two
/// workers with the tasks decoding the next messages (0.1-1 ms per poll). On a thread of their
/// own the kernel schedules them beside the decoding: measured, a group commit took as long
/// but held ~15 % more referrals, and end to end rose by ~0.03 of the broker baseline on both
/// stores (BENCHMARKS.md, tenth session).
fn spawn_on_own_thread(writer: Writer, queue: Queue, writers: u32) {
    let on_this_runtime = |writer: Writer, queue: Queue| {
        tokio::spawn(supervise(writer, queue, writers));
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            tracing::warn!(error = %e, "No runtime of their own for the writers; they share the process's");
            return on_this_runtime(writer, queue);
        }
    };
    let fallback = (writer.clone(), queue.clone());
    let thread = std::thread::Builder::new()
        .name("sociogate-writer".to_owned())
        .spawn(move || {
            runtime.block_on(async move {
                // Opened here, so that this runtime's reactor wakes the writers.
                let own = match writer.store.with_own_pool(writers).await {
                    Ok(own) => own,
                    Err(e) => {
                        tracing::warn!(error = %e, "No connections of their own for the writers; they use the shared pool");
                        None
                    }
                };
                let writer = match &own {
                    Some(store) => Writer {
                        store: store.clone(),
                        ..writer
                    },
                    None => writer,
                };
                supervise(writer, queue, writers).await;
                if let Some(store) = own {
                    store.close_own_pool().await;
                }
            });
        });
    if let Err(e) = thread {
        tracing::warn!(error = %e, "No thread of their own for the writers; they share the process's");
        on_this_runtime(fallback.0, fallback.1);
    }
}

/// How long a panicked writer's place stays empty: a defect that panics at once on every
/// start costs a log line and a restart per pause, not a busy loop.
const RESTART_PAUSE: std::time::Duration = std::time::Duration::from_millis(100);

/// Runs `writers` writers until the queue closes (every gateway is gone). A writer that panics
/// is replaced: a panic on one message's check is caught in [`Writer::check`], so this is a
/// defect elsewhere in the writer (in its statements, say), and without a new writer every
/// later message would wait for a restart of the process. The callers of the panicked
/// writer's batch get [`StoreError::WriterStopped`] and retry (AMQP up to `max_attempts`,
/// then the dead-letter queue).
async fn supervise(writer: Writer, queue: Queue, writers: u32) {
    let mut running = tokio::task::JoinSet::new();
    for _ in 0..writers {
        running.spawn(writer.clone().run(queue.clone()));
    }
    while let Some(ended) = running.join_next().await {
        if let Err(e) = ended
            && e.is_panic()
        {
            telemetry::writer_restarted();
            tracing::error!(
                "A store writer panicked (a defect); its batch's callers retry, and a new writer takes its place"
            );
            tokio::time::sleep(RESTART_PAUSE).await;
            running.spawn(writer.clone().run(queue.clone()));
        }
    }
}

impl Writer {
    async fn run(self, queue: Queue) {
        loop {
            // Whichever writer is free takes what is waiting; the other waits its turn here.
            let batch = {
                let mut queue = queue.lock().await;
                let Some(first) = queue.recv().await else {
                    return;
                };
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
                batch
            };
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
            let mut result = self.write_alone(&mut pending).await;
            if matches!(result, Err(StoreError::Conflict(_))) {
                // Its key was claimed by another writer whose commit this insert waited for:
                // written now, the repeat finds it stored.
                result = self.write_alone(&mut pending).await;
            }
            answer(pending, result);
        }
    }

    /// One message in a transaction of its own.
    async fn write_alone(&self, pending: &mut Pending) -> Result<Written, StoreError> {
        let written = self.write_together(std::slice::from_mut(pending)).await?;
        written
            .into_iter()
            .next()
            .ok_or_else(|| StoreError::Corrupt("a write without a result".to_owned()))
    }

    /// One transaction for all of `batch`, committed; the results in `batch`'s order.
    ///
    /// A fixed number of statements per batch, not per message: on SQLite each statement is a
    /// hand-over to the connection's thread and back, on PostgreSQL a round trip. Reads first
    /// (what is stored under the keys; the patients' locks and ledger), then every check in
    /// memory in batch order, each seeing the claims of the ones before it, then one insert each
    /// for messages, ledger claims and outbox rows.
    async fn write_together(&self, batch: &mut [Pending]) -> Result<Vec<Written>, StoreError> {
        let started = Instant::now();
        let mut tx = self.store.begin().await?;
        #[cfg(test)]
        for pending in batch.iter() {
            super::faults::hit("write", pending.envelope.message_id.as_deref());
        }
        let mut patients: Vec<&str> = batch
            .iter()
            .filter_map(|p| p.budget.as_ref().map(|q| q.patient_key.as_str()))
            .collect();
        patients.sort_unstable();
        patients.dedup();
        // Serialises budget checks and ledger updates per patient until commit.
        tx.lock_patients(&patients).await?;
        // Looked up after the locks: a repeat of a message another writer was writing for the
        // same patient is committed by now, and found here.
        let keys: Vec<String> = batch.iter().map(|p| p.idempotency_key.clone()).collect();
        let key_refs: Vec<&str> = keys.iter().map(String::as_str).collect();
        let stored = tx.stored_by_keys(&key_refs).await?;
        let mut ledger: HashMap<String, Vec<LedgerEntry>> = HashMap::new();
        for entry in tx.ledger_entries(&patients).await? {
            ledger
                .entry(entry.patient_key.clone())
                .or_default()
                .push(entry);
        }

        let mut rows: Vec<Row> = Vec::with_capacity(batch.len());
        let mut written: Vec<Written> = Vec::with_capacity(batch.len());
        // Keys written earlier in this batch: a repeat within it is a duplicate of that one.
        let mut claimed: HashMap<&str, usize> = HashMap::new();
        for (index, pending) in batch.iter_mut().enumerate() {
            if let Some(seen) = stored.get(&pending.idempotency_key) {
                written.push(Written {
                    handled: Handled::seen(seen.clone()),
                    rule_codes: String::new(),
                });
                continue;
            }
            if let Some(&first) = claimed.get(pending.idempotency_key.as_str()) {
                let earlier = written[first].handled.repeated();
                written.push(Written {
                    handled: earlier,
                    rule_codes: String::new(),
                });
                continue;
            }
            let (row, done) = self.check(index, pending, &ledger);
            if let Some(entry) = &row.ledger_entry {
                ledger
                    .entry(entry.patient_key.clone())
                    .or_default()
                    .push(entry.clone());
            }
            claimed.insert(keys[index].as_str(), written.len());
            rows.push(row);
            written.push(done);
        }

        let new_rows: Vec<(NewMessage<'_>, Finished<'_>)> = rows
            .iter()
            .map(|row| {
                let p = &batch[row.index];
                (
                    new_message(
                        &p.envelope,
                        &p.gateway_id,
                        &p.idempotency_key,
                        &row.headers,
                        &p.sha256,
                    ),
                    Finished {
                        status: row.status,
                        jurisdiction: row.jurisdiction,
                        patient_key: row.patient_key.as_deref(),
                        rule_codes: &row.rule_codes,
                        referral: row.referral_json.as_deref(),
                        outcome: &row.outcome_text,
                    },
                )
            })
            .collect();
        // The idempotency keys are claimed by this insert. Another writer (another instance)
        // may have claimed one since `stored_by_keys` looked: then nothing of this batch stands,
        // and the one-by-one retry finds it stored.
        if tx.insert_finished_messages(&new_rows).await? != new_rows.len() as u64 {
            return Err(StoreError::Conflict(
                "an idempotency key was claimed by another writer".to_owned(),
            ));
        }
        let claims: Vec<(&str, &LedgerEntry)> = rows
            .iter()
            .filter_map(|row| {
                let entry = row.ledger_entry.as_ref()?;
                Some((batch[row.index].gateway_id.as_str(), entry))
            })
            .collect();
        tx.record_ledger_all(&claims).await?;
        let outputs: Vec<(&str, &NewOutbound)> = rows
            .iter()
            .flat_map(|row| {
                let id = batch[row.index].gateway_id.as_str();
                row.outputs.iter().map(move |out| (id, out))
            })
            .collect();
        let bytes = outputs.iter().map(|(_, out)| out.body.len()).sum();
        let reservation = self.handoff.as_ref().and_then(|h| h.reserve(bytes));
        let ids = match &reservation {
            Some(reservation) => tx.enqueue_claimed(&outputs, &reservation.claim()).await?,
            None => {
                tx.enqueue_many(&outputs).await?;
                Vec::new()
            }
        };
        tx.commit().await?;
        telemetry::committed(batch.len(), started.elapsed());
        if let Some(reservation) = reservation {
            let handed = rows
                .into_iter()
                .flat_map(|row| {
                    let id = batch[row.index].gateway_id.clone();
                    row.outputs.into_iter().map(move |out| (id.clone(), out))
                })
                .zip(ids)
                .map(|((message, out), id)| (id, message, out))
                .collect();
            reservation.hand_over(handed);
        }
        Ok(written)
    }

    /// Checks the message at `index` of the batch against its patient's ledger as this batch
    /// has it so far (no I/O), and builds its row and outputs. A message the gateway fails on
    /// (a panic, see [`guarded`]) is written as `unreadable` with `GW-INT-01` instead, and
    /// the rest of its batch goes on.
    fn check(
        &self,
        index: usize,
        pending: &mut Pending,
        ledger: &HashMap<String, Vec<LedgerEntry>>,
    ) -> (Row, Written) {
        if let Some(checked) = guarded(|| self.check_and_plan(index, pending, ledger)) {
            return checked;
        }
        let failed = self
            .engine
            .internal_failure(CHECK_FORWARD, &pending.envelope.body);
        pending.prepared = Some(Err(Box::new(failed)));
        self.check_and_plan(index, pending, ledger)
    }

    fn check_and_plan(
        &self,
        index: usize,
        pending: &mut Pending,
        ledger: &HashMap<String, Vec<LedgerEntry>>,
    ) -> (Row, Written) {
        let envelope = &pending.envelope;
        let prepared = match pending.prepared.take() {
            Some(prepared) => prepared,
            // An earlier attempt in a batch that failed consumed it; prepare it again (pure
            // and deterministic but for the gateway id, which is set below).
            None => self.engine.prepare(inbound(envelope)),
        };
        let (processed, ledger_entry) = match prepared {
            Err(unreadable) => (*unreadable, None),
            Ok(mut mapped) => {
                #[cfg(test)]
                super::faults::hit(CHECK_FORWARD, envelope.message_id.as_deref());
                mapped.referral.ids.gateway_id = pending.gateway_id.clone();
                let prior = match &pending.budget {
                    Some(q) => usage_from_entries(
                        ledger.get(&q.patient_key).map_or(&[], Vec::as_slice),
                        q.start,
                        q.window_years,
                    ),
                    None => PriorUsage::default(),
                };
                self.engine.finish(mapped, &prior, pending.today)
            }
        };
        let outcome = self.engine.outcome(&processed, &pending.language).to_json();
        let codes: Vec<&str> = processed.issues.iter().map(|i| i.code.as_str()).collect();
        let rule_codes = codes.join(",");
        let origin = Origin {
            gateway_id: &pending.gateway_id,
            message_id: envelope.message_id.as_deref(),
            correlation_id: envelope.correlation_id.as_deref(),
            reply_to: envelope.reply_to.as_deref(),
            content_type: envelope.content_type.as_deref(),
            body: &envelope.body,
        };
        let referral_json = processed.referral_json();
        let outputs = forward::plan(
            &origin,
            &processed,
            &outcome,
            referral_json.as_deref(),
            &self.amqp,
            self.engine.mappings(),
        );
        let row = Row {
            index,
            status: processed.verdict.as_str(),
            jurisdiction: processed
                .referral
                .as_ref()
                .and_then(|r| r.jurisdiction)
                .map(|j| j.code()),
            patient_key: processed.referral.as_ref().and_then(patient_key),
            referral_json,
            outcome_text: outcome.to_string(),
            headers: envelope.headers.to_string(),
            rule_codes: rule_codes.clone(),
            ledger_entry,
            outputs,
        };
        let done = Written {
            handled: Handled::New {
                gateway_id: pending.gateway_id.clone(),
                verdict: processed.verdict,
                outcome,
            },
            rule_codes,
        };
        (row, done)
    }
}

/// What one new message writes: its row's finished columns, its ledger claim, its outputs.
struct Row {
    /// Its place in the batch.
    index: usize,
    status: &'static str,
    jurisdiction: Option<&'static str>,
    patient_key: Option<String>,
    referral_json: Option<String>,
    outcome_text: String,
    headers: String,
    rule_codes: String,
    ledger_entry: Option<LedgerEntry>,
    outputs: Vec<NewOutbound>,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::workload::{self, Size, Spec};
    use crate::check::Verdict;
    use crate::model::Jurisdiction;
    use crate::pipeline::faults::{self, envelope, gateway_over, sqlite_gateway};

    /// The rule codes and the first issue's text of an answer to a new message.
    fn verdict_and_codes(handled: &Handled) -> (Verdict, Vec<String>, String) {
        let Handled::New {
            verdict, outcome, ..
        } = handled
        else {
            panic!("expected a new message, got {handled:?}");
        };
        let issues = outcome["issue"].as_array().cloned().unwrap_or_default();
        let codes = issues
            .iter()
            .filter_map(|i| i["details"]["coding"][0]["code"].as_str())
            .map(str::to_owned)
            .collect();
        let text = issues
            .first()
            .and_then(|i| i["details"]["text"].as_str())
            .unwrap_or("")
            .to_owned();
        (*verdict, codes, text)
    }

    /// A defect that panics on one message costs that message alone: in decode and map (on the
    /// caller's task) or in the check (in the writer, with batch-mates) the message is stored
    /// `unreadable` with `GW-INT-01`; a panic elsewhere in the writer fails its batch, whose
    /// callers retry, and a new writer writes the messages after it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_panic_on_one_message_fails_that_message_and_the_gateway_goes_on() {
        let (gateway, _file) = sqlite_gateway().await;
        let store = gateway.store().clone();
        let referrals = workload::generate(
            Spec {
                seed: 7,
                invalid_share: 0.0,
                shared_patients: 0,
                size: Size::Plain,
                jurisdiction: Jurisdiction::De,
            },
            9,
        );

        // In decode and map, on the caller's task.
        let handled = gateway
            .handle(&envelope(&referrals[0], "panic-at-decode/map"))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let (verdict, codes, text) = verdict_and_codes(&handled);
        assert_eq!(
            (verdict, codes),
            (Verdict::Unreadable, vec!["GW-INT-01".to_owned()])
        );
        assert!(text.contains("decode/map"), "{text}");
        let Handled::New { gateway_id, .. } = &handled else {
            unreachable!()
        };
        let stored = store
            .load_message(gateway_id)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|| panic!("the failed message is stored"));
        assert_eq!(stored.status, "unreadable");
        assert_eq!(stored.body, referrals[0]);

        // In the check, inside the writer, beside five batch-mates sent at the same time.
        let ids = [
            "ok-1",
            "ok-2",
            "panic-at-check/forward",
            "ok-3",
            "ok-4",
            "ok-5",
        ];
        let tasks: Vec<_> = ids
            .iter()
            .zip(&referrals[1..7])
            .map(|(id, body)| {
                let gateway = gateway.clone();
                let envelope = envelope(body, id);
                tokio::spawn(async move { gateway.handle(&envelope).await })
            })
            .collect();
        for (id, task) in ids.iter().zip(tasks) {
            let handled = task
                .await
                .unwrap_or_else(|e| panic!("{e}"))
                .unwrap_or_else(|e| panic!("{id}: {e}"));
            let (verdict, codes, text) = verdict_and_codes(&handled);
            if id.starts_with("panic") {
                assert_eq!(
                    (verdict, codes),
                    (Verdict::Unreadable, vec!["GW-INT-01".to_owned()])
                );
                assert!(text.contains("check/forward"), "{text}");
            } else {
                assert_eq!(verdict, Verdict::Accepted, "{id}: {codes:?}");
            }
        }

        // Elsewhere in the writer: the batch fails and the caller gets an error to retry on ...
        let failed = gateway
            .handle(&envelope(&referrals[7], "panic-at-write"))
            .await;
        assert!(
            matches!(failed, Err(StoreError::WriterStopped)),
            "{failed:?}"
        );
        // ... and a new writer writes the next message (SQLite has one writer: without the
        // replacement this would fail too).
        let handled = gateway
            .handle(&envelope(&referrals[8], "after-the-writer-panicked"))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(verdict_and_codes(&handled).0, Verdict::Accepted);
        store.close().await;
    }

    /// On PostgreSQL the writers open connections of their own; when they cannot (the server
    /// has none left, say), they write over the shared pool instead of never starting.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn writers_without_connections_of_their_own_write_over_the_shared_pool() {
        let admin = std::env::var("TEST_DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
        let database = crate::bench::fresh_postgres(&admin)
            .await
            .unwrap_or_else(|e| panic!("PostgreSQL must run at {admin}: {e}"));
        let (gateway, _database) = gateway_over(Some(database)).await;
        faults::REFUSE_OWN_POOL.store(true, std::sync::atomic::Ordering::SeqCst);
        let referral = include_bytes!("../../examples/de-first-prescription-message.json");
        let handled = tokio::time::timeout(
            std::time::Duration::from_secs(30),
            gateway.handle(&envelope(referral, "over-the-shared-pool")),
        )
        .await;
        faults::REFUSE_OWN_POOL.store(false, std::sync::atomic::Ordering::SeqCst);
        let handled = handled
            .unwrap_or_else(|_| panic!("no writer wrote the message within 30 s"))
            .unwrap_or_else(|e| panic!("{e}"));
        let Handled::New { gateway_id, .. } = handled else {
            panic!("expected a new message, got {handled:?}");
        };
        let stored = gateway
            .store()
            .load_message(&gateway_id)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(stored.is_some(), "the message is stored");
        gateway.store().close().await;
    }
}
