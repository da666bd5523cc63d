//! `POST /inbound/email`: a raw RFC 822 message, `Authorization: Bearer <ingest token>`.

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
    let limit = state.limits.email;
    header_authenticated(
        &req,
        payload,
        &state,
        "email",
        state.bearer.as_ref(),
        limit,
        |_, body| inbound::email::extract(body),
    )
    .await
}
