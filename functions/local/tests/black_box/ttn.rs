//! The Things Network's webhooks against the real runner: uplinks become telemetry
//! events of the device they are for.

use super::runner::LocalRunner;
use futures_util::StreamExt;
use serde_json::{Value, json};
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

const APPS: &str = "/api/registry/v1alpha1/apps";
const V3: &str = include_str!("../../../http-endpoint/tests/testdata/ttn-v3-uplink.json");
const V3_JOIN: &str = include_str!("../../../http-endpoint/tests/testdata/ttn-v3-join-accept.json");
const V2: &str = include_str!("../../../http-endpoint/tests/testdata/ttn-v2-uplink.json");

/// The next telemetry event on the stream.
async fn next_event(socket: &mut super::runner::Socket) -> Value {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(10), socket.next())
            .await
            .expect("an event within 10 s")
            .unwrap()
            .unwrap();
        if let Message::Text(text) = message {
            let event: Value = serde_json::from_str(&text).unwrap();
            if event["type"] == "io.drogue.event.v1" {
                return event;
            }
        }
    }
}

async fn webhook(server: &LocalRunner, path: &str, password: &str, body: &str) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(format!("{}{path}", server.base))
        .basic_auth("ttn-webhook@app1", Some(password))
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn ttn_uplinks_become_events_of_their_device() {
    let dir = tempfile::tempdir().unwrap();
    let server = LocalRunner::start(dir.path()).await;
    assert_eq!(
        server
            .post(APPS, &json!({"metadata": {"name": "app1"}}))
            .await,
        201
    );
    // the webhook's credential: a gateway for the LoRaWAN devices
    let devices = format!("{APPS}/app1/devices");
    let gateway = json!({"metadata": {"name": "ttn-webhook"}, "spec": {"authentication": {"credentials": [{"pass": "hook-secret"}]}}});
    assert_eq!(server.post(&devices, &gateway).await, 201);
    let v3_device = json!({"metadata": {"name": "eui-70b3d57ed0041234"}, "spec": {
        "gatewaySelector": {"matchNames": ["ttn-webhook"]},
        "lorawan": {"ports": {"15": {"data_schema": "urn:example:climate"}}},
        "ttn": {"payload": "fields"}
    }});
    assert_eq!(server.post(&devices, &v3_device).await, 201);
    let v2_device = json!({"metadata": {"name": "my-device"}, "spec": {
        "gatewaySelector": {"matchNames": ["ttn-webhook"]},
        "ttn": {"payload": "raw"}
    }});
    assert_eq!(server.post(&devices, &v2_device).await, 201);
    let token = server.admin_token();
    let mut socket = server
        .websocket("/stream/app1", token.split_once(':').unwrap())
        .await;

    // TTN v3: the decoded payload, the port as subject, LoRaWAN extensions
    assert_eq!(webhook(&server, "/ttn/v3", "hook-secret", V3).await.0, 202);
    let event = next_event(&mut socket).await;
    assert_eq!(event["device"], "eui-70b3d57ed0041234");
    assert_eq!(event["sender"], "ttn-webhook");
    assert_eq!(event["subject"], "15");
    assert_eq!(event["lorawanport"], "15");
    assert_eq!(event["hwaddr"], "260B1234");
    assert_eq!(event["dataschema"], "urn:example:climate");
    assert_eq!(event["time"], "2026-11-30T10:00:00.123456789Z");
    assert_eq!(event["data"], json!({"temperature": 21.5, "humidity": 40}));

    // TTN v2 (Drogue's `/ttn`): the raw frame
    assert_eq!(webhook(&server, "/ttn", "hook-secret", V2).await.0, 202);
    let event = next_event(&mut socket).await;
    assert_eq!(event["device"], "my-device");
    assert_eq!(event["subject"], "1");
    assert_eq!(event["lorawanretry"], "false");
    assert_eq!(event["datacontenttype"], "application/octet-stream");
    assert_eq!(event["data_base64"], "q80=");

    // not an uplink, not a message, a wrong password, a device the webhook does not serve
    let (status, body) = webhook(&server, "/ttn/v3", "hook-secret", V3_JOIN).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("InvalidRequest"))
    );
    let (status, _) = webhook(&server, "/ttn/v3", "hook-secret", "{not json").await;
    assert_eq!(status, 400);
    assert_eq!(webhook(&server, "/ttn/v3", "wrong", V3).await.0, 403);
    let stranger = V3.replace("eui-70b3d57ed0041234", "not-served");
    assert_eq!(
        webhook(&server, "/ttn/v3", "hook-secret", &stranger)
            .await
            .0,
        403
    );
    // none of these made an event
    assert!(
        tokio::time::timeout(Duration::from_secs(1), next_event(&mut socket))
            .await
            .is_err()
    );
}

/// A command for the LoRaWAN device, as the administrator: status and body.
async fn lora_command(server: &LocalRunner, name: &str, body: &'static [u8]) -> (u16, Value) {
    let token = server.admin_token();
    let (user, token) = token.split_once(':').unwrap();
    let response = reqwest::Client::new()
        .post(format!(
            "{}/api/command/v1alpha1/apps/app1/devices/eui-70b3d57ed0041234?command={name}",
            server.base
        ))
        .basic_auth(user, Some(token))
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (
        status,
        response.json::<Value>().await.unwrap_or(Value::Null),
    )
}

/// `app1` with the TTN webhook's gateway, whose commands go to TTN at `ttn`, and a
/// LoRaWAN device behind it.
async fn ttn_setup(server: &LocalRunner, ttn: std::net::SocketAddr) {
    let devices = format!("{APPS}/app1/devices");
    let gateway = json!({"metadata": {"name": "ttn-webhook"}, "spec": {
        "authentication": {"credentials": [{"pass": "hook-secret"}]},
        "commands": [{"external": {"type": "ttnv3",
            "url": format!("http://{ttn}/api/v3/as/applications/my-ttn-app/devices"),
            "headers": {"Authorization": "Bearer NNSXS.test-key"}}}]
    }});
    let device = json!({"metadata": {"name": "eui-70b3d57ed0041234"}, "spec": {
        "gatewaySelector": {"matchNames": ["ttn-webhook"]}
    }});
    assert_eq!(
        server
            .post(APPS, &json!({"metadata": {"name": "app1"}}))
            .await,
        201
    );
    assert_eq!(server.post(&devices, &gateway).await, 201);
    assert_eq!(server.post(&devices, &device).await, 201);
}

/// Commands for a LoRaWAN device go to TTN's downlink API (a loopback stand-in here,
/// which a runner reaches only when told it may), with TTN's path, key and body.
#[tokio::test]
async fn commands_for_ttn_devices_become_downlinks() {
    use axum::routing::post;
    let (seen, mut received) = tokio::sync::mpsc::unbounded_channel::<(String, String, Value)>();
    let stand_in = axum::Router::new().route(
        "/api/v3/as/applications/my-ttn-app/devices/{device}/down/replace",
        post(
            move |axum::extract::Path(device): axum::extract::Path<String>,
                  headers: axum::http::HeaderMap,
                  axum::Json(body): axum::Json<Value>| async move {
                let key = headers["authorization"].to_str().unwrap().to_owned();
                seen.send((device, key, body)).unwrap();
                "{}"
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ttn = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, stand_in).await });

    // a runner as strangers use it: the loopback endpoint is refused, nothing sent
    let dir = tempfile::tempdir().unwrap();
    let server = LocalRunner::start(dir.path()).await;
    ttn_setup(&server, ttn).await;
    let (status, body) = lora_command(&server, "port:2", b"\x05").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (406, Some("NotAcceptable")),
        "{body}"
    );
    assert!(received.try_recv().is_err());
    drop(server);

    // a test bed's: the downlink reaches the stand-in
    let dir = tempfile::tempdir().unwrap();
    let server = LocalRunner::start_with(dir.path(), &["--allow-private-command-targets"]).await;
    ttn_setup(&server, ttn).await;
    let (status, body) = lora_command(&server, "port:2", b"\x05").await;
    assert_eq!(status, 202, "{body}");
    let (device, key, downlink) = received.recv().await.unwrap();
    assert_eq!(device, "eui-70b3d57ed0041234");
    assert_eq!(key, "Bearer NNSXS.test-key");
    assert_eq!(
        downlink,
        json!({"downlinks": [{"f_port": 2, "frm_payload": "BQ=="}]})
    );
    // a named command goes as JSON on port 1
    assert_eq!(lora_command(&server, "led", b"on").await.0, 202);
    let (_, _, downlink) = received.recv().await.unwrap();
    assert_eq!(downlink["downlinks"][0]["f_port"], 1);
}
