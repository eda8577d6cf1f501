//! `drg` 0.11, unmodified, against `drogue-local`. The test command installs it and sets
//! `DRG_BIN`.

use super::runner::LocalRunner;
use drogue_shared::model::device_spec;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use tokio::process::Command;

fn drg_binary() -> PathBuf {
    std::env::var_os("DRG_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            panic!("DRG_BIN is not set: run the suite with `tests/run`, which installs drg 0.11")
        })
}

/// Runs drg with its own config file; exit code and stdout.
async fn drg(config: &Path, args: &[&str]) -> (i32, String) {
    let out = Command::new(drg_binary())
        .args(args)
        .env("DRGCFG", config)
        .env_remove("DRG_APP")
        .env_remove("DRG_CONTEXT")
        .output()
        .await
        .expect("drg runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("drg {}\n{stdout}{stderr}", args.join(" "));
    (out.status.code().unwrap_or(-1), stdout)
}

/// Runs drg and expects success.
async fn ok(config: &Path, args: &[&str]) -> String {
    let (code, stdout) = drg(config, args).await;
    assert_eq!(code, 0, "drg {args:?} failed: {stdout}");
    stdout
}

/// Runs drg with `-o json` and parses its output.
async fn ok_json(config: &Path, args: &[&str]) -> Value {
    let args = [args, &["-o", "json"]].concat();
    serde_json::from_str(&ok(config, &args).await).expect("drg printed JSON")
}

fn names(list: &Value) -> Vec<&str> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|r| r["metadata"]["name"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn drg_manages_applications_and_devices() {
    let dir = tempfile::tempdir().unwrap();
    let server = LocalRunner::start(&dir.path().join("data")).await;
    let cfg = dir.path().join("drg.yaml");
    let cfg = cfg.as_path();

    ok(
        cfg,
        &[
            "login",
            &server.base,
            "--access-token",
            &server.admin_token(),
        ],
    )
    .await;
    let version = ok_json(cfg, &["version"]).await;
    assert_eq!(version["connected_cloud"], "0.11.0");

    ok(cfg, &["create", "app", "app1"]).await;
    ok(
        cfg,
        &["create", "app", "app2", "--spec", r#"{"note":"second"}"#],
    )
    .await;
    let (code, out) = drg(cfg, &["create", "app", "app1", "-o", "json"]).await;
    assert_eq!(code, 1);
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap()["http_status"],
        409
    );
    assert_eq!(
        names(&ok_json(cfg, &["get", "apps"]).await),
        ["app1", "app2"]
    );

    let spec = r#"{"authentication":{"credentials":[{"pass":"first-secret"}]}}"#;
    ok(
        cfg,
        &[
            "create", "device", "--app", "app1", "device1", "--spec", spec,
        ],
    )
    .await;
    ok(cfg, &["create", "device", "--app", "app1", "gateway1"]).await;
    ok(cfg, &["create", "device", "--app", "app1", "other"]).await;

    ok(
        cfg,
        &[
            "set",
            "password",
            "--app",
            "app1",
            "device1",
            "second-secret",
        ],
    )
    .await;
    ok(
        cfg,
        &[
            "set",
            "password",
            "--app",
            "app1",
            "device1",
            "user-secret",
            "--username",
            "bob",
        ],
    )
    .await;
    ok(
        cfg,
        &["set", "gateway", "--app", "app1", "device1", "gateway1"],
    )
    .await;
    ok(cfg, &["set", "alias", "--app", "app1", "device1", "alias1"]).await;
    ok(
        cfg,
        &[
            "label", "device", "--app", "app1", "device1", "floor=1", "room=a",
        ],
    )
    .await;
    ok(
        cfg,
        &["label", "device", "--app", "app1", "other", "floor=2"],
    )
    .await;
    ok(cfg, &["label", "app", "app1", "env=test"]).await;

    let (status, device) = server
        .get("/api/registry/v1alpha1/apps/app1/devices/device1")
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        device["spec"]["gatewaySelector"]["matchNames"],
        json!(["gateway1"])
    );
    assert_eq!(device["spec"]["alias"], json!(["alias1"]));
    assert_eq!(
        device["metadata"]["labels"],
        json!({"floor": "1", "room": "a"})
    );
    let text = device["spec"].to_string();
    for secret in ["first-secret", "second-secret", "user-secret"] {
        assert!(!text.contains(secret), "{secret} stored in clear: {text}");
    }
    let spec = device["spec"].as_object().unwrap();
    let credentials = device_spec::credentials(spec).unwrap();
    let verifies = |pw: &str| {
        credentials.iter().any(|c| match c {
            device_spec::Credential::Password(p) => p.verify(pw),
            device_spec::Credential::UsernamePassword { password, .. } => password.verify(pw),
            _ => false,
        })
    };
    assert!(verifies("first-secret") && verifies("second-secret") && verifies("user-secret"));
    assert!(!verifies("wrong"));
    let (_, app) = server.get("/api/registry/v1alpha1/apps/app1").await;
    assert_eq!(app["metadata"]["labels"], json!({"env": "test"}));

    // a second device cannot take the alias
    let (code, _) = drg(cfg, &["set", "alias", "--app", "app1", "other", "alias1"]).await;
    assert_eq!(code, 1, "a taken alias is refused");

    assert_eq!(
        names(&ok_json(cfg, &["get", "devices", "--app", "app1", "-l", "floor=1"]).await),
        ["device1"]
    );
    assert_eq!(
        names(&ok_json(cfg, &["get", "devices", "--app", "app1", "-l", "floor"]).await),
        ["device1", "other"]
    );
    assert_eq!(
        names(&ok_json(cfg, &["get", "devices", "--app", "app1", "-l", "floor!=1"]).await),
        ["other"]
    );
    let got = ok_json(cfg, &["get", "device", "--app", "app1", "device1"]).await;
    assert_eq!(got["metadata"]["application"], "app1");

    ok(cfg, &["delete", "device", "--app", "app1", "other"]).await;
    assert_eq!(
        server
            .get("/api/registry/v1alpha1/apps/app1/devices/other")
            .await
            .0,
        404
    );
    let (code, _) = drg(cfg, &["delete", "device", "--app", "app1", "other"]).await;
    assert_eq!(code, 1, "deleting twice reports not found");

    ok(cfg, &["delete", "app", "app1"]).await;
    assert_eq!(server.get("/api/registry/v1alpha1/apps/app1").await.0, 404);
    assert_eq!(
        server
            .get("/api/registry/v1alpha1/apps/app1/devices")
            .await
            .0,
        404
    );
    assert_eq!(names(&ok_json(cfg, &["get", "apps"]).await), ["app2"]);
}

#[tokio::test]
async fn drg_manages_access_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let server = LocalRunner::start(&dir.path().join("data")).await;
    let cfg = dir.path().join("drg.yaml");
    let cfg = cfg.as_path();
    ok(
        cfg,
        &[
            "login",
            &server.base,
            "--access-token",
            &server.admin_token(),
        ],
    )
    .await;

    let created = ok_json(cfg, &["create", "token", "--description", "from drg"]).await;
    let (prefix, token) = (
        created["prefix"].as_str().unwrap(),
        created["token"].as_str().unwrap(),
    );
    assert!(token.starts_with(prefix));
    let listed = ok_json(cfg, &["get", "token"]).await;
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["prefix"] == prefix && t["description"] == "from drg"),
        "{listed}"
    );

    // the new token logs in on its own
    let other_cfg = dir.path().join("other.yaml");
    ok(
        &other_cfg,
        &[
            "login",
            &server.base,
            "--access-token",
            &format!("admin:{token}"),
        ],
    )
    .await;
    ok(&other_cfg, &["get", "apps"]).await;

    ok(cfg, &["delete", "token", prefix]).await;
    let (code, _) = drg(&other_cfg, &["get", "apps"]).await;
    assert_eq!(code, 1, "a deleted token no longer works");
    let (code, _) = drg(
        cfg,
        &["login", &server.base, "--access-token", "admin:drg_wrong"],
    )
    .await;
    assert_eq!(code, 1, "a bad token cannot log in");
}

#[tokio::test]
async fn drg_manages_members() {
    let dir = tempfile::tempdir().unwrap();
    let server = LocalRunner::start(&dir.path().join("data")).await;
    let admin = dir.path().join("admin.yaml");
    let admin = admin.as_path();
    ok(
        admin,
        &[
            "login",
            &server.base,
            "--access-token",
            &server.admin_token(),
        ],
    )
    .await;
    ok(admin, &["create", "app", "team"]).await;
    ok(admin, &["create", "device", "--app", "team", "d1"]).await;

    // an administrator makes a token for bob, who sees nothing yet
    let made = server
        .post_json("/api/admin/v1alpha1/users/bob/tokens", &json!({}))
        .await;
    let bob_token = made["token"].as_str().unwrap();
    let bob = dir.path().join("bob.yaml");
    let bob = bob.as_path();
    ok(
        bob,
        &[
            "login",
            &server.base,
            "--access-token",
            &format!("bob:{bob_token}"),
        ],
    )
    .await;
    assert!(names(&ok_json(bob, &["get", "apps"]).await).is_empty());
    let (code, _) = drg(bob, &["get", "device", "--app", "team", "d1"]).await;
    assert_eq!(code, 1, "bob cannot see the application");

    ok(
        admin,
        &[
            "create", "member", "--app", "team", "bob", "--role", "reader",
        ],
    )
    .await;
    let members = ok_json(admin, &["get", "member", "--app", "team"]).await;
    assert_eq!(members["members"]["bob"]["role"], "reader");
    assert_eq!(names(&ok_json(bob, &["get", "apps"]).await), ["team"]);
    ok(bob, &["get", "device", "--app", "team", "d1"]).await;
    let (code, _) = drg(bob, &["create", "device", "--app", "team", "d2"]).await;
    assert_eq!(code, 1, "a reader cannot write");

    ok(
        admin,
        &[
            "create", "member", "--app", "team", "bob", "--role", "manager",
        ],
    )
    .await;
    ok(bob, &["create", "device", "--app", "team", "d2"]).await;
    let (code, _) = drg(bob, &["get", "member", "--app", "team"]).await;
    assert_eq!(code, 1, "a manager cannot read the members");

    ok(admin, &["delete", "member", "--app", "team", "bob"]).await;
    let members = ok_json(admin, &["get", "member", "--app", "team"]).await;
    assert!(members["members"].as_object().unwrap().is_empty());
    assert!(names(&ok_json(bob, &["get", "apps"]).await).is_empty());
}

#[tokio::test]
async fn drg_streams_the_events_of_an_application() {
    let dir = tempfile::tempdir().unwrap();
    let server = LocalRunner::start(&dir.path().join("data")).await;
    let cfg = dir.path().join("drg.yaml");
    let cfg = cfg.as_path();
    ok(
        cfg,
        &[
            "login",
            &server.base,
            "--access-token",
            &server.admin_token(),
        ],
    )
    .await;
    ok(cfg, &["create", "app", "app1"]).await;
    let spec = r#"{"authentication":{"credentials":[{"pass":"secret"}]}}"#;
    ok(
        cfg,
        &[
            "create", "device", "--app", "app1", "device1", "--spec", spec,
        ],
    )
    .await;

    let stream = Command::new(drg_binary())
        .args(["stream", "--app", "app1", "-n", "1"])
        .env("DRGCFG", cfg)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    // publish until the stream has caught one (it connects asynchronously)
    let http = reqwest::Client::new();
    let output = tokio::time::timeout(std::time::Duration::from_secs(20), async {
        let waiting = tokio::spawn(stream.wait_with_output());
        while !waiting.is_finished() {
            let published = http
                .post(format!("{}/v1/telemetry", server.base))
                .basic_auth("device1@app1", Some("secret"))
                .json(&json!({"temp": 42}))
                .send()
                .await
                .unwrap();
            assert_eq!(published.status().as_u16(), 202);
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
        waiting.await.unwrap().unwrap()
    })
    .await
    .expect("drg stream ends after one event");
    assert!(output.status.success());
    let event: Value =
        serde_json::from_slice(&output.stdout).expect("drg printed the event as JSON");
    assert_eq!(event["application"], "app1");
    assert_eq!(event["device"], "device1");
    assert_eq!(event["data"], json!({"temp": 42}));
}

#[tokio::test]
async fn drg_sends_commands() {
    let dir = tempfile::tempdir().unwrap();
    let server = LocalRunner::start(&dir.path().join("data")).await;
    let cfg = dir.path().join("drg.yaml");
    let cfg = cfg.as_path();
    ok(
        cfg,
        &[
            "login",
            &server.base,
            "--access-token",
            &server.admin_token(),
        ],
    )
    .await;
    ok(cfg, &["create", "app", "app1"]).await;
    let spec = r#"{"authentication":{"credentials":[{"pass":"secret"}]}}"#;
    ok(
        cfg,
        &[
            "create", "device", "--app", "app1", "device1", "--spec", spec,
        ],
    )
    .await;

    ok(
        cfg,
        &[
            "cmd",
            "--app",
            "app1",
            "device1",
            "set-temp",
            "-p",
            r#"{"target":21}"#,
        ],
    )
    .await;
    let polled = reqwest::Client::new()
        .post(format!("{}/v1/telemetry?ct=2", server.base))
        .basic_auth("device1@app1", Some("secret"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(polled.status().as_u16(), 200);
    assert_eq!(polled.headers()["command"], "set-temp");
    assert_eq!(polled.json::<Value>().await.unwrap(), json!({"target": 21}));
    let (code, _) = drg(cfg, &["cmd", "--app", "app1", "nobody", "x", "-p", "{}"]).await;
    assert_eq!(code, 1, "a command for an unknown device is refused");
}

/// Collects what a running `drg stream` prints, event by event.
struct Printed {
    events: std::sync::Arc<std::sync::Mutex<Vec<Value>>>,
    _child: tokio::process::Child,
}

impl Printed {
    fn start(cfg: &Path, app: &str) -> Self {
        use tokio::io::AsyncReadExt;
        let mut child = Command::new(drg_binary())
            .args(["stream", "--app", app])
            .env("DRGCFG", cfg)
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut stdout = child.stdout.take().unwrap();
        let events = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let collected = events.clone();
        tokio::spawn(async move {
            let mut text = Vec::new();
            let mut chunk = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut chunk).await {
                if n == 0 {
                    break;
                }
                text.extend_from_slice(&chunk[..n]);
                let parsed: Vec<Value> = serde_json::Deserializer::from_slice(&text)
                    .into_iter::<Value>()
                    .map_while(Result::ok)
                    .collect();
                *collected.lock().unwrap() = parsed;
            }
        });
        Self {
            events,
            _child: child,
        }
    }

    fn now(&self) -> Vec<Value> {
        self.events.lock().unwrap().clone()
    }

    /// Waits until `done` holds for what was printed.
    async fn until(&self, what: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        for _ in 0..200 {
            let now = self.now();
            if done(&now) {
                return now;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        panic!("drg stream did not print {what}: {:#?}", self.now());
    }
}

#[tokio::test]
async fn registry_changes_reach_drg_stream() {
    let dir = tempfile::tempdir().unwrap();
    let server = LocalRunner::start(&dir.path().join("data")).await;
    let cfg = dir.path().join("drg.yaml");
    let cfg = cfg.as_path();
    let token = server.admin_token();
    ok(cfg, &["login", &server.base, "--access-token", &token]).await;
    ok(cfg, &["create", "app", "app1"]).await;
    ok(cfg, &["create", "app", "other"]).await;

    let printed = Printed::start(cfg, "app1");
    // the stream connects on its own time: change a label until it shows the change
    let http = reqwest::Client::new();
    let (user, key) = token.split_once(':').unwrap();
    for i in 0.. {
        let app = format!("{}/api/registry/v1alpha1/apps/app1", server.base);
        let current: Value = http
            .get(&app)
            .basic_auth(user, Some(key))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let mut next = current.clone();
        next["metadata"]["labels"] = json!({ "probe": i.to_string() });
        let put = http
            .put(&app)
            .basic_auth(user, Some(key))
            .json(&next)
            .send();
        assert_eq!(put.await.unwrap().status().as_u16(), 204);
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        if !printed.now().is_empty() {
            break;
        }
        assert!(i < 100, "drg stream never connected");
    }
    let first = &printed.now()[0];
    assert_eq!(first["type"], "io.drogue.registry.v1");
    assert_eq!(first["subject"], "applications");
    assert_eq!(first["data"]["change"], "updated");
    assert_eq!(first["data"]["name"], "app1");

    ok(cfg, &["create", "device", "--app", "app1", "d1"]).await;
    let created = ok_json(cfg, &["get", "device", "--app", "app1", "d1"]).await;
    ok(cfg, &["set", "alias", "--app", "app1", "d1", "d-one"]).await;
    let updated = ok_json(cfg, &["get", "device", "--app", "app1", "d1"]).await;
    ok(cfg, &["delete", "device", "--app", "app1", "d1"]).await;
    // a device of another application is none of this stream's business
    ok(cfg, &["create", "device", "--app", "other", "d1"]).await;

    let devices = |events: &[Value]| -> Vec<Value> {
        events
            .iter()
            .filter(|e| e["subject"] == "devices")
            .cloned()
            .collect()
    };
    let events = printed
        .until("three device changes", |e| devices(e).len() >= 3)
        .await;
    let changes = devices(&events);
    let kinds: Vec<&str> = changes
        .iter()
        .map(|e| e["data"]["change"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["created", "updated", "deleted"]);
    let app_uid = first["applicationuid"].clone();
    for (event, seen) in changes.iter().zip([&created, &updated, &updated]) {
        assert_eq!(event["type"], "io.drogue.registry.v1");
        assert_eq!(event["source"], "drogue://app1/d1");
        assert_eq!(event["application"], "app1");
        assert_eq!(event["applicationuid"], app_uid);
        assert_eq!(event["device"], "d1");
        assert_eq!(event["deviceuid"], seen["metadata"]["uid"]);
        assert_eq!(event["data"]["name"], "d1");
        assert_eq!(event["data"]["uid"], seen["metadata"]["uid"]);
        assert_eq!(event["data"]["generation"], seen["metadata"]["generation"]);
        assert_eq!(
            event["data"]["resourceVersion"],
            seen["metadata"]["resourceVersion"]
        );
    }
    assert_eq!(changes[1]["data"]["generation"], 1, "the spec changed");
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert!(
        printed.now().iter().all(|e| e["application"] == "app1"),
        "only app1's changes"
    );
}
