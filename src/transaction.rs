//! The transaction every plugin produces, shaped for Lunch Money's insert endpoint.

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::money::Money;

/// Lunch Money's limit on `external_id`.
pub const MAX_EXTERNAL_ID: usize = 75;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transaction {
    /// The date the money moved, in the source's local calendar.
    pub date: NaiveDate,
    /// Negative = money leaving the user, positive = money arriving.
    pub amount: Money,
    /// Lowercase ISO 4217.
    pub currency: String,
    pub payee: Option<String>,
    pub notes: Option<String>,
    pub external_id: String,
    pub tags: Vec<String>,
    /// The source's own account (a bank account id), when it names one: picks the Lunch Money
    /// account through `lunchmoney.sources.<plugin>.accounts`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    /// The account's balance after this transaction, when the source says it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub balance: Option<Money>,
    /// The plugin that produced it; carried on the outcome in `parse` output.
    #[serde(skip_serializing, default)]
    pub plugin: String,
    /// Not a transaction but the news that the one with this `external_id` is void (a card
    /// authorisation reversed or expired): only `external_id` (and `date`, the day of the news)
    /// mean anything; the amount is zero. The store never sends it as an insert (see
    /// `store::outbox::reconcile`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub void: bool,
}

/// `<plugin>:<id>` when it fits in Lunch Money's 75 characters, otherwise
/// `<plugin>:h:<sha256 of the id, hex>` cut to fit, so the result stays stable and unique.
pub fn external_id(plugin: &str, source_id: &str) -> String {
    // Fewer bytes than the limit means fewer characters; only a long id needs counting.
    let bytes = plugin.len() + 1 + source_id.len();
    if bytes <= MAX_EXTERNAL_ID
        || plugin.chars().count() + 1 + source_id.chars().count() <= MAX_EXTERNAL_ID
    {
        let mut id = String::with_capacity(bytes);
        id.push_str(plugin);
        id.push(':');
        id.push_str(source_id);
        return id;
    }
    hashed_id(plugin, "h", &[source_id])
}

/// The id of a transaction whose message carries none: `<plugin>:d:<hash>`, where the hash is the
/// SHA-256 of the inputs joined with the unit separator (U+001F). Which inputs are used is the
/// caller's documented choice (see `parse::rules`).
pub fn derived_external_id(plugin: &str, inputs: &[&str]) -> String {
    hashed_id(plugin, "d", inputs)
}

fn hashed_id(plugin: &str, kind: &str, inputs: &[&str]) -> String {
    let mut hasher = Sha256::new();
    for (i, input) in inputs.iter().enumerate() {
        if i > 0 {
            hasher.update([0x1f]);
        }
        hasher.update(input.as_bytes());
    }
    let digest = hasher.finalize();
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let hex: String = digest
        .iter()
        .flat_map(|b| [HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]])
        .map(char::from)
        .collect();
    let prefix = format!("{plugin}:{kind}:");
    // 32 hex digits (128 bits) is plenty; a long plugin id shortens it but keeps the limit.
    let room = MAX_EXTERNAL_ID
        .saturating_sub(prefix.chars().count())
        .min(32);
    format!("{prefix}{}", &hex[..room])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_ids_are_namespaced_verbatim() {
        assert_eq!(
            external_id("venmo", "4123456789012345678"),
            "venmo:4123456789012345678"
        );
    }

    #[test]
    fn ids_at_the_limit_count_characters_not_bytes() {
        let fits = "é".repeat(MAX_EXTERNAL_ID - "venmo:".len());
        assert_eq!(external_id("venmo", &fits), format!("venmo:{fits}"));
        let over = "é".repeat(MAX_EXTERNAL_ID - "venmo:".len() + 1);
        assert!(external_id("venmo", &over).starts_with("venmo:h:"));
        let ascii = "x".repeat(MAX_EXTERNAL_ID - "venmo:".len());
        assert_eq!(external_id("venmo", &ascii), format!("venmo:{ascii}"));
        assert!(external_id("venmo", &format!("{ascii}x")).starts_with("venmo:h:"));
    }

    #[test]
    fn hashed_ids_are_the_sha256_hex_prefix() {
        // SHA-256 of "abc".
        assert_eq!(
            hashed_id("p", "h", &["abc"]),
            "p:h:ba7816bf8f01cfea414140de5dae2223"
        );
    }

    #[test]
    fn long_ids_are_hashed_to_fit() {
        let long = "x".repeat(200);
        let id = external_id("venmo", &long);
        assert!(id.starts_with("venmo:h:"));
        assert!(id.len() <= MAX_EXTERNAL_ID);
        assert_eq!(id, external_id("venmo", &long), "stable");
        assert_ne!(id, external_id("venmo", &"y".repeat(200)));
    }

    #[test]
    fn derived_ids_depend_on_every_input_and_its_boundaries() {
        let a = derived_external_id("cashapp", &["2024-03-01", "-5.00", "ab", "c"]);
        let b = derived_external_id("cashapp", &["2024-03-01", "-5.00", "a", "bc"]);
        assert_ne!(a, b);
        assert_eq!(a.len(), "cashapp:d:".len() + 32);
        let long_plugin = "p".repeat(70);
        assert!(derived_external_id(&long_plugin, &["x"]).len() <= MAX_EXTERNAL_ID);
    }
}
