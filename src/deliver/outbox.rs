//! The outbox worker: claims pending transactions, posts them to Lunch Money, and marks each
//! delivered only once Lunch Money has it.
//!
//! - Claims carry a lease, so after a crash or restart unfinished work is claimed again.
//! - A backlog goes out in full batches (up to `batch_size`); an idle queue is woken by the store
//!   the moment a transaction is queued.
//! - Retryable failures (network, 408, 429, 5xx) keep transactions pending with exponential
//!   backoff; `Retry-After` pauses every request.
//! - Permanent failures (other 4xx) dead-letter only the transactions they concern: those the API
//!   names by index, or the one a bisection isolates; the rest of the batch is delivered.
//! - A lost answer is harmless: Lunch Money skips an `external_id` it already has on the account
//!   and reports it in `skipped_duplicates`, which counts as delivered.
//! - A transaction Lunch Money already has (its id is known) and that changed since (a bank's
//!   pending transaction settling) is sent as an update (PUT), never inserted again.
//! - A delivered transaction its bank voided (a reversed authorisation) is deleted
//!   (`DELETE /v2/transactions/{id}`; a 404 means it is gone already). v1 has no delete: it is
//!   dead-lettered with the Lunch Money id to delete by hand.
//! - A source whose bank account is linked in Lunch Money through Plaid (`plaid_account_id`) is
//!   never inserted, which would duplicate what Plaid imports: its transactions trigger a Plaid
//!   fetch of the account instead and end `fetched`. Lunch Money allows one fetch a minute per
//!   account, so every alert due in one round shares one fetch, and alerts arriving within the
//!   interval wait for its end (the window is in the store, so a restart respects it too) and
//!   then share the next one. A 425 ("too early") waits another interval without counting as a
//!   failure; other errors follow the usual retry decision.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{NaiveDate, Utc};
use tokio::sync::watch;

use super::client::{ApiError, Batch, Client, ItemResult, Outgoing, TOO_EARLY};
use super::limiter::RateLimiter;
use super::mapping::Resolver;
use super::retry::{backoff, decide, Decision, Jitter};
use crate::settings::{ApiVersion, LunchMoneySettings, SourceMapping};
use crate::store::{Claimed, FetchSlot, Store};

/// How long a claim holds. Far longer than one delivery round takes, so only a crash lets a
/// claim expire.
const LEASE: Duration = Duration::from_secs(600);
/// How often an idle worker looks for transactions whose retry time has come.
const IDLE_POLL: Duration = Duration::from_secs(1);
/// Properties whose invalidity means our cached ids are stale.
const ID_PROPERTIES: &[&str] = &["manual_account_id", "asset_id", "category_id", "tag_ids"];

pub struct Outbox {
    store: Arc<Store>,
    client: Client,
    resolver: Resolver,
    /// Shared with everything else in the process that calls Lunch Money.
    limiter: Arc<RateLimiter>,
    settings: LunchMoneySettings,
    jitter: Mutex<Jitter>,
    /// The date of the newest balance set per Lunch Money account, so a retried older
    /// transaction never sets an older balance over a newer one. In memory: after a restart the
    /// next balance simply wins.
    balances_set: Mutex<HashMap<i64, NaiveDate>>,
}

/// The worker was told to stop while waiting for its turn to send.
struct Stopped;

/// A claimed row on its way out: store id, attempts so far, the resolved transaction, and the
/// Lunch Money id when it is an update of one Lunch Money has.
#[derive(Clone)]
struct Row {
    id: i64,
    attempts: i64,
    outgoing: Outgoing,
    lunchmoney_id: Option<i64>,
}

type Delivery<'a> = Pin<Box<dyn Future<Output = Result<(), Stopped>> + Send + 'a>>;

impl Outbox {
    /// `limiter` is the process's one rate limiter: every request to Lunch Money counts against
    /// the same per-token limit.
    pub fn new(
        store: Arc<Store>,
        settings: &LunchMoneySettings,
        limiter: Arc<RateLimiter>,
    ) -> Result<Outbox, ApiError> {
        let client = Client::new(settings)?;
        Ok(Outbox {
            store,
            resolver: Resolver::new(client.clone(), Arc::clone(&limiter)),
            client,
            limiter,
            settings: settings.clone(),
            jitter: Mutex::new(Jitter::seeded()),
            balances_set: Mutex::new(HashMap::new()),
        })
    }

    /// Runs until `stop` turns true. An insert already sent is waited for; a wait for the rate
    /// limit is cut short and its transactions released for the next start.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let signal = self.store.queued_signal();
        tracing::info!(api = ?self.settings.api, base_url = self.settings.base_url(), "outbox worker started");
        // One server delivers from a store, so a claim found at start was left by a process that
        // was killed mid-delivery: send those rows now, not when their lease runs out. (Lunch
        // Money skips an external_id it already has, as after any lease that ran out.)
        match self.store.release_all_claims().await {
            Ok(0) => {}
            Ok(n) => tracing::warn!(
                transactions = n,
                "outbox: released claims left by a process that stopped mid-delivery"
            ),
            Err(e) => {
                tracing::error!(error = %e, "outbox: cannot release claims left by a previous process; they expire with their lease")
            }
        }
        while !*stop.borrow() {
            let claimed = match self
                .store
                .claim_pending(self.settings.batch_size, LEASE, Utc::now())
                .await
            {
                Ok(claimed) => claimed,
                Err(e) => {
                    tracing::error!(error = %e, "outbox: cannot claim transactions");
                    tokio::select! {
                        () = tokio::time::sleep(IDLE_POLL) => {}
                        _ = stop.changed() => {}
                    }
                    continue;
                }
            };
            if claimed.is_empty() {
                tokio::select! {
                    () = signal.notified() => {}
                    () = tokio::time::sleep(IDLE_POLL) => {}
                    _ = stop.changed() => {}
                }
                continue;
            }
            if self.deliver(claimed, &mut stop).await.is_err() {
                break;
            }
        }
        tracing::info!("outbox worker stopped");
    }

    async fn deliver(
        &self,
        claimed: Vec<Claimed>,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<(), Stopped> {
        let (voids, claimed): (Vec<Claimed>, Vec<Claimed>) =
            claimed.into_iter().partition(|c| c.transaction.void);
        let mut voids = voids.into_iter();
        while let Some(void) = voids.next() {
            if self.void(void, stop).await.is_err() {
                let unsent = voids.chain(claimed).map(|c| c.id).collect();
                self.release(unsent).await;
                return Err(Stopped);
            }
        }
        let mut by_source: BTreeMap<String, Vec<Claimed>> = BTreeMap::new();
        for c in claimed {
            by_source
                .entry(c.transaction.plugin.clone())
                .or_default()
                .push(c);
        }
        let mut sources = by_source.into_iter();
        while let Some((source, claims)) = sources.next() {
            let mapping = self.settings.mapping(&source);
            let (fetches, claims): (Vec<Claimed>, Vec<Claimed>) =
                claims.into_iter().partition(|c| {
                    mapping
                        .plaid_target(c.transaction.account.as_deref())
                        .is_some()
                });
            if !fetches.is_empty() && self.fetch_plaid(&mapping, fetches, stop).await.is_err() {
                let unsent: Vec<i64> = claims
                    .into_iter()
                    .chain(sources.flat_map(|(_, claims)| claims))
                    .map(|c| c.id)
                    .collect();
                self.release(unsent).await;
                return Err(Stopped);
            }
            if claims.is_empty() {
                continue;
            }
            let Some(rows) = self.resolve(&source, &mapping, claims).await else {
                continue;
            };
            if mapping.update_balance == Some(true) {
                self.update_balances(&rows, stop).await;
            }
            let (updates, inserts): (Vec<Row>, Vec<Row>) =
                rows.into_iter().partition(|r| r.lunchmoney_id.is_some());
            let mut stopped = false;
            for row in updates {
                if stopped || self.update(row, stop).await.is_err() {
                    stopped = true;
                }
            }
            for chunk in inserts.chunks(self.settings.batch_size) {
                if stopped
                    || self
                        .send(chunk.to_vec(), &mapping, false, stop)
                        .await
                        .is_err()
                {
                    stopped = true;
                }
            }
            if stopped {
                // Give back what this round has not sent, so a restart sends it at once.
                let unsent: Vec<i64> = sources
                    .flat_map(|(_, claims)| claims.into_iter().map(|c| c.id))
                    .collect();
                self.release(unsent).await;
                return Err(Stopped);
            }
        }
        Ok(())
    }

    /// Claimed transactions of a Plaid-linked source: one fetch per Plaid account for all of
    /// them, if the account's window allows one now; otherwise they wait for the window's end.
    async fn fetch_plaid(
        &self,
        mapping: &SourceMapping,
        claims: Vec<Claimed>,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<(), Stopped> {
        let mut by_account: BTreeMap<i64, Vec<Claimed>> = BTreeMap::new();
        for c in claims {
            if let Some(account) = mapping.plaid_target(c.transaction.account.as_deref()) {
                by_account.entry(account).or_default().push(c);
            }
        }
        let interval = Duration::from_secs(self.settings.plaid_fetch_interval_secs);
        let mut accounts = by_account.into_iter();
        while let Some((account, claims)) = accounts.next() {
            let ids: Vec<i64> = claims.iter().map(|c| c.id).collect();
            let attempts = claims.iter().map(|c| c.attempts).max().unwrap_or(0);
            match self
                .store
                .reserve_plaid_fetch(account, Utc::now(), interval)
                .await
            {
                Ok(FetchSlot::Granted) => {}
                Ok(FetchSlot::NotBefore(when)) => {
                    tracing::info!(plaid_account = account, transactions = ids.len(), not_before = %when, "outbox: Plaid account fetched recently; its alerts share the next fetch");
                    if let Err(e) = self.store.defer(ids, when).await {
                        tracing::error!(error = %e, "outbox: cannot defer transactions");
                    }
                    continue;
                }
                Err(e) => {
                    tracing::error!(error = %e, "outbox: cannot record a Plaid fetch; will retry");
                    self.retry_later(ids, e.to_string(), attempts, None).await;
                    continue;
                }
            }
            tokio::select! {
                () = self.limiter.acquire() => {}
                _ = stop.changed() => {
                    let unsent = ids.into_iter().chain(accounts.flat_map(|(_, c)| c).map(|c| c.id));
                    self.release(unsent.collect()).await;
                    return Err(Stopped);
                }
            }
            let error = match self.client.plaid_fetch(account).await {
                Ok(()) => {
                    self.plaid_outcome(account, "accepted", None).await;
                    match self.store.mark_fetched(ids).await {
                        Ok(()) => tracing::info!(
                            plaid_account = account,
                            transactions = claims.len(),
                            "outbox: Plaid fetch triggered instead of inserting"
                        ),
                        Err(e) => {
                            tracing::error!(error = %e, "outbox: fetch triggered but could not record it")
                        }
                    }
                    continue;
                }
                Err(error) => error,
            };
            match &error {
                // Fetched within the minute by someone else (the app, another client): try
                // again when the minute is over. Not a failure of these transactions.
                ApiError::Http { status, .. } if *status == TOO_EARLY => {
                    let when = Utc::now()
                        + chrono::Duration::from_std(interval).unwrap_or(chrono::Duration::MAX);
                    tracing::info!(plaid_account = account, not_before = %when, "outbox: Lunch Money says too early for a Plaid fetch; waiting");
                    self.plaid_outcome(account, "too early", Some(when)).await;
                    if let Err(e) = self.store.defer(ids, when).await {
                        tracing::error!(error = %e, "outbox: cannot defer transactions");
                    }
                }
                _ => {
                    self.plaid_outcome(account, &error.to_string(), None).await;
                    match decide(&error) {
                        Decision::Retry { after } => {
                            if let Some(after) = after {
                                self.limiter.pause(after);
                            }
                            tracing::warn!(plaid_account = account, error = %error, "outbox: Plaid fetch failed; will retry");
                            self.retry_later(ids, error.to_string(), attempts, after)
                                .await;
                        }
                        Decision::Permanent => {
                            let why = format!("Plaid fetch of account {account}: {error}");
                            self.dead(ids.into_iter().map(|id| (id, why.clone())).collect())
                                .await;
                        }
                    }
                }
            }
        }
        Ok(())
    }

    async fn plaid_outcome(
        &self,
        account: i64,
        outcome: &str,
        not_before: Option<chrono::DateTime<Utc>>,
    ) {
        if let Err(e) = self
            .store
            .record_plaid_outcome(account, outcome.to_owned(), not_before)
            .await
        {
            tracing::warn!(error = %e, "outbox: cannot record a Plaid fetch's answer");
        }
    }

    /// Resolves a source's transactions; on failure they wait (the mapping may be fixed).
    async fn resolve(
        &self,
        source: &str,
        mapping: &SourceMapping,
        claims: Vec<Claimed>,
    ) -> Option<Vec<Row>> {
        let mut rows = Vec::with_capacity(claims.len());
        for c in &claims {
            match self.resolver.outgoing(&c.transaction, mapping).await {
                Ok(outgoing) => rows.push(Row {
                    id: c.id,
                    attempts: c.attempts,
                    outgoing,
                    lunchmoney_id: c.lunchmoney_id,
                }),
                Err(e) => {
                    tracing::warn!(source, error = %e, "outbox: cannot map transactions to Lunch Money; will retry");
                    let attempts = claims.iter().map(|c| c.attempts).max().unwrap_or(0);
                    self.retry_later(
                        claims.iter().map(|c| c.id).collect(),
                        e.to_string(),
                        attempts,
                        None,
                    )
                    .await;
                    return None;
                }
            }
        }
        Some(rows)
    }

    /// Posts `rows` as one request and records what happened to each.
    fn send<'a>(
        &'a self,
        rows: Vec<Row>,
        mapping: &'a SourceMapping,
        refreshed: bool,
        stop: &'a mut watch::Receiver<bool>,
    ) -> Delivery<'a> {
        Box::pin(async move {
            if rows.is_empty() {
                return Ok(());
            }
            tokio::select! {
                () = self.limiter.acquire() => {}
                _ = stop.changed() => {
                    self.release(rows.iter().map(|r| r.id).collect()).await;
                    return Err(Stopped);
                }
            }
            let batch = Batch {
                items: rows.iter().map(|r| r.outgoing.clone()).collect(),
                apply_rules: mapping.apply_rules.unwrap_or(false),
                skip_duplicates: mapping.skip_duplicates.unwrap_or(false),
            };
            let error = match self.client.insert(&batch).await {
                Ok(results) => {
                    self.delivered(&rows, results).await;
                    return Ok(());
                }
                Err(error) => error,
            };
            match decide(&error) {
                Decision::Retry { after } => {
                    if let Some(after) = after {
                        self.limiter.pause(after);
                    }
                    let attempts = rows.iter().map(|r| r.attempts).max().unwrap_or(0);
                    tracing::warn!(transactions = rows.len(), error = %error, "outbox: insert failed; will retry");
                    self.retry_later(
                        rows.iter().map(|r| r.id).collect(),
                        error.to_string(),
                        attempts,
                        after,
                    )
                    .await;
                    Ok(())
                }
                Decision::Permanent => self.isolate(rows, mapping, refreshed, error, stop).await,
            }
        })
    }

    /// Sets each account's balance to the newest one these rows report (claims come oldest
    /// first, so the last row per account is the newest). Best effort: failures are logged.
    async fn update_balances(&self, rows: &[Row], stop: &mut watch::Receiver<bool>) {
        let mut newest: BTreeMap<i64, &Row> = BTreeMap::new();
        for row in rows {
            if let (Some(account), Some(_)) =
                (row.outgoing.account_id, &row.outgoing.transaction.balance)
            {
                newest.insert(account, row);
            }
        }
        for (account, row) in newest {
            let tx = &row.outgoing.transaction;
            let Some(balance) = &tx.balance else { continue };
            let stale = self
                .balances_set
                .lock()
                .map(|set| set.get(&account).is_some_and(|d| *d > tx.date))
                .unwrap_or(false);
            if stale {
                continue;
            }
            tokio::select! {
                () = self.limiter.acquire() => {}
                _ = stop.changed() => return,
            }
            match self
                .client
                .update_balance(account, balance, &tx.currency, tx.date)
                .await
            {
                Ok(()) => {
                    if let Ok(mut set) = self.balances_set.lock() {
                        set.insert(account, tx.date);
                    }
                    tracing::info!(account, balance = %balance, "outbox: account balance updated");
                }
                Err(e) => {
                    tracing::warn!(account, error = %e, "outbox: could not update the account balance")
                }
            }
        }
    }

    /// Settles a void: deletes the transaction Lunch Money has (v2), or, with nothing to delete
    /// (no id), records it voided. v1 has no delete: the row is dead-lettered with a message
    /// naming the Lunch Money transaction to delete by hand (`lm-ingest outbox` lists it).
    async fn void(&self, claim: Claimed, stop: &mut watch::Receiver<bool>) -> Result<(), Stopped> {
        let Some(lunchmoney_id) = claim.lunchmoney_id else {
            if let Err(e) = self.store.mark_void_settled(vec![claim.id], false).await {
                tracing::error!(error = %e, "outbox: cannot record a void");
            }
            return Ok(());
        };
        if self.settings.api == ApiVersion::V1 {
            self.dead(vec![(
                claim.id,
                format!(
                    "voided by its bank, but API v1 cannot delete transactions: delete Lunch Money transaction {lunchmoney_id} by hand"
                ),
            )])
            .await;
            return Ok(());
        }
        tokio::select! {
            () = self.limiter.acquire() => {}
            _ = stop.changed() => {
                self.release(vec![claim.id]).await;
                return Err(Stopped);
            }
        }
        match self.client.delete(lunchmoney_id).await {
            Ok(()) => match self.store.mark_void_settled(vec![claim.id], true).await {
                Ok(()) => tracing::info!(
                    transaction = claim.id,
                    lunchmoney_id,
                    "outbox: voided by its bank; deleted from Lunch Money"
                ),
                Err(e) => tracing::error!(error = %e, "outbox: deleted but could not record it"),
            },
            Err(error) => match decide(&error) {
                Decision::Retry { after } => {
                    if let Some(after) = after {
                        self.limiter.pause(after);
                    }
                    tracing::warn!(transaction = claim.id, error = %error, "outbox: delete failed; will retry");
                    self.retry_later(vec![claim.id], error.to_string(), claim.attempts, after)
                        .await;
                }
                Decision::Permanent => {
                    self.dead(vec![(
                        claim.id,
                        format!("delete of Lunch Money transaction {lunchmoney_id}: {error}"),
                    )])
                    .await
                }
            },
        }
        Ok(())
    }

    /// Sends one update (Lunch Money has no batch update) and records what happened.
    async fn update(&self, row: Row, stop: &mut watch::Receiver<bool>) -> Result<(), Stopped> {
        let Some(lunchmoney_id) = row.lunchmoney_id else {
            return Ok(());
        };
        tokio::select! {
            () = self.limiter.acquire() => {}
            _ = stop.changed() => {
                self.release(vec![row.id]).await;
                return Err(Stopped);
            }
        }
        match self.client.update(lunchmoney_id, &row.outgoing).await {
            Ok(()) => match self
                .store
                .mark_delivered(vec![(row.id, Some(lunchmoney_id))])
                .await
            {
                Ok(()) => tracing::info!(
                    transaction = row.id,
                    lunchmoney_id,
                    "outbox: updated in Lunch Money"
                ),
                Err(e) => tracing::error!(error = %e, "outbox: updated but could not record it"),
            },
            Err(error) => match decide(&error) {
                Decision::Retry { after } => {
                    if let Some(after) = after {
                        self.limiter.pause(after);
                    }
                    tracing::warn!(transaction = row.id, error = %error, "outbox: update failed; will retry");
                    self.retry_later(vec![row.id], error.to_string(), row.attempts, after)
                        .await;
                }
                // E.g. 404: the user deleted it in Lunch Money. Not re-inserted behind their back.
                Decision::Permanent => {
                    self.dead(vec![(
                        row.id,
                        format!("update of Lunch Money transaction {lunchmoney_id}: {error}"),
                    )])
                    .await
                }
            },
        }
        Ok(())
    }

    /// A permanent failure: find which transactions it concerns, dead-letter them, send the rest.
    async fn isolate(
        &self,
        rows: Vec<Row>,
        mapping: &SourceMapping,
        refreshed: bool,
        error: ApiError,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<(), Stopped> {
        let (item_errors, invalid_properties) = match &error {
            ApiError::Http {
                item_errors,
                invalid_properties,
                ..
            } => (item_errors.clone(), invalid_properties.clone()),
            _ => (Vec::new(), Vec::new()),
        };
        // An id we sent is unknown: our cached lists are stale. Refresh and try once more.
        if !refreshed
            && invalid_properties
                .iter()
                .any(|p| ID_PROPERTIES.contains(&p.as_str()))
        {
            self.resolver.invalidate().await;
            let mut fresh = Vec::with_capacity(rows.len());
            for row in &rows {
                match self
                    .resolver
                    .outgoing(&row.outgoing.transaction, mapping)
                    .await
                {
                    Ok(outgoing) => fresh.push(Row {
                        outgoing,
                        ..row.clone()
                    }),
                    Err(e) => {
                        let attempts = rows.iter().map(|r| r.attempts).max().unwrap_or(0);
                        self.retry_later(
                            rows.iter().map(|r| r.id).collect(),
                            e.to_string(),
                            attempts,
                            None,
                        )
                        .await;
                        return Ok(());
                    }
                }
            }
            return self.send(fresh, mapping, true, stop).await;
        }
        let named: Vec<(usize, String)> = item_errors
            .into_iter()
            .filter(|(i, _)| *i < rows.len())
            .collect();
        if !named.is_empty() {
            let dead: Vec<(i64, String)> = named
                .iter()
                .map(|(i, why)| (rows[*i].id, format!("{error}: {why}")))
                .collect();
            self.dead(dead).await;
            let rest: Vec<Row> = rows
                .into_iter()
                .enumerate()
                .filter(|(i, _)| !named.iter().any(|(n, _)| n == i))
                .map(|(_, r)| r)
                .collect();
            return self.send(rest, mapping, refreshed, stop).await;
        }
        if rows.len() == 1 {
            self.dead(vec![(rows[0].id, error.to_string())]).await;
            return Ok(());
        }
        let mut left = rows;
        let right = left.split_off(left.len() / 2);
        self.send(left, mapping, refreshed, stop).await?;
        self.send(right, mapping, refreshed, stop).await
    }

    async fn delivered(&self, rows: &[Row], results: Vec<ItemResult>) {
        let mut duplicates = 0;
        let deliveries: Vec<(i64, Option<i64>)> = rows
            .iter()
            .zip(results)
            .map(|(row, result)| match result {
                ItemResult::Created { id } => (row.id, id),
                ItemResult::Duplicate { existing_id } => {
                    duplicates += 1;
                    (row.id, existing_id)
                }
            })
            .collect();
        let count = deliveries.len();
        match self.store.mark_delivered(deliveries).await {
            Ok(()) => tracing::info!(
                transactions = count,
                already_present = duplicates,
                "outbox: delivered"
            ),
            // The claim lapses and they are sent again; Lunch Money skips what it has.
            Err(e) => tracing::error!(error = %e, "outbox: delivered but could not record it"),
        }
    }

    async fn retry_later(
        &self,
        ids: Vec<i64>,
        error: String,
        attempts: i64,
        at_least: Option<Duration>,
    ) {
        let random = self.jitter.lock().map(|mut j| j.unit()).unwrap_or(0.5);
        let max = Duration::from_secs(self.settings.max_backoff_secs);
        let wait = backoff(attempts, max, random).max(at_least.unwrap_or_default());
        let when = Utc::now() + chrono::Duration::from_std(wait).unwrap_or_default();
        if let Err(e) = self.store.mark_retry(ids, error, when).await {
            tracing::error!(error = %e, "outbox: cannot record a retry");
        }
    }

    async fn dead(&self, failures: Vec<(i64, String)>) {
        for (id, why) in &failures {
            tracing::error!(transaction = id, error = %why, "outbox: Lunch Money refused a transaction; moved to the dead letter");
        }
        if let Err(e) = self.store.mark_dead(failures).await {
            tracing::error!(error = %e, "outbox: cannot record a dead letter");
        }
    }

    async fn release(&self, ids: Vec<i64>) {
        if ids.is_empty() {
            return;
        }
        if let Err(e) = self.store.release(ids).await {
            tracing::warn!(error = %e, "outbox: cannot release claims; they expire on their own");
        }
    }
}
