//! Sources linked in Lunch Money through Plaid, end to end: the real server (127.0.0.1:0,
//! temporary store) against the strict fake Lunch Money, which answers 425 to a second fetch of
//! an account within its cooldown. An alert never inserts a transaction; it triggers one Plaid
//! fetch per account per interval, shared by every alert due, and the interval holds across a
//! restart because it is kept in the store.
//!
//! The interval is 1 s here (settings built in code skip the 60 s minimum that configuration
//! files are held to) and the fake's cooldown 0.9 s, so a fetch the service allows is one the
//! fake allows, and no test waits a real minute.

mod support;

use std::time::Duration;

use lm_ingest::settings::{ApiVersion, NameOrId, Secret, Settings, SourceMapping};
use serde_json::{json, Value};
use support::fake_lunchmoney::{seed, FakeHandle, FakeLunchMoney, Outcome};
use support::*;

const ADMIN: &str = "admin-token-0123456789";
const WAIT: Duration = Duration::from_secs(20);
const FETCH_V2: &str = "POST /v2/plaid_accounts/fetch";

/// A bank whose events name the bank's own account (`/data/account`).
const PLAID_BANK_RULES: &str = r#"
kind = "webhook"
currency = "usd"
[[template]]
name = "created"
require = [
  { pointer = "/data/id", capture = "id" },
  { pointer = "/data/amount", capture = "amount" },
  { pointer = "/data/date", capture = "date" },
]
optional = [{ pointer = "/data/account", capture = "account" }]
"#;

/// `plaidbank`: its card (`card`) is linked through Plaid as the fake's `PLAID_CARD`, its
/// checking account (`chk`) is a manual account and is inserted as usual.
fn plaid_settings(dir: &std::path::Path, fake: Option<&FakeHandle>) -> Settings {
    let mut s = settings_for(dir);
    let parsers = s.parsers.dir.clone().unwrap();
    std::fs::write(parsers.join("plaidbank.toml"), PLAID_BANK_RULES).unwrap();
    if let Some(fake) = fake {
        s.lunchmoney.token = Secret::new(seed::TOKEN);
        s.lunchmoney.base_url = Some(fake.base_url());
    }
    s.lunchmoney.max_backoff_secs = 1;
    s.lunchmoney.plaid_fetch_interval_secs = 1;
    let mut mapping = SourceMapping::default();
    mapping
        .accounts
        .insert("chk".into(), NameOrId::Id(seed::CHECKING));
    mapping
        .plaid_accounts
        .insert("card".into(), seed::PLAID_CARD);
    s.lunchmoney.sources.insert("plaidbank".into(), mapping);
    s.admin.token = Secret::new(ADMIN);
    s
}

fn fake() -> FakeHandle {
    FakeLunchMoney::seeded()
        .plaid_fetch_cooldown(Duration::from_millis(900))
        .start()
}

async fn post_alert(app: &TestApp, id: &str, account: &str) {
    let event = json!({"type": "transaction.created",
        "data": {"id": id, "amount": "-12.50", "date": "2024-03-08", "account": account}});
    let response = app
        .client
        .post(app.url("/hooks/plaidbank"))
        .bearer_auth(TOKEN)
        .json(&event)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{:?}", response.text().await);
}

async fn outbox(app: &TestApp) -> Value {
    app.admin_json("/admin/outbox", ADMIN).await
}

async fn wait_outbox(app: &TestApp, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let report = outbox(app).await;
        if done(&report) {
            return report;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "outbox never got there: {report:#}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The fetch requests the fake saw and what it answered each.
fn fetch_answers(fake: &FakeHandle, endpoint: &str) -> Vec<(String, Outcome)> {
    fake.requests_to(endpoint)
        .into_iter()
        .map(|r| (r.query, r.outcome))
        .collect()
}

#[tokio::test]
async fn alerts_trigger_one_shared_fetch_and_are_never_inserted() {
    let fake = fake();
    // A dry run first: the alerts are stored, and the report says what would happen.
    let dir = tempfile::tempdir().unwrap();
    let settings = plaid_settings(dir.path(), None);
    let app = spawn_in(dir, settings);
    for i in 0..5 {
        post_alert(&app, &format!("c{i}"), "card").await;
    }
    post_alert(&app, "k1", "chk").await;
    let report = outbox(&app).await;
    assert_eq!(report["dry_run"], true);
    assert_eq!(report["counts"]["pending"], 6);
    let pending = report["pending"].as_array().unwrap();
    let fetching: Vec<&Value> = pending
        .iter()
        .filter(|p| p["would_fetch_plaid_account"] == seed::PLAID_CARD)
        .collect();
    assert_eq!(fetching.len(), 5, "{report:#}");
    assert!(fetching.iter().all(|p| p.get("would_post").is_none()));
    let inserting: Vec<&Value> = pending
        .iter()
        .filter(|p| p["would_post"]["account"] == seed::CHECKING)
        .collect();
    assert_eq!(inserting.len(), 1, "{report:#}");
    let dir = app.stop().await;

    // With a token: all five alerts were due together, so one fetch serves them.
    let settings = plaid_settings(dir.path(), Some(&fake));
    let app = spawn_in(dir, settings);
    let report = wait_outbox(&app, |r| {
        r["counts"]["fetched"] == 5 && r["counts"]["delivered"] == 1
    })
    .await;
    assert_eq!(report["counts"]["pending"], 0);
    assert_eq!(report["fetched"].as_array().unwrap().len(), 5);
    assert_eq!(
        report["plaid_fetches"][0]["plaid_account_id"],
        seed::PLAID_CARD
    );
    assert_eq!(report["plaid_fetches"][0]["last_outcome"], "accepted");
    assert_eq!(
        fetch_answers(&fake, FETCH_V2),
        vec![(format!("id={}", seed::PLAID_CARD), Outcome::Status(202))]
    );
    // Only the manual account's transaction was inserted.
    let inserted = fake.transactions();
    assert_eq!(inserted.len(), 1, "{inserted:?}");
    assert_eq!(inserted[0].manual_account_id, Some(seed::CHECKING));
    app.stop().await;
}

#[tokio::test]
async fn the_fetch_interval_holds_across_a_restart() {
    // A longer interval than the other tests', so the restart happens inside it even on a slow,
    // busy machine (a debug build's restart under load took over 1.5 s).
    let fake = FakeLunchMoney::seeded()
        .plaid_fetch_cooldown(Duration::from_millis(5900))
        .start();
    let dir = tempfile::tempdir().unwrap();
    let with_interval = |dir: &std::path::Path| {
        let mut settings = plaid_settings(dir, Some(&fake));
        settings.lunchmoney.plaid_fetch_interval_secs = 6;
        settings
    };
    let settings = with_interval(dir.path());
    let app = spawn_in(dir, settings);
    post_alert(&app, "c1", "card").await;
    wait_outbox(&app, |r| r["counts"]["fetched"] == 1).await;
    let fetched_at = std::time::Instant::now();
    let first = fake.requests_to(FETCH_V2).len();
    assert_eq!(first, 1);
    let dir = app.stop().await;

    // Straight back up: a new alert within the interval waits for the window, it is not
    // fetched at once (which the fake would answer with 425).
    let settings = with_interval(dir.path());
    let app = spawn_in(dir, settings);
    post_alert(&app, "c2", "card").await;
    post_alert(&app, "c3", "card").await;
    let waiting = outbox(&app).await;
    assert!(
        fetched_at.elapsed() < Duration::from_millis(5000),
        "the restart took too long for this test to prove anything"
    );
    assert_eq!(waiting["counts"]["fetched"], 1, "{waiting:#}");
    let report = wait_outbox(&app, |r| r["counts"]["fetched"] == 3).await;
    assert_eq!(report["counts"]["pending"], 0);
    let answers = fetch_answers(&fake, FETCH_V2);
    assert!(
        answers.iter().all(|(_, o)| *o == Outcome::Status(202)),
        "a fetch within the interval: {answers:?}"
    );
    // c2 and c3 arrived within the window of c1's fetch: both wait for its end, and then share
    // one fetch (c3 may be claimed a moment after c2's fetch only if it arrived after it).
    assert!(
        (2..=3).contains(&answers.len()),
        "one fetch per interval: {answers:?}"
    );
    assert!(fake.transactions().is_empty(), "nothing inserted");
    app.stop().await;
}

#[tokio::test]
async fn too_early_waits_for_the_minute_and_is_not_a_failure() {
    // The account was fetched by someone else (the Lunch Money app) just now.
    let fake = FakeLunchMoney::seeded()
        .plaid_fetch_cooldown(Duration::from_secs(60))
        .start();
    let taken = reqwest::Client::new()
        .post(fake.url(&format!("/v2/plaid_accounts/fetch?id={}", seed::PLAID_CARD)))
        .bearer_auth(seed::TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(taken.status(), 202);
    let dir = tempfile::tempdir().unwrap();
    let mut settings = plaid_settings(dir.path(), Some(&fake));
    settings.lunchmoney.plaid_fetch_interval_secs = 60;
    let app = spawn_in(dir, settings);
    // The 425 comes after this, so its wait ends at least a minute after this (measured from
    // here, not from when the report is read: a busy machine may take seconds to get there).
    let before_alert = chrono::Utc::now();
    post_alert(&app, "c1", "card").await;
    let report = wait_outbox(&app, |r| {
        r["plaid_fetches"][0]["last_outcome"] == "too early"
    })
    .await;
    assert_eq!(report["counts"]["pending"], 1, "{report:#}");
    assert_eq!(report["counts"]["dead"], 0);
    let pending = &report["pending"][0];
    assert_eq!(pending["attempts"], 0, "a 425 is not a failed attempt");
    let next: chrono::DateTime<chrono::Utc> = pending["next_attempt_at"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        next >= before_alert + chrono::Duration::seconds(60),
        "waits the minute: {next}"
    );
    assert_eq!(fake.requests_to(FETCH_V2).len(), 2);
    assert!(fake.transactions().is_empty());
    app.stop().await;
}

#[tokio::test]
async fn v1_fetches_with_the_account_in_the_body() {
    let fake = fake();
    let dir = tempfile::tempdir().unwrap();
    let mut settings = plaid_settings(dir.path(), Some(&fake));
    settings.lunchmoney.api = ApiVersion::V1;
    let app = spawn_in(dir, settings);
    post_alert(&app, "c1", "card").await;
    wait_outbox(&app, |r| r["counts"]["fetched"] == 1).await;
    let requests = fake.requests_to("POST /v1/plaid_accounts/fetch");
    assert_eq!(requests.len(), 1);
    assert_eq!(
        requests[0].json(),
        Some(json!({"plaid_account_id": seed::PLAID_CARD}))
    );
    assert!(fake.transactions().is_empty());
    app.stop().await;
}

#[tokio::test]
async fn a_throttled_fetch_is_retried_after_retry_after() {
    let fake = fake();
    fake.throttle_next(1, 1);
    let dir = tempfile::tempdir().unwrap();
    let settings = plaid_settings(dir.path(), Some(&fake));
    let app = spawn_in(dir, settings);
    post_alert(&app, "c1", "card").await;
    let report = wait_outbox(&app, |r| r["counts"]["fetched"] == 1).await;
    assert_eq!(report["counts"]["dead"], 0);
    let statuses: Vec<Outcome> = fetch_answers(&fake, FETCH_V2)
        .into_iter()
        .map(|(_, o)| o)
        .collect();
    assert_eq!(statuses, vec![Outcome::Status(429), Outcome::Status(202)]);
    assert!(fake.transactions().is_empty());
    app.stop().await;
}

#[tokio::test]
async fn check_reports_plaid_ids_that_lunch_money_does_not_know() {
    let fake = fake();
    let dir = tempfile::tempdir().unwrap();
    let mut settings = plaid_settings(dir.path(), Some(&fake));
    settings
        .lunchmoney
        .sources
        .get_mut("plaidbank")
        .unwrap()
        .plaid_accounts
        .insert("closed".into(), 999);
    let app = spawn_in(dir, settings);
    let check: Value = app.admin_json("/admin/check", ADMIN).await;
    let findings = check["findings"].to_string();
    assert!(
        findings.contains(&format!(
            "Plaid fetch of \\\"Chase Sapphire\\\" (id {})",
            seed::PLAID_CARD
        )),
        "{check:#}"
    );
    assert!(
        findings.contains("no Plaid account with id 999"),
        "{check:#}"
    );
    assert_eq!(check["ok"], false);
    app.stop().await;
}
