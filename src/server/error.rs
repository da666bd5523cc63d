//! Every way a request can fail, mapped to an HTTP status and a JSON reason in one place.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde_json::json;

use crate::store::StoreError;
use crate::verify::AuthError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Unauthorized(#[from] AuthError),
    #[error("request body is larger than this route's limit of {limit} bytes")]
    TooLarge { limit: usize },
    /// Refused before it could be authenticated or read, so not stored.
    #[error("{0}")]
    BadRequest(String),
    /// Authenticated but unreadable: stored as `rejected` under `id`.
    #[error("{reason}")]
    Rejected { id: i64, reason: String },
    #[error("no webhook plugin named {0:?}")]
    UnknownPlugin(String),
    #[error("the store cannot take the message right now; retry later")]
    Store(#[from] StoreError),
    /// A resource the webhook points at could not be fetched: not stored, so the sender retries.
    #[error("{0}; retry later")]
    Upstream(String),
    /// The parser's worker pool is gone: the server is stopping.
    #[error("the service is shutting down; retry later")]
    ShuttingDown,
}

impl ApiError {
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::TooLarge { .. } => "too_large",
            ApiError::BadRequest(_) => "bad_request",
            ApiError::Rejected { .. } => "rejected",
            ApiError::UnknownPlugin(_) => "unknown_plugin",
            ApiError::Store(_) => "store_unavailable",
            ApiError::ShuttingDown => "shutting_down",
            ApiError::Upstream(_) => "upstream_unavailable",
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::BadRequest(_) | ApiError::Rejected { .. } => StatusCode::BAD_REQUEST,
            ApiError::UnknownPlugin(_) => StatusCode::NOT_FOUND,
            // Providers retry on 5xx, which is what a full disk or a stopping store needs.
            ApiError::Store(_) | ApiError::ShuttingDown | ApiError::Upstream(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut body = json!({ "error": self.code(), "reason": self.to_string() });
        if let ApiError::Rejected { id, .. } = self {
            body["id"] = json!(id);
            body["status"] = json!("rejected");
        }
        if let ApiError::Store(e) = self {
            tracing::error!(error = %e, "store failed");
        }
        HttpResponse::build(self.status_code()).json(body)
    }
}
