//! `POST /inbound/postmark`: Postmark's inbound JSON, HTTP basic auth from the webhook URL.

use actix_web::{web, HttpRequest, HttpResponse};

use super::header_authenticated;
use crate::inbound;
use crate::server::error::ApiError;
use crate::server::ingest::AppState;

pub async fn handle(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let limit = state.limits.postmark;
    header_authenticated(
        &req,
        payload,
        &state,
        "postmark",
        state.postmark.as_ref(),
        limit,
        |_, body| inbound::postmark::extract(body),
    )
    .await
}
