//! Configured names (accounts, categories, tags) turned into Lunch Money ids. The lists are
//! fetched once and cached; a lookup that misses, or an API answer that calls an id unknown,
//! refreshes them. Missing v2 tags are created.

use std::time::Duration;

use tokio::sync::Mutex;
use tokio::time::Instant;

use std::sync::Arc;

use super::client::{ApiError, Client, Named, Outgoing};
use super::limiter::RateLimiter;
use crate::settings::{ApiVersion, NameOrId, SourceMapping};
use crate::transaction::Transaction;

/// A miss refreshes the lists at most this often, so a misconfigured name cannot flood the API.
const MIN_REFRESH: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, thiserror::Error)]
pub enum ResolveError {
    #[error("no Lunch Money account named {0:?}")]
    AccountNotFound(String),
    #[error("{0:?} names more than one Lunch Money account; use its id")]
    AccountAmbiguous(String),
    #[error("no Lunch Money category named {0:?}")]
    CategoryNotFound(String),
    #[error("category {0:?} is a category group; transactions need a category")]
    CategoryIsGroup(String),
    #[error(transparent)]
    Api(#[from] ApiError),
}

#[derive(Default)]
struct Catalog {
    accounts: Vec<Named>,
    categories: Vec<Named>,
    tags: Vec<Named>,
    loaded_at: Option<Instant>,
}

pub struct Resolver {
    client: Client,
    /// The process's one rate limiter: look-ups count against Lunch Money's limit too.
    limiter: Arc<RateLimiter>,
    catalog: Mutex<Catalog>,
}

impl Resolver {
    pub fn new(client: Client, limiter: Arc<RateLimiter>) -> Self {
        Resolver {
            client,
            limiter,
            catalog: Mutex::new(Catalog::default()),
        }
    }

    /// Forget the cached lists: the API said an id we sent is unknown.
    pub async fn invalidate(&self) {
        self.catalog.lock().await.loaded_at = None;
    }

    /// `tx` with its destination resolved under `mapping`.
    pub async fn outgoing(
        &self,
        tx: &Transaction,
        mapping: &SourceMapping,
    ) -> Result<Outgoing, ResolveError> {
        let mut catalog = self.catalog.lock().await;
        if catalog.loaded_at.is_none() {
            self.load(&mut catalog).await?;
        }
        let wanted_account = tx
            .account
            .as_ref()
            .and_then(|a| mapping.accounts.get(a))
            .or(mapping.account.as_ref());
        let account_id = match wanted_account {
            None => None,
            Some(wanted) => Some(self.find(&mut catalog, wanted, Kind::Account).await?),
        };
        let category_id = match &mapping.category {
            None => None,
            Some(wanted) => Some(self.find(&mut catalog, wanted, Kind::Category).await?),
        };
        let mut tag_names: Vec<String> = Vec::new();
        for name in tx.tags.iter().chain(&mapping.tags) {
            if !tag_names.iter().any(|t| t.eq_ignore_ascii_case(name)) {
                tag_names.push(name.clone());
            }
        }
        let mut tag_ids = Vec::new();
        if self.client.api() == ApiVersion::V2 {
            for name in &tag_names {
                tag_ids.push(self.tag_id(&mut catalog, name).await?);
            }
        }
        Ok(Outgoing {
            transaction: tx.clone(),
            account_id,
            category_id,
            tag_ids,
            tag_names,
            status: mapping.status,
        })
    }

    async fn load(&self, catalog: &mut Catalog) -> Result<(), ApiError> {
        self.limiter.acquire().await;
        catalog.accounts = self.client.accounts().await?;
        self.limiter.acquire().await;
        catalog.categories = self.client.categories().await?;
        catalog.tags = match self.client.api() {
            ApiVersion::V2 => {
                self.limiter.acquire().await;
                self.client.tags().await?
            }
            ApiVersion::V1 => Vec::new(),
        };
        catalog.loaded_at = Some(Instant::now());
        Ok(())
    }

    async fn refresh_if_stale(&self, catalog: &mut Catalog) -> Result<bool, ApiError> {
        if catalog.loaded_at.is_some_and(|t| t.elapsed() < MIN_REFRESH) {
            return Ok(false);
        }
        self.load(catalog).await?;
        Ok(true)
    }

    async fn find(
        &self,
        catalog: &mut Catalog,
        wanted: &NameOrId,
        kind: Kind,
    ) -> Result<i64, ResolveError> {
        for attempt in 0..2 {
            let list = match kind {
                Kind::Account => &catalog.accounts,
                Kind::Category => &catalog.categories,
            };
            let found = lookup(list, wanted, kind);
            let missing = matches!(
                found,
                Err(ResolveError::AccountNotFound(_) | ResolveError::CategoryNotFound(_))
            );
            if !missing || attempt == 1 || !self.refresh_if_stale(catalog).await? {
                return found;
            }
        }
        unreachable!("the loop returns on its second pass")
    }

    async fn tag_id(&self, catalog: &mut Catalog, name: &str) -> Result<i64, ResolveError> {
        if let Some(tag) = catalog
            .tags
            .iter()
            .find(|t| t.name.eq_ignore_ascii_case(name))
        {
            return Ok(tag.id);
        }
        if self.refresh_if_stale(catalog).await? {
            if let Some(tag) = catalog
                .tags
                .iter()
                .find(|t| t.name.eq_ignore_ascii_case(name))
            {
                return Ok(tag.id);
            }
        }
        self.limiter.acquire().await;
        let created = self.client.create_tag(name).await?;
        let id = created.id;
        catalog.tags.push(created);
        Ok(id)
    }
}

#[derive(Clone, Copy)]
enum Kind {
    Account,
    Category,
}

fn lookup(list: &[Named], wanted: &NameOrId, kind: Kind) -> Result<i64, ResolveError> {
    let not_found = |name: String| match kind {
        Kind::Account => ResolveError::AccountNotFound(name),
        Kind::Category => ResolveError::CategoryNotFound(name),
    };
    let item = match wanted {
        NameOrId::Id(id) => list
            .iter()
            .find(|n| n.id == *id)
            .ok_or_else(|| not_found(id.to_string()))?,
        NameOrId::Name(name) => {
            let matches: Vec<&Named> = list
                .iter()
                .filter(|n| n.name.eq_ignore_ascii_case(name.trim()))
                .collect();
            match matches.as_slice() {
                [one] => one,
                [] => {
                    // A name of digits that matches no name is taken as an id (environment
                    // variables cannot say which they mean).
                    let by_id = name
                        .trim()
                        .parse::<i64>()
                        .ok()
                        .and_then(|id| list.iter().find(|n| n.id == id));
                    by_id.ok_or_else(|| not_found(name.clone()))?
                }
                _ if matches!(kind, Kind::Account) => {
                    return Err(ResolveError::AccountAmbiguous(name.clone()))
                }
                // Same-named categories live in different groups; prefer one that is not a group.
                many => many
                    .iter()
                    .find(|n| !n.is_group)
                    .copied()
                    .unwrap_or(many[0]),
            }
        }
    };
    if matches!(kind, Kind::Category) && item.is_group {
        return Err(ResolveError::CategoryIsGroup(item.name.clone()));
    }
    Ok(item.id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn named(id: i64, name: &str, is_group: bool) -> Named {
        Named {
            id,
            name: name.into(),
            is_group,
        }
    }

    #[test]
    fn lookups_by_name_and_id() {
        let accounts = vec![
            named(1, "Venmo", false),
            named(2, "Cash", false),
            named(3, "cash", false),
        ];
        assert_eq!(
            lookup(&accounts, &NameOrId::Name("venmo".into()), Kind::Account).unwrap(),
            1
        );
        assert_eq!(
            lookup(&accounts, &NameOrId::Id(2), Kind::Account).unwrap(),
            2
        );
        assert_eq!(
            lookup(&accounts, &NameOrId::Name("2".into()), Kind::Account).unwrap(),
            2
        );
        assert!(matches!(
            lookup(&accounts, &NameOrId::Name("Cash".into()), Kind::Account),
            Err(ResolveError::AccountAmbiguous(_))
        ));
        assert!(matches!(
            lookup(&accounts, &NameOrId::Name("Bank".into()), Kind::Account),
            Err(ResolveError::AccountNotFound(_))
        ));
        let categories = vec![named(10, "Food", true), named(11, "Coffee", false)];
        assert!(matches!(
            lookup(&categories, &NameOrId::Name("Food".into()), Kind::Category),
            Err(ResolveError::CategoryIsGroup(_))
        ));
        assert_eq!(
            lookup(
                &categories,
                &NameOrId::Name("coffee".into()),
                Kind::Category
            )
            .unwrap(),
            11
        );
    }
}
