//! The device HTTP endpoint, compatible with Drogue Cloud 0.11: `POST /v1/{channel}`
//! authenticates the device (password, username, client certificate, gateway `as`),
//! turns the payload into a CloudEvent and answers 202 once the event stream took it.

mod certificates;
mod credentials;
mod error;
mod publish;
mod respond;
mod ttn;

pub use error::EndpointError;

use axum::Router;
use axum::routing::{get, post};
use drogue_shared::commands::CommandService;
use drogue_shared::device_auth::DeviceAuthenticator;
use drogue_shared::events::destination::Destination;
use drogue_shared::events::{DEFAULT_INSTANCE, EventSink};
use drogue_shared::rate_limit::{PublishLimiter, RateLimit};
use drogue_shared::store::Store;
use std::sync::Arc;

/// The largest payload accepted (as Drogue Cloud).
pub const MAX_PAYLOAD: usize = 64 * 1024;
/// The longest wait for a command after a publish (`ct`): API Gateway ends requests
/// after 30 s.
pub const MAX_COMMAND_TIMEOUT_SECONDS: u64 = 25;

/// How the endpoint presents its events.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `DROGUE_INSTANCE`: the `instance` extension of events (default `drogue`).
    pub instance: String,
    /// `DROGUE_PUBLISH_RATE` and `DROGUE_PUBLISH_BURST`: how fast one device may publish
    /// (per function instance; 429 beyond).
    pub publish_rate: RateLimit,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            instance: DEFAULT_INSTANCE.into(),
            publish_rate: RateLimit::default(),
        }
    }
}

/// What the function reads from its environment.
#[derive(Debug, Clone)]
pub struct Config {
    /// `DROGUE_TABLE`: the registry's DynamoDB table.
    pub table: String,
    /// Where events go: `K_SINK` (HTTP, binary-mode CloudEvents) when set, else the
    /// Kinesis stream `DROGUE_EVENT_STREAM`.
    pub events: Destination,
    pub settings: Settings,
}

impl Config {
    pub fn from_env() -> anyhow::Result<Self> {
        let var =
            |name: &str| std::env::var(name).map_err(|_| anyhow::anyhow!("{name} must be set"));
        Ok(Self {
            table: var("DROGUE_TABLE")?,
            events: Destination::from_env()?,
            settings: Settings {
                instance: std::env::var("DROGUE_INSTANCE")
                    .unwrap_or_else(|_| DEFAULT_INSTANCE.into()),
                publish_rate: RateLimit::from_env()?,
            },
        })
    }
}

/// What the handlers share.
#[derive(Clone)]
pub struct EndpointState {
    pub auth: DeviceAuthenticator,
    pub sink: Arc<dyn EventSink>,
    pub commands: CommandService,
    pub settings: Arc<Settings>,
    /// The publish rate limit per device (shared with other endpoints of the process).
    pub limiter: PublishLimiter,
}

/// The endpoint's routes over a store and an event sink.
pub fn router(store: Arc<dyn Store>, sink: Arc<dyn EventSink>, settings: Settings) -> Router {
    router_with(EndpointState {
        auth: DeviceAuthenticator::new(store.clone()),
        sink,
        commands: CommandService::new(store),
        limiter: PublishLimiter::new(settings.publish_rate),
        settings: Arc::new(settings),
    })
}

/// The endpoint's routes over prepared state (an authenticator with another clock).
pub fn router_with(state: EndpointState) -> Router {
    Router::new()
        .route("/", get(|| async {}))
        .route("/v1/command-response", post(respond::respond))
        .route("/v1/{channel}", post(publish::publish))
        .route("/v1/{channel}/{*suffix}", post(publish::publish))
        .route("/ttn", post(ttn::publish_v2))
        .route("/ttn/v2", post(ttn::publish_v2))
        .route("/ttn/v3", post(ttn::publish_v3))
        .with_state(state)
}
