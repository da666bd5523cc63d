//! Configuration: built-in defaults, then an optional TOML file (`--config FILE` or
//! `LM_INGEST_CONFIG`), then `LM_INGEST__SECTION__KEY` environment variables.
//! `config/example.toml` documents every key; unknown keys are errors.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

pub const CONFIG_FILE_ENV: &str = "LM_INGEST_CONFIG";

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    #[serde(default)]
    pub server: ServerSettings,
    #[serde(default)]
    pub store: StoreSettings,
    #[serde(default)]
    pub ingest: IngestSettings,
    #[serde(default)]
    pub parsers: ParsersSettings,
    #[serde(default)]
    pub mailgun: MailgunSettings,
    #[serde(default)]
    pub postmark: BasicAuthSettings,
    #[serde(default)]
    pub sendgrid: BasicAuthSettings,
    /// Secrets and verification overrides per webhook plugin, keyed by plugin id.
    #[serde(default)]
    pub hooks: BTreeMap<String, HookSettings>,
    #[serde(default)]
    pub lunchmoney: LunchMoneySettings,
    #[serde(default)]
    pub admin: AdminSettings,
    #[serde(default)]
    pub trust: TrustSettings,
}

/// Sender trust (README "Sender trust"): who may forward mail here, and per plugin whether the
/// original sender must be authenticated.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrustSettings {
    /// The user's own addresses that forward mail here. Empty: any forwarder.
    pub allowed_forwarders: Vec<String>,
    /// The policy of plugins not named in `policies`.
    pub default_policy: TrustPolicy,
    /// Policy by plugin id.
    pub policies: BTreeMap<String, TrustPolicy>,
    /// ARC sealers whose first-hop ARC-Authentication-Results are believed when the original
    /// DKIM signature broke in transit.
    pub trusted_arc_sealers: Vec<String>,
    /// Recursive DNS servers for DKIM key look-ups (`ip` or `ip:port`). Empty: /etc/resolv.conf.
    pub dns_servers: Vec<String>,
    /// How long one key look-up may take before it counts as a temporary failure.
    pub dns_timeout_secs: u64,
}

impl Default for TrustSettings {
    fn default() -> Self {
        TrustSettings {
            allowed_forwarders: Vec::new(),
            default_policy: TrustPolicy::Report,
            policies: BTreeMap::new(),
            trusted_arc_sealers: vec!["google.com".into()],
            dns_servers: Vec::new(),
            dns_timeout_secs: 5,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, Deserialize, serde::Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum TrustPolicy {
    /// Record the verdicts with the message; parse it whatever they say.
    #[default]
    Report,
    /// The original sender must be authenticated, or the message is stored as `rejected`.
    Require,
}

/// A credential. Its `Debug` and `Display` never show the value, so it cannot leak into logs.
#[derive(Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_empty() {
            "Secret(unset)"
        } else {
            "Secret(***)"
        })
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSettings {
    pub listen: String,
    /// HTTP worker threads; 0 = one per core.
    pub workers: usize,
    /// How long in-flight requests may take to finish after SIGTERM.
    pub shutdown_timeout_secs: u64,
    pub limits: BodyLimits,
}

impl Default for ServerSettings {
    fn default() -> Self {
        ServerSettings {
            listen: "127.0.0.1:8080".into(),
            workers: 0,
            shutdown_timeout_secs: 20,
            limits: BodyLimits::default(),
        }
    }
}

/// Largest request body accepted per route, in bytes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BodyLimits {
    pub email: usize,
    pub mailgun: usize,
    pub postmark: usize,
    pub sendgrid: usize,
    pub hooks: usize,
}

impl Default for BodyLimits {
    fn default() -> Self {
        const MIB: usize = 1 << 20;
        BodyLimits {
            // Notification mail is small; these leave room for forwards with attachments and
            // stay under each provider's own ceiling.
            email: 25 * MIB,
            mailgun: 25 * MIB,
            postmark: 35 * MIB,
            sendgrid: 30 * MIB,
            hooks: MIB,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreSettings {
    pub path: PathBuf,
}

impl Default for StoreSettings {
    fn default() -> Self {
        StoreSettings {
            path: PathBuf::from("./data/lm-ingest.db"),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestSettings {
    /// The bearer token for ingest routes. Unset: one is generated on first start and kept in
    /// `ingest-token` beside the store.
    pub token: Secret,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParsersSettings {
    /// A folder of `*.toml` rule files that add plugins or replace built-in ones of the same id.
    pub dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MailgunSettings {
    /// The HTTP webhook signing key from Mailgun's dashboard. Unset: the route refuses requests.
    pub signing_key: Secret,
    /// Requests whose signed timestamp is further than this from now are refused.
    pub max_age_secs: i64,
}

impl Default for MailgunSettings {
    fn default() -> Self {
        MailgunSettings {
            signing_key: Secret::default(),
            max_age_secs: 300,
        }
    }
}

/// Basic-auth credentials that a provider puts in the webhook URL. Unset: the password must be
/// the ingest token (any user name).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BasicAuthSettings {
    pub username: Option<String>,
    pub password: Secret,
}

/// How webhooks prove where they come from (`POST /hooks/{plugin}`).
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum VerifyScheme {
    /// `Authorization: Bearer <ingest token>`: the default.
    Bearer,
    /// A shared secret in a request header.
    Header,
    /// A shared secret in the URL: `/hooks/{plugin}?secret=...` (senders that cannot sign).
    Query,
    /// HMAC-SHA256 of the body (or `id.timestamp.body`) in a header, hex or base64.
    Hmac,
    /// Standard Webhooks: `webhook-id`, `webhook-timestamp`, `webhook-signature`.
    StandardWebhooks,
    /// Starling's v1 scheme: base64 SHA-512 of the secret followed by the body.
    Starling,
    /// Starling's v2 scheme: RSA SHA-512 with the portal's public key.
    StarlingRsa,
    /// bunq: RSA SHA-256 over the body with bunq's server public key.
    Bunq,
    /// No authentication: only for sources that cannot authenticate, on a private network.
    None,
}

/// A source's verification as its rule file declares it (`[verify]`): everything but secrets,
/// which only ever come from configuration.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct VerifyParams {
    pub scheme: Option<VerifyScheme>,
    /// The header carrying the secret or signature.
    pub header: Option<String>,
    pub encoding: Option<SignatureEncoding>,
    /// Text before the signature in the header, e.g. `sha256=`.
    pub prefix: Option<String>,
    /// With a timestamp header the signed text is `id.timestamp.body` (or `timestamp.body`
    /// without `id_header`) and stale timestamps are refused.
    pub timestamp_header: Option<String>,
    pub id_header: Option<String>,
    pub tolerance_secs: Option<i64>,
}

/// `[hooks.<plugin>]`: the secret (or public key) a webhook plugin verifies with, and optional
/// overrides of what its rule file declares.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct HookSettings {
    pub scheme: Option<VerifyScheme>,
    pub secret: Secret,
    /// PEM (or Starling's one-line base64) public key, for `bunq` and `starling-rsa`.
    pub public_key: Option<String>,
    pub header: Option<String>,
    pub encoding: Option<SignatureEncoding>,
    pub prefix: Option<String>,
    pub timestamp_header: Option<String>,
    pub id_header: Option<String>,
    pub tolerance_secs: Option<i64>,
    /// For plugins that fetch what a webhook points at (Up): the API token, sent as a bearer.
    pub api_token: Secret,
    /// Overrides the rule file's `[fetch] base_url` (a proxy, or a test stand-in).
    pub fetch_base_url: Option<String>,
}

impl HookSettings {
    /// These settings over a rule file's declaration, field by field.
    pub fn over(&self, declared: &VerifyParams) -> VerifyParams {
        VerifyParams {
            scheme: self.scheme.or(declared.scheme),
            header: self.header.clone().or_else(|| declared.header.clone()),
            encoding: self.encoding.or(declared.encoding),
            prefix: self.prefix.clone().or_else(|| declared.prefix.clone()),
            timestamp_header: self
                .timestamp_header
                .clone()
                .or_else(|| declared.timestamp_header.clone()),
            id_header: self
                .id_header
                .clone()
                .or_else(|| declared.id_header.clone()),
            tolerance_secs: self.tolerance_secs.or(declared.tolerance_secs),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SignatureEncoding {
    #[default]
    Hex,
    Base64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LunchMoneySettings {
    /// API token. Unset: dry run — messages are stored and parsed, nothing is posted.
    pub token: Secret,
    /// Which API to post to.
    pub api: ApiVersion,
    /// Unset: `https://api.lunchmoney.dev` for v2, `https://dev.lunchmoney.app` for v1.
    pub base_url: Option<String>,
    /// Lunch Money allows about 100 requests a minute per client, v1 and v2 together.
    pub requests_per_minute: u32,
    /// Transactions per insert request (the API takes at most 500).
    pub batch_size: usize,
    pub timeout_secs: u64,
    /// Longest wait between retries of a failing transaction.
    pub max_backoff_secs: u64,
    /// Shortest time between two Plaid fetches of one account (`plaid_account_id` sources).
    /// Lunch Money answers 425 to a second fetch within a minute, so at least 60.
    pub plaid_fetch_interval_secs: u64,
    /// Mapping for sources with no entry of their own in `sources`.
    pub defaults: SourceMapping,
    /// Mapping per source (plugin id): where its transactions go in Lunch Money.
    pub sources: BTreeMap<String, SourceMapping>,
}

impl Default for LunchMoneySettings {
    fn default() -> Self {
        LunchMoneySettings {
            token: Secret::default(),
            api: ApiVersion::V2,
            base_url: None,
            requests_per_minute: 100,
            batch_size: 500,
            timeout_secs: 30,
            max_backoff_secs: 900,
            plaid_fetch_interval_secs: 60,
            defaults: SourceMapping::default(),
            sources: BTreeMap::new(),
        }
    }
}

impl LunchMoneySettings {
    pub fn base_url(&self) -> &str {
        match (&self.base_url, self.api) {
            (Some(url), _) => url.trim_end_matches('/'),
            (None, ApiVersion::V2) => "https://api.lunchmoney.dev",
            (None, ApiVersion::V1) => "https://dev.lunchmoney.app",
        }
    }

    /// The mapping for `source`: its own entry, field by field over `defaults`.
    pub fn mapping(&self, source: &str) -> SourceMapping {
        let own = self.sources.get(source);
        let d = &self.defaults;
        SourceMapping {
            account: own
                .and_then(|m| m.account.clone())
                .or_else(|| d.account.clone()),
            accounts: own.map(|m| m.accounts.clone()).unwrap_or_default(),
            category: own
                .and_then(|m| m.category.clone())
                .or_else(|| d.category.clone()),
            tags: {
                let mut tags = d.tags.clone();
                for tag in own.map(|m| m.tags.as_slice()).unwrap_or_default() {
                    if !tags.contains(tag) {
                        tags.push(tag.clone());
                    }
                }
                tags
            },
            status: own.and_then(|m| m.status).or(d.status),
            apply_rules: own.and_then(|m| m.apply_rules).or(d.apply_rules),
            skip_duplicates: own.and_then(|m| m.skip_duplicates).or(d.skip_duplicates),
            update_balance: own.and_then(|m| m.update_balance).or(d.update_balance),
            // A Plaid link belongs to one source's bank: never inherited from `defaults`.
            plaid_account_id: own.and_then(|m| m.plaid_account_id),
            plaid_accounts: own.map(|m| m.plaid_accounts.clone()).unwrap_or_default(),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ApiVersion {
    #[default]
    V2,
    V1,
}

/// Where a source's transactions go. Names are resolved to ids through the API once and cached.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct SourceMapping {
    /// The manual account (v2) or asset (v1), by name or id. Unset: a cash transaction, which
    /// Lunch Money cannot deduplicate by `external_id`.
    pub account: Option<NameOrId>,
    /// For sources with several accounts (banks): the Lunch Money account for each of the
    /// source's own account ids, e.g. `acc_00009 = "Monzo Current"`. Others use `account`.
    pub accounts: BTreeMap<String, NameOrId>,
    /// A category (never a category group), by name or id.
    pub category: Option<NameOrId>,
    /// Tags added to the plugin's own; missing ones are created.
    pub tags: Vec<String>,
    pub status: Option<ReviewStatus>,
    pub apply_rules: Option<bool>,
    pub skip_duplicates: Option<bool>,
    /// Where the source reports the account balance (bunq, Monzo), set the mapped manual
    /// account's balance to the newest one after each delivery. Best effort: a failed update is
    /// logged and the next transaction's balance tries again.
    pub update_balance: Option<bool>,
    /// The source's bank account is linked in Lunch Money through Plaid (this is its
    /// `plaid_account_id`): its transactions are not inserted (Plaid brings them, and an insert
    /// would be a duplicate); each alert instead triggers a Plaid fetch of the account, at most
    /// once per `plaid_fetch_interval_secs`, and the transaction is kept as `fetched`.
    pub plaid_account_id: Option<i64>,
    /// The same per own account id of the source (banks with several accounts), e.g.
    /// `acc_00009 = 2001`. An own account listed in `accounts` is inserted as usual.
    pub plaid_accounts: BTreeMap<String, i64>,
}

impl SourceMapping {
    /// The Plaid account to fetch instead of inserting a transaction of the source's own
    /// account `own_account`, if the source (or that account) is linked through Plaid.
    pub fn plaid_target(&self, own_account: Option<&str>) -> Option<i64> {
        match own_account {
            Some(own) if self.plaid_accounts.contains_key(own) => {
                self.plaid_accounts.get(own).copied()
            }
            Some(own) if self.accounts.contains_key(own) => None,
            _ => self.plaid_account_id,
        }
    }
}

#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum NameOrId {
    Id(i64),
    Name(String),
}

/// v2's `reviewed`/`unreviewed`; sent to v1 as `cleared`/`uncleared`.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ReviewStatus {
    Reviewed,
    Unreviewed,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminSettings {
    /// Bearer token for the operator's `/admin/*` routes. Unset: those routes are refused.
    pub token: Secret,
}

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("configuration file {path}: {source}")]
    File {
        path: PathBuf,
        source: config::ConfigError,
    },
    #[error("configuration: {0}")]
    Invalid(config::ConfigError),
    #[error("configuration: {key}: {why}")]
    Value { key: String, why: String },
}

impl Settings {
    /// Loads from `file` (else `$LM_INGEST_CONFIG`, else no file) and the environment.
    pub fn load(file: Option<&Path>) -> Result<Settings, SettingsError> {
        let env_file = std::env::var_os(CONFIG_FILE_ENV).map(PathBuf::from);
        let file = file.map(Path::to_path_buf).or(env_file);
        let mut builder = config::Config::builder();
        if let Some(path) = &file {
            let source = || config::File::from(path.as_path()).format(config::FileFormat::Toml);
            // Read the file on its own first so its errors name it.
            config::Config::builder()
                .add_source(source())
                .build()
                .map_err(|source| SettingsError::File {
                    path: path.clone(),
                    source,
                })?;
            builder = builder.add_source(source());
        }
        let settings: Settings = builder
            .add_source(
                config::Environment::with_prefix("LM_INGEST")
                    .prefix_separator("__")
                    .separator("__"),
            )
            .build()
            .and_then(config::Config::try_deserialize)
            .map_err(SettingsError::Invalid)?;
        settings.validate()?;
        Ok(settings)
    }

    fn validate(&self) -> Result<(), SettingsError> {
        let bad = |key: &str, why: String| {
            Err(SettingsError::Value {
                key: key.into(),
                why,
            })
        };
        if self.server.listen.parse::<SocketAddr>().is_err() {
            return bad(
                "server.listen",
                format!(
                    "{:?} is not an address such as 127.0.0.1:8080 or [::]:8080",
                    self.server.listen
                ),
            );
        }
        if self.store.path.as_os_str().is_empty() {
            return bad("store.path", "must not be empty".into());
        }
        if !self.ingest.token.is_empty() && self.ingest.token.expose().len() < 16 {
            return bad("ingest.token", "must be at least 16 characters".into());
        }
        let lm = &self.lunchmoney;
        if !lm.base_url().starts_with("http://") && !lm.base_url().starts_with("https://") {
            return bad(
                "lunchmoney.base_url",
                format!("{:?} is not an http(s) URL", lm.base_url()),
            );
        }
        if !(1..=500).contains(&lm.batch_size) {
            return bad(
                "lunchmoney.batch_size",
                "must be 1 to 500 (the API's limit)".into(),
            );
        }
        if lm.requests_per_minute == 0 {
            return bad(
                "lunchmoney.requests_per_minute",
                "must be at least 1".into(),
            );
        }
        if lm.plaid_fetch_interval_secs < 60 {
            return bad(
                "lunchmoney.plaid_fetch_interval_secs",
                "must be at least 60: Lunch Money allows one Plaid fetch a minute per account"
                    .into(),
            );
        }
        if !self.admin.token.is_empty() && self.admin.token.expose().len() < 16 {
            return bad("admin.token", "must be at least 16 characters".into());
        }
        Ok(())
    }

    pub fn dry_run(&self) -> bool {
        self.lunchmoney.token.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print() {
        let s = Secret::new("hunter2-hunter2-hunter2");
        assert_eq!(format!("{s:?}"), "Secret(***)");
        let settings = Settings {
            ingest: IngestSettings { token: s },
            ..Default::default()
        };
        assert!(!format!("{settings:?}").contains("hunter2"));
    }

    #[test]
    fn source_mappings_fall_back_to_defaults_field_by_field() {
        let settings: Settings = toml::from_str(
            r#"
            [lunchmoney.defaults]
            category = "Transfers"
            tags = ["imported"]
            status = "unreviewed"
            [lunchmoney.sources.venmo]
            account = "Venmo"
            tags = ["p2p", "imported"]
            apply_rules = true
            [lunchmoney.sources.bank]
            account = 42
            category = 7
            "#,
        )
        .unwrap();
        let venmo = settings.lunchmoney.mapping("venmo");
        assert_eq!(venmo.account, Some(NameOrId::Name("Venmo".into())));
        assert_eq!(venmo.category, Some(NameOrId::Name("Transfers".into())));
        assert_eq!(venmo.tags, vec!["imported", "p2p"]);
        assert_eq!(venmo.status, Some(ReviewStatus::Unreviewed));
        assert_eq!(venmo.apply_rules, Some(true));
        let bank = settings.lunchmoney.mapping("bank");
        assert_eq!(
            (bank.account, bank.category),
            (Some(NameOrId::Id(42)), Some(NameOrId::Id(7)))
        );
        assert_eq!(settings.lunchmoney.mapping("other").account, None);
        assert_eq!(settings.lunchmoney.base_url(), "https://api.lunchmoney.dev");
    }

    #[test]
    fn plaid_links_per_source_and_per_own_account() {
        let settings: Settings = toml::from_str(
            r#"
            [lunchmoney.defaults]
            account = "Cash"
            [lunchmoney.sources.chase]
            plaid_account_id = 7
            [lunchmoney.sources.monzo]
            accounts = { chk = "Monzo Current" }
            plaid_accounts = { joint = 8 }
            "#,
        )
        .unwrap();
        let chase = settings.lunchmoney.mapping("chase");
        assert_eq!(chase.plaid_target(None), Some(7));
        assert_eq!(chase.plaid_target(Some("anything")), Some(7));
        let monzo = settings.lunchmoney.mapping("monzo");
        assert_eq!(monzo.plaid_target(Some("joint")), Some(8));
        assert_eq!(monzo.plaid_target(Some("chk")), None);
        assert_eq!(monzo.plaid_target(None), None);
        assert_eq!(
            settings.lunchmoney.mapping("venmo").plaid_target(None),
            None
        );
        let mut too_often = settings.clone();
        too_often.lunchmoney.plaid_fetch_interval_secs = 30;
        assert!(matches!(
            too_often.validate(),
            Err(SettingsError::Value { key, .. }) if key == "lunchmoney.plaid_fetch_interval_secs"
        ));
    }

    #[test]
    fn hook_settings_overlay_what_rule_files_declare() {
        let text = r#"
            [hooks.monzo]
            secret = "abc"
            [hooks.up]
            scheme = "hmac"
            header = "X-Up-Authenticity-Signature"
            secret = "s"
            [hooks.bunq]
            public_key = "-----BEGIN PUBLIC KEY-----"
        "#;
        let settings: Settings = toml::from_str(text).unwrap();
        let declared = VerifyParams {
            scheme: Some(VerifyScheme::Query),
            header: Some("X-Declared".into()),
            ..Default::default()
        };
        let monzo = settings.hooks["monzo"].over(&declared);
        assert_eq!(
            (monzo.scheme, monzo.header.as_deref()),
            (Some(VerifyScheme::Query), Some("X-Declared"))
        );
        let up = settings.hooks["up"].over(&declared);
        assert_eq!(
            (up.scheme, up.header.as_deref()),
            (
                Some(VerifyScheme::Hmac),
                Some("X-Up-Authenticity-Signature")
            )
        );
        assert!(toml::from_str::<Settings>("[hooks.x]\nscheme = \"magic\"").is_err());
        assert!(toml::from_str::<Settings>("[hooks.x]\nsecret_key = \"typo\"").is_err());
    }
}
