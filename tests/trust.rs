//! Sender trust through the real server: provider verdicts recorded and used by a `require`
//! policy, the forwarder list, 2xx answers for refused mail, what `lm-ingest messages` and
//! `outbox` show, and re-parse applying the same policy.

mod support;

use std::sync::Arc;

use lm_ingest::parse::Registry;
use lm_ingest::settings::{TrustPolicy, TrustSettings};
use lm_ingest::store::{MessageStatus, Store};
use lm_ingest::trust::{dns::MapResolver, Trust};
use reqwest::StatusCode;
use serde_json::{json, Value};
use support::*;

fn postmark_venmo(message_id: &str, spam_tests: &str) -> Value {
    json!({
        "FromFull": {"Email": "venmo@venmo.com", "Name": "Venmo"},
        "Subject": "Lee Ames paid you $12.00",
        "Date": "Wed, 06 Mar 2024 20:00:00 +0000",
        "MessageID": message_id,
        "HtmlBody": "<p>Lee Ames paid You</p><p>Lunch</p><p>Transfer Date and Amount:</p><p>Mar 06, 2024 PST · + $12.00</p><p>Payment ID: 2222333344445555666</p>",
        "Headers": [
            {"Name": "Message-ID", "Value": format!("<{message_id}@venmo.com>")},
            {"Name": "Received-SPF", "Value": "Pass (sender SPF authorized) identity=mailfrom; client-ip=198.51.100.27"},
            {"Name": "X-Spam-Tests", "Value": spam_tests}
        ]
    })
}

async fn post_postmark(app: &TestApp, body: &Value) -> (StatusCode, Value) {
    let response = app
        .client
        .post(app.url("/inbound/postmark"))
        .header("Authorization", basic("postmark", "pm-password"))
        .json(body)
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, response.json().await.unwrap())
}

fn requiring_venmo(settings: &mut lm_ingest::settings::Settings) {
    settings
        .trust
        .policies
        .insert("venmo".into(), TrustPolicy::Require);
}

#[tokio::test]
async fn postmark_verdicts_are_recorded_and_a_require_policy_uses_them() {
    let app = spawn_app_with(requiring_venmo).await;
    let authenticated = postmark_venmo("pm-au", "DKIM_SIGNED,DKIM_VALID,DKIM_VALID_AU,SPF_PASS");
    let (status, body) = post_postmark(&app, &authenticated).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "queued");
    let queued_id = body["id"].as_i64().unwrap();

    // Signed, but not by Venmo: refused, answered 200 with the reason so Postmark does not retry.
    let forged = postmark_venmo("pm-forged", "DKIM_SIGNED,DKIM_INVALID,SPF_SOFTFAIL");
    let (status, body) = post_postmark(&app, &forged).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "rejected");
    let reason = body["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("sender trust: plugin venmo requires mail authenticated as venmo.com"),
        "{reason}"
    );
    assert!(reason.contains("postmark dkim=fail spf=pass"), "{reason}");
    assert_eq!(body["transactions"], 0);
    let rejected_id = body["id"].as_i64().unwrap();
    // A retry anyway is a duplicate, answered the same way.
    let (status, body) = post_postmark(&app, &forged).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "duplicate");
    assert_eq!(body["stored_status"], "rejected");

    let store_path = app.store_path();
    let _dir = app.stop().await;
    let store = Store::open(&store_path).unwrap();
    let queued = store.message(queued_id).unwrap().unwrap();
    assert_eq!(queued.meta["trust"]["authenticated_by"], "provider");
    assert_eq!(queued.meta["trust"]["provider"]["author_dkim_pass"], true);
    assert_eq!(queued.meta["trust"]["policy"], "require");
    let rejected = store.message(rejected_id).unwrap().unwrap();
    assert_eq!(rejected.status, MessageStatus::Rejected);
    assert_eq!(rejected.plugin.as_deref(), Some("venmo"));
    assert_eq!(rejected.meta["trust"]["result"], "rejected");
    assert_eq!(rejected.meta["trust"]["provider"]["dkim"], "fail");
    assert!(store.transactions_of(rejected_id).unwrap().is_empty());
    store.close().unwrap();

    // Both commands show the refusal and its reason.
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_lm-ingest"))
            .env_remove("LM_INGEST_CONFIG")
            .env("LM_INGEST__STORE__PATH", &store_path)
            .args(args)
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let listed: Value =
        serde_json::from_str(run(&["messages", "--status", "rejected"]).trim()).unwrap();
    assert_eq!(listed["id"], rejected_id);
    assert!(listed["reason"]
        .as_str()
        .unwrap()
        .starts_with("sender trust:"));
    assert_eq!(listed["trust"]["result"], "rejected");
    let outbox: Value = serde_json::from_str(&run(&["outbox"])).unwrap();
    assert_eq!(outbox["rejected"][0]["message_id"], rejected_id);
    assert!(outbox["rejected"][0]["reason"]
        .as_str()
        .unwrap()
        .starts_with("sender trust:"));
}

#[tokio::test]
async fn mailgun_and_sendgrid_verdicts_are_recorded_with_the_message() {
    let app = spawn_app().await;
    let boundary = "XyZ";
    let mut form = String::new();
    for (name, value) in [
        (
            "email",
            String::from_utf8(fixture("new-paid-you.eml")).unwrap(),
        ),
        ("dkim", "{@venmo.com : pass}".to_owned()),
        ("SPF", "pass".to_owned()),
    ] {
        form.push_str(&format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
        ));
    }
    form.push_str(&format!("--{boundary}--\r\n"));
    let response = app
        .client
        .post(app.url("/inbound/sendgrid"))
        .header("Authorization", basic("sendgrid", TOKEN))
        .header(
            "Content-Type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(form)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], "queued", "{body}");
    let id = body["id"].as_i64().unwrap();
    let store_path = app.store_path();
    let _dir = app.stop().await;
    let store = Store::open(&store_path).unwrap();
    let trust = &store.message(id).unwrap().unwrap().meta["trust"];
    assert_eq!(trust["provider"]["provider"], "sendgrid");
    assert_eq!(trust["provider"]["dkim_pass_domains"], json!(["venmo.com"]));
    assert_eq!(trust["authenticated_by"], "provider");
    // Report policy (the default): recorded, not enforced.
    assert_eq!(trust["policy"], "report");
    assert_eq!(trust["sender"], "venmo@venmo.com");
    store.close().unwrap();
}

#[tokio::test]
async fn mail_forwarded_by_someone_not_on_the_list_is_refused_with_2xx() {
    let app = spawn_app_with(|s| {
        s.trust.allowed_forwarders = vec!["alex@example.com".into()];
    })
    .await;
    let post = |raw: Vec<u8>| {
        app.client
            .post(app.url("/inbound/email"))
            .header("Authorization", format!("Bearer {TOKEN}"))
            .header("Content-Type", "message/rfc822")
            .body(raw)
            .send()
    };
    let response = post(fixture("fwd-gmail.eml")).await.unwrap();
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], "queued", "{body}");

    let stranger = String::from_utf8(fixture("fwd-gmail.eml"))
        .unwrap()
        .replacen(
            "From: Alex Rivera <alex@example.com>",
            "From: Mallory <mallory@evil.example>",
            1,
        )
        .replace("Message-ID: <", "Message-ID: <stranger-");
    let response = post(stranger.into_bytes()).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], "rejected", "{body}");
    assert_eq!(
        body["reason"],
        "sender trust: forwarded by mallory@evil.example, which is not in trust.allowed_forwarders"
    );
    app.stop().await;
}

#[tokio::test]
async fn reparse_applies_the_policy_of_today() {
    let app = spawn_app_with(requiring_venmo).await;
    // A hand forward: its original's signature is gone, so `require` refuses it.
    let response = app
        .client
        .post(app.url("/inbound/email"))
        .header("Authorization", format!("Bearer {TOKEN}"))
        .body(fixture("fwd-gmail.eml"))
        .send()
        .await
        .unwrap();
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], "rejected", "{body}");
    assert!(body["reason"]
        .as_str()
        .unwrap()
        .contains("quoted in a hand forward"));
    let id = body["id"].as_i64().unwrap();
    let store_path = app.store_path();
    let dir = app.stop().await;
    let store = Store::open(&store_path).unwrap();
    let registry = Registry::load(Some(&dir.path().join("parsers"))).unwrap();
    let since = chrono::NaiveDate::from_ymd_opt(2000, 1, 1).unwrap();
    let trust_with = |policy| {
        let mut settings = TrustSettings::default();
        settings.policies.insert("venmo".into(), policy);
        Trust::new(settings, Arc::new(MapResolver::new()))
    };

    let still_required = trust_with(TrustPolicy::Require);
    let report = lm_ingest::ops::reparse(&store, &registry, &still_required, since, None, false)
        .await
        .unwrap();
    assert_eq!(report.status_changed, 0, "{report:?}");
    assert_eq!(
        store.message(id).unwrap().unwrap().status,
        MessageStatus::Rejected
    );

    let relaxed = trust_with(TrustPolicy::Report);
    let report = lm_ingest::ops::reparse(&store, &registry, &relaxed, since, None, false)
        .await
        .unwrap();
    assert_eq!(report.status_changed, 1, "{report:?}");
    assert_eq!(report.new, 1);
    let message = store.message(id).unwrap().unwrap();
    assert_eq!(message.status, MessageStatus::Queued);
    assert_eq!(message.meta["trust"]["policy"], "report");
    assert_eq!(store.transactions_of(id).unwrap().len(), 1);
    store.close().unwrap();
}

#[tokio::test]
async fn a_policy_for_a_plugin_that_does_not_exist_stops_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = settings_for(dir.path());
    settings
        .trust
        .policies
        .insert("venmoo".into(), TrustPolicy::Require);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let error = lm_ingest::server::Application::build(&settings, listener)
        .err()
        .expect("refused")
        .to_string();
    assert_eq!(error, "trust: trust.policies.venmoo: no plugin has this id");
    settings.trust.policies.clear();
    settings
        .trust
        .policies
        .insert("testbank".into(), TrustPolicy::Require);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let error = lm_ingest::server::Application::build(&settings, listener)
        .err()
        .expect("refused")
        .to_string();
    assert!(error.contains("a webhook plugin"), "{error}");
}
