//! The command drop-off, compatible with Drogue Cloud 0.11 (and 0.3.0's path):
//! `POST /api/command/v1alpha1/apps/{app}/devices/{device}?command=<name>` with the
//! payload as body. Users who may read the application may send commands. The answer
//! carries the request id; with `?timeout=<s>` the drop-off waits for the device's
//! response.

mod drop_off;
pub mod mqtt;

use axum::Router;
use axum::routing::post;
use drogue_shared::access::authz::Authorizer;
use drogue_shared::access::oidc::{OidcConfig, OidcVerifier};
use drogue_shared::commands::CommandService;
use drogue_shared::rate_limit::{DEFAULT_COMMAND_RATE, RateLimit};
use drogue_shared::registry::Registry;
use drogue_shared::store::{Store, TokenStore};
use std::sync::Arc;

/// Longest time a drop-off waits for a response (API Gateway ends requests at 30 s).
pub const MAX_RESPONSE_WAIT_SECONDS: u64 = 25;

/// Whom the function trusts.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `DROGUE_OIDC_ISSUER`, `DROGUE_OIDC_AUDIENCE`: as for the registry.
    pub oidc: Option<OidcConfig>,
    /// `DROGUE_ADMIN_ROLE`.
    pub admin_role: String,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            oidc: None,
            admin_role: Authorizer::DEFAULT_ADMIN_ROLE.into(),
        }
    }
}

/// What the function reads from its environment.
#[derive(Debug, Clone)]
pub struct Config {
    /// `DROGUE_TABLE`.
    pub table: String,
    /// `DROGUE_IOT_DATA_ENDPOINT`: the account's IoT data endpoint (`https://...-ats.iot.<region>.amazonaws.com`).
    pub iot_endpoint: Option<String>,
    /// `DROGUE_COMMAND_SOURCE=mqtt`: this instance takes the IoT rule's messages
    /// (commands applications publish) instead of HTTP drop-offs.
    pub from_mqtt: bool,
    /// `DROGUE_COMMAND_RATE` and `DROGUE_COMMAND_BURST`: how fast one application may
    /// drop off commands through this instance (0 for no limit).
    pub command_rate: RateLimit,
    pub settings: Settings,
}

impl Config {
    pub fn from_env() -> anyhow::Result<Self> {
        let var = |name| std::env::var(name).ok().filter(|v: &String| !v.is_empty());
        Ok(Self {
            table: var("DROGUE_TABLE")
                .ok_or_else(|| anyhow::anyhow!("DROGUE_TABLE must be set"))?,
            iot_endpoint: var("DROGUE_IOT_DATA_ENDPOINT"),
            from_mqtt: var("DROGUE_COMMAND_SOURCE").as_deref() == Some("mqtt"),
            command_rate: RateLimit::from_env_named(
                "DROGUE_COMMAND_RATE",
                "DROGUE_COMMAND_BURST",
                DEFAULT_COMMAND_RATE,
            )?,
            settings: Settings {
                oidc: var("DROGUE_OIDC_ISSUER")
                    .map(|i| OidcConfig::new(i, var("DROGUE_OIDC_AUDIENCE"))),
                admin_role: var("DROGUE_ADMIN_ROLE")
                    .unwrap_or_else(|| Authorizer::DEFAULT_ADMIN_ROLE.into()),
            },
        })
    }
}

/// What the handlers share.
#[derive(Clone)]
pub struct CommandState {
    /// Whose read access to an application allows sending its devices commands.
    pub registry: Registry,
    /// The access tokens users authenticate with.
    pub tokens: Arc<dyn TokenStore>,
    pub oidc: Option<Arc<OidcVerifier>>,
    pub commands: CommandService,
}

/// The drop-off routes over a store and a command service.
pub fn router(store: Arc<dyn Store>, commands: CommandService, settings: Settings) -> Router {
    router_with(CommandState {
        tokens: store.clone(),
        registry: Registry::new(store, Authorizer::new(&settings.admin_role)),
        oidc: settings.oidc.map(|c| Arc::new(OidcVerifier::new(c))),
        commands,
    })
}

/// The drop-off routes over prepared state.
pub fn router_with(state: CommandState) -> Router {
    Router::new()
        .route(
            "/api/command/v1alpha1/apps/{app}/devices/{device}",
            post(drop_off::drop_off),
        )
        .route(
            "/command/{app}/{device}/{command}",
            post(drop_off::drop_off),
        )
        .with_state(state)
}
