//! Parse throughput and memory over a generated corpus of Venmo emails.
//!
//! Run with `cargo bench --bench parse`. It measures and reports; it asserts nothing about time.
//! The only thing it refuses is a corpus that does not parse as generated: that is a broken
//! generator, and timing it would be meaningless.
//!
//! - full parse: `Registry::parse_email` (MIME, body decoding, HTML rendering, forward detection,
//!   rules) over every email, emails/s and MB/s, median of several passes;
//! - floor: bare `mailparse::parse_mail` over the same bytes in the same run, the least any
//!   parse pays; the goal is a full parse at no less than a third of the floor's rate. The two
//!   alternate in blocks of 50 emails within each pass, so both see the same machine load;
//! - stages: `Email::parse` alone, `html::render` alone, and the rules alone
//!   (`parse_parsed_email` on parsed mail);
//! - latency: p50/p99 of the full parse, timing each email;
//! - memory: child processes stream N emails from files one at a time and report their peak RSS
//!   (`VmHWM`), for N = 5,000 and 20,000, beside children that only read the files.

#[path = "support/corpus.rs"]
mod corpus;

use std::collections::BTreeMap;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use lm_ingest::message::{html, Email};
use lm_ingest::parse::{Registry, Status};

use corpus::{Corpus, Expected};

/// Emails in the timed corpus.
const CORPUS: usize = 5_000;
/// Emails in the larger file corpus, for the memory comparison.
const LARGE: usize = 20_000;
/// Timed passes per measurement; the median is reported.
const PASSES: usize = 11;
/// Set in child processes: `parse`, `load-read` or `read`.
const CHILD_MODE: &str = "LM_INGEST_BENCH_CHILD";
const CHILD_DIR: &str = "LM_INGEST_BENCH_DIR";
const CHILD_COUNT: &str = "LM_INGEST_BENCH_COUNT";
/// For profilers (`perf record`, `valgrind --tool=callgrind`): `full`, `email`, `render`,
/// `rules` or `floor` runs only that measurement, for `LM_INGEST_BENCH_PASSES` passes (default 20),
/// over the first `LM_INGEST_BENCH_EMAILS` emails (default all).
const PROFILE: &str = "LM_INGEST_BENCH_PROFILE";

fn main() {
    if let Ok(mode) = std::env::var(CHILD_MODE) {
        child(&mode);
        return;
    }
    let started = Instant::now();
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let corpus = Corpus::load(&manifest.join("fixtures/venmo"));
    let registry = Registry::load(None).expect("built-in plugins load");

    println!("# lm-ingest parse benchmark");
    println!();
    println!("load average at start: {}", load_average());
    let t = Instant::now();
    // Profiling runs (below) may use fewer emails; a measurement always uses `CORPUS`.
    let count = match std::env::var(PROFILE) {
        Ok(_) => std::env::var("LM_INGEST_BENCH_EMAILS")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(CORPUS),
        Err(_) => CORPUS,
    };
    let emails: Vec<corpus::Generated> = (0..count as u64).map(|i| corpus.email(i)).collect();
    let generated_in = t.elapsed();
    let bytes: Vec<&[u8]> = emails.iter().map(|e| e.bytes.as_slice()).collect();
    let total_bytes: usize = bytes.iter().map(|b| b.len()).sum();
    describe_corpus(&corpus, &emails, total_bytes, generated_in);
    if !check_outcomes(&registry, &emails) {
        eprintln!("the generated corpus does not parse as expected: fix the generator");
        std::process::exit(1);
    }
    if let Ok(what) = std::env::var(PROFILE) {
        profile(&what, &registry, &bytes);
        return;
    }

    // Warm caches, lazily compiled regexes and the allocator before timing anything.
    full_pass(&registry, &bytes);
    floor_pass(&bytes);

    let mut full = Vec::new();
    let mut floor = Vec::new();
    let mut ratios = Vec::new();
    for _ in 0..PASSES {
        let (full_s, floor_s) = paired_pass(&registry, &bytes);
        full.push(full_s);
        floor.push(floor_s);
        ratios.push(floor_s / full_s);
    }
    let parsed: Vec<Email> = bytes.iter().map(|b| Email::parse(b).unwrap()).collect();
    let html_bodies = html_bodies(&bytes);
    let html_bytes: usize = html_bodies.iter().map(String::len).sum();
    let mut email_only = Vec::new();
    let mut render_only = Vec::new();
    let mut rules_only = Vec::new();
    for _ in 0..PASSES {
        email_only.push(email_pass(&bytes));
        render_only.push(render_pass(&html_bodies));
        rules_only.push(rules_pass(&registry, &parsed));
    }
    let latencies = latency_pass(&registry, &bytes);

    let mb = total_bytes as f64 / 1e6;
    let full_m = median(&full);
    let floor_m = median(&floor);
    println!("## Throughput ({CORPUS} emails, {mb:.1} MB, median of {PASSES} passes)");
    println!();
    println!("| measurement | items | items/s | MB/s | µs/item | spread (min-max items/s) |");
    println!("| --- | ---: | ---: | ---: | ---: | --- |");
    for (name, runs, items, input_bytes) in [
        (
            "**full parse**: `Registry::parse_email`",
            &full,
            CORPUS,
            total_bytes,
        ),
        (
            "**floor**: `mailparse::parse_mail`",
            &floor,
            CORPUS,
            total_bytes,
        ),
        (
            "stage: `Email::parse` (MIME, decoding, rendering, forwards)",
            &email_only,
            CORPUS,
            total_bytes,
        ),
        (
            "stage: `html::render` of the decoded HTML bodies",
            &render_only,
            html_bodies.len(),
            html_bytes,
        ),
        (
            "stage: rules (`parse_parsed_email` on parsed emails)",
            &rules_only,
            parsed.len(),
            total_bytes,
        ),
    ] {
        let n = items as f64;
        let m = median(runs);
        println!(
            "| {name} | {items} | {:.0} | {:.1} | {:.1} | {:.0}-{:.0} |",
            n / m,
            input_bytes as f64 / 1e6 / m,
            m * 1e6 / n,
            n / max_of(runs),
            n / min_of(runs),
        );
    }
    drop(parsed);
    drop(html_bodies);
    println!();
    let ratio = median(&ratios);
    println!(
        "full / floor (rate of the full parse over the rate of the floor, median of the {PASSES} \
         paired passes) = {ratio:.3} (paired passes ranged {:.3}-{:.3}); from the medians above: \
         {:.3}. Goal >= 0.333: {}",
        min_of(&ratios),
        max_of(&ratios),
        floor_m / full_m,
        if ratio >= 1.0 / 3.0 { "met" } else { "NOT met" }
    );
    println!();
    println!("## Full-parse latency per email ({CORPUS} emails, one pass)");
    println!();
    println!("| p50 | p90 | p99 | max |");
    println!("| ---: | ---: | ---: | ---: |");
    println!(
        "| {:.1} µs | {:.1} µs | {:.1} µs | {:.1} µs |",
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.90),
        percentile(&latencies, 0.99),
        percentile(&latencies, 1.0),
    );
    println!();
    drop(emails);

    memory(&corpus);
    println!();
    println!(
        "total bench time: {:.1} s; load average at end: {}",
        started.elapsed().as_secs_f64(),
        load_average()
    );
}

fn profile(what: &str, registry: &Registry, bytes: &[&[u8]]) {
    let passes: usize = std::env::var("LM_INGEST_BENCH_PASSES")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(20);
    let parsed: Vec<Email> = if what == "rules" {
        bytes.iter().map(|b| Email::parse(b).unwrap()).collect()
    } else {
        Vec::new()
    };
    let bodies = if what == "render" {
        html_bodies(bytes)
    } else {
        Vec::new()
    };
    let mut runs = Vec::new();
    for _ in 0..passes {
        runs.push(match what {
            "full" => full_pass(registry, bytes),
            "email" => email_pass(bytes),
            "rules" => rules_pass(registry, &parsed),
            "render" => render_pass(&bodies),
            "floor" => floor_pass(bytes),
            other => panic!("{PROFILE}={other}: expected full, email, render, rules or floor"),
        });
    }
    println!(
        "{what}: {:.1} µs/email (median of {passes} passes)",
        median(&runs) * 1e6 / bytes.len() as f64
    );
}

fn describe_corpus(
    corpus: &Corpus,
    emails: &[corpus::Generated],
    total_bytes: usize,
    took: Duration,
) {
    let mut by_shape: BTreeMap<&str, usize> = BTreeMap::new();
    for e in emails {
        *by_shape.entry(e.fixture).or_default() += 1;
    }
    let mut hashes: Vec<u64> = emails.iter().map(|e| fnv1a(&e.bytes)).collect();
    hashes.sort_unstable();
    hashes.dedup();
    let sizes: Vec<usize> = emails.iter().map(|e| e.bytes.len()).collect();
    println!(
        "corpus: {} emails from {} fixture shapes, {} distinct, {:.0} bytes mean ({}-{}), generated in {:.2} s",
        emails.len(),
        corpus.shapes(),
        hashes.len(),
        total_bytes as f64 / emails.len() as f64,
        sizes.iter().min().unwrap(),
        sizes.iter().max().unwrap(),
        took.as_secs_f64(),
    );
    let shapes: Vec<String> = by_shape.iter().map(|(k, v)| format!("{k} {v}")).collect();
    println!("shapes: {}", shapes.join(", "));
}

/// Counts outcome statuses and checks every transaction against what was generated.
fn check_outcomes(registry: &Registry, emails: &[corpus::Generated]) -> bool {
    let mut statuses: BTreeMap<String, usize> = BTreeMap::new();
    let mut mismatches = 0;
    for e in emails {
        let outcome = registry.parse_email(&e.bytes);
        *statuses
            .entry(format!("{:?}", outcome.status).to_lowercase())
            .or_default() += 1;
        let got = outcome.transactions.first().map(|t| Expected {
            date: t.date.to_string(),
            amount: t.amount.as_str().to_owned(),
            payee: t.payee.clone().unwrap_or_default(),
            notes: t.notes.clone(),
            external_id: t.external_id.clone(),
        });
        let ok = outcome.status == Status::Parsed
            && outcome.transactions.len() == 1
            && got.as_ref() == Some(&e.expected);
        if !ok {
            mismatches += 1;
            if mismatches <= 5 {
                eprintln!(
                    "mismatch ({}): {:?} {:?}\n  expected {:?}\n  got      {:?}",
                    e.fixture, outcome.status, outcome.reason, e.expected, got
                );
            }
        }
    }
    let line: Vec<String> = statuses.iter().map(|(k, v)| format!("{k} {v}")).collect();
    println!(
        "outcomes: {}; transactions matching the generated values: {}/{}",
        line.join(", "),
        emails.len() - mismatches,
        emails.len()
    );
    println!();
    mismatches == 0
}

/// Emails per block of a paired pass: small, so that both halves of a pair see the same load
/// from whatever else shares the machine.
const BLOCK: usize = 50;

/// The full parse and the floor over the same emails, alternating in blocks (and alternating
/// which goes first) so both see the same machine conditions: seconds for each.
fn paired_pass(registry: &Registry, emails: &[&[u8]]) -> (f64, f64) {
    let (mut full, mut floor) = (0.0, 0.0);
    for (k, block) in emails.chunks(BLOCK).enumerate() {
        if k % 2 == 0 {
            full += full_pass(registry, block);
            floor += floor_pass(block);
        } else {
            floor += floor_pass(block);
            full += full_pass(registry, block);
        }
    }
    (full, floor)
}

fn full_pass(registry: &Registry, emails: &[&[u8]]) -> f64 {
    let t = Instant::now();
    for raw in emails {
        black_box(registry.parse_email(black_box(raw)));
    }
    t.elapsed().as_secs_f64()
}

fn floor_pass(emails: &[&[u8]]) -> f64 {
    let t = Instant::now();
    for raw in emails {
        let _ = black_box(mailparse::parse_mail(black_box(raw)));
    }
    t.elapsed().as_secs_f64()
}

fn email_pass(emails: &[&[u8]]) -> f64 {
    let t = Instant::now();
    for raw in emails {
        let _ = black_box(Email::parse(black_box(raw)));
    }
    t.elapsed().as_secs_f64()
}

/// The decoded HTML body of each email (the first `text/html` part), as `Email::parse` renders it.
fn html_bodies(emails: &[&[u8]]) -> Vec<String> {
    emails
        .iter()
        .filter_map(|raw| {
            let mail = mailparse::parse_mail(raw).ok()?;
            let html = mail.parts().find(|p| p.ctype.mimetype == "text/html")?;
            html.get_body().ok()
        })
        .collect()
}

fn render_pass(bodies: &[String]) -> f64 {
    let t = Instant::now();
    for body in bodies {
        black_box(html::render(black_box(body)));
    }
    t.elapsed().as_secs_f64()
}

fn rules_pass(registry: &Registry, emails: &[Email]) -> f64 {
    let t = Instant::now();
    for email in emails {
        black_box(registry.parse_parsed_email(black_box(email)));
    }
    t.elapsed().as_secs_f64()
}

/// Microseconds per email, sorted.
fn latency_pass(registry: &Registry, emails: &[&[u8]]) -> Vec<f64> {
    let mut out: Vec<f64> = emails
        .iter()
        .map(|raw| {
            let t = Instant::now();
            black_box(registry.parse_email(black_box(raw)));
            t.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    out.sort_by(f64::total_cmp);
    out
}

fn median(runs: &[f64]) -> f64 {
    let mut v = runs.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn min_of(runs: &[f64]) -> f64 {
    runs.iter().copied().fold(f64::INFINITY, f64::min)
}

fn max_of(runs: &[f64]) -> f64 {
    runs.iter().copied().fold(0.0, f64::max)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

/// The 1, 5 and 15 minute load averages: other work on the machine skews every timing.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".to_owned())
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

// ---- memory -----------------------------------------------------------------------------------

fn corpus_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    target.join("bench-corpus")
}

fn email_path(dir: &Path, i: usize) -> PathBuf {
    dir.join(format!("{:03}", i / 1000))
        .join(format!("{i:06}.eml"))
}

fn memory(corpus: &Corpus) {
    let dir = corpus_dir();
    let _ = std::fs::remove_dir_all(&dir);
    let t = Instant::now();
    let mut bytes = 0;
    for i in 0..LARGE {
        let path = email_path(&dir, i);
        if i % 1000 == 0 {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        }
        let email = corpus.email(i as u64);
        bytes += email.bytes.len();
        std::fs::write(&path, &email.bytes).unwrap();
    }
    println!("## Peak memory (child processes streaming emails from files, one at a time)",);
    println!();
    println!(
        "{LARGE} emails ({:.1} MB) written to {} in {:.1} s; the first {CORPUS} are the timed corpus.",
        bytes as f64 / 1e6,
        dir.display(),
        t.elapsed().as_secs_f64()
    );
    println!();
    println!("| child | emails | VmHWM (peak RSS) | time | outcomes |");
    println!("| --- | ---: | ---: | ---: | --- |");
    for (mode, what, n) in [
        ("read", "read only (baseline)", CORPUS),
        ("read", "read only (baseline)", LARGE),
        ("load-read", "load plugins + read", LARGE),
        ("parse", "load plugins + read + parse", CORPUS),
        ("parse", "load plugins + read + parse", LARGE),
    ] {
        let out = Command::new(std::env::current_exe().unwrap())
            .env(CHILD_MODE, mode)
            .env(CHILD_DIR, &dir)
            .env(CHILD_COUNT, n.to_string())
            .output()
            .expect("child runs");
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            eprintln!(
                "child {mode} {n} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            continue;
        }
        let field = |key: &str| {
            stdout
                .split_whitespace()
                .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
                .unwrap_or("?")
                .to_owned()
        };
        println!(
            "| {what} | {n} | {} kB | {} s | {} |",
            field("hwm_kb"),
            field("secs"),
            field("outcomes").replace(',', ", "),
        );
    }
    if std::env::var_os("LM_INGEST_BENCH_KEEP_CORPUS").is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// Runs in a child process: streams `LM_INGEST_BENCH_COUNT` files one at a time and prints the
/// peak resident set size.
fn child(mode: &str) {
    let dir = PathBuf::from(std::env::var_os(CHILD_DIR).expect("corpus dir"));
    let n: usize = std::env::var(CHILD_COUNT).unwrap().parse().unwrap();
    let registry = (mode != "read").then(|| Registry::load(None).unwrap());
    let mut counts = [0usize; 4];
    let mut checksum = 0u64;
    let t = Instant::now();
    for i in 0..n {
        let raw = std::fs::read(email_path(&dir, i)).unwrap();
        checksum = checksum.wrapping_add(raw.len() as u64);
        if mode == "parse" {
            let outcome = registry.as_ref().unwrap().parse_email(&raw);
            counts[outcome.status as usize] += 1;
        }
    }
    let secs = t.elapsed().as_secs_f64();
    black_box(checksum);
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kb = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next())
            .unwrap_or("?")
            .to_owned()
    };
    let outcomes = if mode == "parse" {
        let names = ["parsed", "ignored", "unmatched", "error"];
        names
            .iter()
            .zip(counts)
            .filter(|(_, c)| *c > 0)
            .map(|(name, c)| format!("{name}:{c}"))
            .collect::<Vec<_>>()
            .join(",")
    } else {
        "-".to_owned()
    };
    println!(
        "hwm_kb={} rss_kb={} secs={secs:.2} outcomes={outcomes}",
        kb("VmHWM:"),
        kb("VmRSS:")
    );
}
