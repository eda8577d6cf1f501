//! The command drop-off, compatible with Drogue Cloud 0.11 (and 0.3.0's path):
//! `POST /api/command/v1alpha1/apps/{app}/devices/{device}?command=<name>` with the
//! payload as body. Users who may read the application may send commands. The answer
//! carries the request id; with `?timeout=<s>` the drop-off waits for the device's
//! response.

mod drop_off;
pub mod mqtt;

use axum::Router;
use axum::routing::post;
use clap::Parser;
use drogue_shared::access::authz::AccessControl;
use drogue_shared::access::oidc::{OidcConfig, OidcVerifier};
use drogue_shared::commands::CommandService;
use drogue_shared::config::{AdminRole, IotData, Table};
use drogue_shared::rate_limit::CommandRate;
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
            admin_role: AccessControl::DEFAULT_ADMIN_ROLE.into(),
        }
    }
}

/// Where the function's commands come from (`DROGUE_COMMAND_SOURCE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum CommandSource {
    /// Drop-offs over HTTP (the management API).
    #[default]
    Http,
    /// The IoT rule's messages: commands applications publish over MQTT.
    Mqtt,
}

/// What the function reads from its flags and environment (see `drogue_shared::config`).
#[derive(Debug, Clone, Parser)]
#[command(
    name = "command",
    about = "The command drop-off of the serverless Drogue Cloud"
)]
pub struct Config {
    #[command(flatten)]
    pub table: Table,
    #[command(flatten)]
    pub iot: IotData,
    /// `mqtt`: this instance takes the IoT rule's messages (commands applications
    /// publish) instead of HTTP drop-offs.
    #[arg(long, env = "DROGUE_COMMAND_SOURCE", value_name = "DROGUE_COMMAND_SOURCE", value_enum, default_value_t = CommandSource::Http)]
    pub command_source: CommandSource,
    /// How fast one application may drop off commands through this instance.
    #[command(flatten)]
    pub command_rate: CommandRate,
    #[command(flatten)]
    pub oidc: Option<OidcConfig>,
    #[command(flatten)]
    pub admin_role: AdminRole,
}

impl Config {
    /// Whom the function trusts.
    pub fn settings(&self) -> Settings {
        Settings {
            oidc: self.oidc.clone(),
            admin_role: self.admin_role.as_str().to_owned(),
        }
    }

    /// Whether this instance takes the IoT rule's messages.
    pub fn from_mqtt(&self) -> bool {
        self.command_source == CommandSource::Mqtt
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
        registry: Registry::new(store, AccessControl::new(&settings.admin_role)),
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

#[cfg(test)]
mod tests {
    use super::*;
    use drogue_shared::config::{assert_refused, try_parse_flags};
    use drogue_shared::rate_limit::{DEFAULT_COMMAND_RATE, RateLimit};

    #[test]
    fn a_good_configuration() {
        let config = try_parse_flags::<Config>(&["--table", "drogue"]).unwrap();
        assert_eq!(config.table.as_str(), "drogue");
        assert!(!config.from_mqtt());
        assert_eq!(config.iot.iot_data_endpoint, None);
        assert_eq!(config.command_rate.limit(), DEFAULT_COMMAND_RATE);
        assert!(config.settings().oidc.is_none());
        assert_eq!(config.settings().admin_role, "drogue-admin");
        let config = try_parse_flags::<Config>(&[
            "--table",
            "drogue",
            "--command-source",
            "mqtt",
            "--iot-data-endpoint",
            "https://abc-ats.iot.eu-west-1.amazonaws.com",
            "--command-rate",
            "0",
            "--command-burst",
            "1",
            "--oidc-issuer",
            "https://sso.example.com/realms/drogue",
        ])
        .unwrap();
        assert!(config.from_mqtt());
        assert!(config.iot.iot_data_endpoint.is_some());
        assert_eq!(
            config.command_rate.limit(),
            RateLimit {
                per_second: 0.0,
                burst: 1
            }
        );
        assert!(config.settings().oidc.is_some());
    }

    #[test]
    fn missing_or_empty_values_are_refused() {
        assert_refused::<Config>(&[], &["DROGUE_TABLE"]);
        assert_refused::<Config>(&["--table", ""], &["DROGUE_TABLE", "empty"]);
        assert_refused::<Config>(
            &["--table", "t", "--admin-role", ""],
            &["DROGUE_ADMIN_ROLE"],
        );
    }

    #[test]
    fn bad_numbers_and_choices_are_refused() {
        for (flag, value, variable) in [
            ("--command-rate", "lots", "DROGUE_COMMAND_RATE"),
            ("--command-burst", "1.5", "DROGUE_COMMAND_BURST"),
            ("--command-source", "kafka", "DROGUE_COMMAND_SOURCE"),
        ] {
            assert_refused::<Config>(&["--table", "t", flag, value], &[variable]);
        }
    }
}
