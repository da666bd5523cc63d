//! Contract test: every request our Lunch Money client makes must validate against the official
//! v2 OpenAPI spec (`@lunch-money/v2-api-spec`), served by Prism's mock server on loopback. Prism
//! answers 4xx with the violations in `sl-violations` when a request breaks the spec.
//!
//! Needs `npm ci` (Prism and the spec in ./node_modules). Without them the test is skipped, unless
//! LM_INGEST_REQUIRE_PRISM=1 (as in CI), which makes their absence a failure.

mod support;

use chrono::NaiveDate;
use lm_ingest::deliver::client::{ApiError, Batch, Client, Outgoing};
use lm_ingest::money::{Amount, Money};
use lm_ingest::settings::{ApiVersion, LunchMoneySettings, ReviewStatus, Secret};
use lm_ingest::transaction::Transaction;
use support::prism::Prism;

fn client(prism: &Prism) -> Client {
    Client::new(&LunchMoneySettings {
        token: Secret::new("contract-test-token"),
        api: ApiVersion::V2,
        base_url: Some(prism.base_url().to_owned()),
        ..Default::default()
    })
    .unwrap()
}

fn transaction(external_id: &str, amount: &str, currency: &str) -> Transaction {
    Transaction {
        date: NaiveDate::from_ymd_opt(2024, 3, 1).unwrap(),
        amount: Money::new(Amount::parse_plain(amount, None).unwrap(), currency),
        currency: currency.into(),
        payee: Some("Taylor Brooks".into()),
        notes: Some("Pizza & drinks 🍕".into()),
        external_id: external_id.into(),
        tags: vec!["venmo".into()],
        account: None,
        balance: None,
        plugin: "venmo".into(),
        void: false,
    }
}

fn outgoing(tx: Transaction) -> Outgoing {
    Outgoing {
        transaction: tx,
        account_id: None,
        category_id: None,
        tag_ids: Vec::new(),
        tag_names: Vec::new(),
        status: None,
    }
}

/// Fails with the violations Prism reported, if any.
fn expect_valid<T: std::fmt::Debug>(what: &str, result: Result<T, ApiError>) -> T {
    match result {
        Ok(value) => value,
        Err(e) => panic!(
            "{what}: the request breaks the official spec or the client misread the answer: {e}"
        ),
    }
}

#[tokio::test]
async fn every_request_the_client_makes_validates_against_the_v2_spec() {
    let Some(prism) = Prism::start() else {
        eprintln!("skipped: Prism or the spec is not installed (run `npm ci`)");
        return;
    };
    let client = client(&prism);

    // Inserts of every shape the outbox sends.
    let minimal = outgoing(Transaction {
        payee: None,
        notes: None,
        tags: Vec::new(),
        ..transaction("venmo:1", "-25.00", "usd")
    });
    let full = Outgoing {
        account_id: Some(101),
        category_id: Some(202),
        tag_ids: vec![303, 304],
        status: Some(ReviewStatus::Reviewed),
        ..outgoing(transaction("venmo:2", "386.70", "usd"))
    };
    let unreviewed = Outgoing {
        status: Some(ReviewStatus::Unreviewed),
        account_id: Some(101),
        ..outgoing(transaction("monzo:tx_00009", "-1250", "jpy"))
    };
    let mut long_text = transaction(&format!("venmo:h:{}", "f".repeat(64)), "0.0001", "eur");
    long_text.payee = Some("P".repeat(400));
    long_text.notes = Some("N".repeat(1000));
    for (what, batch) in [
        ("minimal insert", vec![minimal.clone()]),
        (
            "insert with account, category, tags, status",
            vec![full.clone()],
        ),
        (
            "insert of several",
            vec![minimal.clone(), full.clone(), unreviewed.clone()],
        ),
        (
            "insert with long payee and notes, 75-character external_id",
            vec![outgoing(long_text.clone())],
        ),
    ] {
        for (apply_rules, skip_duplicates) in [(false, false), (true, true)] {
            let batch = Batch {
                items: batch.clone(),
                apply_rules,
                skip_duplicates,
            };
            let results = expect_valid(what, client.insert(&batch).await);
            assert_eq!(
                results.len(),
                batch.items.len(),
                "{what}: one result per transaction"
            );
        }
    }
    let five_hundred: Vec<Outgoing> = (0..500)
        .map(|i| outgoing(transaction(&format!("venmo:{i}"), "-1.00", "usd")))
        .collect();
    expect_valid(
        "a batch of 500",
        client
            .insert(&Batch {
                items: five_hundred,
                apply_rules: false,
                skip_duplicates: false,
            })
            .await,
    );

    // Updates of transactions Lunch Money already has (a settled bank transaction).
    expect_valid("PUT /v2/transactions/{id}", client.update(123, &full).await);
    expect_valid(
        "PUT /v2/transactions/{id} without payee or notes",
        client.update(124, &minimal).await,
    );

    // A delivered transaction its bank voided (a reversed authorisation): 204, no body.
    expect_valid(
        "DELETE /v2/transactions/{id}",
        client.delete(2112140361).await,
    );

    // Balances reported by a bank.
    let balance = Money::new(Amount::parse_plain("1234.56", None).unwrap(), "usd");
    expect_valid(
        "PUT /v2/manual_accounts/{id}",
        client
            .update_balance(
                101,
                &balance,
                "usd",
                NaiveDate::from_ymd_opt(2024, 3, 1).unwrap(),
            )
            .await,
    );

    // A Plaid-linked source's alert: a fetch of the account instead of an insert (202, no body).
    expect_valid(
        "POST /v2/plaid_accounts/fetch?id=N",
        client.plaid_fetch(119807).await,
    );

    // The lookups and the token check.
    expect_valid("GET /v2/me", client.me().await);
    let accounts = expect_valid("GET /v2/manual_accounts", client.accounts().await);
    let categories = expect_valid("GET /v2/categories", client.categories().await);
    let tags = expect_valid("GET /v2/tags", client.tags().await);
    let plaid = expect_valid("GET /v2/plaid_accounts", client.plaid_accounts().await);
    let created = expect_valid("POST /v2/tags", client.create_tag("lm-ingest").await);
    eprintln!(
        "spec examples read: {} accounts, {} plaid accounts, {} categories, {} tags, created tag id {}",
        accounts.len(),
        plaid.len(),
        categories.len(),
        tags.len(),
        created.id
    );
    assert!(
        !accounts.is_empty() && !plaid.is_empty() && !categories.is_empty() && !tags.is_empty(),
        "the spec's examples carry items; reading none means the client misreads the answer shape"
    );
}

#[tokio::test]
async fn a_request_that_breaks_the_spec_is_caught() {
    let Some(prism) = Prism::start() else {
        eprintln!("skipped: Prism or the spec is not installed (run `npm ci`)");
        return;
    };
    // Proof that the harness bites: a v1-only field in a v2 insert must be refused.
    let response = reqwest::Client::new()
        .post(format!("{}/v2/transactions", prism.base_url()))
        .bearer_auth("contract-test-token")
        .json(&serde_json::json!({"transactions": [{"date": "2024-03-01", "amount": "1.00", "asset_id": 1}], "debit_as_negative": true}))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_client_error(), "{}", response.status());
    assert!(response.headers().contains_key("sl-violations"));
}
