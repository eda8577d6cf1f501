//! A trust anchor is no first-come claim: a stranger may hold the same CA certificate in
//! an application of their own, and the rightful owner's devices keep authenticating
//! with their certificates (giving their application), into their application only.

use super::mqtt_client::{In, Options, connect};
use super::runner::{LocalRunner, Socket};
use super::tenants::post_as;
use drogue_tests::pki::{Issued, TestCa};
use serde_json::json;
use std::time::Duration;

const APPS: &str = "/api/registry/v1alpha1/apps";

/// Publishes telemetry over HTTPS with a client certificate, naming `application` or
/// not; the status.
async fn publish(server: &LocalRunner, identity: &Issued, application: Option<&str>) -> u16 {
    let https = reqwest::Client::builder()
        .identity(reqwest::Identity::from_pem(identity.identity_pem().as_bytes()).unwrap())
        .danger_accept_invalid_certs(true)
        .build()
        .unwrap();
    let query = application.map_or(String::new(), |a| format!("?application={a}"));
    https
        .post(format!("{}/v1/telemetry{query}", server.https))
        .json(&json!({"temp": 1}))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// The next device event on a stream (no connection nor registry event), within 10 s.
async fn next_event(socket: &mut Socket) -> serde_json::Value {
    loop {
        let event = any_event(socket).await;
        if event["type"] == "io.drogue.event.v1" && event["data"].get("connected").is_none() {
            return event;
        }
    }
}

async fn any_event(socket: &mut Socket) -> serde_json::Value {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
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

/// Asserts that no device event comes on a stream for `wait` (registry changes of the
/// stream's own application may).
async fn no_event(socket: &mut Socket, wait: Duration) {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, socket.next()).await {
            Err(_) => return,
            Ok(Some(Ok(Message::Text(text)))) => {
                let event: serde_json::Value = serde_json::from_str(&text).unwrap();
                assert_eq!(event["application"], "app2", "{text}");
                assert_eq!(event["type"], "io.drogue.registry.v1", "{text}");
            }
            Ok(Some(Ok(_))) => {}
            Ok(other) => panic!("the stream ended: {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_stranger_holding_the_same_ca_takes_nothing_from_its_owner() {
    let dir = tempfile::tempdir().unwrap();
    let server = LocalRunner::start(dir.path()).await;
    let ca = TestCa::new("shared", "Shared CA");
    let anchors = json!({"trustAnchors": {"anchors": [{"certificate": ca.anchor()}]}});

    // the owner (the administrator): app1 with the CA and dev1, which uses certificates
    let token = server.admin_token();
    let (user, token) = token.split_once(':').unwrap();
    let owner = (user.to_owned(), token.to_owned());
    let app1 = json!({"metadata": {"name": "app1"}, "spec": anchors});
    assert_eq!(post_as(&server, &owner, APPS, app1).await, 201);
    let dev1 = json!({"metadata": {"name": "dev1"}});
    let app1_devices = format!("{APPS}/app1/devices");
    assert_eq!(
        post_as(&server, &owner, &app1_devices, dev1.clone()).await,
        201
    );

    // a stranger uploads the same (public) CA certificate: accepted, and told nothing
    let made = server
        .post_json("/api/admin/v1alpha1/users/eve/tokens", &json!({}))
        .await;
    let eve = ("eve".to_owned(), made["token"].as_str().unwrap().to_owned());
    let app2 = json!({"metadata": {"name": "app2"}, "spec": anchors});
    assert_eq!(post_as(&server, &eve, APPS, app2).await, 201);
    let (_, app2) = server.get(&format!("{APPS}/app2")).await;
    let status = app2["status"].to_string();
    assert!(!status.contains("app1"), "{status}");

    let mut owners_stream = server.websocket("/stream/app1", (&owner.0, &owner.1)).await;
    let mut eves_stream = server.websocket("/stream/app2", (&eve.0, &eve.1)).await;

    // the owner's device publishes over HTTPS, with and without giving its application
    let identity = ca.issue("shared", "dev1", 2025, 2099);
    assert_eq!(publish(&server, &identity, Some("app1")).await, 202);
    assert_eq!(
        publish(&server, &identity, None).await,
        202,
        "only app1 has dev1"
    );
    for _ in 0..2 {
        let event = next_event(&mut owners_stream).await;
        assert_eq!(
            (event["application"].as_str(), event["device"].as_str()),
            (Some("app1"), Some("dev1"))
        );
    }

    // and over MQTT (the client id gives its application)
    let server_pem = std::fs::read_to_string(server.data_dir.join("tls/server.pem")).unwrap();
    let mqtt = |client_id: &str| {
        let mut options = Options::v5(client_id);
        options.tls = Some((
            server_pem.clone(),
            Some((identity.cert_pem.clone(), identity.key_pem.clone())),
        ));
        options
    };
    let mut device = connect(server.mqtts, mqtt("dev1@app1")).await.unwrap();
    device.publish("dt/app1/dev1/temp", true, b"2", None).await;
    assert_eq!(device.next_ack().await, In::PubAck("Success".into()));
    let event = next_event(&mut owners_stream).await;
    assert_eq!(
        (event["application"].as_str(), event["data"].clone()),
        (Some("app1"), json!(2))
    );
    device.disconnect().await;
    no_event(&mut eves_stream, Duration::from_secs(1)).await;

    // the stranger makes a device of the same name: a certificate that gives no
    // application is now ambiguous and refused; giving it works as before
    let app2_devices = format!("{APPS}/app2/devices");
    assert_eq!(post_as(&server, &eve, &app2_devices, dev1).await, 201);
    assert_eq!(publish(&server, &identity, None).await, 403, "ambiguous");
    assert_eq!(publish(&server, &identity, Some("app1")).await, 202);
    let event = next_event(&mut owners_stream).await;
    assert_eq!(event["application"], "app1");
    let mut device = connect(server.mqtts, mqtt("dev1@app1")).await.unwrap();
    device.publish("dt/app1/dev1/temp", true, b"3", None).await;
    assert_eq!(device.next_ack().await, In::PubAck("Success".into()));
    assert_eq!(next_event(&mut owners_stream).await["data"], json!(3));
    device.disconnect().await;
    no_event(&mut eves_stream, Duration::from_secs(1)).await;

    // an application that names nobody's device, or none of its anchors, refuses it
    assert_eq!(publish(&server, &identity, Some("app9")).await, 403);
    let app3 = json!({"metadata": {"name": "app3"}});
    assert_eq!(post_as(&server, &eve, APPS, app3).await, 201);
    assert_eq!(publish(&server, &identity, Some("app3")).await, 403);
    assert!(connect(server.mqtts, mqtt("dev1@app3")).await.is_err());

    // the owner's device also works hint-less again once only one application accepts
    // the certificate: the stranger's device now uses a password only
    let (_, stored) = server.get(&format!("{app2_devices}/dev1")).await;
    let mut changed = stored.clone();
    changed["spec"] = json!({"authentication": {"credentials": [{"pass": "x"}]}});
    let updated = reqwest::Client::new()
        .put(format!("{}{app2_devices}/dev1", server.base))
        .basic_auth(&eve.0, Some(&eve.1))
        .json(&changed)
        .send()
        .await
        .unwrap();
    assert!(updated.status().is_success(), "{}", updated.status());
    assert_eq!(publish(&server, &identity, None).await, 202);
    assert_eq!(next_event(&mut owners_stream).await["application"], "app1");
    no_event(&mut eves_stream, Duration::from_secs(1)).await;
}
