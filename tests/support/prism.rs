//! Prism's mock server serving Lunch Money's official v2 OpenAPI spec, for contract tests: every
//! request our client makes can be sent to it, and Prism answers an invalid one with 400 and
//! each violation in the `sl-violations` header (a valid one gets the spec's example).
//!
//! `npm ci` at the repository root (from `package.json`; `.ci/run` does it) installs
//! `@stoplight/prism-cli` and `@lunch-money/v2-api-spec` into `./node_modules`.
//! [`Prism::start`] returns `None` when they are not installed, unless `LM_INGEST_REQUIRE_PRISM=1`
//! (CI sets it): then it panics, so CI can never skip the contract tests silently.
//!
//! The spec's paths have no `/v2` (it is in the server URL, which Prism's mock ignores), so the
//! harness serves a copy of the spec with every path prefixed by `/v2`: [`Prism::base_url`] then
//! stands for `https://api.lunchmoney.dev`, as the fake's `base_url()` does, and the client under
//! test appends `/v2/transactions` to either.
//!
//! ```ignore
//! let Some(prism) = Prism::start() else { return };   // not installed and not required
//! let resp = client.post(prism.url("/v2/transactions")).bearer_auth(prism::TOKEN)...;
//! assert!(resp.status().is_success(), "{:?}", Prism::violations(resp.headers()));
//! ```

use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Set to `1` to make a missing Prism a test failure instead of a skip.
pub const REQUIRE_ENV: &str = "LM_INGEST_REQUIRE_PRISM";
/// A bearer token Prism accepts (its security check wants any bearer token).
pub const TOKEN: &str = "prism-contract-token-0123456789";
/// The header in which Prism lists each violation of a request, as a JSON array.
pub const VIOLATIONS_HEADER: &str = "sl-violations";
/// How long Prism may take to answer after it is started.
pub const START_TIMEOUT: Duration = Duration::from_secs(60);

const SPEC_PACKAGE: &str = "node_modules/@lunch-money/v2-api-spec";
const SPEC_FILE: &str = "lunch-money-api-v2.yaml";
const PRISM_BIN: &str = "node_modules/.bin/prism";

/// A running Prism mock server; killed on drop.
pub struct Prism {
    child: Child,
    port: u16,
    /// Holds the rewritten spec and the log; removed on drop.
    _dir: tempfile::TempDir,
    log_path: PathBuf,
    spec_path: PathBuf,
}

/// What was found on disk.
struct Installation {
    prism: PathBuf,
    spec: PathBuf,
}

impl Prism {
    /// Whether `LM_INGEST_REQUIRE_PRISM` asks for Prism.
    pub fn required() -> bool {
        std::env::var(REQUIRE_ENV).is_ok_and(|v| matches!(v.trim(), "1" | "true" | "yes"))
    }

    /// Starts Prism on a free port of 127.0.0.1 and waits until it answers. `None` when Prism or
    /// the spec is not installed (and [`Prism::required`] is false). Panics when it is installed but
    /// does not come up, or is required and missing.
    pub fn start() -> Option<Prism> {
        let installation = match find_installation() {
            Ok(found) => found,
            Err(missing) => {
                if Self::required() {
                    panic!(
                        "{REQUIRE_ENV}=1 but Prism cannot run: {missing}. Install the node dev \
                         dependencies with `npm ci --no-audit --no-fund` at the repository root \
                         (.ci/run does)."
                    );
                }
                eprintln!("prism: not installed ({missing}); skipping. `npm ci` installs it.");
                return None;
            }
        };
        let dir = tempfile::tempdir().expect("temp dir for Prism");
        let spec_path = dir.path().join(SPEC_FILE);
        std::fs::write(&spec_path, prefixed_spec(&installation.spec)).expect("write the /v2 spec");
        let log_path = dir.path().join("prism.log");

        let mut last_log = String::new();
        for _attempt in 0..3 {
            let port = free_port();
            let log = File::create(&log_path).expect("create prism.log");
            let mut child = Command::new(&installation.prism)
                .args(["mock", "-h", "127.0.0.1", "-p", &port.to_string()])
                .arg(&spec_path)
                .env("SCARF_ANALYTICS", "false")
                .env("NO_COLOR", "1")
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("clone log handle"))
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot run {}: {e}", installation.prism.display()));
            match wait_ready(&mut child, port, START_TIMEOUT) {
                Ok(()) => {
                    return Some(Prism {
                        child,
                        port,
                        _dir: dir,
                        log_path,
                        spec_path,
                    })
                }
                Err(why) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    last_log = std::fs::read_to_string(&log_path).unwrap_or_default();
                    // Another process took the port between our probe and Prism's bind: retry.
                    if !last_log.contains("EADDRINUSE") {
                        panic!("Prism did not start ({why}). Its output:\n{last_log}");
                    }
                }
            }
        }
        panic!("Prism could not get a free port in 3 attempts. Its output:\n{last_log}");
    }

    /// `http://127.0.0.1:PORT`, standing for `https://api.lunchmoney.dev` (paths are `/v2/...`).
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `base_url() + path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url())
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The spec Prism serves (the official one with paths under `/v2`).
    pub fn spec_path(&self) -> &Path {
        &self.spec_path
    }

    /// Everything Prism printed so far (one line per request, with its violations).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// The violations Prism listed in a response's `sl-violations` header (empty when none).
    pub fn violations(headers: &reqwest::header::HeaderMap) -> Vec<Value> {
        headers
            .get(VIOLATIONS_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| serde_json::from_str::<Value>(v).ok())
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default()
    }

    /// The violations' messages, one per line, for assertion messages.
    pub fn describe_violations(headers: &reqwest::header::HeaderMap) -> String {
        Self::violations(headers)
            .iter()
            .map(|v| {
                let location = v["location"]
                    .as_array()
                    .map(|l| {
                        l.iter()
                            .map(|p| p.as_str().map_or(p.to_string(), str::to_string))
                            .collect::<Vec<_>>()
                            .join(".")
                    })
                    .unwrap_or_default();
                format!(
                    "{location}: {} ({})",
                    v["message"].as_str().unwrap_or("?"),
                    v["code"]
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Prism {
    fn drop(&mut self) {
        self.kill();
    }
}

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn find_installation() -> Result<Installation, String> {
    let root = repo_root();
    let prism = root.join(PRISM_BIN);
    if !prism.exists() {
        return Err(format!("{} is missing", prism.display()));
    }
    let node = Command::new("node")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if !node.is_ok_and(|s| s.success()) {
        return Err("`node` is not on PATH".into());
    }
    let package = root.join(SPEC_PACKAGE);
    let preferred = package.join(SPEC_FILE);
    if preferred.is_file() {
        return Ok(Installation {
            prism,
            spec: preferred,
        });
    }
    // Any YAML the package ships, should the file be renamed.
    let found = std::fs::read_dir(&package)
        .map_err(|e| format!("{} is missing ({e})", package.display()))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .find(|p| {
            p.extension()
                .is_some_and(|ext| ext == "yaml" || ext == "yml")
        });
    match found {
        Some(spec) => Ok(Installation { prism, spec }),
        None => Err(format!("no .yaml spec in {}", package.display())),
    }
}

/// The spec with every path under `/v2` (path keys are the lines indented by two spaces that
/// start with `/` after the top-level `paths:`).
fn prefixed_spec(spec: &Path) -> String {
    let text =
        std::fs::read_to_string(spec).unwrap_or_else(|e| panic!("read {}: {e}", spec.display()));
    let mut in_paths = false;
    let mut prefixed = 0;
    let mut out = String::with_capacity(text.len() + 1024);
    for line in text.split_inclusive('\n') {
        if !line.starts_with(' ') && !line.starts_with('#') && !line.trim().is_empty() {
            in_paths = line.trim_end() == "paths:";
        }
        if in_paths && line.starts_with("  /") {
            out.push_str("  /v2/");
            out.push_str(&line[3..]);
            prefixed += 1;
        } else {
            out.push_str(line);
        }
    }
    assert!(
        prefixed > 0 && text.contains("\n  /transactions:"),
        "{}: unexpected layout (no `paths:` with `  /transactions:`); the /v2 rewrite needs updating",
        spec.display()
    );
    out
}

/// Waits until Prism answers, or exits, or `timeout` passes.
fn wait_ready(child: &mut Child, port: u16, timeout: Duration) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("it exited with {status}"));
        }
        if probe(addr) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!("no answer on {addr} within {timeout:?}"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port on 127.0.0.1")
}

/// True when `GET /v2/me` answers 200 (Prism has loaded the spec and serves it).
fn probe(addr: SocketAddr) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(3)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(3)));
    let request = format!(
        "GET /v2/me HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {TOKEN}\r\nAccept: application/json\r\nConnection: close\r\n\r\n"
    );
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    let mut read = 0;
    while read < head.len() {
        match stream.read(&mut head[read..]) {
            Ok(0) | Err(_) => return false,
            Ok(n) => read += n,
        }
    }
    &head == b"HTTP/1.1 200"
}
