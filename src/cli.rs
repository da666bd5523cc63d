//! The command line: `lm-ingest serve`, `parse`, `inspect`, `messages`, `check`, the outbox
//! commands and `fixture add`.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use serde::Serialize;

use crate::inbound::stored::reextract;
use crate::inbound::{Extracted, Payload};
use crate::message::{Email, Envelope, MessageTime, Original};
use crate::parse::{Outcome, Registry};
use crate::settings::Settings;
use crate::store::{MessageStatus, Store};

#[derive(Debug, Parser)]
#[command(
    name = "lm-ingest",
    version,
    about = "Gets money movements that bank feeds never see into Lunch Money"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the service: receive emails and webhooks over HTTP and store them durably.
    Serve {
        /// Configuration file (default: $LM_INGEST_CONFIG, if set).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Parse emails (or webhook bodies) offline and print one JSON line per input.
    Parse {
        /// Configuration file (default: $LM_INGEST_CONFIG, if set).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Treat the inputs as JSON webhook bodies for this plugin instead of emails.
        #[arg(long, value_name = "PLUGIN")]
        webhook: Option<String>,
        /// Input files; `-` reads standard input.
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
    },
    /// Show what rules can match in an email: sender, subject, date, rendered body, links.
    Inspect {
        /// An RFC 822 message; `-` reads standard input.
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
    /// List stored messages (newest first), or show one with `--id`.
    Messages {
        #[arg(long)]
        config: Option<PathBuf>,
        /// Only messages with this status: queued, ignored, unmatched, failed or rejected.
        #[arg(long)]
        status: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// Show this message: what rules see (sender, subject, body), or with `--raw` its bytes.
        #[arg(long)]
        id: Option<i64>,
        #[arg(long, requires = "id")]
        raw: bool,
    },
    /// Validate the configuration and every parser rule file, then the Lunch Money token and the
    /// mapped accounts, categories and tags.
    Check {
        #[arg(long)]
        config: Option<PathBuf>,
        /// Only the local checks: no requests to Lunch Money.
        #[arg(long)]
        offline: bool,
    },
    /// The delivery queue: counts by state, oldest pending, last error, dead letters, and what a
    /// dry run would post.
    Outbox {
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Move dead letters back to pending: all of them, or those named with --id.
    Replay {
        #[arg(long)]
        config: Option<PathBuf>,
        /// Transaction ids (from `lm-ingest outbox`); repeatable. None: every dead letter.
        #[arg(long = "id")]
        ids: Vec<i64>,
    },
    /// Golden fixtures: `fixture add` turns a real email that failed into a redacted fixture.
    Fixture {
        #[command(subcommand)]
        action: FixtureCommand,
    },
    /// Run today's parsers over stored raw input and queue what is new or changed.
    Reparse {
        #[arg(long)]
        config: Option<PathBuf>,
        /// First day (UTC) of stored input to re-parse, YYYY-MM-DD.
        #[arg(long)]
        since: chrono::NaiveDate,
        /// Only this plugin's messages (and unmatched or failed ones it now claims).
        #[arg(long)]
        plugin: Option<String>,
        /// Show the differences without changing anything.
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum FixtureCommand {
    /// Write FILE, with personal data redacted, as `<dir>/<plugin>/<name>.eml` plus the
    /// `.expected.json` of its current parse, for writing or fixing a rule.
    Add {
        #[arg(long)]
        config: Option<PathBuf>,
        /// An RFC 822 message (`lm-ingest messages --id N --raw` prints a stored one); `-` reads
        /// standard input.
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// Redact personal data (required: a real email is never written as it is).
        #[arg(long)]
        redact: bool,
        /// A word to redact wherever it appears (a name, a street); repeatable.
        #[arg(long = "redact-word", value_name = "WORD")]
        redact_words: Vec<String>,
        /// The fixture folder's plugin. Default: the plugin that claims the message, else
        /// `unsorted`.
        #[arg(long)]
        plugin: Option<String>,
        /// The fixture's file name without extension. Default: from the subject.
        #[arg(long)]
        name: Option<String>,
        /// The fixtures folder.
        #[arg(long, default_value = "fixtures")]
        dir: PathBuf,
    },
}

/// Exit codes: 0 all inputs read, 1 invalid rules found by `check`, 2 usage, configuration or I/O.
pub fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Serve { config } => serve(config.as_deref()),
        Command::Parse {
            config,
            webhook,
            files,
        } => parse(config.as_deref(), webhook.as_deref(), &files),
        Command::Check { config, offline } => check(config.as_deref(), offline),
        Command::Outbox { config } => outbox(config.as_deref()),
        Command::Replay { config, ids } => replay(config.as_deref(), ids),
        Command::Reparse {
            config,
            since,
            plugin,
            dry_run,
        } => reparse(config.as_deref(), since, plugin.as_deref(), dry_run),
        Command::Inspect { file } => inspect(&file),
        Command::Fixture {
            action:
                FixtureCommand::Add {
                    config,
                    file,
                    redact,
                    redact_words,
                    plugin,
                    name,
                    dir,
                },
        } => {
            if !redact {
                eprintln!("lm-ingest: pass --redact: a real email is never written as a fixture unredacted");
                return ExitCode::from(2);
            }
            let request = FixtureRequest {
                file: &file,
                words: redact_words,
                plugin,
                name,
                dir: &dir,
            };
            match add_fixture(config.as_deref(), request) {
                Ok(message) => {
                    println!("{message}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("lm-ingest: {e}");
                    ExitCode::from(2)
                }
            }
        }
        Command::Messages {
            config,
            status,
            limit,
            id,
            raw,
        } => messages(config.as_deref(), status.as_deref(), limit, id, raw),
    }
}

fn load_registry(config: Option<&Path>) -> Result<Registry, String> {
    let settings = Settings::load(config).map_err(|e| e.to_string())?;
    Registry::load(settings.parsers.dir.as_deref()).map_err(|e| e.to_string())
}

#[derive(Serialize)]
struct ParseLine<'a> {
    input: String,
    #[serde(flatten)]
    outcome: &'a Outcome,
}

fn parse(config: Option<&Path>, webhook: Option<&str>, files: &[PathBuf]) -> ExitCode {
    let registry = match load_registry(config) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("lm-ingest: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(plugin) = webhook {
        if registry.get(plugin).is_none() {
            let known: Vec<&str> = registry.ids().collect();
            eprintln!(
                "lm-ingest: unknown plugin {plugin:?}; known: {}",
                known.join(", ")
            );
            return ExitCode::from(2);
        }
    }
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut io_failed = false;
    for file in files {
        let outcome = match read_input(file) {
            Ok(bytes) => match webhook {
                Some(plugin) => registry.parse_webhook(plugin, Vec::new(), &bytes),
                None => registry.parse_email(&bytes),
            },
            Err(e) => {
                io_failed = true;
                eprintln!("lm-ingest: cannot read {}: {e}", file.display());
                Outcome::error(None, format!("cannot read input: {e}"))
            }
        };
        let line = ParseLine {
            input: file.display().to_string(),
            outcome: &outcome,
        };
        let written = serde_json::to_writer(&mut out, &line)
            .map_err(std::io::Error::from)
            .and_then(|()| out.write_all(b"\n"));
        if let Err(e) = written {
            // A closed pipe (`| head`) ends the run quietly; anything else is reported.
            if e.kind() != std::io::ErrorKind::BrokenPipe {
                eprintln!("lm-ingest: cannot write output: {e}");
            }
            return ExitCode::from(2);
        }
    }
    if io_failed {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    }
}

fn read_input(file: &Path) -> std::io::Result<Vec<u8>> {
    if file == Path::new("-") {
        let mut bytes = Vec::new();
        std::io::stdin().read_to_end(&mut bytes)?;
        Ok(bytes)
    } else {
        std::fs::read(file)
    }
}

fn check(config: Option<&Path>, offline: bool) -> ExitCode {
    let settings = match Settings::load(config) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("lm-ingest: {e}");
            return ExitCode::from(2);
        }
    };
    let registry = match Registry::load(settings.parsers.dir.as_deref()) {
        Ok(registry) => registry,
        Err(e) => {
            eprintln!("lm-ingest: {e}");
            return ExitCode::from(1);
        }
    };
    let ids: Vec<&str> = registry.ids().collect();
    println!("ok: {} plugins: {}", ids.len(), ids.join(", "));
    let policy_errors = crate::trust::policy_errors(&settings.trust, &registry);
    for error in &policy_errors {
        println!("error: {error}");
    }
    if !policy_errors.is_empty() {
        return ExitCode::from(1);
    }
    if offline {
        return ExitCode::SUCCESS;
    }
    let findings = match runtime() {
        Ok(rt) => {
            let limiter = std::sync::Arc::new(crate::deliver::limiter::RateLimiter::new(
                settings.lunchmoney.requests_per_minute,
            ));
            rt.block_on(crate::ops::check_lunchmoney(&settings, &registry, limiter))
        }
        Err(code) => return code,
    };
    let mut failed = false;
    for finding in findings {
        failed |= finding.level == "error";
        println!("{}: {}", finding.level, finding.message);
    }
    if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

/// Opens the configured store for an operator command.
fn open_store(config: Option<&Path>) -> Result<(Settings, Store), ExitCode> {
    let fail = |e: String| {
        eprintln!("lm-ingest: {e}");
        ExitCode::from(2)
    };
    let settings = Settings::load(config).map_err(|e| fail(e.to_string()))?;
    if !settings.store.path.exists() {
        return Err(fail(format!(
            "no store at {}",
            settings.store.path.display()
        )));
    }
    let store = Store::open(&settings.store.path).map_err(|e| fail(e.to_string()))?;
    Ok((settings, store))
}

fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("lm-ingest: cannot start the async runtime: {e}");
            ExitCode::from(1)
        })
}

fn print_json(value: &impl Serialize) -> ExitCode {
    match serde_json::to_string_pretty(value) {
        Ok(text) => {
            println!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("lm-ingest: {e}");
            ExitCode::from(1)
        }
    }
}

/// Runs `op` on the store, closes it, and prints the result.
fn with_store<T: Serialize>(
    config: Option<&Path>,
    op: impl FnOnce(&Settings, &Store) -> Result<T, String>,
) -> ExitCode {
    let (settings, store) = match open_store(config) {
        Ok(opened) => opened,
        Err(code) => return code,
    };
    let result = op(&settings, &store);
    let closed = store.close();
    match (result, closed) {
        (Ok(value), Ok(())) => print_json(&value),
        (Err(e), _) => {
            eprintln!("lm-ingest: {e}");
            ExitCode::from(1)
        }
        (_, Err(e)) => {
            eprintln!("lm-ingest: {e}");
            ExitCode::from(1)
        }
    }
}

fn outbox(config: Option<&Path>) -> ExitCode {
    with_store(config, |settings, store| {
        let registry =
            Registry::load(settings.parsers.dir.as_deref()).map_err(|e| e.to_string())?;
        crate::ops::outbox_report(store, settings, &registry).map_err(|e| e.to_string())
    })
}

fn replay(config: Option<&Path>, ids: Vec<i64>) -> ExitCode {
    with_store(config, |_, store| {
        let rt = runtime().map_err(|_| "no runtime".to_string())?;
        let ids = if ids.is_empty() { None } else { Some(ids) };
        let moved = rt.block_on(store.replay(ids)).map_err(|e| e.to_string())?;
        Ok(serde_json::json!({ "replayed": moved }))
    })
}

fn reparse(
    config: Option<&Path>,
    since: chrono::NaiveDate,
    plugin: Option<&str>,
    dry_run: bool,
) -> ExitCode {
    with_store(config, |settings, store| {
        let registry =
            Registry::load(settings.parsers.dir.as_deref()).map_err(|e| e.to_string())?;
        if let Some(p) = plugin {
            if registry.get(p).is_none() {
                return Err(format!("unknown plugin {p:?}"));
            }
        }
        let trust = crate::trust::Trust::from_settings(&settings.trust)
            .map_err(|e| format!("trust: {e}"))?;
        let rt = runtime().map_err(|_| "no runtime".to_string())?;
        rt.block_on(crate::ops::reparse(
            store, &registry, &trust, since, plugin, dry_run,
        ))
        .map_err(|e| e.to_string())
    })
}

fn serve(config: Option<&Path>) -> ExitCode {
    init_logging();
    let settings = match Settings::load(config) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("lm-ingest: {e}");
            return ExitCode::from(2);
        }
    };
    // actix-web's System is a tokio runtime; its HTTP workers run on threads of their own.
    match actix_web::rt::System::new().block_on(crate::server::serve(settings)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("lm-ingest: {e}");
            ExitCode::from(1)
        }
    }
}

/// Logs go to stderr; `LM_INGEST_LOG` (or `RUST_LOG`) filters them, default `info`.
fn init_logging() {
    let filter = std::env::var("LM_INGEST_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| "info".into());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

fn inspect(file: &Path) -> ExitCode {
    let bytes = match read_input(file) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("lm-ingest: cannot read {}: {e}", file.display());
            return ExitCode::from(2);
        }
    };
    let email = match Email::parse(&bytes) {
        Ok(email) => email,
        Err(e) => {
            eprintln!("lm-ingest: {}: {e}", file.display());
            return ExitCode::from(2);
        }
    };
    let shown = email_view(&email);
    println!(
        "{}",
        serde_json::to_string_pretty(&shown).unwrap_or_default()
    );
    ExitCode::SUCCESS
}

/// What rules can match in an email, as `inspect` and `messages --id` show it.
fn email_view(email: &Email) -> serde_json::Value {
    let envelope = |e: &Envelope| {
        serde_json::json!({
            "from": e.from,
            "subject": e.subject,
            "date": e.date.map(|d| match d {
                MessageTime::Utc(t) => t.to_rfc3339(),
                MessageTime::Local(t) => format!("{t} (local, no zone)"),
            }),
        })
    };
    let original = match &email.original {
        Some(Original::Attached(inner)) => {
            Some(serde_json::json!({"attached": envelope(&inner.envelope)}))
        }
        Some(Original::Quoted(e)) => Some(serde_json::json!({"quoted": envelope(e)})),
        None => None,
    };
    serde_json::json!({
        "envelope": envelope(&email.envelope),
        "original": original,
        "body": email.body_text(),
        "text": email.text,
        "links": email.links,
    })
}

fn messages(
    config: Option<&Path>,
    status: Option<&str>,
    limit: usize,
    id: Option<i64>,
    raw: bool,
) -> ExitCode {
    let fail = |e: String| {
        eprintln!("lm-ingest: {e}");
        ExitCode::from(2)
    };
    let settings = match Settings::load(config) {
        Ok(s) => s,
        Err(e) => return fail(e.to_string()),
    };
    let status = match status.map(str::parse::<MessageStatus>).transpose() {
        Ok(s) => s,
        Err(_) => {
            return fail("--status is one of queued, ignored, unmatched, failed, rejected".into())
        }
    };
    if !settings.store.path.exists() {
        return fail(format!("no store at {}", settings.store.path.display()));
    }
    let store = match Store::open(&settings.store.path) {
        Ok(s) => s,
        Err(e) => return fail(e.to_string()),
    };
    let ids = match id {
        Some(id) => vec![id],
        None => match store.message_ids(status, limit) {
            Ok(ids) => ids,
            Err(e) => return fail(e.to_string()),
        },
    };
    let detail = id.is_some();
    let mut out = std::io::stdout().lock();
    for id in ids {
        let message = match store.message(id) {
            Ok(Some(m)) => m,
            Ok(None) => return fail(format!("no message {id}")),
            Err(e) => return fail(e.to_string()),
        };
        if raw {
            let _ = out.write_all(&message.raw);
            continue;
        }
        let extracted = reextract(&message);
        let email = match &extracted {
            Ok(Extracted {
                payload: Payload::Email(email),
                ..
            }) => Some(email),
            _ => None,
        };
        let sender = email.map(|e| e.original_envelope().unwrap_or(&e.envelope));
        let mut line = serde_json::json!({
            "id": message.id,
            "received_at": message.received_at,
            "route": message.route,
            "source": message.source,
            "status": message.status,
            "plugin": message.plugin,
            "reason": message.reason,
            "from": sender.and_then(|e| e.from.clone()),
            "subject": sender.map(|e| e.subject.clone()),
        });
        if let Some(trust) = message.meta.get("trust") {
            line["trust"] = if detail {
                trust.clone()
            } else {
                serde_json::json!({"result": trust["result"], "policy": trust["policy"], "authenticated_by": trust["authenticated_by"]})
            };
        }
        let text = if detail {
            if let Some(email) = email {
                line["message"] = email_view(email);
            }
            serde_json::to_string_pretty(&line)
        } else {
            serde_json::to_string(&line)
        };
        if writeln!(out, "{}", text.unwrap_or_default()).is_err() {
            break;
        }
    }
    if let Err(e) = store.close() {
        return fail(e.to_string());
    }
    ExitCode::SUCCESS
}

struct FixtureRequest<'a> {
    file: &'a Path,
    words: Vec<String>,
    plugin: Option<String>,
    name: Option<String>,
    dir: &'a Path,
}

/// `fixture add`: redacts, writes the `.eml` and its `.expected.json` (never over existing
/// files), and says what to do next.
fn add_fixture(config: Option<&Path>, request: FixtureRequest<'_>) -> Result<String, String> {
    let registry = load_registry(config)?;
    let raw = read_input(request.file)
        .map_err(|e| format!("cannot read {}: {e}", request.file.display()))?;
    let before = registry.parse_email(&raw);
    let options = crate::redact::Options {
        words: request.words,
    };
    let redacted = crate::redact::redact_email(&raw, &options).map_err(|e| e.to_string())?;
    let after = registry.parse_email(&redacted.raw);
    let plugin = request
        .plugin
        .or_else(|| after.plugin.clone())
        .or_else(|| before.plugin.clone())
        .unwrap_or_else(|| "unsorted".to_owned());
    if !is_slug(&plugin) {
        return Err(format!(
            "--plugin {plugin:?}: use lowercase letters, digits, - and _"
        ));
    }
    let name = match request.name {
        Some(name) if is_slug(&name) => name,
        Some(name) => {
            return Err(format!(
                "--name {name:?}: use lowercase letters, digits, - and _"
            ))
        }
        None => {
            let subject = Email::parse(&redacted.raw)
                .map(|e| e.envelope.subject)
                .unwrap_or_default();
            slug(&subject)
        }
    };
    let folder = request.dir.join(&plugin);
    let eml = folder.join(format!("{name}.eml"));
    let expected = folder.join(format!("{name}.expected.json"));
    for path in [&eml, &expected] {
        if path.exists() {
            return Err(format!("{} exists; choose another --name", path.display()));
        }
    }
    std::fs::create_dir_all(&folder)
        .map_err(|e| format!("cannot create {}: {e}", folder.display()))?;
    let outcome = serde_json::to_string_pretty(&after).map_err(|e| e.to_string())? + "\n";
    write_new(&eml, &redacted.raw)?;
    write_new(&expected, outcome.as_bytes())?;
    let status = |o: &Outcome| {
        serde_json::to_value(o.status)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default()
    };
    let mut message = format!(
        "wrote {} and {} (status {}{})\nredacted: addresses outside {}, recipients and forwarders, message ids, long numbers (last 4 kept){}",
        eml.display(),
        expected.display(),
        status(&after),
        after
            .plugin
            .as_deref()
            .map(|p| format!(", plugin {p}"))
            .unwrap_or_default(),
        redacted.sender_domain,
        if redacted.words.is_empty() {
            String::new()
        } else {
            format!(", words: {}", redacted.words.join(", "))
        },
    );
    if (before.status, &before.plugin) != (after.status, &after.plugin) {
        message.push_str(&format!(
            "\nwarning: the original parsed as {} ({}); the redacted copy as {}: redaction touched something the rules read",
            status(&before),
            before.plugin.as_deref().unwrap_or("no plugin"),
            status(&after)
        ));
    }
    message.push_str(&format!(
        "\nnext:\n  1. read {} for personal data the rules could not know (names in the text: --redact-word)\n  2. write or fix the rule in parsers/{plugin}.toml (docs/rule-files.md; `lm-ingest inspect {}` shows what rules see)\n  3. `lm-ingest parse {}` until it says what the email says, then put that outcome in {}\n  4. `cargo test --test fixtures`",
        eml.display(),
        eml.display(),
        eml.display(),
        expected.display(),
    ));
    Ok(message)
}

/// Creates `path` with `bytes`; an existing file is an error, never overwritten.
fn write_new(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    file.write_all(bytes)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

fn is_slug(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 80
        && text
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

/// A file name from a subject: lowercase words joined by `-`, at most 60 characters.
fn slug(text: &str) -> String {
    let mut out = String::new();
    for word in text
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
    {
        if out.len() + word.len() + 1 > 60 {
            break;
        }
        if !out.is_empty() {
            out.push('-');
        }
        out.push_str(&word.to_ascii_lowercase());
    }
    if out.is_empty() {
        "message".to_owned()
    } else {
        out
    }
}
