//! The fuzz targets (fuzz/src/lib.rs) on stable: each target's entry point runs over a seed corpus
//! built from the fixtures and parsers, plus every input under tests/data/fuzz/<target>/ — the
//! crashes fuzzing found (regressions) and hand-made seeds. Passing means none of them panics.

#[path = "../fuzz/src/lib.rs"]
mod targets;

use std::path::{Path, PathBuf};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn files_in(folder: &Path, suffix: &str) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(folder) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file() && p.to_string_lossy().ends_with(suffix))
        .collect();
    files.sort();
    files
}

fn fixture_files(suffix: &str) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for plugin in std::fs::read_dir(Path::new(ROOT).join("fixtures")).unwrap() {
        files.extend(files_in(&plugin.unwrap().path(), suffix));
    }
    files
}

/// Inputs committed for `target`: regressions from fuzzing and hand-made seeds.
fn committed(target: &str) -> Vec<Vec<u8>> {
    files_in(&Path::new(ROOT).join("tests/data/fuzz").join(target), "")
        .iter()
        .map(|p| std::fs::read(p).unwrap())
        .collect()
}

fn run(target: &str, entry: fn(&[u8]), inputs: Vec<Vec<u8>>) {
    assert!(!inputs.is_empty(), "no inputs for {target}");
    for (i, input) in inputs.iter().enumerate() {
        // Each input is replayed whole and cut short, as fuzzing's first mutations would.
        for cut in [input.len(), input.len() / 2, input.len() / 7] {
            let result = std::panic::catch_unwind(|| entry(&input[..cut]));
            assert!(
                result.is_ok(),
                "{target} input #{i} (first {cut} bytes) panicked"
            );
        }
    }
}

#[test]
fn email_target_over_fixtures_and_regressions() {
    let mut inputs: Vec<Vec<u8>> = fixture_files(".eml")
        .iter()
        .map(|p| std::fs::read(p).unwrap())
        .collect();
    inputs.extend(committed("email"));
    run("email", targets::email, inputs);
}

#[test]
fn webhook_target_over_fixtures_for_every_plugin() {
    let mut inputs = Vec::new();
    for file in fixture_files(".webhook.json") {
        let body = std::fs::read(file).unwrap();
        for which in 0..4u8 {
            for mode in 0..2u8 {
                let mut input = vec![which, mode];
                input.extend_from_slice(&body);
                inputs.push(input);
            }
        }
    }
    inputs.extend(committed("webhook"));
    run("webhook", targets::webhook, inputs);
}

#[test]
fn rules_target_over_parsers_and_regressions() {
    let mut inputs: Vec<Vec<u8>> = files_in(&Path::new(ROOT).join("parsers"), ".toml")
        .iter()
        .map(|p| std::fs::read(p).unwrap())
        .collect();
    inputs.extend(committed("rules"));
    run("rules", targets::rules, inputs);
}

#[test]
fn form_target_over_provider_posts_and_regressions() {
    let mut inputs = committed("form");
    for file in fixture_files(".eml") {
        let email = std::fs::read(file).unwrap();
        let mut input = b"multipart/form-data; boundary=FUZZ\n--FUZZ\r\nContent-Disposition: form-data; name=\"body-mime\"\r\n\r\n".to_vec();
        input.extend_from_slice(&email);
        input.extend_from_slice(
            b"\r\n--FUZZ\r\nContent-Disposition: form-data; name=\"email\"\r\n\r\n",
        );
        input.extend_from_slice(&email);
        input.extend_from_slice(b"\r\n--FUZZ--\r\n");
        inputs.push(input);
    }
    run("form", targets::form, inputs);
}
