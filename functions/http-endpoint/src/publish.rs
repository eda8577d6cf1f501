//! `POST /v1/{channel}[/{suffix...}]`: a device publishes.

use crate::credentials::{self, Names};
use crate::{EndpointError, EndpointState, MAX_PAYLOAD, certificates};
use axum::extract::{Path, Request, State};
use axum::http::{StatusCode, header};
use drogue_shared::device_auth::DeviceAuthentication;
use drogue_shared::events::{self, Publish};
use drogue_shared::http::{BodyError, read_limited};
use std::collections::HashMap;

/// The query of a publish.
struct PublishQuery {
    names: Names,
    data_schema: Option<String>,
    /// Seconds to wait for a command (`ct`, `commandTimeout`, 0.3.0's `ttd`).
    command_timeout: Option<u64>,
}

fn parse_query(query: Option<&str>) -> Result<PublishQuery, EndpointError> {
    let mut parsed = PublishQuery {
        names: Names::default(),
        data_schema: None,
        command_timeout: None,
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
            _ => {}
        }
    }
    Ok(parsed)
}

pub async fn publish(
    State(state): State<EndpointState>,
    Path(path): Path<HashMap<String, String>>,
    request: Request,
) -> Result<StatusCode, EndpointError> {
    let received = chrono::Utc::now();
    let (parts, body) = request.into_parts();
    let query = parse_query(parts.uri.query())?;
    let body = read_limited(body, MAX_PAYLOAD).await.map_err(|e| match e {
        BodyError::TooLarge(limit) => EndpointError::PayloadTooLarge(limit),
        e @ BodyError::Unreadable(_) => EndpointError::InvalidRequest(e.to_string()),
    })?;
    let authorization = match parts.headers.get(header::AUTHORIZATION) {
        Some(value) => Some(
            value
                .to_str()
                .map_err(|_| EndpointError::AuthenticationFailed)?,
        ),
        None => None,
    };
    let chain = certificates::client_chain(&parts);
    let request = credentials::request(query.names, authorization, chain)
        .ok_or(EndpointError::AuthenticationFailed)?;
    let authenticated = match state
        .auth
        .authenticate(request)
        .await
        .map_err(|e| EndpointError::Unavailable(Box::new(e)))?
    {
        DeviceAuthentication::Allow(authenticated) => authenticated,
        DeviceAuthentication::Deny { reason } => {
            tracing::info!(reason, "device authentication failed");
            return Err(EndpointError::AuthenticationFailed);
        }
    };
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let channel = path.get("channel").map(String::as_str).unwrap_or_default();
    let event = events::telemetry(
        &Publish {
            application: &authenticated.application,
            device: &authenticated.device,
            sender: &authenticated.sender,
            channel,
            suffix: path.get("suffix").map(String::as_str),
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
        .publish(&event)
        .await
        .map_err(|e| EndpointError::Unavailable(Box::new(e)))?;
    tracing::debug!(
        application = %authenticated.application.metadata.name,
        device = %authenticated.device.metadata.name,
        channel,
        "event accepted"
    );
    let _ = query.command_timeout;
    Ok(StatusCode::ACCEPTED)
}
