//! The WebSocket integration: applications follow their devices' events live, as with
//! Drogue Cloud's `websocket-integration` (which `drg stream` uses).
//!
//! `GET /stream/{app}` (or `/stream/{app}/{channel}` for one channel) upgrades to a
//! WebSocket that receives one text frame per event, the structured JSON CloudEvent.
//! Callers authenticate as on the management API (Basic access token, bearer token,
//! `?token=`, `?username=&api_key=`) and need read access to the application. The
//! server pings every 5 seconds; frames from the client are ignored.
//!
//! Access is checked again every [`RECHECK_INTERVAL`]: when the caller's credentials no
//! longer hold (a deleted token), it may no longer read the application (a removed
//! member), or the application is gone (or another one has its name), the stream is
//! closed with code 1008 (policy violation).

use axum::Router;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade, close_code};
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
/// How often an open stream's access is checked again (the device lookup cache's period).
pub const RECHECK_INTERVAL: Duration = Duration::from_secs(5);
/// How long a closed stream waits for the client's Close.
const CLOSING_HANDSHAKE: Duration = Duration::from_secs(2);
/// Largest frame and message a client may send (clients send nothing but control frames).
const MAX_CLIENT_MESSAGE: usize = 64 * 1024;

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
    let uid = state
        .registry
        .application_for(&principal, &app, Permission::Read)
        .await?
        .app
        .metadata
        .uid;
    let upgrade = WebSocketUpgrade::from_request_parts(&mut parts, &())
        .await
        .map_err(|e| ApiError::InvalidRequest(format!("not a WebSocket request: {e}")))?
        .max_frame_size(MAX_CLIENT_MESSAGE)
        .max_message_size(MAX_CLIENT_MESSAGE);
    let channel = params.get("channel").cloned();
    let events = state.log.subscribe();
    tracing::info!(application = %app, user = %principal.user, ?channel, "stream opened");
    let access = Access {
        state,
        credentials: credentials_of(&parts),
        app: app.clone(),
        uid,
    };
    Ok(upgrade
        .on_upgrade(move |socket| forward(socket, events, access, channel))
        .into_response())
}

/// What the stream was opened with, to check its access again.
struct Access {
    state: StreamState,
    /// The request's URI and headers: the caller's credentials.
    credentials: Parts,
    app: AppName,
    /// The application's `uid` when the stream was opened.
    uid: String,
}

fn credentials_of(parts: &Parts) -> Parts {
    let mut request = axum::http::Request::new(());
    *request.uri_mut() = parts.uri.clone();
    *request.headers_mut() = parts.headers.clone();
    request.into_parts().0
}

impl Access {
    /// Whether the caller may still read the very application it opened the stream for;
    /// `None` when that cannot be told now (a backend is unavailable).
    async fn still_allowed(&self) -> Option<bool> {
        let registry = &self.state.registry;
        let principal = match authenticate_user(
            &self.credentials,
            registry.store().as_ref(),
            self.state.oidc.as_deref(),
        )
        .await
        {
            Ok(principal) => principal,
            Err(ApiError::Unavailable(_)) => return None,
            Err(_) => return Some(false),
        };
        match registry
            .application_for(&principal, &self.app, Permission::Read)
            .await
        {
            Ok(stored) => Some(stored.app.metadata.uid == self.uid),
            Err(drogue_shared::registry::RegistryError::Unavailable(_)) => None,
            Err(_) => Some(false),
        }
    }
}

async fn forward(
    mut socket: WebSocket,
    mut events: tokio::sync::broadcast::Receiver<Arc<LoggedEvent>>,
    access: Access,
    channel: Option<String>,
) {
    let app = access.app.clone();
    let mut ping = tokio::time::interval(Duration::from_secs(5));
    let start = tokio::time::Instant::now() + RECHECK_INTERVAL;
    let mut recheck = tokio::time::interval_at(start, RECHECK_INTERVAL);
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
            _ = recheck.tick() => match access.still_allowed().await {
                Some(true) => {}
                Some(false) => {
                    tracing::info!(application = %app, "access to a stream's application ended: closing it");
                    let close = CloseFrame {
                        code: close_code::POLICY,
                        reason: "access to the application ended".into(),
                    };
                    if socket.send(Message::Close(Some(close))).await.is_ok() {
                        // the closing handshake: the client's Close, for a short while
                        let _ = tokio::time::timeout(CLOSING_HANDSHAKE, async {
                            while let Some(Ok(message)) = socket.recv().await {
                                if matches!(message, Message::Close(_)) {
                                    break;
                                }
                            }
                        })
                        .await;
                    }
                    break;
                }
                None => tracing::warn!(application = %app, "cannot check a stream's access now; it stays open"),
            },
        }
    }
    tracing::info!(application = %app, "stream closed");
}
