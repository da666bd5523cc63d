//! `POST /hooks/{plugin}`: a JSON webhook for a webhook plugin, authenticated as configured for
//! that plugin (bearer token by default).

use actix_web::{web, HttpRequest, HttpResponse};

use super::{content_type, headers, now, read_body, refused};
use crate::inbound;
use crate::server::error::ApiError;
use crate::server::ingest::{Accepted, AppState};
use crate::verify::Request;

pub async fn handle(
    req: HttpRequest,
    plugin: web::Path<String>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    const ROUTE: &str = "hook";
    let plugin = plugin.into_inner();
    let checked = async {
        // Only webhook plugins have an entry, so an email plugin's name is unknown here too.
        let source = state
            .hooks
            .get(&plugin)
            .ok_or_else(|| ApiError::UnknownPlugin(plugin.clone()))?;
        let body = read_body(&req, payload, state.limits.hooks).await?;
        let all_headers = headers(&req);
        source.verifier.verify(&Request {
            headers: &all_headers,
            query: req.query_string(),
            body: &body,
            now: now(),
        })?;
        let kept = inbound::hooks::storable_headers(&all_headers, source.secret_header.as_deref());
        Ok((body, kept))
    }
    .await
    .map_err(|e| refused(&state, ROUTE, e))?;
    let (body, kept) = checked;
    let accepted = Accepted {
        route: ROUTE,
        source: Some(plugin.clone()),
        content_type: content_type(&req),
        body,
    };
    state
        .ingest(accepted, move |body| {
            inbound::hooks::extract(&plugin, kept, body)
        })
        .await
        .map_err(|e| refused(&state, ROUTE, e))
}
