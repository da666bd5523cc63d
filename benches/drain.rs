//! Delivery benchmark of the outbox: `cargo bench --bench drain`.
//!
//! It drains a backlog of parsed transactions into the strict fake Lunch Money of the tests
//! (`tests/support/fake_lunchmoney.rs`, on 127.0.0.1:0) with the API's rate limit enforced by the
//! fake (100 requests per rolling minute, every endpoint counted, as the real API), through the
//! real service: `Application::build` on 127.0.0.1:0 with its own outbox worker, in this process.
//! It measures and reports; it asserts nothing about time. In one run:
//!
//! - fill: 100,000 pending transactions (1,000 messages x 100, plugin `venmo`, status queued,
//!   distinct `external_id`s) written through `Store::ingest`, timed on its own;
//! - drain: from starting the service until the worker recorded the last batch delivered (and
//!   `GET /admin/outbox`, the store's `outbox_summary`, says nothing is pending): total time,
//!   insert requests and transactions per request (from the bodies the fake received), 429s the
//!   fake sent, every other refusal, each transaction in the fake exactly once, and the lower
//!   bound the rate limit implies, to judge the time against;
//! - where that time went: a byte-for-byte TCP relay between the service and the fake notes when
//!   each side sent, splitting the drain into the fake's handling, the service's own work between
//!   requests, and waits for the rate limit; plus the worker's own log events (captured
//!   in-process with a `tracing` layer, no change to the code under test);
//! - idle latency: single webhooks (`POST /hooks/benchbank`, mapped to the same account) timed
//!   from the service's acknowledgement until the fake has stored the transaction, right after
//!   the drain and then once the drain's requests have left the rate-limit window, each with the
//!   number of requests in the window at the time;
//! - CPU by thread (the fake's threads apart from the service's), CPU of other processes on the
//!   machine, and peak RSS (`VmHWM`) of this process (the fake's stored data included).
//!
//! All traffic goes to 127.0.0.1. Every loop is bounded in time and count. Knobs (environment):
//! `LM_INGEST_DRAIN_TRANSACTIONS` (default 100000, a multiple of 100),
//! `LM_INGEST_DRAIN_IDLE_SAMPLES` (default 10; 0 skips the minute-long wait for the window), and
//! `LM_INGEST_DRAIN_ACCOUNT` (default `Venmo`; `none` maps no account, so the fake skips its
//! per-transaction scan of everything stored for `external_id` dedupe: a control run that shows
//! the worker against a fast API).

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::net::TcpListener;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{Days, NaiveDate, Utc};
use lm_ingest::money::{Amount, Money};
use lm_ingest::server::Application;
use lm_ingest::settings::{NameOrId, Secret, Settings, SourceMapping};
use lm_ingest::store::{MessageStatus, NewMessage, Store};
use lm_ingest::transaction::Transaction;
use serde_json::{json, Value};
use tracing_subscriber::layer::{Context, SubscriberExt as _};

// The tests' fake: the bench uses only part of it.
#[allow(dead_code)]
#[path = "../tests/support/fake_lunchmoney.rs"]
mod fake_lunchmoney;
#[path = "support/machine.rs"]
mod machine;

use fake_lunchmoney::{seed, FakeHandle, FakeLunchMoney, Outcome};

const INGEST_TOKEN: &str = "bench-ingest-token-0123456789abcdef";
const ADMIN_TOKEN: &str = "bench-admin-token-0123456789abcdef";
/// The API's limit, enforced by the fake and configured in the service.
const PER_MINUTE: u32 = 100;
const WINDOW: Duration = Duration::from_secs(60);
const BATCH: usize = 500;
const PER_MESSAGE: usize = 100;
/// `Store::ingest` calls in flight while filling (group commit shares fsyncs between them).
const FILL_IN_FLIGHT: usize = 8;
/// Bounds.
const DRAIN_LIMIT: Duration = Duration::from_secs(270);
/// `GET /admin/outbox` costs the service ~10 ms of CPU with 100,000 rows: poll gently; the end
/// of the drain is taken from the worker's own log, not from the poll.
const POLL: Duration = Duration::from_secs(1);
const SAMPLE_LIMIT: Duration = Duration::from_secs(75);
const AFTER_DRAIN_SAMPLES: usize = 2;
const STOP_LIMIT: Duration = Duration::from_secs(40);
const QUIET_WAIT: Duration = Duration::from_secs(20);
const QUIET_FOR: Duration = Duration::from_secs(2);
const QUIET_BUSY: f64 = 0.15;
/// Pauses between idle samples: uneven, so they do not line up with the worker's 1 s idle poll.
const IDLE_GAPS_MS: [u64; 10] = [2000, 2430, 2870, 2190, 2650, 3110, 2070, 2540, 2980, 2310];
/// A webhook plugin for the latency samples (the rule file of `tests/support/mod.rs`, in usd).
const HOOK_PLUGIN: &str = "benchbank";
const HOOK_RULES: &str = r#"
kind = "webhook"
currency = "usd"
tags = ["venmo"]
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
optional = [{ pointer = "/data/payee", capture = "payee" }]
"#;

fn main() {
    let transactions = env_usize(
        "LM_INGEST_DRAIN_TRANSACTIONS",
        100_000,
        PER_MESSAGE,
        200_000,
    );
    let transactions = transactions / PER_MESSAGE * PER_MESSAGE;
    let idle_samples = env_usize("LM_INGEST_DRAIN_IDLE_SAMPLES", 10, 0, IDLE_GAPS_MS.len());
    let account = std::env::var("LM_INGEST_DRAIN_ACCOUNT").map_or(Some("Venmo".to_owned()), |a| {
        (!a.is_empty() && a != "none").then_some(a)
    });
    let recorder = Recorder::default();
    tracing::subscriber::set_global_default(tracing_subscriber::registry().with(recorder.clone()))
        .expect("tracing subscriber");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(run(recorder, transactions, idle_samples, account));
}

async fn run(recorder: Recorder, n: usize, idle_samples: usize, account: Option<String>) {
    let started = Instant::now();
    let ticks = machine::clock_ticks_per_sec();
    println!("# lm-ingest delivery benchmark (outbox -> fake Lunch Money)");
    println!();
    machine_facts();
    let work = tempfile::Builder::new()
        .prefix("lm-ingest-drain-bench")
        .tempdir()
        .expect("temporary folder");
    let parsers = work.path().join("parsers");
    std::fs::create_dir_all(&parsers).expect("parsers folder");
    std::fs::write(parsers.join(format!("{HOOK_PLUGIN}.toml")), HOOK_RULES).expect("rule file");
    let store_path = work.path().join("data/lm-ingest.db");
    println!("store: {}", store_path.display());

    // ---- Fill -------------------------------------------------------------------------------
    let machine0 = machine_busy();
    let self0 = self_ticks();
    let fill = fill_store(&store_path, n).await;
    let fill_other = other_cpu(machine0, machine_busy(), self0, self_ticks());
    println!(
        "fill: {} transactions in {} messages via Store::ingest ({FILL_IN_FLIGHT} in flight): {:.2} s ({:.0} transactions/s), {} commits; store {:.1} MB; other processes used {:.0}% of a core meanwhile",
        fill.pending,
        n / PER_MESSAGE,
        fill.elapsed.as_secs_f64(),
        fill.pending as f64 / fill.elapsed.as_secs_f64(),
        fill.commits,
        fill.bytes as f64 / 1e6,
        fill_other,
    );
    let hwm_after_fill = proc_status_kb("VmHWM:");

    // ---- Drain ------------------------------------------------------------------------------
    let fake = FakeLunchMoney::seeded().rate_limit(PER_MINUTE).start();
    let proxy = Proxy::start(fake.addr()).await;
    let settings = service_settings(&store_path, &parsers, &fake, &proxy, account.as_deref());
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("http client");
    let listener = TcpListener::bind("127.0.0.1:0").expect("listener");
    wait_quiet().await;
    let cpu0 = thread_cpu(ticks);
    let process0 = self_ticks();
    let machine0 = machine_busy();
    let t0 = Instant::now();
    let app = Application::build(&settings, listener).expect("service starts");
    let base = format!("http://127.0.0.1:{}", app.port());
    let handle = app.handle();
    let join = tokio::spawn(app.run_until_stopped());
    println!(
        "service: Application on {base}; fake Lunch Money on {} behind a timing proxy on {}; rate limit {PER_MINUTE}/rolling minute enforced by the fake (every endpoint counts); requests_per_minute = {PER_MINUTE}, batch_size = {BATCH}; sources venmo and {HOOK_PLUGIN} mapped to account {}",
        fake.base_url(),
        proxy.url(),
        account.as_deref().map_or("none (cash: the fake skips its external_id scan)".to_owned(), |a| format!("{a:?}")),
    );
    println!();

    let mut last_report = Duration::ZERO;
    let mut drained_seen = None;
    let mut last_counts = Value::Null;
    while t0.elapsed() < DRAIN_LIMIT {
        let report = admin_outbox(&client, &base).await;
        let counts = report.get("counts").cloned().unwrap_or(Value::Null);
        let pending = counts.get("pending").and_then(Value::as_u64);
        if t0.elapsed() >= last_report + Duration::from_secs(10) {
            last_report = t0.elapsed();
            eprintln!(
                "  t={:>5.1}s pending={} delivered={} inserts={} refused={}",
                t0.elapsed().as_secs_f64(),
                pending.map_or("?".into(), |p| p.to_string()),
                counts.get("delivered").unwrap_or(&Value::Null),
                fake.request_count("POST /v2/transactions"),
                fake.rejections().len()
            );
        }
        last_counts = counts;
        if pending == Some(0) {
            drained_seen = Some(t0.elapsed());
            break;
        }
        tokio::time::sleep(POLL).await;
    }
    let cpu1 = thread_cpu(ticks);
    let process1 = self_ticks();
    let drain_other = other_cpu(machine0, machine_busy(), process0, process1);
    let hwm_after_drain = proc_status_kb("VmHWM:");
    let events = recorder.take();
    let delivered_events: Vec<(Duration, u64)> = events
        .iter()
        .filter(|e| e.message == "outbox: delivered")
        .map(|e| {
            (
                e.at.saturating_duration_since(t0),
                e.transactions.unwrap_or(0),
            )
        })
        .collect();
    let drain_end = delivered_events.last().map(|(t, _)| *t);
    let drain_exchanges = exchanges(&proxy.chunks());
    let endpoints: Vec<String> = {
        let mut log = fake.requests();
        log.sort_by_key(|r| r.seq);
        log.into_iter().map(|r| r.endpoint).collect()
    };

    // What the fake saw during the drain.
    let inserts = fake.requests_to("POST /v2/transactions");
    let mut sizes_ok = Vec::new();
    let mut sizes_all = Vec::new();
    let mut statuses: BTreeMap<String, usize> = BTreeMap::new();
    for r in &inserts {
        let size = r
            .json()
            .and_then(|b| {
                b.get("transactions")
                    .and_then(Value::as_array)
                    .map(Vec::len)
            })
            .unwrap_or(0);
        sizes_all.push(size);
        let status = match &r.outcome {
            Outcome::Status(s) => s.to_string(),
            Outcome::Cut => "cut".into(),
            Outcome::Pending => "pending".into(),
        };
        if status == "201" {
            sizes_ok.push(size);
        }
        *statuses.entry(status).or_default() += 1;
    }
    let endpoint_counts = fake.request_counts();
    let rejections = fake.rejections();
    let mut refused: BTreeMap<(u16, String, String), usize> = BTreeMap::new();
    for r in &rejections {
        *refused
            .entry((r.status, r.endpoint.clone(), r.reason.clone()))
            .or_default() += 1;
    }
    let too_many = rejections.iter().filter(|r| r.status == 429).count();
    let stored = fake.transactions();
    let distinct: HashSet<&str> = stored
        .iter()
        .filter_map(|t| t.external_id.as_deref())
        .collect();
    let expected_present = (0..n)
        .filter(|i| distinct.contains(external_id(*i).as_str()))
        .count();
    let in_venmo = stored
        .iter()
        .filter(|t| t.manual_account_id == Some(seed::VENMO))
        .count();
    let stored_total = stored.len();
    let stored_distinct = distinct.len();
    drop(distinct);
    drop(stored);

    // ---- Idle latency -----------------------------------------------------------------------
    let mut after_drain = Vec::new();
    let phase = Instant::now();
    for k in 0..AFTER_DRAIN_SAMPLES {
        if phase.elapsed() > Duration::from_secs(60) {
            break;
        }
        let sample = one_sample(&client, &base, &fake, &format!("after-drain-{k}")).await;
        eprintln!("  just after the drain: {sample:?}");
        after_drain.push(sample);
    }
    // The window is clear once the last insert of the drain is a minute old (for the fake, which
    // admitted it a little after the worker counted it, too).
    let clear_at = drain_end.unwrap_or_else(|| t0.elapsed()) + WINDOW + Duration::from_secs(2);
    if idle_samples > 0 && t0.elapsed() < clear_at {
        let wait = clear_at - t0.elapsed();
        eprintln!(
            "  waiting {:.1} s for the rate-limit window to clear",
            wait.as_secs_f64()
        );
        tokio::time::sleep(wait.min(WINDOW + Duration::from_secs(5))).await;
    }
    wait_quiet().await;
    let idle_machine0 = machine_busy();
    let idle_self0 = self_ticks();
    let inserts_before_idle = fake.request_count("POST /v2/transactions");
    let refused_before_idle = fake.rejections().len();
    let mut idle = Vec::new();
    for (k, gap) in IDLE_GAPS_MS.iter().take(idle_samples).enumerate() {
        tokio::time::sleep(Duration::from_millis(*gap)).await;
        let sample = one_sample(&client, &base, &fake, &format!("idle-{k}")).await;
        eprintln!("  idle: {sample:?}");
        idle.push(sample);
    }
    let idle_inserts = fake.request_count("POST /v2/transactions") - inserts_before_idle;
    let idle_refused = fake.rejections().len() - refused_before_idle;
    let idle_other = other_cpu(idle_machine0, machine_busy(), idle_self0, self_ticks());
    // The last sample is in the fake; give the worker a moment to record it delivered.
    let mut final_counts = Value::Null;
    for _ in 0..20 {
        final_counts = admin_outbox(&client, &base)
            .await
            .get("counts")
            .cloned()
            .unwrap_or(Value::Null);
        if final_counts.get("pending").and_then(Value::as_u64) == Some(0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    handle.stop(true).await;
    let stopped = tokio::time::timeout(STOP_LIMIT, join).await;
    proxy.stop();
    let hwm_end = proc_status_kb("VmHWM:");

    // ---- Report -----------------------------------------------------------------------------
    println!("## Drain: {n} pending transactions, rate limit enforced");
    println!();
    let requests_min = n.div_ceil(BATCH);
    let windows = requests_min.div_ceil(PER_MINUTE as usize);
    let lookups: usize = endpoint_counts
        .iter()
        .filter(|(e, _)| !e.starts_with("POST /v2/transactions"))
        .map(|(_, c)| *c)
        .sum();
    let all_min = requests_min + lookups;
    println!(
        "baseline (the limit's lower bound): ceil({n}/{BATCH}) = {requests_min} insert requests at {PER_MINUTE} per rolling minute -> {} s (the last of them cannot start before {} x 60 s); counting the {lookups} other requests the worker made (look-ups; the API counts every endpoint), {all_min} requests -> {} s",
        (windows - 1) * 60,
        windows - 1,
        (all_min.div_ceil(PER_MINUTE as usize) - 1) * 60,
    );
    println!();
    let mean = |v: &[usize]| v.iter().sum::<usize>() as f64 / v.len().max(1) as f64;
    let stat = |v: &[usize]| {
        format!(
            "{:.1} / {} / {}",
            mean(v),
            v.iter().min().unwrap_or(&0),
            v.iter().max().unwrap_or(&0)
        )
    };
    println!("| measure | value |");
    println!("| --- | --- |");
    println!(
        "| total time, service start -> last batch recorded delivered | {} |",
        drain_end.map_or("did not finish".into(), secs)
    );
    println!(
        "| seen drained by `GET /admin/outbox` (polled every {} ms) | {} |",
        POLL.as_millis(),
        drained_seen.map_or("not within the bound".into(), secs)
    );
    println!(
        "| outbox counts at the end of the drain | {} |",
        compact(&last_counts)
    );
    println!(
        "| insert requests (`POST /v2/transactions`) | {} ({}) |",
        inserts.len(),
        statuses
            .iter()
            .map(|(s, c)| format!("{c} x {s}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "| transactions per accepted insert: mean / min / max | {} |",
        stat(&sizes_ok)
    );
    println!(
        "| transactions per insert incl. refused: mean / min / max | {} |",
        stat(&sizes_all)
    );
    println!(
        "| all requests to the fake, by endpoint | {} |",
        endpoint_counts
            .iter()
            .map(|(e, c)| format!("{e}: {c}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!("| 429s the fake sent | {too_many} |");
    println!("| other refusals | {} |", rejections.len() - too_many);
    println!(
        "| in the fake: stored / distinct external_id / of the {n} expected / in account Venmo | {stored_total} / {stored_distinct} / {expected_present} / {in_venmo} |"
    );
    println!(
        "| CPU, whole process during the drain | {:.1} s (other processes on the machine: {:.0}% of a core) |",
        (process1 - process0) as f64 / ticks,
        drain_other
    );
    let groups: BTreeMap<&str, f64> = cpu1
        .iter()
        .map(|(g, t)| (g.as_str(), t - cpu0.get(g).copied().unwrap_or(0.0)))
        .collect();
    println!(
        "| CPU by thread group (live threads) | {} |",
        groups
            .iter()
            .map(|(g, t)| format!("{g} {t:.1} s"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "| VmHWM after fill / after drain / at the end | {:.0} / {:.0} / {:.0} MB |",
        hwm_after_fill as f64 / 1024.0,
        hwm_after_drain as f64 / 1024.0,
        hwm_end as f64 / 1024.0
    );
    println!();
    for ((status, endpoint, reason), count) in &refused {
        println!("refused: {count} x {status} {endpoint}: {reason}");
    }
    println!();
    decompose(t0, drain_end, &drain_exchanges, &endpoints);
    timeline(&events, t0, &delivered_events);

    println!("## Idle latency: one webhook, acknowledged -> stored in the fake");
    println!();
    println!("| when | samples | p50 | max | all (ack -> stored) | request -> ack p50 | ack -> insert arrives p50 |");
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    let all_exchanges = exchanges(&proxy.chunks());
    latency_row("just after the drain", &after_drain, &all_exchanges);
    latency_row("idle, a minute after the drain", &idle, &all_exchanges);
    println!();
    println!(
        "idle phase: {idle_inserts} insert requests for {} transactions, {idle_refused} refusals, other processes used {idle_other:.0}% of a core; outbox counts at the end: {}",
        idle.len(),
        compact(&final_counts)
    );
    println!(
        "service stop: {}",
        match stopped {
            Ok(Ok(Ok(()))) => "graceful".to_string(),
            Ok(other) => format!("{other:?}"),
            Err(_) => format!("not within {STOP_LIMIT:?}"),
        }
    );
    println!("bench wall time: {}", secs(started.elapsed()));
}

// ---------------------------------------------------------------------------------------------
// Fill
// ---------------------------------------------------------------------------------------------

struct Fill {
    elapsed: Duration,
    pending: u64,
    commits: u64,
    bytes: u64,
}

fn external_id(i: usize) -> String {
    format!("venmo:bench{i:06}")
}

/// Built from JSON, as the store decodes it, so optional fields added later default.
fn transaction(i: usize) -> Transaction {
    let day = NaiveDate::from_ymd_opt(2024, 1, 1).expect("date") + Days::new((i % 365) as u64);
    let cents = -(100 + (i % 9_900) as i128);
    let mut t: Transaction = serde_json::from_value(json!({
        "date": day,
        "amount": Money::new(Amount::from_minor(cents, 2), "usd"),
        "currency": "usd",
        "payee": format!("Payee {}", i % 997),
        "notes": format!("Bench payment {i}"),
        "external_id": external_id(i),
        "tags": ["venmo"],
    }))
    .expect("transaction");
    t.plugin = "venmo".into();
    t
}

fn message(m: usize) -> NewMessage {
    NewMessage {
        received_at: Utc::now(),
        route: "email".into(),
        source: None,
        dedupe_key: format!("msgid:<bench-{m}@drain.bench>"),
        content_type: "message/rfc822".into(),
        raw: format!("Message-ID: <bench-{m}@drain.bench>\r\n\r\nbench message {m}\r\n")
            .into_bytes(),
        meta: json!({}),
        status: MessageStatus::Queued,
        plugin: Some("venmo".into()),
        reason: None,
        transactions: (m * PER_MESSAGE..(m + 1) * PER_MESSAGE)
            .map(transaction)
            .collect(),
        drift: None,
    }
}

async fn fill_store(path: &Path, n: usize) -> Fill {
    let store = Arc::new(Store::open(path).expect("store opens"));
    let messages = n / PER_MESSAGE;
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    let mut queued = 0;
    for m in 0..messages {
        while tasks.len() >= FILL_IN_FLIGHT {
            let receipt = tasks.join_next().await.expect("task").expect("join");
            queued += receipt;
        }
        let store = Arc::clone(&store);
        let msg = message(m);
        tasks.spawn(async move {
            let receipt = store.ingest(msg).await.expect("ingest");
            receipt.new_transactions
        });
    }
    while let Some(done) = tasks.join_next().await {
        queued += done.expect("join");
    }
    let elapsed = start.elapsed();
    assert_eq!(queued, n, "every transaction queued once");
    let summary = store.outbox_summary(Utc::now()).expect("summary");
    let commits = store.stats().commits;
    let store = Arc::try_unwrap(store).expect("no other owner");
    tokio::task::spawn_blocking(move || store.close())
        .await
        .expect("join")
        .expect("store closes");
    let bytes = ["", "-wal", "-shm"]
        .iter()
        .map(|s| {
            let mut name = path.as_os_str().to_owned();
            name.push(s);
            std::fs::metadata(name).map_or(0, |m| m.len())
        })
        .sum();
    Fill {
        elapsed,
        pending: summary.pending,
        commits,
        bytes,
    }
}

// ---------------------------------------------------------------------------------------------
// Service
// ---------------------------------------------------------------------------------------------

fn service_settings(
    store: &Path,
    parsers: &Path,
    fake: &FakeHandle,
    proxy: &Proxy,
    account: Option<&str>,
) -> Settings {
    let mut s = Settings::default();
    s.server.listen = "127.0.0.1:0".into();
    s.server.workers = 1;
    s.store.path = store.to_owned();
    s.parsers.dir = Some(parsers.to_owned());
    s.ingest.token = Secret::new(INGEST_TOKEN);
    s.admin.token = Secret::new(ADMIN_TOKEN);
    s.lunchmoney.token = Secret::new(fake.token());
    s.lunchmoney.base_url = Some(proxy.url());
    s.lunchmoney.requests_per_minute = PER_MINUTE;
    s.lunchmoney.batch_size = BATCH;
    for source in ["venmo", HOOK_PLUGIN] {
        s.lunchmoney.sources.insert(
            source.into(),
            SourceMapping {
                account: account.map(|a| NameOrId::Name(a.into())),
                ..Default::default()
            },
        );
    }
    s
}

async fn admin_outbox(client: &reqwest::Client, base: &str) -> Value {
    match client
        .get(format!("{base}/admin/outbox"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
    {
        Ok(r) => r.json().await.unwrap_or(Value::Null),
        Err(_) => Value::Null,
    }
}

// ---------------------------------------------------------------------------------------------
// Latency samples
// ---------------------------------------------------------------------------------------------

#[derive(Debug)]
struct Sample {
    /// Request sent -> 200 received (the message committed, the worker already woken).
    to_ack: Duration,
    /// Ack -> the insert carrying it arrived at the fake (`None`: not within the bound).
    to_arrival: Option<Duration>,
    /// Ack -> the fake has stored it.
    to_stored: Option<Duration>,
    /// Transactions in the insert that carried it.
    batch: usize,
    acked: Instant,
}

async fn one_sample(client: &reqwest::Client, base: &str, fake: &FakeHandle, id: &str) -> Sample {
    let external = format!("{HOOK_PLUGIN}:{id}");
    let inserts = fake.request_count("POST /v2/transactions");
    let body = json!({
        "type": "transaction.created",
        "data": {"id": id, "amount": "-4.50", "date": "2024-03-08", "payee": "Bakery"},
    });
    let sent = Instant::now();
    let response = client
        .post(format!("{base}/hooks/{HOOK_PLUGIN}"))
        .bearer_auth(INGEST_TOKEN)
        .json(&body)
        .send()
        .await
        .expect("hook request");
    let status = response.status();
    let answer: Value = response.json().await.unwrap_or(Value::Null);
    let acked = Instant::now();
    assert_eq!(status, 200, "hook refused: {answer}");
    let mut arrived = None;
    let mut stored = None;
    while acked.elapsed() < SAMPLE_LIMIT {
        if arrived.is_none() && fake.request_count("POST /v2/transactions") > inserts {
            arrived = Some(acked.elapsed());
        }
        if arrived.is_some() {
            if let Some(t) = fake.transaction_by_external_id(&external) {
                stored = Some((acked.elapsed(), t.request_seq));
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let batch = stored
        .and_then(|(_, seq)| {
            fake.requests_to("POST /v2/transactions")
                .into_iter()
                .find(|r| r.seq == seq)
        })
        .and_then(|r| r.json())
        .and_then(|b| {
            b.get("transactions")
                .and_then(Value::as_array)
                .map(Vec::len)
        })
        .unwrap_or(0);
    Sample {
        to_ack: acked - sent,
        to_arrival: arrived,
        to_stored: stored.map(|(t, _)| t),
        batch,
        acked,
    }
}

fn latency_row(label: &str, samples: &[Sample], exchanges: &[Exchange]) {
    let mut stored: Vec<Duration> = samples.iter().filter_map(|s| s.to_stored).collect();
    stored.sort();
    let missing = samples.len() - stored.len();
    let mut acks: Vec<Duration> = samples.iter().map(|s| s.to_ack).collect();
    acks.sort();
    let mut arrivals: Vec<Duration> = samples.iter().filter_map(|s| s.to_arrival).collect();
    arrivals.sort();
    let all = samples
        .iter()
        .map(|s| {
            // Requests the fake admitted in the minute before the ack: how full the window was.
            let window = exchanges
                .iter()
                .filter(|e| e.req_first <= s.acked && s.acked.duration_since(e.req_first) < WINDOW)
                .count();
            match s.to_stored {
                Some(t) => format!("{} ({}/req, {window} in window)", ms(t), s.batch),
                None => format!("lost ({window} in window)"),
            }
        })
        .collect::<Vec<_>>()
        .join(", ");
    println!(
        "| {label} | {}{} | {} | {} | {all} | {} | {} |",
        samples.len(),
        if missing > 0 {
            format!(" ({missing} not stored within {SAMPLE_LIMIT:?})")
        } else {
            String::new()
        },
        percentile(&stored, 0.5).map_or("-".into(), ms),
        stored.last().copied().map_or("-".into(), ms),
        percentile(&acks, 0.5).map_or("-".into(), ms),
        percentile(&arrivals, 0.5).map_or("-".into(), ms),
    );
}

// ---------------------------------------------------------------------------------------------
// A timing proxy between the service and the fake
// ---------------------------------------------------------------------------------------------

/// Bytes read on one side of a proxied connection.
#[derive(Clone, Copy)]
struct Chunk {
    at: Instant,
    conn: u64,
    /// Service -> fake.
    up: bool,
}

/// A byte-for-byte TCP relay on 127.0.0.1 that notes when each side sent something, so each
/// request's time can be split into the fake's share and the service's.
struct Proxy {
    addr: std::net::SocketAddr,
    chunks: Arc<Mutex<Vec<Chunk>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl Proxy {
    async fn start(target: std::net::SocketAddr) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("proxy listener");
        let addr = listener.local_addr().expect("proxy address");
        let chunks = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&chunks);
        let accept = tokio::spawn(async move {
            let mut next = 0;
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = tokio::net::TcpStream::connect(target).await else {
                    continue;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                tokio::spawn(pump(
                    client_read,
                    server_write,
                    next,
                    true,
                    Arc::clone(&log),
                ));
                tokio::spawn(pump(
                    server_read,
                    client_write,
                    next,
                    false,
                    Arc::clone(&log),
                ));
                next += 1;
            }
        });
        Proxy {
            addr,
            chunks,
            accept,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn chunks(&self) -> Vec<Chunk> {
        self.chunks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Stops accepting; open relays end when either side closes.
    fn stop(&self) {
        self.accept.abort();
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    conn: u64,
    up: bool,
    log: Arc<Mutex<Vec<Chunk>>>,
) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        log.lock().unwrap_or_else(|e| e.into_inner()).push(Chunk {
            at: Instant::now(),
            conn,
            up,
        });
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

/// One request and its response on a proxied connection (HTTP/1.1, no pipelining).
#[derive(Clone, Copy, Debug)]
struct Exchange {
    req_first: Instant,
    req_last: Instant,
    resp_first: Option<Instant>,
    resp_last: Option<Instant>,
}

/// The exchanges of all connections, in the order their requests started.
fn exchanges(chunks: &[Chunk]) -> Vec<Exchange> {
    let mut by_conn: BTreeMap<u64, Vec<Chunk>> = BTreeMap::new();
    for c in chunks {
        by_conn.entry(c.conn).or_default().push(*c);
    }
    let mut out = Vec::new();
    for (_, mut list) in by_conn {
        list.sort_by_key(|c| c.at);
        let mut current: Option<Exchange> = None;
        for c in list {
            match (&mut current, c.up) {
                (Some(e), true) if e.resp_first.is_none() => e.req_last = c.at,
                (_, true) => {
                    out.extend(current.take());
                    current = Some(Exchange {
                        req_first: c.at,
                        req_last: c.at,
                        resp_first: None,
                        resp_last: None,
                    });
                }
                (Some(e), false) => {
                    e.resp_first.get_or_insert(c.at);
                    e.resp_last = Some(c.at);
                }
                (None, false) => {}
            }
        }
        out.extend(current);
    }
    out.sort_by_key(|e| e.req_first);
    out
}

/// Splits the drain's wall time: the fake's handling, the service's own work between requests,
/// and waits for the rate limit.
fn decompose(t0: Instant, drain_end: Option<Duration>, all: &[Exchange], endpoints: &[String]) {
    let Some(end) = drain_end.map(|d| t0 + d) else {
        return;
    };
    let list: Vec<(usize, &Exchange)> = all
        .iter()
        .enumerate()
        .filter(|(_, e)| e.req_first <= end)
        .collect();
    println!("### Where the drain's time went (timing proxy between the service and the fake)");
    println!();
    if endpoints.len() < list.len() {
        println!(
            "(the proxy saw {} requests, the fake logged {}: not matched)",
            list.len(),
            endpoints.len()
        );
        return;
    }
    let is_insert = |i: usize| endpoints[i] == "POST /v2/transactions";
    let fake_time = |e: &Exchange| {
        e.resp_first
            .map_or(Duration::ZERO, |r| r.saturating_duration_since(e.req_last))
    };
    let mut insert_fake: Vec<Duration> = list
        .iter()
        .filter(|(i, _)| is_insert(*i))
        .map(|(_, e)| fake_time(e))
        .collect();
    let in_order = insert_fake.clone();
    let other_fake: Duration = list
        .iter()
        .filter(|(i, _)| !is_insert(*i))
        .map(|(_, e)| fake_time(e))
        .sum();
    let upload: Duration = list.iter().map(|(_, e)| e.req_last - e.req_first).sum();
    let download: Duration = list
        .iter()
        .map(|(_, e)| match (e.resp_first, e.resp_last) {
            (Some(a), Some(b)) => b - a,
            _ => Duration::ZERO,
        })
        .sum();
    let mut gaps: Vec<Duration> = list
        .windows(2)
        .map(|w| {
            let done = w[0].1.resp_last.unwrap_or(w[0].1.req_last);
            w[1].1.req_first.saturating_duration_since(done)
        })
        .collect();
    let tail = list
        .last()
        .and_then(|(_, e)| e.resp_last)
        .map_or(Duration::ZERO, |r| end.saturating_duration_since(r));
    let startup = list.first().map_or(Duration::ZERO, |(_, e)| {
        e.req_first.saturating_duration_since(t0)
    });
    let long = Duration::from_secs(5);
    let waits: Vec<Duration> = gaps.iter().copied().filter(|g| *g >= long).collect();
    gaps.retain(|g| *g < long);
    gaps.sort();
    insert_fake.sort();
    let sum = |v: &[Duration]| v.iter().sum::<Duration>();
    let mean_of = |v: &[Duration]| sum(v) / u32::try_from(v.len().max(1)).unwrap_or(1);
    println!("| share of the drain | total | per request |");
    println!("| --- | --- | --- |");
    println!(
        "| service start -> first request (build, first claim) | {} | |",
        secs(startup)
    );
    println!(
        "| fake handling the {} inserts (last request byte -> first response byte) | {} | p50 {} / p90 {} / max {}; first 10 mean {}, last 10 mean {} |",
        insert_fake.len(),
        secs(sum(&insert_fake)),
        percentile(&insert_fake, 0.5).map_or("-".into(), ms),
        percentile(&insert_fake, 0.9).map_or("-".into(), ms),
        insert_fake.last().copied().map_or("-".into(), ms),
        ms(mean_of(&in_order[..in_order.len().min(10)])),
        ms(mean_of(&in_order[in_order.len().saturating_sub(10)..])),
    );
    println!(
        "| fake handling the {} other requests (look-ups) | {} | |",
        list.len() - in_order.len(),
        secs(other_fake)
    );
    println!(
        "| bodies on the wire (request upload + response download, loopback) | {} | |",
        secs(upload + download)
    );
    println!(
        "| service between requests, gaps < 5 s (answer read, results committed, next claim, resolve, serialise) | {} | p50 {} / p90 {} / max {} over {} gaps |",
        secs(sum(&gaps)),
        percentile(&gaps, 0.5).map_or("-".into(), ms),
        percentile(&gaps, 0.9).map_or("-".into(), ms),
        gaps.last().copied().map_or("-".into(), ms),
        gaps.len(),
    );
    println!(
        "| waiting for the rate limit (gaps >= 5 s) | {} | {} |",
        secs(sum(&waits)),
        waits
            .iter()
            .map(|w| secs(*w))
            .collect::<Vec<_>>()
            .join(", "),
    );
    println!(
        "| last answer -> its batch recorded delivered | {} | |",
        secs(tail)
    );
    println!();
}

// ---------------------------------------------------------------------------------------------
// The worker's own log, captured in-process
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
struct Logged {
    at: Instant,
    level: tracing::Level,
    message: String,
    transactions: Option<u64>,
    fields: String,
}

/// Keeps the service's own events (INFO and above, `lm_ingest` targets only), so the worker's
/// timeline needs no change to the code under test. Warnings and errors are echoed to stderr.
#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<Logged>>>);

impl Recorder {
    fn wanted(meta: &tracing::Metadata<'_>) -> bool {
        meta.target().starts_with("lm_ingest") && *meta.level() <= tracing::Level::INFO
    }

    fn take(&self) -> Vec<Logged> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

#[derive(Default)]
struct Fields {
    message: String,
    transactions: Option<u64>,
    rest: String,
}

impl tracing::field::Visit for Fields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.message = format!("{value:?}");
        } else {
            let _ = write!(self.rest, " {}={value:?}", field.name());
        }
    }

    fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
        if field.name() == "transactions" {
            self.transactions = Some(value);
        } else {
            let _ = write!(self.rest, " {}={value}", field.name());
        }
    }

    fn record_i64(&mut self, field: &tracing::field::Field, value: i64) {
        if field.name() == "transactions" {
            self.transactions = u64::try_from(value).ok();
        } else {
            let _ = write!(self.rest, " {}={value}", field.name());
        }
    }

    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        let _ = write!(self.rest, " {}={value}", field.name());
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Recorder {
    fn register_callsite(
        &self,
        meta: &'static tracing::Metadata<'static>,
    ) -> tracing::subscriber::Interest {
        if Self::wanted(meta) {
            tracing::subscriber::Interest::always()
        } else {
            tracing::subscriber::Interest::never()
        }
    }

    fn enabled(&self, meta: &tracing::Metadata<'_>, _: Context<'_, S>) -> bool {
        Self::wanted(meta)
    }

    fn max_level_hint(&self) -> Option<tracing::level_filters::LevelFilter> {
        Some(tracing::level_filters::LevelFilter::INFO)
    }

    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        if !Self::wanted(event.metadata()) {
            return;
        }
        let mut fields = Fields::default();
        event.record(&mut fields);
        let logged = Logged {
            at: Instant::now(),
            level: *event.metadata().level(),
            message: fields.message,
            transactions: fields.transactions,
            fields: fields.rest,
        };
        if logged.level <= tracing::Level::WARN {
            eprintln!("  [{}] {}{}", logged.level, logged.message, logged.fields);
        }
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(logged);
    }
}

fn timeline(events: &[Logged], t0: Instant, delivered: &[(Duration, u64)]) {
    println!("### The worker's timeline (its own log events)");
    println!();
    let mut minute: BTreeMap<u64, (usize, u64)> = BTreeMap::new();
    for (t, n) in delivered {
        let e = minute.entry(t.as_secs() / 60).or_default();
        e.0 += 1;
        e.1 += n;
    }
    println!("| minute since start | batches delivered | transactions | first .. last delivered |");
    println!("| --- | --- | --- | --- |");
    for (m, (batches, txs)) in &minute {
        let in_minute: Vec<Duration> = delivered
            .iter()
            .filter(|(t, _)| t.as_secs() / 60 == *m)
            .map(|(t, _)| *t)
            .collect();
        println!(
            "| {m} | {batches} | {txs} | {} .. {} |",
            in_minute.first().map_or("-".into(), |t| secs(*t)),
            in_minute.last().map_or("-".into(), |t| secs(*t)),
        );
    }
    // Gaps between consecutive deliveries shorter than 5 s: one full cycle of claim, resolve,
    // serialise, the fake's handling and the commit of the result (limiter waits excluded).
    let mut cycles: Vec<Duration> = delivered
        .windows(2)
        .map(|w| w[1].0.saturating_sub(w[0].0))
        .filter(|d| *d < Duration::from_secs(5))
        .collect();
    cycles.sort();
    println!();
    println!(
        "back-to-back delivery cycle (gaps < 5 s, {} of them): p50 {} / p90 {} / max {}",
        cycles.len(),
        percentile(&cycles, 0.5).map_or("-".into(), ms),
        percentile(&cycles, 0.9).map_or("-".into(), ms),
        cycles.last().copied().map_or("-".into(), ms),
    );
    let notable: Vec<&Logged> = events
        .iter()
        .filter(|e| e.level <= tracing::Level::WARN && e.message.starts_with("outbox"))
        .collect();
    println!("outbox worker warnings and errors: {}", notable.len());
    for e in notable.iter().take(10) {
        println!(
            "- t={} [{}] {}{}",
            secs(e.at.saturating_duration_since(t0)),
            e.level,
            e.message,
            e.fields
        );
    }
    println!();
}

// ---------------------------------------------------------------------------------------------
// Machine and process facts
// ---------------------------------------------------------------------------------------------

/// Other processes (builds, other benchmarks) distort a run: waits at most `QUIET_WAIT` until the
/// machine has been under `QUIET_BUSY` of all cores for `QUIET_FOR`; measures anyway after that.
async fn wait_quiet() {
    let started = Instant::now();
    let step = Duration::from_millis(250);
    let mut quiet = Duration::ZERO;
    let mut last = machine_busy();
    while quiet < QUIET_FOR && started.elapsed() < QUIET_WAIT {
        tokio::time::sleep(step).await;
        let now = machine_busy();
        let total = (now.1 - last.1).max(1) as f64;
        if ((now.0 - last.0) as f64 / total) < QUIET_BUSY {
            quiet += step;
        } else {
            quiet = Duration::ZERO;
        }
        last = now;
    }
    if quiet < QUIET_FOR {
        eprintln!("  note: the machine was not quiet for {QUIET_WAIT:?}; measuring anyway");
    }
}

fn machine_facts() {
    println!("{}", machine::machine_line());
    println!("one process: the service (outbox worker on a 2-worker tokio runtime, 1 HTTP worker), the fake Lunch Money (std threads) and this driver share the cores");
}

/// utime + stime of a `/proc/.../stat` line, in ticks.
fn stat_ticks(stat: &str) -> Option<u64> {
    let after = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = after.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

fn self_ticks() -> u64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| stat_ticks(&s))
        .unwrap_or(0)
}

/// CPU seconds of the live threads of this process, by thread-name group.
fn thread_cpu(ticks: f64) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return out;
    };
    for task in tasks.flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        let Some(t) = std::fs::read_to_string(task.path().join("stat"))
            .ok()
            .and_then(|s| stat_ticks(&s))
        else {
            continue;
        };
        let comm = comm.trim();
        let group = if comm.starts_with("fake-lunchmone") {
            "fake Lunch Money".to_owned()
        } else if comm.starts_with("drain-") {
            "main (driver)".to_owned()
        } else {
            comm.trim_end_matches(|c: char| c.is_ascii_digit())
                .to_owned()
        };
        *out.entry(group).or_default() += t as f64 / ticks;
    }
    out
}

/// (busy, total) ticks of the whole machine.
fn machine_busy() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let v: Vec<u64> = stat
        .lines()
        .find(|l| l.starts_with("cpu "))
        .map(|l| {
            l.split_whitespace()
                .skip(1)
                .filter_map(|f| f.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    (total - idle, total)
}

/// Percent of one core that other processes used between two readings.
fn other_cpu(m0: (u64, u64), m1: (u64, u64), self0: u64, self1: u64) -> f64 {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let wall_ticks = (m1.1 - m0.1) as f64 / cores;
    let other = (m1.0 - m0.0).saturating_sub(self1 - self0) as f64;
    100.0 * other / wall_ticks.max(1.0)
}

fn proc_status_kb(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------------------------

fn env_usize(name: &str, default: usize, min: usize, max: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(default, |v: usize| v.clamp(min, max))
}

fn percentile(sorted: &[Duration], p: f64) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(i).copied()
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

fn compact(v: &Value) -> String {
    v.to_string().replace(',', ", ")
}
