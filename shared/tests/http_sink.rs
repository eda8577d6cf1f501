//! The HTTP event sink (`K_SINK`) against a real HTTP server on loopback: what it sends
//! in binary mode, and that it reports a sink that refuses or cannot be reached.

use drogue_shared::events::http_sink::{HttpSink, HttpSinkConfig, parse_overrides};
use drogue_shared::events::{self, EventSink, Publish, SinkError};
use drogue_shared::model::{Metadata, Resource};
use drogue_tests::sink::{Received, Receiver};
use std::time::{Duration, Instant};

fn resource(name: &str, uid: &str) -> Resource {
    Resource {
        metadata: Metadata {
            name: name.into(),
            application: None,
            uid: uid.into(),
            creation_timestamp: chrono::Utc::now(),
            generation: 0,
            resource_version: "rv".into(),
            deletion_timestamp: None,
            finalizers: vec![],
            labels: Default::default(),
            annotations: Default::default(),
        },
        spec: Default::default(),
        status: Default::default(),
    }
}

/// A telemetry event of device `dev 1` (through gateway `gw`) of `my-app`.
fn telemetry(content_type: Option<&str>, body: &[u8]) -> events::StructuredEvent {
    let (app, device, gateway) = (
        resource("my-app", "a-uid"),
        resource("dev 1", "d-uid"),
        resource("gw", "g-uid"),
    );
    let publish = Publish {
        application: &app,
        device: &device,
        sender: &gateway,
        channel: "telemetry",
        suffix: None,
        content_type,
        data_schema: None,
        instance: "drogue",
        received: "2026-11-24T10:00:00.250Z".parse().unwrap(),
    };
    events::telemetry(&publish, body).unwrap()
}

fn sink(url: &str, timeout: Duration) -> HttpSink {
    let mut config = HttpSinkConfig::new(url).unwrap();
    config.timeout = timeout;
    HttpSink::new(config).unwrap()
}

/// The attributes every telemetry event of [`telemetry`] carries as `ce-` headers.
fn assert_drogue_headers(received: &Received, event: &events::StructuredEvent) {
    use cloudevents::AttributesReader;
    let event = event.to_event().expect("the event reads back");
    assert_eq!(received.header("ce-specversion"), "1.0");
    assert_eq!(received.header("ce-id"), event.id());
    assert_eq!(received.header("ce-type"), "io.drogue.event.v1");
    // the device's encoded name, its `%` encoded again as header values must be
    assert_eq!(received.header("ce-source"), "drogue://my-app/dev%25201");
    assert_eq!(received.header("ce-subject"), "telemetry");
    assert_eq!(received.header("ce-time"), "2026-11-24T10:00:00.250Z");
    assert_eq!(received.header("ce-instance"), "drogue");
    assert_eq!(received.header("ce-application"), "my-app");
    assert_eq!(received.header("ce-applicationuid"), "a-uid");
    assert_eq!(received.header("ce-device"), "dev%201");
    assert_eq!(received.header("ce-deviceuid"), "d-uid");
    assert_eq!(received.header("ce-sender"), "gw");
    assert_eq!(received.header("ce-senderuid"), "g-uid");
    assert_eq!(received.header("ce-partitionkey"), "my%252Dapp/dev%25201");
    assert!(received.headers.get("ce-datacontenttype").is_none());
    assert!(received.headers.get("ce-data").is_none());
}

#[tokio::test]
async fn json_telemetry_arrives_in_binary_mode() {
    let mut receiver = Receiver::start().await;
    let sink = sink(receiver.url(), Duration::from_secs(10));
    let event = telemetry(Some("application/json"), br#"{"temp": 21.5}"#);
    sink.publish_structured(event.clone())
        .await
        .expect("a 202 is acceptance");
    let received = receiver.next(Duration::from_secs(5)).await.expect("a POST");
    assert_eq!(received.path, "/");
    assert_drogue_headers(&received, &event);
    assert_eq!(received.header("content-type"), "application/json");
    let body: serde_json::Value = serde_json::from_slice(&received.body).unwrap();
    assert_eq!(body, serde_json::json!({"temp": 21.5}));
}

#[tokio::test]
async fn binary_telemetry_arrives_as_its_bytes() {
    let mut receiver = Receiver::start().await;
    receiver.answer(200);
    let sink = sink(receiver.url(), Duration::from_secs(10));
    let payload = [0xff, 0x00, 0x10, b'"', b'%'];
    let event = telemetry(None, &payload);
    sink.publish_structured(event.clone())
        .await
        .expect("a 200 is acceptance");
    let received = receiver.next(Duration::from_secs(5)).await.expect("a POST");
    assert_drogue_headers(&received, &event);
    assert_eq!(received.header("content-type"), "application/octet-stream");
    assert_eq!(&received.body[..], &payload[..], "the bytes as they came");

    let event = telemetry(Some("text/plain; charset=utf-8"), "grüß".as_bytes());
    sink.publish_structured(event.clone()).await.unwrap();
    let received = receiver.next(Duration::from_secs(5)).await.expect("a POST");
    assert_eq!(received.header("content-type"), "text/plain; charset=utf-8");
    assert_eq!(&received.body[..], "grüß".as_bytes());
}

#[tokio::test]
async fn overrides_are_added_to_every_event() {
    let mut receiver = Receiver::start().await;
    let mut config = HttpSinkConfig::new(receiver.url()).unwrap();
    config.overrides =
        parse_overrides(r#"{"extensions": {"cluster": "eu 1", "instance": "other"}}"#).unwrap();
    let sink = HttpSink::new(config).unwrap();
    sink.publish_structured(telemetry(None, b"{}"))
        .await
        .unwrap();
    let received = receiver.next(Duration::from_secs(5)).await.expect("a POST");
    assert_eq!(received.header("ce-cluster"), "eu%201");
    assert_eq!(received.header("ce-instance"), "other", "overrides win");
    assert_eq!(received.header("ce-application"), "my-app");
}

#[tokio::test]
async fn a_sink_that_does_not_accept_is_unavailable() {
    let mut receiver = Receiver::start().await;
    let sink = sink(receiver.url(), Duration::from_secs(10));
    for status in [500, 503, 404, 400, 301] {
        receiver.answer(status);
        let result = sink.publish_structured(telemetry(None, b"1")).await;
        let Err(SinkError::Unavailable(error)) = result else {
            panic!("{status}: {result:?}");
        };
        assert!(error.to_string().contains(&status.to_string()), "{error}");
        assert!(receiver.next(Duration::from_secs(5)).await.is_some());
    }
}

#[tokio::test]
async fn an_unreachable_sink_is_unavailable_within_the_timeout() {
    // nothing listens: refused at once
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let refused = sink(&format!("http://127.0.0.1:{port}/"), Duration::from_secs(2));
    let started = Instant::now();
    let result = refused.publish_structured(telemetry(None, b"1")).await;
    assert!(
        matches!(result, Err(SinkError::Unavailable(_))),
        "{result:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(2));

    // a sink that takes the connection and never answers: given up after the timeout
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = silent.local_addr().unwrap();
    let hold = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((stream, _)) = silent.accept().await {
            open.push(stream);
        }
    });
    let silent = sink(&format!("http://{address}/"), Duration::from_millis(500));
    let started = Instant::now();
    let result = silent.publish_structured(telemetry(None, b"1")).await;
    let elapsed = started.elapsed();
    assert!(
        matches!(result, Err(SinkError::Unavailable(_))),
        "{result:?}"
    );
    assert!(
        elapsed >= Duration::from_millis(450) && elapsed < Duration::from_secs(3),
        "{elapsed:?}"
    );
    hold.abort();
}
