//! Starts the real server on 127.0.0.1:0 with a temporary store, as every integration test does.

#![allow(dead_code)] // Each test binary uses a different part of this module.

pub mod fake_lunchmoney;
pub mod prism;

use std::net::TcpListener;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use lm_ingest::server::Application;
use lm_ingest::settings::{BasicAuthSettings, HookSettings, Secret, Settings, VerifyScheme};

pub const TOKEN: &str = "test-ingest-token-0123456789";
pub const MAILGUN_KEY: &str = "key-mailgun-test";
pub const HMAC_SECRET: &str = "hmac-secret";
pub const WHSEC: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
pub const QUERY_SECRET: &str = "query-secret-abc";

/// A webhook plugin for tests: `/hooks/testbank` and friends all use this rule file.
pub const BANK_RULES: &str = r#"
kind = "webhook"
currency = "eur"
tags = ["bank"]
[[ignore]]
reason = "not a transaction event"
when = [{ pointer = "/type", equals = ["transaction.created"], negate = true }]
[[template]]
name = "created"
require = [
  { pointer = "/data/id", capture = "id" },
  { pointer = "/data/amount", capture = "amount" },
  { pointer = "/data/date", capture = "date" },
]
optional = [{ pointer = "/data/payee", capture = "payee" }, { pointer = "/data/currency", capture = "currency" }, { pointer = "/data/balance", capture = "balance" }]
"#;

pub struct TestApp {
    pub address: String,
    pub dir: tempfile::TempDir,
    pub client: reqwest::Client,
    pub handle: actix_web::dev::ServerHandle,
    pub join: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    /// GETs an admin route (`/admin/outbox`, `/admin/check`) with `token`; its JSON answer.
    pub async fn admin_json(&self, path: &str, token: &str) -> serde_json::Value {
        let response = self
            .client
            .get(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert!(
            response.status().is_success(),
            "{path}: {}",
            response.status()
        );
        response.json().await.unwrap()
    }

    pub fn store_path(&self) -> PathBuf {
        self.dir.path().join("data/lm-ingest.db")
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Stops the server gracefully and waits until the store is closed.
    pub async fn stop(self) -> tempfile::TempDir {
        self.handle.stop(true).await;
        self.join.await.unwrap().unwrap();
        self.dir
    }
}

pub fn settings_for(dir: &Path) -> Settings {
    let parsers = dir.join("parsers");
    std::fs::create_dir_all(&parsers).unwrap();
    for id in ["testbank", "stdbank", "querybank"] {
        std::fs::write(parsers.join(format!("{id}.toml")), BANK_RULES).unwrap();
    }
    let declared =
        "\n[verify]\nscheme = \"hmac\"\nheader = \"X-Signature\"\nprefix = \"sha256=\"\n";
    std::fs::write(
        parsers.join("hmacbank.toml"),
        format!("{BANK_RULES}{declared}"),
    )
    .unwrap();
    let mut settings = Settings::default();
    settings.server.listen = "127.0.0.1:0".into();
    settings.server.workers = 2;
    settings.store.path = dir.join("data/lm-ingest.db");
    settings.ingest.token = Secret::new(TOKEN);
    settings.parsers.dir = Some(parsers);
    // DKIM key look-ups go to a loopback port where nothing listens: no test reaches real DNS,
    // and a look-up fails at once (temperror) instead of waiting for a time-out.
    settings.trust.dns_servers = vec!["127.0.0.1:9".into()];
    settings.mailgun.signing_key = Secret::new(MAILGUN_KEY);
    settings.postmark = BasicAuthSettings {
        username: Some("postmark".into()),
        password: Secret::new("pm-password"),
    };
    // stdbank and querybank are verified as configuration says; hmacbank as its rule file
    // declares, with only the secret from configuration.
    settings.hooks.insert(
        "stdbank".into(),
        HookSettings {
            scheme: Some(VerifyScheme::StandardWebhooks),
            secret: Secret::new(WHSEC),
            ..Default::default()
        },
    );
    settings.hooks.insert(
        "hmacbank".into(),
        HookSettings {
            secret: Secret::new(HMAC_SECRET),
            ..Default::default()
        },
    );
    settings.hooks.insert(
        "querybank".into(),
        HookSettings {
            scheme: Some(VerifyScheme::Query),
            secret: Secret::new(QUERY_SECRET),
            ..Default::default()
        },
    );
    settings
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

pub async fn spawn_app_with(adjust: impl FnOnce(&mut Settings)) -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = settings_for(dir.path());
    adjust(&mut settings);
    spawn_in(dir, settings)
}

pub fn spawn_in(dir: tempfile::TempDir, settings: Settings) -> TestApp {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let app = Application::build(&settings, listener).expect("server starts");
    let address = format!("http://127.0.0.1:{}", app.port());
    let handle = app.handle();
    let join = tokio::spawn(app.run_until_stopped());
    TestApp {
        address,
        dir,
        client: reqwest::Client::new(),
        handle,
        join,
    }
}

pub fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures/venmo")
            .join(name),
    )
    .unwrap()
}

pub fn basic(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}
