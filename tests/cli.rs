//! The `lm-ingest` binary end to end: exit codes, output lines, hostile inputs, user plugins.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

fn bin() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lm-ingest"));
    // Tests must not pick up a developer's configuration.
    cmd.env_remove("LM_INGEST_CONFIG");
    for (key, _) in std::env::vars() {
        if key.starts_with("LM_INGEST__") {
            cmd.env_remove(key);
        }
    }
    cmd
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/venmo")
        .join(name)
}

fn lines(output: &Output) -> Vec<Value> {
    String::from_utf8(output.stdout.clone())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

fn assert_no_panic(output: &Output) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn parses_files_one_compact_line_each() {
    let out = bin()
        .args(["parse"])
        .arg(fixture("old-you-paid.eml"))
        .arg(fixture("statement.eml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let stdout = String::from_utf8(out.stdout.clone()).unwrap();
    assert_eq!(stdout.lines().count(), 2);
    let first = &lines(&out)[0];
    assert_eq!(first["status"], "parsed");
    assert_eq!(
        first["transactions"][0]["external_id"],
        "venmo:3981736402915738461"
    );
    assert_eq!(first["transactions"][0]["amount"], "-25.00");
    let keys: Vec<&str> = first
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        ["input", "status", "plugin", "reason", "transactions"]
    );
    assert_eq!(lines(&out)[1]["status"], "ignored");
}

#[test]
fn unreadable_input_reports_and_exits_2_after_the_rest() {
    let out = bin()
        .args(["parse", "/nonexistent/mail.eml"])
        .arg(fixture("old-you-paid.eml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let lines = lines(&out);
    assert_eq!(lines[0]["status"], "error");
    assert!(lines[0]["reason"]
        .as_str()
        .unwrap()
        .starts_with("cannot read input"));
    assert_eq!(lines[1]["status"], "parsed");
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/mail.eml"));
}

#[test]
fn usage_errors_exit_2() {
    assert_eq!(
        bin().args(["parse"]).output().unwrap().status.code(),
        Some(2)
    );
    assert_eq!(
        bin().args(["frobnicate"]).output().unwrap().status.code(),
        Some(2)
    );
    let out = bin()
        .args(["parse", "--webhook", "nope", "x.json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("unknown plugin \"nope\"; known: ") && stderr.contains("venmo"),
        "{stderr}"
    );
}

#[test]
fn hostile_inputs_get_a_status_and_never_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let original = std::fs::read(fixture("new-paid-you.eml")).unwrap();
    let mut huge = original.clone();
    // 20 MB: a real message with a giant HTML comment and text inside its body.
    let cut = huge.len() - 200;
    let filler =
        "<!-- ".to_owned() + &"x".repeat(10 << 20) + " -->" + &"<p>junk</p>".repeat(900_000);
    huge.splice(cut..cut, filler.bytes());
    let mut junk = Vec::with_capacity(1 << 20);
    let mut state: u32 = 0x1234_5678;
    for _ in 0..(1 << 20) {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        junk.push(state as u8);
    }
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("empty.eml", Vec::new(), "error"),
        ("blank.eml", b"\r\n\r\n   \n".to_vec(), "error"),
        ("junk.eml", junk, "error"),
        ("truncated.eml", original[..original.len() / 3].to_vec(), "parsed"),
        ("headers-only.eml", b"From: venmo@venmo.com\r\nDate: Fri, 1 Mar 2024 10:00:00 -0800\r\nSubject: You paid Al $1.00".to_vec(), "parsed"),
        ("huge.eml", huge, "parsed"),
        ("no-date.eml", b"From: venmo@venmo.com\r\nSubject: You paid Al $1.00\r\n\r\n".to_vec(), "error"),
        ("nul.eml", b"From: a@b.c\0\0\0\nSubject: \xff\xfe\n\n\0".to_vec(), "unmatched"),
    ];
    let mut args = vec!["parse".to_owned()];
    for (name, bytes, _) in &cases {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        args.push(path.display().to_string());
    }
    let out = bin().args(&args).output().unwrap();
    assert_no_panic(&out);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines = lines(&out);
    assert_eq!(lines.len(), cases.len());
    for ((name, _, status), line) in cases.iter().zip(&lines) {
        assert_eq!(line["status"], *status, "{name}: {line}");
        if *status == "error" || *status == "unmatched" {
            assert!(
                line["reason"].as_str().is_some_and(|r| !r.is_empty()),
                "{name}: {line}"
            );
        }
    }
    assert_eq!(lines[0]["reason"], "empty message");
    // A message cut off after its headers still names its sender, date and amount.
    assert_eq!(lines[4]["transactions"][0]["amount"], "-1.00");
    assert_eq!(lines[4]["transactions"][0]["date"], "2024-03-01");
    assert_eq!(lines[5]["transactions"][0]["amount"], "386.70");
    assert_eq!(
        lines[6]["reason"],
        "template you-paid: no date captured and the message has no Date"
    );
}

#[test]
fn reads_standard_input() {
    let mut child = bin()
        .args(["parse", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mail = std::fs::read(fixture("fwd-gmail.eml")).unwrap();
    child.stdin.take().unwrap().write_all(&mail).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let line = &lines(&out)[0];
    assert_eq!(line["input"], "-");
    assert_eq!(line["transactions"][0]["payee"], "Avery Johnson");
}

const BANK_HOOK: &str = r#"
kind = "webhook"
currency = "gbp"
tags = ["bank"]
timezone = "Europe/London"

[[ignore]]
reason = "declined"
when = [{ pointer = "/data/decline_reason", exists = true }]

[[template]]
name = "created"
require = [
  { pointer = "/type", equals = ["transaction.created"] },
  { pointer = "/data/amount", capture = "amount" },
  { pointer = "/data/created", capture = "date" },
  { pointer = "/data/id", capture = "id" },
]
optional = [
  { pointer = "/data/currency", capture = "currency" },
  { pointer = "/data/merchant/name", capture = "merchant" },
  { pointer = "/data/counterparty/name", capture = "counterparty" },
  { pointer = "/data/notes", capture = "notes" },
]
amount_format = "minor"
date_formats = ["rfc3339"]
fields = { payee = "{merchant|counterparty}" }
"#;

struct UserPlugins {
    dir: tempfile::TempDir,
    config: PathBuf,
}

fn user_plugins(files: &[(&str, &str)]) -> UserPlugins {
    let dir = tempfile::tempdir().unwrap();
    let parsers = dir.path().join("parsers");
    std::fs::create_dir(&parsers).unwrap();
    for (name, text) in files {
        std::fs::write(parsers.join(name), text).unwrap();
    }
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!("[parsers]\ndir = {:?}\n", parsers.display().to_string()),
    )
    .unwrap();
    UserPlugins { dir, config }
}

#[test]
fn webhook_plugins_from_a_user_folder() {
    let plugins = user_plugins(&[("bank.toml", BANK_HOOK)]);
    let body = |json: &str, name: &str| {
        let path = plugins.dir.path().join(name);
        std::fs::write(&path, json).unwrap();
        path
    };
    let created = body(
        r#"{"type":"transaction.created","data":{"id":"tx_0001","amount":-1250,"currency":"JPY","created":"2024-03-31T23:30:00Z","merchant":null,"counterparty":{"name":"Kiosk"},"notes":"  lunch  "}}"#,
        "created.json",
    );
    let declined = body(
        r#"{"type":"transaction.created","data":{"id":"x","amount":1,"created":"2024-01-01T00:00:00Z","decline_reason":"INSUFFICIENT_FUNDS"}}"#,
        "declined.json",
    );
    let other = body(r#"{"type":"account.updated"}"#, "other.json");
    let broken = body(r#"{"type": "#, "broken.json");
    let out = bin()
        .arg("parse")
        .arg("--config")
        .arg(&plugins.config)
        .args(["--webhook", "bank"])
        .args([&created, &declined, &other, &broken])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines = lines(&out);
    let tx = &lines[0]["transactions"][0];
    assert_eq!(lines[0]["plugin"], "bank");
    // JPY has no minor unit; 23:30 UTC on 31 March is 00:30 on 1 April in London (BST).
    assert_eq!(tx["amount"], "-1250");
    assert_eq!(tx["currency"], "jpy");
    assert_eq!(tx["date"], "2024-04-01");
    assert_eq!(tx["payee"], "Kiosk");
    assert_eq!(tx["notes"], "lunch");
    assert_eq!(tx["external_id"], "bank:tx_0001");
    assert_eq!(tx["tags"], serde_json::json!(["bank"]));
    assert_eq!(lines[1]["status"], "ignored");
    assert_eq!(lines[1]["reason"], "declined");
    assert_eq!(lines[2]["status"], "unmatched");
    assert_eq!(lines[2]["reason"], "no bank template matched this message");
    assert_eq!(lines[3]["status"], "error");
    assert!(lines[3]["reason"]
        .as_str()
        .unwrap()
        .starts_with("invalid JSON"));

    // An email plugin cannot read webhooks.
    let out = bin()
        .args(["parse", "--webhook", "venmo"])
        .arg(&created)
        .output()
        .unwrap();
    assert_eq!(
        lines_of(&out)[0]["reason"],
        "plugin \"venmo\" parses email, not webhooks"
    );
}

fn lines_of(out: &Output) -> Vec<Value> {
    lines(out)
}

#[test]
fn the_environment_overlays_the_config_and_user_files_override_built_ins() {
    let replacement = r#"
kind = "email"
tags = ["p2p"]
[claim]
senders = ["venmo.com"]
[[template]]
name = "any"
require = [{ in = "subject", regex = '\$(?P<amount>[\d.]+)' }]
sign = "-"
"#;
    let plugins = user_plugins(&[("venmo.toml", replacement)]);
    let parsers = plugins.dir.path().join("parsers");
    let out = bin()
        .env("LM_INGEST__PARSERS__DIR", &parsers)
        .arg("parse")
        .arg(fixture("new-paid-you.eml"))
        .output()
        .unwrap();
    let tx = &lines(&out)[0]["transactions"][0];
    assert_eq!(tx["tags"], serde_json::json!(["p2p"]));
    assert_eq!(tx["amount"], "-386.70");
    assert!(tx["external_id"].as_str().unwrap().starts_with("venmo:d:"));
}

#[test]
fn check_reports_every_bad_rule_with_file_and_field() {
    let out = bin().arg("check").output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[0], builtin_plugins_line());
    // With no token and no mapping, check says what that means rather than failing.
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("warning: source venmo: no account mapped")),
        "{stdout}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("warning: no Lunch Money token")),
        "{stdout}"
    );
    let out = bin().args(["check", "--offline"]).output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        builtin_plugins_line()
    );

    let bad = BANK_HOOK
        .replace("\"/data/amount\"", "\"data/amount\"")
        .replace("rfc3339", "%Y");
    let plugins = user_plugins(&[
        ("bank.toml", &bad),
        ("other.toml", "kind = 1"),
        ("ok.toml", BANK_HOOK),
    ]);
    let out = bin()
        .arg("check")
        .arg("--config")
        .arg(&plugins.config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            "bank.toml: template[0].require[1].pointer: \"data/amount\" is not a JSON pointer"
        ),
        "{stderr}"
    );
    assert!(
        stderr.contains("bank.toml: template[0].date_formats[0]: \"%Y\" has no day"),
        "{stderr}"
    );
    assert!(stderr.contains("other.toml: invalid TOML"), "{stderr}");
    assert!(!stderr.contains("ok.toml"), "{stderr}");
    // parse refuses to run on invalid rules rather than silently skipping a plugin.
    let out = bin()
        .arg("parse")
        .arg("--config")
        .arg(&plugins.config)
        .arg(fixture("old-you-paid.eml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn bad_configuration_names_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.toml");
    std::fs::write(&config, "[parsers]\ndirectory = \"x\"\n").unwrap();
    let out = bin()
        .arg("check")
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("directory"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = bin()
        .args(["check", "--config", "/nonexistent.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent.toml"));
    let out = bin()
        .env("LM_INGEST__PARSERS__DIR", "/nonexistent-dir")
        .arg("check")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent-dir"));
}

#[test]
fn the_documented_example_configuration_is_valid() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/example.toml");
    let out = bin()
        .arg("check")
        .arg("--config")
        .arg(example)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `check`'s first line for the built-in plugins, from the same list the binary embeds.
fn builtin_plugins_line() -> String {
    let mut ids: Vec<&str> = lm_ingest::parse::builtin::EMBEDDED
        .iter()
        .map(|(id, _)| *id)
        .collect();
    ids.sort_unstable();
    format!("ok: {} plugins: {}", ids.len(), ids.join(", "))
}

#[test]
fn a_reader_that_goes_away_ends_the_command_quietly() {
    // `inspect` prints the decoded text; 400 KB of it cannot fit a pipe's buffer, so writing
    // must meet the closed pipe however fast the child is.
    let body = "Jordan paid you $5.00 for lunch.\n".repeat(12_000);
    let mail = format!(
        "From: Venmo <venmo@venmo.com>\r\nTo: you@example.com\r\nSubject: Jordan paid you $5.00\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\r\n{body}"
    );
    let mut child = bin()
        .args(["inspect", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    child
        .stdin
        .take()
        .unwrap()
        .write_all(mail.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert_no_panic(&output);
    assert!(
        output.stderr.is_empty(),
        "{:?}",
        String::from_utf8_lossy(&output.stderr)
    );
}
