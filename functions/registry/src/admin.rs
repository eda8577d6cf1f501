//! Handlers for `/api/admin/v1alpha1`: members of an application, the transfer of its
//! ownership, and who the caller is.

use crate::AppState;
use crate::caller::Caller;
use crate::params::{AppParam, query_param};
use crate::tokens::CreatedToken;
use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use drogue_shared::access::{self, Principal};
use drogue_shared::http::{ApiError, JsonBody};
use drogue_shared::registry::{Members, TransferOwnership};
use serde_json::{Value, json};

pub async fn members(
    State(state): State<AppState>,
    Caller(caller): Caller,
    AppParam(app): AppParam,
) -> Result<Json<Members>, ApiError> {
    Ok(Json(state.registry.members(&caller, &app).await?))
}

pub async fn set_members(
    State(state): State<AppState>,
    Caller(caller): Caller,
    AppParam(app): AppParam,
    JsonBody(members): JsonBody<Members>,
) -> Result<StatusCode, ApiError> {
    state.registry.set_members(&caller, &app, members).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The pending transfer, or 404 when there is none.
pub async fn transfer(
    State(state): State<AppState>,
    Caller(caller): Caller,
    AppParam(app): AppParam,
) -> Result<Json<TransferOwnership>, ApiError> {
    match state.registry.transfer(&caller, &app).await? {
        Some(transfer) => Ok(Json(transfer)),
        None => Err(ApiError::NotFound(format!(
            "no transfer of the application '{app}' is pending"
        ))),
    }
}

pub async fn offer(
    State(state): State<AppState>,
    Caller(caller): Caller,
    AppParam(app): AppParam,
    JsonBody(transfer): JsonBody<TransferOwnership>,
) -> Result<StatusCode, ApiError> {
    state
        .registry
        .offer_ownership(&caller, &app, Some(transfer.new_user))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn withdraw(
    State(state): State<AppState>,
    Caller(caller): Caller,
    AppParam(app): AppParam,
) -> Result<StatusCode, ApiError> {
    state.registry.offer_ownership(&caller, &app, None).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn accept(
    State(state): State<AppState>,
    Caller(caller): Caller,
    AppParam(app): AppParam,
) -> Result<StatusCode, ApiError> {
    state.registry.accept_ownership(&caller, &app).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `{"id", "name", "roles"}` of the caller.
pub async fn whoami(Caller(caller): Caller) -> Json<Value> {
    Json(json!({"id": caller.user, "name": caller.name, "roles": caller.roles}))
}

/// Makes an access token for another user (administrators only): how users come to
/// exist where no OIDC issuer is configured. The token carries no roles.
pub async fn create_user_token(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(user): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Json<CreatedToken>, ApiError> {
    if !state.registry.authorizer().is_admin(&caller) {
        return Err(ApiError::NotAllowed(
            "only administrators make tokens for other users".into(),
        ));
    }
    if user.is_empty() || user.chars().any(|c| c.is_control() || c == ':') {
        return Err(ApiError::InvalidRequest(
            "user ids must not be empty or hold ':' or control characters".into(),
        ));
    }
    let description = query_param(query.as_deref(), "description");
    let new =
        access::create_token(state.registry.tokens(), &Principal::user(user), description).await?;
    Ok(Json(CreatedToken::from(new)))
}
