//! `POST /inbound/mailgun`: Mailgun Routes' `forward()` posts a form. With a route URL ending in
//! `mime` the whole message is in `body-mime`; otherwise Mailgun sends it taken apart
//! (`message-headers`, `body-plain`, `body-html`). The signature fields cover only
//! `timestamp + token`, so the route also refuses replayed tokens.

use serde_json::{json, Value};

use super::form::{self, Fields};
use super::{email_dedupe_key, Extracted, Malformed, Payload};
use crate::message::Email;

pub struct Signature {
    pub timestamp: String,
    pub token: String,
    pub signature: String,
}

pub fn signature(fields: &Fields) -> Option<Signature> {
    Some(Signature {
        timestamp: form::text(fields, "timestamp")?,
        token: form::text(fields, "token")?,
        signature: form::text(fields, "signature")?,
    })
}

pub fn extract(content_type: &str, body: &[u8]) -> Result<Extracted, Malformed> {
    extract_fields(&form::parse(content_type, body)?)
}

pub fn extract_fields(fields: &Fields) -> Result<Extracted, Malformed> {
    let (email, key_bytes) = match form::bytes(fields, "body-mime") {
        Some(mime) => (
            Email::parse(mime).map_err(|e| Malformed(format!("body-mime: {e}")))?,
            mime.to_vec(),
        ),
        None => {
            let headers = message_headers(fields)?;
            let text = form::text(fields, "body-plain");
            let html = form::text(fields, "body-html");
            let key_bytes = [text.as_deref().unwrap_or(""), html.as_deref().unwrap_or("")]
                .concat()
                .into_bytes();
            (Email::from_parts(headers, text, html), key_bytes)
        }
    };
    let verdict = |name: &str| {
        email
            .header(name)
            .map(str::to_owned)
            .or_else(|| form::text(fields, name))
    };
    let meta = json!({
        "spf": verdict("X-Mailgun-Spf"),
        "dkim": verdict("X-Mailgun-Dkim-Check-Result"),
        "recipient": form::text(fields, "recipient"),
    });
    Ok(Extracted {
        dedupe_key: email_dedupe_key(&email, &key_bytes),
        meta,
        mime: form::bytes(fields, "body-mime").map(<[u8]>::to_vec),
        payload: Payload::Email(Box::new(email)),
    })
}

/// `message-headers` is a JSON list of `[name, value]` pairs; the top-level `from` and `subject`
/// fields fill in when it is missing.
fn message_headers(fields: &Fields) -> Result<Vec<(String, String)>, Malformed> {
    let mut headers = Vec::new();
    if let Some(text) = form::text(fields, "message-headers") {
        let pairs: Vec<Value> = serde_json::from_str(&text)
            .map_err(|e| Malformed(format!("message-headers is not a JSON list: {e}")))?;
        for pair in pairs {
            if let (Some(name), Some(value)) = (
                pair.get(0).and_then(Value::as_str),
                pair.get(1).and_then(Value::as_str),
            ) {
                headers.push((name.to_owned(), value.to_owned()));
            }
        }
    }
    for (field, header) in [
        ("from", "From"),
        ("subject", "Subject"),
        ("Message-Id", "Message-ID"),
        ("Date", "Date"),
    ] {
        if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case(header)) {
            if let Some(value) = form::text(fields, field) {
                headers.push((header.to_owned(), value));
            }
        }
    }
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("from")) {
        return Err(Malformed(
            "neither body-mime nor message-headers/from: not a Mailgun message".into(),
        ));
    }
    Ok(headers)
}
