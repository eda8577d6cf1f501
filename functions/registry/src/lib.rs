//! The management API, wire-compatible with Drogue Cloud 0.11 (and its 0.3.0 paths):
//! applications and devices under `/api/registry/v1alpha1` (and `/api/v1`), access
//! tokens under `/api/tokens/v1alpha1`, and the discovery documents `drg` reads.

mod admin;
mod apps;
mod caller;
pub mod console;
mod devices;
mod discovery;
mod params;
mod tokens;

use axum::Router;
use axum::routing::{MethodRouter, get};
use clap::Parser;
use drogue_shared::access::authz::AccessControl;
use drogue_shared::access::oidc::{OidcConfig, OidcVerifier};
use drogue_shared::config::{AdminRole, Table, non_empty};
use drogue_shared::http::ApiError;
use drogue_shared::rate_limit::RateLimit;
use drogue_shared::registry::{Quotas, Registry};
use drogue_shared::store::Store;
use std::sync::Arc;

/// The OpenAPI document of the management API, served at `/api/openapi.json`.
pub const OPENAPI: &str = include_str!("../openapi.json");

/// How the API presents itself and whom it trusts (from [`Config::settings`]).
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
    /// `DROGUE_COAP_ENDPOINT_URL` (`coap://host:port`): the device CoAP endpoint,
    /// announced as `coap` (`drogue-local`'s, or a cluster's coap-endpoint).
    pub coap: Option<String>,
    /// `DROGUE_COAPS_ENDPOINT_URL` (`coaps://host:port`): the same endpoint over DTLS,
    /// announced as `coaps` (Drogue Cloud's document has no such key; clients that do not
    /// know it ignore it).
    pub coaps: Option<String>,
    /// `DROGUE_MAX_APPLICATIONS_PER_USER`: applications a user may own (default 100, 0 for
    /// no limit; administrators are not limited); `DROGUE_MAX_DEVICES_PER_APPLICATION`
    /// and `DROGUE_MAX_DEVICES_PER_USER`: devices an application, and all applications a
    /// user owns together, may hold (default 10,000 each, 0 for no limit).
    pub quotas: Quotas,
    /// `DROGUE_REGISTRY_WRITE_RATE` and `DROGUE_REGISTRY_WRITE_BURST`: how fast one user
    /// may write (default 50 a second, 200 at once; administrators are not limited).
    pub write_rate: RateLimit,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            public_url: None,
            http_url: None,
            oidc: None,
            admin_role: AccessControl::DEFAULT_ADMIN_ROLE.into(),
            websocket_path: None,
            mqtt: None,
            coap: None,
            coaps: None,
            quotas: Quotas::default(),
            write_rate: DEFAULT_WRITE_RATE,
        }
    }
}

/// How fast one user may write to the registry by default.
pub const DEFAULT_WRITE_RATE: RateLimit = RateLimit {
    per_second: 50.0,
    burst: 200,
};

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

/// The quotas of the management API: `DROGUE_MAX_APPLICATIONS_PER_USER`,
/// `DROGUE_MAX_DEVICES_PER_APPLICATION`, `DROGUE_MAX_DEVICES_PER_USER`, and a user's
/// write rate, `DROGUE_REGISTRY_WRITE_RATE` and `DROGUE_REGISTRY_WRITE_BURST`
/// (drogue-local flattens them too).
#[derive(Debug, Clone, Copy, PartialEq, clap::Args)]
pub struct QuotaArgs {
    /// Applications a user may own (administrators are not limited); 0 for no limit.
    #[arg(long, env = "DROGUE_MAX_APPLICATIONS_PER_USER", value_name = "DROGUE_MAX_APPLICATIONS_PER_USER", default_value_t = Quotas::DEFAULT_APPLICATIONS_PER_USER)]
    pub max_applications_per_user: usize,
    /// Devices an application may hold (administrators are not limited); 0 for no limit.
    #[arg(long, env = "DROGUE_MAX_DEVICES_PER_APPLICATION", value_name = "DROGUE_MAX_DEVICES_PER_APPLICATION", default_value_t = Quotas::DEFAULT_DEVICES_PER_APPLICATION)]
    pub max_devices_per_application: usize,
    /// Devices all the applications a user owns may hold together, whoever created them
    /// (administrators are not limited, their devices count); 0 for no limit.
    #[arg(long, env = "DROGUE_MAX_DEVICES_PER_USER", value_name = "DROGUE_MAX_DEVICES_PER_USER", default_value_t = Quotas::DEFAULT_DEVICES_PER_USER)]
    pub max_devices_per_user: usize,
    /// Writes to the registry (applications, devices, members, ownership, new access tokens) one user may
    /// make a second (429 with Retry-After beyond; administrators are not limited); 0 for
    /// no limit.
    #[arg(long, env = "DROGUE_REGISTRY_WRITE_RATE", value_name = "DROGUE_REGISTRY_WRITE_RATE", default_value_t = DEFAULT_WRITE_RATE.per_second, value_parser = drogue_shared::rate_limit::per_second)]
    pub registry_write_rate: f64,
    /// Writes one user may make at once after a pause (the write rate's burst).
    #[arg(long, env = "DROGUE_REGISTRY_WRITE_BURST", value_name = "DROGUE_REGISTRY_WRITE_BURST", default_value_t = DEFAULT_WRITE_RATE.burst)]
    pub registry_write_burst: u32,
}

impl QuotaArgs {
    /// How fast one user may write.
    pub fn write_rate(&self) -> RateLimit {
        RateLimit {
            per_second: self.registry_write_rate,
            burst: self.registry_write_burst,
        }
    }

    pub fn quotas(&self) -> Quotas {
        Quotas {
            applications_per_user: self.max_applications_per_user,
            devices_per_application: self.max_devices_per_application,
            devices_per_user: self.max_devices_per_user,
        }
    }
}

/// The value parser of `DROGUE_MQTT_ENDPOINT`.
fn mqtt_endpoint(value: &str) -> Result<MqttEndpoint, String> {
    MqttEndpoint::parse(value).ok_or_else(|| "must be host:port".to_owned())
}

/// What the function reads from its flags and environment (see `drogue_shared::config`).
#[derive(Debug, Clone, Parser)]
#[command(
    name = "registry",
    about = "The management API of the serverless Drogue Cloud"
)]
pub struct Config {
    #[command(flatten)]
    pub table: Table,
    /// The base URL of this API (registry, tokens, commands); unset, answers name the
    /// host the request came to.
    #[arg(long, env = "DROGUE_PUBLIC_URL", value_name = "DROGUE_PUBLIC_URL", value_parser = non_empty)]
    pub public_url: Option<String>,
    /// The device HTTP endpoint's URL; unset, the API's URL.
    #[arg(long, env = "DROGUE_HTTP_ENDPOINT_URL", value_name = "DROGUE_HTTP_ENDPOINT_URL", value_parser = non_empty)]
    pub http_endpoint_url: Option<String>,
    #[command(flatten)]
    pub oidc: Option<OidcConfig>,
    #[command(flatten)]
    pub admin_role: AdminRole,
    /// The WebSocket API's URL (`wss://.../{stage}?app=`), announced as
    /// `websocket_integration`.
    #[arg(long, env = "DROGUE_WEBSOCKET_URL", value_name = "DROGUE_WEBSOCKET_URL", value_parser = non_empty)]
    pub websocket_url: Option<String>,
    /// The MQTT broker devices and applications connect to (`host:port`), announced as
    /// `mqtt` and `mqtt_integration`.
    #[arg(long, env = "DROGUE_MQTT_ENDPOINT", value_name = "DROGUE_MQTT_ENDPOINT", value_parser = mqtt_endpoint)]
    pub mqtt_endpoint: Option<MqttEndpoint>,
    /// The device CoAP endpoint (`coap://host:port`), announced as `coap`.
    #[arg(long, env = "DROGUE_COAP_ENDPOINT_URL", value_name = "DROGUE_COAP_ENDPOINT_URL", value_parser = non_empty)]
    pub coap_endpoint_url: Option<String>,
    /// The device CoAP endpoint over DTLS (`coaps://host:port`), announced as `coaps`.
    #[arg(long, env = "DROGUE_COAPS_ENDPOINT_URL", value_name = "DROGUE_COAPS_ENDPOINT_URL", value_parser = non_empty)]
    pub coaps_endpoint_url: Option<String>,
    #[command(flatten)]
    pub quotas: QuotaArgs,
}

impl Config {
    /// How the API presents itself and whom it trusts.
    pub fn settings(&self) -> Settings {
        Settings {
            public_url: self.public_url.clone(),
            http_url: self.http_endpoint_url.clone(),
            oidc: self.oidc.clone(),
            admin_role: self.admin_role.to_string(),
            websocket_path: self.websocket_url.clone(),
            mqtt: self.mqtt_endpoint.clone(),
            coap: self.coap_endpoint_url.clone(),
            coaps: self.coaps_endpoint_url.clone(),
            quotas: self.quotas.quotas(),
            write_rate: self.quotas.write_rate(),
        }
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
    let fixed: [(&str, MethodRouter<AppState>); 14] = [
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
        ("/", get(console::index)),
        (console::CALLBACK, get(console::index)),
        ("/console/console.js", get(console::script)),
        ("/console/console.css", get(console::style)),
    ];
    routes.extend(fixed.map(|(path, route)| (path.to_owned(), route)));
    routes
}

/// The management API over a store.
pub fn router(store: Arc<dyn Store>, settings: Settings) -> Router {
    let registry = Registry::new(store, AccessControl::new(&settings.admin_role))
        .with_quotas(settings.quotas)
        .with_write_rate(settings.write_rate);
    let oidc = settings
        .oidc
        .clone()
        .map(|c| Arc::new(OidcVerifier::new(c)));
    router_for(registry, settings, oidc)
}

/// The management API over a prepared registry (one that counts its changes for the
/// caches of the same process) and a verifier of `settings.oidc`'s tokens. With an
/// issuer configured, the `/sso` routes are left to it (the local runner mounts its own
/// issuer there).
pub fn router_for(
    registry: Registry,
    settings: Settings,
    oidc: Option<Arc<OidcVerifier>>,
) -> Router {
    let own_sso = settings.oidc.is_none();
    let state = AppState {
        registry,
        oidc,
        settings: Arc::new(settings),
    };
    routes()
        .into_iter()
        .filter(|(path, _)| own_sso || !path.starts_with("/sso/"))
        .fold(Router::new(), |router, (path, route)| {
            router.route(&path, route)
        })
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(not_found)
        .layer(axum::middleware::from_fn(writes_to_completion))
        .with_state(state)
}

/// Runs a request that may write to completion once it has started, on a task of its
/// own: a client that goes away (its connection closed) drops its request's future,
/// and a write committed to the store but dropped before its change is counted and
/// announced would leave the change uncounted (remembered device lookups and MQTT
/// rechecks would not see it) and its change event unsent. Reads are served in place.
async fn writes_to_completion(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::http::Method;
    use axum::response::IntoResponse;
    if matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    ) {
        return next.run(request).await;
    }
    match tokio::spawn(next.run(request)).await {
        Ok(response) => response,
        Err(e) => {
            tracing::error!(error = %e, "a management API request failed");
            (
                axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                axum::Json(serde_json::json!({
                    "error": "InternalError",
                    "message": "the request failed; it may or may not have been carried out",
                })),
            )
                .into_response()
        }
    }
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
    use super::{Config, MqttEndpoint};
    use drogue_shared::config::{assert_refused, try_parse_flags};

    #[test]
    fn a_good_configuration() {
        let config = try_parse_flags::<Config>(&["--table", "drogue"]).unwrap();
        let settings = config.settings();
        assert_eq!(config.table.as_str(), "drogue");
        assert_eq!(settings.admin_role, "drogue-admin");
        assert!(settings.oidc.is_none() && settings.mqtt.is_none() && settings.coap.is_none());
        assert_eq!(settings.quotas, drogue_shared::registry::Quotas::default());
        assert_eq!(settings.write_rate, crate::DEFAULT_WRITE_RATE);
        let config = try_parse_flags::<Config>(&[
            "--table",
            "drogue",
            "--public-url",
            "https://api.example.com",
            "--http-endpoint-url",
            "https://http.example.com",
            "--oidc-issuer",
            "https://sso.example.com/realms/drogue",
            "--oidc-audience",
            "drogue",
            "--admin-role",
            "root",
            "--websocket-url",
            "wss://ws.example.com/prod?app=",
            "--mqtt-endpoint",
            "iot.example.com:8883",
            "--coap-endpoint-url",
            "coap://coap.example.com:5683",
            "--coaps-endpoint-url",
            "coaps://coap.example.com:5684",
            "--max-applications-per-user",
            "3",
            "--max-devices-per-application",
            "0",
            "--max-devices-per-user",
            "7",
            "--registry-write-rate",
            "0.5",
            "--registry-write-burst",
            "3",
        ])
        .unwrap();
        let settings = config.settings();
        assert_eq!(
            settings.public_url.as_deref(),
            Some("https://api.example.com")
        );
        assert_eq!(
            settings.http_url.as_deref(),
            Some("https://http.example.com")
        );
        assert_eq!(settings.oidc.unwrap().audience.as_deref(), Some("drogue"));
        assert_eq!(settings.admin_role, "root");
        assert_eq!(
            settings.websocket_path.as_deref(),
            Some("wss://ws.example.com/prod?app=")
        );
        assert_eq!(settings.mqtt.unwrap().port, 8883);
        assert_eq!(
            settings.coap.as_deref(),
            Some("coap://coap.example.com:5683")
        );
        assert_eq!(
            settings.coaps.as_deref(),
            Some("coaps://coap.example.com:5684")
        );
        assert_eq!(
            (
                settings.quotas.applications_per_user,
                settings.quotas.devices_per_application,
                settings.quotas.devices_per_user
            ),
            (3, 0, 7)
        );
        assert_eq!(
            (settings.write_rate.per_second, settings.write_rate.burst),
            (0.5, 3)
        );
    }

    #[test]
    fn a_missing_or_empty_table_is_refused() {
        assert_refused::<Config>(&[], &["DROGUE_TABLE"]);
        assert_refused::<Config>(&["--table", ""], &["DROGUE_TABLE", "empty"]);
    }

    #[test]
    fn bad_numbers_and_endpoints_are_refused() {
        assert_refused::<Config>(
            &["--table", "t", "--max-devices-per-user", "many"],
            &["DROGUE_MAX_DEVICES_PER_USER"],
        );
        assert_refused::<Config>(
            &["--table", "t", "--mqtt-endpoint", "no-port"],
            &["DROGUE_MQTT_ENDPOINT", "host:port"],
        );
    }

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
