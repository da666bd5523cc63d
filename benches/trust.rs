//! What sender trust adds to each email: DKIM verification of a signed Venmo notification
//! (`tests/data/dkim-signed-venmo.eml`, RSA-2048, relaxed/relaxed) beside parsing alone.
//!
//! Run with `cargo bench --bench trust`. It measures and reports; it asserts nothing about time.
//!
//! - baseline: extraction and parsing (`inbound::email::extract`, `parse_parsed_email`), what
//!   every email pays without trust;
//! - with trust: the same plus `trust::prepare` (canonicalization and hashes), `Trust::check`
//!   (the RSA verification; the key answer comes from the in-process cache after the first
//!   message, as it does for a steady stream from one sender) and `Trust::decide`.
//!
//! The two alternate in blocks within each pass, so both see the same machine load; the median
//! of the passes is reported.

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use lm_ingest::inbound::{self, Payload};
use lm_ingest::parse::Registry;
use lm_ingest::settings::{TrustPolicy, TrustSettings};
use lm_ingest::trust::{self, dns::MapResolver, Trust};
use rsa::pkcs8::{DecodePublicKey, EncodePublicKey};

const MESSAGES: usize = 2_000;
const BLOCK: usize = 250;
const PASSES: usize = 7;

fn main() {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let raw = std::fs::read(manifest.join("tests/data/dkim-signed-venmo.eml")).unwrap();
    let pem =
        std::fs::read_to_string(manifest.join("tests/data/throwaway-rsa-2048.pub.pem")).unwrap();
    let der = rsa::RsaPublicKey::from_public_key_pem(&pem)
        .unwrap()
        .to_public_key_der()
        .unwrap();
    let record = format!(
        "v=DKIM1; k=rsa; p={}",
        base64::engine::general_purpose::STANDARD.encode(der.as_bytes())
    );
    let settings = TrustSettings {
        policies: [("venmo".to_owned(), TrustPolicy::Require)].into(),
        ..TrustSettings::default()
    };
    let trust = Trust::new(
        settings,
        Arc::new(MapResolver::new().with_txt("s1._domainkey.venmo.com", &record)),
    );
    let registry = Registry::load(None).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();

    // Refuse to time something that does not do what it should.
    let authenticated = runtime.block_on(with_trust(&registry, &trust, &raw));
    assert_eq!(authenticated, Some("dkim"), "the sample must verify");

    let mut baseline = Vec::new();
    let mut trusted = Vec::new();
    for _ in 0..PASSES {
        let (mut plain, mut checked) = (Duration::ZERO, Duration::ZERO);
        for _ in 0..MESSAGES / BLOCK {
            let t = Instant::now();
            for _ in 0..BLOCK {
                black_box(parse_only(&registry, black_box(&raw)));
            }
            plain += t.elapsed();
            let t = Instant::now();
            runtime.block_on(async {
                for _ in 0..BLOCK {
                    black_box(with_trust(&registry, &trust, black_box(&raw)).await);
                }
            });
            checked += t.elapsed();
        }
        baseline.push(plain);
        trusted.push(checked);
    }
    let per_message = |runs: &mut Vec<Duration>| {
        runs.sort();
        runs[runs.len() / 2].as_secs_f64() * 1e6 / MESSAGES as f64
    };
    let (plain, checked) = (per_message(&mut baseline), per_message(&mut trusted));
    println!("# lm-ingest sender-trust benchmark ({MESSAGES} messages x {PASSES} passes, median)");
    println!(
        "message: {} bytes, one rsa-sha256 DKIM signature",
        raw.len()
    );
    println!(
        "parse only:       {plain:8.1} us/message ({:>8.0} messages/s)",
        1e6 / plain
    );
    println!(
        "parse + trust:    {checked:8.1} us/message ({:>8.0} messages/s)",
        1e6 / checked
    );
    println!("trust adds:       {:8.1} us/message", checked - plain);
}

fn parse_only(registry: &Registry, raw: &[u8]) -> Option<String> {
    let extracted = inbound::email::extract(raw).unwrap();
    let Payload::Email(email) = &extracted.payload else {
        unreachable!("an email route extracts an email")
    };
    registry.parse_parsed_email(email).plugin
}

async fn with_trust(registry: &Registry, trust: &Trust, raw: &[u8]) -> Option<&'static str> {
    let extracted = inbound::email::extract(raw).unwrap();
    let Payload::Email(email) = &extracted.payload else {
        unreachable!("an email route extracts an email")
    };
    let outcome = registry.parse_parsed_email(email);
    let pending = trust::prepare(registry, &extracted, "email", outcome.plugin.as_deref())?;
    let verdict = trust.check(pending).await;
    trust.decide(&verdict).authenticated_by
}
