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
    /// Authentication per webhook plugin, keyed by plugin id.
    #[serde(default)]
    pub hooks: BTreeMap<String, HookAuth>,
    #[serde(default)]
    pub lunchmoney: LunchMoneySettings,
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

/// How a webhook source proves itself.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(tag = "scheme", rename_all = "kebab-case", deny_unknown_fields)]
pub enum HookAuth {
    /// `Authorization: Bearer <ingest token>` (the default for plugins with no entry).
    Bearer,
    /// A shared secret in a request header.
    Header { header: String, secret: Secret },
    /// A shared secret in the URL: `/hooks/{plugin}?secret=...` (for senders that cannot sign,
    /// such as Monzo).
    Query { secret: Secret },
    /// HMAC-SHA256 of the body (or of `id.timestamp.body`) in a header, hex or base64.
    Hmac {
        header: String,
        secret: Secret,
        #[serde(default)]
        encoding: SignatureEncoding,
        /// Text before the signature in the header, e.g. `sha256=`.
        #[serde(default)]
        prefix: String,
        /// With a timestamp header, the signed text is `id.timestamp.body` (or `timestamp.body`
        /// without `id_header`) and stale timestamps are refused.
        #[serde(default)]
        timestamp_header: Option<String>,
        #[serde(default)]
        id_header: Option<String>,
        #[serde(default = "default_tolerance")]
        tolerance_secs: i64,
    },
    /// Standard Webhooks: `webhook-id`, `webhook-timestamp`, `webhook-signature` (`v1,<base64>`),
    /// secret `whsec_<base64>`.
    StandardWebhooks {
        secret: Secret,
        #[serde(default = "default_tolerance")]
        tolerance_secs: i64,
    },
    /// No authentication: only for sources that cannot authenticate and a private network.
    None,
}

fn default_tolerance() -> i64 {
    300
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
    pub base_url: String,
}

impl Default for LunchMoneySettings {
    fn default() -> Self {
        LunchMoneySettings {
            token: Secret::default(),
            base_url: "https://api.lunchmoney.dev".into(),
        }
    }
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
        for (plugin, auth) in &self.hooks {
            let key = format!("hooks.{plugin}");
            match auth {
                HookAuth::Header { secret, header } | HookAuth::Hmac { secret, header, .. } => {
                    if secret.is_empty() {
                        return bad(&format!("{key}.secret"), "must be set".into());
                    }
                    if header.trim().is_empty() {
                        return bad(&format!("{key}.header"), "must name a header".into());
                    }
                }
                HookAuth::Query { secret } | HookAuth::StandardWebhooks { secret, .. }
                    if secret.is_empty() =>
                {
                    return bad(&format!("{key}.secret"), "must be set".into());
                }
                _ => {}
            }
        }
        if !self.lunchmoney.base_url.starts_with("http://")
            && !self.lunchmoney.base_url.starts_with("https://")
        {
            return bad(
                "lunchmoney.base_url",
                format!("{:?} is not an http(s) URL", self.lunchmoney.base_url),
            );
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
    fn hook_auth_schemes_deserialize_from_toml() {
        let text = r#"
            [hooks.monzo]
            scheme = "query"
            secret = "abc"
            [hooks.up]
            scheme = "hmac"
            header = "X-Up-Authenticity-Signature"
            secret = "s"
            [hooks.svix]
            scheme = "standard-webhooks"
            secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
        "#;
        let settings: Settings = toml::from_str(text).unwrap();
        assert_eq!(
            settings.hooks["monzo"],
            HookAuth::Query {
                secret: Secret::new("abc")
            }
        );
        assert!(matches!(
            &settings.hooks["up"],
            HookAuth::Hmac {
                encoding: SignatureEncoding::Hex,
                tolerance_secs: 300,
                ..
            }
        ));
        assert!(matches!(
            &settings.hooks["svix"],
            HookAuth::StandardWebhooks { .. }
        ));
        assert!(toml::from_str::<Settings>("[hooks.x]\nscheme = \"magic\"").is_err());
    }
}
