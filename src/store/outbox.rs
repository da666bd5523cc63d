//! The outbox: leasing pending transactions to the delivery worker, settling them, dead letters,
//! and re-parsing stored messages.
//!
//! A row's life: `pending` (due at `next_attempt_at`) → claimed by a worker for a lease
//! (`claimed_until`) → `delivered`, or back to `pending` with a later `next_attempt_at`
//! (`mark_retry`), or `dead` (`mark_dead`, the dead letter; `replay` makes it pending again), or
//! `fetched` (a Plaid-linked source: a Plaid fetch was triggered instead of an insert; `plaid.rs`).
//! A void from the bank (see `reconcile`) ends a row `voided` (never sent), or, once delivered,
//! makes it pending with a void body, which the worker deletes from Lunch Money: `deleted`.
//! A claim is only a lease: when it runs out (the worker died or restarted mid-delivery) the row
//! is claimable again, so delivery is at least once; Lunch Money's `external_id` dedupe makes a
//! repeat harmless.
//!
//! Every change goes through the writer (group commit, answered after `COMMIT`). The `now` of
//! `claim_pending` and `outbox_summary` is the caller's, so a test or a worker can use its own
//! clock; `updated_at`, and "due now" in `replay`/`apply_reparse`, use the wall clock on the
//! writer thread.

use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;

use super::{
    decode_transaction, query_transactions, timestamp, wake, MessageStatus, Store, StoreError,
    StoredTransaction,
};
use crate::transaction::Transaction;

/// The transaction states, as stored.
const STATES: [&str; 6] = [
    "pending",
    "delivered",
    "dead",
    "fetched",
    "voided",
    "deleted",
];

/// A pending transaction leased to the caller by [`Store::claim_pending`].
#[derive(Debug, Clone, PartialEq)]
pub struct Claimed {
    /// The transaction row's id: what `mark_*` and `release` take.
    pub id: i64,
    /// The message that first queued it.
    pub message_id: i64,
    /// With `plugin` restored from its own column.
    pub transaction: Transaction,
    /// Failed attempts so far (0 on the first delivery).
    pub attempts: i64,
    /// Set when Lunch Money already has the transaction: the claim is an update (PUT) of it.
    pub lunchmoney_id: Option<i64>,
}

/// The state of the outbox at one instant (one read snapshot).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct OutboxSummary {
    pub pending: u64,
    pub delivered: u64,
    pub dead: u64,
    /// Settled by a Plaid fetch instead of an insert (sources linked through Plaid).
    pub fetched: u64,
    /// Voided by their bank before they were sent (or before they arrived): never sent.
    pub voided: u64,
    /// Delivered, then voided by their bank and deleted from Lunch Money.
    pub deleted: u64,
    /// Pending with an unexpired claim (being delivered right now).
    pub claimed: u64,
    /// `created_at` of the oldest pending transaction, RFC 3339.
    pub oldest_pending: Option<String>,
    /// The earliest `next_attempt_at` among pending transactions, RFC 3339.
    pub next_attempt: Option<String>,
    /// `(transaction id, updated_at, last_error)` of the most recently updated row that has a
    /// `last_error` (pending after a failure, dead, or replayed and not yet delivered).
    pub last_error: Option<(i64, String, String)>,
}

/// What [`Store::apply_reparse`] did with the transactions of the new parse.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ReparseResult {
    /// New `external_id`s, queued as pending.
    pub new: usize,
    /// Rows whose body changed and was rewritten: pending ones, dead ones (made pending again),
    /// and delivered ones Lunch Money will be updated for (PUT).
    pub updated: usize,
    /// Rows whose body is the same.
    pub unchanged: usize,
    /// Voids recorded (withdrawn before delivery, recorded ahead of their transaction, or a
    /// delete of a delivered one queued).
    pub voided: usize,
    /// `external_id`s of delivered rows whose body changed but whose Lunch Money id is unknown
    /// (v1 does not always say it), so Lunch Money cannot be updated: left as they are.
    pub changed_delivered: Vec<String>,
}

/// Claims end no later than this, so a huge lease still stores as a sortable 4-digit-year time.
fn latest_time() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(9999, 12, 31, 23, 59, 59).unwrap()
}

/// `now + lease`, capped at [`latest_time`].
fn lease_end(now: DateTime<Utc>, lease: Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(lease)
        .ok()
        .and_then(|lease| now.checked_add_signed(lease))
        .map_or_else(latest_time, |end| end.min(latest_time()))
}

fn limit_param(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

impl Store {
    /// Claims up to `limit` pending transactions that are due (`next_attempt_at <= now`) and not
    /// claimed (no claim, or one that ended at or before `now`), oldest first (`created_at`, then
    /// id), and leases them until `now + lease`.
    ///
    /// Restart-safe: a claim whose lease ran out is claimable again, so rows claimed by a worker
    /// that died are delivered by the next one. Claiming is not a change of the row: `attempts`
    /// and `updated_at` stay. A row whose stored body can no longer be decoded is not returned
    /// (it would block the queue forever): it is made dead with the decoding error as its
    /// `last_error`.
    pub async fn claim_pending(
        &self,
        limit: usize,
        lease: Duration,
        now: DateTime<Utc>,
    ) -> Result<Vec<Claimed>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let until = timestamp(lease_end(now, lease));
        let now = timestamp(now);
        let limit = limit_param(limit);
        self.write(move |conn| claim(conn, &now, &until, limit))
            .await
    }

    /// Delivered: `state = 'delivered'`, `lunchmoney_id` = the id when one is given (else the
    /// stored one stays), no claim, no error, no next attempt, `updated_at` = now. Ids that do not
    /// exist are skipped.
    pub async fn mark_delivered(
        &self,
        deliveries: Vec<(i64, Option<i64>)>,
    ) -> Result<(), StoreError> {
        if deliveries.is_empty() {
            return Ok(());
        }
        self.write(move |conn| {
            let now = timestamp(Utc::now());
            let mut update = conn.prepare_cached(
                "UPDATE transactions
                 SET state = 'delivered', lunchmoney_id = COALESCE(?2, lunchmoney_id),
                     claimed_until = NULL, last_error = NULL, next_attempt_at = NULL,
                     updated_at = ?3
                 WHERE id = ?1 AND state <> 'voided'",
            )?;
            // Voided while this insert was in flight: Lunch Money now has it, so with its id it is
            // pending again, as a delete (its body is the void).
            let mut to_delete = conn.prepare_cached(
                "UPDATE transactions
                 SET state = 'pending', lunchmoney_id = ?2, claimed_until = NULL,
                     next_attempt_at = ?3, updated_at = ?3
                 WHERE id = ?1 AND state = 'voided' AND ?2 IS NOT NULL",
            )?;
            for (id, lunchmoney_id) in deliveries {
                update.execute(params![id, lunchmoney_id, now])?;
                to_delete.execute(params![id, lunchmoney_id, now])?;
            }
            Ok(())
        })
        .await
    }

    /// Voids settled: `state` = `deleted` (Lunch Money deleted it, or had it no more) or `voided`
    /// (a void claimed with nothing to delete), no claim, no error, no next attempt.
    pub async fn mark_void_settled(&self, ids: Vec<i64>, deleted: bool) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        let state = if deleted { "deleted" } else { "voided" };
        self.write(move |conn| {
            let now = timestamp(Utc::now());
            let mut update = conn.prepare_cached(
                "UPDATE transactions
                 SET state = ?2, claimed_until = NULL, last_error = NULL, next_attempt_at = NULL,
                     updated_at = ?3
                 WHERE id = ?1 AND state = 'pending'",
            )?;
            for id in ids {
                update.execute(params![id, state, now])?;
            }
            Ok(())
        })
        .await
    }

    /// A failed attempt to retry: stays pending, `attempts + 1`, `last_error` = `error`, due at
    /// `next_attempt_at`, no claim. Only pending rows change (a row delivered or made dead in the
    /// meantime, e.g. by a worker that re-claimed it after this one's lease ran out, stays so).
    pub async fn mark_retry(
        &self,
        ids: Vec<i64>,
        error: String,
        next_attempt_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        let next = timestamp(next_attempt_at);
        self.write(move |conn| {
            let now = timestamp(Utc::now());
            let mut update = conn.prepare_cached(
                "UPDATE transactions
                 SET attempts = attempts + 1, last_error = ?2, next_attempt_at = ?3,
                     claimed_until = NULL, updated_at = ?4
                 WHERE id = ?1 AND state = 'pending'",
            )?;
            for id in ids {
                update.execute(params![id, error, next, now])?;
            }
            Ok(())
        })
        .await
    }

    /// Gives up (the dead letter): `state = 'dead'`, `attempts + 1`, `last_error` = the message
    /// (e.g. the API's), no claim, no next attempt. Only pending rows change: a delivered row is
    /// never made dead.
    pub async fn mark_dead(&self, failures: Vec<(i64, String)>) -> Result<(), StoreError> {
        if failures.is_empty() {
            return Ok(());
        }
        self.write(move |conn| {
            let now = timestamp(Utc::now());
            let mut update = conn.prepare_cached(
                "UPDATE transactions
                 SET state = 'dead', attempts = attempts + 1, last_error = ?2,
                     next_attempt_at = NULL, claimed_until = NULL, updated_at = ?3
                 WHERE id = ?1 AND state = 'pending'",
            )?;
            for (id, error) in failures {
                update.execute(params![id, error, now])?;
            }
            Ok(())
        })
        .await
    }

    /// Gives claims back without counting an attempt (shutdown, dry run): the rows are claimable
    /// again at once (when due). Nothing else changes.
    pub async fn release(&self, ids: Vec<i64>) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        self.write(move |conn| {
            let mut update = conn.prepare_cached(
                "UPDATE transactions SET claimed_until = NULL
                 WHERE id = ?1 AND state = 'pending'",
            )?;
            for id in ids {
                update.execute([id])?;
            }
            Ok(())
        })
        .await
    }

    /// Gives back every claim still in force: for a worker starting up, when any claim in the
    /// store was left by a process that died (SIGKILL, OOM kill, power cut) before it could
    /// release it. Returns how many rows were claimed.
    pub async fn release_all_claims(&self) -> Result<usize, StoreError> {
        self.write(|conn| {
            Ok(conn
                .prepare_cached(
                    "UPDATE transactions SET claimed_until = NULL
                     WHERE state = 'pending' AND claimed_until IS NOT NULL",
                )?
                .execute([])?)
        })
        .await
    }

    /// Dead letters back to pending: all of them when `ids` is `None`, else those of `ids` that
    /// are dead (others are skipped). They are due now with `attempts` reset to 0; `last_error`
    /// is kept for the record until delivery. Returns how many moved; wakes the worker if any.
    pub async fn replay(&self, ids: Option<Vec<i64>>) -> Result<usize, StoreError> {
        let queued = std::sync::Arc::clone(&self.queued);
        self.write_then(
            move |conn| {
                let now = timestamp(Utc::now());
                const REVIVE: &str = "UPDATE transactions
                     SET state = 'pending', attempts = 0, next_attempt_at = ?1,
                         claimed_until = NULL, updated_at = ?1
                     WHERE state = 'dead'";
                match ids {
                    None => Ok(conn.prepare_cached(REVIVE)?.execute([&now])?),
                    Some(ids) => {
                        let mut update = conn.prepare_cached(&format!("{REVIVE} AND id = ?2"))?;
                        let mut moved = 0;
                        for id in ids {
                            moved += update.execute(params![now, id])?;
                        }
                        Ok(moved)
                    }
                }
            },
            move |moved: &usize| {
                if *moved > 0 {
                    wake(&queued);
                }
            },
        )
        .await
    }

    /// Counts by state, claims in force at `now`, and the oldest, next and latest error, all from
    /// one read snapshot.
    pub fn outbox_summary(&self, now: DateTime<Utc>) -> Result<OutboxSummary, StoreError> {
        let conn = self.reader();
        let summary = conn
            .prepare_cached(
                "SELECT
                   (SELECT COUNT(*) FROM transactions WHERE state = 'pending'),
                   (SELECT COUNT(*) FROM transactions WHERE state = 'delivered'),
                   (SELECT COUNT(*) FROM transactions WHERE state = 'dead'),
                   (SELECT COUNT(*) FROM transactions
                    WHERE state = 'pending' AND claimed_until > ?1),
                   (SELECT MIN(created_at) FROM transactions WHERE state = 'pending'),
                   (SELECT MIN(next_attempt_at) FROM transactions WHERE state = 'pending'),
                   e.id, e.updated_at, e.last_error,
                   (SELECT COUNT(*) FROM transactions WHERE state = 'fetched'),
                   (SELECT COUNT(*) FROM transactions WHERE state = 'voided'),
                   (SELECT COUNT(*) FROM transactions WHERE state = 'deleted')
                 FROM (SELECT 1)
                 LEFT JOIN (SELECT id, updated_at, last_error FROM transactions
                            WHERE last_error IS NOT NULL
                            ORDER BY updated_at DESC, id DESC LIMIT 1) AS e",
            )?
            .query_row([timestamp(now)], |row| {
                let count = |i| row.get::<_, i64>(i).map(|n| n as u64);
                let last_error = match row.get::<_, Option<i64>>(6)? {
                    Some(id) => Some((id, row.get(7)?, row.get(8)?)),
                    None => None,
                };
                Ok(OutboxSummary {
                    pending: count(0)?,
                    delivered: count(1)?,
                    dead: count(2)?,
                    fetched: count(9)?,
                    voided: count(10)?,
                    deleted: count(11)?,
                    claimed: count(3)?,
                    oldest_pending: row.get(4)?,
                    next_attempt: row.get(5)?,
                    last_error,
                })
            })?;
        Ok(summary)
    }

    /// Transactions in `state` (`pending`, `delivered`, `dead`, `fetched`, `voided` or `deleted`;
    /// anything else is `InvalidArgument`), oldest first (`created_at`, then id), at most `limit`.
    pub fn transactions_in_state(
        &self,
        state: &str,
        limit: usize,
    ) -> Result<Vec<StoredTransaction>, StoreError> {
        if !STATES.contains(&state) {
            return Err(StoreError::InvalidArgument(format!(
                "unknown transaction state {state:?} (expected one of {})",
                STATES.join(", ")
            )));
        }
        let conn = self.reader();
        query_transactions(
            &conn,
            "WHERE state = ?1 ORDER BY created_at, id LIMIT ?2",
            params![state, limit_param(limit)],
        )
    }

    pub fn transaction_by_external_id(
        &self,
        external_id: &str,
    ) -> Result<Option<StoredTransaction>, StoreError> {
        let conn = self.reader();
        Ok(
            query_transactions(&conn, "WHERE external_id = ?1", [external_id])?
                .into_iter()
                .next(),
        )
    }

    /// Ids of messages received at or after `since`, oldest first (`received_at`, then id). With
    /// `plugin`, only those whose stored plugin is `plugin` or whose status is `unmatched` or
    /// `failed` (whatever their plugin), so a fixed parser can claim them.
    pub fn message_ids_since(
        &self,
        since: DateTime<Utc>,
        plugin: Option<&str>,
    ) -> Result<Vec<i64>, StoreError> {
        let conn = self.reader();
        let mut stmt = conn.prepare_cached(
            "SELECT id FROM messages
             WHERE received_at >= ?1
               AND (?2 IS NULL OR plugin = ?2 OR status IN ('unmatched', 'failed'))
             ORDER BY received_at, id",
        )?;
        let rows = stmt.query_map(params![timestamp(since), plugin], |row| row.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Records a new parse of stored message `message_id` (its `status`, `plugin`, `reason`, and
    /// `parsed_at` = now) and reconciles the transactions it produced, by `external_id`:
    ///
    /// - a new `external_id` is queued (pending, due now, linked to this message): `new`;
    /// - an existing one with the same body: `unchanged`, nothing written;
    /// - an existing pending or dead one with another body: the body (and plugin) are rewritten,
    ///   and a dead one is made pending again, due now, with `attempts` 0: `updated`;
    /// - an existing delivered one with another body is left as it is and listed in
    ///   `changed_delivered`, for a later update of Lunch Money.
    ///
    /// Transactions the new parse no longer produces are left alone, never deleted. As with
    /// `ingest`, transactions are only looked at when `status` is `Queued`. "Same body" means the
    /// serde_json serialisation of the new `Transaction` (what the `body` column stores; `plugin`
    /// is not part of it) equals the stored body as JSON values (so key order or whitespace alone
    /// is no change).
    ///
    /// A pending row rewritten while a worker holds a claim on it may still be delivered with the
    /// body that worker read; keep re-parses for quiet moments or rows that are not in flight.
    ///
    /// `NotFound` if there is no such message. Wakes the worker when something was queued.
    pub async fn apply_reparse(
        &self,
        message_id: i64,
        status: MessageStatus,
        plugin: Option<String>,
        reason: Option<String>,
        transactions: Vec<Transaction>,
    ) -> Result<ReparseResult, StoreError> {
        let queued = std::sync::Arc::clone(&self.queued);
        let (result, _) = self
            .write_then(
                move |conn| {
                    reparse(
                        conn,
                        message_id,
                        status,
                        plugin.as_deref(),
                        reason.as_deref(),
                        &transactions,
                    )
                },
                move |(_, woke): &(ReparseResult, bool)| {
                    if *woke {
                        wake(&queued);
                    }
                },
            )
            .await?;
        Ok(result)
    }
}

/// Leases the due rows and returns them oldest first.
fn claim(
    conn: &Connection,
    now: &str,
    until: &str,
    limit: i64,
) -> Result<Vec<Claimed>, StoreError> {
    let mut rows = conn
        .prepare_cached(
            "UPDATE transactions SET claimed_until = ?2
             WHERE id IN (
               SELECT id FROM transactions
               WHERE state = 'pending'
                 AND (next_attempt_at IS NULL OR next_attempt_at <= ?1)
                 AND (claimed_until IS NULL OR claimed_until <= ?1)
               ORDER BY created_at, id
               LIMIT ?3)
             RETURNING id, message_id, plugin, body, attempts, created_at, lunchmoney_id",
        )?
        .query_map(params![now, until, limit], |row| {
            Ok((
                row.get::<_, i64>(0)?,
                row.get::<_, i64>(1)?,
                row.get::<_, String>(2)?,
                row.get::<_, String>(3)?,
                row.get::<_, i64>(4)?,
                row.get::<_, String>(5)?,
                row.get::<_, Option<i64>>(6)?,
            ))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    // RETURNING gives no order.
    rows.sort_by(|a, b| (&a.5, a.0).cmp(&(&b.5, b.0)));
    let mut claimed = Vec::with_capacity(rows.len());
    for (id, message_id, plugin, body, attempts, _, lunchmoney_id) in rows {
        match decode_transaction(id, &body, plugin) {
            Ok(transaction) => claimed.push(Claimed {
                id,
                message_id,
                transaction,
                attempts,
                lunchmoney_id,
            }),
            Err(e) => {
                tracing::error!("outbox: transaction {id} made dead: {e}");
                conn.prepare_cached(
                    "UPDATE transactions
                     SET state = 'dead', last_error = ?2, next_attempt_at = NULL,
                         claimed_until = NULL, updated_at = ?3
                     WHERE id = ?1",
                )?
                .execute(params![id, e.to_string(), timestamp(Utc::now())])?;
            }
        }
    }
    Ok(claimed)
}

/// The writer side of `apply_reparse`; the flag says whether something became pending and due.
fn reparse(
    conn: &Connection,
    message_id: i64,
    status: MessageStatus,
    plugin: Option<&str>,
    reason: Option<&str>,
    transactions: &[Transaction],
) -> Result<(ReparseResult, bool), StoreError> {
    let now = timestamp(Utc::now());
    let found = conn
        .prepare_cached(
            "UPDATE messages SET status = ?2, plugin = ?3, reason = ?4, parsed_at = ?5
             WHERE id = ?1",
        )?
        .execute(params![message_id, status.as_str(), plugin, reason, now])?;
    if found == 0 {
        return Err(StoreError::NotFound(format!("message {message_id}")));
    }
    let mut result = ReparseResult::default();
    let mut queued = false;
    if status != MessageStatus::Queued {
        return Ok((result, queued));
    }
    for t in transactions {
        let row_plugin = if t.plugin.is_empty() {
            plugin.unwrap_or_default()
        } else {
            t.plugin.as_str()
        };
        match reconcile(conn, message_id, t, row_plugin, &now)? {
            Reconciled::New => {
                result.new += 1;
                queued = true;
            }
            Reconciled::Unchanged => result.unchanged += 1,
            Reconciled::Rewritten { queued: q } => {
                result.updated += 1;
                queued |= q;
            }
            Reconciled::ChangedUnreachable => result.changed_delivered.push(t.external_id.clone()),
            Reconciled::Voided { queued: q } => {
                result.voided += 1;
                queued |= q;
            }
        }
    }
    Ok((result, queued))
}

/// What storing a transaction did, given what was stored under its `external_id`.
pub(crate) enum Reconciled {
    /// Not seen before: queued for insertion.
    New,
    Unchanged,
    /// The body changed and was rewritten; `queued` when that made something due to be sent
    /// (a dead row revived, or a delivered one now to be updated in Lunch Money).
    Rewritten {
        queued: bool,
    },
    /// Delivered, changed (or voided), but with no Lunch Money id to update: left as it is.
    ChangedUnreachable,
    /// A void was recorded; `queued` when a delete of a delivered transaction is now due.
    Voided {
        queued: bool,
    },
}

/// Stores `t` under its `external_id`, the one rule for ingest and re-parse alike:
/// - new: inserted pending (an insert);
/// - voided or deleted before: nothing (a void is final, whatever order the news came in);
/// - same body: nothing;
/// - pending: body rewritten (whatever is sent next carries it);
/// - dead: body rewritten, pending again, attempts reset;
/// - delivered with a Lunch Money id: body rewritten and pending again, which the outbox sends as
///   an update (PUT) because the id is set: Lunch Money skips a second insert of an
///   `external_id`, so a settled or corrected transaction must be an update, never an insert;
/// - delivered without an id, or fetched through Plaid: left as it is.
///
/// A void record (`t.void`, see [`reconcile_void`]) follows its own rule.
pub(crate) fn reconcile(
    conn: &Connection,
    message_id: i64,
    t: &Transaction,
    plugin: &str,
    now: &str,
) -> Result<Reconciled, StoreError> {
    let body = serde_json::to_string(t)?;
    let existing: Option<(i64, String, String, Option<i64>)> = conn
        .prepare_cached(
            "SELECT id, body, state, lunchmoney_id FROM transactions WHERE external_id = ?1",
        )?
        .query_row([&t.external_id], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
        })
        .optional()?;
    if t.void {
        return reconcile_void(conn, message_id, t, &body, plugin, now, existing);
    }
    let Some((id, stored, state, lunchmoney_id)) = existing else {
        conn.prepare_cached(
            "INSERT INTO transactions (message_id, external_id, plugin, body, state,
                                       next_attempt_at, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, 'pending', ?5, ?5, ?5)",
        )?
        .execute(params![message_id, t.external_id, plugin, body, now])?;
        return Ok(Reconciled::New);
    };
    if state == "voided" || state == "deleted" || same_body(&stored, t)? {
        return Ok(Reconciled::Unchanged);
    }
    match (state.as_str(), lunchmoney_id) {
        // Fetched: Lunch Money has it from Plaid, under an id we never learn.
        ("delivered", None) | ("fetched", _) => Ok(Reconciled::ChangedUnreachable),
        ("pending", _) => {
            conn.prepare_cached(
                "UPDATE transactions SET body = ?2, plugin = ?3, updated_at = ?4 WHERE id = ?1",
            )?
            .execute(params![id, body, plugin, now])?;
            Ok(Reconciled::Rewritten { queued: false })
        }
        // Dead, or delivered with an id: due again, from a clean slate.
        _ => {
            conn.prepare_cached(
                "UPDATE transactions
                 SET body = ?2, plugin = ?3, state = 'pending', attempts = 0,
                     next_attempt_at = ?4, claimed_until = NULL, updated_at = ?4
                 WHERE id = ?1",
            )?
            .execute(params![id, body, plugin, now])?;
            Ok(Reconciled::Rewritten { queued: true })
        }
    }
}

/// Stores the void record `t` (body `body`) over what is stored under its `external_id`:
/// - nothing yet (the void came first): a `voided` row, so the insert, when it comes, is dropped;
/// - pending and never delivered, or dead: `voided`, never sent. (A worker that is sending it
///   right now and gets an id back makes it pending again, for a delete: `mark_delivered`.)
/// - delivered with a Lunch Money id (or pending an update of one): pending with the void body,
///   due now, which the outbox sends as a delete;
/// - delivered without an id, or fetched through Plaid: left as it is (nothing to delete by);
/// - voided or deleted already: nothing.
fn reconcile_void(
    conn: &Connection,
    message_id: i64,
    t: &Transaction,
    body: &str,
    plugin: &str,
    now: &str,
    existing: Option<(i64, String, String, Option<i64>)>,
) -> Result<Reconciled, StoreError> {
    let Some((id, _, state, lunchmoney_id)) = existing else {
        conn.prepare_cached(
            "INSERT INTO transactions (message_id, external_id, plugin, body, state,
                                       created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, 'voided', ?5, ?5)",
        )?
        .execute(params![message_id, t.external_id, plugin, body, now])?;
        return Ok(Reconciled::Voided { queued: false });
    };
    match (state.as_str(), lunchmoney_id) {
        ("voided" | "deleted", _) => Ok(Reconciled::Unchanged),
        ("delivered", None) | ("fetched", _) => Ok(Reconciled::ChangedUnreachable),
        ("pending" | "dead", None) => {
            conn.prepare_cached(
                "UPDATE transactions
                 SET body = ?2, state = 'voided', next_attempt_at = NULL, updated_at = ?3
                 WHERE id = ?1",
            )?
            .execute(params![id, body, now])?;
            Ok(Reconciled::Voided { queued: false })
        }
        _ => {
            conn.prepare_cached(
                "UPDATE transactions
                 SET body = ?2, state = 'pending', attempts = 0, last_error = NULL,
                     next_attempt_at = ?3, claimed_until = NULL, updated_at = ?3
                 WHERE id = ?1",
            )?
            .execute(params![id, body, now])?;
            Ok(Reconciled::Voided { queued: true })
        }
    }
}

/// Whether the stored body is `t`'s serialisation, compared as JSON values.
fn same_body(stored: &str, t: &Transaction) -> Result<bool, StoreError> {
    let stored: serde_json::Value = serde_json::from_str(stored)?;
    Ok(stored == serde_json::to_value(t)?)
}
