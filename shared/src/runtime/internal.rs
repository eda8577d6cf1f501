//! The shared secret that guards the event-triggered functions when they serve on
//! `$PORT` (Knative and other container platforms).
//!
//! Under Lambda, IAM decides who may invoke a function. On `$PORT` anyone who reaches the
//! service could post an event (telemetry for any device, a command to any device, a CA
//! to delete from IoT Core), so every request must carry `Authorization: Bearer <token>`
//! with the token the service was given:
//!
//! - `DROGUE_INTERNAL_TOKEN`: the token itself (e.g. from a Kubernetes Secret through
//!   `valueFrom.secretKeyRef`), or
//! - `DROGUE_INTERNAL_TOKEN_FILE`: the path of a file holding it (e.g. a mounted Secret).
//!
//! These are the options of [`InternalArgs`] (flags `--internal-token`,
//! `--internal-token-file`, `--internal-insecure`), part of every function's
//! [`super::Runtime`]; they are checked only when a function serves on `$PORT`.
//!
//! Leading and trailing whitespace (a file's final newline) is not part of the token; a
//! token has at least [`MIN_TOKEN_LEN`] visible ASCII characters. Without a token the
//! service refuses to start, unless `DROGUE_INTERNAL_INSECURE=true` says to serve without
//! authentication (a warning at start). A request without the right token is answered
//! `401` with the usual JSON error body and never reaches the function.

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use std::path::PathBuf;
use subtle::ConstantTimeEq;

/// The variable that holds the shared token.
pub const TOKEN_VAR: &str = "DROGUE_INTERNAL_TOKEN";
/// The variable that names a file holding the shared token.
pub const TOKEN_FILE_VAR: &str = "DROGUE_INTERNAL_TOKEN_FILE";
/// The variable that, `true`, lets a service without a token serve unauthenticated.
pub const INSECURE_VAR: &str = "DROGUE_INTERNAL_INSECURE";
/// The shortest token accepted (e.g. `openssl rand -hex 32` makes 64 characters).
pub const MIN_TOKEN_LEN: usize = 16;

/// How an event-triggered service on `$PORT` checks its callers.
#[derive(Clone)]
pub enum InternalAuth {
    /// Requests must carry `Authorization: Bearer <token>`; the token's SHA-256.
    Token([u8; 32]),
    /// Every request is served (`DROGUE_INTERNAL_INSECURE=true`, no token).
    Insecure,
}

impl std::fmt::Debug for InternalAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Token(_) => f.write_str("InternalAuth::Token(..)"),
            Self::Insecure => f.write_str("InternalAuth::Insecure"),
        }
    }
}

/// The shared token's options: `DROGUE_INTERNAL_TOKEN`, `DROGUE_INTERNAL_TOKEN_FILE`,
/// `DROGUE_INTERNAL_INSECURE`.
#[derive(Clone, Default, PartialEq, Eq, clap::Args)]
pub struct InternalArgs {
    /// The token event-triggered functions on $PORT require of their callers
    /// (`Authorization: Bearer <token>`).
    #[arg(long = "internal-token", env = TOKEN_VAR, value_name = TOKEN_VAR, hide_env_values = true, value_parser = crate::config::non_empty)]
    pub internal_token: Option<String>,
    /// A file holding the token (instead of DROGUE_INTERNAL_TOKEN).
    #[arg(long = "internal-token-file", env = TOKEN_FILE_VAR, value_name = TOKEN_FILE_VAR)]
    pub internal_token_file: Option<PathBuf>,
    /// `true`: without a token, serve events from anyone who reaches the service.
    #[arg(long = "internal-insecure", env = INSECURE_VAR, value_name = INSECURE_VAR, action = clap::ArgAction::Set, num_args = 0..=1, default_value = "false", default_missing_value = "true", value_parser = flag)]
    pub internal_insecure: bool,
}

impl std::fmt::Debug for InternalArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InternalArgs")
            .field(
                "internal_token",
                &self.internal_token.as_ref().map(|_| ".."),
            )
            .field("internal_token_file", &self.internal_token_file)
            .field("internal_insecure", &self.internal_insecure)
            .finish()
    }
}

impl InternalArgs {
    /// How to check callers; an error (naming the variable) if no token is configured
    /// and the insecure mode is not asked for, or the token is unusable.
    pub fn auth(&self) -> anyhow::Result<InternalAuth> {
        let token = match (&self.internal_token, &self.internal_token_file) {
            (Some(_), Some(_)) => {
                anyhow::bail!("set either {TOKEN_VAR} or {TOKEN_FILE_VAR}, not both")
            }
            (Some(value), None) => Some(value.clone()),
            (None, Some(path)) => Some(std::fs::read_to_string(path).map_err(|e| {
                anyhow::anyhow!(
                    "{TOKEN_FILE_VAR}: cannot read the token from {}: {e}",
                    path.display()
                )
            })?),
            (None, None) => None,
        };
        match token {
            Some(token) => {
                let auth = InternalAuth::token(&token)?;
                if self.internal_insecure {
                    tracing::warn!(
                        "{INSECURE_VAR} is ignored: a token is configured, every request must carry it"
                    );
                }
                Ok(auth)
            }
            None if self.internal_insecure => {
                tracing::warn!(
                    "{INSECURE_VAR}=true: this event-triggered service accepts events from anyone \
                     who reaches it; set {TOKEN_VAR} unless the network alone keeps callers out"
                );
                Ok(InternalAuth::Insecure)
            }
            None => anyhow::bail!(
                "{TOKEN_VAR} is not set: an event-triggered service on $PORT requires its callers \
                 to send `Authorization: Bearer <token>`; set {TOKEN_VAR} to the shared token (or \
                 {TOKEN_FILE_VAR} to a file holding it), or {INSECURE_VAR}=true to serve without \
                 authentication"
            ),
        }
    }
}

impl InternalAuth {
    /// Requires `token` (surrounding whitespace removed); an error if it is too short or
    /// not visible ASCII (it could not be sent in a header).
    pub fn token(token: &str) -> anyhow::Result<Self> {
        let token = token.trim();
        if token.is_empty() {
            anyhow::bail!("the shared token ({TOKEN_VAR} or {TOKEN_FILE_VAR}) is empty");
        }
        if !token.bytes().all(|b| b.is_ascii_graphic()) {
            anyhow::bail!(
                "the shared token ({TOKEN_VAR} or {TOKEN_FILE_VAR}) must be visible ASCII \
                 characters without spaces"
            );
        }
        if token.len() < MIN_TOKEN_LEN {
            anyhow::bail!(
                "the shared token ({TOKEN_VAR} or {TOKEN_FILE_VAR}) is shorter than \
                 {MIN_TOKEN_LEN} characters; make one with `openssl rand -hex 32`"
            );
        }
        Ok(Self::Token(Sha256::digest(token.as_bytes()).into()))
    }

    /// `router` behind the check: with a token, every request (any method or path) without
    /// it is answered 401 before any route sees it.
    pub fn protect(&self, router: Router) -> Router {
        match self {
            Self::Token(digest) => {
                router.layer(axum::middleware::from_fn_with_state(*digest, require_token))
            }
            Self::Insecure => router,
        }
    }
}

/// The value parser of `DROGUE_INTERNAL_INSECURE`: `false`, `0` or `no` is false; `true`,
/// `1` or `yes` is true (any case); anything else is refused.
fn flag(value: &str) -> Result<bool, String> {
    match value.trim().to_ascii_lowercase().as_str() {
        "false" | "0" | "no" => Ok(false),
        "true" | "1" | "yes" => Ok(true),
        _ => Err("must be true or false".into()),
    }
}

/// Why a request's credentials were refused (logged; never the presented value).
fn check(expected: &[u8; 32], headers: &HeaderMap) -> Result<(), &'static str> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let value = values.next().ok_or("no Authorization header")?;
    if values.next().is_some() {
        return Err("more than one Authorization header");
    }
    let value = value
        .to_str()
        .map_err(|_| "a malformed Authorization header")?;
    let (scheme, token) = value.split_once(' ').ok_or("not a bearer token")?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err("not a bearer token");
    }
    // both sides hashed: the comparison takes the same time whatever the length presented
    let presented = Sha256::digest(token.trim_matches(' ').as_bytes());
    if bool::from(presented.as_slice().ct_eq(expected)) {
        Ok(())
    } else {
        Err("a wrong bearer token")
    }
}

async fn require_token(State(expected): State<[u8; 32]>, request: Request, next: Next) -> Response {
    match check(&expected, request.headers()) {
        Ok(()) => next.run(request).await,
        Err(reason) => {
            let confirmation = destination_confirmation(&request);
            tracing::warn!(
                method = %request.method(),
                path = %request.uri().path(),
                reason,
                "refused a request without the internal token"
            );
            if let Some(token) = confirmation {
                // IoT Core sends a topic rule destination's confirmation without the rule's
                // headers; the operator confirms with this token (it only confirms the
                // destination in the operator's own account, and is logged only when it
                // looks like one)
                tracing::warn!(
                    confirmation_token = token,
                    "an IoT Core topic rule destination confirmation arrived; confirm the \
                     destination with `aws iot confirm-topic-rule-destination --confirmation-token <token>`"
                );
            }
            unauthorized()
        }
    }
}

/// The `confirmationToken` of an IoT Core HTTP destination confirmation
/// (`POST <url>?confirmationToken=...` with `x-amz-rules-engine-message-type:
/// DestinationConfirmation`), when it looks like one.
fn destination_confirmation(request: &Request) -> Option<String> {
    let kind = request
        .headers()
        .get("x-amz-rules-engine-message-type")?
        .to_str()
        .ok()?;
    if kind != "DestinationConfirmation" {
        return None;
    }
    let query = request.uri().query()?;
    let token = form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "confirmationToken")
        .map(|(_, v)| v.into_owned())?;
    let plausible = (1..=2048).contains(&token.len())
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_=+/.".contains(&b));
    plausible.then_some(token)
}

/// 401 with the JSON error body of every HTTP function and a bearer challenge.
fn unauthorized() -> Response {
    let body = serde_json::json!({
        "error": "Unauthorized",
        "message": "This internal service requires its shared token: Authorization: Bearer <token>",
    });
    let mut response = (StatusCode::UNAUTHORIZED, axum::Json(body)).into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"drogue-internal\""),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "0123456789abcdef0123456789abcdef";

    /// As a function's configuration would have it with these variables set (each given
    /// as its flag).
    fn from(vars: &[(&str, &str)]) -> anyhow::Result<InternalAuth> {
        #[derive(clap::Parser)]
        struct Config {
            #[command(flatten)]
            internal: InternalArgs,
        }
        let mut args = Vec::new();
        for (name, value) in vars {
            let flag = match *name {
                TOKEN_VAR => "--internal-token",
                TOKEN_FILE_VAR => "--internal-token-file",
                INSECURE_VAR => "--internal-insecure",
                other => panic!("{other}"),
            };
            args.push(format!("{flag}={value}"));
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        crate::config::try_parse_flags::<Config>(&args)?
            .internal
            .auth()
    }

    fn headers(authorization: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in authorization {
            headers.append(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    fn digest(auth: &InternalAuth) -> [u8; 32] {
        match auth {
            InternalAuth::Token(digest) => *digest,
            InternalAuth::Insecure => panic!("no token"),
        }
    }

    #[test]
    fn refuses_to_start_without_a_token() {
        let error = from(&[]).unwrap_err().to_string();
        assert!(
            error.contains(TOKEN_VAR) && error.contains(INSECURE_VAR),
            "{error}"
        );
        let error = from(&[(INSECURE_VAR, "false")]).unwrap_err().to_string();
        assert!(error.contains(TOKEN_VAR), "{error}");
    }

    #[test]
    fn insecure_only_when_asked() {
        assert!(matches!(
            from(&[(INSECURE_VAR, "true")]).unwrap(),
            InternalAuth::Insecure
        ));
        assert!(matches!(
            from(&[(INSECURE_VAR, "TRUE")]).unwrap(),
            InternalAuth::Insecure
        ));
        let error = from(&[(INSECURE_VAR, "maybe")]).unwrap_err().to_string();
        assert!(error.contains(INSECURE_VAR), "{error}");
        // a token wins over the flag
        assert!(matches!(
            from(&[(INSECURE_VAR, "true"), (TOKEN_VAR, TOKEN)]).unwrap(),
            InternalAuth::Token(_)
        ));
    }

    #[test]
    fn token_from_a_variable_or_a_file() {
        let direct = digest(&from(&[(TOKEN_VAR, TOKEN)]).unwrap());
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), format!("{TOKEN}\n")).unwrap();
        let path = file.path().to_str().unwrap();
        assert_eq!(digest(&from(&[(TOKEN_FILE_VAR, path)]).unwrap()), direct);
        let error = from(&[(TOKEN_VAR, TOKEN), (TOKEN_FILE_VAR, path)])
            .unwrap_err()
            .to_string();
        assert!(error.contains("not both"), "{error}");
        let error = from(&[(TOKEN_FILE_VAR, "/nonexistent/token")])
            .unwrap_err()
            .to_string();
        assert!(error.contains(TOKEN_FILE_VAR), "{error}");
    }

    #[test]
    fn weak_or_unsendable_tokens_are_refused() {
        for bad in [
            "",
            "   ",
            "short",
            "has a space in the middle",
            "ünïcödé-ünïcödé-ü",
        ] {
            assert!(from(&[(TOKEN_VAR, bad)]).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn only_the_right_bearer_token_passes() {
        let expected = digest(&InternalAuth::token(TOKEN).unwrap());
        assert_eq!(
            check(&expected, &headers(&[&format!("Bearer {TOKEN}")])),
            Ok(())
        );
        assert_eq!(
            check(&expected, &headers(&[&format!("bearer {TOKEN}")])),
            Ok(())
        );
        for wrong in [
            vec![],
            vec!["Bearer".to_owned()],
            vec!["Bearer ".to_owned()],
            vec![format!("Bearer {TOKEN}x")],
            vec![format!("Bearer {}", &TOKEN[1..])],
            vec![format!("Basic {TOKEN}")],
            vec![TOKEN.to_owned()],
            vec![format!("Bearer {TOKEN}"), format!("Bearer {TOKEN}")],
        ] {
            let wrong: Vec<&str> = wrong.iter().map(String::as_str).collect();
            assert!(check(&expected, &headers(&wrong)).is_err(), "{wrong:?}");
        }
    }

    #[test]
    fn confirmation_tokens_are_recognised() {
        let request = |kind: &str, uri: &str| {
            Request::builder()
                .method("POST")
                .uri(uri)
                .header("x-amz-rules-engine-message-type", kind)
                .body(axum::body::Body::empty())
                .unwrap()
        };
        assert_eq!(
            destination_confirmation(&request(
                "DestinationConfirmation",
                "/?confirmationToken=AYADeMXL-rPrN_Y2"
            )),
            Some("AYADeMXL-rPrN_Y2".into())
        );
        assert_eq!(
            destination_confirmation(&request("Other", "/?confirmationToken=AYADeMXL")),
            None
        );
        assert_eq!(
            destination_confirmation(&request(
                "DestinationConfirmation",
                "/?confirmationToken=a%0Ab"
            )),
            None
        );
    }
}
