//! AWS IoT Core custom authorizer: takes IoT Core's request for a CONNECT (username,
//! password, client id, and the client certificate on a custom domain), decides with the
//! same code as the local broker, and answers with the policy that confines the client.
//!
//! - Allowed: `isAuthenticated: true`, a `principalId` of `[a-zA-Z0-9]{1,128}`, the
//!   policy as one or more documents (never `null`), a disconnect after 24 h and a policy
//!   refresh every 5 min (so a changed password or membership takes effect).
//! - Refused: `isAuthenticated: false`, no policy.
//! - The registry (or the OIDC issuer) unreachable: a function error, which IoT Core
//!   takes as a refusal; never an allow.

use aws_lambda_events::event::iot::IoTCoreCustomAuthorizerRequest;
use clap::Parser;
use drogue_shared::access::authz::AccessControl;
use drogue_shared::access::oidc::{OidcConfig, OidcVerifier};
use drogue_shared::config::{AdminRole, Table};
use drogue_shared::device_auth::DeviceAuthenticator;
use drogue_shared::mqtt::{ConnectDecision, MqttAuthError, MqttAuthorizer, MqttConnect};
use drogue_shared::registry::Registry;
use drogue_shared::runtime::EventContext;
use drogue_shared::store::Store;
use serde::Serialize;
use std::sync::Arc;

/// Connections last at most this long before IoT Core asks again.
pub const DISCONNECT_AFTER_SECONDS: u32 = 86_400;
/// The policy of a connection is refreshed this often.
pub const REFRESH_AFTER_SECONDS: u32 = 300;

/// What the function reads from its flags and environment (see `drogue_shared::config`).
#[derive(Debug, Clone, Parser)]
#[command(
    name = "mqtt-authorizer",
    about = "The IoT Core custom authorizer of the serverless Drogue Cloud"
)]
pub struct Config {
    #[command(flatten)]
    pub table: Table,
    #[command(flatten)]
    pub oidc: Option<OidcConfig>,
    #[command(flatten)]
    pub admin_role: AdminRole,
}

/// IoT Core's answer format: policy documents are JSON strings.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AuthorizerResponse {
    pub is_authenticated: bool,
    pub principal_id: String,
    pub disconnect_after_in_seconds: u32,
    pub refresh_after_in_seconds: u32,
    pub policy_documents: Vec<String>,
}

/// The authorizer; cheap to clone.
#[derive(Clone)]
pub struct IotAuthorizer {
    mqtt: MqttAuthorizer,
}

/// Why the authorizer could not decide (a function error: IoT Core refuses the
/// connection).
#[derive(Debug)]
pub enum AuthorizerError {
    /// The registry or the OIDC issuer could not be reached.
    Unavailable(MqttAuthError),
}

impl std::fmt::Display for AuthorizerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unavailable(e) => write!(f, "cannot decide on the connection: {e}"),
        }
    }
}

impl std::error::Error for AuthorizerError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Unavailable(e) => Some(e),
        }
    }
}

impl From<MqttAuthError> for AuthorizerError {
    fn from(e: MqttAuthError) -> Self {
        Self::Unavailable(e)
    }
}

impl IotAuthorizer {
    pub fn new(store: Arc<dyn Store>, config: &Config) -> Self {
        let registry = Registry::new(
            store.clone(),
            AccessControl::new(config.admin_role.as_str()),
        );
        let oidc = config.oidc.clone().map(|c| Arc::new(OidcVerifier::new(c)));
        Self {
            mqtt: MqttAuthorizer::new(DeviceAuthenticator::new(store), registry, oidc)
                .for_iot_core(),
        }
    }

    /// Answers one authorizer request.
    pub async fn handle(
        &self,
        request: IoTCoreCustomAuthorizerRequest,
        context: &EventContext,
    ) -> Result<AuthorizerResponse, AuthorizerError> {
        self.decide(&request, context).await
    }

    pub async fn decide(
        &self,
        request: &IoTCoreCustomAuthorizerRequest,
        context: &EventContext,
    ) -> Result<AuthorizerResponse, AuthorizerError> {
        let protocol = request.protocol_data.clone().unwrap_or_default();
        let mqtt = protocol.mqtt.unwrap_or_default();
        let certificates = protocol
            .tls
            .and_then(|tls| tls.x509_certificate_pem)
            .map(|pem| {
                x509_parser::pem::Pem::iter_from_buffer(pem.as_bytes())
                    .filter_map(Result::ok)
                    .filter(|p| p.label == "CERTIFICATE")
                    .map(|p| p.contents)
                    .collect::<Vec<_>>()
            });
        let connect = MqttConnect {
            client_id: mqtt.client_id.unwrap_or_default(),
            username: mqtt.username,
            password: (!mqtt.password.0.is_empty()).then_some(mqtt.password.0),
            certificates,
        };
        let refused = AuthorizerResponse {
            is_authenticated: false,
            principal_id: "refused".into(),
            disconnect_after_in_seconds: DISCONNECT_AFTER_SECONDS,
            refresh_after_in_seconds: REFRESH_AFTER_SECONDS,
            policy_documents: Vec::new(),
        };
        match self.mqtt.connect(&connect).await? {
            ConnectDecision::Allow(authorized) => {
                let (partition, region, account) = context.arn_parts();
                tracing::info!(principal = %authorized.principal_id, client = %connect.client_id, "MQTT client allowed");
                Ok(AuthorizerResponse {
                    is_authenticated: true,
                    principal_id: authorized.principal_id.clone(),
                    disconnect_after_in_seconds: DISCONNECT_AFTER_SECONDS,
                    refresh_after_in_seconds: REFRESH_AFTER_SECONDS,
                    policy_documents: authorized
                        .policy
                        .to_iot_documents(&partition, &region, &account),
                })
            }
            ConnectDecision::Deny { reason } => {
                tracing::info!(client = %connect.client_id, reason, "MQTT client refused");
                Ok(refused)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use drogue_shared::config::{assert_refused, try_parse_flags};

    #[test]
    fn a_good_configuration() {
        let config = try_parse_flags::<Config>(&["--table", "drogue"]).unwrap();
        assert_eq!(config.table.as_str(), "drogue");
        assert!(config.oidc.is_none());
        assert_eq!(
            config.admin_role.as_str(),
            AccessControl::DEFAULT_ADMIN_ROLE
        );
        let config = try_parse_flags::<Config>(&[
            "--table",
            "drogue",
            "--oidc-issuer",
            "https://sso.example.com/realms/drogue",
            "--oidc-audience",
            "drogue",
            "--admin-role",
            "root",
        ])
        .unwrap();
        let oidc = config.oidc.unwrap();
        assert_eq!(oidc.issuer, "https://sso.example.com/realms/drogue");
        assert_eq!(oidc.audience.as_deref(), Some("drogue"));
        assert_eq!(config.admin_role.as_str(), "root");
    }

    #[test]
    fn missing_or_empty_values_are_refused() {
        assert_refused::<Config>(&[], &["DROGUE_TABLE"]);
        assert_refused::<Config>(&["--table", ""], &["DROGUE_TABLE", "empty"]);
        assert_refused::<Config>(
            &["--table", "t", "--oidc-issuer", ""],
            &["DROGUE_OIDC_ISSUER"],
        );
    }

    #[test]
    fn bad_runtime_numbers_are_refused() {
        assert_refused::<drogue_shared::runtime::Function<Config>>(
            &["--table", "t", "--port", "http"],
            &["PORT"],
        );
        assert_refused::<drogue_shared::runtime::Function<Config>>(
            &["--table", "t", "--internal-insecure", "maybe"],
            &["DROGUE_INTERNAL_INSECURE"],
        );
    }
}
