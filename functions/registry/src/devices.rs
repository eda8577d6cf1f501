//! Handlers for `/apps/{app}/devices` and `/apps/{app}/devices/{device}`.

use crate::AppState;
use crate::caller::Caller;
use crate::params::{AppParam, DeviceParam, ListQuery, base_url};
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use drogue_shared::http::{ApiError, JsonBody, OptionalJsonBody};
use drogue_shared::model::{DeleteOptions, Device, ResourceInput};
use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};

/// What must be escaped in a path segment (RFC 3986).
const PATH_SEGMENT: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'/')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'`')
    .add(b'{')
    .add(b'}');

pub async fn list(
    State(state): State<AppState>,
    Caller(caller): Caller,
    AppParam(app): AppParam,
    ListQuery(options): ListQuery,
) -> Result<Json<Vec<Device>>, ApiError> {
    Ok(Json(
        state.registry.list_devices(&caller, &app, &options).await?,
    ))
}

pub async fn create(
    State(state): State<AppState>,
    Caller(caller): Caller,
    AppParam(app): AppParam,
    headers: HeaderMap,
    JsonBody(input): JsonBody<ResourceInput>,
) -> Result<Response, ApiError> {
    let device = state.registry.create_device(&caller, &app, input).await?;
    let location = format!(
        "{}/api/registry/v1alpha1/apps/{app}/devices/{}",
        base_url(state.settings.public_url.as_deref(), &headers),
        utf8_percent_encode(&device.metadata.name, PATH_SEGMENT)
    );
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(device),
    )
        .into_response())
}

pub async fn read(
    State(state): State<AppState>,
    Caller(caller): Caller,
    DeviceParam(app, device): DeviceParam,
) -> Result<Json<Device>, ApiError> {
    match state.registry.get_device(&caller, &app, &device).await? {
        Some(found) => Ok(Json(found)),
        None => Err(ApiError::NotFound(format!(
            "the device '{device}' does not exist in the application '{app}'"
        ))),
    }
}

pub async fn update(
    State(state): State<AppState>,
    Caller(caller): Caller,
    DeviceParam(app, device): DeviceParam,
    JsonBody(input): JsonBody<ResourceInput>,
) -> Result<StatusCode, ApiError> {
    state
        .registry
        .update_device(&caller, &app, &device, input)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn delete(
    State(state): State<AppState>,
    Caller(caller): Caller,
    DeviceParam(app, device): DeviceParam,
    OptionalJsonBody(options): OptionalJsonBody<DeleteOptions>,
) -> Result<StatusCode, ApiError> {
    state
        .registry
        .delete_device(&caller, &app, &device, options.unwrap_or_default())
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
