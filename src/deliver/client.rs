//! Lunch Money's API: inserting transactions (v2 by default, v1 on request) and the lookups that
//! turn configured names into ids.
//!
//! Sign conventions differ: our amounts are negative when money leaves the user. v2 wants
//! positive debits, so amounts are negated; v1 is sent `debit_as_negative: true` and takes ours as
//! they are.

use std::time::Duration;

use serde_json::{json, Map, Value};

use chrono::NaiveDate;

use crate::money::{currency_exponent, Amount, Money};
use crate::settings::{ApiVersion, LunchMoneySettings, ReviewStatus, Secret};
use crate::transaction::Transaction;

/// v1's documented limits; v2 takes the same text, so both are cut to fit rather than refused.
const MAX_PAYEE: usize = 140;
const MAX_NOTES: usize = 350;
/// Lunch Money's answer to a Plaid fetch within a minute of the last one.
pub const TOO_EARLY: u16 = 425;

#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    /// No answer: connection refused or cut, timeout. The request may or may not have landed.
    #[error("network error: {0}")]
    Network(String),
    #[error("HTTP {status}: {message}")]
    Http {
        status: u16,
        message: String,
        retry_after: Option<Duration>,
        /// Errors the API tied to a transaction of the request, by index.
        item_errors: Vec<(usize, String)>,
        /// Properties the API called invalid (`category_id`, `tag_ids`, …).
        invalid_properties: Vec<String>,
    },
    /// A success status with a body we cannot read.
    #[error("unreadable response: {0}")]
    Protocol(String),
}

/// One of our transactions with its destination resolved to ids.
#[derive(Debug, Clone, PartialEq)]
pub struct Outgoing {
    pub transaction: Transaction,
    pub account_id: Option<i64>,
    pub category_id: Option<i64>,
    /// v2: ids of the transaction's tags and the mapping's.
    pub tag_ids: Vec<i64>,
    /// v1: the same tags by name (v1 creates unknown ones).
    pub tag_names: Vec<String>,
    pub status: Option<ReviewStatus>,
}

/// Transactions posted in one request, with the request-level flags they share.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    pub items: Vec<Outgoing>,
    pub apply_rules: bool,
    pub skip_duplicates: bool,
}

/// What Lunch Money did with each transaction of a successful insert, by request index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ItemResult {
    Created {
        id: Option<i64>,
    },
    /// Already there (same `external_id` on the account, or same payee/amount/date with
    /// `skip_duplicates`): delivered.
    Duplicate {
        existing_id: Option<i64>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Named {
    pub id: i64,
    pub name: String,
    /// Only categories have it.
    pub is_group: bool,
}

#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: Secret,
    api: ApiVersion,
}

impl Client {
    pub fn new(settings: &LunchMoneySettings) -> Result<Client, ApiError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(settings.timeout_secs))
            .user_agent(concat!("lm-ingest/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ApiError::Network(e.to_string()))?;
        Ok(Client {
            http,
            base: settings.base_url().to_owned(),
            token: settings.token.clone(),
            api: settings.api,
        })
    }

    pub fn api(&self) -> ApiVersion {
        self.api
    }

    /// The JSON body an insert of `batch` sends.
    pub fn insert_body(&self, batch: &Batch) -> Value {
        match self.api {
            ApiVersion::V2 => json!({
                "transactions": batch.items.iter().map(v2_transaction).collect::<Vec<_>>(),
                "apply_rules": batch.apply_rules,
                "skip_duplicates": batch.skip_duplicates,
            }),
            ApiVersion::V1 => json!({
                "transactions": batch.items.iter().map(v1_transaction).collect::<Vec<_>>(),
                "apply_rules": batch.apply_rules,
                "skip_duplicates": batch.skip_duplicates,
                "debit_as_negative": true,
            }),
        }
    }

    pub async fn insert(&self, batch: &Batch) -> Result<Vec<ItemResult>, ApiError> {
        let path = match self.api {
            ApiVersion::V2 => "/v2/transactions",
            ApiVersion::V1 => "/v1/transactions",
        };
        let body = self
            .send(reqwest::Method::POST, path, Some(self.insert_body(batch)))
            .await?;
        match self.api {
            ApiVersion::V2 => v2_results(batch, &body),
            ApiVersion::V1 => v1_results(batch, &body),
        }
    }

    /// The JSON body of an update: only what the source decides (date, amount, currency, payee,
    /// notes), so a category or tags the user changed in Lunch Money are kept.
    pub fn update_body(&self, item: &Outgoing) -> Value {
        let tx = &item.transaction;
        let mut map = Map::new();
        common_fields(tx, &mut map);
        map.remove("external_id");
        match self.api {
            ApiVersion::V2 => {
                map.insert("amount".into(), json!(v2_amount(tx)));
                Value::Object(map)
            }
            ApiVersion::V1 => {
                map.insert("amount".into(), json!(tx.amount.as_str()));
                json!({ "transaction": Value::Object(map), "debit_as_negative": true })
            }
        }
    }

    /// Updates a transaction Lunch Money already has (`PUT /v2/transactions/{id}`): a settled or
    /// corrected version of one we delivered.
    pub async fn update(&self, lunchmoney_id: i64, item: &Outgoing) -> Result<(), ApiError> {
        let path = format!("/{}/transactions/{lunchmoney_id}", self.version());
        self.send(reqwest::Method::PUT, &path, Some(self.update_body(item)))
            .await
            .map(drop)
    }

    /// Deletes a transaction we delivered that its bank has since voided
    /// (`DELETE /v2/transactions/{id}`, 204). A 404 means it is gone already (the user deleted
    /// it): the goal is met, so it is `Ok`. v1 has no delete; the outbox never calls this there.
    pub async fn delete(&self, lunchmoney_id: i64) -> Result<(), ApiError> {
        let path = format!("/v2/transactions/{lunchmoney_id}");
        match self.send(reqwest::Method::DELETE, &path, None).await {
            Ok(_) | Err(ApiError::Http { status: 404, .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Sets a manual account's (v2) or asset's (v1) balance.
    pub async fn update_balance(
        &self,
        account_id: i64,
        balance: &Money,
        currency: &str,
        as_of: NaiveDate,
    ) -> Result<(), ApiError> {
        let path = match self.api {
            ApiVersion::V2 => format!("/v2/manual_accounts/{account_id}"),
            ApiVersion::V1 => format!("/v1/assets/{account_id}"),
        };
        let body = json!({ "balance": balance.as_str(), "currency": currency, "balance_as_of": as_of.to_string() });
        self.send(reqwest::Method::PUT, &path, Some(body))
            .await
            .map(drop)
    }

    /// Asks Lunch Money to fetch a Plaid-linked account's latest transactions from the bank:
    /// v2 `POST /v2/plaid_accounts/fetch?id=N` (202, or 425 within a minute of the last one),
    /// v1 `POST /v1/plaid_accounts/fetch` with `{"plaid_account_id": N}` (`true`, or `false` when
    /// the account is not eligible yet, which is reported as the same 425 "too early").
    pub async fn plaid_fetch(&self, plaid_account_id: i64) -> Result<(), ApiError> {
        let answer = match self.api {
            ApiVersion::V2 => {
                let path = format!("/v2/plaid_accounts/fetch?id={plaid_account_id}");
                self.send(reqwest::Method::POST, &path, None).await?
            }
            ApiVersion::V1 => {
                let body = json!({ "plaid_account_id": plaid_account_id });
                self.send(
                    reqwest::Method::POST,
                    "/v1/plaid_accounts/fetch",
                    Some(body),
                )
                .await?
            }
        };
        if answer == Value::Bool(false) {
            return Err(http_error(
                TOO_EARLY,
                "the account is not eligible for a fetch yet".into(),
                None,
                &Value::Null,
            ));
        }
        Ok(())
    }

    /// The token's user (`GET /v2/me`, `/v1/me`): proves the token works.
    pub async fn me(&self) -> Result<Value, ApiError> {
        self.send(
            reqwest::Method::GET,
            &format!("/{}/me", self.version()),
            None,
        )
        .await
    }

    /// Manual accounts (v2) or assets (v1).
    pub async fn accounts(&self) -> Result<Vec<Named>, ApiError> {
        let (path, key) = match self.api {
            ApiVersion::V2 => ("/v2/manual_accounts", "manual_accounts"),
            ApiVersion::V1 => ("/v1/assets", "assets"),
        };
        let body = self.send(reqwest::Method::GET, path, None).await?;
        Ok(named_list(body.get(key).unwrap_or(&body)))
    }

    /// Accounts linked through Plaid (`GET /v2/plaid_accounts`, `/v1/plaid_accounts`).
    pub async fn plaid_accounts(&self) -> Result<Vec<Named>, ApiError> {
        let path = format!("/{}/plaid_accounts", self.version());
        let body = self.send(reqwest::Method::GET, &path, None).await?;
        Ok(named_list(body.get("plaid_accounts").unwrap_or(&body)))
    }

    pub async fn categories(&self) -> Result<Vec<Named>, ApiError> {
        let body = self
            .send(
                reqwest::Method::GET,
                &format!("/{}/categories", self.version()),
                None,
            )
            .await?;
        Ok(named_list(body.get("categories").unwrap_or(&body)))
    }

    pub async fn tags(&self) -> Result<Vec<Named>, ApiError> {
        let body = self
            .send(
                reqwest::Method::GET,
                &format!("/{}/tags", self.version()),
                None,
            )
            .await?;
        Ok(named_list(body.get("tags").unwrap_or(&body)))
    }

    /// v2 only: v1 creates tags named in an insert by itself.
    pub async fn create_tag(&self, name: &str) -> Result<Named, ApiError> {
        let body = self
            .send(
                reqwest::Method::POST,
                "/v2/tags",
                Some(json!({ "name": name })),
            )
            .await?;
        named_list(&Value::Array(vec![body]))
            .pop()
            .ok_or_else(|| ApiError::Protocol("created tag without an id".into()))
    }

    fn version(&self) -> &'static str {
        match self.api {
            ApiVersion::V2 => "v2",
            ApiVersion::V1 => "v1",
        }
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, ApiError> {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(self.token.expose())
            .header("Accept", "application/json");
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request
            .send()
            .await
            .map_err(|e| ApiError::Network(describe(&e)))?;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        let text = response
            .text()
            .await
            .map_err(|e| ApiError::Network(describe(&e)))?;
        let json: Option<Value> = serde_json::from_str(&text).ok();
        if (200..300).contains(&status) {
            // 202 Accepted (a queued Plaid fetch) has no body.
            if text.trim().is_empty() {
                return Ok(Value::Null);
            }
            let json =
                json.ok_or_else(|| ApiError::Protocol(format!("not JSON: {}", excerpt(&text))))?;
            // v1 reports some errors with a 200 and an `error` member.
            if let Some(error) = json.as_object().and_then(|o| o.get("error")) {
                return Err(http_error(400, error_text(error), retry_after, &json));
            }
            return Ok(json);
        }
        let message = json
            .as_ref()
            .and_then(|j| j.get("message").or_else(|| j.get("error")).map(error_text))
            .unwrap_or_else(|| excerpt(&text));
        Err(http_error(
            status,
            message,
            retry_after,
            json.as_ref().unwrap_or(&Value::Null),
        ))
    }
}

fn http_error(
    status: u16,
    message: String,
    retry_after: Option<Duration>,
    body: &Value,
) -> ApiError {
    let entries = body
        .get("errors")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let item_errors = entries
        .iter()
        .filter_map(|e| {
            let index = e.get("transaction_index")?.as_u64()?;
            let text = e
                .get("errMsg")
                .or_else(|| e.get("message"))
                .map(error_text)
                .unwrap_or_default();
            Some((usize::try_from(index).ok()?, text))
        })
        .collect();
    let invalid_properties = entries
        .iter()
        .filter_map(|e| {
            e.get("invalid_property")
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .collect();
    ApiError::Http {
        status,
        message,
        retry_after,
        item_errors,
        invalid_properties,
    }
}

fn error_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Array(items) => items.iter().map(error_text).collect::<Vec<_>>().join("; "),
        other => other.to_string(),
    }
}

fn excerpt(text: &str) -> String {
    let cut: String = text.chars().take(200).collect();
    if cut.is_empty() {
        "(empty body)".into()
    } else {
        cut
    }
}

fn describe(e: &reqwest::Error) -> String {
    // The URL can carry nothing secret (the token travels in a header), but keep it short.
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else {
        "connection failed"
    };
    let mut source = std::error::Error::source(e);
    let mut detail = String::new();
    while let Some(s) = source {
        detail = s.to_string();
        source = s.source();
    }
    if detail.is_empty() {
        kind.to_owned()
    } else {
        format!("{kind}: {detail}")
    }
}

/// `Retry-After` in seconds, or as an HTTP date.
fn parse_retry_after(value: &str) -> Option<Duration> {
    if let Ok(secs) = value.trim().parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = chrono::DateTime::parse_from_rfc2822(value.trim()).ok()?;
    let secs = (when.timestamp() - chrono::Utc::now().timestamp()).max(0);
    Some(Duration::from_secs(u64::try_from(secs).unwrap_or(0)))
}

fn cut(text: &str, max: usize) -> String {
    text.chars().take(max).collect()
}

fn common_fields(tx: &Transaction, map: &mut Map<String, Value>) {
    map.insert("date".into(), json!(tx.date.to_string()));
    map.insert("currency".into(), json!(tx.currency));
    map.insert("external_id".into(), json!(tx.external_id));
    if let Some(payee) = &tx.payee {
        map.insert("payee".into(), json!(cut(payee, MAX_PAYEE)));
    }
    if let Some(notes) = &tx.notes {
        map.insert("notes".into(), json!(cut(notes, MAX_NOTES)));
    }
}

fn v2_transaction(item: &Outgoing) -> Value {
    let tx = &item.transaction;
    let mut map = Map::new();
    common_fields(tx, &mut map);
    map.insert("amount".into(), json!(v2_amount(tx)));
    if let Some(id) = item.account_id {
        map.insert("manual_account_id".into(), json!(id));
    }
    if let Some(id) = item.category_id {
        map.insert("category_id".into(), json!(id));
    }
    if !item.tag_ids.is_empty() {
        map.insert("tag_ids".into(), json!(item.tag_ids));
    }
    if let Some(status) = item.status {
        map.insert(
            "status".into(),
            json!(match status {
                ReviewStatus::Reviewed => "reviewed",
                ReviewStatus::Unreviewed => "unreviewed",
            }),
        );
    }
    Value::Object(map)
}

/// v2: positive = debit (money out). Ours: negative = money out.
fn v2_amount(tx: &Transaction) -> String {
    Amount::parse_plain(tx.amount.as_str(), None)
        .map(|a| a.negate().render(currency_exponent(&tx.currency)))
        .unwrap_or_else(|_| tx.amount.as_str().to_owned())
}

fn v1_transaction(item: &Outgoing) -> Value {
    let tx = &item.transaction;
    let mut map = Map::new();
    common_fields(tx, &mut map);
    map.insert("amount".into(), json!(tx.amount.as_str()));
    if let Some(id) = item.account_id {
        map.insert("asset_id".into(), json!(id));
    }
    if let Some(id) = item.category_id {
        map.insert("category_id".into(), json!(id));
    }
    if !item.tag_names.is_empty() {
        map.insert("tags".into(), json!(item.tag_names));
    }
    if let Some(status) = item.status {
        map.insert(
            "status".into(),
            json!(match status {
                ReviewStatus::Reviewed => "cleared",
                ReviewStatus::Unreviewed => "uncleared",
            }),
        );
    }
    Value::Object(map)
}

fn v2_results(batch: &Batch, body: &Value) -> Result<Vec<ItemResult>, ApiError> {
    let mut results = vec![ItemResult::Created { id: None }; batch.items.len()];
    let created = body
        .get("transactions")
        .and_then(Value::as_array)
        .ok_or_else(|| ApiError::Protocol("insert answer without `transactions`".into()))?;
    for tx in created {
        let external_id = tx.get("external_id").and_then(Value::as_str);
        let index = batch
            .items
            .iter()
            .position(|item| Some(item.transaction.external_id.as_str()) == external_id);
        if let Some(index) = index {
            results[index] = ItemResult::Created {
                id: tx.get("id").and_then(Value::as_i64),
            };
        }
    }
    for skipped in body
        .get("skipped_duplicates")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let index = skipped
            .get("request_transactions_index")
            .and_then(Value::as_u64)
            .and_then(|i| usize::try_from(i).ok())
            .filter(|i| *i < results.len());
        if let Some(index) = index {
            results[index] = ItemResult::Duplicate {
                existing_id: skipped
                    .get("existing_transaction_id")
                    .and_then(Value::as_i64),
            };
        }
    }
    Ok(results)
}

fn v1_results(batch: &Batch, body: &Value) -> Result<Vec<ItemResult>, ApiError> {
    let ids = body
        .get("ids")
        .and_then(Value::as_array)
        .ok_or_else(|| ApiError::Protocol("insert answer without `ids`".into()))?;
    // v1 returns ids only for what it inserted, so they can be tied to requests only when all were.
    let one_to_one = ids.len() == batch.items.len();
    Ok((0..batch.items.len())
        .map(|i| ItemResult::Created {
            id: if one_to_one { ids[i].as_i64() } else { None },
        })
        .collect())
}

/// Reads `[{id, name | display_name, is_group?, children?}]`, flattening nested children.
fn named_list(value: &Value) -> Vec<Named> {
    let mut out = Vec::new();
    for item in value.as_array().into_iter().flatten() {
        let name = item
            .get("name")
            .or_else(|| item.get("display_name"))
            .and_then(Value::as_str);
        if let (Some(id), Some(name)) = (item.get("id").and_then(Value::as_i64), name) {
            out.push(Named {
                id,
                name: name.to_owned(),
                is_group: item
                    .get("is_group")
                    .and_then(Value::as_bool)
                    .unwrap_or(false),
            });
        }
        if let Some(children) = item.get("children") {
            out.extend(named_list(children));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::money::Money;

    fn outgoing(amount: &str) -> Outgoing {
        Outgoing {
            transaction: Transaction {
                date: chrono::NaiveDate::from_ymd_opt(2024, 3, 1).unwrap(),
                amount: Money::new(Amount::parse_plain(amount, None).unwrap(), "usd"),
                currency: "usd".into(),
                payee: Some("P".repeat(200)),
                notes: None,
                external_id: "venmo:1".into(),
                tags: vec!["venmo".into()],
                account: None,
                balance: None,
                plugin: "venmo".into(),
                void: false,
            },
            account_id: Some(7),
            category_id: None,
            tag_ids: vec![3],
            tag_names: vec!["venmo".into()],
            status: Some(ReviewStatus::Reviewed),
        }
    }

    fn client(api: ApiVersion) -> Client {
        Client::new(&LunchMoneySettings {
            api,
            ..Default::default()
        })
        .unwrap()
    }

    #[test]
    fn v2_bodies_flip_the_sign_and_use_ids() {
        let batch = Batch {
            items: vec![outgoing("-25.00"), outgoing("10.50")],
            apply_rules: true,
            skip_duplicates: false,
        };
        let body = client(ApiVersion::V2).insert_body(&batch);
        let first = &body["transactions"][0];
        assert_eq!(first["amount"], "25.00");
        assert_eq!(body["transactions"][1]["amount"], "-10.50");
        assert_eq!(first["manual_account_id"], 7);
        assert_eq!(first["tag_ids"], json!([3]));
        assert_eq!(first["status"], "reviewed");
        assert_eq!(first["payee"].as_str().unwrap().len(), MAX_PAYEE);
        assert!(first.get("notes").is_none() && first.get("category_id").is_none());
        assert_eq!(body["apply_rules"], true);
        assert!(body.get("debit_as_negative").is_none());
    }

    #[test]
    fn updates_carry_only_what_the_source_decides() {
        let item = outgoing("-25.00");
        let v2 = client(ApiVersion::V2).update_body(&item);
        assert_eq!(v2["amount"], "25.00");
        let mut keys: Vec<&str> = v2.as_object().unwrap().keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(keys, ["amount", "currency", "date", "payee"]);
        let v1 = client(ApiVersion::V1).update_body(&item);
        assert_eq!(v1["transaction"]["amount"], "-25.00");
        assert_eq!(v1["debit_as_negative"], true);
        assert!(v1["transaction"].get("external_id").is_none());
    }

    #[test]
    fn v1_bodies_keep_the_sign_with_debit_as_negative() {
        let batch = Batch {
            items: vec![outgoing("-25.00")],
            apply_rules: false,
            skip_duplicates: true,
        };
        let body = client(ApiVersion::V1).insert_body(&batch);
        let first = &body["transactions"][0];
        assert_eq!(first["amount"], "-25.00");
        assert_eq!(first["asset_id"], 7);
        assert_eq!(first["tags"], json!(["venmo"]));
        assert_eq!(first["status"], "cleared");
        assert_eq!(body["debit_as_negative"], true);
    }

    #[test]
    fn v2_answers_map_back_to_request_indices() {
        let mut second = outgoing("1.00");
        second.transaction.external_id = "venmo:2".into();
        let batch = Batch {
            items: vec![outgoing("1.00"), second],
            apply_rules: false,
            skip_duplicates: false,
        };
        let answer = json!({
            "transactions": [{"id": 99, "external_id": "venmo:2"}],
            "skipped_duplicates": [{"reason": "duplicate_external_id", "request_transactions_index": 0, "existing_transaction_id": 42}]
        });
        assert_eq!(
            v2_results(&batch, &answer).unwrap(),
            vec![
                ItemResult::Duplicate {
                    existing_id: Some(42)
                },
                ItemResult::Created { id: Some(99) }
            ]
        );
        assert!(v2_results(&batch, &json!({})).is_err());
    }

    #[test]
    fn errors_name_items_and_properties() {
        let body = json!({"message": "Invalid request", "errors": [{"errMsg": "bad date", "transaction_index": 3, "invalid_property": "date"}, {"errMsg": "x"}]});
        match http_error(400, "Invalid request".into(), None, &body) {
            ApiError::Http {
                item_errors,
                invalid_properties,
                ..
            } => {
                assert_eq!(item_errors, vec![(3, "bad date".to_owned())]);
                assert_eq!(invalid_properties, vec!["date".to_owned()]);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(parse_retry_after("7"), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after("Thu, 01 Jan 1970 00:00:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn named_lists_flatten_children() {
        let list = named_list(
            &json!([{"id": 1, "name": "Food", "is_group": true, "children": [{"id": 2, "name": "Coffee"}]}, {"id": 3, "display_name": "Venmo"}, {"name": "no id"}]),
        );
        assert_eq!(list.len(), 3);
        assert!(list[0].is_group && !list[1].is_group);
        assert_eq!(list[2].name, "Venmo");
    }
}
