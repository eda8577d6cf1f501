//! The management API, wire-compatible with Drogue Cloud 0.11 (and its 0.3.0 paths):
//! applications and devices under `/api/registry/v1alpha1` (and `/api/v1`), access
//! tokens under `/api/tokens/v1alpha1`, and the discovery documents `drg` reads.

mod admin;
mod apps;
mod caller;
mod devices;
mod discovery;
mod params;
mod tokens;

use axum::Router;
use axum::routing::{MethodRouter, get};
use drogue_shared::access::authz::Authorizer;
use drogue_shared::access::oidc::{OidcConfig, OidcVerifier};
use drogue_shared::http::ApiError;
use drogue_shared::registry::{Quotas, Registry};
use drogue_shared::store::Store;
use std::sync::Arc;

/// The OpenAPI document of the management API, served at `/api/openapi.json`.
pub const OPENAPI: &str = include_str!("../openapi.json");

/// How the API presents itself and whom it trusts.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `DROGUE_PUBLIC_URL`: the base URL of this API (registry, tokens, commands); unset,
    /// answers name the host the request came to.
    pub public_url: Option<String>,
    /// `DROGUE_HTTP_ENDPOINT_URL`: the device HTTP endpoint; unset, the API's URL.
    pub http_url: Option<String>,
    /// `DROGUE_OIDC_ISSUER` and `DROGUE_OIDC_AUDIENCE`: an OpenID Connect issuer whose
    /// bearer tokens are accepted.
    pub oidc: Option<OidcConfig>,
    /// `DROGUE_ADMIN_ROLE`: the role that may do everything (default `drogue-admin`).
    pub admin_role: String,
    /// The path on this API's host where the WebSocket integration serves
    /// (`/stream/` in `drogue-local`), or its absolute `ws://`/`wss://` URL
    /// (`DROGUE_WEBSOCKET_URL`: the WebSocket API on AWS, `wss://.../{stage}?app=`),
    /// announced as `websocket_integration`.
    pub websocket_path: Option<String>,
    /// `DROGUE_MQTT_ENDPOINT` (`host:port`): the MQTT broker devices and applications
    /// connect to (IoT Core's data endpoint on 8883; `drogue-local`'s broker), announced
    /// as `mqtt` and `mqtt_integration`.
    pub mqtt: Option<MqttEndpoint>,
    /// `DROGUE_MAX_APPLICATIONS_PER_USER`: applications a user may own (default 100, 0 for
    /// no limit; administrators are not limited); `DROGUE_MAX_DEVICES_PER_APPLICATION`
    /// and `DROGUE_MAX_DEVICES_PER_USER`: devices an application, and all applications a
    /// user owns together, may hold (default 10,000 each, 0 for no limit).
    pub quotas: Quotas,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            public_url: None,
            http_url: None,
            oidc: None,
            admin_role: Authorizer::DEFAULT_ADMIN_ROLE.into(),
            websocket_path: None,
            mqtt: None,
            quotas: Quotas::default(),
        }
    }
}

/// Where an MQTT broker listens, as Drogue Cloud announces it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct MqttEndpoint {
    pub host: String,
    pub port: u16,
}

impl MqttEndpoint {
    /// `host:port` (an IPv6 host in brackets).
    pub fn parse(text: &str) -> Option<Self> {
        let (host, port) = text.rsplit_once(':')?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        (!host.is_empty()).then_some(())?;
        Some(Self {
            host: host.to_owned(),
            port: port.parse().ok()?,
        })
    }
}

impl Settings {
    pub fn from_env() -> Self {
        let var = |name| std::env::var(name).ok().filter(|v: &String| !v.is_empty());
        Self {
            public_url: var("DROGUE_PUBLIC_URL"),
            http_url: var("DROGUE_HTTP_ENDPOINT_URL"),
            oidc: var("DROGUE_OIDC_ISSUER")
                .map(|issuer| OidcConfig::new(issuer, var("DROGUE_OIDC_AUDIENCE"))),
            admin_role: var("DROGUE_ADMIN_ROLE")
                .unwrap_or_else(|| Authorizer::DEFAULT_ADMIN_ROLE.into()),
            websocket_path: var("DROGUE_WEBSOCKET_URL"),
            mqtt: var("DROGUE_MQTT_ENDPOINT").and_then(|e| {
                let parsed = MqttEndpoint::parse(&e);
                if parsed.is_none() {
                    tracing::warn!(
                        value = e,
                        "DROGUE_MQTT_ENDPOINT is not host:port; no MQTT endpoint is announced"
                    );
                }
                parsed
            }),
            quotas: Quotas {
                applications_per_user: match var("DROGUE_MAX_APPLICATIONS_PER_USER") {
                    None => Quotas::DEFAULT_APPLICATIONS_PER_USER,
                    Some(value) => value.parse().unwrap_or_else(|_| {
                        tracing::warn!(
                            value,
                            "DROGUE_MAX_APPLICATIONS_PER_USER is no number; the default applies"
                        );
                        Quotas::DEFAULT_APPLICATIONS_PER_USER
                    }),
                },
                devices_per_application: match var("DROGUE_MAX_DEVICES_PER_APPLICATION") {
                    None => Quotas::DEFAULT_DEVICES_PER_APPLICATION,
                    Some(value) => value.parse().unwrap_or_else(|_| {
                        tracing::warn!(
                            value,
                            "DROGUE_MAX_DEVICES_PER_APPLICATION is no number; the default applies"
                        );
                        Quotas::DEFAULT_DEVICES_PER_APPLICATION
                    }),
                },
                devices_per_user: match var("DROGUE_MAX_DEVICES_PER_USER") {
                    None => Quotas::DEFAULT_DEVICES_PER_USER,
                    Some(value) => value.parse().unwrap_or_else(|_| {
                        tracing::warn!(
                            value,
                            "DROGUE_MAX_DEVICES_PER_USER is no number; the default applies"
                        );
                        Quotas::DEFAULT_DEVICES_PER_USER
                    }),
                },
            },
        }
    }
}

/// What the function reads from its environment.
#[derive(Debug, Clone)]
pub struct Config {
    /// `DROGUE_TABLE`: the DynamoDB table.
    pub table: String,
    pub settings: Settings,
}

impl Config {
    pub fn from_env() -> anyhow::Result<Self> {
        let table = std::env::var("DROGUE_TABLE")
            .map_err(|_| anyhow::anyhow!("DROGUE_TABLE must name the DynamoDB table"))?;
        Ok(Self {
            table,
            settings: Settings::from_env(),
        })
    }
}

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub registry: Registry,
    pub settings: Arc<Settings>,
    pub oidc: Option<Arc<OidcVerifier>>,
}

/// Every route of the management API, by path (axum syntax).
pub fn routes() -> Vec<(String, MethodRouter<AppState>)> {
    let mut routes = Vec::new();
    for prefix in ["/api/registry/v1alpha1", "/api/v1"] {
        let path = |suffix: &str| format!("{prefix}{suffix}");
        routes.extend([
            (path("/apps"), get(apps::list).post(apps::create)),
            (
                path("/apps/{app}"),
                get(apps::read).put(apps::update).delete(apps::delete),
            ),
            (
                path("/apps/{app}/devices"),
                get(devices::list).post(devices::create),
            ),
            (
                path("/apps/{app}/devices/{device}"),
                get(devices::read)
                    .put(devices::update)
                    .delete(devices::delete),
            ),
        ]);
    }
    let admin = "/api/admin/v1alpha1";
    routes.extend([
        (
            format!("{admin}/apps/{{app}}/members"),
            get(admin::members).put(admin::set_members),
        ),
        (
            format!("{admin}/apps/{{app}}/transfer-ownership"),
            get(admin::transfer)
                .put(admin::offer)
                .delete(admin::withdraw),
        ),
        (
            format!("{admin}/apps/{{app}}/accept-ownership"),
            axum::routing::put(admin::accept),
        ),
        (format!("{admin}/user/whoami"), get(admin::whoami)),
        (
            format!("{admin}/users/{{user}}/tokens"),
            axum::routing::post(admin::create_user_token),
        ),
    ]);
    let fixed: [(&str, MethodRouter<AppState>); 10] = [
        (
            "/api/tokens/v1alpha1",
            get(tokens::list).post(tokens::create),
        ),
        (
            "/api/tokens/v1alpha1/{prefix}",
            axum::routing::delete(tokens::delete),
        ),
        (
            "/.well-known/drogue-endpoints",
            get(discovery::public_endpoints),
        ),
        ("/.well-known/drogue-version", get(discovery::version)),
        ("/api/console/v1alpha1/info", get(discovery::info)),
        (
            "/sso/.well-known/openid-configuration",
            get(discovery::openid_configuration),
        ),
        ("/sso/jwks", get(discovery::jwks)),
        (
            "/sso/auth",
            get(discovery::no_interactive_login).post(discovery::no_interactive_login),
        ),
        (
            "/sso/token",
            get(discovery::no_interactive_login).post(discovery::no_interactive_login),
        ),
        ("/api/openapi.json", get(openapi)),
    ];
    routes.extend(fixed.map(|(path, route)| (path.to_owned(), route)));
    routes
}

/// The management API over a store.
pub fn router(store: Arc<dyn Store>, settings: Settings) -> Router {
    let registry =
        Registry::new(store, Authorizer::new(&settings.admin_role)).with_quotas(settings.quotas);
    router_for(registry, settings)
}

/// The management API over a prepared registry (one that counts its changes for the
/// caches of the same process).
pub fn router_for(registry: Registry, settings: Settings) -> Router {
    let state = AppState {
        registry,
        oidc: settings
            .oidc
            .clone()
            .map(|c| Arc::new(OidcVerifier::new(c))),
        settings: Arc::new(settings),
    };
    routes()
        .into_iter()
        .fold(Router::new(), |router, (path, route)| {
            router.route(&path, route)
        })
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(not_found)
        .with_state(state)
}

async fn openapi() -> impl axum::response::IntoResponse {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        OPENAPI,
    )
}

async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::NotFound(format!("no such resource: {}", uri.path()))
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

#[cfg(test)]
mod tests {
    use super::MqttEndpoint;

    #[test]
    fn mqtt_endpoints_are_host_and_port() {
        let parsed = MqttEndpoint::parse("abc-ats.iot.us-east-1.amazonaws.com:8883").unwrap();
        assert_eq!(
            (parsed.host.as_str(), parsed.port),
            ("abc-ats.iot.us-east-1.amazonaws.com", 8883)
        );
        assert_eq!(MqttEndpoint::parse("[::1]:1883").unwrap().host, "::1");
        for bad in ["no-port", ":8883", "host:http", "host:70000"] {
            assert!(MqttEndpoint::parse(bad).is_none(), "{bad}");
        }
    }
}
