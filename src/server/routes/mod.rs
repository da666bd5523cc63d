//! HTTP handlers, one file per route. Each authenticates, reads the body within its limit and
//! hands over to the shared pipeline in `server::ingest`.

pub mod admin;
pub mod email;
pub mod health;
pub mod hooks;
pub mod mailgun;
pub mod postmark;
pub mod sendgrid;

use actix_web::http::header::CONTENT_LENGTH;
use actix_web::web::{self, Bytes};
use actix_web::HttpRequest;

use super::error::ApiError;
use super::ingest::{Accepted, AppState};
use crate::verify::{Request, Verifier};

/// Request headers with lowercase names, as verifiers and webhook plugins read them.
pub fn headers(req: &HttpRequest) -> Vec<(String, String)> {
    req.headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect()
}

pub fn content_type(req: &HttpRequest) -> String {
    req.headers()
        .get(actix_web::http::header::CONTENT_TYPE)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .unwrap_or_default()
}

pub fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Checks credentials that travel in headers or the URL, before the body is read.
pub fn verify_headers(req: &HttpRequest, verifier: &dyn Verifier) -> Result<(), ApiError> {
    let headers = headers(req);
    verifier.verify(&Request {
        headers: &headers,
        query: req.query_string(),
        body: &[],
        now: now(),
    })?;
    Ok(())
}

/// Reads the whole body, refusing it (413) as soon as it passes `limit`.
pub async fn read_body(
    req: &HttpRequest,
    payload: web::Payload,
    limit: usize,
) -> Result<Bytes, ApiError> {
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|len| len > limit) {
        return Err(ApiError::TooLarge { limit });
    }
    match payload.to_bytes_limited(limit).await {
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(e)) => Err(ApiError::BadRequest(format!(
            "could not read the request body: {e}"
        ))),
        Err(_) => Err(ApiError::TooLarge { limit }),
    }
}

/// The shape of every route whose credentials travel in headers (`email`, `postmark`,
/// `sendgrid`): authenticate before reading, read within `limit`, then the shared pipeline.
pub async fn header_authenticated<F>(
    req: &HttpRequest,
    payload: web::Payload,
    state: &AppState,
    route: &'static str,
    verifier: &dyn Verifier,
    limit: usize,
    extract: F,
) -> Result<actix_web::HttpResponse, ApiError>
where
    F: FnOnce(&str, &[u8]) -> Result<crate::inbound::Extracted, crate::inbound::Malformed>
        + Send
        + 'static,
{
    let body = async {
        verify_headers(req, verifier)?;
        read_body(req, payload, limit).await
    }
    .await
    .map_err(|e| refused(state, route, e))?;
    let content_type = content_type(req);
    let accepted = Accepted {
        route,
        source: None,
        content_type: content_type.clone(),
        body,
    };
    state
        .ingest(accepted, move |body| extract(&content_type, body))
        .await
        .map_err(|e| refused(state, route, e))
}

/// Counts a refused request before it is answered.
pub fn refused(state: &AppState, route: &'static str, error: ApiError) -> ApiError {
    state.metrics.refused(route, error.code());
    error
}
