//! Errors of the CoAP endpoint: a response code and a JSON diagnostic payload (content
//! format 50) `{"error": "<Kind>", "message": ".."}`, the kinds those of the HTTP
//! endpoint. Every authentication failure is the same 4.03.

use coap_lite::ResponseType;
use serde_json::json;
use std::time::Duration;

#[derive(Debug)]
pub enum CoapError {
    /// 4.00 `InvalidRequest`: a query parameter or option that cannot be read.
    InvalidRequest(String),
    /// 4.00 `InvalidFormat`: content format 50 (JSON) with a payload that is not JSON
    /// (the HTTP endpoint's 406).
    InvalidFormat(String),
    /// 4.03 `AuthenticationError`: authentication failed, for whatever reason.
    AuthenticationFailed,
    /// 4.04 `NotFound`: no such resource.
    NotFound(String),
    /// 4.05 `MethodNotAllowed`: only POST publishes.
    MethodNotAllowed,
    /// 4.08 `RequestEntityIncomplete`: a Block1 block without the blocks before it.
    Incomplete,
    /// 4.13 `PayloadTooLarge`: a payload over the limit (the HTTP endpoint's).
    PayloadTooLarge(usize),
    /// 4.29 `TooManyRequests`: the device publishes faster than its rate limit, or the
    /// peer has too many exchanges under way; retry after this long (Max-Age).
    TooManyRequests(Duration),
    /// 5.03 `ServiceUnavailable`: the registry or the event stream could not be reached.
    Unavailable(Box<dyn std::error::Error + Send + Sync>),
}

impl CoapError {
    /// The response code.
    pub fn response_type(&self) -> ResponseType {
        match self {
            Self::InvalidRequest(_) | Self::InvalidFormat(_) => ResponseType::BadRequest,
            Self::AuthenticationFailed => ResponseType::Forbidden,
            Self::NotFound(_) => ResponseType::NotFound,
            Self::MethodNotAllowed => ResponseType::MethodNotAllowed,
            Self::Incomplete => ResponseType::RequestEntityIncomplete,
            Self::PayloadTooLarge(_) => ResponseType::RequestEntityTooLarge,
            Self::TooManyRequests(_) => ResponseType::TooManyRequests,
            Self::Unavailable(_) => ResponseType::ServiceUnavailable,
        }
    }

    /// The code as CoAP writes it (`4.03`).
    pub fn code_text(&self) -> String {
        let code = u8::from(coap_lite::MessageClass::Response(self.response_type()));
        format!("{}.{:02}", code >> 5, code & 0x1f)
    }

    /// Seconds to wait before retrying (the Max-Age option), for 4.29 and 5.03.
    pub fn max_age(&self) -> Option<u32> {
        match self {
            Self::TooManyRequests(wait) => Some(
                drogue_shared::rate_limit::retry_after_seconds(*wait)
                    .try_into()
                    .unwrap_or(u32::MAX),
            ),
            Self::Unavailable(_) => Some(1),
            _ => None,
        }
    }

    /// The JSON diagnostic payload.
    pub fn payload(&self) -> Vec<u8> {
        let (error, message) = match self {
            Self::InvalidRequest(m) => ("InvalidRequest", m.clone()),
            Self::InvalidFormat(m) => ("InvalidFormat", m.clone()),
            Self::AuthenticationFailed => ("AuthenticationError", "Authentication failed".into()),
            Self::NotFound(m) => ("NotFound", m.clone()),
            Self::MethodNotAllowed => (
                "MethodNotAllowed",
                "Devices publish with POST /v1/{channel}".into(),
            ),
            Self::Incomplete => (
                "RequestEntityIncomplete",
                "A block arrived without the blocks before it".into(),
            ),
            Self::PayloadTooLarge(limit) => (
                "PayloadTooLarge",
                format!("The payload is larger than {limit} bytes"),
            ),
            Self::TooManyRequests(_) => (
                "TooManyRequests",
                format!(
                    "Too many requests; retry after {} s",
                    self.max_age().unwrap_or(1)
                ),
            ),
            Self::Unavailable(cause) => {
                tracing::error!(error = %cause, source = ?cause.source(), "backend unavailable");
                (
                    "ServiceUnavailable",
                    "A backend service is unavailable, please retry later".into(),
                )
            }
        };
        serde_json::to_vec(&json!({"error": error, "message": message})).unwrap_or_default()
    }
}

impl From<drogue_shared::commands::CommandError> for CoapError {
    fn from(e: drogue_shared::commands::CommandError) -> Self {
        Self::Unavailable(Box::new(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_payloads() {
        let cases: Vec<(CoapError, &str, &str)> = vec![
            (
                CoapError::InvalidRequest("x".into()),
                "4.00",
                "InvalidRequest",
            ),
            (
                CoapError::InvalidFormat("x".into()),
                "4.00",
                "InvalidFormat",
            ),
            (
                CoapError::AuthenticationFailed,
                "4.03",
                "AuthenticationError",
            ),
            (CoapError::NotFound("x".into()), "4.04", "NotFound"),
            (CoapError::MethodNotAllowed, "4.05", "MethodNotAllowed"),
            (CoapError::Incomplete, "4.08", "RequestEntityIncomplete"),
            (CoapError::PayloadTooLarge(10), "4.13", "PayloadTooLarge"),
            (
                CoapError::TooManyRequests(Duration::from_millis(1500)),
                "4.29",
                "TooManyRequests",
            ),
            (
                CoapError::Unavailable("down".into()),
                "5.03",
                "ServiceUnavailable",
            ),
        ];
        for (error, code, kind) in cases {
            assert_eq!(error.code_text(), code);
            let body: serde_json::Value = serde_json::from_slice(&error.payload()).unwrap();
            assert_eq!(body["error"], kind);
            assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));
        }
        assert_eq!(
            CoapError::TooManyRequests(Duration::from_millis(1500)).max_age(),
            Some(2)
        );
        assert_eq!(CoapError::AuthenticationFailed.max_age(), None);
    }
}
