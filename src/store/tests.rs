use std::sync::mpsc as std_mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{NaiveDate, TimeZone};
use serde_json::json;

use super::*;
use crate::money::{Amount, Money};

fn txn(external_id: &str, minor: i128) -> Transaction {
    Transaction {
        date: NaiveDate::from_ymd_opt(2024, 3, 1).unwrap(),
        amount: Money::new(Amount::from_minor(minor, 2), "usd"),
        currency: "usd".to_owned(),
        payee: Some("Taylor Brooks".to_owned()),
        notes: Some("Pizza & drinks 🍕".to_owned()),
        external_id: external_id.to_owned(),
        tags: vec!["venmo".to_owned()],
        plugin: "venmo".to_owned(),
    }
}

fn message(key: &str, transactions: Vec<Transaction>) -> NewMessage {
    NewMessage {
        received_at: Utc.with_ymd_and_hms(2024, 3, 1, 12, 30, 0).unwrap(),
        route: "email".to_owned(),
        source: None,
        dedupe_key: key.to_owned(),
        content_type: "message/rfc822".to_owned(),
        raw: format!("Subject: {key}\r\n\r\nbody\r\n").into_bytes(),
        meta: json!({}),
        status: if transactions.is_empty() {
            MessageStatus::Unmatched
        } else {
            MessageStatus::Queued
        },
        plugin: (!transactions.is_empty()).then(|| "venmo".to_owned()),
        reason: None,
        transactions,
    }
}

fn open_in(dir: &tempfile::TempDir) -> Store {
    Store::open(&dir.path().join("data/store.db")).expect("open store")
}

fn total_messages(store: &Store) -> u64 {
    store
        .count_messages_by_status()
        .unwrap()
        .iter()
        .map(|(_, n)| n)
        .sum()
}

/// Blocks the writer until the returned sender is used or dropped, so that requests pile up.
async fn hold_writer(store: &Store) -> std_mpsc::Sender<()> {
    let (release, gate) = std_mpsc::channel::<()>();
    let (entered_tx, entered) = oneshot::channel();
    store
        .exec_on_writer(move |_| {
            let _ = entered_tx.send(());
            let _ = gate.recv();
        })
        .await
        .unwrap();
    entered.await.unwrap();
    release
}

/// Waits until exactly `n` requests sit in the writer's queue.
async fn wait_queued(store: &Store, n: usize) {
    let queue = store.queue.as_ref().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while QUEUE_CAPACITY - queue.capacity() != n {
        assert!(Instant::now() < deadline, "requests never queued");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Runs `query` on the writer's own connection and returns its answer.
async fn on_writer<T: Send + 'static>(
    store: &Store,
    query: impl FnOnce(&Connection) -> T + Send + 'static,
) -> T {
    let (tx, rx) = oneshot::channel();
    store
        .exec_on_writer(move |conn| {
            let _ = tx.send(query(conn));
        })
        .await
        .unwrap();
    rx.await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_message_survives_reopening_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/deeper/store.db");
    let raw: Vec<u8> =
        b"From: venmo@venmo.com\r\nSubject: paid\r\n\r\n\xff\xfe\x00\x80 not utf-8 \xc3\x28\r\n"
            .to_vec();
    let meta = json!({
        "headers": {"user-agent": "Mailgun/1.0", "x-forwarded-for": "203.0.113.7"},
        "verdicts": {"spf": "pass", "dkim": ["pass", "neutral"]},
        "size": 123456789012345678901234567890u128.to_string().parse::<serde_json::Number>().unwrap(),
        "note": "ünïcødé ✓",
    });
    let t1 = txn("venmo:1001", -2500);
    let mut t2 = txn("venmo:1002", 1234);
    t2.payee = None;
    t2.tags = vec![];
    let mut m = message("msgid:<a@venmo.com>", vec![t1.clone(), t2.clone()]);
    m.raw = raw.clone();
    m.meta = meta.clone();
    m.route = "mailgun".to_owned();
    m.received_at = Utc.with_ymd_and_hms(2024, 3, 1, 12, 30, 5).unwrap()
        + chrono::Duration::microseconds(123_456);

    let store = Store::open(&path).unwrap();
    let receipt = store.ingest(m).await.unwrap();
    assert_eq!(
        receipt,
        Receipt {
            id: receipt.id,
            duplicate: false,
            status: MessageStatus::Queued,
            transactions: 2,
            new_transactions: 2,
        }
    );
    store.close().unwrap();

    let store = Store::open(&path).unwrap();
    let stored = store
        .message(receipt.id)
        .unwrap()
        .expect("message is stored");
    assert_eq!(stored.raw, raw, "raw bytes are exact");
    assert_eq!(stored.meta, meta);
    assert_eq!(stored.route, "mailgun");
    assert_eq!(stored.source, None);
    assert_eq!(stored.dedupe_key, "msgid:<a@venmo.com>");
    assert_eq!(stored.content_type, "message/rfc822");
    assert_eq!(stored.status, MessageStatus::Queued);
    assert_eq!(stored.plugin.as_deref(), Some("venmo"));
    assert_eq!(stored.received_at, "2024-03-01T12:30:05.123456Z");
    assert_eq!(store.message(receipt.id + 1).unwrap(), None);

    let txs = store.transactions_of(receipt.id).unwrap();
    assert_eq!(txs.len(), 2);
    assert_eq!(txs[0].transaction, t1, "plugin restored from its column");
    assert_eq!(txs[1].transaction, t2);
    for t in &txs {
        assert_eq!(t.message_id, receipt.id);
        assert_eq!(t.state, "pending");
        assert_eq!(t.attempts, 0);
        assert_eq!(t.last_error, None);
    }
    let (body, next_attempt_at): (String, Option<String>) = store
        .reader()
        .query_row(
            "SELECT body, next_attempt_at FROM transactions WHERE external_id = 'venmo:1001'",
            [],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .unwrap();
    assert!(
        !body.contains("plugin"),
        "plugin is not in the body: {body}"
    );
    assert!(next_attempt_at.is_some(), "pending rows are due at once");
    store.close().unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn duplicates_are_stored_once_and_transactions_queued_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_in(&dir);
    let first = store
        .ingest(message(
            "msgid:<1@x>",
            vec![txn("venmo:1", -100), txn("venmo:2", -200)],
        ))
        .await
        .unwrap();
    assert!(!first.duplicate);
    assert_eq!(first.new_transactions, 2);

    // The same message again, even with other bytes and another verdict, changes nothing.
    let mut again = message("msgid:<1@x>", vec![txn("venmo:1", -100), txn("venmo:9", 1)]);
    again.raw = b"different bytes".to_vec();
    again.status = MessageStatus::Unmatched;
    let dup = store.ingest(again).await.unwrap();
    assert_eq!(
        dup,
        Receipt {
            id: first.id,
            duplicate: true,
            status: MessageStatus::Queued,
            transactions: 2,
            new_transactions: 0,
        }
    );
    assert_eq!(total_messages(&store), 1);
    assert_ne!(
        store.message(first.id).unwrap().unwrap().raw,
        b"different bytes"
    );
    assert_eq!(store.transactions_of(first.id).unwrap().len(), 2);

    // Another message carrying a known transaction (say, a forward of the same payment) is
    // stored, but the transaction is not queued twice.
    let other = store
        .ingest(message(
            "sha256:abcd",
            vec![txn("venmo:2", -200), txn("venmo:3", -300)],
        ))
        .await
        .unwrap();
    assert!(!other.duplicate);
    assert_ne!(other.id, first.id);
    assert_eq!((other.transactions, other.new_transactions), (2, 1));
    let theirs = store.transactions_of(other.id).unwrap();
    assert_eq!(theirs.len(), 1);
    assert_eq!(theirs[0].transaction.external_id, "venmo:3");

    let known_only = store
        .ingest(message("hook:monzo:evt_1", vec![txn("venmo:1", -100)]))
        .await
        .unwrap();
    assert_eq!(
        (known_only.duplicate, known_only.new_transactions),
        (false, 0)
    );

    // Only queued messages queue transactions.
    let mut ignored = message("msgid:<ignored@x>", vec![txn("venmo:77", -1)]);
    ignored.status = MessageStatus::Ignored;
    let r = store.ingest(ignored).await.unwrap();
    assert_eq!((r.status, r.new_transactions), (MessageStatus::Ignored, 0));
    assert!(store.transactions_of(r.id).unwrap().is_empty());

    let count: i64 = store
        .reader()
        .query_row("SELECT COUNT(*) FROM transactions", [], |row| row.get(0))
        .unwrap();
    assert_eq!(count, 3);
    assert_eq!(
        store.count_messages_by_status().unwrap(),
        vec![("ignored".to_owned(), 1), ("queued".to_owned(), 3)]
    );
    store.close().unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_requests_share_commits() {
    const TASKS: usize = 200;
    const EACH: usize = 10;
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(open_in(&dir));

    // Baseline: one client waiting for each answer gets one commit (one fsync) per request.
    let before = store.stats();
    let started = Instant::now();
    for i in 0..20 {
        store
            .ingest(message(&format!("seq-{i}"), vec![]))
            .await
            .unwrap();
    }
    let alone = store.stats().commits - before.commits;
    println!(
        "one at a time: 20 requests in {alone} commits in {:?}",
        started.elapsed()
    );
    assert_eq!(alone, 20);

    let before = store.stats();
    let started = Instant::now();
    let mut handles = Vec::new();
    for task in 0..TASKS {
        let store = Arc::clone(&store);
        handles.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for i in 0..EACH {
                let key = format!("msgid:<{task}-{i}@load>");
                let m = message(&key, vec![txn(&format!("venmo:{task}-{i}"), -1)]);
                let r = store.ingest(m).await.unwrap();
                assert!(!r.duplicate);
                assert_eq!(r.new_transactions, 1);
                ids.push(r.id);
            }
            ids
        }));
    }
    let mut ids = Vec::new();
    for h in handles {
        ids.extend(h.await.unwrap());
    }
    let elapsed = started.elapsed();
    let total = TASKS * EACH;
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), total, "every request got its own message");
    assert_eq!(total_messages(&store), total as u64 + 20);
    let count: i64 = store
        .reader()
        .query_row("SELECT COUNT(*) FROM transactions", [], |row| row.get(0))
        .unwrap();
    assert_eq!(count, total as i64);

    let after = store.stats();
    let commits = after.commits - before.commits;
    let requests = after.requests - before.requests;
    println!(
        "group commit: {requests} requests in {commits} commits ({:.1} per commit) in {elapsed:?}",
        requests as f64 / commits as f64
    );
    assert_eq!(requests, total as u64);
    assert!(
        commits < requests / 4,
        "{commits} commits for {requests} requests: commits are not shared"
    );
    Arc::into_inner(store).unwrap().close().unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_request_does_not_fail_its_batch() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(open_in(&dir));
    let before = store.stats();
    let release = hold_writer(&store).await;

    let mut bad_route = message("msgid:<bad-route@x>", vec![txn("venmo:r1", -1)]);
    bad_route.route = "carrier-pigeon".to_owned();
    // Its message row is inserted first; the over-long external_id then fails, and the message
    // must go with it.
    let bad_txn = message(
        "msgid:<bad-txn@x>",
        vec![
            txn("venmo:t1", -1),
            txn(&format!("venmo:{}", "9".repeat(80)), -2),
        ],
    );
    let requests = vec![
        message("msgid:<good-1@x>", vec![txn("venmo:g1", -1)]),
        bad_route,
        message("msgid:<good-2@x>", vec![txn("venmo:g2", -1)]),
        bad_txn,
        message("msgid:<good-3@x>", vec![txn("venmo:g3", -1)]),
    ];
    let n = requests.len();
    let mut handles = Vec::new();
    for (i, m) in requests.into_iter().enumerate() {
        let handle = Arc::clone(&store);
        handles.push(tokio::spawn(async move { handle.ingest(m).await }));
        // Queue them in this order.
        wait_queued(&store, i + 1).await;
    }
    let ping = {
        let store = Arc::clone(&store);
        tokio::spawn(async move { store.ping().await })
    };
    wait_queued(&store, n + 1).await;
    release.send(()).unwrap();

    let mut results = Vec::new();
    for h in handles {
        results.push(h.await.unwrap());
    }
    ping.await
        .unwrap()
        .expect("ping in the same batch succeeds");
    let after = store.stats();
    assert_eq!(after.commits - before.commits, 1, "all in one batch");
    assert_eq!(after.requests - before.requests, n as u64 + 1);

    for i in [0, 2, 4] {
        let r = results[i].as_ref().expect("good request succeeds");
        assert_eq!(r.new_transactions, 1);
        assert!(store.message(r.id).unwrap().is_some());
    }
    for i in [1, 3] {
        let err = results[i].as_ref().expect_err("bad request fails");
        assert!(
            err.to_string().contains("CHECK constraint failed"),
            "its own error: {err}"
        );
    }
    assert_eq!(total_messages(&store), 3);
    let count: i64 = store
        .reader()
        .query_row("SELECT COUNT(*) FROM transactions", [], |row| row.get(0))
        .unwrap();
    assert_eq!(
        count, 3,
        "the failed request's first transaction was rolled back too"
    );

    // The failed message left no trace: the same key is new.
    let retry = store
        .ingest(message("msgid:<bad-txn@x>", vec![txn("venmo:t1", -1)]))
        .await
        .unwrap();
    assert_eq!((retry.duplicate, retry.new_transactions), (false, 1));
    Arc::into_inner(store).unwrap().close().unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_commit_fails_every_request_in_the_batch() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(open_in(&dir));
    let before = store.stats();
    // Make the next COMMIT fail: with foreign keys deferred to commit time, a trigger gives the
    // "poison" message an orphan transaction. Each savepoint succeeds; the COMMIT does not.
    let (release, gate) = std_mpsc::channel::<()>();
    let (ready_tx, ready) = oneshot::channel();
    store
        .exec_on_writer(move |conn| {
            conn.execute_batch(
                "CREATE TEMP TRIGGER poison AFTER INSERT ON main.messages
                 WHEN NEW.dedupe_key = 'poison'
                 BEGIN
                   INSERT INTO transactions (message_id, external_id, plugin, body, created_at,
                                             updated_at)
                   VALUES (999999, 'orphan', 'x', '{}', 'now', 'now');
                 END;
                 PRAGMA defer_foreign_keys = ON;",
            )
            .unwrap();
            let _ = ready_tx.send(());
            let _ = gate.recv();
        })
        .await
        .unwrap();
    ready.await.unwrap();
    let keys = ["before-poison", "poison", "after-poison"];
    let mut handles = Vec::new();
    for (i, key) in keys.into_iter().enumerate() {
        let handle = Arc::clone(&store);
        let m = message(key, vec![txn(&format!("venmo:{key}"), -1)]);
        handles.push(tokio::spawn(async move { handle.ingest(m).await }));
        wait_queued(&store, i + 1).await;
    }
    release.send(()).unwrap();
    for h in handles {
        let err = h
            .await
            .unwrap()
            .expect_err("nothing in the batch is acknowledged");
        assert!(err.to_string().contains("FOREIGN KEY"), "{err}");
    }
    let after = store.stats();
    assert_eq!(after.commits, before.commits);
    assert_eq!(after.requests - before.requests, 3);
    assert_eq!(total_messages(&store), 0, "the whole batch was rolled back");

    // The writer carries on; the failed requests can be retried.
    store
        .exec_on_writer(|conn| conn.execute_batch("DROP TRIGGER temp.poison").unwrap())
        .await
        .unwrap();
    for key in keys {
        let r = store
            .ingest(message(key, vec![txn(&format!("venmo:{key}"), -1)]))
            .await
            .unwrap();
        assert_eq!((r.duplicate, r.new_transactions), (false, 1));
    }
    assert_eq!(total_messages(&store), 3);
    Arc::into_inner(store).unwrap().close().unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn replay_tokens_are_remembered_then_forgotten() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_in(&dir);
    assert!(store
        .remember_token("mailgun", "tok-a", 1000, 0)
        .await
        .unwrap());
    assert!(
        !store
            .remember_token("mailgun", "tok-a", 1001, 0)
            .await
            .unwrap(),
        "replay"
    );
    assert!(
        store
            .remember_token("other", "tok-a", 1002, 0)
            .await
            .unwrap(),
        "other scope"
    );
    assert!(store
        .remember_token("mailgun", "tok-b", 2000, 0)
        .await
        .unwrap());

    // Forgetting everything of `mailgun` seen before 1500 drops tok-a there, not tok-b, and not
    // tok-a of the other scope.
    assert!(
        store
            .remember_token("mailgun", "tok-c", 3000, 1500)
            .await
            .unwrap(),
        "new token"
    );
    let left: Vec<(String, String)> = {
        let conn = store.reader();
        let mut stmt = conn
            .prepare("SELECT scope, token FROM replay_tokens ORDER BY scope, token")
            .unwrap();
        let rows = stmt
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
            .unwrap();
        rows.collect::<Result<_, _>>().unwrap()
    };
    let pairs: Vec<(&str, &str)> = left.iter().map(|(s, t)| (s.as_str(), t.as_str())).collect();
    assert_eq!(
        pairs,
        vec![
            ("mailgun", "tok-b"),
            ("mailgun", "tok-c"),
            ("other", "tok-a")
        ]
    );
    assert!(
        store
            .remember_token("mailgun", "tok-a", 3001, 1500)
            .await
            .unwrap(),
        "a forgotten token is new again"
    );
    assert!(!store
        .remember_token("mailgun", "tok-b", 3002, 1500)
        .await
        .unwrap());
    assert!(!store
        .remember_token("other", "tok-a", 3003, 0)
        .await
        .unwrap());

    // Replays survive a restart.
    store.close().unwrap();
    let store = open_in(&dir);
    assert!(!store
        .remember_token("mailgun", "tok-c", 3004, 1500)
        .await
        .unwrap());
    store.close().unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn settings_ping_and_size() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_in(&dir);

    let (journal, synchronous, foreign_keys, version) = on_writer(&store, |conn| {
        let get = |sql: &str| -> String {
            conn.query_row(sql, [], |row| row.get::<_, rusqlite::types::Value>(0))
                .map(|v| match v {
                    rusqlite::types::Value::Integer(i) => i.to_string(),
                    rusqlite::types::Value::Text(s) => s,
                    other => format!("{other:?}"),
                })
                .unwrap()
        };
        (
            get("PRAGMA journal_mode"),
            get("PRAGMA synchronous"),
            get("PRAGMA foreign_keys"),
            get("PRAGMA user_version"),
        )
    })
    .await;
    assert_eq!(journal, "wal");
    assert_eq!(synchronous, "2", "FULL");
    assert_eq!(foreign_keys, "1");
    assert_eq!(version, SCHEMA_VERSION.to_string());
    let reader_mode: String = store
        .reader()
        .query_row("PRAGMA journal_mode", [], |row| row.get(0))
        .unwrap();
    assert_eq!(reader_mode, "wal");

    let checked = |store: &Store| -> String {
        store
            .reader()
            .query_row("SELECT checked_at FROM health", [], |row| row.get(0))
            .unwrap()
    };
    let first = checked(&store);
    tokio::time::sleep(Duration::from_millis(2)).await;
    store.ping().await.unwrap();
    assert!(checked(&store) > first, "ping wrote and committed");

    let empty = store.size_bytes();
    assert!(empty > 0);
    for i in 0..50 {
        let mut m = message(&format!("sha256:{i}"), vec![]);
        m.raw = vec![i as u8; 20_000];
        store.ingest(m).await.unwrap();
    }
    let full = store.size_bytes();
    println!("size_bytes: {empty} empty, {full} after 1 MB of messages");
    assert!(full >= empty + 1_000_000, "{full} vs {empty}");
    store.close().unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn reads_are_not_blocked_by_a_write_in_progress() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_in(&dir);
    let r = store.ingest(message("k", vec![])).await.unwrap();
    let (release, gate) = std_mpsc::channel::<()>();
    let (locked_tx, locked) = oneshot::channel();
    store
        .exec_on_writer(move |conn| {
            conn.execute_batch("BEGIN IMMEDIATE; DELETE FROM messages;")
                .unwrap();
            let _ = locked_tx.send(());
            let _ = gate.recv();
            conn.execute_batch("ROLLBACK").unwrap();
        })
        .await
        .unwrap();
    locked.await.unwrap();
    let started = Instant::now();
    assert!(
        store.message(r.id).unwrap().is_some(),
        "sees the last commit"
    );
    assert!(started.elapsed() < Duration::from_secs(1));
    release.send(()).unwrap();
    store.close().unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn close_commits_everything_queued() {
    const N: usize = 300;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    let store = Store::open(&path).unwrap();
    let release = hold_writer(&store).await;
    for i in 0..N {
        // Queue the request, then stop waiting for it (as when a client hangs up).
        let m = message(
            &format!("msgid:<{i}@close>"),
            vec![txn(&format!("venmo:c{i}"), -1)],
        );
        let sent =
            tokio::time::timeout(Duration::ZERO, tokio::task::unconstrained(store.ingest(m))).await;
        assert!(sent.is_err(), "not committed while the writer is held");
    }
    wait_queued(&store, N).await;
    assert_eq!(store.stats().commits, 0);
    drop(release);
    store.close().unwrap();

    let mut wal = path.clone().into_os_string();
    wal.push("-wal");
    let wal_len = std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
    assert_eq!(wal_len, 0, "the WAL was checkpointed and truncated");

    let store = Store::open(&path).unwrap();
    assert_eq!(total_messages(&store), N as u64);
    let count: i64 = store
        .reader()
        .query_row("SELECT COUNT(*) FROM transactions", [], |row| row.get(0))
        .unwrap();
    assert_eq!(count, N as i64);
    store.close().unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn dropping_without_close_keeps_acknowledged_data_and_does_not_block() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    let store = Store::open(&path).unwrap();
    for i in 0..20 {
        store
            .ingest(message(&format!("k{i}"), vec![]))
            .await
            .unwrap();
    }
    drop(store);
    let store = Store::open(&path).unwrap();
    assert_eq!(total_messages(&store), 20);

    // Even with the writer stuck, a drop returns at once.
    let release = hold_writer(&store).await;
    let started = Instant::now();
    drop(store);
    assert!(started.elapsed() < Duration::from_millis(500));
    drop(release);
}

#[test]
fn open_reports_unusable_paths() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"x").unwrap();

    let under_file = file.join("store.db");
    let err = Store::open(&under_file).expect_err("parent is a file");
    let text = err.to_string();
    assert!(matches!(err, StoreError::Open { .. }), "{err:?}");
    assert!(text.contains(&under_file.display().to_string()), "{text}");
    assert!(text.contains("cannot create folder"), "{text}");
    println!("{text}");

    let err = Store::open(dir.path()).expect_err("path is a folder");
    assert!(err.to_string().contains("cannot open store"), "{err}");
    println!("{err}");

    let garbage = dir.path().join("garbage.db");
    std::fs::write(&garbage, vec![b'z'; 8192]).unwrap();
    let err = Store::open(&garbage).expect_err("not a database");
    println!("{err}");
    assert!(err.to_string().contains("not a database"), "{err}");

    let newer = dir.path().join("newer.db");
    Store::open(&newer).unwrap().close().unwrap();
    rusqlite::Connection::open(&newer)
        .unwrap()
        .execute_batch("PRAGMA user_version = 99")
        .unwrap();
    let err = Store::open(&newer).expect_err("schema from the future");
    assert!(
        matches!(&err, StoreError::Open { source, .. }
            if matches!(**source, StoreError::SchemaTooNew { found: 99, .. })),
        "{err:?}"
    );
}

#[test]
fn statuses_map_and_round_trip() {
    assert_eq!(
        MessageStatus::from_outcome(Status::Parsed),
        MessageStatus::Queued
    );
    assert_eq!(
        MessageStatus::from_outcome(Status::Ignored),
        MessageStatus::Ignored
    );
    assert_eq!(
        MessageStatus::from_outcome(Status::Unmatched),
        MessageStatus::Unmatched
    );
    assert_eq!(
        MessageStatus::from_outcome(Status::Error),
        MessageStatus::Failed
    );
    for status in MessageStatus::ALL {
        assert_eq!(status.as_str().parse::<MessageStatus>().unwrap(), status);
        assert_eq!(
            serde_json::to_value(status).unwrap(),
            json!(status.as_str())
        );
    }
    assert!("parsed".parse::<MessageStatus>().is_err());
}
