//! SIGKILL under load: every acknowledged message reaches Lunch Money exactly once, every other
//! message at most once.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::child::ChildServer;
use crate::support::fake_lunchmoney::{seed, FakeHandle, FakeLunchMoney};
use crate::support::{fixture, TOKEN};
use crate::Scale;
use lm_ingest::transaction::external_id;

/// One message of the load: where it goes, its body, and the transaction it must become.
pub struct Message {
    pub path: &'static str,
    pub content_type: &'static str,
    pub body: Vec<u8>,
    pub external_id: String,
}

/// Message `i` of a run: even ones are Venmo emails, odd ones bank webhooks, each with its own
/// transaction id (and Message-ID), so each must become exactly one transaction.
pub fn message(run: &str, i: usize) -> Message {
    if i % 2 == 0 {
        let template = String::from_utf8(fixture("old-you-paid.eml")).unwrap();
        let payment_id = format!("{}", 5_000_000_000_000_000_000u64 + i as u64);
        let body = template
            .replace("3981736402915738461", &payment_id)
            .replace(
                "1709345529871.4418230.JavaMail.venmo.a7f3c2e1@venmo.com",
                &format!("{run}.{i}@venmo.com"),
            )
            .into_bytes();
        Message {
            path: "/inbound/email",
            content_type: "message/rfc822",
            body,
            external_id: external_id("venmo", &payment_id),
        }
    } else {
        let id = format!("{run}-{i}");
        let body = serde_json::json!({
            "type": "transaction.created",
            "data": {"id": id, "amount": format!("-{}.{:02}", 1 + i % 50, i % 100), "date": "2024-03-08", "payee": "Bakery"}
        });
        Message {
            path: "/hooks/testbank",
            content_type: "application/json",
            body: serde_json::to_vec(&body).unwrap(),
            external_id: external_id("testbank", &id),
        }
    }
}

/// `[lunchmoney]` for a child server delivering to `fake`.
pub fn lunchmoney_toml(fake: &FakeHandle, batch_size: usize) -> String {
    format!(
        r#"
[lunchmoney]
token = "{token}"
base_url = "{base}"
max_backoff_secs = 1
requests_per_minute = 6000
batch_size = {batch_size}
timeout_secs = 5
[lunchmoney.sources.venmo]
account = "Venmo"
[lunchmoney.sources.testbank]
account = {checking}
"#,
        token = seed::TOKEN,
        base = fake.base_url(),
        checking = seed::CHECKING,
    )
}

/// xorshift64, seeded per run (printed, and settable with `LM_INGEST_RELIABILITY_SEED`).
pub struct Rng(u64);

impl Rng {
    pub fn from_env() -> Rng {
        let seed = std::env::var("LM_INGEST_RELIABILITY_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
                    | 1
            });
        println!("RELIABILITY seed {seed} (LM_INGEST_RELIABILITY_SEED to repeat)");
        Rng(seed)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x % n.max(1)
    }
}

/// Posts `message` until it is acknowledged (2xx), at most `attempts` times, as a provider that
/// retries would. Returns whether it was.
async fn post_until_acked(
    client: &reqwest::Client,
    base: &str,
    message: &Message,
    attempts: usize,
) -> bool {
    for attempt in 0..attempts {
        let sent = client
            .post(format!("{base}{}", message.path))
            .bearer_auth(TOKEN)
            .header("Content-Type", message.content_type)
            .body(message.body.clone())
            .send()
            .await;
        if let Ok(response) = sent {
            let status = response.status();
            // Read the whole answer: a connection cut mid-answer is no acknowledgement.
            if response.bytes().await.is_ok() && status.is_success() {
                return true;
            }
            assert!(
                status.is_server_error() || status.is_success(),
                "a good message was refused with {status}"
            );
        }
        tokio::time::sleep(Duration::from_millis(20 * (attempt as u64 + 1))).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_under_load_loses_and_duplicates_nothing() {
    let scale = Scale::from_env();
    let mut rng = Rng::from_env();
    let fake = FakeLunchMoney::start();
    let mut server = ChildServer::new(&lunchmoney_toml(&fake, 50));
    server.start().await;
    let base = server.url("");
    let started = Instant::now();

    let total = scale.crash_messages;
    let messages: Arc<Vec<Message>> = Arc::new((0..total).map(|i| message("crash", i)).collect());
    let next = Arc::new(AtomicUsize::new(0));
    let acked: Arc<Vec<std::sync::atomic::AtomicBool>> = Arc::new(
        (0..total)
            .map(|_| std::sync::atomic::AtomicBool::new(false))
            .collect(),
    );
    let mut senders = Vec::new();
    for _ in 0..8 {
        let (messages, next, acked, base) =
            (messages.clone(), next.clone(), acked.clone(), base.clone());
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        senders.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(message) = messages.get(i) else {
                    break;
                };
                if post_until_acked(&client, &base, message, 6).await {
                    acked[i].store(true, Ordering::SeqCst);
                }
            }
        }));
    }

    // Kill k happens once the load is past k/(K+1) of its messages, after a random few ms more,
    // and the server stays down for a random while (requests meanwhile fail and are retried).
    for k in 1..=scale.kills {
        let mark = k * total / (scale.kills + 1);
        while next.load(Ordering::SeqCst) < mark {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        tokio::time::sleep(Duration::from_millis(rng.below(40))).await;
        server.kill();
        tokio::time::sleep(Duration::from_millis(rng.below(150))).await;
        server.start().await;
    }
    for sender in senders {
        sender.await.unwrap();
    }
    let load_time = started.elapsed();

    // Drain: the outbox empties and nothing is left in flight.
    let deadline =
        Instant::now() + Duration::from_secs(if scale.name == "large" { 900 } else { 180 });
    loop {
        let report = server.outbox().await;
        let counts = &report["counts"];
        if counts["pending"] == 0 && counts["claimed"] == 0 {
            assert_eq!(counts["dead"], 0, "dead letters: {report}");
            break;
        }
        assert!(Instant::now() < deadline, "outbox never drained: {report}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let mut delivered: HashMap<String, usize> = HashMap::new();
    for tx in fake.transactions() {
        *delivered
            .entry(tx.external_id.unwrap_or_default())
            .or_default() += 1;
    }
    let (mut acked_count, mut lost, mut duplicated, mut unacked_delivered) = (0, 0, 0, 0);
    for (i, message) in messages.iter().enumerate() {
        let copies = delivered.get(&message.external_id).copied().unwrap_or(0);
        if acked[i].load(Ordering::SeqCst) {
            acked_count += 1;
            if copies == 0 {
                lost += 1;
                eprintln!("lost: message {i} ({})", message.external_id);
            }
        } else if copies == 1 {
            unacked_delivered += 1;
        }
        if copies > 1 {
            duplicated += 1;
            eprintln!(
                "duplicated x{copies}: message {i} ({})",
                message.external_id
            );
        }
    }
    let strangers = delivered
        .keys()
        .filter(|id| !messages.iter().any(|m| &m.external_id == *id))
        .count();
    let panics = server.panics();
    let violations = fake.violations();
    println!(
        "RELIABILITY crash ({}): messages sent {total}, acked {acked_count}, kills {}, starts {}, \
         delivered {}, unacked but delivered {unacked_delivered}, lost {lost}, duplicated \
         {duplicated}, unknown {strangers}, API violations {}, panics {}, load {:.1} s, \
         insert requests {}",
        scale.name,
        scale.kills,
        server.starts,
        delivered.values().sum::<usize>(),
        violations.len(),
        panics.len(),
        load_time.as_secs_f64(),
        fake.request_count("POST /v2/transactions"),
    );
    assert_eq!(lost, 0, "acknowledged messages never delivered");
    assert_eq!(duplicated, 0, "messages delivered more than once");
    assert_eq!(strangers, 0, "transactions nobody sent");
    assert!(
        violations.is_empty(),
        "requests that broke the API's rules: {violations:#?}"
    );
    assert!(panics.is_empty(), "the server panicked: {panics:#?}");
    assert!(
        acked_count > 0,
        "nothing was acknowledged: the test proved nothing"
    );
    server.stop();
}

/// Regression (found by the SIGKILL test): rows claimed by a server that was killed mid-delivery
/// waited for their 10-minute lease to run out after the restart. A restarted server now sends
/// them at once.
#[tokio::test]
async fn claims_left_by_a_killed_server_are_delivered_at_restart_not_after_the_lease() {
    use crate::support::{settings_for, spawn_in};
    use lm_ingest::settings::{NameOrId, Secret, SourceMapping};
    use lm_ingest::store::Store;

    // A dry run (no Lunch Money token) stores and queues without delivering.
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_in(tempfile::tempdir().unwrap(), settings_for(dir.path()));
    let hook = message("lease", 1);
    let response = app
        .client
        .post(app.url(hook.path))
        .bearer_auth(TOKEN)
        .header("Content-Type", hook.content_type)
        .body(hook.body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    app.stop().await;

    // What a server SIGKILLed mid-delivery leaves behind: a claim with most of its lease to run.
    let store = Store::open(&settings_for(dir.path()).store.path).unwrap();
    let claimed = store
        .claim_pending(10, Duration::from_secs(600), chrono::Utc::now())
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    tokio::task::spawn_blocking(move || store.close().unwrap())
        .await
        .unwrap();

    let fake = FakeLunchMoney::start();
    let mut settings = settings_for(dir.path());
    settings.lunchmoney.token = Secret::new(seed::TOKEN);
    settings.lunchmoney.base_url = Some(fake.base_url());
    settings.lunchmoney.sources.insert(
        "testbank".into(),
        SourceMapping {
            account: Some(NameOrId::Id(seed::CHECKING)),
            ..Default::default()
        },
    );
    let app = spawn_in(tempfile::tempdir().unwrap(), settings);
    let arrived = fake
        .wait_until(Duration::from_secs(10), |f| f.transactions().len() == 1)
        .await;
    app.stop().await;
    assert!(
        arrived,
        "the claimed transaction was not sent after the restart"
    );
    assert_eq!(
        fake.transactions()[0].external_id.as_deref(),
        Some(hook.external_id.as_str())
    );
}
