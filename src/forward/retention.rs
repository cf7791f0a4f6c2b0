//! Retention of published outputs: deletes the bodies of outbox rows whose publish the broker
//! confirmed more than `outbox.sent_body_retention_days` ago.
//!
//! Every output's body is stored until the relay has published it; afterwards it is a copy of
//! what the recipient already has, and without this the store would grow by every body
//! forever. The outbox row stays as the record of the delivery, and the inbound message with
//! its verdict and outcome stays too. The outputs of billing runs (Claims, § 302
//! interchanges) keep their bodies: they are the billing record.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::store::{Store, StoreError};

/// Bodies looked at per window: short statements, so the writers never wait long for one
/// (200 plain outputs are ~2 MB; with attached PDFs ~100 MB).
pub const WINDOW: i64 = 200;

/// How often a running gateway looks for bodies past their retention.
pub const INTERVAL: Duration = Duration::from_secs(3_600);

/// The wait before the first pass, so that a restart does not add a large delete to the
/// catch-up of the messages that queued while the gateway was down.
pub const FIRST_PASS_AFTER: Duration = Duration::from_secs(60);

/// Pause between two statements of one pass: the group commit and the relay come first.
const PAUSE: Duration = Duration::from_millis(20);

/// One pass: walks the stored bodies from the oldest, window by window, deleting those of
/// outputs published before `now - retention_days`, until it reaches outputs created after
/// that; returns how many it deleted. `retention_days` 0 keeps every body.
pub async fn prune_once(
    store: &Store,
    retention_days: u32,
    now: time::OffsetDateTime,
    shutdown: &CancellationToken,
) -> Result<u64, StoreError> {
    if retention_days == 0 {
        return Ok(0);
    }
    // A retention reaching back before the calendar's start keeps every body.
    let Some(sent_before) = now.checked_sub(time::Duration::days(i64::from(retention_days))) else {
        return Ok(0);
    };
    let mut deleted = 0;
    let mut after_id = 0;
    loop {
        let window = store
            .prune_sent_bodies(sent_before, after_id, WINDOW)
            .await?;
        deleted += window.deleted;
        crate::telemetry::pruned_bodies(window.deleted);
        // A window of rows still waiting or parked (nothing deleted) does not end the pass:
        // older bodies of published rows may follow it.
        match window.last_id {
            Some(last) if !window.reached_cutoff && !shutdown.is_cancelled() => after_id = last,
            _ => return Ok(deleted),
        }
        tokio::time::sleep(PAUSE).await;
    }
}

/// Runs [`prune_once`] after [`FIRST_PASS_AFTER`] and then every [`INTERVAL`] until
/// `shutdown`. A pass that fails (the database is away) is logged and tried again at the next
/// interval: nothing depends on it but the store's size.
pub async fn run(store: Store, retention_days: u32, shutdown: CancellationToken) {
    if retention_days == 0 {
        tracing::info!("Published outputs keep their bodies (outbox.sent_body_retention_days = 0)");
        return;
    }
    let mut wait = FIRST_PASS_AFTER;
    loop {
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = shutdown.cancelled() => return,
        }
        wait = INTERVAL;
        match prune_once(
            &store,
            retention_days,
            time::OffsetDateTime::now_utc(),
            &shutdown,
        )
        .await
        {
            Ok(0) => {}
            Ok(deleted) => tracing::info!(
                deleted,
                retention_days,
                "Deleted the bodies of outputs published before the retention period"
            ),
            Err(e) => tracing::warn!(
                error = %e,
                "Could not delete the bodies of old outputs; trying again at the next interval"
            ),
        }
    }
}
