//! Lunch Money misbehaves: 30% of inserts answer 500, 10% of stored batches lose their answer
//! (the connection is cut), 429 bursts with `Retry-After`, and slow answers. Every transaction
//! still arrives exactly once and no request breaks the API's rules.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::crash::{message, Message};
use crate::support::fake_lunchmoney::{seed, FakeLunchMoney, Faults};
use crate::support::{spawn_app_with, TOKEN};
use crate::Scale;
use lm_ingest::settings::{NameOrId, Secret, SourceMapping};

const ADMIN: &str = "faults-admin-token-0123456789";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_transaction_arrives_once_through_500s_cuts_429s_and_latency() {
    let scale = Scale::from_env();
    let fake = FakeLunchMoney::seeded()
        .faults(Faults {
            insert_failure_rate: 0.3,
            cut_rate: 0.1,
            // At least one of each, whatever the dice say and however fast the run drains.
            fail_next_inserts: 1,
            cut_next_inserts: 1,
            throttle_next: 2,
            throttle_retry_after_secs: 1,
            slow_rate: 0.1,
            slow_delay: Duration::from_millis(300),
            ..Faults::default()
        })
        .start();
    let fake = Arc::new(fake);
    let app = spawn_app_with(|s| {
        s.lunchmoney.token = Secret::new(seed::TOKEN);
        s.lunchmoney.base_url = Some(fake.base_url());
        s.lunchmoney.max_backoff_secs = 1;
        s.lunchmoney.requests_per_minute = 6000;
        // Small batches: many inserts, so many chances for each fault.
        s.lunchmoney.batch_size = 5;
        s.lunchmoney.timeout_secs = 5;
        for (source, account) in [("venmo", seed::VENMO), ("testbank", seed::CHECKING)] {
            s.lunchmoney.sources.insert(
                source.into(),
                SourceMapping {
                    account: Some(NameOrId::Id(account)),
                    ..Default::default()
                },
            );
        }
        s.admin.token = Secret::new(ADMIN);
    })
    .await;

    // 429 bursts: every few seconds the next two requests are told to wait a second. (Each 429
    // pauses the client for its Retry-After, so bursts much closer together throttle forever.)
    let stop_bursts = Arc::new(AtomicBool::new(false));
    let bursts = {
        let (fake, stop) = (Arc::clone(&fake), Arc::clone(&stop_bursts));
        tokio::spawn(async move {
            let mut fired = 0;
            while !stop.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_secs(4)).await;
                fake.throttle_next(2, 1);
                fired += 1;
            }
            fired
        })
    };

    let messages: Vec<Message> = (0..scale.fault_transactions)
        .map(|i| message("faults", i))
        .collect();
    let started = Instant::now();
    for chunk in messages.chunks(8) {
        let posts: Vec<_> = chunk
            .iter()
            .map(|m| {
                tokio::spawn(
                    app.client
                        .post(app.url(m.path))
                        .bearer_auth(TOKEN)
                        .header("Content-Type", m.content_type)
                        .body(m.body.clone())
                        .send(),
                )
            })
            .collect();
        for post in posts {
            assert_eq!(post.await.unwrap().unwrap().status(), 200);
        }
    }

    let deadline =
        Instant::now() + Duration::from_secs(if scale.name == "large" { 900 } else { 180 });
    loop {
        let report: serde_json::Value = app.admin_json("/admin/outbox", ADMIN).await;
        let counts = &report["counts"];
        if counts["pending"] == 0 && counts["claimed"] == 0 {
            assert_eq!(counts["dead"], 0, "dead letters: {report}");
            break;
        }
        assert!(Instant::now() < deadline, "outbox never drained: {report}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let drained = started.elapsed();
    stop_bursts.store(true, Ordering::SeqCst);
    let burst_count = bursts.await.unwrap();

    let mut copies: HashMap<String, usize> = HashMap::new();
    for tx in fake.transactions() {
        *copies
            .entry(tx.external_id.unwrap_or_default())
            .or_default() += 1;
    }
    let lost = messages
        .iter()
        .filter(|m| !copies.contains_key(&m.external_id))
        .count();
    let duplicated = copies.values().filter(|n| **n > 1).count();
    let injected = fake.injected_faults();
    let violations = fake.violations();
    println!(
        "RELIABILITY faults ({}): transactions {}, delivered {}, lost {lost}, duplicated \
         {duplicated}, insert requests {}, injected {injected:?} (429 bursts {burst_count}), API \
         violations {}, drained in {:.1} s",
        scale.name,
        messages.len(),
        copies.values().sum::<usize>(),
        fake.request_count("POST /v2/transactions"),
        violations.len(),
        drained.as_secs_f64(),
    );
    app.stop().await;
    assert_eq!(lost, 0, "transactions never delivered");
    assert_eq!(duplicated, 0, "transactions delivered more than once");
    assert_eq!(copies.len(), messages.len(), "transactions nobody sent");
    assert!(
        violations.is_empty(),
        "requests that broke the API's rules: {violations:#?}"
    );
    for kind in ["500", "cut", "429", "slow"] {
        assert!(
            injected.get(kind).copied().unwrap_or(0) > 0,
            "no {kind} fault fired: {injected:?}"
        );
    }
}
