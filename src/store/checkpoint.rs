//! SQLite WAL checkpoints off the writer's path.
//!
//! With `synchronous = NORMAL` a commit only appends to the WAL; the cost comes later, in the
//! checkpoint that copies the WAL's pages into the database file and syncs both. SQLite runs
//! it inside whichever commit crosses `wal_autocheckpoint` pages, on the one connection every
//! write shares: measured in `sociogate bench`, every third group commit then took ~30 ms
//! instead of ~8, and every other write waited for it. This task checkpoints on its own
//! connection, passively (it neither waits for the writer nor holds it up), a few times a
//! second while there is something to copy. The writer's automatic checkpoint stays as the
//! backstop, at a higher threshold ([`WRITER_AUTOCHECKPOINT_PAGES`]), should the task fall
//! behind or be gone.

use std::sync::Arc;
use std::time::Duration;

use sqlx::{Connection, Row};
use tokio_util::sync::{CancellationToken, DropGuard};

/// The writer's own automatic checkpoint, in pages (64 MiB with SQLite's 4 KiB pages):
/// the WAL reaches this only when the checkpoint task is not keeping up.
pub(super) const WRITER_AUTOCHECKPOINT_PAGES: u32 = 16_384;
/// Between checkpoints while the WAL has frames to copy.
const BUSY_INTERVAL: Duration = Duration::from_millis(100);
/// Between checkpoints while it had none (an idle gateway).
const IDLE_INTERVAL: Duration = Duration::from_secs(1);

/// Stops the checkpoint task when the last clone of its store is dropped, or when closed.
#[derive(Debug)]
pub(super) struct Checkpointer {
    stop: CancellationToken,
    _on_drop: DropGuard,
}

impl Checkpointer {
    /// Stops the task (the store is being closed).
    pub(super) fn stop(&self) {
        self.stop.cancel();
    }
}

/// Starts the checkpoint task for the SQLite database at `url` on the current runtime.
pub(super) fn spawn(url: String) -> Arc<Checkpointer> {
    let stop = CancellationToken::new();
    let task_stop = stop.clone();
    tokio::spawn(async move {
        let mut connection: Option<sqlx::AnyConnection> = None;
        let mut interval = BUSY_INTERVAL;
        loop {
            tokio::select! {
                () = task_stop.cancelled() => break,
                () = tokio::time::sleep(interval) => {}
            }
            if connection.is_none() {
                // Retried at the next interval; meanwhile the writer checkpoints itself.
                connection = sqlx::AnyConnection::connect(&url).await.ok();
            }
            let Some(conn) = connection.as_mut() else {
                continue;
            };
            // PASSIVE: copy what no reader still needs, without waiting for anyone. The row
            // is (busy, frames in the WAL, frames copied).
            match sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
                .fetch_one(&mut *conn)
                .await
            {
                Ok(row) => {
                    let frames: i64 = row.try_get(1).unwrap_or(0);
                    interval = if frames > 0 {
                        BUSY_INTERVAL
                    } else {
                        IDLE_INTERVAL
                    };
                }
                Err(e) => {
                    tracing::debug!(error = %e, "WAL checkpoint failed; reconnecting");
                    connection = None;
                }
            }
        }
        if let Some(conn) = connection {
            let _ = conn.close().await;
        }
    });
    Arc::new(Checkpointer {
        _on_drop: stop.clone().drop_guard(),
        stop,
    })
}
