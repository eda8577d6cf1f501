//! Data survives a restart; signals stop the runner cleanly.

use super::runner::LocalRunner;
use serde_json::json;

#[tokio::test]
async fn a_restart_on_the_same_data_dir_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let first = LocalRunner::start(dir.path()).await;
    let token = first.admin_token();
    assert!(token.starts_with("admin:drg_"), "{token}");
    for app in ["kept-1", "kept-2"] {
        assert_eq!(
            first
                .post(
                    "/api/registry/v1alpha1/apps",
                    &json!({"metadata": {"name": app}})
                )
                .await,
            201
        );
        for device in ["d1", "d2", "d3"] {
            let body = json!({"metadata": {"name": device}, "spec": {"alias": [format!("{app}-{device}")]}});
            assert_eq!(
                first
                    .post(&format!("/api/registry/v1alpha1/apps/{app}/devices"), &body)
                    .await,
                201
            );
        }
    }
    let (_, before) = first
        .get("/api/registry/v1alpha1/apps/kept-1/devices/d2")
        .await;
    assert_eq!(first.stop("TERM").await, Some(0), "SIGTERM is a clean exit");

    let second = LocalRunner::start(dir.path()).await;
    assert_eq!(
        second.admin_token(),
        token,
        "the administrator keeps its token"
    );
    let (status, apps) = second.get("/api/registry/v1alpha1/apps").await;
    assert_eq!(status, 200, "the old token still works");
    assert_eq!(apps.as_array().unwrap().len(), 2);
    for app in ["kept-1", "kept-2"] {
        let (_, devices) = second
            .get(&format!("/api/registry/v1alpha1/apps/{app}/devices"))
            .await;
        assert_eq!(devices.as_array().unwrap().len(), 3, "{app}");
    }
    let (_, after) = second
        .get("/api/registry/v1alpha1/apps/kept-1/devices/d2")
        .await;
    assert_eq!(before, after, "unchanged, down to the resourceVersion");
    // the claims survived too
    let taken = json!({"metadata": {"name": "d9"}, "spec": {"alias": ["kept-1-d1"]}});
    assert_eq!(
        second
            .post("/api/registry/v1alpha1/apps/kept-1/devices", &taken)
            .await,
        409
    );
    assert_eq!(second.stop("INT").await, Some(0), "SIGINT is a clean exit");
}

#[tokio::test]
async fn a_lost_token_file_gets_a_new_administrator_token() {
    let dir = tempfile::tempdir().unwrap();
    let first = LocalRunner::start(dir.path()).await;
    let old = first.admin_token();
    first.stop("TERM").await;
    std::fs::remove_file(dir.path().join("admin-token")).unwrap();

    let second = LocalRunner::start(dir.path()).await;
    let new = second.admin_token();
    assert_ne!(new, old);
    assert_eq!(second.get("/api/registry/v1alpha1/apps").await.0, 200);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("admin-token"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "only the owner may read the token file");
    }
}

/// Every listener but the HTTP one can be turned off: the runner starts, serves HTTP,
/// reports no address for the others, and stops cleanly.
#[tokio::test]
async fn listeners_can_be_turned_off() {
    let dir = tempfile::tempdir().unwrap();
    let ready = dir.path().join("ready.json");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_drogue-local"))
        .arg("--data-dir")
        .arg(dir.path())
        .args(["--http-bind", "127.0.0.1:0", "--https-bind", "off"])
        .args([
            "--mqtt-bind",
            "off",
            "--mqtts-bind",
            "off",
            "--coap-bind",
            "off",
            "--coaps-bind",
            "off",
        ])
        .arg("--ready-file")
        .arg(&ready)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut addresses = serde_json::Value::Null;
    for _ in 0..600 {
        if let Ok(text) = std::fs::read_to_string(&ready)
            && let Ok(parsed) = serde_json::from_str(&text)
        {
            addresses = parsed;
            break;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("drogue-local exited at start: {status}");
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    for off in ["https", "mqtt", "mqtts", "coap", "coaps"] {
        assert_eq!(
            addresses[off],
            serde_json::Value::Null,
            "{off}: {addresses}"
        );
    }
    let http = addresses["http"].as_str().expect("an HTTP address");
    let answer = reqwest::get(format!("http://{http}/.well-known/drogue-version"))
        .await
        .unwrap();
    assert_eq!(answer.status().as_u16(), 200);
    let endpoints: serde_json::Value =
        reqwest::get(format!("http://{http}/.well-known/drogue-endpoints"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    assert!(
        endpoints.get("mqtt").is_none(),
        "no broker announced: {endpoints}"
    );
    assert!(endpoints.get("mqtt_integration").is_none());
    assert!(
        endpoints.get("coap").is_none(),
        "no CoAP endpoint: {endpoints}"
    );
    let pid = child.id().unwrap().to_string();
    let killed = tokio::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .unwrap();
    assert!(killed.success());
    let status = tokio::time::timeout(std::time::Duration::from_secs(10), child.wait())
        .await
        .expect("stops within 10 s")
        .unwrap();
    assert_eq!(status.code(), Some(0));
}
