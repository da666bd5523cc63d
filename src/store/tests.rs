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
        account: None,
        balance: None,
        plugin: "venmo".to_owned(),
        void: false,
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
        drift: None,
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
            updated_transactions: 0,
            voided_transactions: 0,
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
    for t in &txs {
        assert_eq!(t.lunchmoney_id, None);
        assert_eq!(t.next_attempt_at.as_deref(), Some(t.created_at.as_str()));
        assert_eq!(t.updated_at, t.created_at);
    }
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
            updated_transactions: 0,
            voided_transactions: 0,
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

// ---------------------------------------------------------------------------------------------
// The outbox.

const MINUTE: Duration = Duration::from_secs(60);

/// Queues one message carrying transactions with these external ids; returns the message id.
async fn queue(store: &Store, key: &str, external_ids: &[&str]) -> i64 {
    let transactions = external_ids.iter().map(|id| txn(id, -100)).collect();
    let r = store.ingest(message(key, transactions)).await.unwrap();
    assert_eq!(r.new_transactions, external_ids.len());
    r.id
}

fn row(store: &Store, external_id: &str) -> StoredTransaction {
    store
        .transaction_by_external_id(external_id)
        .unwrap()
        .unwrap_or_else(|| panic!("{external_id} is stored"))
}

fn id_of(store: &Store, external_id: &str) -> i64 {
    row(store, external_id).id
}

fn claimed_until(store: &Store, external_id: &str) -> Option<String> {
    store
        .reader()
        .query_row(
            "SELECT claimed_until FROM transactions WHERE external_id = ?1",
            [external_id],
            |row| row.get(0),
        )
        .unwrap()
}

fn external_ids(claimed: &[Claimed]) -> Vec<&str> {
    claimed
        .iter()
        .map(|c| c.transaction.external_id.as_str())
        .collect()
}

fn secs(n: i64) -> chrono::Duration {
    chrono::Duration::seconds(n)
}

#[tokio::test(flavor = "multi_thread")]
async fn claims_are_oldest_first_limited_and_leased_until_they_expire() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_in(&dir);
    let m1 = queue(&store, "m1", &["venmo:a1", "venmo:a2"]).await;
    let m2 = queue(&store, "m2", &["venmo:b1"]).await;
    queue(&store, "m3", &["venmo:c1", "venmo:c2"]).await;
    let t0 = Utc::now();
    let lease = Duration::from_secs(30);

    assert!(store.claim_pending(0, lease, t0).await.unwrap().is_empty());
    let first = store.claim_pending(2, lease, t0).await.unwrap();
    assert_eq!(external_ids(&first), ["venmo:a1", "venmo:a2"]);
    assert_eq!(first[0].message_id, m1);
    assert_eq!(first[0].attempts, 0);
    assert_eq!(
        first[0].transaction,
        txn("venmo:a1", -100),
        "plugin restored"
    );
    assert_eq!(first[0].id, id_of(&store, "venmo:a1"));
    assert_eq!(
        claimed_until(&store, "venmo:a1"),
        Some(timestamp(t0 + secs(30)))
    );

    // Claimed rows are skipped while their lease holds; the rest come oldest first.
    let second = store.claim_pending(10, lease, t0).await.unwrap();
    assert_eq!(external_ids(&second), ["venmo:b1", "venmo:c1", "venmo:c2"]);
    assert_eq!(second[0].message_id, m2);
    assert!(store
        .claim_pending(10, lease, t0 + secs(29))
        .await
        .unwrap()
        .is_empty());
    assert_eq!(store.outbox_summary(t0).unwrap().claimed, 5);

    // A restart: the claims are still stored, and once their lease has ended (at exactly
    // `claimed_until` included) they are claimable again, oldest first.
    store.close().unwrap();
    let store = open_in(&dir);
    assert!(store
        .claim_pending(10, lease, t0 + secs(29))
        .await
        .unwrap()
        .is_empty());
    let again = store.claim_pending(10, lease, t0 + secs(30)).await.unwrap();
    assert_eq!(
        external_ids(&again),
        ["venmo:a1", "venmo:a2", "venmo:b1", "venmo:c1", "venmo:c2"]
    );
    let a1 = row(&store, "venmo:a1");
    assert_eq!(
        (
            a1.state.as_str(),
            a1.attempts,
            a1.updated_at == a1.created_at
        ),
        ("pending", 0, true),
        "a claim is a lease, not a change of the row"
    );
    assert_eq!(
        claimed_until(&store, "venmo:a1"),
        Some(timestamp(t0 + secs(60)))
    );
    // A lease too long to represent is capped, still sortable.
    store.release(vec![a1.id]).await.unwrap();
    let forever = store
        .claim_pending(1, Duration::MAX, t0 + secs(60))
        .await
        .unwrap();
    assert_eq!(external_ids(&forever), ["venmo:a1"]);
    assert_eq!(
        claimed_until(&store, "venmo:a1").as_deref(),
        Some("9999-12-31T23:59:59.000000Z")
    );
    store.close().unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn claims_respect_next_attempt_at() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_in(&dir);
    queue(&store, "m1", &["venmo:a"]).await;
    queue(&store, "m2", &["venmo:b"]).await;
    let (a, b) = (id_of(&store, "venmo:a"), id_of(&store, "venmo:b"));
    let t0 = Utc::now();
    let lease = Duration::from_secs(1);
    assert_eq!(store.claim_pending(10, lease, t0).await.unwrap().len(), 2);
    store
        .mark_retry(vec![a], "HTTP 503".to_owned(), t0 + secs(60))
        .await
        .unwrap();
    store.release(vec![b]).await.unwrap();

    let due = store.claim_pending(10, lease, t0).await.unwrap();
    assert_eq!(external_ids(&due), ["venmo:b"], "a is not due yet");
    let due = store.claim_pending(10, lease, t0 + secs(59)).await.unwrap();
    assert_eq!(
        external_ids(&due),
        ["venmo:b"],
        "b's lease ran out; a still not due"
    );
    let due = store.claim_pending(10, lease, t0 + secs(60)).await.unwrap();
    assert_eq!(external_ids(&due), ["venmo:a", "venmo:b"], "oldest first");
    assert_eq!((due[0].attempts, due[1].attempts), (1, 0));
    store.close().unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn delivered_retry_and_dead_transitions() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_in(&dir);
    queue(
        &store,
        "m1",
        &["venmo:a", "venmo:b", "venmo:c", "venmo:d", "venmo:e"],
    )
    .await;
    let id = |x: &str| id_of(&store, &format!("venmo:{x}"));
    let (a, b, c, d, e) = (id("a"), id("b"), id("c"), id("d"), id("e"));
    let created = row(&store, "venmo:a").created_at;
    let t0 = Utc::now();
    assert_eq!(store.claim_pending(10, MINUTE, t0).await.unwrap().len(), 5);
    tokio::time::sleep(Duration::from_millis(2)).await;

    store
        .mark_delivered(vec![(a, Some(111)), (b, None), (9999, Some(5))])
        .await
        .unwrap();
    let retry_at = t0 + secs(300);
    store
        .mark_retry(vec![c, e], "HTTP 503: busy".to_owned(), retry_at)
        .await
        .unwrap();
    store
        .mark_dead(vec![(d, "400: date is invalid".to_owned())])
        .await
        .unwrap();

    let ra = row(&store, "venmo:a");
    assert_eq!(ra.state, "delivered");
    assert_eq!(ra.lunchmoney_id, Some(111));
    assert_eq!((ra.attempts, ra.last_error.as_deref()), (0, None));
    assert_eq!(ra.next_attempt_at, None);
    assert_eq!(ra.created_at, created);
    assert!(ra.updated_at > created, "{} vs {created}", ra.updated_at);
    assert_eq!(claimed_until(&store, "venmo:a"), None);
    let rb = row(&store, "venmo:b");
    assert_eq!((rb.state.as_str(), rb.lunchmoney_id), ("delivered", None));

    let rc = row(&store, "venmo:c");
    assert_eq!(rc.state, "pending");
    assert_eq!(rc.attempts, 1);
    assert_eq!(rc.last_error.as_deref(), Some("HTTP 503: busy"));
    assert_eq!(rc.next_attempt_at, Some(timestamp(retry_at)));
    assert!(rc.updated_at > created);
    assert_eq!(claimed_until(&store, "venmo:c"), None);

    let rd = row(&store, "venmo:d");
    assert_eq!(rd.state, "dead");
    assert_eq!(rd.attempts, 1);
    assert_eq!(rd.last_error.as_deref(), Some("400: date is invalid"));
    assert_eq!(rd.next_attempt_at, None);
    assert_eq!(claimed_until(&store, "venmo:d"), None);

    // c fails again, then for good; e is delivered after its failure (the error is cleared,
    // the attempts stay counted).
    store
        .mark_retry(vec![c], "HTTP 502".to_owned(), retry_at + secs(600))
        .await
        .unwrap();
    assert_eq!(row(&store, "venmo:c").attempts, 2);
    store
        .mark_dead(vec![(c, "422: bad payee".to_owned())])
        .await
        .unwrap();
    let rc = row(&store, "venmo:c");
    assert_eq!(
        (rc.state.as_str(), rc.attempts, rc.last_error.as_deref()),
        ("dead", 3, Some("422: bad payee"))
    );
    assert_eq!(rc.next_attempt_at, None);
    store.mark_delivered(vec![(e, Some(222))]).await.unwrap();
    let re = row(&store, "venmo:e");
    assert_eq!(
        (
            re.state.as_str(),
            re.attempts,
            re.last_error,
            re.lunchmoney_id
        ),
        ("delivered", 1, None, Some(222))
    );

    // Delivered rows are never set back: retry, dead and release only touch pending rows.
    store
        .mark_retry(vec![a], "late".to_owned(), t0)
        .await
        .unwrap();
    store.mark_dead(vec![(a, "late".to_owned())]).await.unwrap();
    store.release(vec![a]).await.unwrap();
    assert_eq!(row(&store, "venmo:a"), ra);
    // A repeated delivery without an id keeps the one stored.
    store.mark_delivered(vec![(a, None)]).await.unwrap();
    assert_eq!(row(&store, "venmo:a").lunchmoney_id, Some(111));

    let in_state = |state: &str| -> Vec<String> {
        store
            .transactions_in_state(state, 10)
            .unwrap()
            .into_iter()
            .map(|t| t.transaction.external_id)
            .collect()
    };
    assert_eq!(in_state("delivered"), ["venmo:a", "venmo:b", "venmo:e"]);
    assert_eq!(in_state("dead"), ["venmo:c", "venmo:d"]);
    assert!(in_state("pending").is_empty());
    assert_eq!(
        store.transactions_in_state("delivered", 2).unwrap().len(),
        2
    );
    assert!(matches!(
        store.transactions_in_state("sent", 10),
        Err(StoreError::InvalidArgument(_))
    ));
    assert_eq!(store.transaction_by_external_id("venmo:zz").unwrap(), None);
    store.close().unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn release_gives_claims_back_without_an_attempt() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_in(&dir);
    queue(&store, "m1", &["venmo:a", "venmo:b"]).await;
    let before = row(&store, "venmo:a");
    let t0 = Utc::now();
    let lease = Duration::from_secs(3600);
    assert_eq!(store.claim_pending(10, lease, t0).await.unwrap().len(), 2);
    assert!(store.claim_pending(10, lease, t0).await.unwrap().is_empty());

    store.release(vec![before.id]).await.unwrap();
    assert_eq!(
        row(&store, "venmo:a"),
        before,
        "nothing but the claim changed"
    );
    assert_eq!(claimed_until(&store, "venmo:a"), None);
    let again = store.claim_pending(10, lease, t0).await.unwrap();
    assert_eq!(external_ids(&again), ["venmo:a"], "b is still held");
    assert_eq!(again[0].attempts, 0);
    store.close().unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn replay_moves_only_dead_letters_back() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_in(&dir);
    queue(
        &store,
        "m1",
        &["venmo:a", "venmo:b", "venmo:c", "venmo:d", "venmo:e"],
    )
    .await;
    let id = |x: &str| id_of(&store, &format!("venmo:{x}"));
    let (a, b, c, d) = (id("a"), id("b"), id("c"), id("d"));
    store.claim_pending(10, MINUTE, Utc::now()).await.unwrap();
    store
        .mark_dead(vec![
            (a, "400: a".to_owned()),
            (b, "400: b".to_owned()),
            (c, "400: c".to_owned()),
        ])
        .await
        .unwrap();
    store.mark_delivered(vec![(d, Some(4))]).await.unwrap();
    // e stays pending and claimed.

    let before = Utc::now();
    let moved = store.replay(Some(vec![a, d, id("e"), 9999])).await.unwrap();
    assert_eq!(moved, 1, "only the dead one of those");
    let ra = row(&store, "venmo:a");
    assert_eq!((ra.state.as_str(), ra.attempts), ("pending", 0));
    assert_eq!(
        ra.last_error.as_deref(),
        Some("400: a"),
        "kept for the record"
    );
    let due = ra.next_attempt_at.clone().expect("due");
    assert!(
        due >= timestamp(before) && due <= timestamp(Utc::now()),
        "due now: {due}"
    );
    assert_eq!(row(&store, "venmo:d").state, "delivered");
    assert_eq!(row(&store, "venmo:e").state, "pending");
    assert_eq!(row(&store, "venmo:b").state, "dead");

    let claimed = store.claim_pending(10, MINUTE, Utc::now()).await.unwrap();
    assert_eq!(
        external_ids(&claimed),
        ["venmo:a"],
        "replayed rows are due at once"
    );

    assert_eq!(store.replay(None).await.unwrap(), 2);
    for x in ["b", "c"] {
        let r = row(&store, &format!("venmo:{x}"));
        assert_eq!((r.state.as_str(), r.attempts), ("pending", 0));
        assert_eq!(r.last_error, Some(format!("400: {x}")));
    }
    assert_eq!(store.replay(None).await.unwrap(), 0);
    let summary = store.outbox_summary(Utc::now()).unwrap();
    assert_eq!(
        (summary.pending, summary.delivered, summary.dead),
        (4, 1, 0)
    );
    store.close().unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn outbox_summary_counts_and_times() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_in(&dir);
    assert_eq!(
        store.outbox_summary(Utc::now()).unwrap(),
        OutboxSummary::default()
    );
    queue(&store, "m1", &["venmo:a", "venmo:b"]).await;
    queue(&store, "m2", &["venmo:c", "venmo:d", "venmo:e"]).await;
    let created_1 = row(&store, "venmo:a").created_at;
    let created_2 = row(&store, "venmo:c").created_at;
    assert!(created_1 < created_2);
    let id = |x: &str| id_of(&store, &format!("venmo:{x}"));
    let (a, b, c, d, e) = (id("a"), id("b"), id("c"), id("d"), id("e"));

    let t0 = Utc::now();
    let claimed = store.claim_pending(2, MINUTE, t0).await.unwrap();
    assert_eq!(external_ids(&claimed), ["venmo:a", "venmo:b"]);
    store.mark_delivered(vec![(b, Some(2))]).await.unwrap();
    store
        .mark_retry(vec![c], "HTTP 503".to_owned(), t0 + secs(600))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(2)).await;
    store
        .mark_dead(vec![(d, "400: bad".to_owned())])
        .await
        .unwrap();
    let d_updated = row(&store, "venmo:d").updated_at;

    let summary = store.outbox_summary(t0).unwrap();
    assert_eq!(
        summary,
        OutboxSummary {
            pending: 3, // a (claimed), c (retrying), e
            delivered: 1,
            dead: 1,
            fetched: 0,
            voided: 0,
            deleted: 0,
            claimed: 1,
            oldest_pending: Some(created_1.clone()),
            next_attempt: Some(created_1.clone()),
            last_error: Some((d, d_updated, "400: bad".to_owned())),
        }
    );
    assert_eq!(
        store.outbox_summary(t0 + secs(60)).unwrap().claimed,
        0,
        "the lease has ended"
    );

    store
        .mark_delivered(vec![(a, None), (e, None)])
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(2)).await;
    store
        .mark_retry(vec![c], "HTTP 502".to_owned(), t0 + secs(900))
        .await
        .unwrap();
    let c_row = row(&store, "venmo:c");
    let summary = store.outbox_summary(t0).unwrap();
    assert_eq!(
        summary,
        OutboxSummary {
            pending: 1,
            delivered: 3,
            dead: 1,
            fetched: 0,
            voided: 0,
            deleted: 0,
            claimed: 0,
            oldest_pending: Some(created_2),
            next_attempt: Some(timestamp(t0 + secs(900))),
            last_error: Some((c, c_row.updated_at, "HTTP 502".to_owned())),
        }
    );
    store.close().unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn an_undecodable_body_is_made_dead_instead_of_blocking_the_queue() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_in(&dir);
    queue(&store, "m1", &["venmo:bad", "venmo:good"]).await;
    on_writer(&store, |conn| {
        conn.execute(
            "UPDATE transactions SET body = '{\"amount\": 1}' WHERE external_id = 'venmo:bad'",
            [],
        )
        .unwrap()
    })
    .await;
    let claimed = store.claim_pending(10, MINUTE, Utc::now()).await.unwrap();
    assert_eq!(external_ids(&claimed), ["venmo:good"]);
    let (state, last_error): (String, String) = store
        .reader()
        .query_row(
            "SELECT state, last_error FROM transactions WHERE external_id = 'venmo:bad'",
            [],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .unwrap();
    assert_eq!(state, "dead");
    assert!(last_error.contains("unreadable body"), "{last_error}");
    store.close().unwrap();
}

/// The next batch the worker of `the_queued_signal_wakes_a_claim_loop` reports, and how long it
/// took: far less than the worker's own 60 s timeout, so it was woken.
async fn next(
    found: &mut tokio::sync::mpsc::UnboundedReceiver<Vec<String>>,
) -> (Vec<String>, Duration) {
    let started = Instant::now();
    let names = tokio::time::timeout(Duration::from_secs(10), found.recv())
        .await
        .expect("woken long before its timeout")
        .unwrap();
    (names, started.elapsed())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_queued_signal_wakes_a_claim_loop() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(open_in(&dir));
    let signal = store.queued_signal();
    let quiet = |signal: Arc<tokio::sync::Notify>| async move {
        tokio::time::timeout(Duration::from_millis(50), signal.notified())
            .await
            .is_err()
    };

    // Nothing queued, nothing signalled: an unmatched message, then a duplicate.
    store.ingest(message("unmatched", vec![])).await.unwrap();
    assert!(quiet(Arc::clone(&signal)).await);
    queue(&store, "m1", &["venmo:a"]).await;
    // Nobody was waiting: the wake-up is kept for the next wait.
    tokio::time::timeout(Duration::from_secs(1), signal.notified())
        .await
        .expect("a permit was stored");
    let dup = store
        .ingest(message("m1", vec![txn("venmo:a", -100)]))
        .await
        .unwrap();
    assert!(dup.duplicate);
    assert!(
        quiet(Arc::clone(&signal)).await,
        "a duplicate queues nothing"
    );

    // A worker: claims what is due, else sleeps until signalled, for far longer than the test
    // allows for a wake-up.
    let (found_tx, mut found) = tokio::sync::mpsc::unbounded_channel::<Vec<String>>();
    let worker = {
        let store = Arc::clone(&store);
        tokio::spawn(async move {
            let signal = store.queued_signal();
            loop {
                let claimed = store.claim_pending(100, MINUTE, Utc::now()).await.unwrap();
                if claimed.is_empty() {
                    if tokio::time::timeout(Duration::from_secs(60), signal.notified())
                        .await
                        .is_err()
                    {
                        return;
                    }
                    continue;
                }
                let ids: Vec<i64> = claimed.iter().map(|c| c.id).collect();
                store
                    .mark_delivered(ids.into_iter().map(|id| (id, None)).collect())
                    .await
                    .unwrap();
                let names = claimed
                    .into_iter()
                    .map(|c| c.transaction.external_id)
                    .collect();
                found_tx.send(names).unwrap();
            }
        })
    };
    assert_eq!(next(&mut found).await.0, ["venmo:a"]);
    // Let the worker go to sleep on the signal.
    tokio::time::sleep(Duration::from_millis(100)).await;

    // Ingest wakes it.
    queue(&store, "m2", &["venmo:b", "venmo:c"]).await;
    let (names, waited) = next(&mut found).await;
    assert_eq!(names, ["venmo:b", "venmo:c"]);
    println!("woken by ingest after {waited:?}");

    // A replay wakes it.
    queue(&store, "m3", &["venmo:d"]).await;
    assert_eq!(next(&mut found).await.0, ["venmo:d"]);
    let d = id_of(&store, "venmo:d");
    on_writer(&store, move |conn| {
        conn.execute("UPDATE transactions SET state = 'dead' WHERE id = ?1", [d])
            .unwrap()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(store.replay(None).await.unwrap(), 1);
    assert_eq!(next(&mut found).await.0, ["venmo:d"]);

    // A re-parse that queues something new wakes it.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let m4 = store.ingest(message("m4", vec![])).await.unwrap().id;
    let r = store
        .apply_reparse(
            m4,
            MessageStatus::Queued,
            Some("venmo".to_owned()),
            None,
            vec![txn("venmo:e", -1)],
        )
        .await
        .unwrap();
    assert_eq!(r.new, 1);
    assert_eq!(next(&mut found).await.0, ["venmo:e"]);

    assert!(!worker.is_finished(), "the worker never timed out");
    worker.abort();
    let _ = worker.await;
    Arc::into_inner(store).unwrap().close().unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn apply_reparse_reconciles_by_external_id() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_in(&dir);
    let ids = [
        "venmo:a", "venmo:b", "venmo:c", "venmo:d", "venmo:e", "venmo:k", "venmo:v",
    ];
    let m1 = queue(&store, "m1", &ids).await;
    let id = |x: &str| id_of(&store, &format!("venmo:{x}"));
    let (a, b, c, v) = (id("a"), id("b"), id("c"), id("v"));
    store.claim_pending(10, MINUTE, Utc::now()).await.unwrap();
    // a: delivered with its Lunch Money id; v: delivered, id unknown (v1 may not say).
    store
        .mark_delivered(vec![(a, Some(1)), (v, None)])
        .await
        .unwrap();
    store
        .mark_dead(vec![(b, "400: bad amount".to_owned())])
        .await
        .unwrap();
    let retry_at = Utc::now() + secs(3600);
    store
        .mark_retry(vec![c], "HTTP 503".to_owned(), retry_at)
        .await
        .unwrap();
    // d's stored body is the same JSON written differently: still the same body.
    on_writer(&store, |conn| {
        let body: String = conn
            .query_row(
                "SELECT body FROM transactions WHERE external_id = 'venmo:d'",
                [],
                |row| row.get(0),
            )
            .unwrap();
        let value: serde_json::Value = serde_json::from_str(&body).unwrap();
        let mut reordered = serde_json::Map::new();
        for (k, v) in value.as_object().unwrap().iter().rev() {
            reordered.insert(k.clone(), v.clone());
        }
        let pretty = serde_json::to_string_pretty(&reordered).unwrap();
        assert_ne!(pretty, body);
        conn.execute(
            "UPDATE transactions SET body = ?1 WHERE external_id = 'venmo:d'",
            [pretty],
        )
        .unwrap();
    })
    .await;
    let before: Vec<StoredTransaction> = ids.iter().map(|x| row(&store, x)).collect();
    let signal = store.queued_signal();
    while tokio::time::timeout(Duration::from_millis(10), signal.notified())
        .await
        .is_ok()
    {}
    tokio::time::sleep(Duration::from_millis(2)).await;

    let mut a2 = txn("venmo:a", -100);
    a2.notes = Some("Pizza".to_owned());
    let b2 = txn("venmo:b", -101);
    let mut c2 = txn("venmo:c", -100);
    c2.payee = Some("Taylor B.".to_owned());
    c2.plugin = "venmo2".to_owned();
    let mut f = txn("venmo:f", -7);
    f.plugin = String::new(); // takes the message's plugin
    let reparsed_at = Utc::now();
    let result = store
        .apply_reparse(
            m1,
            MessageStatus::Queued,
            Some("venmo".to_owned()),
            Some("fixed template".to_owned()),
            vec![
                a2,
                b2.clone(),
                c2.clone(),
                txn("venmo:d", -100),
                txn("venmo:e", -100),
                f,
                txn("venmo:v", -999),
            ],
        )
        .await
        .unwrap();
    assert_eq!(
        result,
        ReparseResult {
            new: 1,
            updated: 3,
            unchanged: 2,
            voided: 0,
            changed_delivered: vec!["venmo:v".to_owned()],
        }
    );
    tokio::time::timeout(Duration::from_secs(1), signal.notified())
        .await
        .expect("queued something: signalled");

    // The delivered row with an id becomes an update for Lunch Money: pending, due now, new body,
    // its Lunch Money id kept (the outbox sends a PUT for it).
    let ra = row(&store, "venmo:a");
    assert_eq!(ra.transaction.notes.as_deref(), Some("Pizza"));
    assert_eq!(
        (ra.state.as_str(), ra.attempts, ra.lunchmoney_id),
        ("pending", 0, Some(1))
    );
    // The delivered row without an id cannot be updated: untouched, and reported.
    assert_eq!(row(&store, "venmo:v"), before[6]);
    // The dead one is revived with the new body, due now, attempts reset, error kept.
    let rb = row(&store, "venmo:b");
    assert_eq!(rb.transaction, b2);
    assert_eq!((rb.state.as_str(), rb.attempts), ("pending", 0));
    assert_eq!(rb.last_error.as_deref(), Some("400: bad amount"));
    let due = rb.next_attempt_at.clone().unwrap();
    assert!(due >= timestamp(reparsed_at) && due <= timestamp(Utc::now()));
    assert!(rb.updated_at > before[1].updated_at);
    // The pending one gets the new body (and plugin) and keeps its schedule.
    let rc = row(&store, "venmo:c");
    assert_eq!(rc.transaction, c2);
    assert_eq!((rc.state.as_str(), rc.attempts), ("pending", 1));
    assert_eq!(rc.next_attempt_at, Some(timestamp(retry_at)));
    assert_eq!(rc.last_error.as_deref(), Some("HTTP 503"));
    assert!(rc.updated_at > before[2].updated_at);
    // Same bodies: not rewritten; k, which the new parse no longer produces, is left alone.
    assert_eq!(row(&store, "venmo:d"), before[3]);
    assert_eq!(row(&store, "venmo:e"), before[4]);
    assert_eq!(row(&store, "venmo:k"), before[5]);
    // The new one is queued on this message.
    let rf = row(&store, "venmo:f");
    assert_eq!((rf.message_id, rf.state.as_str()), (m1, "pending"));
    assert_eq!(rf.transaction.plugin, "venmo");
    assert_eq!(store.transactions_of(m1).unwrap().len(), 8);

    let m = store.message(m1).unwrap().unwrap();
    assert_eq!(m.reason.as_deref(), Some("fixed template"));
    let parsed_at: String = store
        .reader()
        .query_row(
            "SELECT parsed_at FROM messages WHERE id = ?1",
            [m1],
            |row| row.get(0),
        )
        .unwrap();
    assert!(parsed_at >= timestamp(reparsed_at), "{parsed_at}");

    // The same re-parse again changes nothing and signals nothing.
    let again = store
        .apply_reparse(
            m1,
            MessageStatus::Queued,
            Some("venmo".to_owned()),
            None,
            vec![txn("venmo:d", -100), b2],
        )
        .await
        .unwrap();
    assert_eq!(
        again,
        ReparseResult {
            unchanged: 2,
            ..ReparseResult::default()
        }
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(50), signal.notified())
            .await
            .is_err()
    );

    // An unmatched message that a fixed parser now reads.
    let m2 = store.ingest(message("m2", vec![])).await.unwrap().id;
    assert_eq!(
        store.message(m2).unwrap().unwrap().status,
        MessageStatus::Unmatched
    );
    let r = store
        .apply_reparse(
            m2,
            MessageStatus::Queued,
            Some("venmo".to_owned()),
            None,
            vec![txn("venmo:g", -3)],
        )
        .await
        .unwrap();
    assert_eq!((r.new, r.updated, r.unchanged), (1, 0, 0));
    let m = store.message(m2).unwrap().unwrap();
    assert_eq!(
        (m.status, m.plugin.as_deref()),
        (MessageStatus::Queued, Some("venmo"))
    );
    assert_eq!(store.transactions_of(m2).unwrap().len(), 1);

    // Only a queued outcome touches transactions.
    let r = store
        .apply_reparse(
            m2,
            MessageStatus::Ignored,
            Some("venmo".to_owned()),
            Some("statement".to_owned()),
            vec![txn("venmo:h", -3), txn("venmo:g", -4)],
        )
        .await
        .unwrap();
    assert_eq!(r, ReparseResult::default());
    assert_eq!(store.transaction_by_external_id("venmo:h").unwrap(), None);
    assert_eq!(row(&store, "venmo:g").transaction, txn("venmo:g", -3));
    assert_eq!(
        store.message(m2).unwrap().unwrap().status,
        MessageStatus::Ignored
    );

    let err = store
        .apply_reparse(9999, MessageStatus::Queued, None, None, vec![])
        .await
        .expect_err("no such message");
    assert!(matches!(err, StoreError::NotFound(_)), "{err:?}");
    store.close().unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn message_ids_since_with_and_without_plugin() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_in(&dir);
    let t = Utc.with_ymd_and_hms(2024, 6, 1, 12, 0, 0).unwrap();
    let add = |key: &str, at: DateTime<Utc>, status: MessageStatus, plugin: Option<&str>| {
        let mut m = message(key, vec![]);
        m.received_at = at;
        m.status = status;
        m.plugin = plugin.map(str::to_owned);
        store.ingest(m)
    };
    use MessageStatus::*;
    let old = add("old", t - secs(2 * 86400), Queued, Some("venmo"))
        .await
        .unwrap()
        .id;
    let venmo = add("venmo", t - secs(3600), Queued, Some("venmo"))
        .await
        .unwrap()
        .id;
    let cash = add("cash", t, Queued, Some("cashapp")).await.unwrap().id;
    let unmatched = add("unmatched", t + secs(60), Unmatched, None)
        .await
        .unwrap()
        .id;
    let failed = add("failed", t + secs(120), Failed, Some("cashapp"))
        .await
        .unwrap()
        .id;
    let ignored = add("ignored", t + secs(180), Ignored, Some("cashapp"))
        .await
        .unwrap()
        .id;
    // Stored last, received earlier: the order is by reception.
    let late = add("late", t - secs(1800), Ignored, Some("venmo"))
        .await
        .unwrap()
        .id;

    let since = t - secs(86400);
    assert_eq!(
        store.message_ids_since(since, None).unwrap(),
        [venmo, late, cash, unmatched, failed, ignored]
    );
    assert_eq!(
        store.message_ids_since(since, Some("venmo")).unwrap(),
        [venmo, late, unmatched, failed]
    );
    assert_eq!(
        store.message_ids_since(since, Some("cashapp")).unwrap(),
        [cash, unmatched, failed, ignored]
    );
    assert_eq!(
        store.message_ids_since(t, None).unwrap(),
        [cash, unmatched, failed, ignored],
        "at or after"
    );
    assert_eq!(
        store
            .message_ids_since(t - secs(3 * 86400), Some("nobody"))
            .unwrap(),
        [unmatched, failed]
    );
    assert_eq!(
        store.message_ids_since(t - secs(3 * 86400), None).unwrap()[0],
        old
    );
    assert!(store
        .message_ids_since(t + secs(86400), None)
        .unwrap()
        .is_empty());
    store.close().unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_claimers_never_share_a_row_while_its_lease_holds() {
    const MESSAGES: usize = 20;
    const EACH: usize = 100;
    const WORKERS: usize = 4;
    const LEASE: Duration = Duration::from_millis(50);
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(open_in(&dir));
    for m in 0..MESSAGES {
        let transactions = (0..EACH)
            .map(|i| txn(&format!("venmo:{m}-{i}"), -1))
            .collect();
        store
            .ingest(message(&format!("load-{m}"), transactions))
            .await
            .unwrap();
    }
    let total = MESSAGES * EACH;
    assert_eq!(
        store.outbox_summary(Utc::now()).unwrap().pending,
        total as u64
    );

    // (row id, claim time in µs) for every claim handed out.
    let mut claims: Vec<(i64, i64)> = Vec::new();
    // A worker that claims and then dies: its rows must be delivered by the others once the
    // lease is over.
    let now = Utc::now();
    let abandoned = store.claim_pending(10, LEASE, now).await.unwrap();
    assert_eq!(abandoned.len(), 10);
    claims.extend(abandoned.iter().map(|c| (c.id, now.timestamp_micros())));

    let started = Instant::now();
    let mut handles = Vec::new();
    for worker in 0..WORKERS {
        let store = Arc::clone(&store);
        handles.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            let mut batches = 0usize;
            loop {
                let now = Utc::now();
                let claimed = store.claim_pending(25, LEASE, now).await.unwrap();
                if claimed.is_empty() {
                    if store.outbox_summary(Utc::now()).unwrap().pending == 0 {
                        return mine;
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    continue;
                }
                mine.extend(claimed.iter().map(|c| (c.id, now.timestamp_micros())));
                batches += 1;
                // Now and then a worker is slower than its lease.
                if (batches + worker) % 9 == 0 {
                    tokio::time::sleep(LEASE * 2).await;
                }
                let delivered = claimed.iter().map(|c| (c.id, None)).collect();
                store.mark_delivered(delivered).await.unwrap();
            }
        }));
    }
    for h in handles {
        claims.extend(h.await.unwrap());
    }
    let elapsed = started.elapsed();

    let summary = store.outbox_summary(Utc::now()).unwrap();
    assert_eq!(
        (summary.pending, summary.delivered, summary.claimed),
        (0, total as u64, 0)
    );
    let mut by_row: std::collections::HashMap<i64, Vec<i64>> = std::collections::HashMap::new();
    for (id, at) in &claims {
        by_row.entry(*id).or_default().push(*at);
    }
    assert_eq!(by_row.len(), total, "every row was claimed");
    let lease_us = LEASE.as_micros() as i64;
    let mut reclaimed = 0;
    for (id, times) in &mut by_row {
        times.sort_unstable();
        for pair in times.windows(2) {
            assert!(
                pair[1] - pair[0] >= lease_us,
                "row {id} claimed twice {}µs apart, within its lease",
                pair[1] - pair[0]
            );
        }
        reclaimed += times.len() - 1;
    }
    for c in &abandoned {
        assert!(
            by_row[&c.id].len() >= 2,
            "abandoned row {} re-claimed",
            c.id
        );
    }
    println!(
        "{} claims of {total} rows by {WORKERS} workers in {elapsed:?}; {reclaimed} re-claims \
         after a lease ran out",
        claims.len()
    );
    Arc::into_inner(store).unwrap().close().unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_checkpoint_thread_moves_the_wal_into_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_in(&dir);
    let db = dir.path().join("data/store.db");
    let autocheckpoint = Arc::new(std::sync::Mutex::new(-1i64));
    let seen = Arc::clone(&autocheckpoint);
    on_writer(&store, move |conn| {
        *seen.lock().unwrap() = conn
            .query_row("PRAGMA wal_autocheckpoint", [], |row| row.get(0))
            .unwrap();
    })
    .await;
    assert_eq!(
        *autocheckpoint.lock().unwrap(),
        0,
        "no checkpoints inside the writer's commits"
    );
    let before = std::fs::metadata(&db).unwrap().len();
    for i in 0..200 {
        let mut m = message(&format!("big-{i}"), vec![]);
        m.raw = vec![b'x'; 10_000];
        store.ingest(m).await.unwrap();
    }
    // With automatic checkpoints off, only the checkpoint thread copies pages into the file.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::fs::metadata(&db).unwrap().len() < before + 1_000_000 {
        assert!(
            std::time::Instant::now() < deadline,
            "the database file never grew: no checkpoint ran"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    store.close().unwrap();
    let wal = std::fs::metadata(db.with_extension("db-wal"))
        .map(|m| m.len())
        .unwrap_or(0);
    assert_eq!(wal, 0, "close still truncates the WAL");
}

fn void_of(external_id: &str) -> Transaction {
    Transaction {
        amount: Money::new(Amount::from_minor(0, 2), "usd"),
        payee: None,
        notes: None,
        tags: Vec::new(),
        void: true,
        ..txn(external_id, 0)
    }
}

fn state_of(store: &Store, external_id: &str) -> String {
    store
        .transaction_by_external_id(external_id)
        .unwrap()
        .expect("stored")
        .state
}

/// A void withdraws a transaction not yet sent, is remembered ahead of one not yet seen (so its
/// late insert is dropped), and turns a delivered one into a due delete.
#[tokio::test]
async fn voids_withdraw_forestall_or_delete_by_external_id() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_in(&dir);
    let lease = Duration::from_secs(60);

    // Pending, then voided: never claimed.
    store
        .ingest(message("a1", vec![txn("venmo:a", -500)]))
        .await
        .unwrap();
    let receipt = store
        .ingest(message("a2", vec![void_of("venmo:a")]))
        .await
        .unwrap();
    assert_eq!(receipt.voided_transactions, 1);
    assert_eq!(state_of(&store, "venmo:a"), "voided");

    // Voided first, then the insert: dropped.
    store
        .ingest(message("b1", vec![void_of("venmo:b")]))
        .await
        .unwrap();
    let receipt = store
        .ingest(message("b2", vec![txn("venmo:b", -700)]))
        .await
        .unwrap();
    assert_eq!(
        (receipt.new_transactions, receipt.updated_transactions),
        (0, 0)
    );
    assert_eq!(state_of(&store, "venmo:b"), "voided");
    assert!(store
        .claim_pending(10, lease, Utc::now())
        .await
        .unwrap()
        .is_empty());

    // Delivered with an id, then voided: claimed again as a void carrying the id.
    store
        .ingest(message("c1", vec![txn("venmo:c", -900)]))
        .await
        .unwrap();
    let claimed = store.claim_pending(10, lease, Utc::now()).await.unwrap();
    assert_eq!(claimed.len(), 1);
    store
        .mark_delivered(vec![(claimed[0].id, Some(4242))])
        .await
        .unwrap();
    store
        .ingest(message("c2", vec![void_of("venmo:c")]))
        .await
        .unwrap();
    let claimed = store.claim_pending(10, lease, Utc::now()).await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert!(claimed[0].transaction.void);
    assert_eq!(claimed[0].lunchmoney_id, Some(4242));
    store
        .mark_void_settled(vec![claimed[0].id], true)
        .await
        .unwrap();
    assert_eq!(state_of(&store, "venmo:c"), "deleted");
    // A late repeat of the settled transaction does not bring it back.
    store
        .ingest(message("c3", vec![txn("venmo:c", -950)]))
        .await
        .unwrap();
    assert_eq!(state_of(&store, "venmo:c"), "deleted");

    // Voided while its insert was in flight: the id that comes back makes it a due delete.
    store
        .ingest(message("d1", vec![txn("venmo:d", -100)]))
        .await
        .unwrap();
    let claimed = store.claim_pending(10, lease, Utc::now()).await.unwrap();
    store
        .ingest(message("d2", vec![void_of("venmo:d")]))
        .await
        .unwrap();
    store
        .mark_delivered(vec![(claimed[0].id, Some(77))])
        .await
        .unwrap();
    let claimed = store.claim_pending(10, lease, Utc::now()).await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert!(claimed[0].transaction.void);
    assert_eq!(claimed[0].lunchmoney_id, Some(77));

    let summary = store.outbox_summary(Utc::now()).unwrap();
    assert_eq!((summary.voided, summary.deleted), (2, 1));
    store.close().unwrap();
}
