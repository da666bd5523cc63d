//! Prometheus counters: messages by route, plugin and status, refused requests, store size, and
//! the parser-drift counts kept in the store.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;

use crate::store::DriftCount;

#[derive(Default)]
pub struct Metrics {
    received: Mutex<BTreeMap<&'static str, u64>>,
    outcomes: Mutex<BTreeMap<(&'static str, String, &'static str), u64>>,
    refused: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
}

impl Metrics {
    pub fn received(&self, route: &'static str) {
        *lock(&self.received).entry(route).or_default() += 1;
    }

    /// `status`: parsed, ignored, unmatched, failed, rejected or duplicate.
    pub fn outcome(&self, route: &'static str, plugin: Option<&str>, status: &'static str) {
        let key = (route, plugin.unwrap_or("").to_owned(), status);
        *lock(&self.outcomes).entry(key).or_default() += 1;
    }

    /// `reason`: the error code of the answer (`ApiError::code`).
    pub fn refused(&self, route: &'static str, reason: &'static str) {
        *lock(&self.refused).entry((route, reason)).or_default() += 1;
    }

    pub fn render(&self, store_bytes: u64) -> String {
        let mut out = String::new();
        out.push_str("# HELP lm_ingest_messages_received_total Requests accepted past authentication, by route.\n");
        out.push_str("# TYPE lm_ingest_messages_received_total counter\n");
        for (route, n) in lock(&self.received).iter() {
            let _ = writeln!(
                out,
                "lm_ingest_messages_received_total{{route=\"{route}\"}} {n}"
            );
        }
        out.push_str(
            "# HELP lm_ingest_messages_total Stored messages by route, plugin and parse status.\n",
        );
        out.push_str("# TYPE lm_ingest_messages_total counter\n");
        for ((route, plugin, status), n) in lock(&self.outcomes).iter() {
            let _ = writeln!(
                out,
                "lm_ingest_messages_total{{route=\"{route}\",plugin=\"{}\",status=\"{status}\"}} {n}",
                escape(plugin)
            );
        }
        out.push_str("# HELP lm_ingest_requests_refused_total Requests answered with an error, by route and reason.\n");
        out.push_str("# TYPE lm_ingest_requests_refused_total counter\n");
        for ((route, reason), n) in lock(&self.refused).iter() {
            let _ = writeln!(
                out,
                "lm_ingest_requests_refused_total{{route=\"{route}\",reason=\"{reason}\"}} {n}"
            );
        }
        out.push_str(
            "# HELP lm_ingest_store_bytes Size of the store on disk (database and WAL).\n",
        );
        out.push_str("# TYPE lm_ingest_store_bytes gauge\n");
        let _ = writeln!(out, "lm_ingest_store_bytes {store_bytes}");
        out
    }
}

/// The store's parser-drift counters (durable, so they survive restarts): unmatched and failed
/// mail and fields that fell back, per sender domain. The senders are already capped (top N plus
/// `other`, see `store::drift`), so the label set stays bounded whatever the internet sends.
pub fn render_drift(counts: &[DriftCount]) -> String {
    let mut out = String::new();
    out.push_str("# HELP lm_ingest_parse_drift_total Messages per sender domain that matched no template (unmatched), whose template failed to read a required field (failed), or parsed with a declared field missing (missing_field, by field). Top senders, the rest as \"other\".\n");
    out.push_str("# TYPE lm_ingest_parse_drift_total counter\n");
    for c in counts {
        let _ = writeln!(
            out,
            "lm_ingest_parse_drift_total{{sender=\"{}\",plugin=\"{}\",kind=\"{}\",field=\"{}\"}} {}",
            escape(&c.sender),
            escape(&c.plugin),
            escape(&c.kind),
            escape(&c.field),
            c.count
        );
    }
    out
}

/// A poisoned lock only means another thread panicked mid-increment; the counts are still usable.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn escape(label: &str) -> String {
    label
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::default();
        m.received("email");
        m.received("email");
        m.outcome("email", Some("venmo"), "parsed");
        m.outcome("hook", Some("a\"b"), "ignored");
        m.refused("mailgun", "unauthorized");
        let text = m.render(4096);
        assert!(text.contains("lm_ingest_messages_received_total{route=\"email\"} 2\n"));
        assert!(text.contains(
            "lm_ingest_messages_total{route=\"email\",plugin=\"venmo\",status=\"parsed\"} 1\n"
        ));
        assert!(text.contains("plugin=\"a\\\"b\""));
        assert!(text.contains(
            "lm_ingest_requests_refused_total{route=\"mailgun\",reason=\"unauthorized\"} 1\n"
        ));
        assert!(text.contains("lm_ingest_store_bytes 4096\n"));
    }

    #[test]
    fn renders_drift_counts() {
        let text = render_drift(&[DriftCount {
            sender: "venmo.com".into(),
            plugin: "venmo".into(),
            kind: "missing_field".into(),
            field: "payee".into(),
            count: 3,
            last_seen: "2024-03-01T00:00:00.000000Z".into(),
        }]);
        assert!(text.contains("# TYPE lm_ingest_parse_drift_total counter\n"));
        assert!(text.contains(
            "lm_ingest_parse_drift_total{sender=\"venmo.com\",plugin=\"venmo\",kind=\"missing_field\",field=\"payee\"} 3\n"
        ));
    }
}
