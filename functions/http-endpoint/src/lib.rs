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
use clap::Parser;
use drogue_shared::commands::CommandService;
use drogue_shared::config::{Instance, Table};
use drogue_shared::device_auth::{DeviceAuthenticator, LookupCache};
use drogue_shared::events::destination::Destination;
use drogue_shared::events::{DEFAULT_INSTANCE, EventSink};
use drogue_shared::rate_limit::{PublishLimiter, PublishRate, RateLimit};
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
    /// `DROGUE_DEVICE_CACHE_TTL` and `DROGUE_DEVICE_CACHE_SIZE`: how long and how many
    /// device lookups are remembered (0 s: every publish reads the registry once); for
    /// the authenticator [`router`] makes ([`router_with`] takes one prepared).
    pub lookup_cache: LookupCache,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            instance: DEFAULT_INSTANCE.into(),
            publish_rate: RateLimit::default(),
            lookup_cache: LookupCache::default(),
        }
    }
}

/// What the function reads from its flags and environment (see `drogue_shared::config`).
#[derive(Debug, Clone, Parser)]
#[command(
    name = "http-endpoint",
    about = "The device HTTP endpoint of the serverless Drogue Cloud"
)]
pub struct Config {
    #[command(flatten)]
    pub table: Table,
    /// Where events go: `K_SINK` (HTTP, binary-mode CloudEvents) when set, else the
    /// Kinesis stream `DROGUE_EVENT_STREAM`.
    #[command(flatten)]
    pub events: Destination,
    #[command(flatten)]
    pub instance: Instance,
    #[command(flatten)]
    pub publish_rate: PublishRate,
    #[command(flatten)]
    pub lookup_cache: LookupCache,
}

impl Config {
    /// How the endpoint presents its events and limits publishes.
    pub fn settings(&self) -> Settings {
        Settings {
            instance: self.instance.as_str().to_owned(),
            publish_rate: self.publish_rate.limit(),
            lookup_cache: self.lookup_cache,
        }
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

/// The endpoint's routes over a store and an event sink, with its root (`GET /`, an empty
/// 200 for health checks).
pub fn router(store: Arc<dyn Store>, sink: Arc<dyn EventSink>, settings: Settings) -> Router {
    router_with(EndpointState {
        auth: settings
            .lookup_cache
            .apply(DeviceAuthenticator::new(store.clone())),
        sink,
        commands: CommandService::new(store),
        limiter: PublishLimiter::new(settings.publish_rate),
        settings: Arc::new(settings),
    })
    .route("/", get(|| async {}))
}

/// The endpoint's routes over prepared state (an authenticator with another clock), for
/// a process that mounts other routes too: without the device API's root (`/`, see
/// [`router`]), which the local runner leaves to the console.
pub fn router_with(state: EndpointState) -> Router {
    Router::new()
        .route("/v1/command-response", post(respond::respond))
        .route("/v1/{channel}", post(publish::publish))
        .route("/v1/{channel}/{*suffix}", post(publish::publish))
        .route("/ttn", post(ttn::publish_v2))
        .route("/ttn/v2", post(ttn::publish_v2))
        .route("/ttn/v3", post(ttn::publish_v3))
        // one reference count per request, not one per field
        .with_state(Arc::new(state))
}

#[cfg(test)]
mod tests {
    use super::*;
    use drogue_shared::config::{assert_refused, try_parse_flags};

    #[test]
    fn a_good_configuration() {
        let config =
            try_parse_flags::<Config>(&["--table", "drogue", "--event-stream", "events"]).unwrap();
        assert_eq!(config.table.as_str(), "drogue");
        assert_eq!(config.events, Destination::Kinesis("events".into()));
        let settings = config.settings();
        assert_eq!(settings.instance, "drogue");
        assert_eq!(settings.publish_rate, RateLimit::default());
        assert_eq!(settings.lookup_cache, LookupCache::default());
        let config = try_parse_flags::<Config>(&[
            "--table",
            "drogue",
            "--sink",
            "http://broker.local/",
            "--instance",
            "mine",
            "--publish-rate",
            "0.5",
            "--publish-burst",
            "3",
            "--device-cache-ttl",
            "0",
            "--device-cache-size",
            "100",
        ])
        .unwrap();
        assert!(matches!(config.events, Destination::Http(_)));
        let settings = config.settings();
        assert_eq!(settings.instance, "mine");
        assert_eq!(
            settings.publish_rate,
            RateLimit {
                per_second: 0.5,
                burst: 3
            }
        );
        assert_eq!(
            settings.lookup_cache,
            LookupCache {
                device_cache_ttl: std::time::Duration::ZERO,
                device_cache_size: 100
            }
        );
    }

    #[test]
    fn missing_or_empty_values_are_refused() {
        assert_refused::<Config>(&["--event-stream", "events"], &["DROGUE_TABLE"]);
        assert_refused::<Config>(&["--table", "drogue"], &["DROGUE_EVENT_STREAM"]);
        assert_refused::<Config>(
            &["--table", " ", "--event-stream", "events"],
            &["DROGUE_TABLE", "empty"],
        );
    }

    #[test]
    fn bad_numbers_are_refused() {
        for (flag, value, variable) in [
            ("--publish-rate", "fast", "DROGUE_PUBLISH_RATE"),
            ("--publish-rate", "-1", "DROGUE_PUBLISH_RATE"),
            ("--publish-burst", "1.5", "DROGUE_PUBLISH_BURST"),
            ("--device-cache-ttl", "-1", "DROGUE_DEVICE_CACHE_TTL"),
            ("--device-cache-size", "0", "DROGUE_DEVICE_CACHE_SIZE"),
        ] {
            assert_refused::<Config>(
                &[
                    "--table",
                    "drogue",
                    "--event-stream",
                    "events",
                    &format!("{flag}={value}"),
                ],
                &[variable],
            );
        }
    }
}
