//! The store on its own, against a real SQLite file.

mod common;

use std::time::Duration;

use common::service::{raw_message, sqlite_database};
use sociogate::store::Store;

/// Commits append to SQLite's WAL; copying the WAL into the database file (the checkpoint)
/// runs beside the writer on a connection of its own, instead of inside whichever commit
/// crossed SQLite's threshold. Seen from outside: the database file takes the writes while
/// they are still below the threshold of the writer's own checkpoint (1,000 pages, 4 MB).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wal_is_copied_into_the_database_file_beside_the_writer() {
    let url = sqlite_database();
    let path = url
        .trim_start_matches("sqlite://")
        .trim_end_matches("?mode=rwc")
        .to_owned();
    let _files = RemoveOnDrop(path.clone());
    let store = Store::connect(&url, 1)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let before = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    // 90 messages of 30 KB: 2.8 MB, below the writer's own threshold.
    let body = vec![b'x'; 30 * 1024];
    for n in 0..90 {
        let id = format!("checkpoint-{n}");
        let mut tx = store.begin().await.unwrap_or_else(|e| panic!("{e}"));
        tx.insert_message(&raw_message(&id, &body))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        tx.commit().await.unwrap_or_else(|e| panic!("{e}"));
    }
    let mut size = before;
    for _ in 0..100 {
        size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        if size >= 2_700_000 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        size >= 2_700_000,
        "the database file holds the 2.8 MB written ({before} -> {size} bytes)"
    );
    store.close().await;
}

/// Removes a test's SQLite file and its WAL, also when the test failed.
struct RemoveOnDrop(String);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", self.0));
        }
    }
}
