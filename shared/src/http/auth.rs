//! Who is calling the management API: `Authorization: Basic user:token`, or
//! `?username=&api_key=` (for clients that cannot set headers, such as browsers opening
//! a WebSocket). Exactly one way must be used.

use super::ApiError;
use crate::access::oidc::OidcVerifier;
use crate::access::{self, Authentication, Principal};
use crate::store::TokenStore;
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;

/// The credentials a request presents, before they are checked.
pub enum CallerCredentials {
    None,
    AccessToken {
        user: String,
        token: String,
    },
    Bearer(String),
    /// Malformed or more than one: refused without a lookup.
    Invalid,
}

impl std::fmt::Debug for CallerCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::None => f.write_str("None"),
            Self::AccessToken { user, .. } => write!(f, "AccessToken({user}, redacted)"),
            Self::Bearer(_) => f.write_str("Bearer(redacted)"),
            Self::Invalid => f.write_str("Invalid"),
        }
    }
}

impl CallerCredentials {
    /// Reads the credentials of a request.
    pub fn from_request(headers: &HeaderMap, query: Option<&str>) -> Self {
        let mut found = Vec::new();
        for value in headers.get_all(header::AUTHORIZATION) {
            found.push(parse_authorization(value.to_str().unwrap_or_default()));
        }
        let (mut user, mut key, mut bearer) = (None, None, None);
        for (k, v) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
            match k.as_ref() {
                "username" => user = Some(v.into_owned()),
                "api_key" => key = Some(v.into_owned()),
                "token" => bearer = Some(v.into_owned()),
                _ => {}
            }
        }
        match (user, key) {
            (Some(user), Some(token)) => found.push(Self::AccessToken { user, token }),
            (None, None) => {}
            _ => found.push(Self::Invalid),
        }
        if let Some(token) = bearer {
            found.push(Self::Bearer(token));
        }
        match found.len() {
            0 => Self::None,
            1 => found.pop().expect("one element"),
            _ => Self::Invalid,
        }
    }
}

/// The user and password of an `Authorization: Basic base64(user:password)` value (the
/// password is everything after the first `:`); `None` for another scheme or a value
/// that does not decode. The one reader of Basic credentials, for users and devices.
pub fn basic_credentials(value: &str) -> Option<(String, String)> {
    let (scheme, encoded) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = String::from_utf8(STANDARD.decode(encoded.trim()).ok()?).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

fn parse_authorization(value: &str) -> CallerCredentials {
    let (scheme, rest) = value.trim().split_once(' ').unwrap_or((value, ""));
    match scheme.to_ascii_lowercase().as_str() {
        "basic" => basic_credentials(value)
            .filter(|(user, token)| !user.is_empty() && !token.is_empty())
            .map(|(user, token)| CallerCredentials::AccessToken { user, token })
            .unwrap_or(CallerCredentials::Invalid),
        "bearer" if !rest.trim().is_empty() => CallerCredentials::Bearer(rest.trim().to_owned()),
        _ => CallerCredentials::Invalid,
    }
}

/// Authenticates the caller of a request: 401 without credentials, 403 for bad ones (or
/// a bearer token when no issuer is configured), 503 when the token store or the
/// issuer's keys cannot be reached.
pub async fn authenticate_user(
    parts: &Parts,
    tokens: &dyn TokenStore,
    oidc: Option<&OidcVerifier>,
) -> Result<Principal, ApiError> {
    let decision = match CallerCredentials::from_request(&parts.headers, parts.uri.query()) {
        CallerCredentials::None => return Err(ApiError::Unauthorized),
        CallerCredentials::Invalid => return Err(ApiError::Forbidden),
        CallerCredentials::Bearer(token) => match oidc {
            Some(verifier) => verifier
                .verify(&token)
                .await
                .map_err(|e| ApiError::Unavailable(Box::new(e)))?,
            None => Authentication::Deny {
                reason: "no OIDC issuer is configured",
            },
        },
        CallerCredentials::AccessToken { user, token } => {
            access::authenticate(tokens, &user, &token).await?
        }
    };
    match decision {
        Authentication::Allow(principal) => Ok(principal),
        Authentication::Deny { reason } => {
            tracing::info!(reason, "credentials refused");
            Err(ApiError::Forbidden)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(auth: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for a in auth {
            map.append(header::AUTHORIZATION, HeaderValue::from_str(a).unwrap());
        }
        map
    }

    #[test]
    fn basic_and_query_credentials_are_read() {
        let basic = format!("Basic {}", STANDARD.encode("alice:drg_x"));
        assert!(matches!(
            CallerCredentials::from_request(&headers(&[&basic]), None),
            CallerCredentials::AccessToken { user, token } if user == "alice" && token == "drg_x"
        ));
        assert!(matches!(
            CallerCredentials::from_request(&headers(&[]), Some("username=bob&api_key=drg_y")),
            CallerCredentials::AccessToken { user, .. } if user == "bob"
        ));
        assert!(matches!(
            CallerCredentials::from_request(&headers(&[]), Some("labels=a")),
            CallerCredentials::None
        ));
    }

    #[test]
    fn two_credentials_or_malformed_ones_are_invalid() {
        let basic = format!("Basic {}", STANDARD.encode("alice:drg_x"));
        for (auth, query) in [
            (vec![basic.as_str()], Some("username=bob&api_key=k")),
            (vec![basic.as_str(), "Bearer abc"], None),
            (vec!["Basic !!!"], None),
            (vec!["Digest abc"], None),
            (vec![], Some("username=bob")),
        ] {
            assert!(
                matches!(
                    CallerCredentials::from_request(&headers(&auth), query),
                    CallerCredentials::Invalid
                ),
                "{auth:?} {query:?}"
            );
        }
    }
}
