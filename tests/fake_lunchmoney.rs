//! Tests of the fake Lunch Money itself (tests/support/fake_lunchmoney.rs): that it is as strict
//! as the real API (each rejection rule, with its status and body shape), dedupes as the real API
//! does, keeps v1's 200-with-error behaviour, and that each injected fault does what it says.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use reqwest::header::HeaderMap;
use serde_json::{json, Value};
use support::fake_lunchmoney::{seed, Api, FakeHandle, FakeLunchMoney, Faults, Outcome};

struct Resp {
    status: u16,
    headers: HeaderMap,
    body: Value,
}

async fn send(fake: &FakeHandle, method: &str, path: &str, body: Option<Value>) -> Resp {
    send_with(fake, method, path, body, Some(seed::TOKEN)).await
}

async fn send_with(
    fake: &FakeHandle,
    method: &str,
    path: &str,
    body: Option<Value>,
    token: Option<&str>,
) -> Resp {
    let client = reqwest::Client::new();
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut req = client.request(method, fake.url(path));
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    if let Some(body) = body {
        req = req.json(&body);
    }
    let resp = req.send().await.expect("the fake answers");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let text = resp.text().await.unwrap();
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
    };
    Resp {
        status,
        headers,
        body,
    }
}

async fn v2_insert(fake: &FakeHandle, body: Value) -> Resp {
    send(fake, "POST", "/v2/transactions", Some(body)).await
}

async fn v2_one(fake: &FakeHandle, tx: Value) -> Resp {
    v2_insert(fake, json!({"transactions": [tx]})).await
}

async fn v1_insert(fake: &FakeHandle, body: Value) -> Resp {
    send(fake, "POST", "/v1/transactions", Some(body)).await
}

/// A valid v2 transaction in the Venmo account.
fn tx(external_id: &str) -> Value {
    json!({
        "date": "2024-03-01",
        "amount": "25.00",
        "currency": "usd",
        "payee": "Taylor Brooks",
        "notes": "Pizza",
        "manual_account_id": seed::VENMO,
        "external_id": external_id,
    })
}

fn with(mut base: Value, key: &str, value: Value) -> Value {
    base[key] = value;
    base
}

fn without(mut base: Value, key: &str) -> Value {
    base.as_object_mut().unwrap().remove(key);
    base
}

/// Asserts a v2 400 naming `prop` (for transaction `index`) with a message containing `needle`.
#[track_caller]
fn assert_v2_400(resp: &Resp, index: Option<usize>, prop: &str, needle: &str) {
    assert_eq!(resp.status, 400, "{}", resp.body);
    assert_eq!(
        resp.body["message"], "Request Validation Failure",
        "{}",
        resp.body
    );
    let errors = resp.body["errors"].as_array().expect("errors array");
    let hit = errors.iter().find(|e| {
        e["invalid_property"] == prop
            && e["errMsg"].as_str().unwrap_or("").contains(needle)
            && match index {
                Some(i) => e["transaction_index"] == i,
                None => e.get("transaction_index").is_none(),
            }
    });
    assert!(
        hit.is_some(),
        "no error for {prop:?} containing {needle:?} at {index:?}: {}",
        resp.body
    );
}

// ----------------------------------------------------------------------------------------------
// Auth
// ----------------------------------------------------------------------------------------------

#[tokio::test]
async fn v1_and_v2_require_the_bearer_token() {
    let fake = FakeLunchMoney::start();
    let none = send_with(
        &fake,
        "POST",
        "/v2/transactions",
        Some(json!({"transactions": [tx("a")]})),
        None,
    )
    .await;
    assert_eq!(none.status, 401);
    assert_eq!(
        none.body,
        json!({"message": "Unauthorized", "errors": [{"errMsg": "Access token does not exist."}]})
    );
    let wrong = send_with(&fake, "GET", "/v2/me", None, Some("not-the-token")).await;
    assert_eq!(wrong.status, 401);
    let v1 = send_with(&fake, "GET", "/v1/assets", None, None).await;
    assert_eq!(v1.status, 401);
    assert_eq!(v1.body, json!({"error": "Access token does not exist."}));
    // Basic auth with the right token as password is not bearer auth.
    let client = reqwest::Client::new();
    let basic = client
        .get(fake.url("/v2/me"))
        .basic_auth("x", Some(seed::TOKEN))
        .send()
        .await
        .unwrap();
    assert_eq!(basic.status().as_u16(), 401);

    assert!(fake.transactions().is_empty());
    assert_eq!(fake.rejections().len(), 4);
    assert!(fake.rejections().iter().all(|r| r.status == 401));
    assert_eq!(send(&fake, "GET", "/v2/me", None).await.status, 200);
}

// ----------------------------------------------------------------------------------------------
// v2 insert: validation
// ----------------------------------------------------------------------------------------------

#[tokio::test]
async fn v2_valid_insert_is_stored_as_sent() {
    let fake = FakeLunchMoney::start();
    let resp = v2_insert(
        &fake,
        json!({
            "transactions": [
                with(with(tx("venmo:1"), "tag_ids", json!([seed::TAG_VENMO])), "category_id", json!(seed::RESTAURANTS)),
                {"date": "2024-03-02", "amount": -12.5, "payee": "Refund", "status": "reviewed"},
            ],
            "apply_rules": true,
            "skip_balance_update": true,
        }),
    )
    .await;
    assert_eq!(resp.status, 201, "{}", resp.body);
    let created = resp.body["transactions"].as_array().unwrap();
    assert_eq!(created.len(), 2);
    assert_eq!(resp.body["skipped_duplicates"], json!([]));
    let first = &created[0];
    assert!(first["id"].as_i64().unwrap() > 0);
    assert_eq!(first["amount"], "25.0000");
    assert_eq!(first["manual_account_id"], seed::VENMO);
    assert_eq!(first["external_id"], "venmo:1");
    assert_eq!(first["tag_ids"], json!([seed::TAG_VENMO]));
    assert_eq!(first["status"], "unreviewed");
    assert_eq!(first["source"], "api");
    assert_eq!(
        created[1]["currency"], "usd",
        "defaults to the primary currency"
    );
    assert_eq!(
        created[1]["manual_account_id"],
        Value::Null,
        "cash transaction"
    );

    let stored = fake.transactions();
    assert_eq!(stored.len(), 2);
    let s = &stored[0];
    assert_eq!(s.api, Api::V2);
    assert_eq!(s.id, first["id"].as_i64().unwrap());
    assert_eq!(s.amount, "25.00", "amount exactly as sent");
    assert_eq!(s.amount_json, json!("25.00"));
    assert_eq!(s.debit_amount, "25.0000", "v2: positive = debit");
    assert_eq!(s.manual_account_id, Some(seed::VENMO));
    assert_eq!(s.external_id.as_deref(), Some("venmo:1"));
    assert_eq!(s.category_id, Some(seed::RESTAURANTS));
    assert_eq!(s.payee.as_deref(), Some("Taylor Brooks"));
    assert!(s.flags.apply_rules && s.flags.skip_balance_update && !s.flags.skip_duplicates);
    assert_eq!(s.request_index, 0);
    assert_eq!(stored[1].amount, "-12.5", "a number's JSON text");
    assert_eq!(stored[1].debit_amount, "-12.5000");
    assert_eq!(stored[1].status, "reviewed");
    assert_eq!(stored[1].request_seq, s.request_seq);
    assert_eq!(fake.transactions_in(seed::VENMO).len(), 1);
    assert_eq!(fake.transaction_by_external_id("venmo:1").unwrap().id, s.id);
}

#[tokio::test]
async fn v2_rejects_unknown_keys_on_the_body_and_each_transaction() {
    let fake = FakeLunchMoney::start();
    let resp = v2_insert(
        &fake,
        json!({"transactions": [tx("a")], "debit_as_negative": true}),
    )
    .await;
    assert_v2_400(
        &resp,
        None,
        "debit_as_negative",
        "Invalid property 'debit_as_negative' in request body.",
    );
    let resp = v2_insert(
        &fake,
        json!({"transactions": [tx("a")], "check_for_recurring": true}),
    )
    .await;
    assert_v2_400(&resp, None, "check_for_recurring", "Invalid property");

    let resp = v2_insert(
        &fake,
        json!({"transactions": [tx("a"), with(tx("b"), "asset_id", json!(seed::VENMO))]}),
    )
    .await;
    assert_eq!(
        resp.body["errors"][0]["errMsg"],
        "Invalid property 'asset_id' in transactions[1]."
    );
    assert_v2_400(&resp, Some(1), "asset_id", "Invalid property 'asset_id'");
    for v1_key in ["tags", "debit_as_negative", "id", "to_base"] {
        let resp = v2_one(&fake, with(tx("a"), v1_key, json!(1))).await;
        assert_v2_400(&resp, Some(0), v1_key, "Invalid property");
    }
    assert!(fake.transactions().is_empty());
}

#[tokio::test]
async fn v2_requires_1_to_500_transactions() {
    let fake = FakeLunchMoney::start();
    let resp = v2_insert(&fake, json!({"apply_rules": true})).await;
    assert_v2_400(
        &resp,
        None,
        "transactions",
        "Missing required property 'transactions' in request body.",
    );
    let resp = v2_insert(&fake, json!({"transactions": []})).await;
    assert_v2_400(&resp, None, "transactions", "1 to 500");
    let resp = v2_insert(&fake, json!({"transactions": tx("a")})).await;
    assert_v2_400(
        &resp,
        None,
        "transactions",
        "Expected 'array', received 'object'",
    );
    let resp = v2_insert(&fake, json!({"transactions": ["x"]})).await;
    assert_v2_400(&resp, Some(0), "transactions", "must be an object");

    let many = |n: usize| -> Value {
        json!({"transactions": (0..n).map(|i| tx(&format!("id-{i}"))).collect::<Vec<_>>()})
    };
    let resp = v2_insert(&fake, many(501)).await;
    assert_v2_400(&resp, None, "transactions", "received 501");
    assert!(fake.transactions().is_empty());
    let resp = v2_insert(&fake, many(500)).await;
    assert_eq!(resp.status, 201);
    assert_eq!(fake.transactions().len(), 500);

    let resp = v2_one(&fake, without(tx("x"), "date")).await;
    assert_v2_400(
        &resp,
        Some(0),
        "date",
        "Missing required property 'date' in transactions[0].",
    );
    let resp = v2_one(&fake, without(tx("x"), "amount")).await;
    assert_v2_400(
        &resp,
        Some(0),
        "amount",
        "Missing required property 'amount'",
    );
}

#[tokio::test]
async fn v2_dates_must_be_real_yyyy_mm_dd() {
    let fake = FakeLunchMoney::start();
    for bad in [
        json!("2024-13-01"),
        json!("2024-02-30"),
        json!("2024/03/01"),
        json!("20240301"),
        json!("2024-3-1"),
        json!("2024-03-01T00:00:00Z"),
        json!(""),
        json!(20240301),
        json!(null),
    ] {
        let resp = v2_one(&fake, with(tx("a"), "date", bad.clone())).await;
        assert_v2_400(
            &resp,
            Some(0),
            "date",
            "date must be a valid date in YYYY-MM-DD format",
        );
    }
    assert_eq!(
        v2_one(&fake, with(tx("a"), "date", json!("2024-02-29")))
            .await
            .status,
        201
    );
}

#[tokio::test]
async fn v2_amounts_are_numbers_or_strings_with_at_most_4_decimals() {
    let fake = FakeLunchMoney::start();
    for bad in [
        json!("1.23456"),
        json!("$5"),
        json!("1,000.00"),
        json!(""),
        json!("1."),
        json!(".5"),
        json!("+5"),
        json!(" 5"),
        json!("1e3"),
        json!(true),
        json!(null),
        json!([1]),
    ] {
        let resp = v2_one(&fake, with(tx("a"), "amount", bad.clone())).await;
        assert_v2_400(
            &resp,
            Some(0),
            "amount",
            "amount must be a number or a string",
        );
    }
    for (i, good) in [
        json!("-25.00"),
        json!("25"),
        json!("0.1234"),
        json!(12.5),
        json!(-3),
        json!("1000000.5"),
    ]
    .into_iter()
    .enumerate()
    {
        let resp = v2_one(&fake, with(tx(&format!("ok-{i}")), "amount", good.clone())).await;
        assert_eq!(resp.status, 201, "{good}: {}", resp.body);
    }
}

#[tokio::test]
async fn v2_currency_is_a_supported_lowercase_code() {
    let fake = FakeLunchMoney::start();
    for bad in [
        json!("USD"),
        json!("Eur"),
        json!("xyz"),
        json!("us"),
        json!(""),
        json!(840),
        json!(null),
    ] {
        let resp = v2_one(&fake, with(tx("a"), "currency", bad.clone())).await;
        assert_v2_400(
            &resp,
            Some(0),
            "currency",
            "currency must be a supported lowercase ISO 4217 code",
        );
    }
    for (i, good) in ["usd", "eur", "gbp", "cad", "aud", "jpy", "chf", "mxn"]
        .into_iter()
        .enumerate()
    {
        let resp = v2_one(&fake, with(tx(&format!("c{i}")), "currency", json!(good))).await;
        assert_eq!(resp.status, 201, "{good}: {}", resp.body);
    }
}

#[tokio::test]
async fn v2_payee_and_notes_lengths_are_limited() {
    let fake = FakeLunchMoney::start();
    let resp = v2_one(&fake, with(tx("a"), "payee", json!("p".repeat(141)))).await;
    assert_v2_400(
        &resp,
        Some(0),
        "payee",
        "payee must be at most 140 characters, received 141",
    );
    let resp = v2_one(&fake, with(tx("a"), "notes", json!("n".repeat(351)))).await;
    assert_v2_400(
        &resp,
        Some(0),
        "notes",
        "notes must be at most 350 characters, received 351",
    );
    let resp = v2_one(&fake, with(tx("a"), "payee", Value::Null)).await;
    assert_v2_400(
        &resp,
        Some(0),
        "payee",
        "Expected 'string', received 'null'",
    );
    // Characters, not bytes.
    let resp = v2_one(
        &fake,
        with(
            with(tx("a"), "payee", json!("é".repeat(140))),
            "notes",
            json!("🍕".repeat(350)),
        ),
    )
    .await;
    assert_eq!(resp.status, 201, "{}", resp.body);
    assert_eq!(
        v2_one(&fake, with(tx("b"), "notes", Value::Null))
            .await
            .status,
        201
    );

    let lenient = FakeLunchMoney::seeded()
        .text_limits(None, Some(1000))
        .start();
    assert_eq!(
        v2_one(
            &lenient,
            with(
                with(tx("a"), "payee", json!("p".repeat(500))),
                "notes",
                json!("n".repeat(1000))
            )
        )
        .await
        .status,
        201
    );
}

#[tokio::test]
async fn v2_accounts_categories_tags_and_recurring_items_must_exist() {
    let fake = FakeLunchMoney::start();
    let resp = v2_one(&fake, with(tx("a"), "manual_account_id", json!(9999999))).await;
    assert_v2_400(
        &resp,
        Some(0),
        "manual_account_id",
        "transactions[0] manual account ID does not exist: 9999999",
    );
    let resp = v2_one(
        &fake,
        with(
            without(tx("a"), "external_id"),
            "plaid_account_id",
            json!(777),
        ),
    )
    .await;
    assert_v2_400(
        &resp,
        Some(0),
        "plaid_account_id",
        "plaid account ID does not exist: 777",
    );
    let both = with(
        without(tx("a"), "external_id"),
        "plaid_account_id",
        json!(seed::PLAID_CARD),
    );
    assert_v2_400(
        &v2_one(&fake, both).await,
        Some(0),
        "plaid_account_id",
        "may not set both",
    );
    let resp = v2_one(&fake, with(tx("a"), "manual_account_id", json!("1002"))).await;
    assert_v2_400(
        &resp,
        Some(0),
        "manual_account_id",
        "Expected 'integer', received 'string'",
    );

    let resp = v2_one(&fake, with(tx("a"), "category_id", json!(31337))).await;
    assert_v2_400(
        &resp,
        Some(0),
        "category_id",
        "category ID does not exist: 31337",
    );
    let resp = v2_one(&fake, with(tx("a"), "category_id", json!(seed::FOOD_GROUP))).await;
    assert_v2_400(
        &resp,
        Some(0),
        "category_id",
        &format!("category ID is a category group: {}", seed::FOOD_GROUP),
    );

    let resp = v2_one(
        &fake,
        with(tx("a"), "tag_ids", json!([seed::TAG_VENMO, 4999])),
    )
    .await;
    assert_v2_400(&resp, Some(0), "tag_ids", "tag ID does not exist: 4999");
    let resp = v2_one(&fake, with(tx("a"), "tag_ids", json!(["venmo"]))).await;
    assert_v2_400(&resp, Some(0), "tag_ids", "must contain integers");
    let resp = v2_one(&fake, with(tx("a"), "tag_ids", Value::Null)).await;
    assert_v2_400(&resp, Some(0), "tag_ids", "Expected 'array'");

    let resp = v2_one(&fake, with(tx("a"), "recurring_id", json!(88888888))).await;
    assert_v2_400(
        &resp,
        Some(0),
        "recurring_id",
        "recurring ID does not exist: 88888888",
    );

    // Synced accounts take no external_id.
    let resp = v2_one(
        &fake,
        with(
            without(tx("a"), "manual_account_id"),
            "plaid_account_id",
            json!(seed::PLAID_CARD),
        ),
    )
    .await;
    assert_v2_400(&resp, Some(0), "external_id", "synced (Plaid) account");

    let ok = json!({"date": "2024-03-01", "amount": "1", "plaid_account_id": seed::PLAID_CARD,
        "category_id": seed::GROCERIES, "recurring_id": seed::RECURRING, "tag_ids": [seed::TAG_VENMO, seed::TAG_REIMBURSABLE],
        "manual_account_id": null, "original_name": null, "custom_metadata": {"k": [1, "x"]}});
    assert_eq!(v2_one(&fake, ok).await.status, 201);
    assert_eq!(fake.transactions().len(), 1);
}

#[tokio::test]
async fn v2_status_external_id_flags_and_metadata_are_checked() {
    let fake = FakeLunchMoney::start();
    for bad in ["cleared", "uncleared", "pending", "Reviewed"] {
        let resp = v2_one(&fake, with(tx("a"), "status", json!(bad))).await;
        assert_v2_400(
            &resp,
            Some(0),
            "status",
            "status must be either 'reviewed' or 'unreviewed'",
        );
    }
    let resp = v2_one(&fake, with(tx("a"), "external_id", json!("x".repeat(76)))).await;
    assert_v2_400(
        &resp,
        Some(0),
        "external_id",
        "external_id must be at most 75 characters, received 76",
    );
    let resp = v2_one(&fake, with(tx("a"), "external_id", json!(12345))).await;
    assert_v2_400(&resp, Some(0), "external_id", "Expected 'string'");
    assert_eq!(
        v2_one(&fake, with(tx("a"), "external_id", json!("x".repeat(75))))
            .await
            .status,
        201
    );

    for flag in ["apply_rules", "skip_duplicates", "skip_balance_update"] {
        let resp = v2_insert(&fake, json!({"transactions": [tx("b")], flag: "true"})).await;
        assert_v2_400(&resp, None, flag, "Expected 'boolean', received 'string'");
    }
    let resp = v2_one(
        &fake,
        with(tx("b"), "custom_metadata", json!({"k": "v".repeat(4100)})),
    )
    .await;
    assert_v2_400(
        &resp,
        Some(0),
        "custom_metadata",
        "must not exceed 4096 characters",
    );
    let resp = v2_one(&fake, with(tx("b"), "custom_metadata", json!("text"))).await;
    assert_v2_400(&resp, Some(0), "custom_metadata", "Expected 'object'");
    assert_eq!(fake.transactions().len(), 1);
}

#[tokio::test]
async fn v2_the_same_external_id_twice_in_one_request_is_400() {
    let fake = FakeLunchMoney::start();
    let resp = v2_insert(
        &fake,
        json!({"transactions": [tx("dup"), tx("other"), with(tx("dup"), "manual_account_id", json!(seed::CHECKING))]}),
    )
    .await;
    assert_eq!(resp.status, 400);
    assert_eq!(resp.body["message"], "Request Validation Failure");
    let err = &resp.body["errors"][0];
    assert_eq!(
        err["errMsg"],
        "Duplicate External IDs found in the request body"
    );
    assert_eq!(err["external_id"], "dup");
    assert_eq!(err["transactions_indices"], json!([0, 2]));
    assert!(fake.transactions().is_empty());
}

#[tokio::test]
async fn v2_one_invalid_transaction_refuses_the_whole_batch_and_lists_every_error() {
    let fake = FakeLunchMoney::start();
    let resp = v2_insert(
        &fake,
        json!({"transactions": [tx("a"), with(tx("b"), "currency", json!("USD")), tx("c"), with(tx("d"), "date", json!("2024-02-31"))]}),
    )
    .await;
    assert_v2_400(&resp, Some(1), "currency", "transactions[1] currency");
    assert_v2_400(&resp, Some(3), "date", "transactions[3] date");
    assert_eq!(resp.body["errors"].as_array().unwrap().len(), 2);
    assert!(fake.transactions().is_empty());
    let rejection = fake.rejections().pop().unwrap();
    assert_eq!(rejection.status, 400);
    assert_eq!(rejection.endpoint, "POST /v2/transactions");
    assert!(
        rejection.reason.contains("transactions[1] currency"),
        "{}",
        rejection.reason
    );
}

#[tokio::test]
async fn v2_bodies_must_be_json_objects() {
    let fake = FakeLunchMoney::start();
    let client = reqwest::Client::new();
    let as_text = client
        .post(fake.url("/v2/transactions"))
        .bearer_auth(seed::TOKEN)
        .header("content-type", "text/plain")
        .body(json!({"transactions": [tx("a")]}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(as_text.status().as_u16(), 400);
    let body: Value = as_text.json().await.unwrap();
    assert_eq!(body["message"], "Invalid Request Body");
    assert!(body["errors"][0]["errMsg"]
        .as_str()
        .unwrap()
        .contains("Content-Type"));

    let broken = client
        .post(fake.url("/v2/transactions"))
        .bearer_auth(seed::TOKEN)
        .header("content-type", "application/json")
        .body("{\"transactions\": [")
        .send()
        .await
        .unwrap();
    assert_eq!(broken.status().as_u16(), 400);
    let resp = send(&fake, "POST", "/v2/transactions", Some(json!([tx("a")]))).await;
    assert_eq!(resp.status, 400);
    assert!(resp.body["errors"][0]["errMsg"]
        .as_str()
        .unwrap()
        .contains("JSON object"));
}

// ----------------------------------------------------------------------------------------------
// v2 insert: dedupe
// ----------------------------------------------------------------------------------------------

#[tokio::test]
async fn v2_dedupes_by_manual_account_and_external_id() {
    let fake = FakeLunchMoney::start();
    let first = v2_insert(
        &fake,
        json!({"transactions": [tx("venmo:1"), tx("venmo:2")]}),
    )
    .await;
    assert_eq!(first.status, 201);
    let existing_id = first.body["transactions"][0]["id"].clone();

    let again = with(tx("venmo:1"), "notes", json!("a retry"));
    let resp = v2_insert(
        &fake,
        json!({"transactions": [tx("venmo:3"), again.clone()]}),
    )
    .await;
    assert_eq!(resp.status, 201, "skips are not errors");
    assert_eq!(
        resp.body["transactions"].as_array().unwrap().len(),
        1,
        "venmo:3"
    );
    assert_eq!(
        resp.body["skipped_duplicates"],
        json!([{
            "reason": "duplicate_external_id",
            "request_transactions_index": 1,
            "existing_transaction_id": existing_id,
            "request_transaction": again,
        }])
    );
    assert_eq!(fake.transactions().len(), 3);
    // The same external id in another account is another transaction.
    let other_account = v2_one(
        &fake,
        with(tx("venmo:1"), "manual_account_id", json!(seed::CHECKING)),
    )
    .await;
    assert_eq!(other_account.body["skipped_duplicates"], json!([]));
    assert_eq!(fake.transactions().len(), 4);

    // skip_duplicates does not matter for external ids; cash transactions are not deduped by them.
    let resp = v2_insert(
        &fake,
        json!({"transactions": [tx("venmo:2")], "skip_duplicates": false}),
    )
    .await;
    assert_eq!(
        resp.body["skipped_duplicates"][0]["reason"],
        "duplicate_external_id"
    );
    let cash = without(tx("cash:1"), "manual_account_id");
    assert_eq!(
        v2_one(&fake, cash.clone()).await.body["skipped_duplicates"],
        json!([])
    );
    assert_eq!(
        v2_one(&fake, cash).await.body["skipped_duplicates"],
        json!([])
    );
    assert_eq!(fake.transactions().len(), 6);
}

#[tokio::test]
async fn v2_payee_amount_date_duplicates_are_skipped_only_with_skip_duplicates() {
    let fake = FakeLunchMoney::start();
    let base = json!({"date": "2024-03-01", "amount": "25.00", "payee": "Taylor Brooks", "manual_account_id": seed::VENMO});
    let first = v2_one(&fake, base.clone()).await;
    let existing = first.body["transactions"][0]["id"].clone();

    let same_amount = with(base.clone(), "amount", json!(25));
    let resp = v2_one(&fake, same_amount.clone()).await;
    assert_eq!(
        resp.body["skipped_duplicates"],
        json!([]),
        "without skip_duplicates it is inserted"
    );

    let resp = v2_insert(
        &fake,
        json!({"skip_duplicates": true, "transactions": [
            with(base.clone(), "date", json!("2024-03-02")),
            same_amount.clone(),
            with(base.clone(), "manual_account_id", json!(seed::CHECKING)),
            with(base.clone(), "payee", json!("Someone else")),
        ]}),
    )
    .await;
    assert_eq!(resp.status, 201);
    assert_eq!(resp.body["transactions"].as_array().unwrap().len(), 3);
    let skipped = resp.body["skipped_duplicates"].as_array().unwrap();
    assert_eq!(skipped.len(), 1);
    assert_eq!(skipped[0]["reason"], "duplicate_payee_amount_date");
    assert_eq!(skipped[0]["request_transactions_index"], 1);
    assert_eq!(skipped[0]["existing_transaction_id"], existing);
    assert_eq!(skipped[0]["request_transaction"], same_amount);
}

// ----------------------------------------------------------------------------------------------
// v1
// ----------------------------------------------------------------------------------------------

#[tokio::test]
async fn v1_insert_returns_ids_and_keeps_its_sign_convention() {
    let fake = FakeLunchMoney::start();
    let resp = v1_insert(
        &fake,
        json!({
            "transactions": [
                {"date": "2024-03-01", "amount": "-25.00", "currency": "usd", "payee": "Taylor", "asset_id": seed::VENMO,
                 "external_id": "venmo:1", "status": "cleared", "tags": [seed::TAG_VENMO]},
                {"date": "2024-03-02", "amount": 40, "notes": "paid back"},
            ],
            "debit_as_negative": true,
            "apply_rules": false,
            "check_for_recurring": false,
            "skip_duplicates": false,
            "skip_balance_update": true,
        }),
    )
    .await;
    assert_eq!(resp.status, 200);
    let ids = resp.body["ids"].as_array().unwrap();
    assert_eq!(ids.len(), 2);
    let stored = fake.transactions();
    assert_eq!(stored[0].api, Api::V1);
    assert_eq!(stored[0].id, ids[0].as_i64().unwrap());
    assert_eq!(stored[0].amount, "-25.00");
    assert_eq!(
        stored[0].debit_amount, "25.0000",
        "debit_as_negative: -25 is a 25 expense"
    );
    assert_eq!(stored[1].debit_amount, "-40.0000");
    assert_eq!(stored[0].manual_account_id, Some(seed::VENMO), "asset_id");
    assert_eq!(stored[0].status, "cleared");
    assert_eq!(stored[1].status, "uncleared");
    assert_eq!(stored[0].tag_ids, vec![seed::TAG_VENMO]);
    assert!(stored[0].flags.debit_as_negative && stored[0].flags.skip_balance_update);
}

#[tokio::test]
async fn v1_validation_errors_come_back_with_http_200() {
    let fake = FakeLunchMoney::start();
    let resp = v1_insert(
        &fake,
        json!({"transactions": [
            {"payee": "x"},
            {"date": "2024-03-01", "amount": "1", "status": null},
            {"date": "2024-03-01", "amount": "1", "asset_id": 999, "payee": "p".repeat(141), "notes": "n".repeat(351),
             "external_id": "e".repeat(76), "currency": "USD", "category_id": seed::FOOD_GROUP, "status": "reviewed"},
        ]}),
    )
    .await;
    assert_eq!(
        resp.status, 200,
        "v1 reports errors with 200: read the body"
    );
    let errors: Vec<&str> = resp.body["error"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap())
        .collect();
    for expected in [
        "Transaction 0 is missing date.",
        "Transaction 0 is missing amount.",
        "Transaction 1 status must be either cleared or uncleared: null",
        "Transaction 2 asset_id does not exist: 999",
        "Transaction 2 payee must be 140 characters or less.",
        "Transaction 2 notes must be 350 characters or less.",
        "Transaction 2 external_id must be 75 characters or less.",
        "Transaction 2 currency is not supported: USD",
        "Transaction 2 category_id is a category group: 3100",
        "Transaction 2 status must be either cleared or uncleared: reviewed",
    ] {
        assert!(
            errors.contains(&expected),
            "missing {expected:?} in {errors:?}"
        );
    }
    assert!(resp.body.get("ids").is_none());
    assert!(fake.transactions().is_empty());
    let rejection = fake.rejections().pop().unwrap();
    assert_eq!(
        (rejection.status, rejection.endpoint.as_str()),
        (200, "POST /v1/transactions")
    );
    assert!(rejection.reason.contains("Transaction 0 is missing date."));

    for body in [
        json!({"transactions": []}),
        json!({}),
        json!({"transactions": [{"date": "2024-03-01", "amount": "1", "manual_account_id": seed::VENMO}]}),
        json!({"transactions": [{"date": "2024-03-01", "amount": "1"}], "skip_duplicates": "yes"}),
        json!({"transactions": [{"date": "2024-03-01", "amount": "1"}], "tag_ids": [1]}),
        json!({"transactions": [{"date": "2024-03-01", "amount": "1", "asset_id": seed::VENMO, "plaid_account_id": seed::PLAID_CARD}]}),
        json!({"transactions": [{"date": "2024-03-01", "amount": "1", "external_id": "a"}, {"date": "2024-03-01", "amount": "2", "external_id": "a"}]}),
        json!({"transactions": (0..501).map(|_| json!({"date": "2024-03-01", "amount": "1"})).collect::<Vec<_>>()}),
    ] {
        let resp = v1_insert(&fake, body.clone()).await;
        assert_eq!(resp.status, 200);
        assert!(
            resp.body["error"].as_array().is_some_and(|e| !e.is_empty()),
            "{body} -> {}",
            resp.body
        );
    }
    assert!(fake.transactions().is_empty());
}

#[tokio::test]
async fn v1_tags_by_name_create_tags_and_unknown_ids_fail() {
    let fake = FakeLunchMoney::start();
    let resp = v1_insert(
        &fake,
        json!({"transactions": [{"date": "2024-03-01", "amount": "1", "tags": [seed::TAG_VENMO, "VENMO", "brand new"]}]}),
    )
    .await;
    assert_eq!(resp.status, 200, "{}", resp.body);
    assert!(resp.body["ids"].is_array(), "{}", resp.body);
    let new_tag = fake
        .tags()
        .into_iter()
        .find(|t| t.name == "brand new")
        .expect("tag created");
    assert_eq!(
        fake.transactions()[0].tag_ids,
        vec![seed::TAG_VENMO, seed::TAG_VENMO, new_tag.id]
    );
    let v2_tags = send(&fake, "GET", "/v2/tags", None).await;
    assert!(v2_tags.body["tags"]
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t["name"] == "brand new"));

    let resp = v1_insert(
        &fake,
        json!({"transactions": [{"date": "2024-03-01", "amount": "1", "tags": [424242]}]}),
    )
    .await;
    assert_eq!(
        resp.body["error"],
        json!(["Transaction 0 tag ID does not exist: 424242"])
    );
}

#[tokio::test]
async fn v1_dedupes_by_asset_and_external_id_silently_and_shares_ids_with_v2() {
    let fake = FakeLunchMoney::start();
    let v1 = |ext: &str| json!({"date": "2024-03-01", "amount": "-25.00", "payee": "Taylor", "asset_id": seed::VENMO, "external_id": ext});
    let resp = v1_insert(
        &fake,
        json!({"transactions": [v1("venmo:1")], "debit_as_negative": true}),
    )
    .await;
    assert_eq!(resp.body["ids"].as_array().unwrap().len(), 1);
    let resp = v1_insert(
        &fake,
        json!({"transactions": [v1("venmo:1"), v1("venmo:2")], "debit_as_negative": true}),
    )
    .await;
    assert_eq!(resp.status, 200);
    assert_eq!(
        resp.body["ids"].as_array().unwrap().len(),
        1,
        "the duplicate's id is missing: {}",
        resp.body
    );
    assert_eq!(fake.transactions().len(), 2);

    // The same account and external id through v2 is a duplicate too.
    let resp = v2_one(&fake, tx("venmo:2")).await;
    assert_eq!(
        resp.body["skipped_duplicates"][0]["reason"],
        "duplicate_external_id"
    );
    assert_eq!(
        resp.body["skipped_duplicates"][0]["existing_transaction_id"],
        fake.transactions()[1].id
    );
}

#[tokio::test]
async fn v1_resources() {
    let fake = FakeLunchMoney::start();
    let assets = send(&fake, "GET", "/v1/assets", None).await;
    assert_eq!(assets.status, 200);
    let list = assets.body["assets"].as_array().unwrap();
    assert_eq!(list.len(), 3);
    assert_eq!(list[1]["id"], seed::VENMO);
    assert_eq!(list[1]["name"], "Venmo");
    assert_eq!(list[2]["currency"], "eur");

    let tags = send(&fake, "GET", "/v1/tags", None).await;
    assert!(
        tags.body.is_array(),
        "v1 tags are a bare array: {}",
        tags.body
    );
    assert_eq!(
        tags.body[0],
        json!({"id": seed::TAG_VENMO, "name": "venmo", "description": null, "archived": false})
    );

    let categories = send(&fake, "GET", "/v1/categories", None).await;
    let list = categories.body["categories"].as_array().unwrap();
    assert_eq!(list.len(), 4);
    assert!(list
        .iter()
        .any(|c| c["id"] == seed::FOOD_GROUP && c["is_group"] == true));
    assert!(list
        .iter()
        .any(|c| c["id"] == seed::RESTAURANTS && c["group_id"] == seed::FOOD_GROUP));

    let updated = send(
        &fake,
        "PUT",
        &format!("/v1/assets/{}", seed::VENMO),
        Some(json!({"balance": "12.5", "balance_as_of": "2024-03-01T00:00:00Z"})),
    )
    .await;
    assert_eq!(updated.status, 200);
    assert_eq!(updated.body["balance"], "12.5000");
    assert_eq!(fake.manual_account(seed::VENMO).unwrap().balance, "12.5000");
    let bad = send(
        &fake,
        "PUT",
        &format!("/v1/assets/{}", seed::VENMO),
        Some(json!({"balance": "12,5"})),
    )
    .await;
    assert_eq!(bad.status, 400);
    assert!(bad.body["errors"].is_array());
    assert_eq!(
        send(
            &fake,
            "PUT",
            "/v1/assets/424242",
            Some(json!({"balance": "1"}))
        )
        .await
        .status,
        404
    );
}

// ----------------------------------------------------------------------------------------------
// v2 resources
// ----------------------------------------------------------------------------------------------

#[tokio::test]
async fn v2_resources() {
    let fake = FakeLunchMoney::start();
    let me = send(&fake, "GET", "/v2/me", None).await;
    assert_eq!(me.status, 200);
    assert_eq!(me.body["primary_currency"], "usd");

    let accounts = send(&fake, "GET", "/v2/manual_accounts", None).await;
    let list = accounts.body["manual_accounts"].as_array().unwrap();
    assert_eq!(
        list.iter()
            .map(|a| a["id"].as_i64().unwrap())
            .collect::<Vec<_>>(),
        vec![seed::CHECKING, seed::VENMO, seed::WISE_EUR]
    );
    assert_eq!(list[0]["balance"], "0.0000");

    let nested = send(&fake, "GET", "/v2/categories", None).await;
    let list = nested.body["categories"].as_array().unwrap();
    assert_eq!(list.len(), 3, "top level: Groceries, Salary, the group");
    let group = list.iter().find(|c| c["id"] == seed::FOOD_GROUP).unwrap();
    assert_eq!(group["is_group"], true);
    assert_eq!(group["children"][0]["id"], seed::RESTAURANTS);
    let flat = send(&fake, "GET", "/v2/categories?format=flattened", None).await;
    assert_eq!(flat.body["categories"].as_array().unwrap().len(), 4);
    let groups = send(&fake, "GET", "/v2/categories?is_group=true", None).await;
    assert_eq!(groups.body["categories"].as_array().unwrap().len(), 1);
    assert_eq!(
        send(&fake, "GET", "/v2/categories?format=tree", None)
            .await
            .status,
        400
    );

    let tags = send(&fake, "GET", "/v2/tags", None).await;
    assert_eq!(tags.body["tags"].as_array().unwrap().len(), 2);
    assert_eq!(tags.body["tags"][0]["name"], "venmo");

    let missing = send(&fake, "GET", "/v2/nothing", None).await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.body["message"], "Not Found");
}

#[tokio::test]
async fn v2_create_tag() {
    let fake = FakeLunchMoney::start();
    let resp = send(
        &fake,
        "POST",
        "/v2/tags",
        Some(json!({"name": "lm-ingest", "description": "imported"})),
    )
    .await;
    assert_eq!(resp.status, 201);
    assert_eq!(resp.body["name"], "lm-ingest");
    assert_eq!(resp.body["description"], "imported");
    let id = resp.body["id"].as_i64().unwrap();
    assert!(fake.tags().iter().any(|t| t.id == id));
    assert_eq!(
        v2_one(&fake, with(tx("a"), "tag_ids", json!([id])))
            .await
            .status,
        201,
        "usable at once"
    );

    let dup = send(
        &fake,
        "POST",
        "/v2/tags",
        Some(json!({"name": "LM-Ingest"})),
    )
    .await;
    assert_eq!(dup.status, 400);
    assert_eq!(
        dup.body,
        json!({"message": "Invalid Request Body", "errors": [{"errMsg": "Tag with name 'LM-Ingest' already exists"}]})
    );
    for bad in [
        json!({}),
        json!({"name": ""}),
        json!({"name": "x".repeat(101)}),
        json!({"name": "ok", "color": "red"}),
        json!({"name": 5}),
        json!({"name": "ok", "description": "d".repeat(201)}),
    ] {
        let resp = send(&fake, "POST", "/v2/tags", Some(bad.clone())).await;
        assert_eq!(resp.status, 400, "{bad}");
        assert!(resp.body["errors"][0]["errMsg"].is_string());
    }
    assert_eq!(
        send(
            &fake,
            "POST",
            "/v2/tags",
            Some(json!({"name": "x".repeat(100)}))
        )
        .await
        .status,
        201
    );
}

#[tokio::test]
async fn v2_update_transaction() {
    let fake = FakeLunchMoney::start();
    let created = v2_one(&fake, tx("venmo:1")).await;
    let id = created.body["transactions"][0]["id"].as_i64().unwrap();
    let path = format!("/v2/transactions/{id}");

    let resp = send(&fake, "PUT", &path, Some(json!({"category_id": seed::GROCERIES, "additional_tag_ids": [seed::TAG_VENMO], "status": "reviewed"}))).await;
    assert_eq!(
        resp.status, 201,
        "the spec answers updates with 201: {}",
        resp.body
    );
    assert_eq!(resp.body["category_id"], seed::GROCERIES);
    let stored = fake.transactions().pop().unwrap();
    assert_eq!(
        (
            stored.category_id,
            stored.status.as_str(),
            stored.tag_ids.clone()
        ),
        (Some(seed::GROCERIES), "reviewed", vec![seed::TAG_VENMO])
    );

    // The GET response shape is accepted; system fields are ignored.
    let resp = send(
        &fake,
        "PUT",
        &path,
        Some(with(resp.body.clone(), "notes", json!("edited"))),
    )
    .await;
    assert_eq!(resp.status, 201, "{}", resp.body);
    assert_eq!(fake.transactions()[0].notes.as_deref(), Some("edited"));

    assert_eq!(
        send(
            &fake,
            "PUT",
            "/v2/transactions/1",
            Some(json!({"notes": "x"}))
        )
        .await
        .status,
        404
    );
    let resp = send(&fake, "PUT", &path, Some(json!({"bogus": 1}))).await;
    assert_eq!(resp.status, 400);
    let resp = send(&fake, "PUT", &path, Some(json!({"id": id}))).await;
    assert_eq!(resp.status, 400, "nothing updatable");
    let resp = send(
        &fake,
        "PUT",
        &path,
        Some(json!({"category_id": seed::FOOD_GROUP})),
    )
    .await;
    assert_eq!(resp.status, 400);
    let resp = send(
        &fake,
        "PUT",
        &path,
        Some(json!({"tag_ids": [], "additional_tag_ids": []})),
    )
    .await;
    assert_eq!(resp.status, 400);
    let other = v2_one(&fake, tx("venmo:2")).await.body["transactions"][0]["id"]
        .as_i64()
        .unwrap();
    let resp = send(
        &fake,
        "PUT",
        &format!("/v2/transactions/{other}"),
        Some(json!({"external_id": "venmo:1"})),
    )
    .await;
    assert_eq!(
        resp.status, 400,
        "external_id taken in that account: {}",
        resp.body
    );
}

#[tokio::test]
async fn v2_update_manual_account_balance() {
    let fake = FakeLunchMoney::start();
    let path = format!("/v2/manual_accounts/{}", seed::VENMO);
    let resp = send(
        &fake,
        "PUT",
        &path,
        Some(json!({"balance": "-12.34", "balance_as_of": "2024-03-01"})),
    )
    .await;
    assert_eq!(resp.status, 200, "{}", resp.body);
    assert_eq!(resp.body["balance"], "-12.3400");
    let listed = send(&fake, "GET", "/v2/manual_accounts", None).await;
    assert_eq!(listed.body["manual_accounts"][1]["balance"], "-12.3400");
    assert_eq!(
        fake.manual_account(seed::VENMO).unwrap().raw_updates.len(),
        1
    );

    assert_eq!(
        send(&fake, "PUT", &path, Some(json!({"balance": "1.23456"})))
            .await
            .status,
        400
    );
    assert_eq!(
        send(
            &fake,
            "PUT",
            &path,
            Some(json!({"balance": 1, "asset_id": 1}))
        )
        .await
        .status,
        400
    );
    assert_eq!(send(&fake, "PUT", &path, Some(json!({}))).await.status, 400);
    assert_eq!(
        send(
            &fake,
            "PUT",
            "/v2/manual_accounts/424242",
            Some(json!({"balance": 1}))
        )
        .await
        .status,
        404
    );
}

#[tokio::test]
async fn plaid_fetch_is_eligible_once_per_cooldown() {
    let fake = FakeLunchMoney::seeded()
        .plaid_fetch_cooldown(Duration::from_millis(300))
        .start();
    let fetch = |path: &'static str| send(&fake, "POST", path, None);
    assert_eq!(fetch("/v2/plaid_accounts/fetch").await.status, 202);
    let early = fetch("/v2/plaid_accounts/fetch").await;
    assert_eq!(early.status, 425);
    assert_eq!(
        early.body["errors"][0]["errMsg"],
        "Please wait at least 60 seconds between fetch requests."
    );
    assert_eq!(
        send(&fake, "POST", "/v2/plaid_accounts/fetch?id=424242", None)
            .await
            .status,
        404
    );
    assert_eq!(
        send(
            &fake,
            "POST",
            "/v2/plaid_accounts/fetch?start_date=2024-01-01",
            None
        )
        .await
        .status,
        400
    );
    let v1 = send(&fake, "POST", "/v1/plaid_accounts/fetch", None).await;
    assert_eq!(
        (v1.status, v1.body.clone()),
        (200, json!(false)),
        "none eligible"
    );
    tokio::time::sleep(Duration::from_millis(350)).await;
    let v1 = send(
        &fake,
        "POST",
        "/v1/plaid_accounts/fetch",
        Some(json!({"plaid_account_id": seed::PLAID_CARD})),
    )
    .await;
    assert_eq!(v1.body, json!(true));
    let by_id = format!("/v2/plaid_accounts/fetch?id={}", seed::PLAID_CARD);
    assert_eq!(send(&fake, "POST", &by_id, None).await.status, 425);
}

// ----------------------------------------------------------------------------------------------
// Faults
// ----------------------------------------------------------------------------------------------

#[tokio::test]
async fn fail_next_inserts_answers_500_and_stores_nothing() {
    let fake = FakeLunchMoney::seeded().fail_next_inserts(2).start();
    let first = v2_one(&fake, tx("a")).await;
    assert_eq!(first.status, 500);
    assert_eq!(first.body["message"], "Internal Server Error");
    assert!(first.body["errors"][0]["errMsg"].is_string());
    assert_eq!(
        send(&fake, "GET", "/v2/me", None).await.status,
        200,
        "only inserts fail"
    );
    let second = v1_insert(
        &fake,
        json!({"transactions": [{"date": "2024-03-01", "amount": "1"}]}),
    )
    .await;
    assert_eq!(second.status, 500);
    assert!(fake.transactions().is_empty());
    assert_eq!(v2_one(&fake, tx("a")).await.status, 201);
    assert_eq!(fake.faults().fail_next_inserts, 0);

    fake.fail_next_inserts(1);
    assert_eq!(v2_one(&fake, tx("b")).await.status, 500);
    assert_eq!(v2_one(&fake, tx("b")).await.status, 201);
    assert_eq!(fake.transactions().len(), 2);
    assert_eq!(
        fake.rejections().iter().filter(|r| r.status == 500).count(),
        3
    );
}

async fn failure_pattern(seed_value: u64, n: usize) -> Vec<u16> {
    let fake = FakeLunchMoney::seeded()
        .rng_seed(seed_value)
        .insert_failure_rate(0.5)
        .start();
    let mut statuses = Vec::new();
    for i in 0..n {
        statuses.push(v2_one(&fake, tx(&format!("r{i}"))).await.status);
    }
    assert_eq!(
        fake.transactions().len(),
        statuses.iter().filter(|s| **s == 201).count()
    );
    statuses
}

#[tokio::test]
async fn insert_failure_rate_is_seeded_and_reproducible() {
    let a = failure_pattern(42, 40).await;
    let b = failure_pattern(42, 40).await;
    assert_eq!(a, b, "same seed, same faults");
    let failed = a.iter().filter(|s| **s == 500).count();
    assert!(
        (8..=32).contains(&failed),
        "p = 0.5 over 40: {failed} failed"
    );
    assert!(a.iter().all(|s| *s == 500 || *s == 201));
    assert_ne!(
        a,
        failure_pattern(7, 40).await,
        "another seed, other faults"
    );

    let fake = FakeLunchMoney::start();
    fake.set_insert_failure_rate(1.0);
    assert_eq!(v2_one(&fake, tx("x")).await.status, 500);
    fake.set_insert_failure_rate(0.0);
    assert_eq!(v2_one(&fake, tx("x")).await.status, 201);
}

#[tokio::test]
async fn throttle_next_answers_429_with_retry_after() {
    let fake = FakeLunchMoney::start();
    fake.throttle_next(2, 7);
    let first = v2_one(&fake, tx("a")).await;
    assert_eq!(first.status, 429);
    assert_eq!(first.headers["retry-after"], "7");
    assert_eq!(
        first.body,
        json!({"message": "Too Many Requests", "errors": [{"errMsg": "Too many requests, please try again later."}]})
    );
    let second = send(&fake, "GET", "/v1/tags", None).await;
    assert_eq!(second.status, 429, "any endpoint, v1 too");
    assert_eq!(second.headers["retry-after"], "7");
    assert_eq!(v2_one(&fake, tx("a")).await.status, 201);
    assert_eq!(fake.transactions().len(), 1);
}

#[tokio::test]
async fn the_rate_limit_is_shared_by_v1_and_v2_and_rolls() {
    let fake = FakeLunchMoney::seeded()
        .rate_limit(3)
        .rate_limit_window(Duration::from_millis(1500))
        .start();
    let ok = send(&fake, "GET", "/v2/me", None).await;
    assert_eq!(ok.status, 200);
    assert_eq!(ok.headers["ratelimit-limit"], "3");
    assert_eq!(ok.headers["ratelimit-remaining"], "2");
    assert_eq!(send(&fake, "GET", "/v1/assets", None).await.status, 200);
    assert_eq!(v2_one(&fake, tx("a")).await.status, 201);
    let over = v1_insert(
        &fake,
        json!({"transactions": [{"date": "2024-03-01", "amount": "1"}]}),
    )
    .await;
    assert_eq!(over.status, 429);
    let retry_after: u64 = over.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry_after), "{retry_after}");
    assert_eq!(over.headers["ratelimit-remaining"], "0");
    assert_eq!(send(&fake, "GET", "/v2/tags", None).await.status, 429);
    assert_eq!(fake.transactions().len(), 1);

    tokio::time::sleep(Duration::from_millis(1600)).await;
    assert_eq!(
        send(&fake, "GET", "/v2/tags", None).await.status,
        200,
        "the window rolled"
    );

    fake.set_rate_limit(None);
    for _ in 0..10 {
        assert_eq!(send(&fake, "GET", "/v2/me", None).await.status, 200);
    }
    assert!(
        FakeLunchMoney::start().faults().rate_limit.is_none(),
        "off by default"
    );
}

#[tokio::test]
async fn a_cut_connection_still_stores_the_batch() {
    let fake = FakeLunchMoney::seeded().cut_next_inserts(1).start();
    let client = reqwest::Client::new();
    let result = client
        .post(fake.url("/v2/transactions"))
        .bearer_auth(seed::TOKEN)
        .json(&json!({"transactions": [tx("venmo:1"), tx("venmo:2")]}))
        .send()
        .await;
    let err = result.expect_err("the client sees the connection close without an answer");
    assert!(!err.is_status(), "{err:?}");
    assert_eq!(fake.transactions().len(), 2, "yet the batch was stored");
    let request = fake.requests_to("POST /v2/transactions").pop().unwrap();
    assert_eq!(request.outcome, Outcome::Cut);

    // The client's retry is answered, and reports the stored batch as duplicates.
    let retry = v2_insert(
        &fake,
        json!({"transactions": [tx("venmo:1"), tx("venmo:2")]}),
    )
    .await;
    assert_eq!(retry.status, 201);
    assert_eq!(
        retry.body["skipped_duplicates"].as_array().unwrap().len(),
        2
    );

    // v1 too, and by rate.
    fake.set_cut_rate(1.0);
    let v1 = client
        .post(fake.url("/v1/transactions"))
        .bearer_auth(seed::TOKEN)
        .json(&json!({"transactions": [{"date": "2024-03-01", "amount": "1"}]}))
        .send()
        .await;
    assert!(v1.is_err());
    assert_eq!(fake.transactions().len(), 3);
    // Refused inserts are answered, not cut: nothing was stored.
    let refused = v2_one(&fake, with(tx("z"), "currency", json!("USD"))).await;
    assert_eq!(refused.status, 400);
    fake.set_cut_rate(0.0);
    assert_eq!(v2_one(&fake, tx("venmo:3")).await.status, 201);
}

#[tokio::test]
async fn delay_slows_every_request() {
    let fake = FakeLunchMoney::seeded()
        .delay(Duration::from_millis(200))
        .start();
    let start = Instant::now();
    assert_eq!(send(&fake, "GET", "/v2/me", None).await.status, 200);
    assert!(start.elapsed() >= Duration::from_millis(200));

    fake.set_delay(Duration::from_millis(500));
    let client = reqwest::Client::builder()
        .timeout(Duration::from_millis(100))
        .build()
        .unwrap();
    let timed_out = client
        .get(fake.url("/v2/me"))
        .bearer_auth(seed::TOKEN)
        .send()
        .await;
    assert!(timed_out.unwrap_err().is_timeout());
    fake.set_delay(Duration::ZERO);
    let start = Instant::now();
    assert_eq!(send(&fake, "GET", "/v2/me", None).await.status, 200);
    assert!(start.elapsed() < Duration::from_millis(200));
}

#[tokio::test]
async fn faults_can_be_set_whole_at_start_and_changed_while_running() {
    let fake = FakeLunchMoney::seeded()
        .faults(Faults {
            throttle_next: 1,
            throttle_retry_after_secs: 3,
            fail_next_inserts: 1,
            ..Faults::default()
        })
        .start();
    assert_eq!(v2_one(&fake, tx("a")).await.status, 429);
    assert_eq!(v2_one(&fake, tx("a")).await.status, 500);
    assert_eq!(v2_one(&fake, tx("a")).await.status, 201);
    fake.update_faults(|f| {
        f.throttle_next = 1;
        f.throttle_retry_after_secs = 9;
    });
    assert_eq!(
        send(&fake, "GET", "/v2/me", None).await.headers["retry-after"],
        "9"
    );
    fake.throttle_next(5, 1);
    fake.clear_faults();
    assert_eq!(send(&fake, "GET", "/v2/me", None).await.status, 200);
}

// ----------------------------------------------------------------------------------------------
// Inspection, HTTP details, shutdown
// ----------------------------------------------------------------------------------------------

#[tokio::test]
async fn the_handle_reports_requests_bodies_counts_and_rejections() {
    let fake = FakeLunchMoney::start();
    v2_one(&fake, tx("a")).await;
    v2_one(&fake, with(tx("b"), "status", json!("cleared"))).await;
    send(&fake, "GET", "/v2/me", None).await;
    send(
        &fake,
        "PUT",
        "/v2/transactions/5",
        Some(json!({"notes": "x"})),
    )
    .await;
    send_with(&fake, "GET", "/v2/tags", None, None).await;

    assert_eq!(fake.request_count("POST /v2/transactions"), 2);
    assert_eq!(fake.request_count("GET /v2/me"), 1);
    assert_eq!(fake.request_count("PUT /v2/transactions/{id}"), 1);
    assert_eq!(
        fake.request_count("GET /v2/tags"),
        1,
        "refused requests count too"
    );
    assert_eq!(fake.request_counts().values().sum::<usize>(), 5);

    let log = fake.requests();
    assert_eq!(
        log.iter().map(|r| r.seq).collect::<Vec<_>>(),
        vec![1, 2, 3, 4, 5]
    );
    assert_eq!(log[0].json().unwrap(), json!({"transactions": [tx("a")]}));
    assert_eq!(log[0].outcome, Outcome::Status(201));
    assert_eq!(
        log[0].header("authorization"),
        Some(format!("Bearer {}", seed::TOKEN).as_str())
    );
    assert_eq!(log[1].outcome, Outcome::Status(400));
    assert_eq!(log[3].path, "/v2/transactions/5");

    let rejections = fake.rejections();
    assert_eq!(
        rejections
            .iter()
            .map(|r| (r.seq, r.status))
            .collect::<Vec<_>>(),
        vec![(2, 400), (4, 404), (5, 401)]
    );
    assert!(rejections[0]
        .reason
        .contains("status must be either 'reviewed' or 'unreviewed': cleared"));
    assert_eq!(rejections[0].response["errors"][0]["transaction_index"], 0);

    fake.clear_log();
    assert!(fake.requests().is_empty() && fake.rejections().is_empty());
    send(&fake, "GET", "/v2/me", None).await;
    assert_eq!(fake.requests()[0].seq, 6, "sequence numbers keep counting");
    assert_eq!(fake.transactions().len(), 1, "stored data stays");

    let waited = fake
        .wait_for_transactions(1, Duration::from_millis(100))
        .await;
    assert_eq!(waited.len(), 1);
    assert!(
        !fake
            .wait_until(Duration::from_millis(50), |f| f.transactions().len() > 1)
            .await
    );
}

fn raw_exchange(stream: &mut TcpStream, request: &str) -> String {
    stream.write_all(request.as_bytes()).unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    // Read one response: headers, then Content-Length bytes.
    loop {
        let n = stream.read(&mut chunk).unwrap();
        assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&buf));
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).to_string();
        if let Some(end) = text.find("\r\n\r\n") {
            let len: usize = text[..end]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap())
                })
                .unwrap();
            if buf.len() >= end + 4 + len {
                return text;
            }
        }
    }
}

#[test]
fn keep_alive_chunked_bodies_and_plain_threads_work() {
    // No async runtime needed.
    let fake = FakeLunchMoney::start();
    let mut stream = TcpStream::connect(fake.addr()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let auth = format!("Authorization: Bearer {}\r\n", seed::TOKEN);
    let first = raw_exchange(
        &mut stream,
        &format!("GET /v2/me HTTP/1.1\r\nHost: x\r\n{auth}\r\n"),
    );
    assert!(first.starts_with("HTTP/1.1 200 OK\r\n"), "{first}");
    let body = json!({"transactions": [tx("chunked")]}).to_string();
    let (a, b) = body.split_at(10);
    let chunked = format!(
        "POST /v2/transactions HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{a}\r\n{:x}\r\n{b}\r\n0\r\n\r\n",
        a.len(),
        b.len()
    );
    let second = raw_exchange(&mut stream, &chunked);
    assert!(second.starts_with("HTTP/1.1 201 Created\r\n"), "{second}");
    assert_eq!(
        fake.transactions()[0].external_id.as_deref(),
        Some("chunked")
    );
    let third = raw_exchange(
        &mut stream,
        &format!("GET /v1/tags HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n"),
    );
    assert!(third.contains("Connection: close"), "{third}");
    let mut rest = Vec::new();
    assert_eq!(
        stream.read_to_end(&mut rest).unwrap(),
        0,
        "closed after Connection: close"
    );

    let mut garbage = TcpStream::connect(fake.addr()).unwrap();
    garbage
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    garbage.write_all(b"NONSENSE\r\n\r\n").unwrap();
    let mut answer = String::new();
    garbage.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
}

#[test]
fn dropping_the_handle_stops_the_server_promptly() {
    let fake = FakeLunchMoney::seeded()
        .delay(Duration::from_secs(30))
        .start();
    let addr = fake.addr();
    // An idle keep-alive connection, and one stuck in a 30 s delay.
    let mut idle = TcpStream::connect(addr).unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut busy = TcpStream::connect(addr).unwrap();
    busy.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    busy.write_all(
        format!(
            "GET /v2/me HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\r\n",
            seed::TOKEN
        )
        .as_bytes(),
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(100));

    let start = Instant::now();
    drop(fake);
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "drop took {:?}",
        start.elapsed()
    );
    let mut buf = [0u8; 16];
    assert!(
        matches!(idle.read(&mut buf), Ok(0) | Err(_)),
        "idle connection closed"
    );
    assert!(
        matches!(busy.read(&mut buf), Ok(0) | Err(_)),
        "busy connection closed"
    );
    assert!(
        TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err(),
        "no longer listening"
    );
}

#[tokio::test]
async fn slow_answers_and_injected_faults_are_counted_apart_from_violations() {
    let fake = FakeLunchMoney::seeded()
        .slow(1.0, Duration::from_millis(150))
        .fail_next_inserts(1)
        .start();
    let start = Instant::now();
    assert_eq!(v2_one(&fake, tx("a")).await.status, 500);
    assert!(start.elapsed() >= Duration::from_millis(150), "slowed");
    fake.set_slow(0.0, Duration::ZERO);
    fake.throttle_next(1, 1);
    assert_eq!(v2_one(&fake, tx("a")).await.status, 429);
    fake.cut_next_inserts(1);
    assert!(send_raw_insert_is_cut(&fake).await);
    assert!(
        fake.violations().is_empty(),
        "injected faults are not violations"
    );
    assert_eq!(v2_one(&fake, without(tx("b"), "date")).await.status, 400);
    let injected = fake.injected_faults();
    assert_eq!(
        (
            injected["slow"],
            injected["500"],
            injected["429"],
            injected["cut"]
        ),
        (1, 1, 1, 1)
    );
    let violations = fake.violations();
    assert_eq!(violations.len(), 1, "{violations:?}");
    assert_eq!(violations[0].status, 400);
}

/// A cut insert: the batch is stored and the connection closes with no answer.
async fn send_raw_insert_is_cut(fake: &FakeHandle) -> bool {
    let sent = reqwest::Client::new()
        .post(fake.url("/v2/transactions"))
        .bearer_auth(seed::TOKEN)
        .json(&json!({"transactions": [tx("c")]}))
        .send()
        .await;
    sent.is_err() && fake.transaction_by_external_id("c").is_some()
}
