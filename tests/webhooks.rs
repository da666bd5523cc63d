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
