//! Errors as HTTP responses: `{"error": "<Kind>", "message": "..."}` with the status of
//! the kind. This is the only place that maps errors to status codes; internal error
//! text is logged, never sent.

use crate::access::TokenError;
use crate::registry::RegistryError;
use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// An error answer of the management API.
#[derive(Debug)]
pub enum ApiError {
    /// 400, `InvalidRequest`.
    InvalidRequest(String),
    /// 401, `Unauthorized`: no credentials were presented.
    Unauthorized,
    /// 403, `Forbidden`: credentials were presented and are not good, or more than one.
    Forbidden,
    /// 403, `Forbidden`: the caller may see the object, but not do this to it.
    NotAllowed(String),
    /// 404, `NotFound`.
    NotFound(String),
    /// 404, `ReferenceNotFound`: the application of a new device does not exist.
    ReferenceNotFound(String),
    /// 405, `MethodNotAllowed`.
    MethodNotAllowed,
    /// 406, `NotAcceptable`: a command for a device that does not exist or is disabled.
    NotAcceptable(String),
    /// 409, `Conflict`.
    Conflict(String),
    /// 413, `PayloadTooLarge`.
    PayloadTooLarge(usize),
    /// 429, `QuotaExceeded`: the caller holds as much as its quota allows.
    QuotaExceeded(String),
    /// 429, `TooManyRequests`, with `Retry-After`: the caller is over a rate limit for
    /// this long.
    TooManyRequests(String, std::time::Duration),
    /// 502, `BadGateway`: a device's external command endpoint did not take a command.
    BadGateway(String),
    /// 503, `ServiceUnavailable`: a backend could not be reached.
    Unavailable(Box<dyn std::error::Error + Send + Sync>),
    /// 504, `GatewayTimeout`: what was waited for did not come in time.
    GatewayTimeout(String),
}

impl ApiError {
    fn parts(&self) -> (StatusCode, &'static str, String) {
        match self {
            Self::InvalidRequest(m) => (StatusCode::BAD_REQUEST, "InvalidRequest", m.clone()),
            Self::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                "Unauthorized",
                "Authentication required: use Basic <user>:<access token> or a bearer token".into(),
            ),
            Self::Forbidden => (StatusCode::FORBIDDEN, "Forbidden", "Forbidden".into()),
            Self::NotAllowed(m) => (StatusCode::FORBIDDEN, "Forbidden", m.clone()),
            Self::NotFound(m) => (StatusCode::NOT_FOUND, "NotFound", m.clone()),
            Self::ReferenceNotFound(m) => (StatusCode::NOT_FOUND, "ReferenceNotFound", m.clone()),
            Self::MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                "The method is not allowed on this resource".into(),
            ),
            Self::NotAcceptable(m) => (StatusCode::NOT_ACCEPTABLE, "NotAcceptable", m.clone()),
            Self::Conflict(m) => (StatusCode::CONFLICT, "Conflict", m.clone()),
            Self::GatewayTimeout(m) => (StatusCode::GATEWAY_TIMEOUT, "GatewayTimeout", m.clone()),
            Self::BadGateway(m) => (StatusCode::BAD_GATEWAY, "BadGateway", m.clone()),
            Self::QuotaExceeded(m) => (StatusCode::TOO_MANY_REQUESTS, "QuotaExceeded", m.clone()),
            Self::TooManyRequests(m, _) => {
                (StatusCode::TOO_MANY_REQUESTS, "TooManyRequests", m.clone())
            }
            Self::PayloadTooLarge(limit) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "PayloadTooLarge",
                format!("The request body is larger than {limit} bytes"),
            ),
            Self::Unavailable(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailable",
                "A backend service is unavailable, please retry later".into(),
            ),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, error, message) = self.parts();
        if let Self::Unavailable(cause) = &self {
            tracing::error!(error = %cause, source = ?cause.source(), "backend unavailable");
        }
        let mut response =
            (status, Json(json!({"error": error, "message": message}))).into_response();
        if let Self::TooManyRequests(_, wait) = &self {
            let seconds = crate::rate_limit::retry_after_seconds(*wait);
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"drogue\""),
            );
        }
        response
    }
}

impl From<RegistryError> for ApiError {
    fn from(e: RegistryError) -> Self {
        match e {
            RegistryError::NotFound(m) => Self::NotFound(m),
            RegistryError::ReferenceNotFound(app) => {
                Self::ReferenceNotFound(format!("the application '{app}' does not exist"))
            }
            RegistryError::Conflict(m) => Self::Conflict(m),
            RegistryError::InvalidRequest(m) => Self::InvalidRequest(m),
            RegistryError::Forbidden(m) => Self::NotAllowed(m),
            RegistryError::QuotaExceeded(m) => Self::QuotaExceeded(m),
            RegistryError::TooManyRequests(m, wait) => Self::TooManyRequests(m, wait),
            RegistryError::Unavailable(e) => Self::Unavailable(Box::new(e)),
        }
    }
}

impl From<TokenError> for ApiError {
    fn from(e: TokenError) -> Self {
        match e {
            TokenError::Invalid(m) => Self::InvalidRequest(m),
            e @ TokenError::NotFound(_) => Self::NotFound(e.to_string()),
            TokenError::Unavailable(e) => Self::Unavailable(Box::new(e)),
        }
    }
}

impl From<crate::commands::CommandError> for ApiError {
    fn from(e: crate::commands::CommandError) -> Self {
        use crate::commands::CommandError as E;
        use crate::commands::external::ExternalError;
        match e {
            e @ (E::InvalidName | E::InvalidTtl | E::InvalidStatus) => {
                Self::InvalidRequest(e.to_string())
            }
            E::PayloadTooLarge(limit) => Self::PayloadTooLarge(limit),
            e @ (E::NoSuchDevice(_) | E::NotTakingCommands(_) | E::InvalidPayload(_)) => {
                Self::NotAcceptable(e.to_string())
            }
            e @ E::NoSuchCommand(_) => Self::NotFound(e.to_string()),
            e @ E::AlreadyAnswered(_) => Self::Conflict(e.to_string()),
            e @ (E::Unavailable(_) | E::Publish(_) | E::Events(_)) => {
                Self::Unavailable(Box::new(e))
            }
            e @ E::TooManyRequests(wait) => Self::TooManyRequests(e.to_string(), wait),
            // the tenant's own endpoint: its address refused or its spec unusable is
            // the device's fault (406), an endpoint that failed is the gateway's (502)
            E::External(e @ (ExternalError::Invalid(_) | ExternalError::Forbidden(_))) => {
                Self::NotAcceptable(e.to_string())
            }
            E::External(e @ (ExternalError::Unreachable(_) | ExternalError::Refused(_))) => {
                Self::BadGateway(e.to_string())
            }
        }
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        Self::Unavailable(Box::new(e))
    }
}
