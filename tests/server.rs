//! The service end to end over loopback: every route with right and wrong credentials,
//! duplicates, bad input, limits, health, metrics, durability and graceful shutdown.

mod support;

use lm_ingest::store::{MessageStatus, Store};
use lm_ingest::verify::hmac_sha256_hex;
use reqwest::StatusCode;
use serde_json::{json, Value};
use support::*;

async fn post_email(app: &TestApp, body: Vec<u8>, token: &str) -> (StatusCode, Value) {
    let response = app
        .client
        .post(app.url("/inbound/email"))
        .header("Authorization", format!("Bearer {token}"))
        .header("Content-Type", "message/rfc822")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, response.json().await.unwrap())
}

fn error_reason(body: &Value) -> &str {
    body["reason"].as_str().unwrap_or_default()
}

#[tokio::test]
async fn raw_email_is_stored_parsed_and_deduplicated() {
    let app = spawn_app().await;
    let (status, body) = post_email(&app, fixture("old-you-paid.eml"), TOKEN).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "queued");
    assert_eq!(body["plugin"], "venmo");
    assert_eq!(body["transactions"], 1);
    assert_eq!(body["new_transactions"], 1);
    let id = body["id"].as_i64().unwrap();

    let (status, again) = post_email(&app, fixture("old-you-paid.eml"), TOKEN).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(again["status"], "duplicate");
    assert_eq!(again["stored_status"], "queued");
    assert_eq!(again["id"], id);

    for (name, expected) in [
        ("statement.eml", "ignored"),
        ("lookalike-domain.eml", "unmatched"),
    ] {
        let (status, body) = post_email(&app, fixture(name), TOKEN).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["status"], expected, "{name}: {body}");
    }

    let store_path = app.store_path();
    let _dir = app.stop().await;
    let wal = std::fs::metadata(store_path.with_extension("db-wal"))
        .map(|m| m.len())
        .unwrap_or(0);
    assert_eq!(
        wal, 0,
        "a graceful stop closes the store, checkpointing the WAL"
    );
    let store = Store::open(&store_path).unwrap();
    let stored = store.message(id).unwrap().unwrap();
    assert_eq!(
        stored.raw,
        fixture("old-you-paid.eml"),
        "raw bytes kept exactly"
    );
    assert_eq!(stored.route, "email");
    assert_eq!(stored.status, MessageStatus::Queued);
    let txs = store.transactions_of(id).unwrap();
    assert_eq!(txs.len(), 1);
    assert_eq!(txs[0].transaction.external_id, "venmo:3981736402915738461");
    assert_eq!(txs[0].transaction.amount.as_str(), "-25.00");
    assert_eq!(txs[0].state, "pending");
    let counts: std::collections::HashMap<String, u64> = store
        .count_messages_by_status()
        .unwrap()
        .into_iter()
        .collect();
    assert_eq!(counts.get("queued"), Some(&1));
    assert_eq!(counts.get("ignored"), Some(&1));
    assert_eq!(counts.get("unmatched"), Some(&1));
}

#[tokio::test]
async fn the_same_payment_forwarded_again_is_not_queued_twice() {
    let app = spawn_app().await;
    let (_, direct) = post_email(&app, fixture("new-paid-you.eml"), TOKEN).await;
    assert_eq!(direct["new_transactions"], 1);
    // Same Venmo payment, different wrapper (a new Message-ID): stored, but nothing new to deliver.
    let mut rewrapped = b"Message-ID: <another-copy@example.com>\r\n".to_vec();
    rewrapped.extend(fixture("new-paid-you.eml").into_iter());
    let text = String::from_utf8_lossy(&rewrapped)
        .replacen("Message-ID: <", "X-Old-Message-ID: <", 2)
        .replacen("X-Old-Message-ID: <another", "Message-ID: <another", 1);
    let (status, body) = post_email(&app, text.into_bytes(), TOKEN).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "queued");
    assert_eq!(body["transactions"], 1);
    assert_eq!(body["new_transactions"], 0);
    assert_ne!(body["id"], direct["id"]);
}

#[tokio::test]
async fn bad_credentials_are_refused_with_a_json_reason() {
    let app = spawn_app().await;
    let (status, body) =
        post_email(&app, fixture("old-you-paid.eml"), "wrong-token-wrong-token").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"], "unauthorized");
    let response = app
        .client
        .post(app.url("/inbound/email"))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let body: Value = response.json().await.unwrap();
    assert!(error_reason(&body).contains("Authorization"), "{body}");
    // Nothing from a refused request is stored.
    let metrics = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(
            "lm_ingest_requests_refused_total{route=\"email\",reason=\"unauthorized\"} 2"
        ),
        "{metrics}"
    );
    assert!(!metrics.contains("lm_ingest_messages_total{"), "{metrics}");
}

#[tokio::test]
async fn malformed_input_is_kept_as_rejected_and_answered_400() {
    let app = spawn_app().await;
    let (status, body) = post_email(&app, b"\x00\x01 not mail at all".to_vec(), TOKEN).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "rejected");
    assert_eq!(body["status"], "rejected");
    assert!(error_reason(&body).contains("not an email"), "{body}");
    let id = body["id"].as_i64().unwrap();
    // The same bad bytes again are the same message: still 400, not stored twice.
    let (status, again) = post_email(&app, b"\x00\x01 not mail at all".to_vec(), TOKEN).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(again["id"], id);
    let store_path = app.store_path();
    let _dir = app.stop().await;
    let stored = Store::open(&store_path)
        .unwrap()
        .message(id)
        .unwrap()
        .unwrap();
    assert_eq!(stored.status, MessageStatus::Rejected);
    assert_eq!(stored.raw, b"\x00\x01 not mail at all");
}

#[tokio::test]
async fn oversized_bodies_are_refused_413_before_anything_is_stored() {
    let app = spawn_app_with(|s| s.server.limits.email = 4096).await;
    let (status, body) = post_email(&app, vec![b'a'; 5000], TOKEN).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(body["error"], "too_large");
    assert!(error_reason(&body).contains("4096"));
    // Chunked, with no Content-Length to check up front.
    let stream = futures_stream(vec![vec![b'a'; 3000], vec![b'b'; 3000]]);
    let response = app
        .client
        .post(app.url("/inbound/email"))
        .header("Authorization", format!("Bearer {TOKEN}"))
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
}

fn futures_stream(
    chunks: Vec<Vec<u8>>,
) -> impl futures_core::Stream<Item = Result<Vec<u8>, std::io::Error>> {
    tokio_stream::iter(chunks.into_iter().map(Ok))
}

fn mailgun_form(
    extra: &[(&str, &str)],
    timestamp: i64,
    token: &str,
    key: &str,
) -> Vec<(String, String)> {
    let signature = hmac_sha256_hex(
        key.as_bytes(),
        &[timestamp.to_string().as_bytes(), token.as_bytes()],
    );
    let mut form: Vec<(String, String)> = vec![
        ("timestamp".into(), timestamp.to_string()),
        ("token".into(), token.into()),
        ("signature".into(), signature),
        ("recipient".into(), "in@example.com".into()),
    ];
    form.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    form
}

#[tokio::test]
async fn mailgun_signed_posts_are_accepted_and_forgeries_replays_and_stale_ones_refused() {
    let app = spawn_app().await;
    let now = chrono::Utc::now().timestamp();
    let mime = String::from_utf8(fixture("new-you-paid.eml")).unwrap();
    let post = |form: Vec<(String, String)>| {
        let client = app.client.clone();
        let url = app.url("/inbound/mailgun");
        async move {
            let response = client.post(url).form(&form).send().await.unwrap();
            let status = response.status();
            (status, response.json::<Value>().await.unwrap())
        }
    };
    let (status, body) = post(mailgun_form(
        &[("body-mime", &mime)],
        now,
        "tok-1",
        MAILGUN_KEY,
    ))
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "queued");

    let (status, body) = post(mailgun_form(
        &[("body-mime", &mime)],
        now,
        "tok-1",
        MAILGUN_KEY,
    ))
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "replayed token: {body}");
    assert!(error_reason(&body).contains("replay"));

    let (status, _) = post(mailgun_form(
        &[("body-mime", &mime)],
        now,
        "tok-2",
        "key-wrong",
    ))
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, body) = post(mailgun_form(
        &[("body-mime", &mime)],
        now - 3600,
        "tok-3",
        MAILGUN_KEY,
    ))
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(error_reason(&body).contains("timestamp"));

    // Without `mime` in the route URL Mailgun sends the message taken apart.
    let headers = json!([
        ["From", "Venmo <venmo@venmo.com>"],
        ["Subject", "You paid Jo Park $7.50"],
        ["Date", "Tue, 05 Mar 2024 18:00:00 +0000"],
        ["Message-Id", "<mg-parts@venmo.com>"]
    ])
    .to_string();
    let html = "<p>You paid Jo Park</p><p>Tea</p><p>Transfer Date and Amount:</p><p>Mar 05, 2024 PST · - $7.50</p><p>Payment ID: 1111222233334444555</p>";
    let (status, body) = post(mailgun_form(
        &[
            ("message-headers", &headers),
            ("body-html", html),
            ("from", "Venmo <venmo@venmo.com>"),
        ],
        now,
        "tok-4",
        MAILGUN_KEY,
    ))
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "queued");
    assert_eq!(body["transactions"], 1);

    // Multipart, as Mailgun sends when there are attachments.
    let form = reqwest::multipart::Form::new();
    let form = mailgun_form(
        &[(
            "body-mime",
            &String::from_utf8(fixture("old-paid-you.eml")).unwrap(),
        )],
        now,
        "tok-5",
        MAILGUN_KEY,
    )
    .into_iter()
    .fold(form, |f, (k, v)| f.text(k, v));
    let response = app
        .client
        .post(app.url("/inbound/mailgun/mime"))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.json::<Value>().await.unwrap()["status"], "queued");

    let response = app
        .client
        .post(app.url("/inbound/mailgun"))
        .form(&[("a", "b")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "unsigned form");
    let response = app
        .client
        .post(app.url("/inbound/mailgun"))
        .body("{}")
        .header("Content-Type", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn mailgun_route_refuses_everything_without_a_signing_key() {
    let app = spawn_app_with(|s| s.mailgun.signing_key = Default::default()).await;
    let now = chrono::Utc::now().timestamp();
    let response = app
        .client
        .post(app.url("/inbound/mailgun"))
        .form(&mailgun_form(
            &[("body-mime", "From: a@b.c\r\n\r\nx")],
            now,
            "t",
            "",
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(error_reason(&response.json::<Value>().await.unwrap()).contains("mailgun.signing_key"));
}

#[tokio::test]
async fn postmark_raw_and_parsed_json_with_basic_auth() {
    let app = spawn_app().await;
    let raw = String::from_utf8(fixture("fwd-outlook.eml")).unwrap();
    let post = |body: Value, auth: String| {
        let client = app.client.clone();
        let url = app.url("/inbound/postmark");
        async move {
            let response = client
                .post(url)
                .header("Authorization", auth)
                .json(&body)
                .send()
                .await
                .unwrap();
            let status = response.status();
            (status, response.json::<Value>().await.unwrap())
        }
    };
    let (status, body) = post(
        json!({"MessageID": "pm-1", "RawEmail": raw}),
        basic("postmark", "pm-password"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "queued");

    let parsed = json!({
        "FromFull": {"Email": "venmo@venmo.com", "Name": "Venmo"},
        "Subject": "Lee Ames paid you $12.00",
        "Date": "Wed, 06 Mar 2024 20:00:00 +0000",
        "MessageID": "pm-2",
        "HtmlBody": "<p>Lee Ames paid You</p><p>Lunch</p><p>Transfer Date and Amount:</p><p>Mar 06, 2024 PST · + $12.00</p><p>Payment ID: 2222333344445555666</p>",
        "Headers": [{"Name": "Message-ID", "Value": "<pm-parsed@venmo.com>"}, {"Name": "Received-SPF", "Value": "pass"}]
    });
    let (status, body) = post(parsed.clone(), basic("postmark", "pm-password")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "queued");
    let id = body["id"].as_i64().unwrap();

    let (status, _) = post(parsed.clone(), basic("postmark", "wrong")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = post(parsed, format!("Bearer {TOKEN}")).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "postmark has its own credentials configured"
    );

    let response = app
        .client
        .post(app.url("/inbound/postmark"))
        .header("Authorization", basic("postmark", "pm-password"))
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert!(error_reason(&response.json::<Value>().await.unwrap()).contains("invalid JSON"));

    let store_path = app.store_path();
    let _dir = app.stop().await;
    let stored = Store::open(&store_path)
        .unwrap()
        .message(id)
        .unwrap()
        .unwrap();
    assert_eq!(stored.dedupe_key, "msgid:pm-parsed@venmo.com");
    assert_eq!(stored.meta["spf"], "pass");
}

#[tokio::test]
async fn sendgrid_raw_and_parsed_modes() {
    let app = spawn_app().await;
    let auth = basic("sendgrid", TOKEN);
    let raw = reqwest::multipart::Form::new()
        .text(
            "email",
            String::from_utf8(fixture("fwd-applemail.eml")).unwrap(),
        )
        .text("SPF", "pass")
        .text("dkim", "{@venmo.com : pass}");
    let response = app
        .client
        .post(app.url("/inbound/sendgrid"))
        .header("Authorization", &auth)
        .multipart(raw)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.json::<Value>().await.unwrap()["status"], "queued");

    // Parsed mode: the HTML arrives in ISO-8859-1, as `charsets` says.
    let html_latin1: Vec<u8> = "<p>Zoë Marchand paid You</p><p>Café</p><p>Transfer Date and Amount:</p><p>Mar 07, 2024 PST · + $9.00</p><p>Payment ID: 3333444455556666777</p>"
        .chars()
        .map(|c| c as u32 as u8)
        .collect();
    let parsed = reqwest::multipart::Form::new()
        .text("headers", "From: Venmo <venmo@venmo.com>\r\nSubject: =?UTF-8?Q?Zo=C3=AB_Marchand_paid_you_$9.00?=\r\nDate: Thu, 07 Mar 2024 20:00:00 +0000\r\nMessage-ID: <sg-parsed@venmo.com>\r\n")
        .part("html", reqwest::multipart::Part::bytes(html_latin1))
        .text("charsets", r#"{"headers":"UTF-8","html":"iso-8859-1"}"#)
        .text("from", "Venmo <venmo@venmo.com>");
    let response = app
        .client
        .post(app.url("/inbound/sendgrid"))
        .header("Authorization", &auth)
        .multipart(parsed)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], "queued", "{body}");
    let id = body["id"].as_i64().unwrap();

    let response = app
        .client
        .post(app.url("/inbound/sendgrid"))
        .multipart(reqwest::multipart::Form::new().text("email", "x"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);

    let store_path = app.store_path();
    let _dir = app.stop().await;
    let store = Store::open(&store_path).unwrap();
    let tx = &store.transactions_of(id).unwrap()[0].transaction;
    assert_eq!(tx.payee.as_deref(), Some("Zoë Marchand"));
    assert_eq!(tx.notes.as_deref(), Some("Café"));
}

#[tokio::test]
async fn webhooks_are_authenticated_per_plugin() {
    let app = spawn_app().await;
    let event = |id: &str| {
        json!({"type": "transaction.created", "data": {"id": id, "amount": "-4.20", "date": "2024-03-08", "payee": "Bakery"}}).to_string()
    };
    let send = |path: String, body: String, headers: Vec<(String, String)>| {
        let client = app.client.clone();
        let url = app.url(&path);
        async move {
            let mut request = client
                .post(url)
                .header("Content-Type", "application/json")
                .body(body);
            for (k, v) in headers {
                request = request.header(k, v);
            }
            let response = request.send().await.unwrap();
            let status = response.status();
            (status, response.json::<Value>().await.unwrap())
        }
    };
    let bearer = vec![("Authorization".to_string(), format!("Bearer {TOKEN}"))];

    let (status, body) = send("/hooks/testbank".into(), event("tx1"), bearer.clone()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "queued");
    let (status, body) = send("/hooks/testbank".into(), event("tx1"), bearer.clone()).await;
    assert_eq!(body["status"], "duplicate", "{status} {body}");
    let (status, body) = send(
        "/hooks/testbank".into(),
        json!({"type": "account.updated"}).to_string(),
        bearer.clone(),
    )
    .await;
    assert_eq!(
        (status, body["status"].clone()),
        (StatusCode::OK, json!("ignored"))
    );
    let (status, _) = send("/hooks/testbank".into(), event("tx2"), vec![]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, body) = send("/hooks/nosuch".into(), event("tx2"), bearer.clone()).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"], "unknown_plugin");
    let (status, _) = send("/hooks/venmo".into(), event("tx2"), bearer.clone()).await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "email plugins take no webhooks"
    );
    let (status, body) = send(
        "/hooks/testbank".into(),
        "{\"type\":".into(),
        bearer.clone(),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(error_reason(&body).contains("invalid JSON"));
    let deep = "[".repeat(5000) + &"]".repeat(5000);
    let (status, _) = send("/hooks/testbank".into(), deep, bearer.clone()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // HMAC over the body.
    let body = event("tx3");
    let signature = format!(
        "sha256={}",
        hmac_sha256_hex(HMAC_SECRET.as_bytes(), &[body.as_bytes()])
    );
    let (status, answer) = send(
        "/hooks/hmacbank".into(),
        body.clone(),
        vec![("X-Signature".into(), signature.clone())],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let (status, _) = send(
        "/hooks/hmacbank".into(),
        event("tx4"),
        vec![("X-Signature".into(), signature)],
    )
    .await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "signature of another body"
    );

    // Standard Webhooks, including a replay of the same event id.
    let body = event("tx5");
    let now = chrono::Utc::now().timestamp().to_string();
    let key = base64::Engine::decode(
        &base64::engine::general_purpose::STANDARD,
        WHSEC.trim_start_matches("whsec_"),
    )
    .unwrap();
    let mac = hmac_sha256_hex(&key, &[b"msg_1.", now.as_bytes(), b".", body.as_bytes()]);
    let raw_mac: Vec<u8> = (0..mac.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&mac[i..i + 2], 16).unwrap())
        .collect();
    let signature = format!(
        "v1,{}",
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, raw_mac)
    );
    let std_headers = vec![
        ("webhook-id".to_string(), "msg_1".to_string()),
        ("webhook-timestamp".into(), now.clone()),
        ("webhook-signature".into(), signature.clone()),
    ];
    let (status, answer) = send("/hooks/stdbank".into(), body.clone(), std_headers.clone()).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["status"], "queued");
    let (_, answer) = send("/hooks/stdbank".into(), body.clone(), std_headers).await;
    assert_eq!(answer["status"], "duplicate");
    let stale = vec![
        ("webhook-id".to_string(), "msg_1".to_string()),
        ("webhook-timestamp".into(), "1000".into()),
        ("webhook-signature".into(), signature),
    ];
    let (status, answer) = send("/hooks/stdbank".into(), body, stale).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(error_reason(&answer).contains("timestamp"));

    // A secret in the URL.
    let (status, _) = send(
        format!("/hooks/querybank?secret={QUERY_SECRET}"),
        event("tx6"),
        vec![],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = send("/hooks/querybank?secret=nope".into(), event("tx7"), vec![]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn health_readiness_metrics_and_unknown_routes() {
    let app = spawn_app().await;
    let healthz = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(healthz.status(), StatusCode::OK);
    let readyz = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(readyz.status(), StatusCode::OK);
    assert_eq!(readyz.json::<Value>().await.unwrap()["status"], "ready");
    post_email(&app, fixture("old-you-paid.eml"), TOKEN).await;
    post_email(&app, fixture("statement.eml"), TOKEN).await;
    post_email(&app, fixture("statement.eml"), TOKEN).await;
    let metrics = app.client.get(app.url("/metrics")).send().await.unwrap();
    assert!(metrics.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let text = metrics.text().await.unwrap();
    assert!(
        text.contains("lm_ingest_messages_received_total{route=\"email\"} 3"),
        "{text}"
    );
    assert!(
        text.contains(
            "lm_ingest_messages_total{route=\"email\",plugin=\"venmo\",status=\"parsed\"} 1"
        ),
        "{text}"
    );
    assert!(
        text.contains(
            "lm_ingest_messages_total{route=\"email\",plugin=\"venmo\",status=\"ignored\"} 1"
        ),
        "{text}"
    );
    assert!(
        text.contains(
            "lm_ingest_messages_total{route=\"email\",plugin=\"venmo\",status=\"duplicate\"} 1"
        ),
        "{text}"
    );
    let size: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("lm_ingest_store_bytes "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(size > 0);
    let missing = app.client.get(app.url("/nope")).send().await.unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    assert_eq!(missing.json::<Value>().await.unwrap()["error"], "not_found");
}

#[tokio::test]
async fn concurrent_requests_are_all_durable_when_acknowledged() {
    let app = spawn_app().await;
    let mut tasks = Vec::new();
    for i in 0..200 {
        let client = app.client.clone();
        let url = app.url("/hooks/testbank");
        tasks.push(tokio::spawn(async move {
            let body = json!({"type": "transaction.created", "data": {"id": format!("c{i}"), "amount": "1.00", "date": "2024-03-08"}});
            client.post(url).bearer_auth(TOKEN).json(&body).send().await.unwrap().status()
        }));
    }
    for task in tasks {
        assert_eq!(task.await.unwrap(), StatusCode::OK);
    }
    let store_path = app.store_path();
    let _dir = app.stop().await;
    let store = Store::open(&store_path).unwrap();
    let counts: std::collections::HashMap<String, u64> = store
        .count_messages_by_status()
        .unwrap()
        .into_iter()
        .collect();
    assert_eq!(counts.get("queued"), Some(&200));
}

#[tokio::test]
async fn the_ingest_token_is_generated_once_and_kept_private() {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = settings_for(dir.path());
    settings.ingest.token = Default::default();
    let app = spawn_in(dir, settings.clone());
    let token_file = app.file("data/ingest-token");
    let token = std::fs::read_to_string(&token_file).unwrap();
    assert_eq!(token.len(), 64);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&token_file).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    let (status, _) = post_email(&app, fixture("old-you-paid.eml"), &token).await;
    assert_eq!(status, StatusCode::OK);
    let dir = app.stop().await;
    let app = spawn_in(dir, settings);
    assert_eq!(
        std::fs::read_to_string(app.file("data/ingest-token")).unwrap(),
        token,
        "kept across restarts"
    );
    let _dir = app.stop().await;
}

#[tokio::test]
async fn graceful_shutdown_finishes_in_flight_requests() {
    let app = spawn_app().await;
    let mut tasks = Vec::new();
    for i in 0..50 {
        let client = app.client.clone();
        let url = app.url("/hooks/testbank");
        tasks.push(tokio::spawn(async move {
            let body = json!({"type": "transaction.created", "data": {"id": format!("g{i}"), "amount": "1.00", "date": "2024-03-08"}});
            client.post(url).bearer_auth(TOKEN).json(&body).send().await.map(|r| r.status())
        }));
    }
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let store_path = app.store_path();
    let _dir = app.stop().await;
    let acknowledged = futures_join(tasks)
        .await
        .into_iter()
        .filter(|r| matches!(r, Ok(s) if *s == StatusCode::OK))
        .count();
    let store = Store::open(&store_path).unwrap();
    let stored: u64 = store
        .count_messages_by_status()
        .unwrap()
        .into_iter()
        .map(|(_, n)| n)
        .sum();
    assert!(
        stored as usize >= acknowledged,
        "every acknowledged request is stored ({stored} stored, {acknowledged} acknowledged)"
    );
}

async fn futures_join<T>(tasks: Vec<tokio::task::JoinHandle<T>>) -> Vec<T> {
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

#[test]
fn bad_configuration_stops_start_up_naming_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = settings_for(dir.path());
    settings.hooks.insert("venmo".into(), Default::default());
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let error = lm_ingest::server::Application::build(&settings, listener)
        .err()
        .expect("refused");
    assert_eq!(
        error.to_string(),
        "hooks.venmo: is an email plugin, not a webhook plugin"
    );
    settings.hooks.remove("venmo");
    settings
        .hooks
        .insert("nosuchbank".into(), Default::default());
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let error = lm_ingest::server::Application::build(&settings, listener)
        .err()
        .expect("refused");
    assert!(
        error
            .to_string()
            .starts_with("hooks.nosuchbank: no such plugin; known: "),
        "{error}"
    );
}

#[tokio::test]
async fn a_webhook_plugin_missing_its_secret_refuses_requests_saying_what_to_set() {
    let app = spawn_app_with(|s| {
        s.hooks.remove("hmacbank");
    })
    .await;
    let response = app
        .client
        .post(app.url("/hooks/hmacbank"))
        .header("X-Signature", "sha256=00")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let body: Value = response.json().await.unwrap();
    assert!(
        error_reason(&body).contains("hooks.hmacbank.secret (LM_INGEST__HOOKS__HMACBANK__SECRET)"),
        "{body}"
    );
    // The built-in bank plugins ship their schemes; unconfigured, they refuse the same way.
    for (plugin, what) in [
        ("bunq", "public_key"),
        ("monzo", "secret"),
        ("starling", "public_key"),
    ] {
        let response = app
            .client
            .post(app.url(&format!("/hooks/{plugin}")))
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{plugin}");
        let body: Value = response.json().await.unwrap();
        assert!(
            error_reason(&body).contains(&format!("hooks.{plugin}.{what}")),
            "{plugin}: {body}"
        );
    }
}

#[tokio::test]
async fn stored_input_from_every_route_reads_back_as_it_arrived() {
    let app = spawn_app().await;
    let now = chrono::Utc::now().timestamp();
    let mime = String::from_utf8(fixture("new-you-paid.eml")).unwrap();
    let mut ids = Vec::new();
    let (_, body) = post_email(&app, fixture("old-paid-you.eml"), TOKEN).await;
    ids.push(body["id"].as_i64().unwrap());
    let response = app
        .client
        .post(app.url("/inbound/mailgun"))
        .form(&mailgun_form(
            &[("body-mime", &mime)],
            now,
            "tok-r",
            MAILGUN_KEY,
        ))
        .send()
        .await
        .unwrap();
    ids.push(
        response.json::<Value>().await.unwrap()["id"]
            .as_i64()
            .unwrap(),
    );
    let postmark = json!({"FromFull": {"Email": "venmo@venmo.com", "Name": "Venmo"}, "Subject": "Lee Ames paid you $12.00", "Date": "Wed, 06 Mar 2024 20:00:00 +0000", "MessageID": "pm-r", "HtmlBody": "<p>Lee Ames paid You</p><p>Mar 06, 2024 PST · + $12.00</p><p>Payment ID: 2222333344445555666</p>"});
    let response = app
        .client
        .post(app.url("/inbound/postmark"))
        .header("Authorization", basic("postmark", "pm-password"))
        .json(&postmark)
        .send()
        .await
        .unwrap();
    ids.push(
        response.json::<Value>().await.unwrap()["id"]
            .as_i64()
            .unwrap(),
    );
    let form = reqwest::multipart::Form::new().text(
        "email",
        String::from_utf8(fixture("fwd-gmail.eml")).unwrap(),
    );
    let response = app
        .client
        .post(app.url("/inbound/sendgrid"))
        .header("Authorization", basic("sg", TOKEN))
        .multipart(form)
        .send()
        .await
        .unwrap();
    ids.push(
        response.json::<Value>().await.unwrap()["id"]
            .as_i64()
            .unwrap(),
    );
    let hook = json!({"type": "transaction.created", "data": {"id": "r1", "amount": "2.00", "date": "2024-03-08"}});
    let response = app
        .client
        .post(app.url("/hooks/testbank"))
        .bearer_auth(TOKEN)
        .header("X-Trace", "kept")
        .json(&hook)
        .send()
        .await
        .unwrap();
    ids.push(
        response.json::<Value>().await.unwrap()["id"]
            .as_i64()
            .unwrap(),
    );

    let store_path = app.store_path();
    let _dir = app.stop().await;
    let store = Store::open(&store_path).unwrap();
    let registry = lm_ingest::parse::Registry::load(Some(&_dir.path().join("parsers"))).unwrap();
    for id in ids {
        let stored = store.message(id).unwrap().unwrap();
        assert!(
            !stored.meta.to_string().contains(TOKEN),
            "credentials are never stored"
        );
        let again = lm_ingest::inbound::stored::reextract(&stored).unwrap();
        assert_eq!(
            again.dedupe_key, stored.dedupe_key,
            "{} message {id}",
            stored.route
        );
        let outcome = match &again.payload {
            lm_ingest::inbound::Payload::Email(email) => registry.parse_parsed_email(email),
            lm_ingest::inbound::Payload::Webhook(hook) => registry
                .get(stored.source.as_deref().unwrap())
                .unwrap()
                .parse_webhook(hook),
        };
        assert_eq!(
            MessageStatus::from_outcome(outcome.status),
            stored.status,
            "{} message {id}",
            stored.route
        );
        assert_eq!(
            outcome.transactions,
            store
                .transactions_of(id)
                .unwrap()
                .into_iter()
                .map(|t| t.transaction)
                .collect::<Vec<_>>()
        );
    }
    let hook = store.message(5).unwrap().unwrap();
    assert!(hook.meta["headers"].to_string().contains("x-trace"));
    assert!(!hook.meta["headers"].to_string().contains("authorization"));
}

#[tokio::test]
async fn messages_command_lists_and_shows_stored_mail() {
    let app = spawn_app().await;
    let confirmation = b"From: Gmail Team <forwarding-noreply@google.com>\r\nSubject: (#123456789) Gmail Forwarding Confirmation\r\nDate: Wed, 06 Mar 2024 20:00:00 +0000\r\nMessage-ID: <confirm@google.com>\r\n\r\nConfirmation code: 123456789\r\n".to_vec();
    let (_, body) = post_email(&app, confirmation, TOKEN).await;
    assert_eq!(body["status"], "unmatched");
    post_email(&app, fixture("old-you-paid.eml"), TOKEN).await;
    let store_path = app.store_path();
    let _dir = app.stop().await;
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_lm-ingest"))
            .env_remove("LM_INGEST_CONFIG")
            .env("LM_INGEST__STORE__PATH", &store_path)
            .args(args)
            .output()
            .unwrap()
    };
    let out = run(&["messages", "--status", "unmatched"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["from"], "forwarding-noreply@google.com");
    assert_eq!(
        lines[0]["subject"],
        "(#123456789) Gmail Forwarding Confirmation"
    );
    let out = run(&["messages", "--id", &lines[0]["id"].to_string()]);
    let shown: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(shown["message"]["body"]
        .as_str()
        .unwrap()
        .contains("Confirmation code: 123456789"));
    let out = run(&["messages", "--id", &lines[0]["id"].to_string(), "--raw"]);
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("From: Gmail Team"));
    let out = run(&["messages"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 2);
    let out = run(&["messages", "--status", "bogus"]);
    assert_eq!(out.status.code(), Some(2));
}
