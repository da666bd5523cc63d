//! The inbound edge: each provider's request format, turned into a message for the parse engine.
//!
//! Extraction is a pure function of the request's content type and body, so the same code reads a
//! request when it arrives and when stored input is parsed again.

pub mod email;
pub mod form;
pub mod hooks;
pub mod mailgun;
pub mod postmark;
pub mod sendgrid;
pub mod stored;

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::message::{Email, Webhook};

/// What a request carried.
#[derive(Debug)]
pub enum Payload {
    Email(Box<Email>),
    Webhook(Webhook),
}

/// A request's message, how to recognise it again, and what the provider told us about it.
#[derive(Debug)]
pub struct Extracted {
    pub payload: Payload,
    /// Same message, same key: `msgid:<Message-ID>`, a provider event id, or `sha256:<body>`.
    pub dedupe_key: String,
    /// Provider verdicts (SPF, DKIM, spam) and ids worth keeping with the message.
    pub meta: Value,
    /// The whole message as it was sent (with its DKIM signatures), when the request carried it
    /// rather than parts a provider took apart.
    pub mime: Option<Vec<u8>>,
}

/// A request whose body is not what its route expects.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Malformed(pub String);

/// The dedupe key of an email: its Message-ID when it has one, else the hash of its bytes.
pub fn email_dedupe_key(email: &Email, bytes: &[u8]) -> String {
    match &email.envelope.message_id {
        Some(id) => format!("msgid:{id}"),
        None => body_key(bytes),
    }
}

pub fn body_key(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}
