//! Devices publish over CoAP over DTLS (`coaps://`) with libcoap's `coap-client-openssl`
//! (Debian package libcoap3-bin): with the pre-shared key of their `psk` credential
//! (identity `device@application`), and with an X.509 client certificate issued by their
//! application's trust anchor. A wrong key, a disabled device or a device without a
//! `psk` credential gets no session, so no answer.

use super::runner::{LocalRunner, Socket};
use base64::Engine;
use drogue_tests::libcoap;
use drogue_tests::pki::TestCa;
use futures_util::StreamExt;
use serde_json::{Value, json};
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

const APPS: &str = "/api/registry/v1alpha1/apps";

/// Runs `coap-client-openssl` with these arguments; it gives up after 5 seconds.
async fn coaps_client(args: &[&str]) -> libcoap::Answer {
    libcoap::run(libcoap::DTLS, 5, args).await
}

async fn next_event(socket: &mut Socket) -> Value {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(10), socket.next())
            .await
            .expect("an event within 10 s")
            .expect("the stream is open")
            .unwrap();
        if let Message::Text(text) = message {
            let event: Value = serde_json::from_str(&text).unwrap();
            if event["type"] == "io.drogue.event.v1" {
                return event;
            }
        }
    }
}

/// No device event (registry change events aside) within a short while.
async fn no_event(socket: &mut Socket) {
    let deadline = tokio::time::Instant::now() + Duration::from_millis(700);
    while let Ok(next) = tokio::time::timeout_at(deadline, socket.next()).await {
        if let Some(Ok(Message::Text(text))) = next {
            let event: Value = serde_json::from_str(&text).unwrap();
            assert_ne!(
                event["type"], "io.drogue.event.v1",
                "no further event: {event}"
            );
        }
    }
}

fn psk(key: &str) -> Value {
    json!({"psk": {"key": base64::engine::general_purpose::STANDARD.encode(key)}})
}

#[tokio::test]
async fn devices_publish_over_coaps_with_a_pre_shared_key() {
    let dir = tempfile::tempdir().unwrap();
    let server = LocalRunner::start(dir.path()).await;
    assert_eq!(
        server
            .post(APPS, &json!({"metadata": {"name": "app1"}}))
            .await,
        201
    );
    let devices = format!("{APPS}/app1/devices");
    for device in [
        json!({"metadata": {"name": "dev1"}, "spec": {"authentication": {"credentials": [psk("dev1-key")]}}}),
        json!({"metadata": {"name": "off1"}, "spec": {"core": {"disabled": true}, "authentication": {"credentials": [psk("off1-key")]}}}),
        json!({"metadata": {"name": "pass1"}, "spec": {"authentication": {"credentials": [{"pass": "pass1-key"}]}}}),
    ] {
        assert_eq!(server.post(&devices, &device).await, 201, "{device}");
    }
    let admin = server.admin_token();
    let mut events = server
        .websocket("/stream/app1", admin.split_once(':').unwrap())
        .await;
    let url = format!("coaps://{}/v1/telemetry/room", server.coaps);

    // the right key: 2.04, and the event of dev1 in app1
    let answer = coaps_client(&[
        "-m",
        "post",
        "-u",
        "dev1@app1",
        "-k",
        "dev1-key",
        "-e",
        r#"{"temp":3}"#,
        &url,
    ])
    .await;
    assert_eq!(answer.code(), Some("2.04"), "{}", answer.output);
    let event = next_event(&mut events).await;
    assert_eq!(event["application"], "app1");
    assert_eq!(event["device"], "dev1");
    assert_eq!(event["subject"], "telemetry");
    assert_eq!(event["data"], json!({"temp": 3}));

    // credentials in option 4209 besides the PSK: refused
    let basic = base64::engine::general_purpose::STANDARD.encode("pass1@app1:pass1-key");
    let answer = coaps_client(&[
        "-m",
        "post",
        "-u",
        "dev1@app1",
        "-k",
        "dev1-key",
        "-O",
        &format!("4209,Basic {basic}"),
        "-e",
        "x",
        &url,
    ])
    .await;
    assert_eq!(answer.code(), Some("4.03"), "{}", answer.output);

    // a wrong key, a disabled device, a device without a psk, an unknown application:
    // the handshake fails, no answer
    for (identity, key) in [
        ("dev1@app1", "wrong-key"),
        ("off1@app1", "off1-key"),
        ("pass1@app1", "pass1-key"),
        ("dev1@nowhere", "dev1-key"),
    ] {
        let answer =
            coaps_client(&["-m", "post", "-u", identity, "-k", key, "-e", "x", &url]).await;
        assert_eq!(answer.code(), None, "{identity}: {}", answer.output);
    }
    no_event(&mut events).await;
}

#[tokio::test]
async fn devices_publish_over_coaps_with_a_client_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let server = LocalRunner::start(dir.path()).await;
    let ca = TestCa::new("app2", "App2 CA");
    let anchors = json!({"trustAnchors": {"anchors": [{"certificate": ca.anchor()}]}});
    assert_eq!(
        server
            .post(
                APPS,
                &json!({"metadata": {"name": "app2"}, "spec": anchors})
            )
            .await,
        201
    );
    assert_eq!(
        server
            .post(
                &format!("{APPS}/app2/devices"),
                &json!({"metadata": {"name": "dev2"}})
            )
            .await,
        201
    );
    let admin = server.admin_token();
    let mut events = server
        .websocket("/stream/app2", admin.split_once(':').unwrap())
        .await;
    let files = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let path = files.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    };
    let issued = ca.issue("app2", "dev2", 2025, 2099);
    let (cert, key) = (
        write("dev2.pem", &issued.cert_pem),
        write("dev2-key.pem", &issued.key_pem),
    );
    let url = format!("coaps://{}/v1/telemetry", server.coaps);

    let answer = coaps_client(&["-m", "post", "-c", &cert, "-j", &key, "-e", "42", &url]).await;
    assert_eq!(answer.code(), Some("2.04"), "{}", answer.output);
    let event = next_event(&mut events).await;
    assert_eq!(event["application"], "app2");
    assert_eq!(event["device"], "dev2");

    // a certificate of another CA: a session, but the publish is refused
    let stranger = TestCa::new("app2", "Stranger CA").issue("app2", "dev2", 2025, 2099);
    let (cert, key) = (
        write("stranger.pem", &stranger.cert_pem),
        write("stranger-key.pem", &stranger.key_pem),
    );
    let answer = coaps_client(&["-m", "post", "-c", &cert, "-j", &key, "-e", "43", &url]).await;
    assert_eq!(answer.code(), Some("4.03"), "{}", answer.output);
    no_event(&mut events).await;
}
