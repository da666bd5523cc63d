//! Operator operations, shared by the command line and the admin HTTP routes: the outbox report,
//! replaying dead letters, re-parsing stored input, and checking the Lunch Money set-up.

use std::sync::Arc;

use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;
use serde_json::{json, Value};

use crate::deliver::{self, client::Client, limiter::RateLimiter, mapping::Resolver};
use crate::inbound::stored::reextract;
use crate::inbound::Payload;
use crate::parse::{Outcome, Registry};
use crate::settings::Settings;
use crate::store::{MessageStatus, Store, StoreError, StoredMessage};
use crate::transaction::Transaction;
use crate::trust::{self, Trust, Verdict};

/// How many dead letters and pending transactions the report lists.
const LISTED: usize = 50;

/// The outbox at a glance: counts by state, the oldest pending, the last error, (in a dry run)
/// what would be posted, Plaid fetch windows, and the parser-drift counts per sender.
pub fn outbox_report(
    store: &Store,
    settings: &Settings,
    registry: &Registry,
) -> Result<Value, StoreError> {
    let summary = store.outbox_summary(Utc::now())?;
    let dead: Vec<Value> = store
        .transactions_in_state("dead", LISTED)?
        .into_iter()
        .map(|t| json!({"id": t.id, "message_id": t.message_id, "external_id": t.transaction.external_id, "attempts": t.attempts, "error": t.last_error}))
        .collect();
    let pending: Vec<Value> = store
        .transactions_in_state("pending", LISTED)?
        .into_iter()
        .map(|t| {
            if t.transaction.void {
                return json!({
                    "id": t.id,
                    "attempts": t.attempts,
                    "next_attempt_at": t.next_attempt_at,
                    "error": t.last_error,
                    "external_id": t.transaction.external_id,
                    "would_delete": t.lunchmoney_id,
                });
            }
            let mapping = settings.lunchmoney.mapping(&t.transaction.plugin);
            if let Some(plaid) = mapping.plaid_target(t.transaction.account.as_deref()) {
                return json!({
                    "id": t.id,
                    "attempts": t.attempts,
                    "next_attempt_at": t.next_attempt_at,
                    "error": t.last_error,
                    "external_id": t.transaction.external_id,
                    "would_fetch_plaid_account": plaid,
                });
            }
            json!({
                "id": t.id,
                "attempts": t.attempts,
                "next_attempt_at": t.next_attempt_at,
                "error": t.last_error,
                "would_post": {
                    "date": t.transaction.date,
                    "amount": t.transaction.amount,
                    "currency": t.transaction.currency,
                    "payee": t.transaction.payee,
                    "notes": t.transaction.notes,
                    "external_id": t.transaction.external_id,
                    "tags": tags_with(&t.transaction, &mapping.tags),
                    "account": t.transaction.account.as_ref().and_then(|a| mapping.accounts.get(a)).or(mapping.account.as_ref()),
                    "category": mapping.category,
                },
            })
        })
        .collect();
    let fetched: Vec<Value> = store
        .transactions_in_state("fetched", LISTED)?
        .into_iter()
        .map(|t| {
            let mapping = settings.lunchmoney.mapping(&t.transaction.plugin);
            json!({"id": t.id, "external_id": t.transaction.external_id, "at": t.updated_at, "plaid_account": mapping.plaid_target(t.transaction.account.as_deref())})
        })
        .collect();
    Ok(json!({
        "dry_run": settings.dry_run(),
        "counts": {"pending": summary.pending, "delivered": summary.delivered, "dead": summary.dead, "fetched": summary.fetched, "voided": summary.voided, "deleted": summary.deleted, "claimed": summary.claimed},
        "oldest_pending": summary.oldest_pending,
        "next_attempt": summary.next_attempt,
        "last_error": summary.last_error.map(|(id, at, error)| json!({"transaction": id, "at": at, "error": error})),
        "sources_without_account": deliver::sources_without_account(&settings.lunchmoney, registry),
        "pending": pending,
        "dead": dead,
        "fetched": fetched,
        "plaid_fetches": store.plaid_fetches()?,
        "parse_drift": store.drift_counts()?,
        "rejected": rejected_messages(store)?,
    }))
}

/// The latest rejected messages and why (sender trust or unreadable input): never delivered.
fn rejected_messages(store: &Store) -> Result<Vec<Value>, StoreError> {
    let mut out = Vec::new();
    for id in store.message_ids(Some(MessageStatus::Rejected), LISTED)? {
        if let Some(m) = store.message(id)? {
            out.push(json!({"message_id": m.id, "received_at": m.received_at, "route": m.route, "plugin": m.plugin, "reason": m.reason}));
        }
    }
    Ok(out)
}

fn tags_with(tx: &Transaction, extra: &[String]) -> Vec<String> {
    let mut tags = tx.tags.clone();
    for t in extra {
        if !tags.contains(t) {
            tags.push(t.clone());
        }
    }
    tags
}

/// What re-parsing found for one stored message.
#[derive(Debug, Serialize)]
pub struct Reparsed {
    pub id: i64,
    pub route: String,
    pub before: Value,
    pub after: Value,
    pub new: Vec<String>,
    pub updated: Vec<Value>,
    pub unchanged: usize,
    /// Already delivered with other values; left as they are in Lunch Money.
    pub changed_delivered: Vec<String>,
}

#[derive(Debug, Default, Serialize)]
pub struct ReparseReport {
    pub dry_run: bool,
    pub messages: usize,
    pub status_changed: usize,
    pub new: usize,
    pub updated: usize,
    pub unchanged: usize,
    pub changed_delivered: usize,
    /// Messages whose parse result or transactions differ (all of them, even in a real run).
    pub changes: Vec<Reparsed>,
}

/// Runs today's parsers over the raw input stored since `since` (optionally only a plugin's
/// messages and the unmatched or failed ones it may now claim) and queues what is new or changed.
/// With `dry_run` nothing is written and the report is the diff.
///
/// Sender trust is judged again with today's configuration. The verdict recorded when the message
/// arrived is reused (keys rotate, so old signatures may no longer verify); only a verdict with a
/// DNS temporary failure, or none, is checked again, and the new one is recorded.
pub async fn reparse(
    store: &Store,
    registry: &Registry,
    trust: &Trust,
    since: NaiveDate,
    plugin: Option<&str>,
    dry_run: bool,
) -> Result<ReparseReport, StoreError> {
    let since: DateTime<Utc> = since.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc();
    let mut report = ReparseReport {
        dry_run,
        ..Default::default()
    };
    for id in store.message_ids_since(since, plugin)? {
        let Some(message) = store.message(id)? else {
            continue;
        };
        let (mut status, mut outcome, pending) = parse_stored(registry, &message);
        if let Some(pending) = pending {
            let recorded = message
                .meta
                .get("trust")
                .and_then(|v| serde_json::from_value::<Verdict>(v.clone()).ok())
                .filter(|v| !v.has_temperror() && outcome.plugin.as_deref() == Some(&v.plugin));
            let verdict = match recorded {
                Some(verdict) => verdict,
                None => trust.check(pending).await,
            };
            let decision = trust.decide(&verdict);
            let record = decision.record(&verdict);
            if let Some(rejection) = decision.rejection {
                status = MessageStatus::Rejected;
                outcome.reason = Some(rejection);
                outcome.transactions.clear();
            }
            if !dry_run && message.meta.get("trust") != Some(&record) {
                let mut meta = message.meta.clone();
                meta["trust"] = record;
                store.set_meta(id, meta).await?;
            }
        }
        if plugin.is_some_and(|p| {
            outcome.plugin.as_deref() != Some(p) && message.plugin.as_deref() != Some(p)
        }) {
            continue;
        }
        report.messages += 1;
        let transactions = if status == MessageStatus::Queued {
            outcome.transactions.clone()
        } else {
            Vec::new()
        };
        let mut entry = Reparsed {
            id,
            route: message.route.clone(),
            before: json!({"status": message.status, "plugin": message.plugin, "reason": message.reason}),
            after: json!({"status": status, "plugin": outcome.plugin, "reason": outcome.reason}),
            new: Vec::new(),
            updated: Vec::new(),
            unchanged: 0,
            changed_delivered: Vec::new(),
        };
        for tx in &transactions {
            match store.transaction_by_external_id(&tx.external_id)? {
                None => entry.new.push(tx.external_id.clone()),
                Some(stored) if same(&stored.transaction, tx) => entry.unchanged += 1,
                Some(stored) if stored.state == "delivered" || stored.state == "fetched" => entry.changed_delivered.push(tx.external_id.clone()),
                Some(stored) => entry.updated.push(json!({"external_id": tx.external_id, "before": stored.transaction, "after": tx})),
            }
        }
        let status_changed = status != message.status
            || outcome.plugin != message.plugin
            || outcome.reason != message.reason;
        if !dry_run && (status_changed || !entry.new.is_empty() || !entry.updated.is_empty()) {
            store
                .apply_reparse(
                    id,
                    status,
                    outcome.plugin.clone(),
                    outcome.reason.clone(),
                    transactions,
                )
                .await?;
        }
        report.status_changed += usize::from(status_changed);
        report.new += entry.new.len();
        report.updated += entry.updated.len();
        report.unchanged += entry.unchanged;
        report.changed_delivered += entry.changed_delivered.len();
        if status_changed
            || !entry.new.is_empty()
            || !entry.updated.is_empty()
            || !entry.changed_delivered.is_empty()
        {
            report.changes.push(entry);
        }
    }
    Ok(report)
}

/// Compares what is sent to Lunch Money (the plugin is bookkeeping).
fn same(a: &Transaction, b: &Transaction) -> bool {
    serde_json::to_value(a).ok() == serde_json::to_value(b).ok()
}

fn parse_stored(
    registry: &Registry,
    message: &StoredMessage,
) -> (MessageStatus, Outcome, Option<trust::Pending>) {
    match reextract(message) {
        Ok(extracted) => {
            let outcome = match &extracted.payload {
                Payload::Email(email) => registry.parse_parsed_email(email),
                Payload::Webhook(hook) => {
                    match message.source.as_deref().and_then(|s| registry.get(s)) {
                        Some(p) => p.parse_webhook(hook),
                        None => Outcome::error(None, format!("no plugin {:?}", message.source)),
                    }
                }
            };
            let pending = trust::prepare(
                registry,
                &extracted,
                &message.route,
                outcome.plugin.as_deref(),
            );
            (
                MessageStatus::from_outcome(outcome.status),
                outcome,
                pending,
            )
        }
        Err(malformed) => (
            MessageStatus::Rejected,
            Outcome::error(None, malformed.0),
            None,
        ),
    }
}

/// Every `plaid_account_id` configured must name an account linked through Plaid: otherwise
/// each alert of the source would end in the dead letter.
async fn check_plaid_links(
    settings: &Settings,
    registry: &Registry,
    client: &Client,
    limiter: &RateLimiter,
    say: &mut impl FnMut(&'static str, String),
) {
    let mut wanted: Vec<(String, i64)> = Vec::new();
    for source in registry.ids() {
        let mapping = settings.lunchmoney.mapping(source);
        let ids = mapping
            .plaid_account_id
            .into_iter()
            .chain(mapping.plaid_accounts.values().copied());
        wanted.extend(ids.map(|id| (source.to_owned(), id)));
    }
    if wanted.is_empty() {
        return;
    }
    limiter.acquire().await;
    let linked = match client.plaid_accounts().await {
        Ok(linked) => linked,
        Err(e) => {
            say("error", format!("cannot list Plaid accounts: {e}"));
            return;
        }
    };
    for (source, id) in wanted {
        match linked.iter().find(|a| a.id == id) {
            Some(account) => say(
                "ok",
                format!(
                    "source {source}: alerts trigger a Plaid fetch of {:?} (id {id})",
                    account.name
                ),
            ),
            None => say(
                "error",
                format!("source {source}: no Plaid account with id {id} (plaid_account_id)"),
            ),
        }
    }
}

/// One finding of `check`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Finding {
    pub level: &'static str,
    pub message: String,
}

/// Checks the Lunch Money side: the token (`GET /me`) and that every mapped account, category
/// and tag exists (missing v2 tags are reported; delivery would create them).
/// `limiter` is the caller's rate limiter (the service's own, over HTTP), so a check never pushes
/// the process past Lunch Money's limit.
pub async fn check_lunchmoney(
    settings: &Settings,
    registry: &Registry,
    limiter: Arc<RateLimiter>,
) -> Vec<Finding> {
    let mut findings = Vec::new();
    let mut say = |level: &'static str, message: String| findings.push(Finding { level, message });
    for source in deliver::sources_without_account(&settings.lunchmoney, registry) {
        say("warning", format!("source {source}: no account mapped (lunchmoney.sources.{source}.account); Lunch Money cannot deduplicate its transactions by external_id"));
    }
    if settings.dry_run() {
        say(
            "warning",
            "no Lunch Money token (lunchmoney.token): dry run, nothing is posted".into(),
        );
        return findings;
    }
    let client = match Client::new(&settings.lunchmoney) {
        Ok(c) => c,
        Err(e) => {
            say("error", format!("lunchmoney: {e}"));
            return findings;
        }
    };
    limiter.acquire().await;
    match client.me().await {
        Ok(me) => {
            let who = me
                .get("user_email")
                .or_else(|| me.get("email"))
                .or_else(|| me.get("user_name"))
                .or_else(|| me.get("name"));
            say(
                "ok",
                format!(
                    "token accepted{}",
                    who.and_then(Value::as_str)
                        .map(|w| format!(" ({w})"))
                        .unwrap_or_default()
                ),
            );
        }
        Err(e) => {
            say("error", format!("token rejected or API unreachable: {e}"));
            return findings;
        }
    }
    let resolver = Resolver::new(client.clone(), Arc::clone(&limiter));
    limiter.acquire().await;
    let existing_tags: Vec<String> = client
        .tags()
        .await
        .map(|t| t.into_iter().map(|t| t.name.to_lowercase()).collect())
        .unwrap_or_default();
    check_plaid_links(settings, registry, &client, &limiter, &mut say).await;
    for source in registry.ids() {
        let mapping = settings.lunchmoney.mapping(source);
        if mapping.account.is_none() && mapping.category.is_none() && mapping.tags.is_empty() {
            continue;
        }
        for tag in &mapping.tags {
            if settings.lunchmoney.api == crate::settings::ApiVersion::V2
                && !existing_tags.contains(&tag.to_lowercase())
            {
                say(
                    "warning",
                    format!(
                        "source {source}: tag {tag:?} does not exist yet; delivery will create it"
                    ),
                );
            }
        }
        let probe = Transaction {
            date: Utc::now().date_naive(),
            amount: crate::money::Money::new(crate::money::Amount::from_minor(0, 0), "usd"),
            currency: "usd".into(),
            payee: None,
            notes: None,
            external_id: format!("{source}:check"),
            tags: Vec::new(),
            account: None,
            balance: None,
            plugin: source.to_owned(),
            void: false,
        };
        let without_tags = crate::settings::SourceMapping {
            tags: Vec::new(),
            ..mapping
        };
        match resolver.outgoing(&probe, &without_tags).await {
            Ok(o) => {
                let shown = |id: Option<i64>, none: &str| {
                    id.map_or_else(|| none.to_owned(), |id| format!("id {id}"))
                };
                let account = shown(o.account_id, "none (cash)");
                let category = shown(o.category_id, "none");
                say(
                    "ok",
                    format!("source {source}: account {account}, category {category}"),
                );
            }
            Err(e) => say("error", format!("source {source}: {e}")),
        }
    }
    findings
}
