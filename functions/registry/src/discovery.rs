//! The discovery documents `drg` reads when logging in: the public and the full
//! endpoint lists, the version, and an OpenID Connect discovery document.
//!
//! Without an issuer configured, this server names itself as the issuer at `{base}/sso`;
//! it issues no OIDC tokens there (its authorization and token endpoints answer with an
//! error that says to log in with an access token), but `drg login --access-token` needs
//! the document to exist. `drogue-local` configures its own issuer
//! (`drogue_shared::access::issuer`), which then serves `/sso` instead.

use crate::caller::Caller;
use crate::params::base_url;
use crate::{AppState, MqttEndpoint};
use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use drogue_shared::http::ApiError;
use serde::Serialize;
use serde_json::{Value, json};

/// The Drogue Cloud API level this server implements, reported to `drg version`.
pub const DROGUE_API_VERSION: &str = "0.11.0";

#[derive(Serialize)]
struct Url {
    url: String,
}

/// Drogue Cloud's `Endpoints` document (snake_case keys, unset ones omitted).
#[derive(Serialize)]
struct Endpoints {
    api: String,
    /// The web console, on the API's origin.
    console: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    coap: Option<Url>,
    /// The CoAP endpoint over DTLS; not in Drogue Cloud's document, ignored by its clients.
    #[serde(skip_serializing_if = "Option::is_none")]
    coaps: Option<Url>,
    #[serde(skip_serializing_if = "Option::is_none")]
    http: Option<Url>,
    sso: String,
    issuer_url: String,
    /// Where the issuer sends the console's logins back to.
    redirect_url: String,
    registry: Url,
    #[serde(skip_serializing_if = "Option::is_none")]
    command_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    websocket_integration: Option<Url>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mqtt: Option<MqttEndpoint>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mqtt_integration: Option<MqttEndpoint>,
}

fn endpoints(state: &AppState, headers: &HeaderMap) -> Endpoints {
    let base = base_url(state.settings.public_url.as_deref(), headers);
    let issuer = match &state.settings.oidc {
        Some(oidc) => oidc.issuer.clone(),
        None => format!("{base}/sso"),
    };
    let http = state
        .settings
        .http_url
        .clone()
        .unwrap_or_else(|| base.clone());
    Endpoints {
        api: base.clone(),
        console: format!("{base}/"),
        redirect_url: format!("{base}{}", crate::console::CALLBACK),
        coap: state.settings.coap.clone().map(|url| Url { url }),
        coaps: state.settings.coaps.clone().map(|url| Url { url }),
        http: Some(Url {
            url: http.trim_end_matches('/').to_owned(),
        }),
        sso: issuer.clone(),
        issuer_url: issuer,
        registry: Url { url: base.clone() },
        websocket_integration: state.settings.websocket_path.as_ref().map(|path| Url {
            url: websocket_url(&base, path),
        }),
        command_url: Some(base),
        // one broker for devices and applications (IoT Core, or drogue-local's)
        mqtt: state.settings.mqtt.clone(),
        mqtt_integration: state.settings.mqtt.clone(),
    }
}

/// The WebSocket integration's URL: `path` itself when it is a `ws://` or `wss://` URL
/// (the WebSocket API on AWS), else `path` on the API's host.
fn websocket_url(base: &str, path: &str) -> String {
    if path.starts_with("ws://") || path.starts_with("wss://") {
        return path.to_owned();
    }
    format!(
        "{}{path}",
        base.replacen("https://", "wss://", 1)
            .replacen("http://", "ws://", 1)
    )
}

/// `/.well-known/drogue-endpoints`: public.
pub async fn public_endpoints(State(state): State<AppState>, headers: HeaderMap) -> Json<Value> {
    Json(json!(endpoints(&state, &headers)))
}

/// `/api/console/v1alpha1/info`: the full document, for authenticated users.
pub async fn info(
    State(state): State<AppState>,
    _caller: Caller,
    headers: HeaderMap,
) -> Json<Value> {
    Json(json!(endpoints(&state, &headers)))
}

/// `/.well-known/drogue-version`.
pub async fn version() -> Json<Value> {
    Json(json!({
        "version": DROGUE_API_VERSION,
        "server": concat!("drogue-serverless ", env!("CARGO_PKG_VERSION")),
    }))
}

/// `/sso/.well-known/openid-configuration`: the built-in issuer's discovery document.
pub async fn openid_configuration(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Json<Value> {
    let issuer = format!(
        "{}/sso",
        base_url(state.settings.public_url.as_deref(), &headers)
    );
    Json(json!({
        "issuer": issuer,
        "authorization_endpoint": format!("{issuer}/auth"),
        "token_endpoint": format!("{issuer}/token"),
        "jwks_uri": format!("{issuer}/jwks"),
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
    }))
}

/// `/sso/jwks`: the built-in issuer signs nothing.
pub async fn jwks() -> Json<Value> {
    Json(json!({"keys": []}))
}

/// `/sso/auth`, `/sso/token`: no interactive login here.
pub async fn no_interactive_login() -> ApiError {
    ApiError::InvalidRequest(
        "this server issues no OpenID Connect tokens: log in with an access token \
         (drg login <url> --access-token <user>:<token>)"
            .into(),
    )
}

#[cfg(test)]
mod tests {
    use super::websocket_url;

    #[test]
    fn the_websocket_integration_is_on_the_api_host_or_elsewhere() {
        assert_eq!(
            websocket_url("https://api.example.com", "/stream/"),
            "wss://api.example.com/stream/"
        );
        assert_eq!(
            websocket_url("http://127.0.0.1:8080", "/stream/"),
            "ws://127.0.0.1:8080/stream/"
        );
        let aws = "wss://abc.execute-api.us-east-1.amazonaws.com/prod?app=";
        assert_eq!(websocket_url("https://api.example.com", aws), aws);
    }
}
