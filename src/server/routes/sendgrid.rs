//! `POST /inbound/sendgrid`: SendGrid Inbound Parse (raw or parsed mode), HTTP basic auth from the
//! destination URL.

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
    const ROUTE: &str = "sendgrid";
    let body = async {
        verify_headers(&req, state.sendgrid.as_ref())?;
        read_body(&req, payload, state.limits.sendgrid).await
    }
    .await
    .map_err(|e| refused(&state, ROUTE, e))?;
    let content_type = content_type(&req);
    let form_type = content_type.clone();
    let accepted = Accepted {
        route: ROUTE,
        source: None,
        content_type,
        body,
    };
    state
        .ingest(accepted, move |body| {
            inbound::sendgrid::extract(&form_type, body)
        })
        .await
        .map_err(|e| refused(&state, ROUTE, e))
}
