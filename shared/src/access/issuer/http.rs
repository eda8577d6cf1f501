//! The issuer's endpoints under `/sso`: discovery, key set, the login page
//! (`/sso/auth`), the token endpoint, revocation and logout.

use super::{AuthorizationRequest, GrantError, Issuer, RequestError, UserError};
use crate::access::oidc::OidcVerifier;
use crate::http::{ApiError, JsonBody, authenticate_user};
use crate::store::TokenStore;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Json};
use serde::Deserialize;
use serde_json::json;

/// Who may manage the issuer's users: callers authenticated like on the management API
/// who hold the administrator's role.
#[derive(Clone)]
pub struct UserAdmin {
    pub tokens: std::sync::Arc<dyn TokenStore>,
    pub oidc: Option<std::sync::Arc<OidcVerifier>>,
    pub admin_role: String,
}

/// The routes of the issuer, to be mounted at the server's root, and the administrator's
/// API of its users (`/api/admin/v1alpha1/users`).
pub fn router(issuer: Issuer, admin: UserAdmin) -> Router {
    let users = Router::new()
        .route("/api/admin/v1alpha1/users", get(list_users).post(add_user))
        .route(
            "/api/admin/v1alpha1/users/{name}",
            axum::routing::delete(remove_user),
        )
        .with_state((issuer.clone(), admin));
    Router::new()
        .route("/sso/.well-known/openid-configuration", get(discovery))
        .route("/sso/jwks", get(jwks))
        .route("/sso/auth", get(login_page).post(login))
        .route("/sso/token", post(token))
        .route("/sso/revoke", post(revoke))
        .route("/sso/logout", get(logout).post(logout_form))
        .with_state(issuer)
        .merge(users)
}

type AdminState = State<(Issuer, UserAdmin)>;

/// The caller, if it holds the administrator's role.
async fn administrator(parts: &Parts, admin: &UserAdmin) -> Result<(), ApiError> {
    let principal = authenticate_user(parts, &*admin.tokens, admin.oidc.as_deref()).await?;
    if principal.has_role(&admin.admin_role) {
        Ok(())
    } else {
        Err(ApiError::NotAllowed(
            "only an administrator manages the users of the built-in login".into(),
        ))
    }
}

async fn list_users(
    State((issuer, admin)): AdminState,
    parts: Parts,
) -> Result<Json<serde_json::Value>, ApiError> {
    administrator(&parts, &admin).await?;
    let users: Vec<_> = issuer
        .users()
        .names()
        .into_iter()
        .map(|name| {
            let roles = issuer.users().roles(&name).unwrap_or_default();
            json!({"name": name, "roles": roles})
        })
        .collect();
    Ok(Json(json!(users)))
}

#[derive(Deserialize)]
struct NewUser {
    name: String,
    password: String,
    #[serde(default)]
    roles: Vec<String>,
}

async fn add_user(
    State((issuer, admin)): AdminState,
    parts: Parts,
    JsonBody(user): JsonBody<NewUser>,
) -> Result<Response, ApiError> {
    administrator(&parts, &admin).await?;
    let users = issuer.users().clone();
    let name = user.name.clone();
    let added =
        tokio::task::spawn_blocking(move || users.add(&user.name, &user.password, user.roles))
            .await
            .map_err(|e| ApiError::Unavailable(Box::new(e)))?;
    match added {
        Ok(()) => {
            tracing::info!(user = %name, "local user added");
            Ok((StatusCode::CREATED, Json(json!({"name": name}))).into_response())
        }
        Err(e @ (UserError::InvalidName | UserError::WeakPassword)) => {
            Err(ApiError::InvalidRequest(e.to_string()))
        }
        Err(e @ UserError::Exists(_)) => Err(ApiError::Conflict(e.to_string())),
        Err(e @ (UserError::Io(_) | UserError::Hash(_))) => Err(ApiError::Unavailable(e.into())),
    }
}

async fn remove_user(
    State((issuer, admin)): AdminState,
    Path(name): Path<String>,
    parts: Parts,
) -> Result<StatusCode, ApiError> {
    administrator(&parts, &admin).await?;
    if name == super::ADMIN_USER {
        return Err(ApiError::NotAllowed(
            "the administrator cannot be removed".into(),
        ));
    }
    match issuer.users().remove(&name) {
        Ok(true) => {
            tracing::info!(user = %name, "local user removed");
            Ok(StatusCode::NO_CONTENT)
        }
        Ok(false) => Err(ApiError::NotFound(format!("no such user: {name}"))),
        Err(e) => Err(ApiError::Unavailable(e.into())),
    }
}

async fn discovery(State(issuer): State<Issuer>) -> Json<serde_json::Value> {
    let iss = issuer.issuer_url();
    Json(json!({
        "issuer": iss,
        "authorization_endpoint": format!("{iss}/auth"),
        "token_endpoint": format!("{iss}/token"),
        "jwks_uri": format!("{iss}/jwks"),
        "revocation_endpoint": format!("{iss}/revoke"),
        "end_session_endpoint": format!("{iss}/logout"),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "refresh_token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["ES256"],
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": ["none"],
        "scopes_supported": ["openid", "profile", "offline_access"],
        "claims_supported": ["sub", "iss", "aud", "exp", "iat", "preferred_username", "sid"],
    }))
}

async fn jwks(State(issuer): State<Issuer>) -> Json<jsonwebtoken::jwk::JwkSet> {
    Json(issuer.jwks())
}

/// The parameters of an authorization request (query of the GET, fields of the POST).
#[derive(Debug, Default, Deserialize)]
struct AuthParams {
    #[serde(default)]
    response_type: String,
    #[serde(default)]
    client_id: String,
    #[serde(default)]
    redirect_uri: String,
    state: Option<String>,
    nonce: Option<String>,
    scope: Option<String>,
    code_challenge: Option<String>,
    code_challenge_method: Option<String>,
    // the login form's own fields
    username: Option<String>,
    password: Option<String>,
}

/// What an authorization request turned out to be.
enum Checked {
    /// Show the login page for it.
    Login(AuthorizationRequest),
    /// Not even a redirect is safe: an error page.
    Page(StatusCode, String),
    /// The client is known and the redirect allowed: tell it there.
    Redirect(Response),
}

fn check(issuer: &Issuer, params: &AuthParams) -> Checked {
    if let Err(e) = issuer.check_client(&params.client_id, &params.redirect_uri) {
        let status = match e {
            RequestError::UnknownClient(_) => StatusCode::BAD_REQUEST,
            RequestError::RedirectNotAllowed(_) => StatusCode::BAD_REQUEST,
        };
        return Checked::Page(status, e.to_string());
    }
    let error = |code: &str, description: &str| {
        Checked::Redirect(redirect_to(
            &params.redirect_uri,
            &[
                ("error", code),
                ("error_description", description),
                ("state", params.state.as_deref().unwrap_or_default()),
            ],
        ))
    };
    if params.response_type != "code" {
        return error(
            "unsupported_response_type",
            "only the authorization code flow (response_type=code) is supported",
        );
    }
    let Some(challenge) = params.code_challenge.as_deref().filter(|c| !c.is_empty()) else {
        return error("invalid_request", "PKCE is required: send code_challenge");
    };
    if params.code_challenge_method.as_deref() != Some("S256") {
        return error("invalid_request", "code_challenge_method must be S256");
    }
    Checked::Login(AuthorizationRequest {
        client_id: params.client_id.clone(),
        redirect_uri: params.redirect_uri.clone(),
        state: params.state.clone(),
        nonce: params.nonce.clone(),
        scope: params.scope.clone(),
        code_challenge: challenge.to_owned(),
    })
}

async fn login_page(State(issuer): State<Issuer>, Query(params): Query<AuthParams>) -> Response {
    match check(&issuer, &params) {
        Checked::Login(request) => page(StatusCode::OK, &login_form(&request, None, "")),
        Checked::Page(status, message) => page(status, &error_page(&message)),
        Checked::Redirect(response) => response,
    }
}

async fn login(State(issuer): State<Issuer>, Form(params): Form<AuthParams>) -> Response {
    let request = match check(&issuer, &params) {
        Checked::Login(request) => request,
        Checked::Page(status, message) => return page(status, &error_page(&message)),
        Checked::Redirect(response) => return response,
    };
    let user = params.username.unwrap_or_default();
    let password = params.password.unwrap_or_default();
    let Some(roles) = issuer.login(&user, &password).await else {
        tracing::info!(user = %user, "local login refused");
        return page(
            StatusCode::UNAUTHORIZED,
            &login_form(&request, Some("Invalid user name or password."), &user),
        );
    };
    tracing::info!(user = %user, client = %request.client_id, "local login");
    let state = request.state.clone();
    let redirect_uri = request.redirect_uri.clone();
    let code = issuer.issue_code(request, &user, roles);
    redirect_to(
        &redirect_uri,
        &[
            ("code", code.as_str()),
            ("state", state.as_deref().unwrap_or_default()),
            ("iss", issuer.issuer_url()),
        ],
    )
}

#[derive(Debug, Deserialize)]
struct TokenParams {
    #[serde(default)]
    grant_type: String,
    code: Option<String>,
    redirect_uri: Option<String>,
    client_id: Option<String>,
    code_verifier: Option<String>,
    refresh_token: Option<String>,
}

async fn token(
    State(issuer): State<Issuer>,
    headers: axum::http::HeaderMap,
    Form(params): Form<TokenParams>,
) -> Response {
    // public clients may also name themselves in Basic authentication (no secret)
    let client_id = params.client_id.clone().or_else(|| {
        let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
        crate::http::basic_credentials(value).map(|(user, _)| user)
    });
    let result = match params.grant_type.as_str() {
        "authorization_code" => match (
            params.code.as_deref(),
            client_id.as_deref(),
            params.redirect_uri.as_deref(),
            params.code_verifier.as_deref(),
        ) {
            (Some(code), Some(client), Some(redirect), Some(verifier)) => {
                issuer.exchange_code(code, client, redirect, verifier)
            }
            (_, None, _, _) => Err(GrantError::InvalidClient("client_id is missing")),
            (_, _, _, None) => Err(GrantError::InvalidRequest("code_verifier is missing")),
            _ => Err(GrantError::InvalidRequest(
                "code and redirect_uri are required",
            )),
        },
        "refresh_token" => match params.refresh_token.as_deref() {
            Some(token) => issuer.refresh(token, client_id.as_deref()),
            None => Err(GrantError::InvalidRequest("refresh_token is missing")),
        },
        _ => Err(GrantError::UnsupportedGrantType),
    };
    let mut response = match result {
        Ok(tokens) => Json(tokens).into_response(),
        Err(e) => {
            let status = match e {
                GrantError::InvalidClient(_) => StatusCode::UNAUTHORIZED,
                _ => StatusCode::BAD_REQUEST,
            };
            (
                status,
                Json(json!({"error": e.code(), "error_description": e.description()})),
            )
                .into_response()
        }
    };
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

#[derive(Debug, Deserialize)]
struct RevokeParams {
    #[serde(default)]
    token: String,
}

/// RFC 7009: revokes a refresh token; unknown tokens are answered alike.
async fn revoke(State(issuer): State<Issuer>, Form(params): Form<RevokeParams>) -> StatusCode {
    issuer.revoke(&params.token);
    StatusCode::OK
}

#[derive(Debug, Default, Deserialize)]
struct LogoutParams {
    id_token_hint: Option<String>,
    post_logout_redirect_uri: Option<String>,
    client_id: Option<String>,
    state: Option<String>,
}

async fn logout(State(issuer): State<Issuer>, Query(params): Query<LogoutParams>) -> Response {
    end_session(&issuer, params)
}

async fn logout_form(State(issuer): State<Issuer>, Form(params): Form<LogoutParams>) -> Response {
    end_session(&issuer, params)
}

/// OpenID Connect RP-initiated logout: the session of the ID token ends (its refresh
/// tokens are revoked); the user goes back to the client only to a redirect it may use.
fn end_session(issuer: &Issuer, params: LogoutParams) -> Response {
    let sid = params
        .id_token_hint
        .as_deref()
        .and_then(|t| issuer.session_of(t));
    if let Some(sid) = &sid {
        let ended = issuer.end_session(sid);
        tracing::info!(refresh_tokens = ended, "local logout");
    }
    if let Some(target) = params.post_logout_redirect_uri.as_deref() {
        let client = params.client_id.as_deref().unwrap_or(super::CONSOLE_CLIENT);
        if sid.is_some() && issuer.check_client(client, target).is_ok() {
            return redirect_to(
                target,
                &[("state", params.state.as_deref().unwrap_or_default())],
            );
        }
    }
    page(
        StatusCode::OK,
        &shell("Logged out", "<p class=\"note\">You are logged out.</p>"),
    )
}

/// A 303 to `uri` with `params` added to its query (empty values left out).
fn redirect_to(uri: &str, params: &[(&str, &str)]) -> Response {
    let mut query = form_urlencoded::Serializer::new(String::new());
    for (key, value) in params.iter().filter(|(_, v)| !v.is_empty()) {
        query.append_pair(key, value);
    }
    let query = query.finish();
    let separator = if uri.contains('?') { '&' } else { '?' };
    let target = if query.is_empty() {
        uri.to_owned()
    } else {
        format!("{uri}{separator}{query}")
    };
    Redirect::to(&target).into_response()
}

fn page(status: StatusCode, html: &str) -> Response {
    let mut response = (status, Html(html.to_owned())).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert("x-frame-options", HeaderValue::from_static("DENY"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'"),
    );
    response
}

fn login_form(request: &AuthorizationRequest, error: Option<&str>, user: &str) -> String {
    let mut hidden = String::new();
    let fields = [
        ("response_type", Some("code")),
        ("client_id", Some(request.client_id.as_str())),
        ("redirect_uri", Some(request.redirect_uri.as_str())),
        ("state", request.state.as_deref()),
        ("nonce", request.nonce.as_deref()),
        ("scope", request.scope.as_deref()),
        ("code_challenge", Some(request.code_challenge.as_str())),
        ("code_challenge_method", Some("S256")),
    ];
    for (name, value) in fields {
        if let Some(value) = value {
            hidden.push_str(&format!(
                "<input type=\"hidden\" name=\"{name}\" value=\"{}\">",
                escape(value)
            ));
        }
    }
    let error = error
        .map(|e| {
            format!(
                "<p class=\"error\" id=\"error\" role=\"alert\">{}</p>",
                escape(e)
            )
        })
        .unwrap_or_default();
    let body = format!(
        "{error}<form method=\"post\" action=\"auth\">{hidden}\
         <label>User name <input id=\"username\" name=\"username\" value=\"{}\" autocomplete=\"username\" required autofocus></label>\
         <label>Password <input id=\"password\" name=\"password\" type=\"password\" autocomplete=\"current-password\" required></label>\
         <button id=\"login\" type=\"submit\">Log in</button></form>\
         <p class=\"note\">Logging in to <b>{}</b>.</p>",
        escape(user),
        escape(&request.client_id),
    );
    shell("Log in", &body)
}

fn error_page(message: &str) -> String {
    shell(
        "Cannot log in",
        &format!(
            "<p class=\"error\" id=\"error\" role=\"alert\">{}</p>",
            escape(message)
        ),
    )
}

fn shell(title: &str, body: &str) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title} · Drogue</title><style>\
         body{{font-family:system-ui,sans-serif;background:#f4f5f7;margin:0;display:flex;justify-content:center}}\
         main{{background:#fff;margin-top:10vh;padding:2em 2.5em;border-radius:8px;box-shadow:0 2px 8px #0002;min-width:18em}}\
         label{{display:block;margin:1em 0}}input{{display:block;width:100%;padding:.4em;margin-top:.3em;box-sizing:border-box}}\
         button{{padding:.5em 1.5em;background:#06c;color:#fff;border:0;border-radius:4px}}\
         .error{{color:#c9190b}}.note{{color:#555;font-size:.9em}}</style></head>\
         <body><main><h1>{title}</h1>{body}</main></body></html>"
    )
}

/// HTML-escapes text for element content and quoted attribute values.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}
