//! Sender trust against messages these tests sign themselves, with DNS answers from a map.

use std::sync::Arc;

use base64::Engine as _;
use rsa::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePublicKey};
use sha2::{Digest, Sha256};

use super::dkim::{self, Canon, Message};
use super::dns::MapResolver;
use super::*;
use crate::inbound;
use crate::settings::TrustSettings;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

fn rsa_key() -> rsa::RsaPrivateKey {
    let pem = include_str!("../../tests/data/throwaway-rsa-2048.pem");
    rsa::RsaPrivateKey::from_pkcs8_pem(pem).unwrap()
}

fn rsa_record() -> String {
    let pem = include_str!("../../tests/data/throwaway-rsa-2048.pub.pem");
    let der = rsa::RsaPublicKey::from_public_key_pem(pem)
        .unwrap()
        .to_public_key_der()
        .unwrap();
    format!("v=DKIM1; k=rsa; p={}", B64.encode(der.as_bytes()))
}

/// A throwaway ed25519 key: the seed is fixed, it protects nothing.
fn ed25519_key() -> ed25519_dalek::SigningKey {
    ed25519_dalek::SigningKey::from_bytes(&[7u8; 32])
}

fn ed25519_record() -> String {
    format!(
        "v=DKIM1; k=ed25519; p={}",
        B64.encode(ed25519_key().verifying_key().as_bytes())
    )
}

enum Signer {
    Rsa,
    Ed25519,
}

impl Signer {
    fn algorithm(&self) -> &'static str {
        match self {
            Signer::Rsa => "rsa-sha256",
            Signer::Ed25519 => "ed25519-sha256",
        }
    }

    fn sign(&self, hash: &[u8]) -> String {
        let signature = match self {
            Signer::Rsa => rsa_key()
                .sign(rsa::Pkcs1v15Sign::new::<Sha256>(), hash)
                .unwrap(),
            Signer::Ed25519 => {
                use ed25519_dalek::Signer as _;
                ed25519_key().sign(hash).to_bytes().to_vec()
            }
        };
        B64.encode(signature)
    }
}

fn body_hash(raw: &[u8]) -> String {
    let body = dkim::canonical_body(&Message::split(raw).body, Canon::Relaxed);
    B64.encode(Sha256::digest(body))
}

/// Puts `field` (a signature header whose `b=` is last and empty) on top of `raw`, hashes it as
/// the verifier will, and fills in `b=`.
fn add_signed(
    raw: &[u8],
    field: &str,
    signer: &Signer,
    hash: impl Fn(&Message) -> Vec<u8>,
) -> Vec<u8> {
    let mut unsigned = format!("{field}\r\n").into_bytes();
    unsigned.extend_from_slice(raw);
    let signature = signer.sign(&hash(&Message::split(&unsigned)));
    let mut signed = format!("{field}{signature}\r\n").into_bytes();
    signed.extend_from_slice(raw);
    signed
}

/// DKIM-signs `raw` for `domain` (relaxed/relaxed, the usual headers).
fn dkim_sign(raw: &[u8], domain: &str, selector: &str, signer: Signer) -> Vec<u8> {
    let field = format!(
        "DKIM-Signature: v=1; a={}; c=relaxed/relaxed; d={domain}; s={selector};\r\n\tt=1709959277; h=from:to:subject:date:message-id;\r\n\tbh={}; b=",
        signer.algorithm(),
        body_hash(raw)
    );
    add_signed(raw, &field, &signer, |m| {
        dkim::prepare(m, 0, dkim::Kind::Dkim).unwrap().header_hash
    })
}

/// Adds ARC set i=1 as Gmail does when it forwards: results, message signature, seal.
fn arc_seal(raw: &[u8], sealer: &str, results: &str) -> Vec<u8> {
    let mut with_results =
        format!("ARC-Authentication-Results: i=1; mx.google.com;\r\n       {results}\r\n")
            .into_bytes();
    with_results.extend_from_slice(raw);
    let ams = format!(
        "ARC-Message-Signature: i=1; a=rsa-sha256; c=relaxed/relaxed; d={sealer}; s=arc-20160816;\r\n        h=from:to:subject:date:message-id:dkim-signature;\r\n        bh={}; b=",
        body_hash(raw)
    );
    let with_ams = add_signed(&with_results, &ams, &Signer::Rsa, |m| {
        dkim::prepare(m, 0, dkim::Kind::ArcMessage)
            .unwrap()
            .header_hash
    });
    let seal = format!(
        "ARC-Seal: i=1; a=rsa-sha256; t=1709959278; cv=none;\r\n        d={sealer}; s=arc-20160816; b="
    );
    add_signed(&with_ams, &seal, &Signer::Rsa, |m| {
        let arc::Chain::Sets(sets) = arc::chain(m) else {
            panic!("no ARC set")
        };
        dkim::prepare_seal(m, &sets, 0).unwrap().header_hash
    })
}

fn venmo_mail() -> Vec<u8> {
    b"From: Venmo <venmo@venmo.com>\r\nTo: alex@example.com\r\nSubject: Jordan Patel paid you $386.70\r\nDate: Sat, 09 Mar 2024 04:41:17 +0000\r\nMessage-ID: <trust-1@venmo.com>\r\nContent-Type: text/plain; charset=UTF-8\r\n\r\nJordan Patel paid you\r\n\r\n$386.70\r\n\r\nFlights to Denver\r\n\r\nTransaction ID\r\n4520938716640285193\r\n\r\nDate\r\nMar 8, 2024\r\n".to_vec()
}

fn keys() -> MapResolver {
    MapResolver::new()
        .with_txt("s1._domainkey.venmo.com", &rsa_record())
        .with_txt("ed._domainkey.venmo.com", &ed25519_record())
        .with_txt("s1._domainkey.attacker.example", &rsa_record())
        .with_txt("arc-20160816._domainkey.google.com", &rsa_record())
        .with_txt("arc-20160816._domainkey.sealer.example", &rsa_record())
}

fn trust_with(settings: TrustSettings, resolver: MapResolver) -> Trust {
    Trust::new(settings, Arc::new(resolver))
}

fn requiring_venmo() -> TrustSettings {
    let mut settings = TrustSettings::default();
    settings
        .policies
        .insert("venmo".into(), TrustPolicy::Require);
    settings
}

/// The verdict and decision for `raw` arriving on `/inbound/email`.
async fn judge(trust: &Trust, raw: &[u8]) -> (Verdict, Decision) {
    judge_extracted(trust, inbound::email::extract(raw).unwrap(), "email").await
}

async fn judge_extracted(trust: &Trust, extracted: Extracted, route: &str) -> (Verdict, Decision) {
    let registry = Registry::load(None).unwrap();
    let Payload::Email(email) = &extracted.payload else {
        panic!("not an email")
    };
    let outcome = registry.parse_parsed_email(email);
    assert_eq!(outcome.plugin.as_deref(), Some("venmo"), "{outcome:?}");
    let pending = prepare(&registry, &extracted, route, outcome.plugin.as_deref())
        .expect("venmo mail is checked");
    let verdict = trust.check(pending).await;
    let decision = trust.decide(&verdict);
    (verdict, decision)
}

#[tokio::test]
async fn a_valid_rsa_signature_passes_and_authenticates() {
    let trust = trust_with(requiring_venmo(), keys());
    let signed = dkim_sign(&venmo_mail(), "venmo.com", "s1", Signer::Rsa);
    let (verdict, decision) = judge(&trust, &signed).await;
    assert_eq!(verdict.dkim.len(), 1);
    assert_eq!(verdict.dkim[0].result, "pass", "{verdict:?}");
    assert!(verdict.dkim[0].aligned);
    assert_eq!(verdict.via, Via::Direct);
    assert_eq!(decision.authenticated_by, Some("dkim"));
    assert_eq!(decision.rejection, None);
}

#[tokio::test]
async fn a_valid_ed25519_signature_passes() {
    let trust = trust_with(requiring_venmo(), keys());
    let signed = dkim_sign(&venmo_mail(), "venmo.com", "ed", Signer::Ed25519);
    let (verdict, decision) = judge(&trust, &signed).await;
    assert_eq!(verdict.dkim[0].result, "pass", "{verdict:?}");
    assert_eq!(decision.authenticated_by, Some("dkim"));
}

#[tokio::test]
async fn bare_lf_line_ends_verify_like_crlf() {
    let trust = trust_with(requiring_venmo(), keys());
    let signed = dkim_sign(&venmo_mail(), "venmo.com", "s1", Signer::Rsa);
    let lf = String::from_utf8(signed).unwrap().replace("\r\n", "\n");
    let (verdict, _) = judge(&trust, lf.as_bytes()).await;
    assert_eq!(verdict.dkim[0].result, "pass", "{verdict:?}");
}

#[tokio::test]
async fn a_tampered_body_fails() {
    let trust = trust_with(requiring_venmo(), keys());
    let signed = dkim_sign(&venmo_mail(), "venmo.com", "s1", Signer::Rsa);
    let tampered = String::from_utf8(signed)
        .unwrap()
        .replace("$386.70", "$986.70");
    let (verdict, decision) = judge(&trust, tampered.as_bytes()).await;
    assert_eq!(verdict.dkim[0].result, "fail");
    assert!(
        verdict.dkim[0]
            .reason
            .as_deref()
            .unwrap()
            .contains("body hash"),
        "{verdict:?}"
    );
    let reason = decision.rejection.expect("rejected");
    assert!(reason.starts_with(REASON_PREFIX), "{reason}");
    assert!(reason.contains("body hash does not match"), "{reason}");
}

#[tokio::test]
async fn a_tampered_header_fails() {
    let trust = trust_with(requiring_venmo(), keys());
    let signed = dkim_sign(&venmo_mail(), "venmo.com", "s1", Signer::Rsa);
    let tampered = String::from_utf8(signed).unwrap().replace(
        "Subject: Jordan Patel paid you $386.70",
        "Subject: Jordan Patel paid you $986.70",
    );
    let (verdict, decision) = judge(&trust, tampered.as_bytes()).await;
    assert_eq!(verdict.dkim[0].result, "fail");
    assert!(verdict.dkim[0]
        .reason
        .as_deref()
        .unwrap()
        .contains("does not verify"));
    assert!(decision.rejection.is_some());
}

#[tokio::test]
async fn a_signature_of_another_domain_is_not_aligned() {
    let trust = trust_with(requiring_venmo(), keys());
    // Valid, but signed by the attacker's own domain.
    let signed = dkim_sign(&venmo_mail(), "attacker.example", "s1", Signer::Rsa);
    let (verdict, decision) = judge(&trust, &signed).await;
    assert_eq!(verdict.dkim[0].result, "pass");
    assert!(!verdict.dkim[0].aligned);
    assert_eq!(decision.authenticated_by, None);
    let reason = decision.rejection.unwrap();
    assert!(
        reason.contains("d=attacker.example pass but not aligned"),
        "{reason}"
    );
}

#[tokio::test]
async fn the_report_policy_records_but_never_rejects() {
    let trust = trust_with(TrustSettings::default(), keys());
    let signed = dkim_sign(&venmo_mail(), "attacker.example", "s1", Signer::Rsa);
    let (_, decision) = judge(&trust, &signed).await;
    assert_eq!(decision.policy, TrustPolicy::Report);
    assert_eq!(decision.rejection, None);
    let (_, unsigned) = judge(&trust, &venmo_mail()).await;
    assert_eq!(unsigned.rejection, None);
    assert_eq!(unsigned.authenticated_by, None);
}

#[tokio::test]
async fn a_missing_key_is_a_permanent_failure() {
    let trust = trust_with(requiring_venmo(), MapResolver::new());
    let signed = dkim_sign(&venmo_mail(), "venmo.com", "s1", Signer::Rsa);
    let (verdict, decision) = judge(&trust, &signed).await;
    assert_eq!(verdict.dkim[0].result, "permerror");
    assert!(!verdict.has_temperror());
    assert!(decision
        .rejection
        .unwrap()
        .contains("no TXT record at s1._domainkey.venmo.com"));
}

#[tokio::test]
async fn a_dns_temporary_failure_is_rejected_for_now_and_says_so() {
    let trust = trust_with(
        requiring_venmo(),
        MapResolver::new().with_failure("s1._domainkey.venmo.com"),
    );
    let signed = dkim_sign(&venmo_mail(), "venmo.com", "s1", Signer::Rsa);
    let (verdict, decision) = judge(&trust, &signed).await;
    assert_eq!(verdict.dkim[0].result, "temperror");
    assert!(verdict.has_temperror());
    let reason = decision.rejection.unwrap();
    assert!(
        reason.contains("temperror") && reason.contains("reparse"),
        "{reason}"
    );
}

// Paused time: the deadline is measured on tokio's clock, so a slow debug build or a busy
// machine (CPU time spent hashing and parsing) cannot make the test flaky.
#[tokio::test(start_paused = true)]
async fn a_resolver_that_never_answers_times_out_as_temperror() {
    struct Hangs;
    impl dns::TxtResolver for Hangs {
        fn txt<'a>(&'a self, _name: &'a str) -> dns::TxtFuture<'a> {
            Box::pin(std::future::pending())
        }
    }
    let mut settings = requiring_venmo();
    settings.dns_timeout_secs = 1;
    let trust = Trust::new(settings, Arc::new(Hangs));
    // Five signatures with five keys to look up: together they still get two look-ups' time.
    let mut signed = venmo_mail();
    for selector in ["a", "b", "c", "d", "e"] {
        signed = dkim_sign(&signed, "venmo.com", selector, Signer::Rsa);
    }
    let started = tokio::time::Instant::now();
    let (verdict, decision) = judge(&trust, &signed).await;
    assert_eq!(verdict.dkim.len(), 5);
    assert!(
        verdict.dkim.iter().all(|s| s.result == "temperror"),
        "{verdict:?}"
    );
    assert!(decision.rejection.unwrap().contains("temperror"));
    let took = started.elapsed();
    assert!(took <= std::time::Duration::from_millis(2_100), "{took:?}");
}

#[tokio::test]
async fn l_tag_covering_part_of_the_body_fails() {
    let trust = trust_with(requiring_venmo(), keys());
    let raw = venmo_mail();
    let body_len = dkim::canonical_body(&Message::split(&raw).body, Canon::Relaxed).len();
    let partial = b"Jordan Patel paid you\r\n";
    let field = format!(
        "DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=venmo.com; s=s1; l={};\r\n\th=from:to:subject:date:message-id; bh={}; b=",
        partial.len(),
        B64.encode(Sha256::digest(partial))
    );
    assert!(partial.len() < body_len);
    let signed = add_signed(&raw, &field, &Signer::Rsa, |m| {
        dkim::prepare(m, 0, dkim::Kind::Dkim).unwrap().header_hash
    });
    let (verdict, _) = judge(&trust, &signed).await;
    assert_eq!(verdict.dkim[0].result, "fail");
    assert!(verdict.dkim[0]
        .reason
        .as_deref()
        .unwrap()
        .contains("signs only part"));
}

/// Gmail auto-forwards with the original headers and body, adds its ARC set and forwards; here
/// a footer added on the way broke Venmo's own signature, so only ARC vouches for it.
#[tokio::test]
async fn a_gmail_auto_forward_with_broken_dkim_is_vouched_for_by_arc() {
    let signed = dkim_sign(&venmo_mail(), "venmo.com", "s1", Signer::Rsa);
    let mut changed = signed.clone();
    changed.extend_from_slice(b"\r\n-- \r\nSent through a mailing list\r\n");
    let mut forwarded = b"X-Forwarded-To: ingest@lm.example\r\nX-Forwarded-For: alex@gmail.com ingest@lm.example\r\n".to_vec();
    forwarded.extend_from_slice(&changed);
    let results = "dkim=pass header.i=@venmo.com header.s=s1 header.b=Qx9v2LmZ;\r\n       spf=pass (google.com: domain of venmo@venmo.com designates 198.51.100.27 as permitted sender) smtp.mailfrom=venmo@venmo.com;\r\n       dmarc=pass (p=REJECT sp=REJECT dis=NONE) header.from=venmo.com";
    let sealed = arc_seal(&forwarded, "google.com", results);

    let mut settings = requiring_venmo();
    settings.allowed_forwarders = vec!["alex@gmail.com".into()];
    let trust = trust_with(settings.clone(), keys());
    let (verdict, decision) = judge(&trust, &sealed).await;
    assert_eq!(verdict.dkim[0].result, "fail", "{verdict:?}");
    assert_eq!(verdict.arc.chain, "pass", "{verdict:?}");
    assert_eq!(verdict.arc.first_sealer.as_deref(), Some("google.com"));
    assert_eq!(verdict.forwarder.as_deref(), Some("alex@gmail.com"));
    assert_eq!(decision.forwarder_allowed, Some(true));
    assert_eq!(decision.authenticated_by, Some("arc"));
    assert_eq!(decision.rejection, None);

    // The same chain from a sealer the configuration does not trust vouches for nothing.
    let untrusted = arc_seal(&forwarded, "sealer.example", results);
    let (verdict, decision) = judge(&trust, &untrusted).await;
    assert_eq!(verdict.arc.chain, "pass");
    assert_eq!(decision.authenticated_by, None);
    assert!(decision
        .rejection
        .unwrap()
        .contains("ARC pass sealed first by sealer.example"));

    // Changing the message after the seal breaks the chain.
    let after = String::from_utf8(sealed)
        .unwrap()
        .replace("$386.70", "$986.70");
    let (verdict, decision) = judge(&trust, after.as_bytes()).await;
    assert_eq!(verdict.arc.chain, "fail", "{verdict:?}");
    assert!(decision.rejection.is_some());
}

#[tokio::test]
async fn a_forwarder_not_on_the_list_fails_even_under_report() {
    let settings = TrustSettings {
        allowed_forwarders: vec!["alex@example.com".into()],
        ..TrustSettings::default()
    };
    let trust = trust_with(settings, keys());
    let forward = std::fs::read("fixtures/venmo/fwd-gmail.eml").unwrap();
    let (verdict, decision) = judge(&trust, &forward).await;
    assert_eq!(verdict.via, Via::Quoted);
    assert_eq!(verdict.forwarder.as_deref(), Some("alex@example.com"));
    assert_eq!(decision.forwarder_allowed, Some(true));
    assert_eq!(decision.rejection, None);
    // A stranger forwarding the same mail is refused.
    let stranger = String::from_utf8(forward).unwrap().replacen(
        "From: Alex Rivera <alex@example.com>",
        "From: Mallory <mallory@evil.example>",
        1,
    );
    let (verdict, decision) = judge(&trust, stranger.as_bytes()).await;
    assert_eq!(verdict.forwarder.as_deref(), Some("mallory@evil.example"));
    assert_eq!(decision.forwarder_allowed, Some(false));
    assert!(decision
        .rejection
        .unwrap()
        .contains("forwarded by mallory@evil.example"));
}

#[tokio::test]
async fn a_hand_forward_cannot_meet_require_but_an_attached_signed_original_can() {
    let trust = trust_with(requiring_venmo(), keys());
    let quoted = std::fs::read("fixtures/venmo/fwd-gmail.eml").unwrap();
    let (_, decision) = judge(&trust, &quoted).await;
    assert!(decision
        .rejection
        .unwrap()
        .contains("quoted in a hand forward"));

    let original = dkim_sign(&venmo_mail(), "venmo.com", "s1", Signer::Rsa);
    let mut attached = b"From: Alex <alex@example.com>\r\nTo: ingest@lm.example\r\nSubject: Fwd: Jordan Patel paid you $386.70\r\nDate: Sat, 09 Mar 2024 05:00:00 +0000\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n--b1\r\nContent-Type: text/plain\r\n\r\nSee attached.\r\n--b1\r\nContent-Type: message/rfc822\r\n\r\n".to_vec();
    attached.extend_from_slice(&original);
    attached.extend_from_slice(b"\r\n--b1--\r\n");
    let (verdict, decision) = judge(&trust, &attached).await;
    assert_eq!(verdict.via, Via::Attached);
    assert_eq!(verdict.forwarder.as_deref(), Some("alex@example.com"));
    assert_eq!(verdict.dkim[0].result, "pass", "{verdict:?}");
    assert_eq!(decision.authenticated_by, Some("dkim"));
}

#[tokio::test]
async fn provider_verdicts_are_read_and_only_aligned_ones_authenticate() {
    let trust = trust_with(requiring_venmo(), keys());
    let form = |dkim: &str| {
        let boundary = "XyZ";
        let mut body = String::new();
        for (name, value) in [
            ("headers", "From: Venmo <venmo@venmo.com>\nTo: alex@example.com\nSubject: Jordan Patel paid you $386.70\nDate: Sat, 09 Mar 2024 04:41:17 +0000\nMessage-ID: <sg-1@venmo.com>\n"),
            ("text", "Jordan Patel paid you\n\n$386.70\n\nFlights to Denver\n\nTransaction ID\n4520938716640285193\n\nDate\nMar 8, 2024\n"),
            ("dkim", dkim),
            ("SPF", "pass"),
        ] {
            body.push_str(&format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"));
        }
        body.push_str(&format!("--{boundary}--\r\n"));
        inbound::sendgrid::extract("multipart/form-data; boundary=XyZ", body.as_bytes()).unwrap()
    };
    let (verdict, decision) =
        judge_extracted(&trust, form("{@venmo.com : pass}"), "sendgrid").await;
    let provider = verdict.provider.clone().unwrap();
    assert_eq!(provider.spf.as_deref(), Some("pass"));
    assert_eq!(provider.dkim_pass_domains, vec!["venmo.com"]);
    assert_eq!(decision.authenticated_by, Some("provider"));
    let (_, decision) = judge_extracted(
        &trust,
        form("{@attacker.example : pass, @venmo.com : fail}"),
        "sendgrid",
    )
    .await;
    assert_eq!(decision.authenticated_by, None);
    assert!(decision
        .rejection
        .unwrap()
        .contains("sendgrid dkim={@attacker.example : pass"));
}

#[test]
fn alignment_and_mailboxes() {
    assert!(aligns("venmo.com", "venmo.com"));
    assert!(aligns("email.venmo.com", "venmo.com"));
    assert!(aligns("venmo.com", "mail.venmo.com"));
    assert!(!aligns("notvenmo.com", "venmo.com"));
    assert!(!aligns("com", "venmo.com"));
    assert!(same_mailbox(
        "Alex@Gmail.com",
        "alex+caf_=x=y.com@gmail.com"
    ));
    assert!(!same_mailbox("alex@gmail.com", "alex@gmail.co"));
}

#[tokio::test]
async fn key_answers_are_cached_but_temporary_failures_are_not() {
    struct Counting(std::sync::atomic::AtomicUsize, MapResolver);
    impl dns::TxtResolver for Counting {
        fn txt<'a>(&'a self, name: &'a str) -> dns::TxtFuture<'a> {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            self.1.txt(name)
        }
    }
    let counting = Arc::new(Counting(
        Default::default(),
        keys().with_failure("s1._domainkey.attacker.example"),
    ));
    let trust = Trust::new(
        requiring_venmo(),
        Arc::clone(&counting) as Arc<dyn dns::TxtResolver>,
    );
    let signed = dkim_sign(&venmo_mail(), "venmo.com", "s1", Signer::Rsa);
    for _ in 0..3 {
        assert_eq!(judge(&trust, &signed).await.0.dkim[0].result, "pass");
    }
    assert_eq!(counting.0.load(std::sync::atomic::Ordering::SeqCst), 1);
    let failing = dkim_sign(&venmo_mail(), "attacker.example", "s1", Signer::Rsa);
    for _ in 0..2 {
        assert_eq!(judge(&trust, &failing).await.0.dkim[0].result, "temperror");
    }
    assert_eq!(counting.0.load(std::sync::atomic::Ordering::SeqCst), 3);
}

/// The production resolver end to end: the key comes over UDP from a DNS server on loopback.
#[tokio::test]
async fn the_stub_resolver_fetches_keys_that_verify() {
    let server = dns::tests::fake_dns_server(
        std::collections::HashMap::from([("s1._domainkey.venmo.com".to_owned(), rsa_record())]),
        1232,
    )
    .await;
    let settings = TrustSettings {
        dns_servers: vec![server.to_string()],
        policies: [("venmo".to_owned(), TrustPolicy::Require)].into(),
        ..TrustSettings::default()
    };
    let trust = Trust::from_settings(&settings).unwrap();
    let signed = dkim_sign(&venmo_mail(), "venmo.com", "s1", Signer::Rsa);
    let (verdict, decision) = judge(&trust, &signed).await;
    assert_eq!(verdict.dkim[0].result, "pass", "{verdict:?}");
    assert_eq!(decision.authenticated_by, Some("dkim"));
}

/// `tests/data/dkim-signed-venmo.eml` (what `benches/trust.rs` verifies) is this module's signer's
/// output for `venmo_mail()`, and verifies.
#[tokio::test]
async fn the_committed_signed_sample_is_current() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/dkim-signed-venmo.eml"
    );
    let signed = dkim_sign(&venmo_mail(), "venmo.com", "s1", Signer::Rsa);
    if std::env::var_os("LM_INGEST_WRITE_SAMPLE").is_some() {
        std::fs::write(path, &signed).unwrap();
    }
    assert_eq!(std::fs::read(path).unwrap(), signed);
    let trust = trust_with(requiring_venmo(), keys());
    assert_eq!(
        judge(&trust, &signed).await.1.authenticated_by,
        Some("dkim")
    );
}
