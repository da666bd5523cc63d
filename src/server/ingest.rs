//! The pipeline every ingest route shares once a request is authenticated and read: parse,
//! commit to the store, answer with what happened.

use std::collections::HashMap;
use std::sync::Arc;

use actix_web::web::Bytes;
use actix_web::HttpResponse;
use chrono::Utc;
use serde_json::json;

use super::error::ApiError;
use super::metrics::Metrics;
use crate::inbound::{body_key, Extracted, Malformed, Payload};
use crate::parse::{Outcome, Registry};
use crate::settings::{BodyLimits, MailgunSettings, Settings};
use crate::store::{sender_domain, DriftNote, MessageStatus, NewMessage, Store};
use crate::trust::{self, Trust};
use crate::verify::Verifier;

/// Parsing bodies larger than this moves off the HTTP worker so other requests are not held up.
const INLINE_PARSE_LIMIT: usize = 256 * 1024;

pub struct HookSource {
    pub verifier: Box<dyn Verifier>,
    /// A header carrying a shared secret: never stored with the message.
    pub secret_header: Option<String>,
}

pub struct AppState {
    pub registry: Arc<Registry>,
    pub store: Arc<Store>,
    pub metrics: Metrics,
    pub limits: BodyLimits,
    /// `/inbound/email` and hook plugins with no configuration.
    pub bearer: Box<dyn Verifier>,
    pub postmark: Box<dyn Verifier>,
    pub sendgrid: Box<dyn Verifier>,
    pub mailgun: MailgunSettings,
    /// Every webhook plugin's verifier, by plugin id.
    pub hooks: HashMap<String, HookSource>,
    /// For webhook plugins that fetch the resource an event points at.
    pub http: reqwest::Client,
    /// `None` when no admin token is set: the admin routes are refused.
    pub admin: Option<Box<dyn Verifier>>,
    pub settings: Settings,
    /// The process's Lunch Money rate limiter, shared with the outbox.
    pub limiter: Arc<crate::deliver::limiter::RateLimiter>,
    /// Sender trust: DKIM/ARC checks, the forwarder list and each plugin's policy.
    pub trust: Arc<Trust>,
}

/// A request that passed authentication.
pub struct Accepted {
    pub route: &'static str,
    pub source: Option<String>,
    pub content_type: String,
    pub body: Bytes,
}

impl AppState {
    /// Extracts (with `extract`), parses and stores a request, then answers.
    pub async fn ingest<F>(&self, request: Accepted, extract: F) -> Result<HttpResponse, ApiError>
    where
        F: FnOnce(&[u8]) -> Result<Extracted, Malformed> + Send + 'static,
    {
        self.metrics.received(request.route);
        let registry = Arc::clone(&self.registry);
        let body = request.body.clone();
        let source = request.source.clone();
        let route = request.route;
        let work = move || read(&registry, route, source.as_deref(), &body, extract);
        let (outcome, dedupe_key, mut meta, sender, pending) =
            if request.body.len() > INLINE_PARSE_LIMIT {
                actix_web::web::block(work)
                    .await
                    .map_err(|_| ApiError::ShuttingDown)?
            } else {
                work()
            };
        let mut status = match &outcome {
            Ok(parsed) => MessageStatus::from_outcome(parsed.status),
            Err(_) => MessageStatus::Rejected,
        };
        let (plugin, mut reason, mut transactions, drift) = match outcome {
            Ok(parsed) => {
                let drift = sender.map(|sender| DriftNote {
                    sender,
                    missing_fields: parsed.missing_fields,
                });
                (parsed.plugin, parsed.reason, parsed.transactions, drift)
            }
            Err(malformed) => (None, Some(malformed.0), Vec::new(), None),
        };
        if let Some(pending) = pending {
            let verdict = self.trust.check(pending).await;
            let decision = self.trust.decide(&verdict);
            meta["trust"] = decision.record(&verdict);
            if let Some(rejection) = decision.rejection {
                status = MessageStatus::Rejected;
                reason = Some(rejection);
                transactions.clear();
            }
        }
        let receipt = self
            .store
            .ingest(NewMessage {
                received_at: Utc::now(),
                route: request.route.to_owned(),
                source: request.source,
                dedupe_key,
                content_type: request.content_type,
                raw: request.body.to_vec(),
                meta,
                status,
                plugin: plugin.clone(),
                reason: reason.clone(),
                transactions,
                drift,
            })
            .await?;
        let label = if receipt.duplicate {
            "duplicate"
        } else {
            metric_status(receipt.status)
        };
        self.metrics
            .outcome(request.route, plugin.as_deref(), label);
        tracing::info!(
            route = request.route,
            id = receipt.id,
            status = label,
            plugin = plugin.as_deref().unwrap_or(""),
            transactions = receipt.transactions,
            new_transactions = receipt.new_transactions,
            "message stored"
        );
        // Refused by sender trust: answered 200 so the provider does not retry what will be
        // refused again; the reason is in the answer and in the store.
        let refused_by_trust = receipt.status == MessageStatus::Rejected
            && match (receipt.duplicate, &reason) {
                (false, reason) => reason.as_deref().is_some_and(trust::is_trust_reason),
                (true, _) => self
                    .store
                    .message(receipt.id)?
                    .and_then(|m| m.reason)
                    .is_some_and(|r| trust::is_trust_reason(&r)),
            };
        if receipt.status == MessageStatus::Rejected && !refused_by_trust {
            return Err(ApiError::Rejected {
                id: receipt.id,
                reason: reason.unwrap_or_else(|| "rejected".into()),
            });
        }
        let answered = if receipt.duplicate {
            "duplicate"
        } else {
            receipt.status.as_str()
        };
        Ok(HttpResponse::Ok().json(json!({
            "id": receipt.id,
            "status": answered,
            "stored_status": receipt.status,
            "plugin": plugin,
            "reason": reason,
            "transactions": receipt.transactions,
            "new_transactions": receipt.new_transactions,
            "updated_transactions": receipt.updated_transactions,
            "voided_transactions": receipt.voided_transactions,
        })))
    }
}

/// The outcome, the dedupe key, the metadata, the sender for the drift counts, and the
/// hashed half of the trust check.
type Read = (
    Result<Outcome, Malformed>,
    String,
    serde_json::Value,
    Option<String>,
    Option<trust::Pending>,
);

/// Extraction, parsing and the hashing half of the trust check, on whichever thread the caller
/// chose.
fn read<F>(registry: &Registry, route: &str, source: Option<&str>, body: &[u8], extract: F) -> Read
where
    F: FnOnce(&[u8]) -> Result<Extracted, Malformed>,
{
    match extract(body) {
        Ok(extracted) => {
            let outcome = match (&extracted.payload, source) {
                (Payload::Email(email), _) => registry.parse_parsed_email(email),
                (Payload::Webhook(hook), Some(plugin)) => match registry.get(plugin) {
                    Some(p) => p.parse_webhook(hook),
                    None => Outcome::error(None, format!("unknown plugin {plugin:?}")),
                },
                (Payload::Webhook(_), None) => Outcome::error(None, "webhook without a plugin"),
            };
            let sender = drift_sender(&extracted.payload, source);
            let pending = trust::prepare(registry, &extracted, route, outcome.plugin.as_deref());
            (
                Ok(outcome),
                extracted.dedupe_key,
                extracted.meta,
                Some(sender),
                pending,
            )
        }
        // Unreadable input is still kept (once, by its route and bytes) so it can be looked at.
        // The route is part of the key: the same bytes may be a good message on another route
        // (an email without a Message-ID is keyed by its bytes too), which must not be answered
        // as a duplicate of this rejection.
        Err(malformed) => (
            Err(malformed),
            format!("{route}:{}", body_key(body)),
            json!({}),
            None,
            None,
        ),
    }
}

/// Who a message's template belongs to, for the drift counts: the domain of the original
/// sender inside a forward, else of the sender; `hook:<plugin>` for a webhook.
fn drift_sender(payload: &Payload, source: Option<&str>) -> String {
    match payload {
        Payload::Email(email) => {
            let from = email
                .original_envelope()
                .and_then(|e| e.from.as_deref())
                .or(email.envelope.from.as_deref());
            sender_domain(from)
        }
        Payload::Webhook(_) => format!("hook:{}", source.unwrap_or("unknown")),
    }
}

fn metric_status(status: MessageStatus) -> &'static str {
    match status {
        MessageStatus::Queued => "parsed",
        other => other.as_str(),
    }
}
