//! SQLite WAL checkpoints beside the writer.
//!
//! With `synchronous = NORMAL` a commit only appends to the WAL; the cost comes later, in the
//! checkpoint that copies the WAL's pages into the database file and syncs both. SQLite runs
//! it inside whichever commit crosses `wal_autocheckpoint` pages, on the one connection every
//! write shares: measured in `sociogate bench`, every third group commit then took ~30 ms
//! instead of ~8, and every other write waited for it. This task, woken by each commit,
//! copies the new frames on a connection of its own, passively (it neither waits for the
//! writer nor holds it up), while the writer prepares its next transaction. The writer's own
//! automatic checkpoint stays at SQLite's default: it must, because only a checkpoint that
//! catches the WAL complete lets the next transaction start the WAL from the beginning (a
//! passive copy racing a busy writer rarely does, and with a high threshold the WAL grew to
//! 64 MiB and one commit then copied all of it: p99 latency 200-400 ms at 500 msg/s). With the
//! task ahead of it, that checkpoint finds most frames copied already.

use std::sync::Arc;
use std::time::Duration;

use sqlx::Connection;
use tokio::sync::Notify;
use tokio_util::sync::{CancellationToken, DropGuard};

/// A checkpoint at least this often, also without a commit's wake-up (a commit of another
/// process sharing the file).
const INTERVAL: Duration = Duration::from_secs(1);

/// Stops the checkpoint task when the last clone of its store is dropped, or when closed.
#[derive(Debug)]
pub(super) struct Checkpointer {
    stop: CancellationToken,
    committed: Arc<Notify>,
    _on_drop: DropGuard,
}

impl Checkpointer {
    /// A transaction has committed: copy its frames. Wake-ups while a checkpoint runs fold
    /// into one.
    pub(super) fn committed(&self) {
        self.committed.notify_one();
    }

    /// Stops the task (the store is being closed).
    pub(super) fn stop(&self) {
        self.stop.cancel();
    }
}

/// Starts the checkpoint task for the SQLite database at `url` on the current runtime.
pub(super) fn spawn(url: String) -> Arc<Checkpointer> {
    let stop = CancellationToken::new();
    let task_stop = stop.clone();
    let committed = Arc::new(Notify::new());
    let wake = committed.clone();
    tokio::spawn(async move {
        let mut connection: Option<sqlx::AnyConnection> = None;
        loop {
            tokio::select! {
                () = task_stop.cancelled() => break,
                () = wake.notified() => {}
                () = tokio::time::sleep(INTERVAL) => {}
            }
            if connection.is_none() {
                // Retried at the next interval; meanwhile the writer checkpoints itself.
                connection = sqlx::AnyConnection::connect(&url).await.ok();
            }
            let Some(conn) = connection.as_mut() else {
                continue;
            };
            // PASSIVE: copy what no reader still needs, without waiting for anyone.
            if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
                .execute(&mut *conn)
                .await
            {
                tracing::debug!(error = %e, "WAL checkpoint failed; reconnecting");
                connection = None;
            }
        }
        if let Some(conn) = connection {
            let _ = conn.close().await;
        }
    });
    Arc::new(Checkpointer {
        _on_drop: stop.clone().drop_guard(),
        stop,
        committed,
    })
}
