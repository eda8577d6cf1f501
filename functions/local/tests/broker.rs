//! The local broker's acknowledgements with a real client: a QoS 1 publish is
//! acknowledged only once the event stream accepted the event. The stream here is one
//! the test holds back or fails at will.

#[path = "black_box/mqtt_client.rs"]
#[allow(dead_code)]
mod mqtt_client;
#[path = "black_box/mqtt_raw.rs"]
mod mqtt_raw;

use async_trait::async_trait;
use drogue_local::mqtt::backend::Backend;
use drogue_local::mqtt::hub::Hub;
use drogue_local::mqtt::sessions::SessionStore;
use drogue_local::mqtt::{Broker, Listeners};
use drogue_shared::access::Principal;
use drogue_shared::access::authz::AccessControl;
use drogue_shared::commands::CommandService;
use drogue_shared::device_auth::DeviceAuthenticator;
use drogue_shared::events::log::EventLog;
use drogue_shared::events::{EventSink, SinkError, StructuredEvent};
use drogue_shared::model::AppName;
use drogue_shared::mqtt::{MqttAuthorizer, MqttIngest};
use drogue_shared::registry::Registry;
use drogue_shared::store::Store;
use drogue_shared::store::embedded::EmbeddedStore;
use mqtt_client::{In, Options, connect};
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stream {
    Accepting,
    Holding,
    Failing,
}

/// An event stream that accepts, holds events back until told otherwise, or fails.
struct ControlledSink {
    state: watch::Receiver<Stream>,
    accepted: AtomicUsize,
    /// The data of events, in the order they took their place in the stream (accepted,
    /// or taken in order).
    data: std::sync::Mutex<Vec<String>>,
}

impl ControlledSink {
    /// Holds the event back while told to; fails it when told to.
    async fn released(&self) -> Result<(), SinkError> {
        let mut state = self.state.clone();
        let now = *state
            .wait_for(|s| *s != Stream::Holding)
            .await
            .expect("the test holds the sender");
        if now == Stream::Failing {
            return Err(SinkError::unavailable(std::io::Error::other(
                "the stream is down",
            )));
        }
        Ok(())
    }

    /// Events the test marks, once released: `"fail"` is failed (as by a log that cannot
    /// write), `"slow"` is accepted 300 ms after the others.
    async fn marked(&self, event: &cloudevents::Event) -> Result<(), SinkError> {
        let Some(cloudevents::Data::Json(serde_json::Value::String(mark))) = event.data() else {
            return Ok(());
        };
        match mark.as_str() {
            "fail" => Err(SinkError::unavailable(std::io::Error::other(
                "the stream failed this event",
            ))),
            "slow" => {
                tokio::time::sleep(Duration::from_millis(300)).await;
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// The data of the events published, in order: the device's connection events (JSON
    /// objects) aside.
    fn published(&self) -> Vec<String> {
        let data = self.data.lock().unwrap();
        data.iter()
            .filter(|d| !d.starts_with('{'))
            .cloned()
            .collect()
    }

    /// Notes the event's data in order, after an uneven latency: later events would
    /// overtake earlier ones if a connection's publishes were handled at the same time.
    async fn take(&self, event: &cloudevents::Event) {
        if let Some(cloudevents::Data::Json(value)) = event.data() {
            let wait = value.as_u64().map_or(0, |n| (n * 7) % 5);
            tokio::time::sleep(Duration::from_millis(wait)).await;
            self.data.lock().unwrap().push(value.to_string());
        }
    }
}

#[async_trait]
impl EventSink for ControlledSink {
    async fn publish_structured(&self, event: StructuredEvent) -> Result<(), SinkError> {
        let event = event.to_event().expect("a structured event reads back");
        self.released().await?;
        self.take(&event).await;
        self.accepted.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    /// As the local log does: the event's place is fixed as it is taken, and the
    /// connection's next publish may go on, before it is accepted (held back, failed or
    /// accepted as told).
    async fn publish_in_order(
        &self,
        event: StructuredEvent,
        sequenced: &(dyn Fn() + Send + Sync),
    ) -> Result<(), SinkError> {
        let event = event.to_event().expect("a structured event reads back");
        self.take(&event).await;
        sequenced();
        self.released().await?;
        self.marked(&event).await?;
        self.accepted.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

struct Fixture {
    broker: Broker,
    hub: Arc<Hub>,
    control: watch::Sender<Stream>,
    sink: Arc<ControlledSink>,
    _dir: tempfile::TempDir,
}

async fn start() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(dir.path().join("db")).unwrap());
    let mut admin = Principal::user("admin");
    admin.roles.push(AccessControl::DEFAULT_ADMIN_ROLE.into());
    let registry = Registry::new(store.clone(), AccessControl::default());
    let input = |v| serde_json::from_value(v).unwrap();
    registry
        .create_application(&admin, input(json!({"metadata": {"name": "app1"}})))
        .await
        .unwrap();
    registry
        .create_device(
            &admin,
            &AppName::parse("app1").unwrap(),
            input(json!({"metadata": {"name": "dev1"}, "spec": {"authentication": {"credentials": [{"pass": "p1"}]}}})),
        )
        .await
        .unwrap();
    let (control, state) = watch::channel(Stream::Accepting);
    let sink = Arc::new(ControlledSink {
        state,
        accepted: AtomicUsize::new(0),
        data: Default::default(),
    });
    let devices = DeviceAuthenticator::new(store.clone());
    let commands = CommandService::new(store.clone());
    let hub = Arc::new(Hub::default());
    let log = EventLog::open(dir.path().join("events.redb"), 100).unwrap();
    let backend = Backend {
        authorizer: MqttAuthorizer::new(devices.clone(), registry, None),
        ingest: MqttIngest::new(devices, sink.clone(), commands.clone(), "drogue"),
        applications: store,
        commands,
        sink: sink.clone(),
        hub: hub.clone(),
        instance: "drogue".into(),
        sessions: SessionStore::start(log.clone()).unwrap(),
        log,
        limiter: Default::default(),
        registry_changes: None,
    };
    let broker = Broker::start(
        backend,
        Listeners {
            tcp: Some(std::net::TcpListener::bind("127.0.0.1:0").unwrap()),
            tls: None,
            workers: 1,
        },
    )
    .unwrap();
    Fixture {
        broker,
        hub,
        control,
        sink,
        _dir: dir,
    }
}

/// dev1 connected over MQTT 5 or 3.1.1.
async fn device(addr: std::net::SocketAddr, v5: bool) -> mqtt_client::Client {
    let options = if v5 {
        Options::v5("dev1@app1")
    } else {
        Options::v3("dev1@app1")
    };
    connect(addr, options.login("dev1@app1", "p1"))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_qos1_publish_is_acknowledged_only_once_the_event_is_in_the_stream() {
    let f = start().await;
    let addr = f.broker.tcp_addr().unwrap();
    for v5 in [false, true] {
        let mut device = device(addr, v5).await;
        let before = f.sink.accepted.load(Ordering::SeqCst);
        f.control.send(Stream::Holding).unwrap();
        device.publish("dt/app1/dev1/temp", true, b"1", None).await;
        // no PUBACK while the stream holds the event back
        device.quiet(Duration::from_millis(700)).await;
        f.control.send(Stream::Accepting).unwrap();
        assert_eq!(device.next_ack().await, In::PubAck("Success".into()));
        assert_eq!(f.sink.accepted.load(Ordering::SeqCst), before + 1);
        device.disconnect().await;
    }
    f.broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_stream_gives_a_failure_puback_or_closes_the_connection() {
    let f = start().await;
    let addr = f.broker.tcp_addr().unwrap();

    let mut v5 = connect(addr, Options::v5("dev1@app1").login("dev1@app1", "p1"))
        .await
        .unwrap();
    f.control.send(Stream::Failing).unwrap();
    v5.publish("dt/app1/dev1/temp", true, b"1", None).await;
    assert_eq!(v5.next_ack().await, In::PubAck("UnspecifiedError".into()));
    // the connection stays up: once the stream is back, publishes are accepted again
    f.control.send(Stream::Accepting).unwrap();
    v5.publish("dt/app1/dev1/temp", true, b"2", None).await;
    assert_eq!(v5.next_ack().await, In::PubAck("Success".into()));
    v5.disconnect().await;

    // MQTT 3.1.1 has no failure PUBACK: the connection is closed, unacknowledged
    let mut v3 = connect(addr, Options::v3("dev1@app1").login("dev1@app1", "p1"))
        .await
        .unwrap();
    f.control.send(Stream::Failing).unwrap();
    v3.publish("dt/app1/dev1/temp", true, b"3", None).await;
    assert!(matches!(v3.next_ack().await, In::Closed(_)));
    f.broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_of_one_connection_reach_the_stream_in_order() {
    let f = start().await;
    let addr = f.broker.tcp_addr().unwrap();
    let mut device = connect(addr, Options::v5("dev1@app1").login("dev1@app1", "p1"))
        .await
        .unwrap();
    f.sink.data.lock().unwrap().clear();
    for i in 0..50 {
        device
            .publish("dt/app1/dev1/seq", true, i.to_string().as_bytes(), None)
            .await;
    }
    for _ in 0..50 {
        assert_eq!(device.next_ack().await, In::PubAck("Success".into()));
    }
    let expected: Vec<String> = (0..50).map(|i| i.to_string()).collect();
    assert_eq!(*f.sink.data.lock().unwrap(), expected);
    device.disconnect().await;
    f.broker.stop().await;
}

/// A publish refused by closing the connection (any refusal over MQTT 3.1.1, a QoS 0
/// one over MQTT 5) does not overtake the acknowledgements of the connection's earlier
/// publishes still being made durable: the client hears of every event that was kept
/// and sends nothing twice. The publishes after the refused one are not handled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_that_closes_the_connection_waits_for_the_earlier_acknowledgements() {
    let f = start().await;
    let addr = f.broker.tcp_addr().unwrap();
    for v5 in [false, true] {
        let mut device = device(addr, v5).await;
        f.sink.data.lock().unwrap().clear();
        f.control.send(Stream::Holding).unwrap();
        device.publish("dt/app1/dev1/temp", true, b"1", None).await;
        device.publish("dt/app1/dev1/temp", true, b"2", None).await;
        // another application's topic: refused, which closes the connection (QoS 1 over
        // MQTT 3.1.1, QoS 0 over MQTT 5)
        device.publish("dt/app2/dev1/temp", !v5, b"3", None).await;
        device.publish("dt/app1/dev1/temp", true, b"4", None).await;
        // the first two are held back: no PUBACK, and no close before them
        device.quiet(Duration::from_millis(700)).await;
        f.control.send(Stream::Accepting).unwrap();
        assert_eq!(device.next_ack().await, In::PubAck("Success".into()));
        assert_eq!(device.next_ack().await, In::PubAck("Success".into()));
        assert!(matches!(device.next_ack().await, In::Closed(_)));
        assert_eq!(f.sink.published(), ["1", "2"], "v5: {v5}");
    }
    f.broker.stop().await;
}

/// When the stream fails an event after its place was fixed (so the connection's next
/// publish already went on), the failure closes the connection only once that next
/// publish is answered too: no event the broker kept goes unacknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_event_closes_the_connection_after_the_publishes_already_handled() {
    let f = start().await;
    let addr = f.broker.tcp_addr().unwrap();
    for v5 in [false, true] {
        let mut device = device(addr, v5).await;
        f.control.send(Stream::Holding).unwrap();
        // (QoS 1 over MQTT 3.1.1, QoS 0 over MQTT 5: its failure closes the connection)
        device
            .publish("dt/app1/dev1/temp", !v5, br#""fail""#, None)
            .await;
        device
            .publish("dt/app1/dev1/temp", true, br#""slow""#, None)
            .await;
        // both have their place in the stream, held back
        device.quiet(Duration::from_millis(700)).await;
        f.control.send(Stream::Accepting).unwrap();
        assert_eq!(
            device.next_ack().await,
            In::PubAck("Success".into()),
            "v5: {v5}"
        );
        assert!(matches!(device.next_ack().await, In::Closed(_)));
    }
    f.broker.stop().await;
}

/// A packet the broker refuses before handling it (here a PUBLISH to a wildcard topic,
/// which MQTT forbids) ends the connection only after the PUBACKs of the publishes
/// before it, and nothing after it is read: the publish that follows is not handled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_protocol_error_waits_for_the_earlier_acknowledgements_and_ends_reading() {
    let f = start().await;
    let addr = f.broker.tcp_addr().unwrap();
    let mut socket = mqtt_raw::connect(addr, 4, ("dev1@app1", "dev1@app1", "p1")).await;
    f.sink.data.lock().unwrap().clear();
    f.control.send(Stream::Holding).unwrap();
    let publishes = [
        mqtt_raw::publish_qos1(4, "dt/app1/dev1/temp", 1, b"1"),
        mqtt_raw::publish_qos1(4, "dt/app1/#", 2, b"2"),
        mqtt_raw::publish_qos1(4, "dt/app1/dev1/temp", 3, b"3"),
    ]
    .concat();
    socket.write_all(&publishes).await.unwrap();
    // the first is held back: no PUBACK, and no close before it
    let early = tokio::time::timeout(
        Duration::from_millis(700),
        mqtt_raw::read_packet(&mut socket),
    )
    .await;
    assert!(early.is_err(), "nothing before the first PUBACK: {early:?}");
    f.control.send(Stream::Accepting).unwrap();
    assert_eq!(mqtt_raw::read_packet(&mut socket).await, [0x40, 0, 1]);
    let mut rest = Vec::new();
    let end = tokio::time::timeout(Duration::from_secs(5), socket.read_to_end(&mut rest)).await;
    assert!(
        matches!(end, Ok(Ok(0)) | Ok(Err(_))),
        "the connection ends, with nothing more: {end:?} {rest:?}"
    );
    assert_eq!(f.sink.published(), ["1"]);
    f.broker.stop().await;
}

/// Control packets written in one burst are answered in the order they came, for MQTT
/// 3.1.1 and 5: the readiness of the dispatcher and of its control stream between them
/// (vendor/ntex-mqtt, PATCHED.md item 7). Each is answered at its first poll, so the
/// control stream's buffer is not reached here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_packets_in_one_burst_are_answered_in_order() {
    let f = start().await;
    let addr = f.broker.tcp_addr().unwrap();
    for version in [4u8, 5] {
        let mut socket = mqtt_raw::connect(addr, version, ("dev1@app1", "dev1@app1", "p1")).await;
        let filter = "command/inbox/#";
        let burst = [
            subscribe_qos1(version, 1, filter),
            mqtt_raw::packet(0xC0, &[]),
            unsubscribe(version, 2, filter),
            mqtt_raw::packet(0xC0, &[]),
            subscribe_qos1(version, 3, filter),
        ]
        .concat();
        socket.write_all(&burst).await.unwrap();
        assert_eq!(
            answers(&mut socket, 5).await,
            [
                (0x90, Some(1)),
                (0xD0, None),
                (0xB0, Some(2)),
                (0xD0, None),
                (0x90, Some(3)),
            ],
            "MQTT version {version}"
        );
    }
    f.broker.stop().await;
}

/// A SUBSCRIBE with packet id `id` to `filter` at QoS 1.
fn subscribe_qos1(version: u8, id: u16, filter: &str) -> Vec<u8> {
    let mut body = id.to_be_bytes().to_vec();
    if version == 5 {
        body.push(0); // no properties
    }
    body.extend(mqtt_raw::string(filter));
    body.push(1);
    mqtt_raw::packet(0x82, &body)
}

/// An UNSUBSCRIBE with packet id `id` from `filter`.
fn unsubscribe(version: u8, id: u16, filter: &str) -> Vec<u8> {
    let mut body = id.to_be_bytes().to_vec();
    if version == 5 {
        body.push(0); // no properties
    }
    body.extend(mqtt_raw::string(filter));
    mqtt_raw::packet(0xA2, &body)
}

/// The next `n` packets as (packet type, packet id): the id of a SUBACK or UNSUBACK,
/// none for a PINGRESP. Each within 5 s.
async fn answers(socket: &mut tokio::net::TcpStream, n: usize) -> Vec<(u8, Option<u16>)> {
    let mut answers = Vec::new();
    for _ in 0..n {
        let answer = tokio::time::timeout(Duration::from_secs(5), mqtt_raw::read_packet(socket))
            .await
            .expect("every packet is answered");
        // (read_packet keeps the type and the body, not the remaining length)
        let id = (answer[0] != 0xD0).then(|| u16::from_be_bytes([answer[1], answer[2]]));
        answers.push((answer[0], id));
    }
    answers
}

/// Waits up to 5 s for `done`.
async fn eventually(mut done: impl FnMut() -> bool) -> bool {
    for _ in 0..50 {
        if done() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    done()
}

/// A client that leaves after its session was registered and before its CONNACK (here
/// the device's connection event waits on a stream held back) leaves no session behind,
/// where it would count against its owner's connections for good: the handshake goes
/// on to its end, and the connection it set up ends at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_gone_during_its_handshake_leaves_no_session_behind() {
    let f = start().await;
    let addr = f.broker.tcp_addr().unwrap();
    f.control.send(Stream::Holding).unwrap();
    // an MQTT 3.1.1 CONNECT (clean session, user name and password)
    let mut payload = Vec::new();
    for field in ["dev1@app1", "dev1@app1", "p1"] {
        payload.extend_from_slice(&(field.len() as u16).to_be_bytes());
        payload.extend_from_slice(field.as_bytes());
    }
    let mut packet = vec![0x10, (10 + payload.len()) as u8];
    packet.extend_from_slice(&[0, 4, b'M', b'Q', b'T', b'T', 4, 0xc2, 0, 60]);
    packet.extend_from_slice(&payload);
    let mut socket = tokio::net::TcpStream::connect(addr).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut socket, &packet)
        .await
        .unwrap();
    assert!(
        eventually(|| f.hub.sessions() == 1).await,
        "registered, waiting on the stream"
    );
    // the client leaves before its CONNACK
    drop(socket);
    tokio::time::sleep(Duration::from_millis(300)).await;
    f.control.send(Stream::Accepting).unwrap();
    assert!(
        eventually(|| f.hub.sessions() == 0).await,
        "{} session(s) left behind",
        f.hub.sessions()
    );
    let device = connect(addr, Options::v3("dev1@app1").login("dev1@app1", "p1"))
        .await
        .unwrap();
    assert_eq!(f.hub.sessions(), 1);
    device.disconnect().await;
    f.broker.stop().await;
}
