//! `POST /v1/command-response?request=<id>&status=<code>`: a device answers a command;
//! the body is the answer's payload. The device authenticates as for a publish (a
//! gateway answers for a device with `as=`). The answer becomes an
//! `io.drogue.command.response.v1` event, and reaches a drop-off that waits for it.

use crate::publish::{authenticate, parse_query, read_payload};
use crate::{EndpointError, EndpointState};
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use chrono::Utc;
use drogue_shared::commands::CommandResponse;
use drogue_shared::events::{self, Publish};

pub async fn respond(
    State(state): State<EndpointState>,
    request: Request,
) -> Result<StatusCode, EndpointError> {
    let received = Utc::now();
    let (parts, body) = request.into_parts();
    let query = parse_query(parts.uri.query())?;
    let id = query
        .rest
        .get("request")
        .cloned()
        .ok_or_else(|| EndpointError::InvalidRequest("request=<id> is required".into()))?;
    let status: u16 = query
        .rest
        .get("status")
        .and_then(|s| s.parse().ok())
        .filter(|s| (100..=599).contains(s))
        .ok_or_else(|| EndpointError::InvalidRequest("status=<100-599> is required".into()))?;
    let payload = read_payload(body).await?;
    let authenticated = authenticate(&state, &parts, query.names).await?;

    let unavailable = |e| EndpointError::Unavailable(Box::new(e));
    let command = state.commands.command(&id).await.map_err(unavailable)?;
    // only the command's device (or a gateway answering for it) may answer
    let Some(command) = command.filter(|c| {
        c.is_for(
            &authenticated.application.metadata.name,
            &authenticated.device,
        )
    }) else {
        return Err(EndpointError::NotFound(format!(
            "no command with request id {id} for this device"
        )));
    };
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let event = events::command_response(
        &Publish {
            application: &authenticated.application,
            device: &authenticated.device,
            sender: &authenticated.sender,
            channel: &command.name,
            suffix: None,
            content_type,
            data_schema: None,
            instance: &state.settings.instance,
            received,
        },
        &id,
        status,
        &payload,
    )
    .map_err(|e| EndpointError::NotAcceptable(e.to_string()))?;
    let response = CommandResponse {
        id: id.clone(),
        status,
        responder: authenticated.sender.metadata.name.clone(),
        content_type: content_type.map(str::to_owned),
        payload: payload.to_vec(),
        received,
    };
    if !state
        .commands
        .respond(&command, &response)
        .await
        .map_err(unavailable)?
    {
        return Err(EndpointError::Conflict(format!(
            "the command {id} was answered already"
        )));
    }
    state
        .sink
        .publish(&event)
        .await
        .map_err(|e| EndpointError::Unavailable(Box::new(e)))?;
    Ok(StatusCode::ACCEPTED)
}
