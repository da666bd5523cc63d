//! Sender trust: whether mail a plugin claims really comes from the sender it claims, and from a
//! forwarder the user allows.
//!
//! For each email a plugin claims, [`prepare`] (synchronous, on the parse thread) finds the
//! original sender the plugin claimed and how it arrived (directly or auto-forwarded, attached
//! `message/rfc822`, or quoted in a hand forward), and hashes the DKIM and ARC signatures that
//! can vouch for it. [`Trust::check`] then looks up their keys over DNS (async, each look-up
//! bounded by `trust.dns_timeout_secs`) and returns a [`Verdict`]: every result, recorded with
//! the message. [`Trust::decide`] applies the configuration to a verdict: the forwarder list
//! (always, once set) and the plugin's policy (`report` records only; `require` needs the
//! original sender authenticated by an aligned DKIM signature, a trusted ARC sealer's first-hop
//! results, or a provider verdict that names an aligned domain). See README "Sender trust".

pub mod arc;
pub mod dkim;
pub mod dns;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::inbound::{Extracted, Payload};
use crate::message::{Email, Original};
use crate::parse::{Kind, Plugin, Registry};
use crate::settings::{TrustPolicy, TrustSettings};
use dkim::{Message, Prepared, Unusable};
use dns::{DnsError, TxtResolver};

/// Every trust rejection's reason starts with this, so answers and reports can tell it from
/// unreadable input.
pub const REASON_PREFIX: &str = "sender trust: ";

pub fn is_trust_reason(reason: &str) -> bool {
    reason.starts_with(REASON_PREFIX)
}

/// How the claimed original reached us.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Via {
    /// Sent to us, or auto-forwarded with its headers and body intact.
    Direct,
    /// Attached whole (`message/rfc822`) to a forward.
    Attached,
    /// Quoted in the body of a hand forward: nothing of the original can be verified.
    Quoted,
}

/// One signature's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignatureResult {
    pub domain: Option<String>,
    pub selector: Option<String>,
    /// `pass`, `fail`, `permerror` (unusable signature or key) or `temperror` (DNS, try later).
    pub result: String,
    /// Whether `domain` aligns with the claimed sender's domain.
    pub aligned: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArcResult {
    /// `none`, `pass`, `fail` or `temperror`.
    pub chain: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The domain that sealed the first hop (ARC-Seal i=1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_sealer: Option<String>,
    /// What the first hop's ARC-Authentication-Results says passed.
    #[serde(default)]
    pub dkim_pass: Vec<String>,
    #[serde(default)]
    pub dmarc_pass: Vec<String>,
}

/// The verdicts an inbound provider attached, as it wrote them, plus what they say about DKIM.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderVerdict {
    pub provider: String,
    #[serde(default)]
    pub spf: Option<String>,
    #[serde(default)]
    pub dkim: Option<String>,
    /// Domains the provider says signed with a passing DKIM signature (SendGrid names them).
    #[serde(default)]
    pub dkim_pass_domains: Vec<String>,
    /// The provider says a DKIM signature of the From domain passed (Postmark's DKIM_VALID_AU).
    #[serde(default)]
    pub author_dkim_pass: bool,
}

/// Everything found about one message's sender; kept in the message's `meta.trust`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    pub plugin: String,
    /// The original sender the plugin claimed (lowercase address).
    pub sender: Option<String>,
    pub via: Via,
    /// Who forwarded it: the From of a hand forward, or `X-Forwarded-For` / `Resent-From` of an
    /// auto-forward.
    pub forwarder: Option<String>,
    /// Signatures of the message that carries the original (none for a quoted original).
    pub dkim: Vec<SignatureResult>,
    pub arc: ArcResult,
    pub provider: Option<ProviderVerdict>,
}

impl Verdict {
    /// Whether a DNS failure left something unknown that a later re-parse may settle.
    pub fn has_temperror(&self) -> bool {
        self.arc.chain == "temperror" || self.dkim.iter().any(|s| s.result == "temperror")
    }
}

/// A verdict judged against the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub policy: TrustPolicy,
    /// `dkim`, `arc` or `provider`: what authenticated the original sender, if anything.
    pub authenticated_by: Option<&'static str>,
    /// `None` when no list is set or there is no forwarder.
    pub forwarder_allowed: Option<bool>,
    /// Why the message is refused: it is stored as `rejected` with this reason.
    pub rejection: Option<String>,
}

impl Decision {
    /// The record kept in `meta.trust`.
    pub fn record(&self, verdict: &Verdict) -> Value {
        let mut record = serde_json::to_value(verdict).unwrap_or(Value::Null);
        record["policy"] = json!(self.policy);
        record["authenticated_by"] = json!(self.authenticated_by);
        record["forwarder_allowed"] = json!(self.forwarder_allowed);
        record["result"] = json!(match (&self.rejection, self.authenticated_by) {
            (Some(_), _) => "rejected",
            (None, Some(_)) => "authenticated",
            (None, None) => "unauthenticated",
        });
        record
    }
}

/// What `prepare` hands to `check`: the hashing done, the DNS not yet.
pub struct Pending {
    plugin: String,
    sender: Option<String>,
    via: Via,
    forwarder: Option<String>,
    signatures: Vec<Result<Prepared, Unusable>>,
    arc: PendingArc,
    provider: Option<ProviderVerdict>,
}

enum PendingArc {
    None,
    Fail(String),
    Sets {
        /// The latest ARC-Message-Signature.
        message_signature: Box<Result<Prepared, Unusable>>,
        /// Every ARC-Seal, oldest first.
        seals: Vec<Result<Prepared, Unusable>>,
        first_hop: arc::Results,
    },
}

/// How long a key answer (or its absence) is reused: the same few senders sign most mail.
const KEY_CACHE_TTL: Duration = Duration::from_secs(600);
/// Names kept at most; the cache is emptied when full (a flood of made-up selectors cannot grow
/// it without bound).
const KEY_CACHE_SIZE: usize = 1024;

type KeyAnswer = Result<Vec<String>, DnsError>;

/// One check's key answers, and when it must stop waiting for more.
struct Lookups {
    answers: HashMap<String, KeyAnswer>,
    /// On tokio's clock, like the time-outs it bounds.
    deadline: tokio::time::Instant,
}

/// DKIM signatures checked per message, from the top (the most recent): enough for a sender's
/// own signature beside its provider's and a forwarder's; more is either odd or an attempt to make
/// us do work.
const MAX_SIGNATURES: usize = 8;

/// The configured rules and the resolver keys are looked up with.
pub struct Trust {
    settings: TrustSettings,
    resolver: Arc<dyn TxtResolver>,
    /// Answers that are not temporary failures, by name, with when they were fetched.
    keys: Mutex<HashMap<String, (Instant, KeyAnswer)>>,
}

impl Trust {
    pub fn new(settings: TrustSettings, resolver: Arc<dyn TxtResolver>) -> Self {
        Trust {
            settings,
            resolver,
            keys: Mutex::new(HashMap::new()),
        }
    }

    /// The key record at `name`: cached, or looked up within `dns_timeout_secs` and before
    /// `deadline`.
    async fn key(&self, name: &str, deadline: tokio::time::Instant) -> KeyAnswer {
        let cached = self
            .key_cache()
            .get(name)
            .filter(|(at, _)| at.elapsed() < KEY_CACHE_TTL)
            .map(|(_, answer)| answer.clone());
        if let Some(answer) = cached {
            return answer;
        }
        let limit = self
            .lookup_timeout()
            .min(deadline.saturating_duration_since(tokio::time::Instant::now()));
        let answer = tokio::time::timeout(limit, self.resolver.txt(name))
            .await
            .unwrap_or_else(|_| {
                Err(DnsError::Temporary {
                    name: name.to_owned(),
                    reason: format!(
                        "no answer within {:.1}s (trust.dns_timeout_secs, or the whole check's time)",
                        limit.as_secs_f64()
                    ),
                })
            });
        if !matches!(answer, Err(DnsError::Temporary { .. })) {
            let mut cache = self.key_cache();
            if cache.len() >= KEY_CACHE_SIZE {
                cache.clear();
            }
            cache.insert(name.to_owned(), (Instant::now(), answer.clone()));
        }
        answer
    }

    fn lookup_timeout(&self) -> Duration {
        Duration::from_secs(self.settings.dns_timeout_secs.max(1))
    }

    fn key_cache(&self) -> MutexGuard<'_, HashMap<String, (Instant, KeyAnswer)>> {
        // Entries are whole values: a panic elsewhere cannot leave one half-written.
        self.keys.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// With the real DNS: `trust.dns_servers`, or the system's.
    pub fn from_settings(settings: &TrustSettings) -> Result<Self, String> {
        let resolver = dns::StubResolver::new(
            &settings.dns_servers,
            Duration::from_secs(settings.dns_timeout_secs.max(1)),
        )?;
        Ok(Trust::new(settings.clone(), Arc::new(resolver)))
    }

    pub fn policy(&self, plugin: &str) -> TrustPolicy {
        self.settings
            .policies
            .get(plugin)
            .copied()
            .unwrap_or(self.settings.default_policy)
    }

    /// Looks up the keys and checks every prepared signature.
    pub async fn check(&self, pending: Pending) -> Verdict {
        // However many signatures a message carries, its look-ups together take at most two
        // look-ups' time: what is not answered by then is a temperror.
        let mut keys = Lookups {
            answers: HashMap::new(),
            deadline: tokio::time::Instant::now() + 2 * self.lookup_timeout(),
        };
        let sender_domain = pending.sender.as_deref().map(domain_of);
        let mut dkim = Vec::new();
        for signature in &pending.signatures {
            let mut result = self.verify(signature, &mut keys).await;
            result.aligned =
                matches!((&result.domain, sender_domain), (Some(d), Some(s)) if aligns(d, s));
            dkim.push(result);
        }
        let arc = match pending.arc {
            PendingArc::None => ArcResult {
                chain: "none".into(),
                ..ArcResult::default()
            },
            PendingArc::Fail(reason) => ArcResult {
                chain: "fail".into(),
                reason: Some(reason),
                ..ArcResult::default()
            },
            PendingArc::Sets {
                message_signature,
                seals,
                first_hop,
            } => {
                let first_sealer = seals
                    .first()
                    .and_then(|s| s.as_ref().ok())
                    .map(|s| s.domain.clone());
                let mut failure = None;
                let latest = self.verify(&message_signature, &mut keys).await;
                if latest.result != "pass" {
                    failure = Some((
                        latest.result.clone(),
                        format!(
                            "latest ARC-Message-Signature: {}",
                            latest.reason.unwrap_or_default()
                        ),
                    ));
                }
                for (n, seal) in seals.iter().enumerate().rev() {
                    if failure.is_some() {
                        break;
                    }
                    let checked = self.verify(seal, &mut keys).await;
                    if checked.result != "pass" {
                        failure = Some((
                            checked.result.clone(),
                            format!(
                                "ARC-Seal i={}: {}",
                                n + 1,
                                checked.reason.unwrap_or_default()
                            ),
                        ));
                    }
                }
                match failure {
                    None => ArcResult {
                        chain: "pass".into(),
                        reason: None,
                        first_sealer,
                        dkim_pass: first_hop.dkim_pass,
                        dmarc_pass: first_hop.dmarc_pass,
                    },
                    Some((result, reason)) => ArcResult {
                        chain: if result == "temperror" {
                            "temperror"
                        } else {
                            "fail"
                        }
                        .into(),
                        reason: Some(reason),
                        first_sealer,
                        ..ArcResult::default()
                    },
                }
            }
        };
        Verdict {
            plugin: pending.plugin,
            sender: pending.sender,
            via: pending.via,
            forwarder: pending.forwarder,
            dkim,
            arc,
            provider: pending.provider,
        }
    }

    async fn verify(
        &self,
        signature: &Result<Prepared, Unusable>,
        keys: &mut Lookups,
    ) -> SignatureResult {
        let prepared = match signature {
            Ok(p) => p,
            Err(unusable) => {
                return SignatureResult {
                    domain: unusable.domain.clone(),
                    selector: None,
                    result: "permerror".into(),
                    aligned: false,
                    reason: Some(unusable.reason.clone()),
                }
            }
        };
        let name = prepared.key_name();
        if !keys.answers.contains_key(&name) {
            let answer = self.key(&name, keys.deadline).await;
            keys.answers.insert(name.clone(), answer);
        }
        let (result, reason) = match &keys.answers[&name] {
            Ok(records) => match prepared.verify(records) {
                Ok(()) => ("pass", None),
                Err(reason) => ("fail", Some(reason)),
            },
            Err(e @ DnsError::NotFound(_)) => ("permerror", Some(e.to_string())),
            Err(e @ DnsError::Temporary { .. }) => ("temperror", Some(e.to_string())),
        };
        SignatureResult {
            domain: Some(prepared.domain.clone()),
            selector: Some(prepared.selector.clone()),
            result: result.into(),
            aligned: false,
            reason,
        }
    }

    /// Judges a verdict: the forwarder list first, then the plugin's policy.
    pub fn decide(&self, verdict: &Verdict) -> Decision {
        let policy = self.policy(&verdict.plugin);
        let sender_domain = verdict.sender.as_deref().map(domain_of);
        let aligned = |domain: &str| sender_domain.is_some_and(|s| aligns(domain, s));
        let authenticated_by = if verdict.dkim.iter().any(|s| s.result == "pass" && s.aligned) {
            Some("dkim")
        } else if verdict.via == Via::Direct
            && verdict.arc.chain == "pass"
            && verdict.arc.first_sealer.as_deref().is_some_and(|sealer| {
                self.settings
                    .trusted_arc_sealers
                    .iter()
                    .any(|t| t.eq_ignore_ascii_case(sealer))
            })
            && (verdict.arc.dkim_pass.iter().any(|d| aligned(d))
                || verdict.arc.dmarc_pass.iter().any(|d| aligned(d)))
        {
            Some("arc")
        } else if verdict.via == Via::Direct
            && verdict.provider.as_ref().is_some_and(|p| {
                p.author_dkim_pass || p.dkim_pass_domains.iter().any(|d| aligned(d))
            })
        {
            Some("provider")
        } else {
            None
        };
        let forwarder_allowed = match (
            &verdict.forwarder,
            self.settings.allowed_forwarders.is_empty(),
        ) {
            (Some(forwarder), false) => Some(
                self.settings
                    .allowed_forwarders
                    .iter()
                    .any(|allowed| same_mailbox(allowed, forwarder)),
            ),
            _ => None,
        };
        let rejection = if forwarder_allowed == Some(false) {
            Some(format!(
                "{REASON_PREFIX}forwarded by {}, which is not in trust.allowed_forwarders",
                verdict.forwarder.as_deref().unwrap_or_default()
            ))
        } else if policy == TrustPolicy::Require && authenticated_by.is_none() {
            Some(self.require_failure(verdict))
        } else {
            None
        };
        Decision {
            policy,
            authenticated_by,
            forwarder_allowed,
            rejection,
        }
    }

    fn require_failure(&self, verdict: &Verdict) -> String {
        let sender = verdict.sender.as_deref().unwrap_or("(no sender)");
        let domain = domain_of(sender);
        let plugin = &verdict.plugin;
        if verdict.has_temperror() {
            return format!(
                "{REASON_PREFIX}temperror: a DKIM/ARC key for {domain} could not be looked up now; \
                 the message is kept and `lm-ingest reparse` checks it again"
            );
        }
        let mut found = Vec::new();
        match verdict.via {
            Via::Quoted => found.push(
                "the original is quoted in a hand forward, so its signature is gone (forward it \
                 as an attachment, or auto-forward)"
                    .to_owned(),
            ),
            _ if verdict.dkim.is_empty() => found.push("no DKIM signature".to_owned()),
            _ => {}
        }
        for s in &verdict.dkim {
            found.push(format!(
                "DKIM d={} {}{}",
                s.domain.as_deref().unwrap_or("?"),
                if s.result == "pass" && !s.aligned {
                    "pass but not aligned"
                } else {
                    &s.result
                },
                s.reason
                    .as_deref()
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default()
            ));
        }
        if verdict.arc.chain != "none" {
            found.push(format!(
                "ARC {}{}{}",
                verdict.arc.chain,
                verdict
                    .arc
                    .first_sealer
                    .as_deref()
                    .map(|s| format!(" sealed first by {s}"))
                    .unwrap_or_default(),
                verdict
                    .arc
                    .reason
                    .as_deref()
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default()
            ));
        }
        if let Some(p) = &verdict.provider {
            found.push(format!(
                "{} dkim={} spf={}",
                p.provider,
                p.dkim.as_deref().unwrap_or("none"),
                p.spf.as_deref().unwrap_or("none")
            ));
        }
        format!(
            "{REASON_PREFIX}plugin {plugin} requires mail authenticated as {domain} (trust.policies); \
             {}",
            found.join("; ")
        )
    }
}

/// `trust.policies` entries that cannot mean what they say: a plugin id that does not exist (a
/// typo would silently leave that plugin on the default policy) or a webhook plugin.
pub fn policy_errors(settings: &TrustSettings, registry: &Registry) -> Vec<String> {
    settings
        .policies
        .keys()
        .filter_map(|id| match registry.get(id) {
            None => Some(format!("trust.policies.{id}: no plugin has this id")),
            Some(p) if p.kind() != Kind::Email => Some(format!(
                "trust.policies.{id}: a webhook plugin; sender trust applies to email plugins"
            )),
            Some(_) => None,
        })
        .collect()
}

/// Prepares the trust check of an email that `plugin` claimed, or `None` when there is nothing
/// to check (not an email, or no email plugin claimed it). `route` names the provider whose
/// verdicts are in `extracted.meta`.
pub fn prepare(
    registry: &Registry,
    extracted: &Extracted,
    route: &str,
    plugin_id: Option<&str>,
) -> Option<Pending> {
    let Payload::Email(email) = &extracted.payload else {
        return None;
    };
    let plugin = registry.get(plugin_id?)?;
    if plugin.kind() != Kind::Email {
        return None;
    }
    let (sender, via, depth) = claim(plugin, email, 0).unwrap_or((None, Via::Direct, 0));
    let forwarder = match via {
        Via::Direct => email
            .header("x-forwarded-for")
            .or_else(|| email.header("resent-from"))
            .and_then(first_address),
        Via::Attached | Via::Quoted => email.envelope.from.clone(),
    };
    // The message whose signatures can vouch for the original: the mail itself, or the
    // attachment it carries.
    let carrier = match (via, extracted.mime.as_deref()) {
        (Via::Quoted, _) | (_, None) => None,
        (_, Some(mime)) => attached_raw(mime, depth).map(|raw| Message::split(&raw)),
    };
    let signatures = carrier
        .as_ref()
        .map(|message| {
            message
                .headers
                .iter()
                .enumerate()
                .filter(|(_, (name, _))| name.eq_ignore_ascii_case("dkim-signature"))
                .take(MAX_SIGNATURES)
                .map(|(index, _)| dkim::prepare(message, index, dkim::Kind::Dkim))
                .collect()
        })
        .unwrap_or_default();
    let arc = match (&carrier, via) {
        (Some(message), Via::Direct) => match arc::chain(message) {
            arc::Chain::None => PendingArc::None,
            arc::Chain::Fail(reason) => PendingArc::Fail(reason),
            arc::Chain::Sets(sets) => PendingArc::Sets {
                message_signature: Box::new(dkim::prepare(
                    message,
                    sets[sets.len() - 1][1],
                    dkim::Kind::ArcMessage,
                )),
                seals: (0..sets.len())
                    .map(|n| dkim::prepare_seal(message, &sets, n))
                    .collect(),
                first_hop: arc::results(&dkim::field_value(&message.headers[sets[0][0]].1)),
            },
        },
        _ => PendingArc::None,
    };
    Some(Pending {
        plugin: plugin.id().to_owned(),
        sender,
        via,
        forwarder,
        signatures,
        arc,
        provider: provider_verdict(route, &extracted.meta),
    })
}

/// Which sender the plugin claimed, mirroring `Registry::parse_parsed_email`: the mail's own
/// sender, else the attached original's (how many attachments deep), else the quoted one's.
fn claim(plugin: &dyn Plugin, email: &Email, depth: usize) -> Option<(Option<String>, Via, usize)> {
    let from = email.envelope.from.as_deref().unwrap_or("");
    if !from.is_empty() && plugin.claims(from, &email.envelope.subject) {
        let via = if depth == 0 {
            Via::Direct
        } else {
            Via::Attached
        };
        return Some((Some(from.to_owned()), via, depth));
    }
    match &email.original {
        Some(Original::Attached(inner)) => claim(plugin, inner, depth + 1),
        Some(Original::Quoted(original)) => {
            let from = original.from.as_deref().unwrap_or("");
            (!from.is_empty() && plugin.claims(from, &original.subject))
                .then(|| (Some(from.to_owned()), Via::Quoted, depth))
        }
        None => None,
    }
}

/// The raw bytes of the message attached `depth` levels down (0: `mime` itself), found as
/// `Email::parse` finds it: the first `message/rfc822` part.
fn attached_raw(mime: &[u8], depth: usize) -> Option<Vec<u8>> {
    let mut raw = mime.to_vec();
    for _ in 0..depth {
        let parsed = mailparse::parse_mail(&raw).ok()?;
        raw = first_attached(&parsed, 0)?;
    }
    Some(raw)
}

fn first_attached(part: &mailparse::ParsedMail<'_>, depth: usize) -> Option<Vec<u8>> {
    if depth > 32 {
        return None;
    }
    if part.ctype.mimetype.eq_ignore_ascii_case("message/rfc822") {
        return part.get_body_raw().ok();
    }
    part.subparts
        .iter()
        .find_map(|sub| first_attached(sub, depth + 1))
}

/// The SPF/DKIM verdicts a provider put in `meta` (see `inbound::*::extract`).
fn provider_verdict(route: &str, meta: &Value) -> Option<ProviderVerdict> {
    let text = |name: &str| meta.get(name).and_then(Value::as_str).map(str::to_owned);
    let first_word = |v: Option<String>| {
        v.and_then(|v| v.split_whitespace().next().map(str::to_ascii_lowercase))
    };
    let verdict = match route {
        "mailgun" => ProviderVerdict {
            provider: "mailgun".into(),
            spf: first_word(text("spf")),
            dkim: first_word(text("dkim")),
            ..ProviderVerdict::default()
        },
        "postmark" => {
            let tests: Vec<String> = text("spam_tests")
                .unwrap_or_default()
                .split(',')
                .map(|t| t.trim().to_ascii_uppercase())
                .collect();
            let has = |name: &str| tests.iter().any(|t| t == name);
            let dkim = if has("DKIM_VALID_AU") || has("DKIM_VALID") {
                Some("pass")
            } else if has("DKIM_INVALID") || has("DKIM_SIGNED") {
                Some("fail")
            } else {
                None
            };
            ProviderVerdict {
                provider: "postmark".into(),
                spf: first_word(text("spf")),
                dkim: dkim.map(str::to_owned),
                author_dkim_pass: has("DKIM_VALID_AU"),
                ..ProviderVerdict::default()
            }
        }
        "sendgrid" => {
            // `{@example.com : pass, @other.com : fail}`
            let raw = text("dkim");
            let results: Vec<(String, String)> = raw
                .as_deref()
                .unwrap_or_default()
                .trim_matches(|c| c == '{' || c == '}')
                .split(',')
                .filter_map(|pair| {
                    let (domain, result) = pair.split_once(':')?;
                    Some((
                        domain.trim().trim_start_matches('@').to_ascii_lowercase(),
                        result.trim().to_ascii_lowercase(),
                    ))
                })
                .collect();
            ProviderVerdict {
                provider: "sendgrid".into(),
                spf: first_word(text("spf")),
                dkim: raw,
                dkim_pass_domains: results
                    .into_iter()
                    .filter(|(_, r)| r == "pass")
                    .map(|(d, _)| d)
                    .collect(),
                ..ProviderVerdict::default()
            }
        }
        _ => return None,
    };
    Some(verdict)
}

/// The first address in a header like Gmail's `X-Forwarded-For: user@gmail.com ingest@host`.
fn first_address(value: &str) -> Option<String> {
    value
        .split(|c: char| c.is_whitespace() || c == ',')
        .map(|word| word.trim_matches(|c| c == '<' || c == '>'))
        .find(|word| word.contains('@'))
        .map(str::to_ascii_lowercase)
}

fn domain_of(address: &str) -> &str {
    address.rsplit('@').next().unwrap_or(address)
}

/// `sub` is `parent` or one of its subdomains.
pub fn within(sub: &str, parent: &str) -> bool {
    let (sub, parent) = (sub.trim_end_matches('.'), parent.trim_end_matches('.'));
    sub.eq_ignore_ascii_case(parent)
        || (sub.len() > parent.len()
            && sub.as_bytes()[sub.len() - parent.len() - 1] == b'.'
            && sub[sub.len() - parent.len()..].eq_ignore_ascii_case(parent))
}

/// Relaxed alignment (as DMARC's, without a public-suffix list): one domain is the other or a
/// subdomain of it, and the shorter is not a top-level domain.
pub fn aligns(a: &str, b: &str) -> bool {
    let shorter = if a.len() <= b.len() { a } else { b };
    shorter.contains('.') && (within(a, b) || within(b, a))
}

/// Same mailbox, ignoring case and a `+tag` in the local part (Gmail's auto-forward adds one).
fn same_mailbox(a: &str, b: &str) -> bool {
    let strip = |address: &str| {
        let address = address.trim().to_ascii_lowercase();
        match address.rsplit_once('@') {
            Some((local, domain)) => {
                format!("{}@{domain}", local.split('+').next().unwrap_or(local))
            }
            None => address,
        }
    };
    strip(a) == strip(b)
}

#[cfg(test)]
mod tests;
