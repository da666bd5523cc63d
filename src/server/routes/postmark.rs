//! `POST /inbound/postmark`: Postmark's inbound JSON, HTTP basic auth from the webhook URL.

use actix_web::{web, HttpRequest, HttpResponse};

use super::{content_type, read_body, refused, verify_headers};
use crate::inbound;
use crate::server::error::ApiError;
use crate::server::ingest::{Accepted, AppState};

pub async fn handle(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    const ROUTE: &str = "postmark";
    let body = async {
        verify_headers(&req, state.postmark.as_ref())?;
        read_body(&req, payload, state.limits.postmark).await
    }
    .await
    .map_err(|e| refused(&state, ROUTE, e))?;
    let accepted = Accepted {
        route: ROUTE,
        source: None,
        content_type: content_type(&req),
        body,
    };
    state
        .ingest(accepted, inbound::postmark::extract)
        .await
        .map_err(|e| refused(&state, ROUTE, e))
}
