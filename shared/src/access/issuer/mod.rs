//! The local runner's own OpenID Connect issuer, so that browsers and `drg login` work
//! without an external Keycloak: the authorization code flow with PKCE (S256 only) for
//! local users, signed access and ID tokens (ES256) with a published key set, rotating
//! refresh tokens, and logout.
//!
//! - **Users** live in `<data-dir>/users.json`, passwords hashed with bcrypt. The
//!   administrator is made at first start, its password generated and printed once (or
//!   taken from `--admin-password`).
//! - **Clients** are fixed: `drogue` (the `drg` CLI: redirects to `http://localhost:<port>`
//!   or `127.0.0.1`/`[::1]` only) and `console` (redirects to this server's own origin
//!   only). Both are public clients: PKCE is required, `plain` refused. An unknown
//!   client or a redirect outside these rules gets an error page and is never redirected
//!   to.
//! - **Keys**: one P-256 key, made at first start and kept in `<data-dir>/sso-key.pem`
//!   (owner-only), so tokens outlive restarts. It is verified in-process
//!   ([`Issuer::verifier`]), never fetched over the network.
//! - **Codes** live 60 s and are good once; refresh tokens live 30 days, are stored as
//!   SHA-256 digests in memory and replaced at each use (a restart ends every session:
//!   users log in again). Logout ends the session of an ID token, and with it every
//!   refresh token of that login.

mod http;
mod users;

pub use http::{UserAdmin, router};
pub use users::{ADMIN_USER, UserError, Users};

use crate::access::oidc::{OidcConfig, OidcVerifier};
use crate::device_auth::PasswordChecks;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::{
    AlgorithmParameters, CommonParameters, EllipticCurve, EllipticCurveKeyParameters, Jwk, JwkSet,
    KeyAlgorithm, PublicKeyUse,
};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rand::RngCore;
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The audience of every access token the issuer makes.
pub const AUDIENCE: &str = "drogue";
/// The `drg` CLI's client id.
pub const CLI_CLIENT: &str = "drogue";
/// The web console's client id.
pub const CONSOLE_CLIENT: &str = "console";
/// How long a code may wait to be exchanged.
const CODE_LIFETIME: Duration = Duration::from_secs(60);
/// At most this many codes wait at once (a flood of logins cannot grow memory).
const MAX_PENDING_CODES: usize = 10_000;
/// At most this many refresh tokens are alive at once.
const MAX_SESSIONS: usize = 100_000;
/// The file of the signing key in the data directory.
const KEY_FILE: &str = "sso-key.pem";

/// How the issuer is set up.
#[derive(Debug, Clone)]
pub struct IssuerConfig {
    /// The issuer URL (`iss`), e.g. `http://127.0.0.1:8080/sso`.
    pub issuer: String,
    /// Where the key and the users are kept.
    pub data_dir: PathBuf,
    /// The administrator's role, given to the administrator's tokens.
    pub admin_role: String,
    /// The administrator's password at first start; generated when `None`.
    pub admin_password: Option<String>,
    pub access_token_lifetime: Duration,
    pub refresh_token_lifetime: Duration,
}

impl IssuerConfig {
    pub fn new(issuer: impl Into<String>, data_dir: impl Into<PathBuf>, admin_role: &str) -> Self {
        Self {
            issuer: issuer.into().trim_end_matches('/').to_owned(),
            data_dir: data_dir.into(),
            admin_role: admin_role.to_owned(),
            admin_password: None,
            access_token_lifetime: Duration::from_secs(300),
            refresh_token_lifetime: Duration::from_secs(30 * 24 * 3600),
        }
    }
}

/// An authorization request, checked: a known client and a redirect it may use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorizationRequest {
    pub client_id: String,
    pub redirect_uri: String,
    pub state: Option<String>,
    pub nonce: Option<String>,
    pub scope: Option<String>,
    pub code_challenge: String,
}

/// Why an authorization request cannot even be answered with a redirect.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RequestError {
    #[error("unknown client {0:?}")]
    UnknownClient(String),
    #[error("the redirect URI {0:?} is not one this client may use")]
    RedirectNotAllowed(String),
}

/// Why a token request is refused (RFC 6749 section 5.2).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum GrantError {
    #[error("invalid_request: {0}")]
    InvalidRequest(&'static str),
    #[error("invalid_grant: {0}")]
    InvalidGrant(&'static str),
    #[error("unsupported_grant_type")]
    UnsupportedGrantType,
    #[error("invalid_client: {0}")]
    InvalidClient(&'static str),
}

impl GrantError {
    /// The `error` code of the response body.
    pub fn code(&self) -> &'static str {
        match self {
            GrantError::InvalidRequest(_) => "invalid_request",
            GrantError::InvalidGrant(_) => "invalid_grant",
            GrantError::UnsupportedGrantType => "unsupported_grant_type",
            GrantError::InvalidClient(_) => "invalid_client",
        }
    }

    pub fn description(&self) -> &'static str {
        match self {
            GrantError::InvalidRequest(d)
            | GrantError::InvalidGrant(d)
            | GrantError::InvalidClient(d) => d,
            GrantError::UnsupportedGrantType => {
                "grant_type must be authorization_code or refresh_token"
            }
        }
    }
}

/// The answer of the token endpoint.
#[derive(Debug, Clone, Serialize)]
pub struct TokenResponse {
    pub access_token: String,
    pub token_type: &'static str,
    pub expires_in: u64,
    pub refresh_token: String,
    pub refresh_expires_in: u64,
    pub id_token: String,
    pub scope: String,
}

struct PendingCode {
    request: AuthorizationRequest,
    user: String,
    roles: Vec<String>,
    expires: SystemTime,
}

struct Session {
    sid: String,
    client_id: String,
    user: String,
    scope: String,
    expires: SystemTime,
}

struct Inner {
    config: IssuerConfig,
    key: EncodingKey,
    kid: String,
    jwk: Jwk,
    users: Users,
    checks: PasswordChecks,
    codes: Mutex<HashMap<String, PendingCode>>,
    /// Refresh tokens by the SHA-256 digest of the token.
    sessions: Mutex<HashMap<[u8; 32], Session>>,
}

/// The built-in issuer. Cheap to clone.
#[derive(Clone)]
pub struct Issuer {
    inner: Arc<Inner>,
}

#[derive(Serialize)]
struct RoleList<'a> {
    roles: &'a [String],
}

#[derive(Serialize)]
struct AccessClaims<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: &'a str,
    azp: &'a str,
    exp: u64,
    iat: u64,
    nbf: u64,
    jti: String,
    typ: &'static str,
    sid: &'a str,
    scope: &'a str,
    preferred_username: &'a str,
    realm_access: RoleList<'a>,
}

#[derive(Serialize)]
struct IdClaims<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: &'a str,
    azp: &'a str,
    exp: u64,
    iat: u64,
    typ: &'static str,
    sid: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    nonce: Option<&'a str>,
    preferred_username: &'a str,
}

impl Issuer {
    /// Opens (or makes, at first start) the key and the users of the data directory.
    /// Returns the administrator's password when it was generated now, to be shown once.
    pub fn open(config: IssuerConfig) -> anyhow::Result<(Self, Option<String>)> {
        let (key, jwk, kid) = signing_key(&config.data_dir)?;
        let (users, generated) = Users::open(
            &config.data_dir,
            &config.admin_role,
            config.admin_password.as_deref(),
        )?;
        let issuer = Issuer {
            inner: Arc::new(Inner {
                config,
                key,
                kid,
                jwk,
                users,
                checks: PasswordChecks::new(1),
                codes: Mutex::new(HashMap::new()),
                sessions: Mutex::new(HashMap::new()),
            }),
        };
        Ok((issuer, generated))
    }

    pub fn issuer_url(&self) -> &str {
        &self.inner.config.issuer
    }

    pub fn users(&self) -> &Users {
        &self.inner.users
    }

    /// The published key set.
    pub fn jwks(&self) -> JwkSet {
        JwkSet {
            keys: vec![self.inner.jwk.clone()],
        }
    }

    /// The settings a verifier of this issuer's tokens uses.
    pub fn oidc_config(&self) -> OidcConfig {
        OidcConfig::new(self.inner.config.issuer.clone(), Some(AUDIENCE.into()))
    }

    /// A verifier of this issuer's access tokens that knows the key and never fetches it.
    pub fn verifier(&self) -> OidcVerifier {
        OidcVerifier::with_keys(self.oidc_config(), &self.jwks())
    }

    /// Checks the client and its redirect URI; only then may errors be redirected.
    pub fn check_client(&self, client_id: &str, redirect_uri: &str) -> Result<(), RequestError> {
        let allowed = match client_id {
            CLI_CLIENT => is_loopback_redirect(redirect_uri),
            CONSOLE_CLIENT => self.is_own_origin(redirect_uri),
            other => return Err(RequestError::UnknownClient(other.to_owned())),
        };
        if allowed {
            Ok(())
        } else {
            Err(RequestError::RedirectNotAllowed(redirect_uri.to_owned()))
        }
    }

    fn is_own_origin(&self, uri: &str) -> bool {
        let base = self
            .inner
            .config
            .issuer
            .strip_suffix("/sso")
            .unwrap_or(&self.inner.config.issuer);
        uri.strip_prefix(base)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    }

    /// Checks a user's password: bcrypt, on a thread of the issuer's own password check
    /// pool (one thread, of low priority), so that a flood of guesses on the login page
    /// waits for itself and delays no device's publish.
    pub async fn login(&self, user: &str, password: &str) -> Option<Vec<String>> {
        let users = self.inner.users.clone();
        let (name, password) = (user.to_owned(), password.to_owned());
        let known = self
            .inner
            .checks
            .run(move || users.check(&name, &password).is_some())
            .await?;
        if known {
            self.inner.users.roles(user)
        } else {
            None
        }
    }

    /// Makes a code for a logged-in user.
    pub fn issue_code(
        &self,
        request: AuthorizationRequest,
        user: &str,
        roles: Vec<String>,
    ) -> String {
        let code = random_token();
        let now = SystemTime::now();
        let mut codes = self.inner.codes.lock().expect("codes");
        codes.retain(|_, c| c.expires > now);
        if codes.len() >= MAX_PENDING_CODES {
            // the oldest pending login loses: a flood cannot grow memory
            if let Some(oldest) = codes
                .iter()
                .min_by_key(|(_, c)| c.expires)
                .map(|(k, _)| k.clone())
            {
                codes.remove(&oldest);
            }
        }
        codes.insert(
            code.clone(),
            PendingCode {
                request,
                user: user.to_owned(),
                roles,
                expires: now + CODE_LIFETIME,
            },
        );
        code
    }

    /// `grant_type=authorization_code`.
    pub fn exchange_code(
        &self,
        code: &str,
        client_id: &str,
        redirect_uri: &str,
        verifier: &str,
    ) -> Result<TokenResponse, GrantError> {
        // a code is taken out first: whatever happens next, it cannot be used again
        let pending = self
            .inner
            .codes
            .lock()
            .expect("codes")
            .remove(code)
            .ok_or(GrantError::InvalidGrant("unknown, used or expired code"))?;
        if pending.expires <= SystemTime::now() {
            return Err(GrantError::InvalidGrant("unknown, used or expired code"));
        }
        if pending.request.client_id != client_id {
            return Err(GrantError::InvalidGrant(
                "the code was issued to another client",
            ));
        }
        if pending.request.redirect_uri != redirect_uri {
            return Err(GrantError::InvalidGrant(
                "redirect_uri differs from the authorization request's",
            ));
        }
        if !pkce_matches(verifier, &pending.request.code_challenge) {
            return Err(GrantError::InvalidGrant(
                "the PKCE code verifier does not match the challenge",
            ));
        }
        let sid = random_token();
        let scope = pending
            .request
            .scope
            .clone()
            .unwrap_or_else(|| "openid".into());
        self.tokens(
            &pending.user,
            &pending.roles,
            client_id,
            &sid,
            &scope,
            pending.request.nonce.as_deref(),
        )
    }

    /// `grant_type=refresh_token`: the token is replaced by a new one.
    pub fn refresh(
        &self,
        token: &str,
        client_id: Option<&str>,
    ) -> Result<TokenResponse, GrantError> {
        let session = self
            .inner
            .sessions
            .lock()
            .expect("sessions")
            .remove(&digest(token))
            .ok_or(GrantError::InvalidGrant(
                "unknown, used or expired refresh token",
            ))?;
        if session.expires <= SystemTime::now() {
            return Err(GrantError::InvalidGrant(
                "unknown, used or expired refresh token",
            ));
        }
        if client_id.is_some_and(|c| c != session.client_id) {
            return Err(GrantError::InvalidGrant(
                "the refresh token was issued to another client",
            ));
        }
        // roles are looked up again: a user removed since cannot refresh
        let roles = self
            .inner
            .users
            .roles(&session.user)
            .ok_or(GrantError::InvalidGrant("the user no longer exists"))?;
        self.tokens(
            &session.user,
            &roles,
            &session.client_id,
            &session.sid,
            &session.scope,
            None,
        )
    }

    /// Ends a login: every refresh token of the session is revoked.
    pub fn end_session(&self, sid: &str) -> usize {
        let mut sessions = self.inner.sessions.lock().expect("sessions");
        let before = sessions.len();
        sessions.retain(|_, s| s.sid != sid);
        before - sessions.len()
    }

    /// Revokes one refresh token (RFC 7009); unknown tokens are no error.
    pub fn revoke(&self, token: &str) {
        self.inner
            .sessions
            .lock()
            .expect("sessions")
            .remove(&digest(token));
    }

    /// The session id of an ID token this issuer signed (expired ones too: logging out
    /// with an old ID token is fine).
    pub fn session_of(&self, id_token: &str) -> Option<String> {
        #[derive(serde::Deserialize)]
        struct Sid {
            sid: String,
        }
        let key = jsonwebtoken::DecodingKey::from_jwk(&self.inner.jwk).ok()?;
        let mut validation = jsonwebtoken::Validation::new(Algorithm::ES256);
        validation.validate_exp = false;
        validation.validate_aud = false;
        validation.set_issuer(&[&self.inner.config.issuer]);
        validation.set_required_spec_claims(&["iss", "sub"]);
        jsonwebtoken::decode::<Sid>(id_token, &key, &validation)
            .ok()
            .map(|data| data.claims.sid)
    }

    fn tokens(
        &self,
        user: &str,
        roles: &[String],
        client_id: &str,
        sid: &str,
        scope: &str,
        nonce: Option<&str>,
    ) -> Result<TokenResponse, GrantError> {
        let config = &self.inner.config;
        let now = SystemTime::now();
        let iat = seconds(now);
        let exp = iat + config.access_token_lifetime.as_secs();
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.inner.kid.clone());
        let access = AccessClaims {
            iss: &config.issuer,
            sub: user,
            aud: AUDIENCE,
            azp: client_id,
            exp,
            iat,
            nbf: iat,
            jti: random_token(),
            typ: "Bearer",
            sid,
            scope,
            preferred_username: user,
            realm_access: RoleList { roles },
        };
        let id = IdClaims {
            iss: &config.issuer,
            sub: user,
            aud: client_id,
            azp: client_id,
            exp,
            iat,
            typ: "ID",
            sid,
            nonce,
            preferred_username: user,
        };
        let sign = |claims: &dyn erased::Claims| {
            claims
                .sign(&header, &self.inner.key)
                .map_err(|_| GrantError::InvalidRequest("cannot sign the token"))
        };
        let access_token = sign(&access)?;
        let id_token = sign(&id)?;
        let refresh_token = random_token();
        {
            let mut sessions = self.inner.sessions.lock().expect("sessions");
            sessions.retain(|_, s| s.expires > now);
            if sessions.len() >= MAX_SESSIONS {
                return Err(GrantError::InvalidRequest(
                    "too many sessions: try again later",
                ));
            }
            sessions.insert(
                digest(&refresh_token),
                Session {
                    sid: sid.to_owned(),
                    client_id: client_id.to_owned(),
                    user: user.to_owned(),
                    scope: scope.to_owned(),
                    expires: now + config.refresh_token_lifetime,
                },
            );
        }
        Ok(TokenResponse {
            access_token,
            token_type: "Bearer",
            expires_in: config.access_token_lifetime.as_secs(),
            refresh_token,
            refresh_expires_in: config.refresh_token_lifetime.as_secs(),
            id_token,
            scope: scope.to_owned(),
        })
    }
}

/// Signing two claim types through one closure.
mod erased {
    use jsonwebtoken::{EncodingKey, Header};

    pub trait Claims {
        fn sign(&self, header: &Header, key: &EncodingKey) -> jsonwebtoken::errors::Result<String>;
    }

    impl<T: serde::Serialize> Claims for T {
        fn sign(&self, header: &Header, key: &EncodingKey) -> jsonwebtoken::errors::Result<String> {
            jsonwebtoken::encode(header, self, key)
        }
    }
}

/// `BASE64URL(SHA256(verifier)) == challenge`, with a verifier of RFC 7636's form.
pub fn pkce_matches(verifier: &str, challenge: &str) -> bool {
    let well_formed = (43..=128).contains(&verifier.len())
        && verifier
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'));
    if !well_formed {
        return false;
    }
    let computed = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    subtle::ConstantTimeEq::ct_eq(computed.as_bytes(), challenge.as_bytes()).into()
}

/// The `drg` CLI listens on loopback for its redirect.
fn is_loopback_redirect(uri: &str) -> bool {
    let Some(rest) = uri.strip_prefix("http://") else {
        return false;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.contains('@') {
        return false;
    }
    let host = match authority.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ if authority.starts_with('[') => authority,
        _ => authority,
    };
    matches!(host, "localhost" | "127.0.0.1" | "[::1]")
}

fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

fn seconds(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs()
}

/// The signing key of the data directory, made at first start.
fn signing_key(data_dir: &Path) -> anyhow::Result<(EncodingKey, Jwk, String)> {
    use anyhow::Context;
    let path = data_dir.join(KEY_FILE);
    let pem = match std::fs::read_to_string(&path) {
        Ok(pem) => pem,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
                .context("cannot make a signing key")?;
            let pem = key.serialize_pem();
            users::write_private(&path, &pem)
                .with_context(|| format!("cannot write {}", path.display()))?;
            pem
        }
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let pair = rcgen::KeyPair::from_pem(&pem)
        .with_context(|| format!("{} holds no key", path.display()))?;
    let raw = pair.public_key_raw();
    anyhow::ensure!(
        raw.len() == 65 && raw[0] == 4,
        "{} holds no P-256 key",
        path.display()
    );
    let (x, y) = raw[1..].split_at(32);
    let kid = URL_SAFE_NO_PAD.encode(&Sha256::digest(raw)[..12]);
    let jwk = Jwk {
        common: CommonParameters {
            public_key_use: Some(PublicKeyUse::Signature),
            key_algorithm: Some(KeyAlgorithm::ES256),
            key_id: Some(kid.clone()),
            ..CommonParameters::default()
        },
        algorithm: AlgorithmParameters::EllipticCurve(EllipticCurveKeyParameters {
            key_type: Default::default(),
            curve: EllipticCurve::P256,
            x: URL_SAFE_NO_PAD.encode(x),
            y: URL_SAFE_NO_PAD.encode(y),
        }),
    };
    let key = EncodingKey::from_ec_pem(pem.as_bytes())
        .with_context(|| format!("{} holds no usable key", path.display()))?;
    Ok((key, jwk, kid))
}

#[cfg(test)]
mod tests;
