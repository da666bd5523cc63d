//! `POST /inbound/email`: a raw RFC 822 message, `Authorization: Bearer <ingest token>`.

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
    const ROUTE: &str = "email";
    let body = async {
        verify_headers(&req, state.bearer.as_ref())?;
        read_body(&req, payload, state.limits.email).await
    }
    .await
    .map_err(|e| refused(&state, ROUTE, e))?;
    let accepted = Accepted {
        route: ROUTE,
        source: None,
        content_type: non_empty(content_type(&req), "message/rfc822"),
        body,
    };
    state
        .ingest(accepted, inbound::email::extract)
        .await
        .map_err(|e| refused(&state, ROUTE, e))
}

fn non_empty(value: String, default: &str) -> String {
    if value.trim().is_empty() {
        default.to_owned()
    } else {
        value
    }
}
