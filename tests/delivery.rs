//! Delivery end to end: the real server (on 127.0.0.1:0, temporary store) posts what it accepts
//! to a strict fake Lunch Money, through failures, and exactly once.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use lm_ingest::settings::{ApiVersion, NameOrId, Secret, Settings, SourceMapping};
use lm_ingest::store::Store;
use serde_json::{json, Value};
use support::fake_lunchmoney::{seed, FakeHandle, FakeLunchMoney, Faults};
use support::*;

const WAIT: Duration = Duration::from_secs(30);

fn deliver_to(fake: &FakeHandle) -> impl FnOnce(&mut Settings) + '_ {
    move |s: &mut Settings| {
        s.lunchmoney.token = Secret::new(seed::TOKEN);
        s.lunchmoney.base_url = Some(fake.base_url());
        s.lunchmoney.max_backoff_secs = 1;
        s.lunchmoney.sources.insert(
            "venmo".into(),
            SourceMapping {
                account: Some(NameOrId::Name("Venmo".into())),
                tags: vec!["imported".into()],
                ..Default::default()
            },
        );
        s.lunchmoney.sources.insert(
            "testbank".into(),
            SourceMapping {
                account: Some(NameOrId::Id(seed::CHECKING)),
                category: Some(NameOrId::Name("Groceries".into())),
                ..Default::default()
            },
        );
        s.admin.token = Secret::new(ADMIN);
    }
}

async fn post_hook(app: &TestApp, id: &str, amount: &str, currency: Option<&str>) -> Value {
    let mut data = json!({"id": id, "amount": amount, "date": "2024-03-08", "payee": "Bakery"});
    if let Some(c) = currency {
        data["currency"] = json!(c);
    }
    let response = app
        .client
        .post(app.url("/hooks/testbank"))
        .bearer_auth(TOKEN)
        .json(&json!({"type": "transaction.created", "data": data}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

async fn post_email(app: &TestApp, raw: Vec<u8>) -> Value {
    let response = app
        .client
        .post(app.url("/inbound/email"))
        .bearer_auth(TOKEN)
        .body(raw)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

fn assert_each_once(fake: &FakeHandle) {
    let mut seen: HashMap<String, usize> = HashMap::new();
    for tx in fake.transactions() {
        *seen
            .entry(tx.external_id.clone().unwrap_or_default())
            .or_default() += 1;
    }
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "inserted more than once: {twice:?}");
}

const ADMIN: &str = "admin-token-0123456789";

/// The outbox report, as an operator sees it.
async fn outbox(app: &TestApp) -> Value {
    let response = app
        .client
        .get(app.url("/admin/outbox"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    response.json().await.unwrap()
}

/// Polls the outbox report until `done` holds for it, and returns it.
async fn wait_outbox(app: &TestApp, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let report = outbox(app).await;
        if done(&report) {
            return report;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "outbox never reached the expected state: {report}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the store says every transaction is delivered (the fake may have them first).
async fn wait_all_delivered(app: &TestApp, expected: u64) {
    wait_outbox(app, |r| {
        r["counts"]["delivered"] == expected && r["counts"]["pending"] == 0
    })
    .await;
}

#[tokio::test]
async fn accepted_messages_are_delivered_once_with_their_mapping() {
    let fake = FakeLunchMoney::start();
    let app = spawn_app_with(deliver_to(&fake)).await;
    for name in [
        "old-you-paid.eml",
        "new-paid-you.eml",
        "fwd-gmail.eml",
        "accents-emoji.eml",
    ] {
        post_email(&app, fixture(name)).await;
    }
    for i in 0..20 {
        post_hook(&app, &format!("h{i}"), "-4.20", None).await;
    }
    let stored = fake.wait_for_transactions(24, WAIT).await;
    assert_eq!(stored.len(), 24);
    wait_all_delivered(&app, 24).await;
    assert_each_once(&fake);

    let paid = fake
        .transaction_by_external_id("venmo:3981736402915738461")
        .unwrap();
    assert_eq!(
        paid.debit_amount, "25.0000",
        "money out is a positive debit in v2"
    );
    assert_eq!(paid.manual_account_id, Some(seed::VENMO));
    assert_eq!(paid.payee.as_deref(), Some("Taylor Brooks"));
    assert_eq!(paid.date, "2024-03-01");
    assert!(paid.tag_ids.contains(&seed::TAG_VENMO));
    let imported = fake
        .tags()
        .into_iter()
        .find(|t| t.name == "imported")
        .expect("missing tag created");
    assert!(paid.tag_ids.contains(&imported.id));
    let check: Value = app.admin_json("/admin/check", ADMIN).await;
    assert_eq!(check["ok"], true, "{check}");
    let findings = check["findings"].to_string();
    assert!(findings.contains("token accepted"), "{check}");
    assert!(
        findings.contains(&format!(
            "source venmo: account id {}, category none",
            seed::VENMO
        )),
        "{check}"
    );
    assert!(
        findings.contains(&format!(
            "source testbank: account id {}, category id {}",
            seed::CHECKING,
            seed::GROCERIES
        )),
        "{check}"
    );
    let received = fake
        .transaction_by_external_id("venmo:4520938716640285193")
        .unwrap();
    assert_eq!(
        received.debit_amount, "-386.7000",
        "money in is negative in v2"
    );
    let hook = fake.transaction_by_external_id("testbank:h0").unwrap();
    assert_eq!(
        (hook.manual_account_id, hook.category_id),
        (Some(seed::CHECKING), Some(seed::GROCERIES))
    );
    assert!(fake.rejections().is_empty(), "{:?}", fake.rejections());

    // A message posted again is a duplicate and nothing more is sent.
    let again = post_email(&app, fixture("old-you-paid.eml")).await;
    assert_eq!(again["status"], "duplicate");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(fake.transactions().len(), 24);

    let store_path = app.store_path();
    let _dir = app.stop().await;
    let store = Store::open(&store_path).unwrap();
    let delivered = store.transactions_in_state("delivered", 100).unwrap();
    assert_eq!(delivered.len(), 24);
    assert!(
        delivered.iter().all(|t| t.lunchmoney_id.is_some()),
        "the Lunch Money id is recorded"
    );
}

#[tokio::test]
async fn failures_are_retried_until_lunch_money_has_everything_once() {
    let fake = FakeLunchMoney::seeded()
        .faults(Faults {
            fail_next_inserts: 2,
            throttle_next: 1,
            throttle_retry_after_secs: 1,
            cut_next_inserts: 2,
            ..Default::default()
        })
        .start();
    let app = spawn_app_with(deliver_to(&fake)).await;
    for i in 0..30 {
        post_hook(&app, &format!("r{i}"), "-1.00", None).await;
    }
    fake.wait_for_transactions(30, WAIT).await;
    wait_all_delivered(&app, 30).await;
    assert_eq!(fake.transactions().len(), 30);
    assert_each_once(&fake);
    let inserts = fake.request_count("POST /v2/transactions");
    assert!(
        inserts >= 4,
        "the faults were exercised ({inserts} insert requests)"
    );
    let violations: Vec<_> = fake
        .rejections()
        .into_iter()
        .filter(|r| !r.reason.starts_with("injected"))
        .collect();
    assert!(
        violations.is_empty(),
        "no request broke the API's rules: {violations:?}"
    );
}

#[tokio::test]
async fn a_lost_answer_is_not_a_duplicate_even_across_a_restart() {
    let fake = FakeLunchMoney::seeded()
        .faults(Faults {
            cut_next_inserts: 1,
            ..Default::default()
        })
        .start();
    let app = spawn_app_with(deliver_to(&fake)).await;
    for i in 0..5 {
        post_hook(&app, &format!("l{i}"), "-2.00", None).await;
    }
    // The batch lands, the answer is lost; stop before the retry.
    fake.wait_for_transactions(5, WAIT).await;
    let settings = {
        let mut s = settings_for(app.dir.path());
        deliver_to(&fake)(&mut s);
        s
    };
    let dir = app.stop().await;
    let app = spawn_in(dir, settings);
    wait_all_delivered(&app, 5).await;
    assert_eq!(fake.transactions().len(), 5);
    assert_each_once(&fake);
    app.stop().await;
}

#[tokio::test]
async fn permanent_errors_dead_letter_only_their_transactions_and_replay_brings_them_back() {
    let fake = FakeLunchMoney::start();
    let app = spawn_app_with(deliver_to(&fake)).await;
    for i in 0..6 {
        post_hook(&app, &format!("p{i}"), "-3.00", None).await;
    }
    // A currency Lunch Money does not support: refused for this transaction only.
    post_hook(&app, "bad", "-3.00", Some("XYZ")).await;
    fake.wait_for_transactions(6, WAIT).await;
    let report = wait_outbox(&app, |r| {
        r["counts"]["dead"] == 1 && r["counts"]["delivered"] == 6
    })
    .await;
    assert_eq!(report["dead"][0]["external_id"], "testbank:bad");
    assert!(
        report["dead"][0]["error"]
            .as_str()
            .unwrap()
            .contains("currency"),
        "{report}"
    );
    assert!(fake.transaction_by_external_id("testbank:bad").is_none());

    let unauthorized = app
        .client
        .post(app.url("/admin/replay"))
        .send()
        .await
        .unwrap();
    assert_eq!(unauthorized.status(), 401);
    let replayed: Value = app
        .client
        .post(app.url("/admin/replay"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(replayed["replayed"], 1);
    // Sent again and still refused, so back in the dead letter.
    let refusals = || {
        fake.rejections()
            .into_iter()
            .filter(|r| r.reason.contains("currency"))
            .count()
    };
    assert!(
        fake.wait_until(WAIT, |_| refusals() == 2).await,
        "replayed transaction was sent again"
    );
    wait_outbox(&app, |r| {
        r["counts"]["dead"] == 1 && r["counts"]["pending"] == 0
    })
    .await;
    assert_eq!(fake.transactions().len(), 6);
}

#[tokio::test]
async fn v1_on_request() {
    let fake = FakeLunchMoney::start();
    let app = spawn_app_with(|s| {
        deliver_to(&fake)(s);
        s.lunchmoney.api = ApiVersion::V1;
    })
    .await;
    post_email(&app, fixture("old-you-paid.eml")).await;
    post_hook(&app, "v1a", "12.00", None).await;
    let stored = fake.wait_for_transactions(2, WAIT).await;
    assert!(stored
        .iter()
        .all(|t| t.api == support::fake_lunchmoney::Api::V1));
    let paid = fake
        .transaction_by_external_id("venmo:3981736402915738461")
        .unwrap();
    assert_eq!(
        paid.amount, "-25.00",
        "v1 takes our sign with debit_as_negative"
    );
    assert!(paid.flags.debit_as_negative);
    assert_eq!(paid.manual_account_id, Some(seed::VENMO));
    assert!(fake.rejections().is_empty(), "{:?}", fake.rejections());
    wait_all_delivered(&app, 2).await;
}

#[tokio::test]
async fn without_a_token_nothing_is_posted_and_the_outbox_shows_what_would_be() {
    let fake = FakeLunchMoney::start();
    let app = spawn_app_with(|s| {
        deliver_to(&fake)(s);
        s.lunchmoney.token = Secret::default();
    })
    .await;
    post_email(&app, fixture("old-you-paid.eml")).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(fake.requests().len(), 0);
    let report = outbox(&app).await;
    assert_eq!(report["dry_run"], true);
    assert_eq!(report["counts"]["pending"], 1);
    let would = &report["pending"][0]["would_post"];
    assert_eq!(would["amount"], "-25.00");
    assert_eq!(would["account"], "Venmo");
    assert_eq!(would["tags"], json!(["venmo", "imported"]));
}

#[tokio::test]
async fn reparse_runs_a_fixed_parser_over_stored_input() {
    let fake = FakeLunchMoney::start();
    // First run: no plugin claims the mail, so it is kept as unmatched.
    let app = spawn_app_with(|s| s.lunchmoney.token = Secret::default()).await;
    let mail = b"From: Example Pay <notify@examplepay.test>\r\nSubject: You sent $15 to Ana Ruiz\r\nDate: Mon, 04 Mar 2024 18:00:00 +0000\r\nMessage-ID: <pay-1@examplepay.test>\r\n\r\nYou sent $15.00 to Ana Ruiz for tacos.\r\nIdentifier: #D9K2LQ\r\n".to_vec();
    assert_eq!(post_email(&app, mail).await["status"], "unmatched");
    let dir = app.stop().await;

    // The fix: a rule file for that sender.
    std::fs::write(
        dir.path().join("parsers/examplepay.toml"),
        r#"
kind = "email"
tags = ["examplepay"]
[claim]
senders = ["examplepay.test"]
[[template]]
name = "sent"
require = [
  { in = "body", regex = 'You sent \$(?P<amount>[\d.,]+) to (?P<payee>.+?) for (?P<notes>.+?)\.' },
  { in = "body", regex = 'Identifier: #(?P<id>\w+)' },
]
sign = "-"
"#,
    )
    .unwrap();
    let store_path = dir.path().join("data/lm-ingest.db");
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_lm-ingest"))
            .env_remove("LM_INGEST_CONFIG")
            .env("LM_INGEST__STORE__PATH", &store_path)
            .env("LM_INGEST__PARSERS__DIR", dir.path().join("parsers"))
            .args(args)
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<Value>(&out.stdout).unwrap()
    };
    let preview = run(&["reparse", "--since", "2020-01-01", "--dry-run"]);
    assert_eq!(preview["new"], 1, "{preview}");
    assert_eq!(preview["changes"][0]["after"]["plugin"], "examplepay");
    assert_eq!(preview["changes"][0]["before"]["status"], "unmatched");
    let preview_again = run(&[
        "reparse",
        "--since",
        "2020-01-01",
        "--plugin",
        "examplepay",
        "--dry-run",
    ]);
    assert_eq!(preview_again["new"], 1, "a dry run changes nothing");
    let applied = run(&["reparse", "--since", "2020-01-01", "--plugin", "examplepay"]);
    assert_eq!(applied["new"], 1);
    let again = run(&["reparse", "--since", "2020-01-01"]);
    assert_eq!(
        (
            again["new"].clone(),
            again["changes"].as_array().unwrap().len()
        ),
        (json!(0), 0),
        "{again}"
    );
    let outbox = run(&["outbox"]);
    assert_eq!(outbox["counts"]["pending"], 1);
    assert_eq!(
        outbox["pending"][0]["would_post"]["external_id"],
        "examplepay:D9K2LQ"
    );

    // With a token, the restarted service delivers it.
    let mut settings = settings_for(dir.path());
    deliver_to(&fake)(&mut settings);
    let app = spawn_in(dir, settings);
    let stored = fake.wait_for_transactions(1, WAIT).await;
    assert_eq!(stored[0].external_id.as_deref(), Some("examplepay:D9K2LQ"));
    assert_eq!(stored[0].debit_amount, "15.0000");
    app.stop().await;
    let _ = Store::open(&store_path).unwrap();
}

#[tokio::test]
async fn a_changed_transaction_updates_lunch_money_instead_of_inserting_again() {
    let fake = FakeLunchMoney::start();
    let app = spawn_app_with(deliver_to(&fake)).await;
    // Pending at first…
    let first = post_hook(&app, "settle-1", "-5.00", None).await;
    assert_eq!(first["new_transactions"], 1);
    fake.wait_for_transactions(1, WAIT).await;
    wait_all_delivered(&app, 1).await;
    let lunchmoney_id = fake
        .transaction_by_external_id("testbank:settle-1")
        .unwrap()
        .id;
    // …then settled for a different amount: the same external_id, new content.
    let settled = post_hook(&app, "settle-1", "-5.75", None).await;
    assert_eq!(
        (
            settled["new_transactions"].clone(),
            settled["updated_transactions"].clone()
        ),
        (json!(0), json!(1))
    );
    let updated = fake
        .wait_until(WAIT, |f| {
            f.transaction_by_external_id("testbank:settle-1")
                .is_some_and(|t| t.debit_amount == "5.7500")
        })
        .await;
    assert!(updated, "{:?}", fake.transactions());
    assert_eq!(
        fake.transactions().len(),
        1,
        "updated, never inserted twice"
    );
    assert_eq!(
        fake.transaction_by_external_id("testbank:settle-1")
            .unwrap()
            .id,
        lunchmoney_id
    );
    assert_eq!(fake.request_count("PUT /v2/transactions/{id}"), 1);
    let violations: Vec<_> = fake.rejections();
    assert!(violations.is_empty(), "{violations:?}");
    // The same content again changes nothing.
    let again = post_hook(&app, "settle-1", "-5.75", None).await;
    assert_eq!(again["status"], "duplicate");
    wait_all_delivered(&app, 1).await;
}

#[tokio::test]
async fn reported_balances_update_the_mapped_account_when_asked() {
    let fake = FakeLunchMoney::start();
    let app = spawn_app_with(|s| {
        deliver_to(&fake)(s);
        s.lunchmoney
            .sources
            .get_mut("testbank")
            .unwrap()
            .update_balance = Some(true);
    })
    .await;
    for (id, amount, balance, date) in [
        ("b1", "-10.00", "120.50", "2024-03-08"),
        ("b2", "-20.50", "100.00", "2024-03-09"),
    ] {
        let event = json!({"type": "transaction.created", "data": {"id": id, "amount": amount, "date": date, "balance": balance}});
        let response = app
            .client
            .post(app.url("/hooks/testbank"))
            .bearer_auth(TOKEN)
            .json(&event)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    fake.wait_for_transactions(2, WAIT).await;
    let updated = fake
        .wait_until(WAIT, |f| {
            f.manual_account(seed::CHECKING)
                .is_some_and(|a| a.balance == "100.0000")
        })
        .await;
    assert!(updated, "{:?}", fake.manual_account(seed::CHECKING));
    assert!(fake.rejections().is_empty(), "{:?}", fake.rejections());
    let account = fake.manual_account(seed::CHECKING).unwrap();
    let last = account.raw_updates.last().unwrap();
    assert_eq!(
        (last["balance"].clone(), last["balance_as_of"].clone()),
        (json!("100.00"), json!("2024-03-09")),
        "the newest balance, as of its transaction's date"
    );
    // The Venmo account is mapped without update_balance: never touched.
    assert!(fake
        .manual_account(seed::VENMO)
        .unwrap()
        .raw_updates
        .is_empty());
}
