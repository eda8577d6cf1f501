//! The routes of the WebSocket API (API Gateway, Lambda proxy integrations), by
//! `requestContext.routeKey`:
//!
//! - `$connect`: the caller authenticates as on the management API (Basic access token,
//!   bearer OIDC token, `?token=`, `?username=&api_key=`), names the application with
//!   `?app=` (and optionally one channel with `?channel=`) and needs read access to it.
//!   The connection is then kept in the table (two hours at most, API Gateway's longest
//!   connection), with what the fan-out needs to check its access again before each
//!   delivery (the user, the credentials' roles and expiry, an access token's prefix; never
//!   a token), and the handshake completes; otherwise it is refused with the status and
//!   JSON error of the management API: 401 without credentials, 403 for bad ones, 404 for an
//!   application the caller may not read, 400 without `?app=`, 429 when the application
//!   has [`Config::max_streams_per_application`] connections, 503 when a backend is unavailable.
//! - `$disconnect`: the connection is forgotten.
//! - `$default` (any message from the client, such as `drg`'s token refreshes): ignored.
//!
//! API Gateway's WebSocket URLs have no path beyond the stage, so the application is a
//! query parameter: discovery announces `wss://{api}.execute-api.{region}.amazonaws.com/{stage}?app=`
//! and `drg stream --app APP` appends the application's name to it.

use aws_lambda_events::event::apigw::ApiGatewayWebsocketProxyRequest;
use axum::response::IntoResponse;
use chrono::{DateTime, Duration, Utc};
use drogue_shared::access::Permission;
use drogue_shared::access::Principal;
use drogue_shared::access::authz::AccessControl;
use drogue_shared::access::oidc::{OidcConfig, OidcVerifier};
use drogue_shared::config::{AdminRole, Table};
use drogue_shared::http::{ApiError, CallerCredentials, authenticate_user};
use drogue_shared::model::AppName;
use drogue_shared::registry::Registry;
use drogue_shared::store::StoreError;
use drogue_shared::store::TokenStore;
use drogue_shared::store::dynamodb::{DynamoStore, StreamConnection};
use serde::Serialize;
use serde_json::Value;
use std::sync::Arc;

/// How long a connection is kept: API Gateway closes every connection after two hours.
pub const CONNECTION_LIFETIME: Duration = Duration::hours(2);

/// What the WebSocket routes read from their flags and environment (see
/// `drogue_shared::config`).
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "stream", about = "The WebSocket API's routes on AWS")]
pub struct Config {
    #[command(flatten)]
    pub table: Table,
    #[command(flatten)]
    pub oidc: Option<OidcConfig>,
    #[command(flatten)]
    pub admin_role: AdminRole,
    /// Open WebSocket connections per application; 0 for no limit.
    #[arg(
        long,
        env = "DROGUE_MAX_STREAMS_PER_APPLICATION",
        value_name = "DROGUE_MAX_STREAMS_PER_APPLICATION",
        default_value_t = 100
    )]
    pub max_streams_per_application: usize,
}

/// The WebSocket routes; cheap to clone.
#[derive(Clone)]
pub struct StreamRoutes {
    store: DynamoStore,
    registry: Registry,
    oidc: Option<Arc<OidcVerifier>>,
    max_connections: usize,
}

impl StreamRoutes {
    pub fn new(store: DynamoStore, config: &Config) -> Self {
        let registry = Registry::new(
            Arc::new(store.clone()),
            AccessControl::new(config.admin_role.as_str()),
        );
        Self {
            store,
            registry,
            oidc: config.oidc.clone().map(|c| Arc::new(OidcVerifier::new(c))),
            max_connections: config.max_streams_per_application,
        }
    }

    /// Handles a WebSocket API event; the answer is an API Gateway proxy response. An
    /// event that is none (refused by the runtime), or one without a connection id, or a
    /// `$disconnect` that cannot be recorded, is a function error.
    pub async fn handle(
        &self,
        request: ApiGatewayWebsocketProxyRequest,
    ) -> Result<RouteAnswer, StreamRouteError> {
        let context = &request.request_context;
        let connection = context
            .connection_id
            .clone()
            .ok_or(StreamRouteError::NoConnectionId)?;
        match context.route_key.as_deref() {
            // boxed: the authentication and registry futures are deep
            Some("$connect") => Ok(match Box::pin(self.connect(&request, &connection)).await {
                Ok(()) => RouteAnswer::OK,
                Err(e) => error_answer(e).await,
            }),
            Some("$disconnect") => {
                let kept = self
                    .store
                    .forget_stream_connection(&connection)
                    .await
                    .map_err(StreamRouteError::Store)?;
                tracing::info!(connection, kept, "stream disconnected");
                Ok(RouteAnswer::OK)
            }
            // messages from the client: nothing to do
            _ => Ok(RouteAnswer::OK),
        }
    }

    async fn connect(
        &self,
        request: &ApiGatewayWebsocketProxyRequest,
        connection: &str,
    ) -> Result<(), ApiError> {
        let parts = request_parts(request)?;
        let principal =
            authenticate_user(&parts, self.registry.tokens(), self.oidc.as_deref()).await?;
        let query = |name: &str| {
            form_urlencoded::parse(parts.uri.query().unwrap_or_default().as_bytes())
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.into_owned())
        };
        let raw = query("app").filter(|a| !a.is_empty()).ok_or_else(|| {
            ApiError::InvalidRequest("name the application to follow: ?app=<application>".into())
        })?;
        let app = AppName::parse(&raw)
            .map_err(|_| ApiError::NotFound(format!("the application '{raw}' does not exist")))?;
        let stored = self
            .registry
            .application_for(&principal, &app, Permission::Read)
            .await?;
        if self.max_connections > 0
            && self.store.count_stream_connections(app.as_str()).await? >= self.max_connections
        {
            return Err(ApiError::QuotaExceeded(format!(
                "the application '{app}' has {} open streams, the most it may have",
                self.max_connections
            )));
        }
        let (token, credentials_expire) = self.credentials(&parts, &principal).await?;
        let now = Utc::now();
        let channel = query("channel").filter(|c| !c.is_empty());
        self.store
            .put_stream_connection(&StreamConnection {
                id: connection.to_owned(),
                application: app.as_str().to_owned(),
                application_uid: stored.app.metadata.uid,
                user: principal.user.clone(),
                roles: principal.roles.clone(),
                token,
                credentials_expire,
                channel: channel.clone(),
                connected: now,
                expires: now + CONNECTION_LIFETIME,
            })
            .await?;
        tracing::info!(application = %app, user = %principal.user, ?channel, connection, "stream opened");
        Ok(())
    }

    /// What identifies the (already authenticated) credentials of a request for a later
    /// check: an access token's prefix and expiry, or a bearer token's `exp`.
    async fn credentials(
        &self,
        parts: &http::request::Parts,
        principal: &Principal,
    ) -> Result<(Option<String>, Option<DateTime<Utc>>), ApiError> {
        match CallerCredentials::from_request(&parts.headers, parts.uri.query()) {
            CallerCredentials::AccessToken { token, .. } => {
                let prefix = drogue_shared::access::token_format::prefix_of(&token)
                    .ok_or(ApiError::Forbidden)?
                    .to_owned();
                let stored = self
                    .store
                    .get_token(&prefix)
                    .await?
                    .filter(|t| t.user == principal.user)
                    .ok_or(ApiError::Forbidden)?;
                Ok((Some(prefix), stored.expires))
            }
            CallerCredentials::Bearer(token) => match bearer_expiry(&token) {
                Some(exp) => Ok((None, Some(exp))),
                None => Err(ApiError::Forbidden),
            },
            CallerCredentials::None | CallerCredentials::Invalid => Err(ApiError::Forbidden),
        }
    }
}

/// The `exp` of a JWT whose signature has been verified (`None` when it has none).
fn bearer_expiry(token: &str) -> Option<DateTime<Utc>> {
    use base64::Engine;
    let payload = token.split('.').nth(1)?;
    let claims = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: Value = serde_json::from_slice(&claims).ok()?;
    let exp = claims.get("exp")?;
    let seconds = exp.as_i64().or_else(|| exp.as_f64().map(|f| f as i64))?;
    DateTime::from_timestamp(seconds, 0)
}

/// The request's URI (with its query) and headers, as the management API's
/// authentication reads them.
fn request_parts(
    request: &ApiGatewayWebsocketProxyRequest,
) -> Result<http::request::Parts, ApiError> {
    let pairs = if request.multi_value_query_string_parameters.is_empty() {
        &request.query_string_parameters
    } else {
        &request.multi_value_query_string_parameters
    };
    let mut query = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs.iter() {
        query.append_pair(k, v);
    }
    let headers = if request.multi_value_headers.is_empty() {
        &request.headers
    } else {
        &request.multi_value_headers
    };
    let mut built = http::Request::builder()
        .uri(format!("/?{}", query.finish()))
        .body(())
        .map_err(|e| ApiError::InvalidRequest(format!("a malformed request: {e}")))?;
    *built.headers_mut() = headers.clone();
    Ok(built.into_parts().0)
}

/// An error as API Gateway's proxy response: the management API's status and JSON body.
async fn error_answer(error: ApiError) -> RouteAnswer {
    let response = error.into_response();
    let status_code = response.status().as_u16();
    let body = axum::body::to_bytes(response.into_body(), 64 * 1024)
        .await
        .unwrap_or_default();
    RouteAnswer {
        status_code,
        headers: Some(JsonContent {
            content_type: "application/json",
        }),
        body: Some(String::from_utf8_lossy(&body).into_owned()),
    }
}

/// A route's answer, the API Gateway proxy response: `{"statusCode": 200}`, or an error's
/// status with its JSON body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteAnswer {
    pub status_code: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub headers: Option<JsonContent>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
}

impl RouteAnswer {
    pub const OK: Self = Self {
        status_code: 200,
        headers: None,
        body: None,
    };
}

/// The headers of an error's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JsonContent {
    #[serde(rename = "content-type")]
    pub content_type: &'static str,
}

/// Why a WebSocket API event failed (a function error).
#[derive(Debug)]
pub enum StreamRouteError {
    /// The event names no connection.
    NoConnectionId,
    /// The closed connection could not be forgotten.
    Store(StoreError),
}

impl std::fmt::Display for StreamRouteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NoConnectionId => f.write_str("a WebSocket API event without a connection id"),
            Self::Store(e) => write!(f, "cannot forget the stream connection: {e}"),
        }
    }
}

impl std::error::Error for StreamRouteError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::NoConnectionId => None,
            Self::Store(e) => Some(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use serde_json::json;

    fn jwt(claims: Value) -> String {
        let encode = |v: Value| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string().as_bytes())
        };
        format!(
            "{}.{}.c2lnbmF0dXJl",
            encode(json!({"alg": "RS256", "kid": "k1"})),
            encode(claims)
        )
    }

    #[test]
    fn a_bearer_tokens_expiry_is_its_exp() {
        let exp = 1_900_000_000;
        assert_eq!(
            bearer_expiry(&jwt(json!({"sub": "u", "exp": exp}))),
            DateTime::from_timestamp(exp, 0)
        );
        assert_eq!(bearer_expiry(&jwt(json!({"sub": "u"}))), None);
        assert_eq!(bearer_expiry(&jwt(json!({"exp": "soon"}))), None);
        assert_eq!(bearer_expiry("not-a-jwt"), None);
        assert_eq!(bearer_expiry("a.!!!.c"), None);
    }
}

#[cfg(test)]
mod config_tests {
    use super::Config;
    use drogue_shared::config::{assert_refused, try_parse_flags};

    #[test]
    fn a_good_configuration() {
        let config = try_parse_flags::<Config>(&["--table", "drogue"]).unwrap();
        assert_eq!(config.max_streams_per_application, 100);
        assert!(config.oidc.is_none());
        let config = try_parse_flags::<Config>(&[
            "--table",
            "drogue",
            "--max-streams-per-application",
            "0",
            "--oidc-issuer",
            "https://sso.example.com/realms/drogue",
        ])
        .unwrap();
        assert_eq!(config.max_streams_per_application, 0);
        assert!(config.oidc.is_some());
    }

    #[test]
    fn missing_empty_or_bad_values_are_refused() {
        assert_refused::<Config>(&[], &["DROGUE_TABLE"]);
        assert_refused::<Config>(&["--table", " "], &["DROGUE_TABLE", "empty"]);
        assert_refused::<Config>(
            &["--table", "t", "--max-streams-per-application=-5"],
            &["DROGUE_MAX_STREAMS_PER_APPLICATION"],
        );
    }
}
