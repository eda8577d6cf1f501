//! Errors of the device endpoint: `{"code": <status>, "error": "<Kind>", "message": ".."}`,
//! as Drogue Cloud's endpoints answer. Every authentication failure is the same 403, so
//! nothing tells a caller which part was wrong.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

#[derive(Debug)]
pub enum EndpointError {
    /// 400: a query parameter that cannot be read.
    InvalidRequest(String),
    /// 403: authentication failed, for whatever reason.
    AuthenticationFailed,
    /// 404: no such command (for this device).
    NotFound(String),
    /// 409: the command was answered already.
    Conflict(String),
    /// 406: a JSON content type with a body that is not JSON.
    NotAcceptable(String),
    /// 413: a body over the limit.
    PayloadTooLarge(usize),
    /// 429: the device publishes faster than its rate limit; retry after this long.
    TooManyRequests(std::time::Duration),
    /// 503: the registry or the event stream could not be reached.
    Unavailable(Box<dyn std::error::Error + Send + Sync>),
}

impl IntoResponse for EndpointError {
    fn into_response(self) -> Response {
        let (status, error, message) = match &self {
            Self::InvalidRequest(m) => (StatusCode::BAD_REQUEST, "InvalidRequest", m.clone()),
            Self::AuthenticationFailed => (
                StatusCode::FORBIDDEN,
                "AuthenticationError",
                "Authentication failed".into(),
            ),
            Self::NotFound(m) => (StatusCode::NOT_FOUND, "NotFound", m.clone()),
            Self::Conflict(m) => (StatusCode::CONFLICT, "Conflict", m.clone()),
            Self::NotAcceptable(m) => (StatusCode::NOT_ACCEPTABLE, "InvalidFormat", m.clone()),
            Self::PayloadTooLarge(limit) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "PayloadTooLarge",
                format!("The payload is larger than {limit} bytes"),
            ),
            Self::TooManyRequests(wait) => {
                let seconds = drogue_shared::rate_limit::retry_after_seconds(*wait);
                let body = json!({
                    "code": 429,
                    "error": "TooManyRequests",
                    "message": format!("The device publishes too fast; retry after {seconds} s"),
                });
                return (
                    StatusCode::TOO_MANY_REQUESTS,
                    [(axum::http::header::RETRY_AFTER, seconds.to_string())],
                    Json(body),
                )
                    .into_response();
            }
            Self::Unavailable(cause) => {
                tracing::error!(error = %cause, source = ?cause.source(), "backend unavailable");
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "ServiceUnavailable",
                    "A backend service is unavailable, please retry later".into(),
                )
            }
        };
        (
            status,
            Json(json!({"code": status.as_u16(), "error": error, "message": message})),
        )
            .into_response()
    }
}

/// The command service's errors by variant: a device's answer that cannot be taken.
impl From<drogue_shared::commands::CommandError> for EndpointError {
    fn from(e: drogue_shared::commands::CommandError) -> Self {
        use drogue_shared::commands::CommandError as E;
        match e {
            e @ (E::InvalidName | E::InvalidTtl | E::InvalidStatus) => {
                Self::InvalidRequest(e.to_string())
            }
            E::PayloadTooLarge(limit) => Self::PayloadTooLarge(limit),
            e @ (E::NoSuchCommand(_) | E::NoSuchDevice(_)) => Self::NotFound(e.to_string()),
            e @ E::AlreadyAnswered(_) => Self::Conflict(e.to_string()),
            e @ (E::InvalidPayload(_) | E::NotTakingCommands(_)) => {
                Self::NotAcceptable(e.to_string())
            }
            e @ (E::Unavailable(_) | E::Publish(_) | E::Events(_)) => {
                Self::Unavailable(Box::new(e))
            }
            E::TooManyRequests(wait) => Self::TooManyRequests(wait),
            // a device's answer never goes to an external endpoint
            e @ E::External(_) => Self::Unavailable(Box::new(e)),
        }
    }
}
