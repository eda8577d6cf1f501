//! Handlers for `/apps` and `/apps/{app}`.

use crate::AppState;
use crate::caller::Caller;
use crate::params::{AppParam, ListQuery, base_url};
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use drogue_shared::http::{ApiError, JsonBody, OptionalJsonBody};
use drogue_shared::model::{Application, DeleteOptions, ResourceInput};

pub async fn list(
    State(state): State<AppState>,
    Caller(caller): Caller,
    ListQuery(options): ListQuery,
) -> Result<Json<Vec<Application>>, ApiError> {
    Ok(Json(
        state.registry.list_applications(&caller, &options).await?,
    ))
}

pub async fn create(
    State(state): State<AppState>,
    Caller(caller): Caller,
    headers: HeaderMap,
    JsonBody(input): JsonBody<ResourceInput>,
) -> Result<Response, ApiError> {
    let app = state.registry.create_application(&caller, input).await?;
    let location = format!(
        "{}/api/registry/v1alpha1/apps/{}",
        base_url(state.settings.public_url.as_deref(), &headers),
        app.metadata.name
    );
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(app),
    )
        .into_response())
}

pub async fn read(
    State(state): State<AppState>,
    Caller(caller): Caller,
    AppParam(app): AppParam,
) -> Result<Json<Application>, ApiError> {
    Ok(Json(state.registry.get_application(&caller, &app).await?))
}

pub async fn update(
    State(state): State<AppState>,
    Caller(caller): Caller,
    AppParam(app): AppParam,
    JsonBody(input): JsonBody<ResourceInput>,
) -> Result<StatusCode, ApiError> {
    state
        .registry
        .update_application(&caller, &app, input)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn delete(
    State(state): State<AppState>,
    Caller(caller): Caller,
    AppParam(app): AppParam,
    OptionalJsonBody(options): OptionalJsonBody<DeleteOptions>,
) -> Result<StatusCode, ApiError> {
    state
        .registry
        .delete_application(&caller, &app, options.unwrap_or_default())
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
