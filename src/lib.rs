//! lm-ingest: receives notification emails and webhooks, parses them into transactions with
//! data-driven plugins, and delivers them to Lunch Money.

pub mod cli;
pub mod deliver;
pub mod inbound;
pub mod message;
pub mod money;
pub mod ops;
pub mod parse;
pub mod redact;
pub mod server;
pub mod settings;
pub mod store;
pub mod transaction;
pub mod trust;
pub mod verify;

#[cfg(test)]
mod test_rng;
