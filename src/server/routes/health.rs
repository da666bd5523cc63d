//! Liveness, readiness and metrics.

use actix_web::{web, HttpResponse};
use serde_json::json;

use crate::server::ingest::AppState;

/// The process is up and serving.
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

/// Ready when the store takes a real write.
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    match state.store.ping().await {
        Ok(()) => HttpResponse::Ok().json(json!({ "status": "ready" })),
        Err(e) => {
            tracing::warn!(error = %e, "store not writable");
            HttpResponse::ServiceUnavailable()
                .json(json!({ "status": "unavailable", "reason": e.to_string() }))
        }
    }
}

pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    let mut text = state.metrics.render(state.store.size_bytes());
    // A store that cannot be read leaves the drift counters out; the rest still answers.
    match state.store.drift_counts() {
        Ok(counts) => text.push_str(&crate::server::metrics::render_drift(&counts)),
        Err(e) => tracing::warn!(error = %e, "metrics: cannot read the parser-drift counts"),
    }
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(text)
}
