//! `POST /v1/command-response?request=<id>&status=<code>`: a device answers a command;
//! the body is the answer's payload. The device authenticates as for a publish (a
//! gateway answers for a device with `as=`). The answer becomes an
//! `io.drogue.command.response.v1` event, and reaches a drop-off that waits for it.

use crate::publish::{authenticate, parse_query, read_payload};
use crate::{EndpointError, EndpointState};
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use chrono::Utc;
use drogue_shared::commands::{Answer, CommandError, response_status};
use std::sync::Arc;

pub async fn respond(
    State(state): State<Arc<EndpointState>>,
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
    let status = query
        .rest
        .get("status")
        .ok_or(CommandError::InvalidStatus)
        .and_then(|s| response_status(s))
        .map_err(|_| EndpointError::InvalidRequest("status=<100-599> is required".into()))?;
    let payload = read_payload(body).await?;
    let authenticated = authenticate(&state, &parts, query.names).await?;
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let answer = Answer {
        by: &authenticated,
        request: &id,
        status,
        content_type,
        payload: &payload,
        instance: &state.settings.instance,
        received,
    };
    state.commands.answer(answer, state.sink.as_ref()).await?;
    Ok(StatusCode::ACCEPTED)
}
