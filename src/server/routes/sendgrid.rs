//! `POST /inbound/sendgrid`: SendGrid Inbound Parse (raw or parsed mode), HTTP basic auth from the
//! destination URL.

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
    let limit = state.limits.sendgrid;
    header_authenticated(
        &req,
        payload,
        &state,
        "sendgrid",
        state.sendgrid.as_ref(),
        limit,
        inbound::sendgrid::extract,
    )
    .await
}
