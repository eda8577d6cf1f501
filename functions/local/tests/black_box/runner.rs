//! Starts and stops the `drogue-local` binary.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::process::{Child, Command};

/// A WebSocket connection to the runner.
pub type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A running `drogue-local` process.
pub struct LocalRunner {
    child: Child,
    pub base: String,
    /// The HTTPS listener's base URL.
    pub https: String,
    /// The MQTT and MQTT over TLS listeners.
    pub mqtt: std::net::SocketAddr,
    pub mqtts: std::net::SocketAddr,
    /// The CoAP endpoint (UDP).
    pub coap: std::net::SocketAddr,
    /// CoAP over DTLS (UDP).
    pub coaps: std::net::SocketAddr,
    pub data_dir: PathBuf,
}

impl LocalRunner {
    /// Starts the binary on `data_dir` (on free ports) and waits until it is listening.
    pub async fn start(data_dir: &Path) -> Self {
        Self::start_with(data_dir, &[]).await
    }

    /// [`Self::start`] with more command-line options.
    pub async fn start_with(data_dir: &Path, options: &[&str]) -> Self {
        std::fs::create_dir_all(data_dir).unwrap();
        let ready = data_dir.join("ready.json");
        let _ = std::fs::remove_file(&ready);
        let mut child = Command::new(env!("CARGO_BIN_EXE_drogue-local"))
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--http-bind", "127.0.0.1:0", "--https-bind", "127.0.0.1:0"])
            .args(["--mqtt-bind", "127.0.0.1:0", "--mqtts-bind", "127.0.0.1:0"])
            .args(["--coap-bind", "127.0.0.1:0", "--coaps-bind", "127.0.0.1:0"])
            .arg("--ready-file")
            .arg(&ready)
            .args(options)
            // (`DROGUE_TEST_LOG` sets it otherwise, to look into a failing test)
            .env(
                "RUST_LOG",
                std::env::var("DROGUE_TEST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("drogue-local starts");
        for _ in 0..600 {
            if let Ok(text) = std::fs::read_to_string(&ready)
                && let Ok(addresses) = serde_json::from_str::<serde_json::Value>(&text)
            {
                let https = addresses["https"]
                    .as_str()
                    .unwrap()
                    .rsplit(':')
                    .next()
                    .unwrap()
                    .to_owned();
                return Self {
                    child,
                    base: format!("http://{}", addresses["http"].as_str().unwrap()),
                    https: format!("https://localhost:{https}"),
                    mqtt: addresses["mqtt"].as_str().unwrap().parse().unwrap(),
                    mqtts: addresses["mqtts"].as_str().unwrap().parse().unwrap(),
                    coap: addresses["coap"].as_str().unwrap().parse().unwrap(),
                    coaps: addresses["coaps"].as_str().unwrap().parse().unwrap(),
                    data_dir: data_dir.to_owned(),
                };
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("drogue-local exited at start: {status}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("drogue-local did not start within 30 s");
    }

    /// The process id (for its memory in `/proc`).
    pub fn pid(&self) -> u32 {
        self.child.id().expect("drogue-local runs")
    }

    /// `user:token` of the bootstrapped administrator.
    pub fn admin_token(&self) -> String {
        std::fs::read_to_string(self.data_dir.join("admin-token"))
            .expect("the admin token file exists")
            .trim()
            .to_owned()
    }

    /// A GET as the administrator: status and JSON body.
    /// Opens a WebSocket on `path` (with its query) as `user:token`; panics if refused.
    pub async fn websocket(&self, path: &str, who: (&str, &str)) -> Socket {
        self.try_websocket(path, who)
            .await
            .unwrap_or_else(|status| panic!("the stream opens: {status}"))
    }

    /// Opens a WebSocket on `path` (with its query) as `user:token`; the HTTP status if
    /// the server refused the upgrade.
    pub async fn try_websocket(&self, path: &str, who: (&str, &str)) -> Result<Socket, u16> {
        use base64::Engine;
        use tokio_tungstenite::tungstenite::{Error, client::IntoClientRequest};
        let url = format!("{}{path}", self.base.replacen("http://", "ws://", 1));
        let mut request = url.into_client_request().unwrap();
        let basic =
            base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", who.0, who.1));
        request
            .headers_mut()
            .insert("authorization", format!("Basic {basic}").parse().unwrap());
        match tokio_tungstenite::connect_async(request).await {
            Ok((socket, _)) => Ok(socket),
            Err(Error::Http(response)) => Err(response.status().as_u16()),
            Err(e) => panic!("{e}"),
        }
    }

    /// A counter of `/metrics`.
    pub async fn metric(&self, name: &str) -> u64 {
        let text = reqwest::get(format!("{}/metrics", self.base))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .find_map(|line| line.strip_prefix(&format!("{name} ")))
            .and_then(|value| value.parse().ok())
            .unwrap_or_else(|| panic!("{name} in {text}"))
    }

    /// Waits (at most 8 s) until a counter of `/metrics` is `value`; panics otherwise.
    pub async fn metric_reaches(&self, name: &str, value: u64) {
        self.metric_until(name, |v| v == value, &format!("reaches {value}"))
            .await;
    }

    /// Waits (at most 8 s) until a counter of `/metrics` is at least `value`; panics
    /// otherwise.
    pub async fn metric_reaches_at_least(&self, name: &str, value: u64) {
        self.metric_until(name, |v| v >= value, &format!("reaches at least {value}"))
            .await;
    }

    async fn metric_until(&self, name: &str, done: impl Fn(u64) -> bool, what: &str) {
        let reached = async {
            while !done(self.metric(name).await) {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        };
        tokio::time::timeout(std::time::Duration::from_secs(8), reached)
            .await
            .unwrap_or_else(|_| panic!("{name} {what}"));
    }

    pub async fn get(&self, path: &str) -> (u16, serde_json::Value) {
        let token = self.admin_token();
        let (user, token) = token.split_once(':').unwrap();
        let response = reqwest::Client::new()
            .get(format!("{}{path}", self.base))
            .basic_auth(user, Some(token))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (
            status,
            response.json().await.unwrap_or(serde_json::Value::Null),
        )
    }

    /// A POST as the administrator; the status.
    pub async fn post(&self, path: &str, body: &serde_json::Value) -> u16 {
        self.send(reqwest::Method::POST, path, body).await
    }

    /// A PUT as the administrator; the status.
    pub async fn put(&self, path: &str, body: &serde_json::Value) -> u16 {
        self.send(reqwest::Method::PUT, path, body).await
    }

    async fn send(&self, method: reqwest::Method, path: &str, body: &serde_json::Value) -> u16 {
        let token = self.admin_token();
        let (user, token) = token.split_once(':').unwrap();
        reqwest::Client::new()
            .request(method, format!("{}{path}", self.base))
            .basic_auth(user, Some(token))
            .json(body)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    /// A user made by the administrator, with an access token: (user, token).
    pub async fn user(&self, name: &str) -> (String, String) {
        let made = self
            .post_json(
                &format!("/api/admin/v1alpha1/users/{name}/tokens"),
                &serde_json::json!({}),
            )
            .await;
        (name.to_owned(), made["token"].as_str().unwrap().to_owned())
    }

    /// A POST as the administrator; the JSON answer (which must be a success).
    pub async fn post_json(&self, path: &str, body: &serde_json::Value) -> serde_json::Value {
        let token = self.admin_token();
        let (user, token) = token.split_once(':').unwrap();
        let response = reqwest::Client::new()
            .post(format!("{}{path}", self.base))
            .basic_auth(user, Some(token))
            .json(body)
            .send()
            .await
            .unwrap();
        assert!(
            response.status().is_success(),
            "{path}: {}",
            response.status()
        );
        response.json().await.unwrap()
    }

    /// Sends `signal` (e.g. `TERM`) and waits for the exit; the exit code.
    pub async fn stop(mut self, signal: &str) -> Option<i32> {
        let pid = self.child.id().expect("still running").to_string();
        let sent = Command::new("kill")
            .args([&format!("-{signal}"), &pid])
            .status()
            .await
            .unwrap();
        assert!(sent.success());
        let status = tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .expect("drogue-local stops within 10 s")
            .unwrap();
        status.code()
    }
}
