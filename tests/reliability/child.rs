//! The real `lm-ingest serve` binary as a child process on a fixed loopback port, so it can be
//! SIGKILLed and restarted on the same store, with its output kept for the panic check.

use std::fs::OpenOptions;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{self, HMAC_SECRET, MAILGUN_KEY, QUERY_SECRET, TOKEN, WHSEC};

pub const ADMIN_TOKEN: &str = "reliability-admin-token-0123";

pub struct ChildServer {
    pub dir: tempfile::TempDir,
    pub port: u16,
    config: PathBuf,
    log: PathBuf,
    process: Option<Child>,
    pub starts: usize,
    pub client: reqwest::Client,
}

impl ChildServer {
    /// A server configured like `support::settings_for` (same parsers, tokens and hook secrets),
    /// plus `extra` TOML (e.g. a `[lunchmoney]` table). Not started yet.
    pub fn new(extra: &str) -> ChildServer {
        let dir = tempfile::tempdir().unwrap();
        // Writes the test parsers (testbank, stdbank, hmacbank, querybank) into dir/parsers.
        let settings = support::settings_for(dir.path());
        let port = free_port();
        let config = dir.path().join("lm-ingest.toml");
        let parsers = settings.parsers.dir.unwrap();
        let store = settings.store.path;
        let text = format!(
            r#"
[server]
listen = "127.0.0.1:{port}"
workers = 2
shutdown_timeout_secs = 2
[store]
path = {store:?}
[ingest]
token = "{TOKEN}"
[parsers]
dir = {parsers:?}
[mailgun]
signing_key = "{MAILGUN_KEY}"
[postmark]
username = "postmark"
password = "pm-password"
[admin]
token = "{ADMIN_TOKEN}"
[hooks.stdbank]
scheme = "standard-webhooks"
secret = "{WHSEC}"
[hooks.hmacbank]
secret = "{HMAC_SECRET}"
[hooks.querybank]
scheme = "query"
secret = "{QUERY_SECRET}"
{extra}
"#
        );
        std::fs::write(&config, text).unwrap();
        let log = dir.path().join("server.log");
        ChildServer {
            dir,
            port,
            config,
            log,
            process: None,
            starts: 0,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn store_path(&self) -> PathBuf {
        self.dir.path().join("data/lm-ingest.db")
    }

    /// Starts the binary and waits until `/readyz` answers 200.
    pub async fn start(&mut self) {
        assert!(self.process.is_none(), "already running");
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_lm-ingest"))
            .arg("serve")
            .arg("--config")
            .arg(&self.config)
            .env("RUST_LOG", "warn")
            .env_remove("LM_INGEST_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("lm-ingest starts");
        self.process = Some(child);
        self.starts += 1;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = self.client.get(self.url("/readyz")).send().await {
                if r.status() == 200 {
                    return;
                }
            }
            if let Some(status) = self.process.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "lm-ingest exited at start with {status}:\n{}",
                    self.output()
                );
            }
            assert!(
                Instant::now() < deadline,
                "lm-ingest not ready after 30 s:\n{}",
                self.output()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGKILL: no shutdown code runs, as in a power cut or an OOM kill.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.process.take() {
            child.kill().unwrap(); // SIGKILL on Unix
            child.wait().unwrap();
        }
    }

    /// SIGTERM, the graceful stop, and waits for the exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.process.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
            let deadline = Instant::now() + Duration::from_secs(20);
            while child.try_wait().unwrap().is_none() {
                if Instant::now() > deadline {
                    child.kill().unwrap();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            child.wait().unwrap();
        }
    }

    pub fn is_running(&mut self) -> bool {
        match self.process.as_mut() {
            Some(child) => child.try_wait().unwrap().is_none(),
            None => false,
        }
    }

    /// Everything the server wrote to stdout and stderr, over all its runs.
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Lines of the output that report a panic.
    pub fn panics(&self) -> Vec<String> {
        self.output()
            .lines()
            .filter(|l| l.contains("panicked"))
            .map(str::to_owned)
            .collect()
    }

    /// The outbox report (`GET /admin/outbox`).
    pub async fn outbox(&self) -> serde_json::Value {
        self.client
            .get(self.url("/admin/outbox"))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A port nothing listens on now. The server binds it itself (and rebinds it after each kill).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
