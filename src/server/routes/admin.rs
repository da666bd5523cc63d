//! The operator's routes, behind `Authorization: Bearer <admin token>`: the outbox report,
//! replaying dead letters, re-parsing stored input, checking the Lunch Money set-up. Refused
//! when no admin token is set.

use std::sync::Arc;

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::json;

use super::verify_headers;
use crate::server::error::ApiError;
use crate::server::ingest::AppState;
use crate::verify::AuthError;

fn authorize(req: &HttpRequest, state: &AppState) -> Result<(), ApiError> {
    match &state.admin {
        Some(verifier) => verify_headers(req, verifier.as_ref()),
        None => {
            Err(AuthError::NotConfigured("set admin.token to use the admin routes".into()).into())
        }
    }
}

pub async fn outbox(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    authorize(&req, &state)?;
    let report = crate::ops::outbox_report(&state.store, &state.settings, &state.registry)?;
    Ok(HttpResponse::Ok().json(report))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ReplayRequest {
    /// Transaction ids; absent: every dead letter.
    ids: Option<Vec<i64>>,
}

pub async fn replay(
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    authorize(&req, &state)?;
    let request: ReplayRequest = if body.iter().all(u8::is_ascii_whitespace) {
        ReplayRequest::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            ApiError::BadRequest(format!("expected {{\"ids\": [..]}} or an empty body: {e}"))
        })?
    };
    let replayed = state.store.replay(request.ids).await?;
    Ok(HttpResponse::Ok().json(json!({ "replayed": replayed })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReparseRequest {
    since: chrono::NaiveDate,
    plugin: Option<String>,
    #[serde(default)]
    dry_run: bool,
}

pub async fn reparse(
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    authorize(&req, &state)?;
    let request: ReparseRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError::BadRequest(format!(
            "expected {{\"since\": \"YYYY-MM-DD\", \"plugin\"?, \"dry_run\"?}}: {e}"
        ))
    })?;
    if let Some(p) = &request.plugin {
        if state.registry.get(p).is_none() {
            return Err(ApiError::UnknownPlugin(p.clone()));
        }
    }
    let report = crate::ops::reparse(
        &state.store,
        &state.registry,
        &state.trust,
        request.since,
        request.plugin.as_deref(),
        request.dry_run,
    )
    .await?;
    Ok(HttpResponse::Ok().json(report))
}

/// The Lunch Money side of `lm-ingest check`: token, mapped accounts, categories and tags.
pub async fn check(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    authorize(&req, &state)?;
    let findings =
        crate::ops::check_lunchmoney(&state.settings, &state.registry, Arc::clone(&state.limiter))
            .await;
    let ok = findings.iter().all(|f| f.level != "error");
    Ok(HttpResponse::Ok().json(json!({ "ok": ok, "findings": findings })))
}
