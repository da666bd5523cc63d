//! `POST /inbound/mailgun`: Mailgun Routes' `forward()`. Authenticated by Mailgun's signature over
//! `timestamp + token`, a maximum age, and refusing any token seen before.

use actix_web::{web, HttpRequest, HttpResponse};

use super::{content_type, now, read_body, refused};
use crate::inbound::{self, form};
use crate::server::error::ApiError;
use crate::server::ingest::{Accepted, AppState};
use crate::verify::{verify_mailgun, AuthError};

/// Tokens are remembered a little longer than signatures stay valid, so none can be replayed.
const TOKEN_MEMORY_SLACK_SECS: i64 = 60;

pub async fn handle(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    const ROUTE: &str = "mailgun";
    let content_type = content_type(&req);
    let fields = async {
        let body = read_body(&req, payload, state.limits.mailgun).await?;
        let fields = form::parse(&content_type, &body).map_err(|e| ApiError::BadRequest(e.0))?;
        let signature = inbound::mailgun::signature(&fields)
            .ok_or_else(|| AuthError::Missing("timestamp, token and signature fields".into()))?;
        let now = now();
        let cfg = &state.mailgun;
        verify_mailgun(
            &cfg.signing_key,
            &signature.timestamp,
            &signature.token,
            &signature.signature,
            now,
            cfg.max_age_secs,
        )?;
        let forget_before = now - cfg.max_age_secs - TOKEN_MEMORY_SLACK_SECS;
        if !state
            .store
            .remember_token("mailgun", &signature.token, now, forget_before)
            .await?
        {
            return Err(AuthError::Replayed.into());
        }
        Ok((body, fields))
    }
    .await
    .map_err(|e| refused(&state, ROUTE, e))?;
    let (body, fields) = fields;
    let accepted = Accepted {
        route: ROUTE,
        source: None,
        content_type,
        body,
    };
    state
        .ingest(accepted, move |_| inbound::mailgun::extract_fields(&fields))
        .await
        .map_err(|e| refused(&state, ROUTE, e))
}
