//! The WebSocket integration: applications follow their devices' events live, as with
//! Drogue Cloud's `websocket-integration` (which `drg stream` uses).
//!
//! `GET /stream/{app}` (or `/stream/{app}/{channel}` for one channel) upgrades to a
//! WebSocket that receives one text frame per event, the structured JSON CloudEvent.
//! Callers authenticate as on the management API (Basic access token, bearer token,
//! `?token=`, `?username=&api_key=`) and need read access to the application. The
//! server pings every 5 seconds; frames from the client are ignored.

use axum::Router;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use drogue_shared::access::Permission;
use drogue_shared::access::oidc::OidcVerifier;
use drogue_shared::events::log::{EventLog, LoggedEvent};
use drogue_shared::http::{ApiError, authenticate_user};
use drogue_shared::model::AppName;
use drogue_shared::registry::Registry;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;

/// The path the integration serves under.
pub const PATH: &str = "/stream/";

#[derive(Clone)]
pub struct StreamState {
    pub registry: Registry,
    pub oidc: Option<Arc<OidcVerifier>>,
    pub log: EventLog,
}

pub fn router(state: StreamState) -> Router {
    Router::new()
        .route("/stream/{app}", get(stream))
        .route("/stream/{app}/{channel}", get(stream))
        .with_state(state)
}

async fn stream(
    State(state): State<StreamState>,
    Path(params): Path<HashMap<String, String>>,
    mut parts: Parts,
) -> Result<Response, ApiError> {
    let principal = authenticate_user(
        &parts,
        state.registry.store().as_ref(),
        state.oidc.as_deref(),
    )
    .await?;
    let raw = params.get("app").map(String::as_str).unwrap_or_default();
    let app = AppName::parse(raw)
        .map_err(|_| ApiError::NotFound(format!("the application '{raw}' does not exist")))?;
    state
        .registry
        .application_for(&principal, &app, Permission::Read)
        .await?;
    let upgrade = WebSocketUpgrade::from_request_parts(&mut parts, &())
        .await
        .map_err(|e| ApiError::InvalidRequest(format!("not a WebSocket request: {e}")))?;
    let channel = params.get("channel").cloned();
    let events = state.log.subscribe();
    tracing::info!(application = %app, user = %principal.user, ?channel, "stream opened");
    Ok(upgrade
        .on_upgrade(move |socket| forward(socket, events, app, channel))
        .into_response())
}

async fn forward(
    mut socket: WebSocket,
    mut events: tokio::sync::broadcast::Receiver<Arc<LoggedEvent>>,
    app: AppName,
    channel: Option<String>,
) {
    let mut ping = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            event = events.recv() => match event {
                Ok(event) => {
                    let wanted = event.application == app.as_str()
                        && channel.as_deref().is_none_or(|c| event.subject.as_deref() == Some(c));
                    if wanted && socket.send(Message::Text(event.json.clone().into())).await.is_err() {
                        break;
                    }
                }
                Err(RecvError::Lagged(missed)) => {
                    tracing::warn!(application = %app, missed, "a stream fell behind and missed events");
                }
                Err(RecvError::Closed) => break,
            },
            received = socket.recv() => match received {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => break,
                Some(Ok(_)) => {}
            },
            _ = ping.tick() => {
                if socket.send(Message::Ping(Vec::new().into())).await.is_err() {
                    break;
                }
            }
        }
    }
    tracing::info!(application = %app, "stream closed");
}
