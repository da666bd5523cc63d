//! US bank alert mail through `POST /inbound/email` on the real server: the card's or account's
//! last four digits pick the Lunch Money account, and mail naming none falls back to the source's
//! own account.

mod support;

use lm_ingest::settings::{NameOrId, SourceMapping};
use serde_json::Value;
use support::*;

const ADMIN: &str = "admin-token-0123456789";

fn bank_mail(plugin: &str, case: &str) -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(format!("fixtures/{plugin}/{case}.eml"));
    std::fs::read(path).unwrap()
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

#[tokio::test]
async fn chase_mail_goes_to_the_account_its_last_four_digits_map_to() {
    let app = spawn_app_with(|s| {
        s.admin.token = lm_ingest::settings::Secret::new(ADMIN);
        let mut chase = SourceMapping {
            account: Some(NameOrId::Name("Chase Checking".into())),
            ..Default::default()
        };
        chase.accounts.insert(
            "4821".into(),
            NameOrId::Name("Chase Freedom Unlimited".into()),
        );
        chase
            .accounts
            .insert("7730".into(), NameOrId::Name("Sapphire Preferred".into()));
        s.lunchmoney.sources.insert("chase".into(), chase);
    })
    .await;

    let card = post_email(&app, bank_mail("chase", "card-made-a-transaction")).await;
    assert_eq!(card["status"], "queued", "{card}");
    assert_eq!(card["plugin"], "chase");
    let forwarded = post_email(&app, bank_mail("chase", "fwd-gmail")).await;
    assert_eq!(forwarded["status"], "queued", "{forwarded}");
    // A Zelle receipt names no account: the source's own account takes it.
    let zelle = post_email(&app, bank_mail("chase", "zelle-received")).await;
    assert_eq!(zelle["status"], "queued", "{zelle}");
    let declined = post_email(&app, bank_mail("chase", "declined")).await;
    assert_eq!(declined["status"], "ignored", "{declined}");

    let report: Value = app.admin_json("/admin/outbox", ADMIN).await;
    let pending = report["pending"].as_array().expect("pending list");
    let account_of = |payee: &str| {
        pending
            .iter()
            .find(|p| p["would_post"]["payee"] == payee)
            .map(|p| p["would_post"]["account"].clone())
            .unwrap_or_else(|| panic!("no pending transaction for {payee}: {report}"))
    };
    assert_eq!(pending.len(), 3, "{report}");
    assert_eq!(account_of("SQ *HARBOR COFFEE"), "Chase Freedom Unlimited");
    assert_eq!(account_of("UBER *EATS"), "Sapphire Preferred");
    assert_eq!(account_of("Morgan Ellis"), "Chase Checking");
}
