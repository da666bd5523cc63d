//! `POST /inbound/sendgrid`: SendGrid Inbound Parse, a multipart form. In raw mode ("POST the raw,
//! full MIME message") the message is the `email` field; in parsed mode it is taken apart into
//! `headers`, `text` and `html`, each in the charset that `charsets` names.

use serde_json::{json, Value};

use super::form::{self, Fields};
use super::{email_dedupe_key, Extracted, Malformed, Payload};
use crate::message::Email;

pub fn extract(content_type: &str, body: &[u8]) -> Result<Extracted, Malformed> {
    let fields = form::parse(content_type, body)?;
    let (email, key_bytes) = match form::bytes(&fields, "email") {
        Some(raw) => (
            Email::parse(raw).map_err(|e| Malformed(format!("email: {e}")))?,
            raw.to_vec(),
        ),
        None => {
            let charsets: Value = form::text(&fields, "charsets")
                .and_then(|c| serde_json::from_str(&c).ok())
                .unwrap_or(Value::Null);
            let decoded = |name: &str| decode(&fields, &charsets, name);
            let header_block = decoded("headers").ok_or_else(|| {
                Malformed("neither email nor headers: not a SendGrid Inbound Parse post".into())
            })?;
            let mut block = header_block.replace("\r\n", "\n").into_bytes();
            block.extend_from_slice(b"\n\n");
            let (parsed, _) =
                mailparse::parse_headers(&block).map_err(|e| Malformed(format!("headers: {e}")))?;
            let headers = parsed
                .iter()
                .map(|h| (h.get_key(), h.get_value()))
                .collect();
            let text = decoded("text");
            let html = decoded("html");
            let key_bytes = [
                header_block.as_str(),
                text.as_deref().unwrap_or(""),
                html.as_deref().unwrap_or(""),
            ]
            .concat()
            .into_bytes();
            (Email::from_parts(headers, text, html), key_bytes)
        }
    };
    Ok(Extracted {
        dedupe_key: email_dedupe_key(&email, &key_bytes),
        meta: json!({
            "spf": form::text(&fields, "SPF"),
            "dkim": form::text(&fields, "dkim"),
            "spam_score": form::text(&fields, "spam_score"),
            "envelope": form::text(&fields, "envelope").and_then(|e| serde_json::from_str::<Value>(&e).ok()),
        }),
        mime: form::bytes(&fields, "email").map(<[u8]>::to_vec),
        payload: Payload::Email(Box::new(email)),
    })
}

/// A field's text in the charset SendGrid declared for it (UTF-8 when none or unknown).
fn decode(fields: &Fields, charsets: &Value, name: &str) -> Option<String> {
    let bytes = form::bytes(fields, name)?;
    let label = charsets
        .get(name)
        .and_then(Value::as_str)
        .unwrap_or("utf-8");
    Some(match charset::Charset::for_label(label.as_bytes()) {
        Some(cs) => cs.decode_without_bom_handling(bytes).0.into_owned(),
        None => String::from_utf8_lossy(bytes).into_owned(),
    })
}
