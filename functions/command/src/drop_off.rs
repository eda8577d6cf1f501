//! `POST .../apps/{app}/devices/{device}?command=<name>[&ttl=<s>][&timeout=<s>]`.

use crate::{CommandState, MAX_RESPONSE_WAIT_SECONDS};
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use drogue_shared::access::Permission;
use drogue_shared::commands::{DEFAULT_TTL_SECONDS, DropOff, MAX_PAYLOAD};
use drogue_shared::http::{ApiError, authenticate_user, read_body};
use drogue_shared::model::AppName;
use std::collections::HashMap;
use std::time::Duration;

struct Options {
    command: Option<String>,
    ttl: u64,
    timeout: Option<u64>,
}

fn options(query: Option<&str>, from_path: Option<&String>) -> Result<Options, ApiError> {
    let mut options = Options {
        command: from_path.cloned(),
        ttl: DEFAULT_TTL_SECONDS,
        timeout: None,
    };
    let seconds = |name: &str, value: &str| {
        value
            .parse::<u64>()
            .map_err(|_| ApiError::InvalidRequest(format!("{name} must be a number of seconds")))
    };
    for (key, value) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        match key.as_ref() {
            "command" => options.command = Some(value.into_owned()),
            // its range is the command service's rule
            "ttl" => options.ttl = seconds("ttl", &value)?,
            "timeout" => {
                options.timeout = Some(seconds("timeout", &value)?.min(MAX_RESPONSE_WAIT_SECONDS))
            }
            _ => {}
        }
    }
    Ok(options)
}

fn with_request(mut response: Response, id: &str) -> Response {
    if let Ok(value) = HeaderValue::from_str(id) {
        response.headers_mut().insert("request", value);
    }
    response
}

pub async fn drop_off(
    State(state): State<CommandState>,
    Path(path): Path<HashMap<String, String>>,
    request: Request,
) -> Result<Response, ApiError> {
    let (parts, body) = request.into_parts();
    let principal = authenticate_user(&parts, state.tokens.as_ref(), state.oidc.as_deref()).await?;
    let raw_app = path.get("app").map(String::as_str).unwrap_or_default();
    let app = AppName::parse(raw_app)
        .map_err(|_| ApiError::NotFound(format!("the application '{raw_app}' does not exist")))?;
    let application = state
        .registry
        .application_for(&principal, &app, Permission::Read)
        .await?;

    let options = options(parts.uri.query(), path.get("command"))?;
    // the name's rule (and the device's) are the command service's
    let name = options.command.ok_or_else(|| {
        ApiError::InvalidRequest("the command name is required (?command=<name>)".into())
    })?;
    // over the application's rate: refused before its body is read
    state.commands.admit(app.as_str())?;
    let payload = read_body(body, MAX_PAYLOAD).await?;
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let command = state
        .commands
        .submit(DropOff {
            application: app.as_str(),
            application_uid: Some(&application.app.metadata.uid),
            device: path.get("device").map(String::as_str).unwrap_or_default(),
            name: &name,
            content_type,
            payload: payload.to_vec(),
            ttl_seconds: options.ttl,
        })
        .await?;

    let Some(timeout) = options.timeout.filter(|t| *t > 0) else {
        let accepted = (
            StatusCode::ACCEPTED,
            axum::Json(serde_json::json!({"request": command.id})),
        );
        return Ok(with_request(accepted.into_response(), &command.id));
    };
    match state
        .commands
        .wait_for_response(&command.id, Duration::from_secs(timeout))
        .await?
    {
        Some(answer) => {
            let mut response = Response::new(Body::from(answer.payload));
            if let Some(ct) = answer
                .content_type
                .and_then(|ct| HeaderValue::from_str(&ct).ok())
            {
                response.headers_mut().insert(header::CONTENT_TYPE, ct);
            }
            response
                .headers_mut()
                .insert("command-status", HeaderValue::from(answer.status));
            Ok(with_request(response, &command.id))
        }
        None => Ok(with_request(
            ApiError::GatewayTimeout(format!("the device did not answer within {timeout} s"))
                .into_response(),
            &command.id,
        )),
    }
}
