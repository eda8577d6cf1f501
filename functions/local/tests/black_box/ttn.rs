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
