//! Parser drift: when a sender changes its template, mail stops matching (`unmatched`), a
//! template's required field stops reading (`failed`), or an optional field silently falls back
//! to its default (`missing_field`). Each is counted per sender in `parse_drift`, in the same
//! commit as the message, so the counts are durable and survive restarts.
//!
//! The ingest routes are open to the internet, so whoever can post can invent senders. The label
//! is never the full address, only the sender's domain (or `hook:<plugin>` for webhooks); at most
//! [`MAX_SENDERS`] distinct senders are stored and any further one is counted as `other`; and
//! reports show the [`TOP_SENDERS`] with the most events, folding the rest into `other`.

use std::collections::BTreeMap;

use rusqlite::{params, Connection};
use serde::Serialize;

use super::{MessageStatus, Store, StoreError};

/// Distinct senders stored; events from any further sender are counted under [`OTHER`].
pub const MAX_SENDERS: usize = 200;
/// Senders shown by reports (`/metrics`, `lm-ingest outbox`); the rest are summed as [`OTHER`].
pub const TOP_SENDERS: usize = 20;
/// The sender label of everything beyond the caps.
pub const OTHER: &str = "other";

/// What a parse says about its sender's template, for [`NewMessage::drift`](super::NewMessage).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DriftNote {
    /// The sender's domain (`venmo.com`), or `hook:<plugin>` for a webhook.
    pub sender: String,
    /// Fields the matching template declares but found nothing for (`payee`, `notes`, `id`, …).
    pub missing_fields: Vec<String>,
}

/// One counter: `kind` is `unmatched`, `failed` or `missing_field` (then `field` names it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DriftCount {
    pub sender: String,
    /// The plugin that claimed the message; empty when none did.
    pub plugin: String,
    pub kind: String,
    pub field: String,
    pub count: u64,
    /// RFC 3339: the latest such message.
    pub last_seen: String,
}

/// Counts the message's drift events (inside `ingest`'s savepoint, so exactly once per stored
/// message; duplicates are never counted).
pub(crate) fn record(
    conn: &Connection,
    note: &DriftNote,
    status: MessageStatus,
    plugin: Option<&str>,
    now: &str,
) -> Result<(), StoreError> {
    let mut events: Vec<(&str, &str)> = match status {
        MessageStatus::Unmatched => vec![("unmatched", "")],
        MessageStatus::Failed => vec![("failed", "")],
        _ => Vec::new(),
    };
    if status == MessageStatus::Queued {
        events.extend(
            note.missing_fields
                .iter()
                .map(|f| ("missing_field", f.as_str())),
        );
    }
    if events.is_empty() {
        return Ok(());
    }
    let known: bool = conn
        .prepare_cached("SELECT EXISTS (SELECT 1 FROM parse_drift WHERE sender = ?1)")?
        .query_row([&note.sender], |row| row.get(0))?;
    let sender = if known {
        note.sender.as_str()
    } else {
        let senders: i64 = conn
            .prepare_cached("SELECT COUNT(DISTINCT sender) FROM parse_drift WHERE sender <> ?1")?
            .query_row([OTHER], |row| row.get(0))?;
        if senders >= MAX_SENDERS as i64 {
            OTHER
        } else {
            note.sender.as_str()
        }
    };
    let mut upsert = conn.prepare_cached(
        "INSERT INTO parse_drift (sender, plugin, kind, field, count, last_seen)
         VALUES (?1, ?2, ?3, ?4, 1, ?5)
         ON CONFLICT (sender, plugin, kind, field)
         DO UPDATE SET count = count + 1, last_seen = ?5",
    )?;
    for (kind, field) in events {
        upsert.execute(params![sender, plugin.unwrap_or(""), kind, field, now])?;
    }
    Ok(())
}

impl Store {
    /// Drift counters for the [`TOP_SENDERS`] senders with the most events; every other
    /// sender's counters are summed under [`OTHER`]. Sorted by sender, plugin, kind, field.
    pub fn drift_counts(&self) -> Result<Vec<DriftCount>, StoreError> {
        let conn = self.reader();
        let mut stmt = conn.prepare_cached(
            "SELECT sender, plugin, kind, field, count, last_seen FROM parse_drift",
        )?;
        let rows: Vec<DriftCount> = stmt
            .query_map([], |row| {
                Ok(DriftCount {
                    sender: row.get(0)?,
                    plugin: row.get(1)?,
                    kind: row.get(2)?,
                    field: row.get(3)?,
                    count: row.get::<_, i64>(4)? as u64,
                    last_seen: row.get(5)?,
                })
            })?
            .collect::<Result<_, _>>()?;
        Ok(top_senders(rows, TOP_SENDERS))
    }
}

/// Keeps the counters of the `top` senders with the most events (ties by name) and sums the
/// rest per (plugin, kind, field) under [`OTHER`].
fn top_senders(rows: Vec<DriftCount>, top: usize) -> Vec<DriftCount> {
    let mut totals: BTreeMap<&str, u64> = BTreeMap::new();
    for r in &rows {
        if r.sender != OTHER {
            *totals.entry(r.sender.as_str()).or_default() += r.count;
        }
    }
    let mut ranked: Vec<(&str, u64)> = totals.into_iter().collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let kept: Vec<String> = ranked
        .into_iter()
        .take(top)
        .map(|(s, _)| s.to_owned())
        .collect();
    let mut out: BTreeMap<(String, String, String, String), DriftCount> = BTreeMap::new();
    for mut r in rows {
        if !kept.contains(&r.sender) {
            r.sender = OTHER.to_owned();
        }
        let key = (
            r.sender.clone(),
            r.plugin.clone(),
            r.kind.clone(),
            r.field.clone(),
        );
        match out.get_mut(&key) {
            Some(sum) => {
                sum.count += r.count;
                if r.last_seen > sum.last_seen {
                    sum.last_seen = r.last_seen;
                }
            }
            None => {
                out.insert(key, r);
            }
        }
    }
    out.into_values().collect()
}

/// The drift label of an email sender's address: its domain, lowercased, or `unknown` when
/// there is no usable one. Never the full address (personal data, and unbounded).
pub fn sender_domain(address: Option<&str>) -> String {
    let domain = address
        .and_then(|a| a.rsplit_once('@'))
        .map(|(_, d)| d.trim().trim_end_matches('>').to_ascii_lowercase())
        .unwrap_or_default();
    let plausible = !domain.is_empty()
        && domain.len() <= 100
        && domain
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-');
    if plausible {
        domain
    } else {
        "unknown".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use serde_json::json;

    use super::*;
    use crate::store::NewMessage;

    fn message(key: &str, sender: &str, status: MessageStatus, missing: &[&str]) -> NewMessage {
        NewMessage {
            received_at: Utc::now(),
            route: "email".into(),
            source: None,
            dedupe_key: key.into(),
            content_type: "message/rfc822".into(),
            raw: key.as_bytes().to_vec(),
            meta: json!({}),
            status,
            plugin: (status != MessageStatus::Unmatched).then(|| "venmo".to_owned()),
            reason: None,
            transactions: Vec::new(),
            drift: Some(DriftNote {
                sender: sender.into(),
                missing_fields: missing.iter().map(|f| (*f).to_owned()).collect(),
            }),
        }
    }

    fn count(counts: &[DriftCount], sender: &str, kind: &str, field: &str) -> u64 {
        counts
            .iter()
            .filter(|c| c.sender == sender && c.kind == kind && c.field == field)
            .map(|c| c.count)
            .sum()
    }

    #[tokio::test]
    async fn counts_persist_and_duplicates_are_not_counted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let store = Store::open(&path).unwrap();
        use MessageStatus::*;
        for (key, status, missing) in [
            ("a", Unmatched, &[][..]),
            ("b", Unmatched, &[]),
            ("c", Failed, &[]),
            ("d", Queued, &["payee", "notes"]),
            ("e", Queued, &[]),
            // Ignored mail says nothing about drift, nor do missing fields of unparsed mail.
            ("f", Ignored, &["payee"]),
        ] {
            store
                .ingest(message(key, "venmo.com", status, missing))
                .await
                .unwrap();
        }
        let repeat = store
            .ingest(message("a", "venmo.com", Unmatched, &[]))
            .await
            .unwrap();
        assert!(repeat.duplicate);
        store.close().unwrap();

        let store = Store::open(&path).unwrap();
        let counts = store.drift_counts().unwrap();
        assert_eq!(count(&counts, "venmo.com", "unmatched", ""), 2);
        assert_eq!(count(&counts, "venmo.com", "failed", ""), 1);
        assert_eq!(count(&counts, "venmo.com", "missing_field", "payee"), 1);
        assert_eq!(count(&counts, "venmo.com", "missing_field", "notes"), 1);
        assert_eq!(counts.len(), 4, "{counts:?}");
        store.close().unwrap();
    }

    #[tokio::test]
    async fn senders_are_capped_when_stored_and_when_reported() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.db")).unwrap();
        let senders = MAX_SENDERS + 5;
        for i in 0..senders {
            // Sender i sends i + 1 unmatched messages, so the last ones rank first.
            for j in 0..=(i % 3) {
                let key = format!("{i}-{j}");
                store
                    .ingest(message(
                        &key,
                        &format!("s{i}.example"),
                        MessageStatus::Unmatched,
                        &[],
                    ))
                    .await
                    .unwrap();
            }
        }
        let stored: i64 = {
            let conn = store.reader();
            conn.query_row("SELECT COUNT(DISTINCT sender) FROM parse_drift", [], |r| {
                r.get(0)
            })
            .unwrap()
        };
        assert_eq!(stored as usize, MAX_SENDERS + 1, "the cap plus `other`");
        let counts = store.drift_counts().unwrap();
        let shown: std::collections::BTreeSet<&str> =
            counts.iter().map(|c| c.sender.as_str()).collect();
        assert_eq!(shown.len(), TOP_SENDERS + 1);
        assert!(shown.contains(OTHER));
        let total: u64 = counts.iter().map(|c| c.count).sum();
        let sent: u64 = (0..senders).map(|i| (i % 3) as u64 + 1).sum();
        assert_eq!(total, sent, "nothing is lost by folding");
        store.close().unwrap();
    }

    #[test]
    fn labels_are_domains_only() {
        assert_eq!(sender_domain(Some("venmo@Venmo.com")), "venmo.com");
        assert_eq!(sender_domain(Some("<a@b.example>")), "b.example");
        assert_eq!(sender_domain(Some("no-at-sign")), "unknown");
        assert_eq!(sender_domain(Some("x@evil\"}\n")), "unknown");
        assert_eq!(sender_domain(None), "unknown");
    }
}
