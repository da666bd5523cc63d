//! `POST /hooks/{plugin}`: a JSON webhook for a webhook plugin.

use serde_json::{json, Value};

use super::{body_key, Extracted, Malformed, Payload};
use crate::message::Webhook;

/// Request headers never kept with a message: credentials, and the secret header a plugin may be
/// configured to authenticate with.
const NEVER_STORED: &[&str] = &["authorization", "proxy-authorization", "cookie"];

/// Headers worth keeping for re-parsing: all but credentials (and `secret_header`, if any).
pub fn storable_headers(
    headers: &[(String, String)],
    secret_header: Option<&str>,
) -> Vec<(String, String)> {
    headers
        .iter()
        .filter(|(k, _)| {
            !NEVER_STORED.contains(&k.as_str())
                && secret_header.is_none_or(|s| !k.eq_ignore_ascii_case(s))
        })
        .cloned()
        .collect()
}

/// `headers` should already be the storable ones. `fetched` is the resource the webhook points at,
/// for plugins that declare `[fetch]`: rules then read `{"event": <body>, "resource": <fetched>}`,
/// and the fetched document is kept in `meta` so re-parsing needs no network.
pub fn extract(
    plugin: &str,
    headers: Vec<(String, String)>,
    body: &[u8],
    fetched: Option<Value>,
) -> Result<Extracted, Malformed> {
    let mut hook = Webhook::parse(headers, body).map_err(|e| Malformed(e.to_string()))?;
    // The Standard Webhooks id names one event across retries; otherwise the body is the event.
    let dedupe_key = match hook.header("webhook-id") {
        Some(id) if !id.trim().is_empty() => format!("hook:{plugin}:{}", id.trim()),
        _ => format!("hook:{plugin}:{}", body_key(body)),
    };
    let mut meta = json!({ "headers": hook.headers.iter().map(|(k, v)| [k.as_str(), v.as_str()]).collect::<Vec<_>>() });
    if let Some(resource) = fetched {
        meta["fetched"] = resource.clone();
        hook.body = json!({ "event": hook.body, "resource": resource });
    }
    Ok(Extracted {
        dedupe_key,
        meta,
        mime: None,
        payload: Payload::Webhook(hook),
    })
}
