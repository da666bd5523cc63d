//! Parser drift, end to end: the real server counts, per sender domain, mail no template matched
//! and parses that lacked a field, in `/metrics` and the outbox report; the counts are in the
//! store, so they survive a restart.

mod support;

use lm_ingest::settings::Secret;
use serde_json::{json, Value};
use support::*;

const ADMIN: &str = "admin-token-0123456789";

async fn post_email(app: &TestApp, raw: &str) -> Value {
    let response = app
        .client
        .post(app.url("/inbound/email"))
        .bearer_auth(TOKEN)
        .header("Content-Type", "message/rfc822")
        .body(raw.to_owned())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

async fn metrics(app: &TestApp) -> String {
    app.client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

fn drift_line(sender: &str, plugin: &str, kind: &str, field: &str, n: u64) -> String {
    format!("lm_ingest_parse_drift_total{{sender=\"{sender}\",plugin=\"{plugin}\",kind=\"{kind}\",field=\"{field}\"}} {n}\n")
}

#[tokio::test]
async fn unmatched_mail_and_missing_fields_are_counted_per_sender_across_restarts() {
    let app = spawn_app_with(|s| s.admin.token = Secret::new(ADMIN)).await;
    // Venmo changed its layout: the plugin claims the sender, no template matches.
    let changed = "From: Venmo <venmo@venmo.com>\r\nTo: me@example.net\r\nSubject: You've got a brand new kind of payment\r\nMessage-ID: <drift-1@venmo.com>\r\nDate: Fri, 01 Mar 2024 12:00:00 +0000\r\nContent-Type: text/plain\r\n\r\nSomething we have never seen.\r\n";
    let answer = post_email(&app, changed).await;
    assert_eq!(
        (answer["status"].as_str(), answer["plugin"].as_str()),
        (Some("unmatched"), Some("venmo"))
    );
    // A sender no plugin knows, twice (different messages).
    for i in 0..2 {
        let unknown = format!("From: alerts@NewBank.example\r\nSubject: Card used\r\nMessage-ID: <nb-{i}@newbank.example>\r\nDate: Fri, 01 Mar 2024 12:00:00 +0000\r\n\r\nYou spent $4.00\r\n");
        post_email(&app, &unknown).await;
    }
    // The same message again is a duplicate and is not counted again.
    post_email(&app, changed).await;
    // A webhook whose payee went missing still parses; its payee is counted as missing.
    let event = json!({"type": "transaction.created", "data": {"id": "t1", "amount": "-3.00",
        "date": "2024-03-08", "currency": "eur", "balance": "10.00"}});
    let response = app
        .client
        .post(app.url("/hooks/testbank"))
        .bearer_auth(TOKEN)
        .json(&event)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    let text = metrics(&app).await;
    for line in [
        drift_line("venmo.com", "venmo", "unmatched", "", 1),
        drift_line("newbank.example", "", "unmatched", "", 2),
        drift_line("hook:testbank", "testbank", "missing_field", "payee", 1),
    ] {
        assert!(text.contains(&line), "{line} not in:\n{text}");
    }
    assert!(
        !text.contains("me@example.net") && !text.contains("alerts@"),
        "addresses are never labels"
    );
    let dir = app.stop().await;

    let mut settings = settings_for(dir.path());
    settings.admin.token = Secret::new(ADMIN);
    let app = spawn_in(dir, settings);
    let text = metrics(&app).await;
    assert!(
        text.contains(&drift_line("newbank.example", "", "unmatched", "", 2)),
        "{text}"
    );
    let report: Value = app.admin_json("/admin/outbox", ADMIN).await;
    let drift = report["parse_drift"].as_array().unwrap();
    assert!(
        drift
            .iter()
            .any(|c| c["sender"] == "venmo.com" && c["kind"] == "unmatched" && c["count"] == 1),
        "{report:#}"
    );
    app.stop().await;
}

#[test]
fn a_field_that_falls_back_to_its_default_is_reported_missing() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("cardbank.toml"),
        r#"
kind = "webhook"
currency = "usd"
[[template]]
name = "spent"
require = [
  { pointer = "/id", capture = "id" },
  { pointer = "/amount", capture = "amount" },
  { pointer = "/date", capture = "date" },
]
optional = [{ pointer = "/merchant", capture = "merchant" }, { pointer = "/memo", capture = "memo" }]
[template.fields]
payee = "{merchant|'Card payment'}"
notes = "{memo}"
"#,
    )
    .unwrap();
    let registry = lm_ingest::parse::Registry::load(Some(dir.path())).unwrap();
    let parse =
        |body: Value| registry.parse_webhook("cardbank", Vec::new(), body.to_string().as_bytes());
    let full = parse(json!({"id": "1", "amount": "-2.00", "date": "2024-03-01",
        "merchant": "Bakery", "memo": "bread"}));
    assert!(full.missing_fields.is_empty(), "{full:?}");
    let lean = parse(json!({"id": "2", "amount": "-2.00", "date": "2024-03-01", "memo": ""}));
    assert_eq!(lean.transactions[0].payee.as_deref(), Some("Card payment"));
    assert_eq!(lean.missing_fields, vec!["payee", "notes"]);
}
