//! `POST /v1/{channel}[/{suffix...}]`: a device publishes, and with `ct` waits for a
//! command.

use crate::credentials::{self, Names};
use crate::{EndpointError, EndpointState, MAX_COMMAND_TIMEOUT_SECONDS, MAX_PAYLOAD, certificates};
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use drogue_shared::commands::Command;
use drogue_shared::device_auth::{Authenticated, DeviceAuthentication};
use drogue_shared::events::{self, Publish};
use drogue_shared::http::{BodyError, read_limited};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// The query of a device request.
pub(crate) struct DeviceQuery {
    pub names: Names,
    pub data_schema: Option<String>,
    /// Seconds to wait for a command (`ct`, `commandTimeout`, 0.3.0's `ttd`).
    pub command_timeout: Option<u64>,
    /// Other parameters, for the command response.
    pub rest: HashMap<String, String>,
}

pub(crate) fn parse_query(query: Option<&str>) -> Result<DeviceQuery, EndpointError> {
    let mut parsed = DeviceQuery {
        names: Names::default(),
        data_schema: None,
        command_timeout: None,
        rest: HashMap::new(),
    };
    for (key, value) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        let value = value.into_owned();
        match key.as_ref() {
            "application" => parsed.names.application = Some(value),
            "device" => parsed.names.device = Some(value),
            "as" => parsed.names.r#as = Some(value),
            "data_schema" => parsed.data_schema = Some(value),
            "ct" | "commandTimeout" | "ttd" => {
                let seconds = value.parse().map_err(|_| {
                    EndpointError::InvalidRequest(format!("{key} must be a number of seconds"))
                })?;
                parsed.command_timeout = Some(seconds);
            }
            other => {
                parsed.rest.insert(other.to_owned(), value);
            }
        }
    }
    Ok(parsed)
}

/// The path of a publish: `/v1/{channel}[/{suffix...}]`.
#[derive(serde::Deserialize)]
pub struct Target {
    channel: String,
    suffix: Option<String>,
}

pub(crate) async fn read_payload(body: Body) -> Result<Bytes, EndpointError> {
    read_limited(body, MAX_PAYLOAD).await.map_err(|e| match e {
        BodyError::TooLarge(limit) => EndpointError::PayloadTooLarge(limit),
        e @ BodyError::Unreadable(_) => EndpointError::InvalidRequest(e.to_string()),
    })
}

/// Authenticates the device of a request; every failure is the same 403.
pub(crate) async fn authenticate(
    state: &EndpointState,
    parts: &Parts,
    names: Names,
) -> Result<Authenticated, EndpointError> {
    let authorization = match parts.headers.get(header::AUTHORIZATION) {
        Some(value) => Some(
            value
                .to_str()
                .map_err(|_| EndpointError::AuthenticationFailed)?,
        ),
        None => None,
    };
    let chain = certificates::client_chain(parts);
    let request = credentials::request(names, authorization, chain)
        .ok_or(EndpointError::AuthenticationFailed)?;
    match state
        .auth
        .authenticate(request)
        .await
        .map_err(|e| EndpointError::Unavailable(Box::new(e)))?
    {
        DeviceAuthentication::Allow(authenticated) => Ok(*authenticated),
        DeviceAuthentication::Deny { reason } => {
            tracing::info!(reason, "device authentication failed");
            Err(EndpointError::AuthenticationFailed)
        }
    }
}

pub async fn publish(
    State(state): State<Arc<EndpointState>>,
    Path(target): Path<Target>,
    request: Request,
) -> Result<Response, EndpointError> {
    let received = chrono::Utc::now();
    let (parts, body) = request.into_parts();
    let query = parse_query(parts.uri.query())?;
    let body = read_payload(body).await?;
    let authenticated = authenticate(&state, &parts, query.names).await?;
    // a gateway's publishes for its devices count against the gateway
    state
        .limiter
        .check(&authenticated.sender.metadata.uid)
        .map_err(EndpointError::TooManyRequests)?;
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let event = events::telemetry(
        &Publish {
            application: &authenticated.application,
            device: &authenticated.device,
            sender: &authenticated.sender,
            channel: &target.channel,
            suffix: target.suffix.as_deref(),
            content_type,
            data_schema: query.data_schema.as_deref(),
            instance: &state.settings.instance,
            received,
        },
        &body,
    )
    .map_err(|e| EndpointError::NotAcceptable(e.to_string()))?;
    state
        .sink
        .publish_structured(event)
        .await
        .map_err(|e| EndpointError::Unavailable(Box::new(e)))?;

    let wait = query
        .command_timeout
        .unwrap_or(0)
        .min(MAX_COMMAND_TIMEOUT_SECONDS);
    if wait == 0 {
        return Ok(StatusCode::ACCEPTED.into_response());
    }
    let command = state
        .commands
        .wait_for_command(
            &authenticated.application.metadata.name,
            &authenticated.device,
            Duration::from_secs(wait),
        )
        .await
        .map_err(|e| EndpointError::Unavailable(Box::new(e)))?;
    Ok(match command {
        Some(command) => deliver(command),
        None => StatusCode::ACCEPTED.into_response(),
    })
}

/// 200 with `command: <name>`, `request: <id>`, the command's content type and payload.
fn deliver(command: Command) -> Response {
    tracing::debug!(request = %command.id, command = %command.name, device = %command.device, "command delivered");
    let mut response = Response::new(Body::from(command.payload));
    let headers = response.headers_mut();
    if let Ok(name) = HeaderValue::from_str(&command.name) {
        headers.insert("command", name);
    }
    if let Ok(id) = HeaderValue::from_str(&command.id) {
        headers.insert("request", id);
    }
    if let Some(ct) = command
        .content_type
        .and_then(|ct| HeaderValue::from_str(&ct).ok())
    {
        headers.insert(header::CONTENT_TYPE, ct);
    }
    response
}
