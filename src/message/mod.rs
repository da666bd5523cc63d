//! Inbound messages as the parse engine sees them: emails and JSON webhooks.

pub mod email;
pub mod forward;
pub mod html;
pub mod webhook;

use chrono::{DateTime, NaiveDateTime, Utc};

pub use email::{Email, EmailError, EmailOptions, Envelope, HeadersNeeded, Original};
pub use webhook::{Webhook, WebhookError};

/// When a message was sent. Forwarding clients often print a local time with no zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageTime {
    Utc(DateTime<Utc>),
    Local(NaiveDateTime),
}

impl MessageTime {
    pub fn utc(&self) -> Option<DateTime<Utc>> {
        match self {
            MessageTime::Utc(t) => Some(*t),
            MessageTime::Local(_) => None,
        }
    }
}

/// A message of either kind.
#[derive(Debug, Clone)]
pub enum Message {
    Email(Box<Email>),
    Webhook(Webhook),
}
