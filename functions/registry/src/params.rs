//! Path and query parameters, parsed into domain types with JSON errors.

use axum::extract::{FromRequestParts, Path, RawQuery};
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use drogue_shared::http::ApiError;
use drogue_shared::model::{AppName, DeviceName, LabelSelector};
use drogue_shared::registry::ListOptions;
use std::collections::HashMap;

/// The `{app}` of a path. A name that cannot be an application cannot exist: 404.
pub struct AppParam(pub AppName);

/// The `{app}` and `{device}` of a path.
pub struct DeviceParam(pub AppName, pub DeviceName);

async fn path_params<S: Send + Sync>(
    parts: &mut Parts,
    state: &S,
) -> Result<HashMap<String, String>, ApiError> {
    Path::<HashMap<String, String>>::from_request_parts(parts, state)
        .await
        .map(|Path(params)| params)
        .map_err(|e| ApiError::NotFound(format!("invalid path: {e}")))
}

fn app_name(params: &HashMap<String, String>) -> Result<AppName, ApiError> {
    let raw = params.get("app").map(String::as_str).unwrap_or_default();
    AppName::parse(raw)
        .map_err(|_| ApiError::NotFound(format!("the application '{raw}' does not exist")))
}

impl<S: Send + Sync> FromRequestParts<S> for AppParam {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let params = path_params(parts, state).await?;
        app_name(&params).map(Self)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for DeviceParam {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let params = path_params(parts, state).await?;
        let app = app_name(&params)?;
        let raw = params.get("device").map(String::as_str).unwrap_or_default();
        let device = DeviceName::parse(raw)
            .map_err(|_| ApiError::NotFound(format!("the device '{raw}' does not exist")))?;
        Ok(Self(app, device))
    }
}

/// `labels` (repeatable), `limit` and `offset` of a list request.
pub struct ListQuery(pub ListOptions);

impl<S: Send + Sync> FromRequestParts<S> for ListQuery {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let RawQuery(query) = RawQuery::from_request_parts(parts, state)
            .await
            .unwrap_or(RawQuery(None));
        let mut selectors = Vec::new();
        let mut options = ListOptions::default();
        for (key, value) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
            let number = |what: &str| {
                value.parse::<usize>().map_err(|_| {
                    ApiError::InvalidRequest(format!("{what} must be a non-negative integer"))
                })
            };
            match key.as_ref() {
                "labels" => selectors.push(value.to_string()),
                "limit" => options.limit = Some(number("limit")?),
                "offset" => options.offset = Some(number("offset")?),
                _ => {}
            }
        }
        options.selector = LabelSelector::parse_all(selectors.iter().map(String::as_str))
            .map_err(|e| ApiError::InvalidRequest(e.to_string()))?;
        Ok(Self(options))
    }
}

/// The value of a query parameter.
pub fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// The base URL clients reach this API at: the configured one, or the request's own
/// (`X-Forwarded-Proto` and `Host`).
pub fn base_url(configured: Option<&str>, headers: &HeaderMap) -> String {
    if let Some(url) = configured {
        return url.trim_end_matches('/').to_owned();
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    let scheme = headers
        .get("x-forwarded-proto")
        .and_then(|h| h.to_str().ok())
        .unwrap_or("http");
    format!("{scheme}://{host}")
}
