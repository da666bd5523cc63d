//! `POST /hooks/{plugin}`: a JSON webhook for a webhook plugin, authenticated as configured for
//! that plugin (bearer token by default).

use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::Value;

use super::{content_type, headers, now, read_body, refused};
use crate::inbound;
use crate::message::Webhook;
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
        let fetched = fetch_resource(&state, &plugin, &kept, &body).await?;
        Ok((body, kept, fetched))
    }
    .await
    .map_err(|e| refused(&state, ROUTE, e))?;
    let (body, kept, fetched) = checked;
    let accepted = Accepted {
        route: ROUTE,
        source: Some(plugin.clone()),
        content_type: content_type(&req),
        body,
    };
    state
        .ingest(accepted, move |body| {
            inbound::hooks::extract(&plugin, kept, body, fetched)
        })
        .await
        .map_err(|e| refused(&state, ROUTE, e))
}

/// For plugins that declare `[fetch]` (webhooks carrying only ids, such as Up's): GETs the
/// resource the event points at. A failure is answered 503 and nothing is stored, so the sender
/// retries; a message is never stored without what it needs to be parsed.
async fn fetch_resource(
    state: &AppState,
    plugin: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> Result<Option<Value>, ApiError> {
    let Some(p) = state.registry.get(plugin).filter(|p| p.fetches()) else {
        return Ok(None);
    };
    // Unreadable JSON is the extractor's to report; nothing to fetch for it.
    let Ok(hook) = Webhook::parse(headers.to_vec(), body) else {
        return Ok(None);
    };
    let Some((default_base, path)) = p.fetch_target(&hook) else {
        return Ok(None);
    };
    let configured = state.settings.hooks.get(plugin);
    let token = configured.map(|c| c.api_token.clone()).unwrap_or_default();
    if token.is_empty() {
        return Err(ApiError::Upstream(format!(
            "plugin {plugin} fetches each event's resource and needs hooks.{plugin}.api_token"
        )));
    }
    let base = configured
        .and_then(|c| c.fetch_base_url.clone())
        .unwrap_or(default_base);
    let url = format!("{}{path}", base.trim_end_matches('/'));
    let failed =
        |why: String| ApiError::Upstream(format!("could not fetch {path} for {plugin}: {why}"));
    let response = state
        .http
        .get(&url)
        .bearer_auth(token.expose())
        .header("Accept", "application/json")
        .send()
        .await
        .map_err(|e| failed(e.to_string()))?;
    let status = response.status();
    if !status.is_success() {
        return Err(failed(format!("HTTP {status}")));
    }
    let document = response
        .json::<Value>()
        .await
        .map_err(|e| failed(format!("not JSON: {e}")))?;
    Ok(Some(document))
}
