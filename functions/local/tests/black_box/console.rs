//! The web console in a real browser: headless Chromium driven over WebDriver
//! (chromedriver; the test command installs Debian's `chromium` and `chromium-driver`)
//! against the real `drogue-local`. With `DROGUE_CONSOLE_SCREENSHOTS=<dir>`, the test
//! saves a screenshot of every page there (docs/console/ is made so).

use super::runner::LocalRunner;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};

const PASSWORD: &str = "console admin password";

/// chromedriver on a free port, stopped when dropped.
struct Driver {
    _child: Child,
    url: String,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn driver() -> Driver {
    let binary = ["chromedriver", "/usr/lib/chromium/chromedriver"]
        .into_iter()
        .find(|b| {
            std::process::Command::new(b)
                .arg("--version")
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
        .unwrap_or_else(|| {
            panic!(
                "chromedriver is missing: run the suite with `tests/run`, which installs \
                 Debian's chromium and chromium-driver"
            )
        });
    let port = free_port();
    let child = Command::new(binary)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("chromedriver starts");
    let url = format!("http://127.0.0.1:{port}");
    for _ in 0..100 {
        if reqwest::get(format!("{url}/status")).await.is_ok() {
            return Driver { _child: child, url };
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("chromedriver did not start");
}

async fn browser(driver: &Driver) -> Client {
    let mut capabilities = serde_json::Map::new();
    capabilities.insert(
        "goog:chromeOptions".into(),
        json!({"args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                        "--disable-dev-shm-usage", "--window-size=1200,800"]}),
    );
    ClientBuilder::rustls()
        .expect("a TLS configuration")
        .capabilities(capabilities)
        .connect(&driver.url)
        .await
        .expect("a browser session")
}

struct Shots(Option<PathBuf>);

impl Shots {
    async fn take(&self, browser: &Client, name: &str) {
        if let Some(dir) = &self.0 {
            std::fs::create_dir_all(dir).unwrap();
            let png = browser.screenshot().await.unwrap();
            std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
        }
    }
}

/// Waits for an element whose text contains `text`.
async fn wait_text(browser: &Client, css: &str, text: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(shown) = text_of(browser, css).await
            && shown.contains(text)
        {
            return shown;
        }
        if Instant::now() > deadline {
            let source = browser.source().await.unwrap_or_default();
            panic!("no {css} with {text:?} within 15 s; page: {source}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The text of an element, if it is there (the console replaces elements as it goes).
async fn text_of(browser: &Client, css: &str) -> Option<String> {
    browser
        .find(Locator::Css(css))
        .await
        .ok()?
        .text()
        .await
        .ok()
}

async fn fill(browser: &Client, css: &str, value: &str) {
    let element = browser.wait().for_element(Locator::Css(css)).await.unwrap();
    element.clear().await.unwrap();
    element.send_keys(value).await.unwrap();
}

async fn click(browser: &Client, css: &str) {
    browser
        .wait()
        .for_element(Locator::Css(css))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

/// Logs in on the built-in issuer's page (the console's Log in button first).
async fn log_in(browser: &Client, user: &str, password: &str) {
    click(browser, "#login").await;
    wait_text(browser, "h1", "Log in").await;
    fill(browser, "#username", user).await;
    fill(browser, "#password", password).await;
    click(browser, "button[type=submit]").await;
    wait_text(browser, "#username", user).await;
}

#[tokio::test]
async fn the_console_in_a_browser_manages_a_fleet_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let server =
        LocalRunner::start_with(&dir.path().join("data"), &["--admin-password", PASSWORD]).await;
    let shots = Shots(std::env::var_os("DROGUE_CONSOLE_SCREENSHOTS").map(PathBuf::from));
    let driver = driver().await;
    let browser = browser(&driver).await;

    // page weight of the first view: the page and its two assets
    let mut weight = 0;
    for path in ["/", "/console/console.js", "/console/console.css"] {
        let response = reqwest::get(format!("{}{path}", server.base))
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{path}");
        weight += response.bytes().await.unwrap().len();
    }

    browser.goto(&format!("{}/", server.base)).await.unwrap();
    wait_text(&browser, "h1", "Welcome").await;
    shots.take(&browser, "welcome").await;

    // a wrong password shows an error on the login page
    click(&browser, "#login").await;
    wait_text(&browser, "h1", "Log in").await;
    shots.take(&browser, "login").await;
    fill(&browser, "#username", "admin").await;
    fill(&browser, "#password", "not the password").await;
    click(&browser, "button[type=submit]").await;
    wait_text(&browser, "#error", "Invalid user name or password").await;
    shots.take(&browser, "login-error").await;
    fill(&browser, "#password", PASSWORD).await;
    click(&browser, "button[type=submit]").await;
    wait_text(&browser, "#username", "admin").await;
    wait_text(&browser, "h1", "Getting started").await;
    let rendered: Value = browser
        .execute("return document.body.dataset.rendered", vec![])
        .await
        .unwrap();
    eprintln!(
        "console first view: {weight} bytes; rendered {} ms after the script started",
        rendered.as_str().unwrap_or("?")
    );

    // an application and a device
    browser
        .goto(&format!("{}/#/apps", server.base))
        .await
        .unwrap();
    fill(&browser, "#new-app", "console-app").await;
    click(&browser, "#create-app").await;
    wait_text(&browser, "h1", "Application console-app").await;
    fill(&browser, "#new-device", "dev1").await;
    fill(&browser, "#new-device-password", "dev1-secret").await;
    click(&browser, "#create-device").await;
    wait_text(&browser, "#devices", "dev1").await;
    shots.take(&browser, "application").await;
    browser
        .goto(&format!("{}/#/apps", server.base))
        .await
        .unwrap();
    wait_text(&browser, "#apps", "console-app").await;
    shots.take(&browser, "applications").await;
    browser
        .goto(&format!("{}/#/apps/console-app/devices/dev1", server.base))
        .await
        .unwrap();
    wait_text(&browser, "h1", "Device dev1").await;
    shots.take(&browser, "device").await;

    // getting started, filled with these names: its curl command publishes, and the event
    // shows on the live page
    browser.goto(&format!("{}/#/", server.base)).await.unwrap();
    fill(&browser, "#gs-app", "console-app").await;
    fill(&browser, "#gs-device", "dev1").await;
    fill(&browser, "#gs-password", "dev1-secret").await;
    fill(&browser, "#gs-payload", "{\"temp\": 23.5}").await;
    click(&browser, "#start button[type=submit]").await;
    let curl = wait_text(&browser, "#cmd-curl", "curl").await;
    assert!(curl.contains(&server.base), "{curl}");
    shots.take(&browser, "getting-started").await;

    browser
        .goto(&format!("{}/#/apps/console-app/events", server.base))
        .await
        .unwrap();
    wait_text(&browser, "#stream-status", "live").await;
    let published = Command::new("sh")
        .arg("-c")
        .arg(&curl)
        .output()
        .await
        .expect("sh runs the shown curl command");
    assert!(
        published.status.success(),
        "{curl}: {}",
        String::from_utf8_lossy(&published.stderr)
    );
    wait_text(&browser, "#events", "23.5").await;
    wait_text(&browser, "#events", "dev1").await;
    shots.take(&browser, "events").await;

    // a command: the device waits for it on its HTTP publish
    let device = tokio::spawn({
        let base = server.base.clone();
        async move {
            reqwest::Client::new()
                .post(format!("{base}/v1/telemetry?ct=20"))
                .basic_auth("dev1@console-app", Some("dev1-secret"))
                .body("{}")
                .send()
                .await
                .unwrap()
        }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    browser
        .goto(&format!(
            "{}/#/apps/console-app/devices/dev1/command",
            server.base
        ))
        .await
        .unwrap();
    fill(&browser, "#command-name", "set-temp").await;
    fill(&browser, "#command-payload", "{\"target\": 21}").await;
    click(&browser, "#send-command").await;
    wait_text(&browser, "#command-result", "accepted").await;
    shots.take(&browser, "command").await;
    let answer = device.await.unwrap();
    assert_eq!(
        answer
            .headers()
            .get("command")
            .map(|v| v.to_str().unwrap().to_owned()),
        Some("set-temp".to_owned())
    );
    assert_eq!(answer.text().await.unwrap(), "{\"target\": 21}");

    // access tokens: made (shown once), listed, deleted
    browser
        .goto(&format!("{}/#/tokens", server.base))
        .await
        .unwrap();
    fill(&browser, "#token-description", "from the console").await;
    click(&browser, "#create-token").await;
    let token = wait_text(&browser, "#token-value", "drg_").await;
    wait_text(&browser, "#tokens", "from the console").await;
    shots.take(&browser, "tokens").await;
    let listed = reqwest::Client::new()
        .get(format!("{}/api/tokens/v1alpha1", server.base))
        .basic_auth("admin", Some(token.trim()))
        .send()
        .await
        .unwrap();
    assert_eq!(listed.status(), 200, "the shown token works");
    // (the list also holds the administrator's bootstrapped token: delete the new one)
    browser
        .find(Locator::XPath(
            "//table[@id='tokens']//tr[td[contains(., 'from the console')]]//button",
        ))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while text_of(&browser, "#tokens")
        .await
        .is_none_or(|t| t.contains("from the console"))
    {
        assert!(Instant::now() < deadline, "the token is deleted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // members of the application
    browser
        .goto(&format!("{}/#/apps/console-app/members", server.base))
        .await
        .unwrap();
    wait_text(&browser, "h1", "Members of").await;
    shots.take(&browser, "members").await;

    // another user sees none of it
    let added = reqwest::Client::new()
        .post(format!("{}/api/admin/v1alpha1/users", server.base))
        .basic_auth(
            "admin",
            Some(server.admin_token().split_once(':').unwrap().1),
        )
        .json(&json!({"name": "bob", "password": "bob-secret"}))
        .send()
        .await
        .unwrap();
    assert_eq!(added.status(), 201);
    click(&browser, "#logout").await;
    wait_text(&browser, "h1", "Welcome").await;
    log_in(&browser, "bob", "bob-secret").await;
    browser
        .goto(&format!("{}/#/apps", server.base))
        .await
        .unwrap();
    wait_text(&browser, "#apps", "Name").await;
    let apps = text_of(&browser, "#apps").await.unwrap();
    assert!(!apps.contains("console-app"), "bob sees {apps}");
    // and the API's refusal is shown in words
    browser
        .goto(&format!("{}/#/apps/console-app", server.base))
        .await
        .unwrap();
    wait_text(&browser, "#error", "404").await;

    browser.close().await.unwrap();
}

/// The console's tokens, as it keeps them in the tab's session storage.
async fn stored_tokens(browser: &Client) -> Value {
    let stored: Value = browser
        .execute("return sessionStorage.getItem('tokens')", vec![])
        .await
        .unwrap();
    serde_json::from_str(stored.as_str().expect("the console keeps tokens")).unwrap()
}

/// `GET` of the application list with a bearer token: the status.
async fn list_with(server: &LocalRunner, token: &str) -> u16 {
    reqwest::Client::new()
        .get(format!("{}/api/registry/v1alpha1/apps", server.base))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// With access tokens good for 10 s (`--sso-token-lifetime 10`), the console refreshes
/// them at their half-life, rotating the refresh token each time and never in a loop; long
/// after the first token expired (and the API refuses it with 403, as any bad credentials,
/// its 30 s leeway past), the console still works.
#[tokio::test]
async fn the_console_refreshes_its_tokens_before_they_expire() {
    let dir = tempfile::tempdir().unwrap();
    let server = LocalRunner::start_with(
        &dir.path().join("data"),
        &["--admin-password", PASSWORD, "--sso-token-lifetime", "10"],
    )
    .await;
    let driver = driver().await;
    let browser = browser(&driver).await;
    browser.goto(&format!("{}/", server.base)).await.unwrap();
    wait_text(&browser, "h1", "Welcome").await;
    log_in(&browser, "admin", PASSWORD).await;
    wait_text(&browser, "h1", "Getting started").await;
    let first = stored_tokens(&browser).await;
    let first_access = first["access_token"].as_str().unwrap().to_owned();
    assert_eq!(first["expires_in"], 10, "{first}");
    assert_eq!(list_with(&server, &first_access).await, 200);

    // watch the stored tokens until the first one is refused: every access token and
    // refresh token the console held
    let (mut access, mut refresh) = (
        vec![first_access.clone()],
        vec![first["refresh_token"].as_str().unwrap().to_owned()],
    );
    let started = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = stored_tokens(&browser).await;
        let (a, r) = (
            now["access_token"].as_str().unwrap().to_owned(),
            now["refresh_token"].as_str().unwrap().to_owned(),
        );
        if access.last() != Some(&a) {
            access.push(a);
        }
        if refresh.last() != Some(&r) {
            refresh.push(r);
        }
        if started.elapsed() > Duration::from_secs(35) {
            let status = list_with(&server, &first_access).await;
            // refused as any bad credentials are
            if status == 403 {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "the first token still gets {status} after 60 s"
            );
        }
    }
    let elapsed = started.elapsed().as_secs();
    // about one refresh per 5 s: neither none nor a loop
    assert!(
        access.len() as u64 >= elapsed / 5 - 1 && access.len() as u64 <= elapsed / 5 + 2,
        "{} access tokens in {elapsed} s",
        access.len()
    );
    assert_eq!(access.len(), refresh.len(), "a new refresh token each time");
    // the console works on with its current token
    browser
        .goto(&format!("{}/#/apps", server.base))
        .await
        .unwrap();
    fill(&browser, "#new-app", "after-refresh").await;
    click(&browser, "#create-app").await;
    wait_text(&browser, "h1", "Application after-refresh").await;
    let error = browser.find(Locator::Css("#error")).await.unwrap();
    assert!(
        !error.is_displayed().await.unwrap(),
        "no error: {}",
        error.text().await.unwrap()
    );
    // a used refresh token is spent
    let token_endpoint = format!("{}/sso/token", server.base);
    let form = form_urlencoded::Serializer::new(String::new())
        .append_pair("grant_type", "refresh_token")
        .append_pair("refresh_token", &refresh[0])
        .append_pair("client_id", "console")
        .finish();
    let reused = reqwest::Client::new()
        .post(&token_endpoint)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form)
        .send()
        .await
        .unwrap();
    assert_eq!(reused.status(), 400);

    browser.close().await.unwrap();
}
