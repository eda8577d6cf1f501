//! OpenID Connect bearer tokens (Keycloak, Amazon Cognito, any issuer): JWTs verified
//! against the issuer's keys, found through its discovery document.
//!
//! Keys are cached by `kid`. A token with an unknown `kid` makes the verifier fetch the
//! key set again (the issuer rotated its keys), at most once per `refresh_interval`, so
//! forged `kid`s cannot make it hammer the issuer. Only asymmetric algorithms are
//! accepted, and only the one the key is for: `alg: none` and HMAC tokens (such as one
//! signed with the RSA public key as an HMAC secret) are refused.
//!
//! A principal's roles are the realm's roles (`realm_access.roles`), Cognito's groups,
//! and the client roles of one client only: `resource_access[roles_client].roles`, the
//! roles client being the audience unless set otherwise. Roles a token carries for any
//! other client of the realm are ignored: a role named like the administrator role on
//! some unrelated client grants nothing here.

use super::{Authentication, Principal};
use jsonwebtoken::jwk::{AlgorithmParameters, Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::Value;
use std::collections::HashMap;
use std::time::{Duration, Instant};
use tokio::sync::{Mutex, RwLock};

/// How tokens of an issuer are checked.
#[derive(Debug, Clone)]
pub struct OidcConfig {
    /// The issuer URL: the `iss` tokens carry; its discovery document is at
    /// `{issuer}/.well-known/openid-configuration`.
    pub issuer: String,
    /// When set, a token's `aud` must contain it or its `azp` must be it. Without it,
    /// tokens the issuer made for any client are accepted: set it wherever the issuer
    /// serves other clients too.
    pub audience: Option<String>,
    /// The client (Keycloak client id) whose client roles, `resource_access[client]`,
    /// count besides the realm roles; the audience, by [`OidcConfig::new`]. `None`: no
    /// client roles count.
    pub roles_client: Option<String>,
    /// Clock skew allowed on `exp` and `nbf`.
    pub leeway: Duration,
    /// Least time between two fetches of the key set.
    pub refresh_interval: Duration,
}

impl OidcConfig {
    pub fn new(issuer: impl Into<String>, audience: Option<String>) -> Self {
        Self {
            issuer: issuer.into().trim_end_matches('/').to_owned(),
            roles_client: audience.clone(),
            audience,
            leeway: Duration::from_secs(30),
            refresh_interval: Duration::from_secs(10),
        }
    }
}

/// The issuer could not be asked for its keys: nothing can be decided.
#[derive(Debug, thiserror::Error)]
#[error("cannot read the keys of the OIDC issuer {issuer}: {reason}")]
pub struct OidcUnavailable {
    issuer: String,
    reason: String,
}

struct CachedKey {
    key: DecodingKey,
    algorithms: Vec<Algorithm>,
}

#[derive(Default)]
struct Keys {
    by_kid: HashMap<String, CachedKey>,
    /// Keys published without a `kid`, tried for tokens without one.
    anonymous: Vec<CachedKey>,
    fetched: Option<Instant>,
}

impl Keys {
    /// The usable keys of a key set, fetched now.
    fn from_set(set: &JwkSet) -> Self {
        let mut keys = Keys {
            fetched: Some(Instant::now()),
            ..Keys::default()
        };
        for jwk in &set.keys {
            let Some(cached) = cache_entry(jwk) else {
                continue;
            };
            match &jwk.common.key_id {
                Some(kid) => {
                    keys.by_kid.insert(kid.clone(), cached);
                }
                None => keys.anonymous.push(cached),
            }
        }
        keys
    }
}

/// Verifies bearer tokens of one issuer.
pub struct OidcVerifier {
    config: OidcConfig,
    http: reqwest::Client,
    keys: RwLock<Keys>,
    jwks_uri: Mutex<Option<String>>,
    /// The keys were given, not fetched: an unknown `kid` is refused, never looked up.
    fixed: bool,
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
    /// Keycloak's (and the local issuer's) token type: `Bearer`, or `ID` for ID tokens.
    #[serde(default)]
    typ: Option<String>,
    #[serde(default)]
    aud: Option<Value>,
    #[serde(default)]
    azp: Option<String>,
    #[serde(default)]
    preferred_username: Option<String>,
    #[serde(default, rename = "cognito:username")]
    cognito_username: Option<String>,
    #[serde(default)]
    realm_access: Option<RoleList>,
    #[serde(default)]
    resource_access: Option<HashMap<String, RoleList>>,
    #[serde(default, rename = "cognito:groups")]
    cognito_groups: Option<Vec<String>>,
}

#[derive(Deserialize)]
struct RoleList {
    #[serde(default)]
    roles: Vec<String>,
}

impl OidcVerifier {
    pub fn new(config: OidcConfig) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .expect("an HTTP client");
        Self {
            config,
            http,
            keys: RwLock::new(Keys::default()),
            jwks_uri: Mutex::new(None),
            fixed: false,
        }
    }

    /// A verifier of an issuer whose keys are known here (the local runner's own
    /// issuer): they are never fetched.
    pub fn with_keys(config: OidcConfig, set: &JwkSet) -> Self {
        let mut verifier = Self::new(config);
        verifier.keys = RwLock::new(Keys::from_set(set));
        verifier.fixed = true;
        verifier
    }

    pub fn config(&self) -> &OidcConfig {
        &self.config
    }

    /// Checks a bearer token. `Err` only when the issuer's keys could not be fetched.
    pub async fn verify(&self, token: &str) -> Result<Authentication, OidcUnavailable> {
        let deny = |reason| Ok(Authentication::Deny { reason });
        let Ok(header) = jsonwebtoken::decode_header(token) else {
            return deny("malformed bearer token");
        };
        if !is_asymmetric(header.alg) {
            return deny("bearer token not signed with an asymmetric algorithm");
        }
        let kid = header.kid.clone();
        if !self.fixed && !self.has_key(kid.as_deref()).await {
            self.refresh(kid.as_deref()).await?;
        }
        let keys = self.keys.read().await;
        let candidates: Vec<&CachedKey> = match &kid {
            Some(kid) => keys.by_kid.get(kid).into_iter().collect(),
            None => keys.anonymous.iter().collect(),
        };
        if candidates.is_empty() {
            return deny("bearer token signed by an unknown key");
        }
        for key in candidates {
            if !key.algorithms.contains(&header.alg) {
                continue;
            }
            match jsonwebtoken::decode::<Claims>(token, &key.key, &self.validation(header.alg)) {
                Ok(data) => return Ok(self.accept(data.claims)),
                Err(e) => {
                    tracing::debug!(error = %e, "bearer token refused");
                    if kid.is_some() {
                        return deny("bearer token is not valid");
                    }
                }
            }
        }
        deny("bearer token is not valid")
    }

    fn validation(&self, alg: Algorithm) -> Validation {
        let mut validation = Validation::new(alg);
        validation.leeway = self.config.leeway.as_secs();
        validation.validate_nbf = true;
        validation.validate_aud = false; // checked with azp in `accept`
        validation.set_issuer(&[&self.config.issuer]);
        validation.set_required_spec_claims(&["exp", "iss", "sub"]);
        validation
    }

    fn accept(&self, claims: Claims) -> Authentication {
        if claims.typ.as_deref() == Some("ID") {
            return Authentication::Deny {
                reason: "an ID token is not an access token",
            };
        }
        if let Some(audience) = &self.config.audience {
            let in_aud = match &claims.aud {
                Some(Value::String(aud)) => aud == audience,
                Some(Value::Array(auds)) => auds.iter().any(|a| a.as_str() == Some(audience)),
                _ => false,
            };
            if !in_aud && claims.azp.as_deref() != Some(audience.as_str()) {
                return Authentication::Deny {
                    reason: "bearer token is for another audience",
                };
            }
        }
        let roles = roles_of(&claims, self.config.roles_client.as_deref());
        Authentication::Allow(Principal {
            user: claims.sub,
            name: claims.preferred_username.or(claims.cognito_username),
            roles,
        })
    }

    async fn has_key(&self, kid: Option<&str>) -> bool {
        let keys = self.keys.read().await;
        match kid {
            Some(kid) => keys.by_kid.contains_key(kid),
            None => !keys.anonymous.is_empty(),
        }
    }

    /// Fetches the key set again, unless that was done less than `refresh_interval` ago.
    async fn refresh(&self, kid: Option<&str>) -> Result<(), OidcUnavailable> {
        let mut keys = self.keys.write().await;
        let recent = keys
            .fetched
            .is_some_and(|at| at.elapsed() < self.config.refresh_interval);
        if recent || self.has_key_locked(&keys, kid) {
            return Ok(());
        }
        let set = self.fetch_keys().await?;
        let fresh = Keys::from_set(&set);
        tracing::info!(issuer = %self.config.issuer, keys = set.keys.len(), "OIDC keys fetched");
        *keys = fresh;
        Ok(())
    }

    fn has_key_locked(&self, keys: &Keys, kid: Option<&str>) -> bool {
        match kid {
            Some(kid) => keys.by_kid.contains_key(kid),
            None => !keys.anonymous.is_empty(),
        }
    }

    async fn fetch_keys(&self) -> Result<JwkSet, OidcUnavailable> {
        let fail = |reason: String| OidcUnavailable {
            issuer: self.config.issuer.clone(),
            reason,
        };
        let mut jwks_uri = self.jwks_uri.lock().await;
        if jwks_uri.is_none() {
            #[derive(Deserialize)]
            struct Discovery {
                jwks_uri: String,
            }
            let url = format!("{}/.well-known/openid-configuration", self.config.issuer);
            let discovery: Discovery = self.get_json(&url).await.map_err(fail)?;
            *jwks_uri = Some(discovery.jwks_uri);
        }
        let url = jwks_uri.clone().expect("set above");
        self.get_json(&url).await.map_err(fail)
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, url: &str) -> Result<T, String> {
        let response = self.http.get(url).send().await.map_err(|e| e.to_string())?;
        if !response.status().is_success() {
            return Err(format!("{url} answered {}", response.status()));
        }
        response.json().await.map_err(|e| format!("{url}: {e}"))
    }
}

/// The roles of a token: realm roles, Cognito groups, and the client roles of
/// `roles_client` only (none without one), sorted and without duplicates.
fn roles_of(claims: &Claims, roles_client: Option<&str>) -> Vec<String> {
    let realm = claims.realm_access.iter().flat_map(|r| &r.roles);
    let client = roles_client
        .and_then(|client| claims.resource_access.as_ref()?.get(client))
        .into_iter()
        .flat_map(|r| &r.roles);
    let groups = claims.cognito_groups.iter().flatten();
    let mut roles: Vec<String> = realm.chain(client).chain(groups).cloned().collect();
    roles.sort();
    roles.dedup();
    roles
}

fn is_asymmetric(alg: Algorithm) -> bool {
    !matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512)
}

/// The key and the algorithms it may verify: the one the key names, or its family's.
fn cache_entry(jwk: &Jwk) -> Option<CachedKey> {
    let key = DecodingKey::from_jwk(jwk).ok()?;
    let algorithms = match jwk
        .common
        .key_algorithm
        .and_then(|a| Algorithm::try_from(a).ok())
    {
        Some(alg) => vec![alg],
        None => match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => vec![
                Algorithm::RS256,
                Algorithm::RS384,
                Algorithm::RS512,
                Algorithm::PS256,
                Algorithm::PS384,
                Algorithm::PS512,
            ],
            AlgorithmParameters::EllipticCurve(_) => vec![Algorithm::ES256, Algorithm::ES384],
            AlgorithmParameters::OctetKeyPair(_) => vec![Algorithm::EdDSA],
            _ => return None,
        },
    };
    let algorithms: Vec<Algorithm> = algorithms
        .into_iter()
        .filter(|a| is_asymmetric(*a))
        .collect();
    (!algorithms.is_empty()).then_some(CachedKey { key, algorithms })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claims(value: Value) -> Claims {
        let mut claims = json!({"sub": "alice"});
        claims
            .as_object_mut()
            .unwrap()
            .extend(value.as_object().unwrap().clone());
        serde_json::from_value(claims).unwrap()
    }

    #[test]
    fn only_the_roles_client_s_roles_count_besides_realm_roles_and_groups() {
        let token = claims(json!({
            "realm_access": {"roles": ["drogue-user"]},
            "resource_access": {
                "other-client": {"roles": ["drogue-admin"]},
                "drogue": {"roles": ["manager", "drogue-user"]},
            },
            "cognito:groups": ["ops"],
        }));
        assert_eq!(
            roles_of(&token, Some("drogue")),
            ["drogue-user", "manager", "ops"]
        );
        assert_eq!(
            roles_of(&token, Some("other-client")),
            ["drogue-admin", "drogue-user", "ops"]
        );
        assert_eq!(
            roles_of(&token, Some("unknown")),
            ["drogue-user", "ops"],
            "a client the token has no roles for adds none"
        );
        assert_eq!(
            roles_of(&token, None),
            ["drogue-user", "ops"],
            "without a roles client, no client roles count"
        );
    }

    #[test]
    fn a_token_without_roles_has_none() {
        assert!(roles_of(&claims(json!({})), Some("drogue")).is_empty());
        let empty = claims(json!({"resource_access": {"drogue": {}}}));
        assert!(roles_of(&empty, Some("drogue")).is_empty());
    }

    #[test]
    fn the_roles_client_is_the_audience_unless_set() {
        let config = OidcConfig::new("https://sso/realms/r/", Some("drogue".into()));
        assert_eq!(config.issuer, "https://sso/realms/r");
        assert_eq!(config.roles_client.as_deref(), Some("drogue"));
        assert_eq!(OidcConfig::new("https://sso", None).roles_client, None);
    }

    fn accepted_roles(config: OidcConfig, value: Value) -> Option<Vec<String>> {
        match OidcVerifier::new(config).accept(claims(value)) {
            Authentication::Allow(p) => Some(p.roles),
            Authentication::Deny { .. } => None,
        }
    }

    #[test]
    fn the_audience_is_checked_before_roles_are_read() {
        let config = OidcConfig::new("https://sso", Some("drogue".into()));
        let admin_elsewhere = json!({
            "aud": "account", "azp": "other-client",
            "resource_access": {"other-client": {"roles": ["drogue-admin"]}},
        });
        assert_eq!(accepted_roles(config.clone(), admin_elsewhere), None);
        let admin_here = json!({
            "aud": ["account", "drogue"], "azp": "other-client",
            "resource_access": {"other-client": {"roles": ["drogue-admin"]}, "drogue": {"roles": ["reader"]}},
        });
        assert_eq!(
            accepted_roles(config.clone(), admin_here),
            Some(vec!["reader".to_owned()])
        );
        let mut explicit = config;
        explicit.roles_client = Some("other-client".into());
        let by_azp = json!({
            "azp": "drogue",
            "resource_access": {"other-client": {"roles": ["drogue-admin"]}},
        });
        assert_eq!(
            accepted_roles(explicit, by_azp),
            Some(vec!["drogue-admin".to_owned()])
        );
    }
}
