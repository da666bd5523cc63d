//! `POST /inbound/postmark`: Postmark's inbound JSON. `RawEmail` (when the server has "include raw
//! email content" enabled) is the whole message; otherwise it is rebuilt from the parsed fields.

use serde_json::{json, Value};

use super::{email_dedupe_key, Extracted, Malformed, Payload};
use crate::message::Email;

pub fn extract(body: &[u8]) -> Result<Extracted, Malformed> {
    let doc: Value =
        serde_json::from_slice(body).map_err(|e| Malformed(format!("invalid JSON: {e}")))?;
    if !doc.is_object() {
        return Err(Malformed("expected a Postmark inbound JSON object".into()));
    }
    let field = |name: &str| {
        doc.get(name)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    };
    let headers: Vec<(String, String)> = doc
        .get("Headers")
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .filter_map(|h| {
                    Some((
                        h.get("Name")?.as_str()?.to_owned(),
                        h.get("Value")?.as_str()?.to_owned(),
                    ))
                })
                .collect()
        })
        .unwrap_or_default();
    let (email, key_bytes) = match field("RawEmail") {
        Some(raw) => (
            Email::parse(raw.as_bytes()).map_err(|e| Malformed(format!("RawEmail: {e}")))?,
            raw.as_bytes().to_vec(),
        ),
        None => {
            let mut all = headers.clone();
            let from = match (
                doc.pointer("/FromFull/Email").and_then(Value::as_str),
                doc.pointer("/FromFull/Name").and_then(Value::as_str),
            ) {
                (Some(addr), Some(name)) if !name.is_empty() => {
                    Some(format!("\"{}\" <{addr}>", name.replace('"', "")))
                }
                (Some(addr), _) => Some(addr.to_owned()),
                _ => field("From").map(str::to_owned),
            };
            let Some(from) = from else {
                return Err(Malformed(
                    "no From/FromFull: not a Postmark inbound message".into(),
                ));
            };
            for (header, value) in [
                ("From", Some(from)),
                ("Subject", field("Subject").map(str::to_owned)),
                ("Date", field("Date").map(str::to_owned)),
            ] {
                if let Some(value) = value {
                    all.retain(|(k, _)| !k.eq_ignore_ascii_case(header));
                    all.push((header.to_owned(), value));
                }
            }
            let text = field("TextBody").map(str::to_owned);
            let html = field("HtmlBody").map(str::to_owned);
            (Email::from_parts(all, text, html), body.to_vec())
        }
    };
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    let dedupe_key = match (&email.envelope.message_id, field("MessageID")) {
        (Some(_), _) => email_dedupe_key(&email, &key_bytes),
        (None, Some(postmark_id)) => format!("postmark:{postmark_id}"),
        (None, None) => email_dedupe_key(&email, &key_bytes),
    };
    Ok(Extracted {
        dedupe_key,
        meta: json!({
            "spf": header("Received-SPF"),
            "spam_tests": header("X-Spam-Tests"),
            "postmark_message_id": field("MessageID"),
        }),
        mime: field("RawEmail").map(|raw| raw.as_bytes().to_vec()),
        payload: Payload::Email(Box::new(email)),
    })
}
