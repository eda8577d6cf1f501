//! The authenticated caller of a management request.

use crate::AppState;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use drogue_shared::access::Principal;
use drogue_shared::http::{ApiError, authenticate_user};

/// The user a request is made by; extracting it authenticates the request.
pub struct Caller(pub Principal);

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let tokens = state.registry.tokens();
        authenticate_user(parts, tokens, state.oidc.as_deref())
            .await
            .map(Caller)
    }
}
