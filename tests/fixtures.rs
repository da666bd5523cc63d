//! Golden fixtures: every input under `fixtures/<plugin>/` is parsed with the built-in plugins and
//! compared with the expected outcome beside it.
//!
//! Inputs are `<case>.eml` (an email) or `<case>.webhook.json` (a webhook body for the plugin the
//! folder is named after); the expected outcome is `<case>.expected.json`. All mismatches are
//! reported together, each as a line diff of the pretty-printed JSON.

use std::path::{Path, PathBuf};

use lm_ingest::parse::Registry;
use serde_json::Value;

fn fixture_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

struct Case {
    input: PathBuf,
    expected: PathBuf,
    webhook_plugin: Option<String>,
}

fn cases() -> Vec<Case> {
    let mut cases = Vec::new();
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(fixture_root())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    for dir in dirs {
        let plugin = dir.file_name().unwrap().to_string_lossy().into_owned();
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        for file in files {
            let name = file.file_name().unwrap().to_string_lossy().into_owned();
            let (stem, webhook) = if let Some(stem) = name.strip_suffix(".eml") {
                (stem, false)
            } else if let Some(stem) = name.strip_suffix(".webhook.json") {
                (stem, true)
            } else {
                continue;
            };
            cases.push(Case {
                expected: dir.join(format!("{stem}.expected.json")),
                input: file.clone(),
                webhook_plugin: webhook.then(|| plugin.clone()),
            });
        }
    }
    cases
}

fn pretty(value: &Value) -> String {
    serde_json::to_string_pretty(value).unwrap() + "\n"
}

#[test]
fn every_fixture_parses_to_its_expected_outcome() {
    let registry = Registry::load(None).expect("built-in plugins load");
    let cases = cases();
    assert!(
        !cases.is_empty(),
        "no fixtures found under {}",
        fixture_root().display()
    );
    let mut failures = Vec::new();
    for case in &cases {
        let raw = std::fs::read(&case.input).unwrap();
        let outcome = match &case.webhook_plugin {
            Some(plugin) => registry.parse_webhook(plugin, Vec::new(), &raw),
            None => registry.parse_email(&raw),
        };
        let actual = serde_json::to_value(&outcome).unwrap();
        let expected: Value = match std::fs::read_to_string(&case.expected) {
            Ok(text) => match serde_json::from_str(&text) {
                Ok(v) => v,
                Err(e) => {
                    failures.push(format!("{}: invalid JSON: {e}", case.expected.display()));
                    continue;
                }
            },
            Err(e) => {
                failures.push(format!(
                    "{}: missing expected output ({e}); actual:\n{}",
                    case.expected.display(),
                    pretty(&actual)
                ));
                continue;
            }
        };
        if actual != expected {
            let diff = similar::TextDiff::from_lines(&pretty(&expected), &pretty(&actual))
                .unified_diff()
                .header("expected", "actual")
                .to_string();
            failures.push(format!("{}:\n{diff}", case.input.display()));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} fixtures failed:\n\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    eprintln!("{} fixtures passed", cases.len());
}

#[test]
fn every_expected_file_has_an_input() {
    let inputs: Vec<PathBuf> = cases().into_iter().map(|c| c.expected).collect();
    for dir in std::fs::read_dir(fixture_root()).unwrap() {
        let dir = dir.unwrap().path();
        if !dir.is_dir() {
            continue;
        }
        for file in std::fs::read_dir(&dir).unwrap() {
            let file = file.unwrap().path();
            if file.to_string_lossy().ends_with(".expected.json") {
                assert!(
                    inputs.contains(&file),
                    "{} has no input beside it",
                    file.display()
                );
            }
        }
    }
}
