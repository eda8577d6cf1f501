//! Devices publish over HTTP (password) and HTTPS (client certificate); applications
//! follow the events on the WebSocket integration and with `drg stream`.

use super::runner::LocalRunner;
use drogue_tests::pki::TestCa;
use futures_util::StreamExt;
use serde_json::{Value, json};
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

async fn setup(server: &LocalRunner, ca: &TestCa) {
    let apps = "/api/registry/v1alpha1/apps";
    let app = json!({"metadata": {"name": "app1"}, "spec": {"trustAnchors": {"anchors": [{"certificate": ca.anchor()}]}}});
    assert_eq!(server.post(apps, &app).await, 201);
    let devices = format!("{apps}/app1/devices");
    let dev1 = json!({"metadata": {"name": "dev1"}, "spec": {"authentication": {"credentials": [{"pass": "secret"}]}}});
    assert_eq!(server.post(&devices, &dev1).await, 201);
    assert_eq!(
        server
            .post(&devices, &json!({"metadata": {"name": "device-1"}}))
            .await,
        201
    );
    assert_eq!(
        server
            .post(apps, &json!({"metadata": {"name": "app2"}}))
            .await,
        201
    );
}

async fn websocket(
    server: &LocalRunner,
    path: &str,
    basic: &str,
) -> Result<
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    u16,
> {
    use base64::Engine;
    let url = format!("{}{path}", server.base.replacen("http://", "ws://", 1));
    let mut request = url.into_client_request().unwrap();
    let encoded = base64::engine::general_purpose::STANDARD.encode(basic);
    request
        .headers_mut()
        .insert("authorization", format!("Basic {encoded}").parse().unwrap());
    match tokio_tungstenite::connect_async(request).await {
        Ok((socket, _)) => Ok(socket),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            Err(response.status().as_u16())
        }
        Err(e) => panic!("{e}"),
    }
}

async fn next_event(
    socket: &mut (impl StreamExt<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin),
) -> Value {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(10), socket.next())
            .await
            .expect("an event within 10 s")
            .expect("the stream is open")
            .unwrap();
        if let Message::Text(text) = message {
            return serde_json::from_str(&text).unwrap();
        }
    }
}

#[tokio::test]
async fn devices_publish_and_applications_follow() {
    let dir = tempfile::tempdir().unwrap();
    let server = LocalRunner::start(dir.path()).await;
    let ca = TestCa::new("app1", "App 1 CA");
    setup(&server, &ca).await;

    let mut all = websocket(&server, "/stream/app1", &server.admin_token())
        .await
        .unwrap();
    let mut state_only = websocket(&server, "/stream/app1/state", &server.admin_token())
        .await
        .unwrap();
    let mut other_app = websocket(&server, "/stream/app2", &server.admin_token())
        .await
        .unwrap();

    let http = reqwest::Client::new();
    let published = http
        .post(format!("{}/v1/telemetry", server.base))
        .basic_auth("dev1@app1", Some("secret"))
        .json(&json!({"temp": 21.5}))
        .send()
        .await
        .unwrap();
    assert_eq!(published.status().as_u16(), 202);

    let identity = ca.issue("app1", "device-1", 2025, 2099);
    let https = reqwest::Client::builder()
        .identity(reqwest::Identity::from_pem(identity.identity_pem().as_bytes()).unwrap())
        .danger_accept_invalid_certs(true)
        .build()
        .unwrap();
    let published = https
        .post(format!("{}/v1/state?data_schema=urn:state", server.https))
        .header("content-type", "text/plain")
        .body("on")
        .send()
        .await
        .unwrap();
    assert_eq!(published.status().as_u16(), 202);

    let first = next_event(&mut all).await;
    let (_, app) = server.get("/api/registry/v1alpha1/apps/app1").await;
    let (_, dev1) = server
        .get("/api/registry/v1alpha1/apps/app1/devices/dev1")
        .await;
    assert_eq!(first["specversion"], "1.0");
    assert!(first["id"].as_str().is_some_and(|id| id.len() == 36));
    assert_eq!(first["type"], "io.drogue.event.v1");
    assert_eq!(first["source"], "drogue://app1/dev1");
    assert_eq!(first["subject"], "telemetry");
    assert!(first["time"].as_str().unwrap().starts_with("20"));
    assert_eq!(first["datacontenttype"], "application/json");
    assert_eq!(first["instance"], "drogue");
    assert_eq!(first["application"], "app1");
    assert_eq!(first["applicationuid"], app["metadata"]["uid"]);
    assert_eq!(first["device"], "dev1");
    assert_eq!(first["deviceuid"], dev1["metadata"]["uid"]);
    assert_eq!(first["sender"], "dev1");
    assert_eq!(first["senderuid"], dev1["metadata"]["uid"]);
    assert_eq!(first["partitionkey"], "app1/dev1");
    assert_eq!(first["data"], json!({"temp": 21.5}));
    let second = next_event(&mut all).await;
    assert_eq!(second["subject"], "state");
    assert_eq!(second["device"], "device-1");
    assert_eq!(second["sender"], "device-1");
    assert_eq!(second["dataschema"], "urn:state");
    assert_eq!(second["data_base64"], "b24=");
    assert_eq!(
        next_event(&mut state_only).await["subject"],
        "state",
        "the channel filter"
    );

    // the other application's stream saw nothing; a publish there shows up first
    let dev = json!({"metadata": {"name": "d"}, "spec": {"authentication": {"credentials": [{"pass": "p"}]}}});
    assert_eq!(
        server
            .post("/api/registry/v1alpha1/apps/app2/devices", &dev)
            .await,
        201
    );
    http.post(format!("{}/v1/x", server.base))
        .basic_auth("d@app2", Some("p"))
        .body("1")
        .send()
        .await
        .unwrap();
    assert_eq!(next_event(&mut other_app).await["application"], "app2");

    // no certificate, or a wrong password: the same 403
    for request in [
        https.post(format!("{}/v1/state", server.base)).body("x"),
        http.post(format!("{}/v1/state", server.base))
            .basic_auth("dev1@app1", Some("wrong"))
            .body("x"),
    ] {
        let answer = request.send().await.unwrap();
        assert_eq!(answer.status().as_u16(), 403);
        let body: Value = answer.json().await.unwrap();
        assert_eq!(
            body,
            json!({"code": 403, "error": "AuthenticationError", "message": "Authentication failed"})
        );
    }

    // a steady publisher runs the slow password hash no more
    let checks = || async {
        let text = http
            .get(format!("{}/metrics", server.base))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let line = text
            .lines()
            .find(|l| l.starts_with("drogue_device_password_checks_total "))
            .unwrap();
        line.rsplit(' ').next().unwrap().parse::<u64>().unwrap()
    };
    let before = checks().await;
    for _ in 0..10 {
        let published = http
            .post(format!("{}/v1/telemetry", server.base))
            .basic_auth("dev1@app1", Some("secret"))
            .body("1")
            .send()
            .await
            .unwrap();
        assert_eq!(published.status().as_u16(), 202);
    }
    assert_eq!(checks().await, before, "verified passwords are remembered");

    // in one process, a registry change reaches device authentication at once
    let (_, mut device) = server
        .get("/api/registry/v1alpha1/apps/app1/devices/dev1")
        .await;
    device["spec"]["authentication"] = json!({"credentials": [{"pass": "new-secret"}]});
    let token = server.admin_token();
    let (user, token) = token.split_once(':').unwrap();
    let updated = http
        .put(format!(
            "{}/api/registry/v1alpha1/apps/app1/devices/dev1",
            server.base
        ))
        .basic_auth(user, Some(token))
        .json(&device)
        .send()
        .await
        .unwrap();
    assert_eq!(updated.status().as_u16(), 204);
    for (password, status) in [("secret", 403), ("new-secret", 202)] {
        let published = http
            .post(format!("{}/v1/telemetry", server.base))
            .basic_auth("dev1@app1", Some(password))
            .body("1")
            .send()
            .await
            .unwrap();
        assert_eq!(published.status().as_u16(), status, "{password}");
    }

    // a user without access to app1 cannot follow it
    let made = server
        .post_json("/api/admin/v1alpha1/users/eve/tokens", &json!({}))
        .await;
    let eve = format!("eve:{}", made["token"].as_str().unwrap());
    assert_eq!(
        websocket(&server, "/stream/app1", &eve).await.err(),
        Some(404)
    );
    assert_eq!(
        websocket(&server, "/stream/app1", "admin:drg_wrong")
            .await
            .err(),
        Some(403)
    );
}
