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
