//! The built-in OpenID Connect issuer over real sockets: the login page, the
//! authorization code flow with PKCE, tokens the API accepts, refresh, logout, and
//! `drg login` through its browser flow with no access token.

use super::runner::LocalRunner;
use reqwest::StatusCode;
use reqwest::redirect::Policy;
use serde_json::{Value, json};
use std::collections::HashMap;

const PASSWORD: &str = "correct horse battery";
// RFC 7636 appendix B
const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
const REDIRECT: &str = "http://localhost:40123/callback";

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(Policy::none())
        .build()
        .unwrap()
}

/// The issuer's endpoints, found the way `drg` finds them.
async fn endpoints(server: &LocalRunner) -> Value {
    let http = client();
    let drogue: Value = http
        .get(format!("{}/.well-known/drogue-endpoints", server.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let issuer = drogue["issuer_url"].as_str().unwrap().to_owned();
    assert_eq!(issuer, format!("{}/sso", server.base));
    let discovery: Value = http
        .get(format!("{issuer}/.well-known/openid-configuration"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(discovery["issuer"], issuer.as_str());
    assert_eq!(
        discovery["code_challenge_methods_supported"],
        json!(["S256"])
    );
    discovery
}

fn authorization_query(client_id: &str, redirect: &str) -> Vec<(&'static str, String)> {
    vec![
        ("response_type", "code".into()),
        ("client_id", client_id.into()),
        ("redirect_uri", redirect.into()),
        ("state", "st-123".into()),
        ("scope", "openid offline_access".into()),
        ("code_challenge", CHALLENGE.into()),
        ("code_challenge_method", "S256".into()),
    ]
}

/// Logs in on the login page; the response (a redirect when it worked).
async fn log_in(auth: &str, user: &str, password: &str) -> reqwest::Response {
    let mut form = authorization_query("drogue", REDIRECT);
    form.push(("username", user.into()));
    form.push(("password", password.into()));
    post_form(auth, &form).await
}

fn query_of(location: &str) -> HashMap<String, String> {
    let query = location.split_once('?').map(|(_, q)| q).unwrap_or_default();
    form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect()
}

/// A POST of an HTML form.
async fn post_form<V: AsRef<str>>(url: &str, form: &[(&str, V)]) -> reqwest::Response {
    let mut body = form_urlencoded::Serializer::new(String::new());
    for (key, value) in form {
        body.append_pair(key, value.as_ref());
    }
    client()
        .post(url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body.finish())
        .send()
        .await
        .unwrap()
}

async fn token<V: AsRef<str>>(token_endpoint: &str, form: &[(&str, V)]) -> (StatusCode, Value) {
    let response = post_form(token_endpoint, form).await;
    let status = response.status();
    assert_eq!(
        response.headers().get("cache-control").unwrap(),
        "no-store",
        "token answers are not cached"
    );
    (status, response.json().await.unwrap())
}

async fn apps_as(server: &LocalRunner, bearer: &str) -> StatusCode {
    client()
        .get(format!("{}/api/registry/v1alpha1/apps", server.base))
        .bearer_auth(bearer)
        .send()
        .await
        .unwrap()
        .status()
}

#[tokio::test]
async fn a_local_user_logs_in_with_pkce_and_the_api_accepts_the_tokens_until_logout() {
    let dir = tempfile::tempdir().unwrap();
    let server =
        LocalRunner::start_with(&dir.path().join("data"), &["--admin-password", PASSWORD]).await;
    let discovery = endpoints(&server).await;
    let auth = discovery["authorization_endpoint"].as_str().unwrap();
    let token_endpoint = discovery["token_endpoint"].as_str().unwrap();

    // the login page, for a known client and an allowed redirect
    let page = client()
        .get(auth)
        .query(&authorization_query("drogue", REDIRECT))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let html = page.text().await.unwrap();
    assert!(
        html.contains("name=\"password\"") && html.contains(CHALLENGE),
        "{html}"
    );

    // strangers' clients and redirects are refused without a redirect
    for (client_id, redirect) in [
        ("drogue", "http://evil.example/callback"),
        ("someone", REDIRECT),
        ("console", "http://localhost:40123/"),
    ] {
        let refused = client()
            .get(auth)
            .query(&authorization_query(client_id, redirect))
            .send()
            .await
            .unwrap();
        assert_eq!(
            refused.status(),
            StatusCode::BAD_REQUEST,
            "{client_id} {redirect}"
        );
        assert!(refused.headers().get("location").is_none());
    }
    // PKCE is required: the client is told so at its redirect
    let no_pkce = client()
        .get(auth)
        .query(&[
            ("response_type", "code"),
            ("client_id", "drogue"),
            ("redirect_uri", REDIRECT),
            ("state", "s"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(no_pkce.status(), StatusCode::SEE_OTHER);
    let told = query_of(no_pkce.headers()["location"].to_str().unwrap());
    assert_eq!(told["error"], "invalid_request");

    // a wrong password shows the page again with an error, and no code
    let wrong = log_in(auth, "admin", "wrong horse battery").await;
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    assert!(
        wrong
            .text()
            .await
            .unwrap()
            .contains("Invalid user name or password")
    );

    // the right one redirects with a code and the state
    let right = log_in(auth, "admin", PASSWORD).await;
    assert_eq!(right.status(), StatusCode::SEE_OTHER);
    let location = right.headers()["location"].to_str().unwrap().to_owned();
    assert!(location.starts_with(REDIRECT), "{location}");
    let answer = query_of(&location);
    assert_eq!(answer["state"], "st-123");
    let code = answer["code"].clone();

    // a wrong verifier is refused, and uses the code up
    let wrong_verifier = VERIFIER.replace('d', "e");
    let exchange = |code: &str, verifier: &str| {
        [
            ("grant_type", "authorization_code".to_owned()),
            ("code", code.to_owned()),
            ("client_id", "drogue".to_owned()),
            ("redirect_uri", REDIRECT.to_owned()),
            ("code_verifier", verifier.to_owned()),
        ]
    };
    let (status, body) = token(token_endpoint, &exchange(&code, &wrong_verifier)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "invalid_grant");
    let (status, body) = token(token_endpoint, &exchange(&code, VERIFIER)).await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "a code is good once: {body}"
    );

    // a fresh login, exchanged with the right verifier
    let right = log_in(auth, "admin", PASSWORD).await;
    let code = query_of(right.headers()["location"].to_str().unwrap())["code"].clone();
    let (status, tokens) = token(token_endpoint, &exchange(&code, VERIFIER)).await;
    assert_eq!(status, StatusCode::OK, "{tokens}");
    assert_eq!(tokens["token_type"], "Bearer");
    assert_eq!(tokens["expires_in"], 300);
    let access = tokens["access_token"].as_str().unwrap();

    // the API accepts the access token, not the ID token nor a forged one (bad
    // credentials are a 403, as everywhere in the API)
    assert_eq!(apps_as(&server, access).await, StatusCode::OK);
    assert_eq!(
        apps_as(&server, tokens["id_token"].as_str().unwrap()).await,
        StatusCode::FORBIDDEN
    );
    let mut forged = access.to_owned();
    forged.pop();
    assert_eq!(apps_as(&server, &forged).await, StatusCode::FORBIDDEN);
    // the administrator's role came with the token: it may create an application
    let created = client()
        .post(format!("{}/api/registry/v1alpha1/apps", server.base))
        .bearer_auth(access)
        .json(&json!({"metadata": {"name": "sso-app"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);

    // refresh: a new pair, the old refresh token is spent
    let refresh = tokens["refresh_token"].as_str().unwrap();
    let (status, refreshed) = token(
        token_endpoint,
        &[("grant_type", "refresh_token"), ("refresh_token", refresh)],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{refreshed}");
    assert_eq!(
        apps_as(&server, refreshed["access_token"].as_str().unwrap()).await,
        StatusCode::OK
    );
    let (status, body) = token(
        token_endpoint,
        &[("grant_type", "refresh_token"), ("refresh_token", refresh)],
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant"))
    );

    // logout ends the session: its refresh token no longer works
    let logout = client()
        .get(discovery["end_session_endpoint"].as_str().unwrap())
        .query(&[("id_token_hint", refreshed["id_token"].as_str().unwrap())])
        .send()
        .await
        .unwrap();
    assert_eq!(logout.status(), StatusCode::OK);
    let (status, _) = token(
        token_endpoint,
        &[
            ("grant_type", "refresh_token"),
            (
                "refresh_token",
                refreshed["refresh_token"].as_str().unwrap(),
            ),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // the password is not in the data directory
    for entry in std::fs::read_dir(&server.data_dir).unwrap() {
        let path = entry.unwrap().path();
        if let Ok(text) = std::fs::read_to_string(&path) {
            assert!(
                !text.contains(PASSWORD),
                "{} holds the password",
                path.display()
            );
        }
    }
}

#[tokio::test]
async fn drg_logs_in_through_its_browser_flow_without_an_access_token() {
    let dir = tempfile::tempdir().unwrap();
    let server =
        LocalRunner::start_with(&dir.path().join("data"), &["--admin-password", PASSWORD]).await;
    // the "browser": posts the login form of the URL drg opens, then follows the
    // redirect back to drg's loopback listener (in the background: drg waits for the
    // browser command to end before it listens for the answer)
    let browser = dir.path().join("browser.sh");
    std::fs::write(
        &browser,
        format!(
            "#!/bin/sh\n\
             url=\"$1\"\n\
             (location=$(curl -s -o /dev/null -w '%{{redirect_url}}' \
               --data \"${{url#*\\?}}&username=admin&password={}\" \"${{url%%\\?*}}\"); \
               curl -s \"$location\" > \"{}\") &\n",
            PASSWORD.replace(' ', "%20"),
            dir.path().join("browser.out").display()
        ),
    )
    .unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&browser, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let drg = std::env::var_os("DRG_BIN").unwrap_or_else(|| {
        panic!("DRG_BIN is not set: run the suite with `tests/run`, which installs drg 0.11")
    });
    let config = dir.path().join("drg.yaml");
    let run = |args: Vec<String>| {
        let mut command = tokio::process::Command::new(&drg);
        command
            .args(&args)
            .env("DRGCFG", &config)
            .env("BROWSER", &browser)
            .env_remove("DISPLAY")
            .env_remove("DRG_APP")
            .env_remove("DRG_CONTEXT");
        async move {
            let out = tokio::time::timeout(std::time::Duration::from_secs(60), command.output())
                .await
                .expect("drg finishes")
                .expect("drg runs");
            let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
            eprintln!(
                "drg {}\n{stdout}{}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
            (out.status.code(), stdout)
        }
    };
    let (code, _) = run(vec!["login".into(), server.base.clone()]).await;
    assert_eq!(code, Some(0));
    let shown = std::fs::read_to_string(dir.path().join("browser.out")).unwrap_or_default();
    assert!(shown.contains("Authentication success"), "{shown}");
    let saved = std::fs::read_to_string(&config).unwrap();
    assert!(
        saved.contains("refresh_token"),
        "drg keeps a refresh token: {saved}"
    );

    // drg now works as the administrator with the bearer token
    let (code, _) = run(vec!["create".into(), "app".into(), "drg-sso".into()]).await;
    assert_eq!(code, Some(0));
    let (code, listed) = run(vec!["get".into(), "apps".into()]).await;
    assert_eq!(code, Some(0));
    assert!(listed.contains("drg-sso"), "{listed}");
}

/// A full login of `user` through the login page; the token answer.
async fn tokens_of(discovery: &Value, user: &str, password: &str) -> Value {
    let right = log_in(
        discovery["authorization_endpoint"].as_str().unwrap(),
        user,
        password,
    )
    .await;
    assert_eq!(right.status(), StatusCode::SEE_OTHER, "{user} logs in");
    let code = query_of(right.headers()["location"].to_str().unwrap())["code"].clone();
    let (status, tokens) = token(
        discovery["token_endpoint"].as_str().unwrap(),
        &[
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("client_id", "drogue"),
            ("redirect_uri", REDIRECT),
            ("code_verifier", VERIFIER),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{tokens}");
    tokens
}

#[tokio::test]
async fn the_administrator_adds_users_who_log_in_as_strangers_to_each_other() {
    let dir = tempfile::tempdir().unwrap();
    let server =
        LocalRunner::start_with(&dir.path().join("data"), &["--admin-password", PASSWORD]).await;
    let discovery = endpoints(&server).await;
    let users = format!("{}/api/admin/v1alpha1/users", server.base);
    let admin = tokens_of(&discovery, "admin", PASSWORD).await;
    let admin = admin["access_token"].as_str().unwrap().to_owned();
    let add = |bearer: String, body: Value| {
        let users = users.clone();
        async move {
            let response = client()
                .post(&users)
                .bearer_auth(bearer)
                .json(&body)
                .send()
                .await
                .unwrap();
            let status = response.status();
            (
                status,
                response.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };

    let (status, _) = add(
        admin.clone(),
        json!({"name": "alice", "password": "alice-secret"}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, body) = add(
        admin.clone(),
        json!({"name": "alice", "password": "another-secret"}),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let (status, body) = add(admin.clone(), json!({"name": "bob", "password": "short"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("at least 8"),
        "{body}"
    );
    let (status, _) = add(
        admin.clone(),
        json!({"name": "bob", "password": "bob-secret"}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    // the access token of the bootstrap works too
    let listed = server.get("/api/admin/v1alpha1/users").await;
    assert_eq!(listed.0, 200);
    let names: Vec<&str> = listed
        .1
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["admin", "alice", "bob"]);

    // users log in; a user is no administrator
    let alice = tokens_of(&discovery, "alice", "alice-secret").await;
    let alice_token = alice["access_token"].as_str().unwrap().to_owned();
    let (status, _) = add(
        alice_token.clone(),
        json!({"name": "mallory", "password": "mallory-secret"}),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let bob = tokens_of(&discovery, "bob", "bob-secret").await;
    let bob_token = bob["access_token"].as_str().unwrap().to_owned();

    // alice's application is hers: bob neither lists nor reads it
    let created = client()
        .post(format!("{}/api/registry/v1alpha1/apps", server.base))
        .bearer_auth(&alice_token)
        .json(&json!({"metadata": {"name": "alices-app"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    let listed: Value = client()
        .get(format!("{}/api/registry/v1alpha1/apps", server.base))
        .bearer_auth(&bob_token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(!listed.to_string().contains("alices-app"), "{listed}");
    let read = client()
        .get(format!(
            "{}/api/registry/v1alpha1/apps/alices-app",
            server.base
        ))
        .bearer_auth(&bob_token)
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), StatusCode::NOT_FOUND);

    // a removed user can no longer log in or refresh
    let removed = client()
        .delete(format!("{users}/alice"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(removed.status(), StatusCode::NO_CONTENT);
    let again = log_in(
        discovery["authorization_endpoint"].as_str().unwrap(),
        "alice",
        "alice-secret",
    )
    .await;
    assert_eq!(again.status(), StatusCode::UNAUTHORIZED);
    let (status, _) = token(
        discovery["token_endpoint"].as_str().unwrap(),
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", alice["refresh_token"].as_str().unwrap()),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let refused = client()
        .delete(format!("{users}/admin"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
}
