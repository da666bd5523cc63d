//! `POST /inbound/email`: a raw RFC 822 message as the body (Cloudflare Email Workers, Gmail Apps
//! Script, procmail, curl).

use serde_json::json;

use super::{email_dedupe_key, Extracted, Malformed, Payload};
use crate::message::Email;

pub fn extract(body: &[u8]) -> Result<Extracted, Malformed> {
    let email = Email::parse(body).map_err(|e| Malformed(e.to_string()))?;
    Ok(Extracted {
        dedupe_key: email_dedupe_key(&email, body),
        meta: json!({}),
        mime: Some(body.to_vec()),
        payload: Payload::Email(Box::new(email)),
    })
}
