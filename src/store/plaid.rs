//! Sources linked in Lunch Money through Plaid: their transactions are never inserted; an alert
//! triggers a Plaid fetch of the account instead, at most once per interval per account.
//!
//! The window is kept here, not in memory, so a restart cannot fetch twice within Lunch Money's
//! minute: a fetch is *reserved* (its time written and committed) before it is sent. A crash
//! between the reservation and the request costs one interval of waiting, never a 425.

use std::time::Duration;

use chrono::{DateTime, Utc};
use rusqlite::{params, OptionalExtension};
use serde::Serialize;

use super::{timestamp, Store, StoreError};

/// The answer to [`Store::reserve_plaid_fetch`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FetchSlot {
    /// Recorded as requested now: send the fetch.
    Granted,
    /// The account was fetched within the interval: not before this time.
    NotBefore(DateTime<Utc>),
}

/// One Plaid account's fetch window, for the outbox report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlaidFetch {
    pub plaid_account_id: i64,
    /// RFC 3339: the last fetch request.
    pub requested_at: String,
    /// RFC 3339: no fetch before this time.
    pub next_allowed_at: String,
    /// What Lunch Money answered to the last request (`accepted`, `too early`, an error).
    pub last_outcome: Option<String>,
}

impl Store {
    /// Reserves a fetch of `account` at `now` unless one was requested less than `interval`
    /// before (or Lunch Money said "too early" for a time after `now`). Atomic: the writer runs
    /// one reservation at a time, so concurrent callers cannot both be granted.
    pub async fn reserve_plaid_fetch(
        &self,
        account: i64,
        now: DateTime<Utc>,
        interval: Duration,
    ) -> Result<FetchSlot, StoreError> {
        let next = now + chrono::Duration::from_std(interval).unwrap_or(chrono::Duration::MAX);
        let (now, next) = (timestamp(now), timestamp(next));
        self.write(move |conn| {
            let allowed: Option<String> = conn
                .prepare_cached(
                    "SELECT next_allowed_at FROM plaid_fetches WHERE plaid_account_id = ?1",
                )?
                .query_row([account], |row| row.get(0))
                .optional()?;
            if let Some(allowed) = allowed.filter(|allowed| *allowed > now) {
                let when = DateTime::parse_from_rfc3339(&allowed)
                    .map_err(|e| StoreError::Corrupt(format!("plaid_fetches: {e}")))?;
                return Ok(FetchSlot::NotBefore(when.with_timezone(&Utc)));
            }
            conn.prepare_cached(
                "INSERT INTO plaid_fetches (plaid_account_id, requested_at, next_allowed_at)
                 VALUES (?1, ?2, ?3)
                 ON CONFLICT (plaid_account_id) DO UPDATE
                 SET requested_at = ?2, next_allowed_at = ?3, last_outcome = NULL",
            )?
            .execute(params![account, now, next])?;
            Ok(FetchSlot::Granted)
        })
        .await
    }

    /// Records Lunch Money's answer to the last fetch of `account`; with `not_before` (a 425),
    /// also pushes the window to at least that time.
    pub async fn record_plaid_outcome(
        &self,
        account: i64,
        outcome: String,
        not_before: Option<DateTime<Utc>>,
    ) -> Result<(), StoreError> {
        let not_before = not_before.map(timestamp);
        self.write(move |conn| {
            conn.prepare_cached(
                "UPDATE plaid_fetches
                 SET last_outcome = ?2,
                     next_allowed_at = MAX(next_allowed_at, COALESCE(?3, next_allowed_at))
                 WHERE plaid_account_id = ?1",
            )?
            .execute(params![account, outcome, not_before])?;
            Ok(())
        })
        .await
    }

    /// Every Plaid account's fetch window, by account id.
    pub fn plaid_fetches(&self) -> Result<Vec<PlaidFetch>, StoreError> {
        let conn = self.reader();
        let mut stmt = conn.prepare_cached(
            "SELECT plaid_account_id, requested_at, next_allowed_at, last_outcome
             FROM plaid_fetches ORDER BY plaid_account_id",
        )?;
        let rows = stmt.query_map([], |row| {
            Ok(PlaidFetch {
                plaid_account_id: row.get(0)?,
                requested_at: row.get(1)?,
                next_allowed_at: row.get(2)?,
                last_outcome: row.get(3)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Settled by a Plaid fetch: `state = 'fetched'` (Lunch Money gets the transaction from the
    /// bank through Plaid; it is never inserted), no claim, error or next attempt. Only pending
    /// rows change.
    pub async fn mark_fetched(&self, ids: Vec<i64>) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        self.write(move |conn| {
            let now = timestamp(Utc::now());
            let mut update = conn.prepare_cached(
                "UPDATE transactions
                 SET state = 'fetched', claimed_until = NULL, last_error = NULL,
                     next_attempt_at = NULL, updated_at = ?2
                 WHERE id = ?1 AND state = 'pending'",
            )?;
            for id in ids {
                update.execute(params![id, now])?;
            }
            Ok(())
        })
        .await
    }

    /// Not a failure, only not yet (a Plaid fetch window): pending rows due again at `until`, no
    /// claim, attempts and error as they were.
    pub async fn defer(&self, ids: Vec<i64>, until: DateTime<Utc>) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        let until = timestamp(until);
        self.write(move |conn| {
            let mut update = conn.prepare_cached(
                "UPDATE transactions SET next_attempt_at = ?2, claimed_until = NULL
                 WHERE id = ?1 AND state = 'pending'",
            )?;
            for id in ids {
                update.execute(params![id, until])?;
            }
            Ok(())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_fetch_per_interval_and_the_window_survives_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let store = Store::open(&path).unwrap();
        // Stored times have microseconds.
        let t0 = DateTime::from_timestamp_micros(Utc::now().timestamp_micros()).unwrap();
        let minute = Duration::from_secs(60);
        let at = |secs: i64| t0 + chrono::Duration::seconds(secs);
        assert_eq!(
            store.reserve_plaid_fetch(7, t0, minute).await.unwrap(),
            FetchSlot::Granted
        );
        assert_eq!(
            store.reserve_plaid_fetch(7, at(59), minute).await.unwrap(),
            FetchSlot::NotBefore(at(60))
        );
        // Other accounts have their own window.
        assert_eq!(
            store.reserve_plaid_fetch(8, at(1), minute).await.unwrap(),
            FetchSlot::Granted
        );
        store.close().unwrap();

        let store = Store::open(&path).unwrap();
        assert_eq!(
            store.reserve_plaid_fetch(7, at(30), minute).await.unwrap(),
            FetchSlot::NotBefore(at(60))
        );
        // A 425 pushes the window further; an earlier time never pulls it back.
        store
            .record_plaid_outcome(7, "too early".into(), Some(at(120)))
            .await
            .unwrap();
        store
            .record_plaid_outcome(7, "too early".into(), Some(at(90)))
            .await
            .unwrap();
        assert_eq!(
            store.reserve_plaid_fetch(7, at(100), minute).await.unwrap(),
            FetchSlot::NotBefore(at(120))
        );
        assert_eq!(
            store.reserve_plaid_fetch(7, at(120), minute).await.unwrap(),
            FetchSlot::Granted
        );
        let windows = store.plaid_fetches().unwrap();
        assert_eq!(windows.len(), 2);
        assert_eq!(windows[0].next_allowed_at, timestamp(at(180)));
        assert_eq!(
            windows[0].last_outcome, None,
            "a new request clears the old answer"
        );
        store.close().unwrap();
    }
}
