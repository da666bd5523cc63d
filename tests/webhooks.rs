//! The built-in bank plugins through `POST /hooks/{plugin}` on the real server: each provider's
//! own proof of origin (right, wrong, replayed), and a pending transaction that later settles.

mod support;

use base64::Engine as _;
use lm_ingest::settings::{HookSettings, Secret, VerifyScheme};
use reqwest::StatusCode;
use serde_json::Value;
use sha2::{Digest, Sha256, Sha512};
use support::*;

const MONZO_SECRET: &str = "monzo-url-secret-42";
const STARLING_SECRET: &str = "starling-shared-secret";

fn bank_fixture(plugin: &str, case: &str) -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(format!("fixtures/{plugin}/{case}.webhook.json"));
    std::fs::read(path).unwrap()
}

fn bunq_sign(body: &[u8]) -> String {
    use rsa::pkcs8::DecodePrivateKey;
    use rsa::signature::{SignatureEncoding, Signer};
    let pem = include_str!("data/throwaway-rsa-2048.pem");
    let key = rsa::RsaPrivateKey::from_pkcs8_pem(pem).unwrap();
    let signer = rsa::pkcs1v15::SigningKey::<Sha256>::new(key);
    base64::engine::general_purpose::STANDARD.encode(signer.sign(body).to_bytes())
}

fn starling_v1_sign(body: &[u8]) -> String {
    let mut hasher = Sha512::new();
    hasher.update(STARLING_SECRET.as_bytes());
    hasher.update(body);
    base64::engine::general_purpose::STANDARD.encode(hasher.finalize())
}

async fn banks() -> TestApp {
    spawn_app_with(|s| {
        s.hooks.insert(
            "monzo".into(),
            HookSettings {
                secret: Secret::new(MONZO_SECRET),
                ..Default::default()
            },
        );
        s.hooks.insert(
            "bunq".into(),
            HookSettings {
                public_key: Some(include_str!("data/throwaway-rsa-2048.pub.pem").into()),
                ..Default::default()
            },
        );
        // The v1 shared-secret scheme, chosen in configuration over the rule file's RSA default.
        s.hooks.insert(
            "starling".into(),
            HookSettings {
                scheme: Some(VerifyScheme::Starling),
                secret: Secret::new(STARLING_SECRET),
                ..Default::default()
            },
        );
    })
    .await
}

async fn post(
    app: &TestApp,
    path: &str,
    body: Vec<u8>,
    header: Option<(&str, String)>,
) -> (StatusCode, Value) {
    let mut request = app
        .client
        .post(app.url(path))
        .header("Content-Type", "application/json")
        .body(body);
    if let Some((name, value)) = header {
        request = request.header(name, value);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    (status, response.json().await.unwrap())
}

#[tokio::test]
async fn monzo_authenticates_by_the_secret_in_its_url_and_a_settlement_updates() {
    let app = banks().await;
    let url = format!("/hooks/monzo?secret={MONZO_SECRET}");
    let (status, body) = post(&app, &url, bank_fixture("monzo", "pending-created"), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        (body["status"].clone(), body["new_transactions"].clone()),
        ("queued".into(), 1.into())
    );
    // Monzo sends the settled version of the same transaction: an update, not a second one.
    let (status, body) = post(&app, &url, bank_fixture("monzo", "settled-updated"), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        (
            body["new_transactions"].clone(),
            body["updated_transactions"].clone()
        ),
        (0.into(), 1.into())
    );
    // A retry of the same delivery is a duplicate.
    let (_, body) = post(&app, &url, bank_fixture("monzo", "settled-updated"), None).await;
    assert_eq!(body["status"], "duplicate");
    let (_, body) = post(&app, &url, bank_fixture("monzo", "declined"), None).await;
    assert_eq!(body["status"], "ignored");
    assert!(
        body["reason"].as_str().unwrap().starts_with("declined"),
        "{body}"
    );

    let (status, _) = post(
        &app,
        "/hooks/monzo?secret=guess",
        bank_fixture("monzo", "card-payment"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = post(
        &app,
        "/hooks/monzo",
        bank_fixture("monzo", "card-payment"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let store_path = app.store_path();
    let _dir = app.stop().await;
    let store = lm_ingest::store::Store::open(&store_path).unwrap();
    let tx = store
        .transaction_by_external_id("monzo:tx_0000AiP7nD9iN2gT4eS6tW")
        .unwrap()
        .unwrap();
    assert_eq!(
        tx.transaction.amount.as_str(),
        "-46.75",
        "the settled amount"
    );
    assert_eq!(
        tx.transaction.account.as_deref(),
        Some("acc_00009Xk2LmQ7bR4sT1uV3w")
    );
}

#[tokio::test]
async fn bunq_callbacks_need_bunqs_rsa_signature_over_the_body() {
    let app = banks().await;
    let body = bank_fixture("bunq", "card-payment");
    let signature = bunq_sign(&body);
    let (status, answer) = post(
        &app,
        "/hooks/bunq",
        body.clone(),
        Some(("X-Bunq-Server-Signature", signature.clone())),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["status"], "queued");
    let (_, again) = post(
        &app,
        "/hooks/bunq",
        body.clone(),
        Some(("X-Bunq-Server-Signature", signature.clone())),
    )
    .await;
    assert_eq!(
        again["status"], "duplicate",
        "a replayed callback is stored once"
    );

    let mut tampered = body.clone();
    let at = tampered.iter().position(|b| b.is_ascii_digit()).unwrap();
    tampered[at] = if tampered[at] == b'9' { b'8' } else { b'9' };
    let (status, answer) = post(
        &app,
        "/hooks/bunq",
        tampered,
        Some(("X-Bunq-Server-Signature", signature)),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{answer}");
    let (status, _) = post(&app, "/hooks/bunq", body, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn starling_feed_items_need_their_signature() {
    let app = banks().await;
    let body = bank_fixture("starling", "card-settled");
    let (status, answer) = post(
        &app,
        "/hooks/starling",
        body.clone(),
        Some(("X-Hook-Signature", starling_v1_sign(&body))),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["status"], "queued");
    let other = bank_fixture("starling", "declined");
    let (status, _) = post(
        &app,
        "/hooks/starling",
        other,
        Some(("X-Hook-Signature", starling_v1_sign(&body))),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "a signature of another body"
    );
}

/// A local stand-in for Up's API: `GET /api/v1/transactions/{id}` with a bearer token, serving
/// the `resource` of a fixture; can be told to fail.
struct UpApi {
    base_url: String,
    requests: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    failing: std::sync::Arc<std::sync::atomic::AtomicBool>,
    serving: std::sync::Arc<std::sync::Mutex<Value>>,
    handle: actix_web::dev::ServerHandle,
}

const UP_TOKEN: &str = "up:yeah:personal-access-token";
const UP_SECRET: &str = "up-webhook-secret-key";

fn up_fixture(case: &str) -> Value {
    serde_json::from_slice(&bank_fixture("up", case)).unwrap()
}

fn up_api() -> UpApi {
    use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    let requests = Arc::new(AtomicUsize::new(0));
    let failing = Arc::new(AtomicBool::new(false));
    let serving = Arc::new(Mutex::new(up_fixture("created-held")["resource"].clone()));
    let (r, f, s) = (requests.clone(), failing.clone(), serving.clone());
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = HttpServer::new(move || {
        let (r, f, s) = (r.clone(), f.clone(), s.clone());
        App::new().route(
            "/api/v1/transactions/{id}",
            web::get().to(move |req: HttpRequest, id: web::Path<String>| {
                let (r, f, s) = (r.clone(), f.clone(), s.clone());
                async move {
                    r.fetch_add(1, Ordering::SeqCst);
                    let auth = req
                        .headers()
                        .get("authorization")
                        .and_then(|v| v.to_str().ok());
                    if auth != Some(&format!("Bearer {UP_TOKEN}")) {
                        return HttpResponse::Unauthorized().finish();
                    }
                    if f.load(Ordering::SeqCst) {
                        return HttpResponse::InternalServerError().finish();
                    }
                    let resource = s.lock().unwrap().clone();
                    if resource["data"]["id"] == id.as_str() {
                        HttpResponse::Ok().json(resource)
                    } else {
                        HttpResponse::NotFound().finish()
                    }
                }
            }),
        )
    })
    .workers(1)
    .listen(listener)
    .unwrap()
    .run();
    let handle = server.handle();
    tokio::spawn(server);
    UpApi {
        base_url: format!("http://127.0.0.1:{port}/api/v1"),
        requests,
        failing,
        serving,
        handle,
    }
}

async fn post_up(app: &TestApp, event: &Value, secret: &str) -> (StatusCode, Value) {
    let body = serde_json::to_vec(event).unwrap();
    let signature = lm_ingest::verify::hmac_sha256_hex(secret.as_bytes(), &[&body]);
    post(
        app,
        "/hooks/up",
        body,
        Some(("X-Up-Authenticity-Signature", signature)),
    )
    .await
}

/// Up's hook settings with its API (the completing fetch) at `base`.
fn up_hook(base: String) -> HookSettings {
    HookSettings {
        secret: Secret::new(UP_SECRET),
        api_token: Secret::new(UP_TOKEN),
        fetch_base_url: Some(base),
        ..Default::default()
    }
}

#[tokio::test]
async fn up_events_are_completed_from_ups_api_before_parsing() {
    use std::sync::atomic::Ordering;
    let api = up_api();
    let base = api.base_url.clone();
    let app = spawn_app_with(move |s| {
        s.hooks.insert("up".into(), up_hook(base));
    })
    .await;
    let created = up_fixture("created-held")["event"].clone();
    let (status, body) = post_up(&app, &created, UP_SECRET).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        (body["status"].clone(), body["transactions"].clone()),
        ("queued".into(), 1.into())
    );
    let id = body["id"].as_i64().unwrap();
    assert_eq!(api.requests.load(Ordering::SeqCst), 1);

    // The transaction settles: Up sends an event, the API now answers the settled version.
    *api.serving.lock().unwrap() = up_fixture("settled")["resource"].clone();
    let (status, body) = post_up(&app, &up_fixture("settled")["event"], UP_SECRET).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["updated_transactions"], 1);

    // Nothing to fetch for a ping.
    let (_, body) = post_up(&app, &up_fixture("ping"), UP_SECRET).await;
    assert_eq!(body["status"], "ignored");
    assert_eq!(api.requests.load(Ordering::SeqCst), 2);

    // Up's API failing: 503, nothing stored, so Up delivers the event again later.
    api.failing.store(true, Ordering::SeqCst);
    let mut another = created.clone();
    another["data"]["id"] = "f00d0000-0000-4000-8000-000000000001".into();
    let (status, body) = post_up(&app, &another, UP_SECRET).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(
        body["reason"]
            .as_str()
            .unwrap()
            .contains("could not fetch /transactions/"),
        "{body}"
    );
    api.failing.store(false, Ordering::SeqCst);
    let (status, _) = post_up(&app, &created, "a-forged-secret").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let store_path = app.store_path();
    let _dir = app.stop().await;
    api.handle.stop(true).await;
    let store = lm_ingest::store::Store::open(&store_path).unwrap();
    let counts: std::collections::HashMap<String, u64> = store
        .count_messages_by_status()
        .unwrap()
        .into_iter()
        .collect();
    assert_eq!(
        (counts.get("queued"), counts.get("ignored")),
        (Some(&2), Some(&1)),
        "the failed fetch stored nothing"
    );
    let tx = store
        .transaction_by_external_id("up:7c2bb0a3-5c1b-4b6f-9d1e-2f0a8c5e1b77")
        .unwrap()
        .unwrap();
    assert_eq!(tx.transaction.amount.as_str(), "-61.50");
    // Stored with what was fetched: re-reading needs no network (the stand-in is gone now).
    let stored = store.message(id).unwrap().unwrap();
    assert!(stored.meta["fetched"]["data"]["attributes"]["amount"].is_object());
    let again = lm_ingest::inbound::stored::reextract(&stored).unwrap();
    let registry = lm_ingest::parse::Registry::load(None).unwrap();
    let lm_ingest::inbound::Payload::Webhook(hook) = &again.payload else {
        panic!("a webhook")
    };
    let outcome = registry.get("up").unwrap().parse_webhook(hook);
    assert_eq!(
        outcome.transactions[0].amount.as_str(),
        "-59.98",
        "as first fetched"
    );
}

#[tokio::test]
async fn up_without_an_api_token_says_what_to_set() {
    let app = spawn_app_with(|s| {
        s.hooks.insert(
            "up".into(),
            HookSettings {
                secret: Secret::new(UP_SECRET),
                ..Default::default()
            },
        );
    })
    .await;
    let (status, body) = post_up(&app, &up_fixture("created-held")["event"], UP_SECRET).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        body["reason"]
            .as_str()
            .unwrap()
            .contains("hooks.up.api_token"),
        "{body}"
    );
}

#[tokio::test]
async fn the_outbox_shows_the_account_a_banks_own_account_maps_to() {
    use lm_ingest::settings::{NameOrId, SourceMapping};
    let app = spawn_app_with(|s| {
        s.hooks.insert(
            "monzo".into(),
            HookSettings {
                secret: Secret::new(MONZO_SECRET),
                ..Default::default()
            },
        );
        s.admin.token = Secret::new("admin-token-0123456789");
        let mut mapping = SourceMapping {
            account: Some(NameOrId::Name("Monzo".into())),
            ..Default::default()
        };
        mapping.accounts.insert(
            "acc_00009Xk2LmQ7bR4sT1uV3w".into(),
            NameOrId::Name("Monzo Current".into()),
        );
        s.lunchmoney.sources.insert("monzo".into(), mapping);
    })
    .await;
    let url = format!("/hooks/monzo?secret={MONZO_SECRET}");
    let (status, _) = post(&app, &url, bank_fixture("monzo", "pending-created"), None).await;
    assert_eq!(status, StatusCode::OK);
    let report: Value = app
        .client
        .get(app.url("/admin/outbox"))
        .bearer_auth("admin-token-0123456789")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        report["pending"][0]["would_post"]["account"], "Monzo Current",
        "{report}"
    );
}

// ---- voids: a reversed or deleted pending authorisation -------------------------------------

/// `card-pending`'s feed item, which `card-reversed` voids.
const STARLING_PENDING: &str = "starling:1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d";
const VOID_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// The bank settings of [`banks`], delivering to `fake` (Starling and Up into "Checking").
fn banks_delivering_to(
    fake: &support::fake_lunchmoney::FakeHandle,
) -> impl FnOnce(&mut lm_ingest::settings::Settings) + '_ {
    use lm_ingest::settings::{NameOrId, SourceMapping};
    use support::fake_lunchmoney::seed;
    move |s| {
        s.hooks.insert(
            "starling".into(),
            HookSettings {
                scheme: Some(VerifyScheme::Starling),
                secret: Secret::new(STARLING_SECRET),
                ..Default::default()
            },
        );
        s.lunchmoney.token = Secret::new(seed::TOKEN);
        s.lunchmoney.base_url = Some(fake.base_url());
        s.lunchmoney.max_backoff_secs = 1;
        for bank in ["starling", "up"] {
            s.lunchmoney.sources.insert(
                bank.into(),
                SourceMapping {
                    account: Some(NameOrId::Id(seed::CHECKING)),
                    ..Default::default()
                },
            );
        }
    }
}

async fn post_starling(app: &TestApp, case: &str) -> Value {
    let body = bank_fixture("starling", case);
    let signature = starling_v1_sign(&body);
    let (status, answer) = post(
        app,
        "/hooks/starling",
        body,
        Some(("X-Hook-Signature", signature)),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    answer
}

fn state_in(store_path: &std::path::Path, external_id: &str) -> String {
    let store = lm_ingest::store::Store::open(store_path).unwrap();
    store
        .transaction_by_external_id(external_id)
        .unwrap()
        .expect("stored")
        .state
}

#[tokio::test]
async fn starling_reversed_before_delivery_is_never_sent() {
    let fake = support::fake_lunchmoney::FakeLunchMoney::start();
    // Received while delivery is off (no token: a dry run), delivered after a restart.
    let app = banks().await;
    post_starling(&app, "card-pending").await;
    let answer = post_starling(&app, "card-reversed").await;
    assert_eq!(answer["voided_transactions"], 1, "{answer}");
    let dir = app.stop().await;
    let mut settings = settings_for(dir.path());
    banks_delivering_to(&fake)(&mut settings);
    let app = spawn_in(dir, settings);
    // Another feed item, so there is something whose arrival shows the queue was worked.
    post_starling(&app, "faster-payment-in").await;
    let delivered = fake.wait_for_transactions(1, VOID_WAIT).await;
    assert_eq!(delivered.len(), 1);
    assert!(fake.transaction_by_external_id(STARLING_PENDING).is_none());
    assert_eq!(fake.request_count("DELETE /v2/transactions/{id}"), 0);
    let store_path = app.store_path();
    let _dir = app.stop().await;
    assert_eq!(state_in(&store_path, STARLING_PENDING), "voided");
}

#[tokio::test]
async fn starling_reversed_after_delivery_is_deleted_from_lunch_money() {
    let fake = support::fake_lunchmoney::FakeLunchMoney::start();
    let app = spawn_app_with(banks_delivering_to(&fake)).await;
    post_starling(&app, "card-pending").await;
    let delivered = fake.wait_for_transactions(1, VOID_WAIT).await;
    assert_eq!(delivered[0].external_id.as_deref(), Some(STARLING_PENDING));
    let answer = post_starling(&app, "card-reversed").await;
    assert_eq!(answer["voided_transactions"], 1, "{answer}");
    assert!(
        fake.wait_until(VOID_WAIT, |f| f.transactions().is_empty())
            .await,
        "still there: {:?}",
        fake.request_counts()
    );
    assert_eq!(fake.request_count("DELETE /v2/transactions/{id}"), 1);
    assert!(fake.rejections().is_empty(), "{:?}", fake.rejections());
    let store_path = app.store_path();
    // The store records the delete once Lunch Money answered; wait for that too.
    let deadline = std::time::Instant::now() + VOID_WAIT;
    loop {
        let summary = lm_ingest::store::Store::open(&store_path)
            .unwrap()
            .outbox_summary(chrono::Utc::now())
            .unwrap();
        if summary.deleted == 1 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{summary:?}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let _dir = app.stop().await;
    assert_eq!(state_in(&store_path, STARLING_PENDING), "deleted");
}

#[tokio::test]
async fn a_void_that_arrives_before_its_transaction_keeps_it_from_being_sent() {
    let fake = support::fake_lunchmoney::FakeLunchMoney::start();
    let app = spawn_app_with(banks_delivering_to(&fake)).await;
    let answer = post_starling(&app, "card-reversed").await;
    assert_eq!(answer["voided_transactions"], 1, "{answer}");
    let answer = post_starling(&app, "card-pending").await;
    assert_eq!(
        (
            answer["new_transactions"].clone(),
            answer["updated_transactions"].clone()
        ),
        (0.into(), 0.into()),
        "{answer}"
    );
    post_starling(&app, "faster-payment-in").await;
    fake.wait_for_transactions(1, VOID_WAIT).await;
    assert!(fake.transaction_by_external_id(STARLING_PENDING).is_none());
    assert_eq!(fake.request_count("DELETE /v2/transactions/{id}"), 0);
    let store_path = app.store_path();
    let _dir = app.stop().await;
    assert_eq!(state_in(&store_path, STARLING_PENDING), "voided");
}

#[tokio::test]
async fn up_transaction_deleted_deletes_the_held_payment() {
    let api = up_api();
    let fake = support::fake_lunchmoney::FakeLunchMoney::start();
    let base = api.base_url.clone();
    let deliver = banks_delivering_to(&fake);
    let app = spawn_app_with(move |s| {
        deliver(s);
        s.hooks.insert("up".into(), up_hook(base));
    })
    .await;
    let (status, body) = post_up(&app, &up_fixture("created-held")["event"], UP_SECRET).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    fake.wait_for_transactions(1, VOID_WAIT).await;
    let (status, body) = post_up(&app, &up_fixture("deleted"), UP_SECRET).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["voided_transactions"], 1, "{body}");
    assert!(
        fake.wait_until(VOID_WAIT, |f| f.transactions().is_empty())
            .await,
        "still there: {:?}",
        fake.request_counts()
    );
    assert_eq!(fake.request_count("DELETE /v2/transactions/{id}"), 1);
    assert_eq!(
        api.requests.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "a deleted transaction is not fetched"
    );
    app.stop().await;
    api.handle.stop(true).await;
}

/// API v1 has no delete: the voided transaction is dead-lettered with the id to delete by hand,
/// and nothing else is asked of Lunch Money.
#[tokio::test]
async fn on_api_v1_a_delivered_void_is_a_dead_letter_naming_the_id() {
    let fake = support::fake_lunchmoney::FakeLunchMoney::start();
    let deliver = banks_delivering_to(&fake);
    let app = spawn_app_with(move |s| {
        deliver(s);
        s.lunchmoney.api = lm_ingest::settings::ApiVersion::V1;
    })
    .await;
    post_starling(&app, "card-pending").await;
    let delivered = fake.wait_for_transactions(1, VOID_WAIT).await;
    let lunchmoney_id = delivered[0].id;
    post_starling(&app, "card-reversed").await;
    let store_path = app.store_path();
    let deadline = std::time::Instant::now() + VOID_WAIT;
    let dead = loop {
        let store = lm_ingest::store::Store::open(&store_path).unwrap();
        let dead = store.transactions_in_state("dead", 10).unwrap();
        if !dead.is_empty() {
            break dead;
        }
        assert!(std::time::Instant::now() < deadline, "never dead-lettered");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert_eq!(dead[0].transaction.external_id, STARLING_PENDING);
    let error = dead[0].last_error.clone().unwrap();
    assert!(
        error.contains("API v1 cannot delete")
            && error.contains(&format!("transaction {lunchmoney_id} by hand")),
        "{error}"
    );
    assert_eq!(fake.transactions().len(), 1, "still in Lunch Money");
    assert!(
        fake.requests().iter().all(|r| r.method != "DELETE"),
        "no request v1 cannot serve"
    );
    app.stop().await;
}
