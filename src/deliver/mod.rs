//! Delivery to Lunch Money: the API client, name mapping, rate limit, retry policy and the
//! outbox worker that ties them together.

pub mod client;
pub mod limiter;
pub mod mapping;
pub mod outbox;
pub mod retry;

pub use outbox::Outbox;

use crate::parse::Registry;
use crate::settings::LunchMoneySettings;

/// Sources whose transactions would go in with no account: Lunch Money deduplicates by
/// `external_id` only within an account, so a retry after a lost answer could insert twice.
pub fn sources_without_account(settings: &LunchMoneySettings, registry: &Registry) -> Vec<String> {
    registry
        .ids()
        .filter(|id| {
            let mapping = settings.mapping(id);
            mapping.account.is_none()
                && mapping.accounts.is_empty()
                && mapping.plaid_account_id.is_none()
                && mapping.plaid_accounts.is_empty()
        })
        .map(str::to_owned)
        .collect()
}
