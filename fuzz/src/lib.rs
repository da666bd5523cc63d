//! What each fuzz target does with its input, shared with the stable test suite
//! (tests/fuzz_replay.rs includes this file) so CI runs the targets over the seed corpus without
//! nightly. Every entry point must return normally for any input: a panic is a finding.

use std::sync::OnceLock;

use lm_ingest::inbound::{email, form as form_body, hooks, mailgun, postmark, sendgrid, Payload};
use lm_ingest::parse::{rules as rule_files, Kind, Registry};

fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(|| Registry::load(None).expect("built-in plugins compile"))
}

fn webhook_plugins() -> &'static [String] {
    static IDS: OnceLock<Vec<String>> = OnceLock::new();
    IDS.get_or_init(|| {
        let registry = registry();
        registry
            .ids()
            .filter(|id| registry.get(id).is_some_and(|p| p.kind() == Kind::Webhook))
            .map(str::to_owned)
            .collect()
    })
}

/// A raw email as `POST /inbound/email` reads it, then through every email plugin.
pub fn email(data: &[u8]) {
    if let Ok(extracted) = email::extract(data) {
        if let Payload::Email(parsed) = &extracted.payload {
            let _ = registry().parse_parsed_email(parsed);
        }
    }
    let _ = registry().parse_email(data);
}

/// A JSON webhook for one bank plugin (chosen by the first byte), as `POST /hooks/{plugin}` reads
/// it. Odd second bytes also hand the body to the plugin as the fetched resource, the path
/// plugins with `[fetch]` take.
pub fn webhook(data: &[u8]) {
    let [which, mode, body @ ..] = data else {
        return;
    };
    let plugins = webhook_plugins();
    let plugin = plugins[usize::from(*which) % plugins.len()].as_str();
    let headers = vec![
        ("content-type".to_owned(), "application/json".to_owned()),
        ("webhook-id".to_owned(), format!("fuzz-{which}")),
    ];
    let _ = registry().parse_webhook(plugin, headers.clone(), body);
    let fetched = if mode % 2 == 1 {
        serde_json::from_slice(body).ok()
    } else {
        None
    };
    if let Ok(extracted) = hooks::extract(plugin, headers, body, fetched) {
        if let (Payload::Webhook(hook), Some(p)) = (&extracted.payload, registry().get(plugin)) {
            let _ = p.parse_webhook(hook);
            let _ = p.fetch_target(hook);
        }
    }
}

/// A rule file as the TOML rule compiler reads it.
pub fn rules(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = rule_files::compile("fuzz.toml", "fuzz", text);
    }
}

/// A provider's form post: the first line is the Content-Type, the rest the body, read as the
/// Mailgun, SendGrid and Postmark routes read it.
pub fn form(data: &[u8]) {
    let split = data.iter().position(|&b| b == b'\n').unwrap_or(data.len());
    let content_type = String::from_utf8_lossy(&data[..split]);
    let body = data.get(split + 1..).unwrap_or_default();
    let _ = form_body::parse(&content_type, body);
    for extracted in [
        mailgun::extract(&content_type, body),
        sendgrid::extract(&content_type, body),
        postmark::extract(body),
    ]
    .into_iter()
    .flatten()
    {
        if let Payload::Email(parsed) = &extracted.payload {
            let _ = registry().parse_parsed_email(parsed);
        }
    }
}
