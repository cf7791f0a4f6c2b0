//! The store on its own, against a real SQLite file and a real PostgreSQL database.

mod common;

use std::time::Duration;

use common::service::{DatabaseCleanup, config, pg_database, raw_message, sqlite_database};
use sociogate::store::{NewOutbound, OutboxClaim, PrunedWindow, Store};

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

fn output(kind: &str, routing_key: &str, body: &[u8]) -> NewOutbound {
    NewOutbound {
        kind: kind.to_owned(),
        exchange: "sociogate.referrals".to_owned(),
        routing_key: routing_key.to_owned(),
        content_type: "application/fhir+json".to_owned(),
        correlation_id: None,
        headers: "{}".to_owned(),
        body: body.to_vec(),
    }
}

/// Outbox bodies live in a table of their own; each must come back with its own row, whether
/// the relay claims the row from the store or was handed it with the ids the insert returned.
async fn outbox_bodies_follow_their_rows(url: String) {
    let _cleanup = DatabaseCleanup(config(&url));
    let store = Store::connect(&url, 2)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let mut tx = store.begin().await.unwrap_or_else(|e| panic!("{e}"));
    for id in ["m-1", "m-2"] {
        tx.insert_message(&raw_message(id, id.as_bytes()))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
    // Two messages with the same kinds, so that only the message tells the rows apart.
    let provider_1 = output("provider", "de.provider", b"provider body of m-1");
    let insurer_1 = output("insurer", "de.insurer", b"insurer body of m-1");
    let provider_2 = output("provider", "de.provider", b"provider body of m-2");
    tx.enqueue_many(&[
        ("m-1", &provider_1),
        ("m-2", &provider_2),
        ("m-1", &insurer_1),
    ])
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let reply_2 = output("reply", "reply-queue", b"reply body of m-2");
    let insurer_2 = output("insurer", "de.insurer", b"insurer body of m-2");
    let claimed_ids = tx
        .enqueue_claimed(
            &[("m-2", &reply_2), ("m-2", &insurer_2)],
            &OutboxClaim {
                relay_id: "relay-a",
                lease_until: sociogate::store::now_ms() + 3_000,
            },
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    tx.commit().await.unwrap_or_else(|e| panic!("{e}"));

    let claimed = store
        .claim_outbox("relay-b", 10, 60_000)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let seen: Vec<(&str, &str, &[u8])> = claimed
        .iter()
        .map(|r| (r.message.as_str(), r.kind.as_str(), r.body.as_slice()))
        .collect();
    assert_eq!(
        seen,
        vec![
            ("m-1", "provider", &b"provider body of m-1"[..]),
            ("m-2", "provider", &b"provider body of m-2"[..]),
            ("m-1", "insurer", &b"insurer body of m-1"[..]),
        ],
        "the pending rows, oldest first, each with its own body; not the rows relay-a holds"
    );

    // relay-a's lease runs out; another relay claims its rows from the store, under the ids
    // the insert returned.
    tokio::time::sleep(Duration::from_millis(3_200)).await;
    let reclaimed = store
        .claim_outbox("relay-b", 10, 60_000)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let seen: Vec<(i64, &str, &[u8])> = reclaimed
        .iter()
        .map(|r| (r.id, r.kind.as_str(), r.body.as_slice()))
        .collect();
    assert_eq!(
        seen,
        vec![
            (claimed_ids[0], "reply", &b"reply body of m-2"[..]),
            (claimed_ids[1], "insurer", &b"insurer body of m-2"[..]),
        ]
    );
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbox_bodies_follow_their_rows_sqlite() {
    outbox_bodies_follow_their_rows(sqlite_database()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbox_bodies_follow_their_rows_postgres() {
    outbox_bodies_follow_their_rows(pg_database().await).await;
}

/// A database made before outbox bodies moved to a table of their own keeps every waiting
/// row's body: the migration moves them, and the relay then publishes them as before.
async fn bodies_of_rows_written_before_the_move_are_kept(
    url: String,
    backend: &str,
    before: usize,
) {
    let _cleanup = DatabaseCleanup(config(&url));
    // The migrations as they were before the move.
    let dir = std::env::temp_dir().join(format!(
        "sociogate-it-migrations-{}",
        common::service::unique()
    ));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    let source = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src/store/migrations")
        .join(backend);
    let mut files: Vec<_> = std::fs::read_dir(&source)
        .unwrap_or_else(|e| panic!("{e}"))
        .filter_map(Result::ok)
        .map(|e| e.path())
        .collect();
    files.sort();
    for file in files.iter().take(before) {
        let name = file.file_name().unwrap_or_default();
        std::fs::copy(file, dir.join(name)).unwrap_or_else(|e| panic!("{e}"));
    }
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&url)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let migrated = sqlx::migrate::Migrator::new(dir.as_path())
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .run(&pool)
        .await;
    let _ = std::fs::remove_dir_all(&dir);
    migrated.unwrap_or_else(|e| panic!("{e}"));
    sqlx::query(
        "INSERT INTO messages (id, idempotency_key, channel, received_at, updated_at, headers, sha256, body, status) \
         VALUES ('m-old', 'k-old', 'amqp', 'then', 'then', '{}', '00', $1, 'accepted')",
    )
    .bind(&b"inbound"[..])
    .execute(&pool)
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    sqlx::query(
        "INSERT INTO outbox (message, kind, exchange, routing_key, content_type, headers, body, status, created_at) \
         VALUES ('m-old', 'provider', 'sociogate.referrals', 'de.provider', 'application/fhir+json', '{}', $1, 'pending', 'then')",
    )
    .bind(&b"written before the move"[..])
    .execute(&pool)
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    pool.close().await;

    let store = Store::connect(&url, 2)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let claimed = store
        .claim_outbox("relay", 10, 60_000)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].message, "m-old");
    assert_eq!(claimed[0].body, b"written before the move");
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_of_rows_written_before_the_move_are_kept_sqlite() {
    bodies_of_rows_written_before_the_move_are_kept(sqlite_database(), "sqlite", 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_of_rows_written_before_the_move_are_kept_postgres() {
    bodies_of_rows_written_before_the_move_are_kept(pg_database().await, "postgres", 3).await;
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

/// The ledger read of a group commit finds its patients' claims through the index, however
/// the table has grown and whether or not PostgreSQL has statistics of it. Read with
/// `patient_key IN (..)`, both failed: a connection keeps a prepared statement's generic
/// plan, and one made on a small table is a sequential scan; and without statistics the
/// planner takes 64 keys for a third of the table and scans it even when planning afresh. The
/// benchmark's first 60,000 referrals read 20 million ledger rows that way, with autovacuum
/// off (as on this machine).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ledger_read_uses_its_index_after_the_table_grew() {
    use sqlx::Connection as _;
    const SMALL: i64 = 200;
    const GROWN: i64 = 20_000;
    let url = pg_database().await;
    let _cleanup = DatabaseCleanup(config(&url));
    let store = Store::connect(&url, 2)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let mut admin = sqlx::PgConnection::connect(&url)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    // Claims of patients `first..=last` (autovacuum, where it runs, would gather statistics
    // only later).
    async fn claims(admin: &mut sqlx::PgConnection, first: i64, last: i64) {
        for sql in [
            "INSERT INTO patients (patient_key) SELECT 'p' || g FROM generate_series($1, $2) g",
            "INSERT INTO messages (id, idempotency_key, channel, received_at, updated_at, \
             headers, sha256, body, status) SELECT 'm' || g, 'k' || g, 'test', 'x', 'x', '{}', \
             'x', '\\x00', 'accepted' FROM generate_series($1, $2) g",
            "INSERT INTO ledger (patient_key, message, start_date, minutes, trial_units) \
             SELECT 'p' || g, 'm' || g, '2026-01-05', 60 + g % 2, 0 FROM generate_series($1, $2) g",
        ] {
            sqlx::query(sql)
                .bind(first)
                .bind(last)
                .execute(&mut *admin)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
        }
    }
    // Sixty-four patients' claims read through the store, as a full group commit reads them
    // (odd patients claimed 61 minutes, even ones 60).
    async fn read_many(store: &Store) {
        let keys: Vec<String> = (1..=64).map(|n| format!("p{n}")).collect();
        // One key twice: its claims still come back once.
        let keys: Vec<&str> = keys.iter().map(String::as_str).chain(["p7"]).collect();
        let mut tx = store.begin().await.unwrap_or_else(|e| panic!("{e}"));
        let entries = tx
            .ledger_entries(&keys)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        tx.commit().await.unwrap_or_else(|e| panic!("{e}"));
        let mut found: Vec<(String, u64)> = entries
            .into_iter()
            .map(|e| (e.patient_key, e.minutes))
            .collect();
        found.sort();
        let mut expected: Vec<(String, u64)> =
            (1..=64u64).map(|n| (format!("p{n}"), 60 + n % 2)).collect();
        expected.sort();
        assert_eq!(found, expected);
    }
    claims(&mut admin, 1, SMALL).await;
    // While the ledger is small, the read more often than PostgreSQL's five custom plans.
    for _ in 0..12 {
        read_many(&store).await;
    }
    claims(&mut admin, SMALL + 1, GROWN).await;
    for _ in 0..10 {
        read_many(&store).await;
    }
    // A backend hands its table statistics over when it ends: close the store, wait until its
    // connections are gone, then read how many ledger rows sequential scans went through.
    store.close().await;
    let mut seq_rows = None;
    for _ in 0..50 {
        let others: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
             AND pid <> pg_backend_pid()",
        )
        .fetch_one(&mut admin)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        if others == 0 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            sqlx::query("SELECT pg_stat_clear_snapshot()")
                .execute(&mut admin)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            seq_rows = Some(
                sqlx::query_scalar::<_, i64>(
                    "SELECT COALESCE(seq_tup_read, 0) FROM pg_stat_user_tables \
                     WHERE relname = 'ledger'",
                )
                .fetch_one(&mut admin)
                .await
                .unwrap_or_else(|e| panic!("{e}")),
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let seq_rows = seq_rows.unwrap_or_else(|| panic!("the store's connections did not end"));
    // The twelve reads of the small table may scan it (12 x 200 rows); one scan of the grown
    // table would be 20,000.
    assert!(
        seq_rows < GROWN,
        "twenty-two reads of 64 patients went through {seq_rows} ledger rows sequentially"
    );
    admin.close().await.unwrap_or_else(|e| panic!("{e}"));
}

/// Ids of the rows of `table` (`outbox` or `outbox_bodies`), read beside the store.
async fn stored_ids(url: &str, table: &str) -> Vec<i64> {
    use sqlx::Row as _;
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(url)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT id FROM {table} ORDER BY id"
    )))
    .fetch_all(&pool)
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    pool.close().await;
    rows.iter()
        .map(|r| r.try_get::<i64, _>("id").unwrap_or_else(|e| panic!("{e}")))
        .collect()
}

/// Writes `messages` (those in `billing_runs` finished as billing runs) and `outputs` in one
/// transaction, then claims every output for the relay `relay`; returns their ids in order.
async fn written_and_claimed(
    store: &Store,
    messages: &[&str],
    billing_runs: &[&str],
    outputs: &[(&str, NewOutbound)],
) -> Vec<i64> {
    use sociogate::store::Finished;
    let mut tx = store.begin().await.unwrap_or_else(|e| panic!("{e}"));
    for id in messages {
        tx.insert_message(&raw_message(id, id.as_bytes()))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
    for id in billing_runs {
        let run = Finished {
            status: "billing-run",
            jurisdiction: Some("de"),
            patient_key: None,
            rule_codes: "",
            referral: Some("{}"),
            outcome: "{}",
        };
        tx.finish_message(id, &run)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
    enqueue_in(&mut tx, outputs).await;
    tx.commit().await.unwrap_or_else(|e| panic!("{e}"));
    let ids: Vec<i64> = store
        .claim_outbox("relay", 100, 60_000)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(ids.len(), outputs.len());
    ids
}

async fn enqueue_in(tx: &mut sociogate::store::Tx, outputs: &[(&str, NewOutbound)]) {
    let refs: Vec<(&str, &NewOutbound)> = outputs.iter().map(|(m, o)| (*m, o)).collect();
    tx.enqueue_many(&refs)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
}

/// Writes `outputs` of messages already stored, unclaimed.
async fn enqueued(store: &Store, outputs: &[(&str, NewOutbound)]) {
    let mut tx = store.begin().await.unwrap_or_else(|e| panic!("{e}"));
    enqueue_in(&mut tx, outputs).await;
    tx.commit().await.unwrap_or_else(|e| panic!("{e}"));
}

/// Bodies of published outputs are deleted once their retention has passed, window by window
/// from the oldest; bodies of rows still pending or in flight are kept, and so is every outbox
/// row.
async fn published_bodies_are_deleted_after_their_retention(url: String) {
    use sociogate::forward::retention::prune_once;
    let _cleanup = DatabaseCleanup(config(&url));
    let store = Store::connect(&url, 2)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let never = tokio_util::sync::CancellationToken::new();
    let outputs = [
        (
            "m-1",
            output("provider", "de.provider", b"provider body of m-1"),
        ),
        (
            "m-1",
            output("insurer", "de.insurer", b"insurer body of m-1"),
        ),
        (
            "m-2",
            output("provider", "de.provider", b"provider body of m-2"),
        ),
        (
            "m-2",
            output("insurer", "de.insurer", b"insurer body of m-2"),
        ),
    ];
    let ids = written_and_claimed(&store, &["m-1", "m-2"], &[], &outputs).await;
    // Three are confirmed; m-1's provider Bundle, the oldest, is still in flight.
    store
        .mark_sent("relay", &ids[1..])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    // And one more output waits, unclaimed.
    let reply = output("reply", "reply-queue", b"reply body of m-2");
    enqueued(&store, &[("m-2", reply)]).await;
    let all = stored_ids(&url, "outbox_bodies").await;
    assert_eq!(all.len(), 5);

    let now = time::OffsetDateTime::now_utc();
    let pruned = prune_once(&store, 30, now, &never)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(pruned, 0, "published a moment ago: within 30 days");
    let pruned = prune_once(&store, 0, now + time::Duration::days(3_650), &never)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(pruned, 0, "a retention of 0 days keeps every body");
    let pruned = prune_once(&store, u32::MAX, now, &never)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        pruned, 0,
        "a retention longer than the calendar keeps every body"
    );
    assert_eq!(stored_ids(&url, "outbox_bodies").await, all);
    let window = store
        .prune_sent_bodies(now - time::Duration::days(1), 0, 1)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        window,
        PrunedWindow {
            deleted: 0,
            last_id: Some(ids[0]),
            reached_cutoff: true
        },
        "outputs created after the cutoff end a pass"
    );

    // 31 days on, window by window from the oldest body.
    let later = now + time::Duration::days(31);
    let cutoff = later - time::Duration::days(30);
    let window = store
        .prune_sent_bodies(cutoff, 0, 1)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        window,
        PrunedWindow {
            deleted: 0,
            last_id: Some(ids[0]),
            reached_cutoff: false
        },
        "the body in flight is kept, and the pass goes on after it"
    );
    let window = store
        .prune_sent_bodies(cutoff, ids[0], 2)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        window,
        PrunedWindow {
            deleted: 2,
            last_id: Some(ids[2]),
            reached_cutoff: false
        }
    );
    assert_eq!(
        stored_ids(&url, "outbox_bodies").await,
        vec![ids[0], ids[3], all[4]],
        "a window deletes within its range only"
    );
    let pruned = prune_once(&store, 30, later, &never)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(pruned, 1, "a pass goes past the body in flight");
    assert_eq!(
        stored_ids(&url, "outbox_bodies").await,
        vec![ids[0], all[4]],
        "the in-flight and the waiting output keep their bodies"
    );
    let pruned = prune_once(&store, 30, later, &never)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(pruned, 0, "nothing is deleted twice");

    // The waiting output is still published with its body, and the published rows remain.
    let waiting = store
        .claim_outbox("relay-2", 10, 60_000)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let seen: Vec<(&str, &[u8])> = waiting
        .iter()
        .map(|r| (r.kind.as_str(), r.body.as_slice()))
        .collect();
    assert_eq!(seen, vec![("reply", &b"reply body of m-2"[..])]);
    assert_eq!(
        stored_ids(&url, "outbox").await,
        all,
        "every outbox row stays, the record of its delivery"
    );
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn published_bodies_are_deleted_after_their_retention_sqlite() {
    published_bodies_are_deleted_after_their_retention(sqlite_database()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn published_bodies_are_deleted_after_their_retention_postgres() {
    published_bodies_are_deleted_after_their_retention(pg_database().await).await;
}

/// A billing run's outputs keep their bodies past the retention: the § 302 interchange and
/// the Claims are the only copy of the billing record.
async fn billing_records_keep_their_bodies(url: String) {
    use sociogate::forward::retention::prune_once;
    let _cleanup = DatabaseCleanup(config(&url));
    let store = Store::connect(&url, 2)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let never = tokio_util::sync::CancellationToken::new();
    let outputs = [
        (
            "run-1",
            output("billing-302", "payer.109519005.302", b"UNA:+.? '"),
        ),
        (
            "run-1",
            output("billing-claim", "payer.109519005.claim", b"billing Claim"),
        ),
        (
            "m-3",
            output("insurer", "de.insurer", b"insurer body of m-3"),
        ),
    ];
    let ids = written_and_claimed(&store, &["run-1", "m-3"], &["run-1"], &outputs).await;
    store
        .mark_sent("relay", &ids)
        .await
        .unwrap_or_else(|e| panic!("{e}"));

    let later = time::OffsetDateTime::now_utc() + time::Duration::days(31);
    let pruned = prune_once(&store, 30, later, &never)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(pruned, 1, "only m-3's insurer Bundle");
    assert_eq!(
        stored_ids(&url, "outbox_bodies").await,
        vec![ids[0], ids[1]]
    );
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn billing_records_keep_their_bodies_sqlite() {
    billing_records_keep_their_bodies(sqlite_database()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn billing_records_keep_their_bodies_postgres() {
    billing_records_keep_their_bodies(pg_database().await).await;
}

/// A relay whose lease ran out cannot put back a row another relay took over and published:
/// its failed attempt (a nack, or a broker gone) changes nothing, so the row is not published
/// a second time.
async fn a_relay_past_its_lease_cannot_put_back_a_published_row(url: String) {
    use sqlx::Row as _;
    let _cleanup = DatabaseCleanup(config(&url));
    let store = Store::connect(&url, 2)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let mut tx = store.begin().await.unwrap_or_else(|e| panic!("{e}"));
    tx.insert_message(&raw_message("m-4", b"m-4"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    tx.commit().await.unwrap_or_else(|e| panic!("{e}"));
    let provider = output("provider", "de.provider", b"provider body of m-4");
    enqueued(&store, &[("m-4", provider)]).await;
    let first = store
        .claim_outbox("relay-a", 10, 1)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(first.len(), 1);
    tokio::time::sleep(Duration::from_millis(20)).await;
    let taken_over = store
        .claim_outbox("relay-b", 10, 60_000)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(taken_over.len(), 1, "relay-a's lease ran out");
    let id = taken_over[0].id;
    store
        .mark_sent("relay-b", &[id])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    store
        .mark_failed_attempt("relay-a", id, 20)
        .await
        .unwrap_or_else(|e| panic!("{e}"));

    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&url)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let row = sqlx::query("SELECT status, attempts FROM outbox WHERE id = $1")
        .bind(id)
        .fetch_one(&pool)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    pool.close().await;
    let status: String = row.try_get("status").unwrap_or_else(|e| panic!("{e}"));
    let attempts: i64 = row.try_get("attempts").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((status.as_str(), attempts), ("sent", 1));
    let again = store
        .claim_outbox("relay-c", 10, 60_000)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(again.is_empty(), "nothing to publish again");

    // Its own row, though, goes back to pending after a failed attempt.
    let insurer = output("insurer", "de.insurer", b"insurer body of m-4");
    enqueued(&store, &[("m-4", insurer)]).await;
    let held = store
        .claim_outbox("relay-a", 10, 60_000)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(held.len(), 1);
    store
        .mark_failed_attempt("relay-a", held[0].id, 20)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let retried = store
        .claim_outbox("relay-c", 10, 60_000)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let seen: Vec<&[u8]> = retried.iter().map(|r| r.body.as_slice()).collect();
    assert_eq!(seen, vec![&b"insurer body of m-4"[..]]);
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_past_its_lease_cannot_put_back_a_published_row_sqlite() {
    a_relay_past_its_lease_cannot_put_back_a_published_row(sqlite_database()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_past_its_lease_cannot_put_back_a_published_row_postgres() {
    a_relay_past_its_lease_cannot_put_back_a_published_row(pg_database().await).await;
}
