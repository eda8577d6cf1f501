//! The management API, wire-compatible with Drogue Cloud 0.11 (and its 0.3.0 paths):
//! applications and devices under `/api/registry/v1alpha1` (and `/api/v1`), access
//! tokens under `/api/tokens/v1alpha1`, and the discovery documents `drg` reads.

mod apps;
mod caller;
mod devices;
mod discovery;
mod params;
mod tokens;

pub use discovery::EndpointsConfig;

use axum::Router;
use axum::routing::{MethodRouter, get};
use drogue_shared::http::ApiError;
use drogue_shared::registry::Registry;
use drogue_shared::store::Store;
use std::sync::Arc;

/// The OpenAPI document of the management API, served at `/api/openapi.json`.
pub const OPENAPI: &str = include_str!("../openapi.json");

/// What the function reads from its environment.
#[derive(Debug, Clone)]
pub struct Config {
    /// `DROGUE_TABLE`: the DynamoDB table.
    pub table: String,
    pub endpoints: EndpointsConfig,
}

impl Config {
    pub fn from_env() -> anyhow::Result<Self> {
        let table = std::env::var("DROGUE_TABLE")
            .map_err(|_| anyhow::anyhow!("DROGUE_TABLE must name the DynamoDB table"))?;
        Ok(Self {
            table,
            endpoints: EndpointsConfig::from_env(),
        })
    }
}

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub registry: Registry,
    pub endpoints: Arc<EndpointsConfig>,
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
pub fn router(store: Arc<dyn Store>, endpoints: EndpointsConfig) -> Router {
    let state = AppState {
        registry: Registry::new(store),
        endpoints: Arc::new(endpoints),
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
