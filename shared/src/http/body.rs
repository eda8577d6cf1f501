//! Request bodies: read up to a limit (413 beyond it) and parsed as JSON (400 with the
//! parser's message when malformed), never through a rejection with a plain-text body.

use super::ApiError;
use axum::body::Body;
use axum::extract::{FromRequest, Request};
use bytes::Bytes;
use serde::de::DeserializeOwned;

/// The largest request body the management API reads.
pub const MAX_BODY: usize = 64 * 1024;

/// Why a body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("the body is larger than {0} bytes")]
    TooLarge(usize),
    #[error("cannot read the body: {0}")]
    Unreadable(String),
}

/// Reads a whole body of at most `limit` bytes.
pub async fn read_limited(body: Body, limit: usize) -> Result<Bytes, BodyError> {
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        let too_large = std::error::Error::source(&e)
            .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
        if too_large {
            BodyError::TooLarge(limit)
        } else {
            BodyError::Unreadable(e.to_string())
        }
    })
}

/// Reads a whole body of at most `limit` bytes, for the management API.
pub async fn read_body(body: Body, limit: usize) -> Result<Bytes, ApiError> {
    read_limited(body, limit).await.map_err(|e| match e {
        BodyError::TooLarge(limit) => ApiError::PayloadTooLarge(limit),
        e @ BodyError::Unreadable(_) => ApiError::InvalidRequest(e.to_string()),
    })
}

fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::InvalidRequest(format!("invalid JSON body: {e}")))
}

/// A JSON body that must be present.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, _: &S) -> Result<Self, Self::Rejection> {
        let bytes = read_body(req.into_body(), MAX_BODY).await?;
        if bytes.is_empty() {
            return Err(ApiError::InvalidRequest("a JSON body is required".into()));
        }
        parse(&bytes).map(Self)
    }
}

/// A JSON body that may be absent (empty), as the preconditions of a DELETE.
pub struct OptionalJsonBody<T>(pub Option<T>);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for OptionalJsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, _: &S) -> Result<Self, Self::Rejection> {
        let bytes = read_body(req.into_body(), MAX_BODY).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self(None));
        }
        parse(&bytes).map(|v| Self(Some(v)))
    }
}
