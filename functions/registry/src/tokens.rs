//! Handlers for `/api/tokens/v1alpha1`: a user's own access tokens.

use crate::AppState;
use crate::caller::Caller;
use crate::params::query_param;
use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use drogue_shared::access;
use drogue_shared::http::{ApiError, OptionalJsonBody};
use serde::{Deserialize, Serialize};

#[derive(Serialize)]
pub struct CreatedToken {
    prefix: String,
    token: String,
}

impl From<drogue_shared::access::token_format::NewToken> for CreatedToken {
    fn from(new: drogue_shared::access::token_format::NewToken) -> Self {
        Self {
            prefix: new.prefix,
            token: new.token,
        }
    }
}

#[derive(Serialize)]
pub struct TokenInfo {
    prefix: String,
    created: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<String>,
    /// From when on the token is refused; absent: never.
    #[serde(skip_serializing_if = "Option::is_none")]
    expires: Option<String>,
}

#[derive(Deserialize, Default)]
pub struct CreateOptions {
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    expires: Option<String>,
}

/// Creates a token; the description comes as `?description=` (as `drg` sends it) or in
/// a JSON body, and so does an optional expiry, `?expires=<RFC 3339 timestamp>` or
/// `{"expires": ".."}` (the query wins over the body). Answers 200 with the token, which
/// is never shown again.
pub async fn create(
    State(state): State<AppState>,
    Caller(caller): Caller,
    RawQuery(query): RawQuery,
    OptionalJsonBody(body): OptionalJsonBody<CreateOptions>,
) -> Result<Json<CreatedToken>, ApiError> {
    state.registry.admit_write(&caller)?;
    let body = body.unwrap_or_default();
    let description = query_param(query.as_deref(), "description")
        .or(body.description)
        .filter(|d| !d.is_empty());
    let expires = query_param(query.as_deref(), "expires")
        .or(body.expires)
        .filter(|e| !e.is_empty())
        .map(|e| access::parse_expiry(&e))
        .transpose()?;
    let options = access::TokenOptions {
        description,
        expires,
    };
    let new = access::create_token_with(state.registry.tokens(), &caller, options).await?;
    Ok(Json(CreatedToken::from(new)))
}

/// The caller's tokens (never the tokens themselves).
pub async fn list(
    State(state): State<AppState>,
    Caller(caller): Caller,
) -> Result<Json<Vec<TokenInfo>>, ApiError> {
    let tokens = state.registry.tokens().list_tokens(&caller.user).await?;
    Ok(Json(
        tokens
            .into_iter()
            .map(|t| TokenInfo {
                prefix: t.prefix,
                created: t
                    .created
                    .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                description: t.description,
                expires: t
                    .expires
                    .map(|e| e.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
            })
            .collect(),
    ))
}

/// Revokes one of the caller's tokens; 404 if the caller holds none with that prefix.
pub async fn delete(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(prefix): Path<String>,
) -> Result<StatusCode, ApiError> {
    // (not held by the write rate: a stolen token's holder writing at the rate must not
    // keep its owner from revoking it)
    access::delete_token(state.registry.tokens(), &caller.user, &prefix).await?;
    Ok(StatusCode::NO_CONTENT)
}
