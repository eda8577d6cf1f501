//! A device's burst just before its connection ends is not lost: a device writes 2,000
//! QoS 0 publishes, then DISCONNECT or nothing, in one write and closes its socket at
//! once (as a device that wakes up, sends what it measured and sleeps again); an
//! application receives every one of them once, for MQTT 3.1.1 and 5. The burst spans
//! many reads of the broker, so publishes split between two reads are among them.
//! Over the device's rate limit, such a burst is handled at that rate after the close,
//! also when the device connects again meanwhile and takes its session over.
//!
//! `tests/bench/mqtt-burst.sh` measures the same against mosquitto.
//!
//! And a client faster than the broker is slowed down, not read ahead of: the broker
//! handles at most 16 publishes of a connection at once, however many one read brings,
//! and stops reading from it meanwhile. Those waiting on the device's rate limit when
//! its access ends (its password changed) are dropped, not taken.
//!
//! A connection's QoS 1 publishes written at once share the event log's commits (each
//! goes on once the one before is queued for the log, not once it is durable), and
//! still reach the device's PUBACKs and the application in the order sent.

use super::mqtt_client::{Options, connect};
use super::mqtt_raw::{self, packet, read_packet, string};
use super::runner::LocalRunner;
use std::collections::BTreeSet;
use std::time::Duration;
use std::time::Instant;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const BURST: u64 = 2_000;

/// Connects as dev1 (MQTT `version` 4 or 5), writes the burst `burst` of `count`
/// publishes (then DISCONNECT if asked) in one write and closes the socket.
async fn burst(server: &LocalRunner, version: u8, burst: u64, count: u64, disconnect: bool) {
    let mut socket = device(server, version).await;
    let mut data = Vec::new();
    for n in 0..count {
        data.extend(publish(
            version,
            format!(r#"{{"burst":{burst},"n":{n}}}"#).as_bytes(),
        ));
    }
    if disconnect {
        data.extend([0xE0, 0]);
    }
    socket.write_all(&data).await.unwrap();
    drop(socket);
}

/// A QoS 0 PUBLISH of dev1 on `dt/app1/dev1/burst`.
fn publish(version: u8, payload: &[u8]) -> Vec<u8> {
    let mut body = string("dt/app1/dev1/burst");
    if version == 5 {
        body.push(0); // no properties
    }
    body.extend_from_slice(payload);
    packet(0x30, &body)
}

/// dev1's connection, accepted.
async fn device(server: &LocalRunner, version: u8) -> TcpStream {
    mqtt_raw::connect(server.mqtt, version, ("dev1@app1", "dev1@app1", "secret")).await
}

/// Registers dev1 (password "secret") in app1.
async fn register(server: &LocalRunner) {
    let body = serde_json::json!({"metadata": {"name": "dev1"},
        "spec": {"authentication": {"credentials": [{"pass": "secret"}]}}});
    assert_eq!(
        server
            .post("/api/registry/v1alpha1/apps/app1/devices", &body)
            .await,
        201
    );
}

/// Receives the events of burst `number` until `count` distinct ones came or none came
/// for `quiet`; the numbers received, and how many came twice.
async fn receive(
    app: &mut super::mqtt_client::Client,
    number: u64,
    count: u64,
    quiet: Duration,
) -> (BTreeSet<u64>, usize) {
    let (mut got, mut twice) = (BTreeSet::new(), 0);
    while got.len() < count as usize {
        let Ok(event) = tokio::time::timeout(quiet, app.event()).await else {
            break;
        };
        let data = &event.json()["data"];
        if data["burst"] == number && !got.insert(data["n"].as_u64().unwrap()) {
            twice += 1;
        }
    }
    // a duplicate of the last ones would come right after them
    while let Ok(event) = tokio::time::timeout(Duration::from_millis(300), app.event()).await {
        let data = &event.json()["data"];
        if data["burst"] == number {
            twice += 1;
        }
    }
    (got, twice)
}

/// The application of app1, subscribed to its events.
async fn application(server: &LocalRunner) -> super::mqtt_client::Client {
    let (user, key) = super::resume::setup(server).await;
    register(server).await;
    let mut app = connect(
        server.mqtt,
        Options::v5(&format!("{user}/burst")).login(&user, &key),
    )
    .await
    .unwrap();
    assert!(app.subscribed("app/app1", false).await);
    app
}

#[tokio::test]
async fn a_burst_just_before_the_connection_ends_is_not_lost() {
    let dir = tempfile::tempdir().unwrap();
    // no rate limit: a burst over the device's rate would wait for it
    let server = LocalRunner::start_with(dir.path(), &["--publish-rate", "0"]).await;
    let mut app = application(&server).await;

    let mut number = 0;
    for version in [4, 5] {
        for disconnect in [true, false] {
            number += 1;
            burst(&server, version, number, BURST, disconnect).await;
            let (got, twice) = receive(&mut app, number, BURST, Duration::from_secs(10)).await;
            let missing: Vec<u64> = (0..BURST).filter(|n| !got.contains(n)).collect();
            assert!(
                missing.is_empty(),
                "MQTT {version}, DISCONNECT {disconnect}: {} of {BURST} missing, from {:?}",
                missing.len(),
                missing.first()
            );
            assert_eq!(twice, 0, "MQTT {version}: events received twice");
        }
    }
}

#[tokio::test]
async fn a_burst_over_the_rate_limit_is_handled_at_that_rate_after_the_close() {
    burst_at_two_a_second(false).await;
}

#[tokio::test]
async fn a_session_taken_over_while_its_closed_connection_drains_loses_nothing() {
    burst_at_two_a_second(true).await;
}

/// 20 publishes at 2 a second, written at once before the close; with `again`, the
/// device connects again with the same client id 1 s after the close, taking its session
/// over while the burst is handled. Every publish arrives once, at the rate.
async fn burst_at_two_a_second(again: bool) {
    let dir = tempfile::tempdir().unwrap();
    // 2 a second: the 16 publishes in flight when the last one is read take 8 s, more
    // than the broker waits for a closed connection's publishes without progress
    let server =
        LocalRunner::start_with(dir.path(), &["--publish-rate", "2", "--publish-burst", "1"]).await;
    let mut app = application(&server).await;
    const COUNT: u64 = 20;
    for version in [4, 5] {
        let started = Instant::now();
        burst(&server, version, u64::from(version), COUNT, false).await;
        let mut taking_over = None;
        if again {
            tokio::time::sleep(Duration::from_secs(1)).await;
            taking_over = Some(device(&server, version).await);
        }
        let (got, twice) =
            receive(&mut app, u64::from(version), COUNT, Duration::from_secs(8)).await;
        assert_eq!(
            got.len(),
            COUNT as usize,
            "MQTT {version}: received {got:?} of {COUNT}"
        );
        assert_eq!(twice, 0, "MQTT {version}: events received twice");
        // the rate held: the first at once, then one every half second
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(9_000),
            "MQTT {version}: {COUNT} publishes at 2 a second took only {took:?}"
        );
        drop(taking_over);
    }
}

#[tokio::test]
async fn a_client_faster_than_the_broker_is_not_read_ahead_of() {
    for version in [4, 5] {
        let dir = tempfile::tempdir().unwrap();
        // one publish a second: the broker handles 16 at a time and waits
        let server =
            LocalRunner::start_with(dir.path(), &["--publish-rate", "1", "--publish-burst", "1"])
                .await;
        super::resume::setup(&server).await;
        register(&server).await;
        let mut socket = device(&server, version).await;
        // 200 small publishes: one write, and within one read of the broker
        let one = publish(version, b"{}");
        let data: Vec<u8> = one.iter().copied().cycle().take(one.len() * 200).collect();
        socket.write_all(&data).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while server.metric("drogue_mqtt_publishes_in_flight").await < 16 {
            assert!(
                Instant::now() < deadline,
                "MQTT {version}: the broker did not take 16 publishes"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // (what would be read ahead would be in flight by now)
        tokio::time::sleep(Duration::from_millis(500)).await;
        let in_flight = server.metric("drogue_mqtt_publishes_in_flight").await;
        assert_eq!(
            in_flight, 16,
            "MQTT {version}: publishes in flight of a client sending 200 at once"
        );
        drop(socket);
    }
}

/// A QoS 1 PUBLISH of dev1 on `dt/app1/dev1/burst` with packet id `id`.
fn publish_qos1(version: u8, id: u16, payload: &[u8]) -> Vec<u8> {
    mqtt_raw::publish_qos1(version, "dt/app1/dev1/burst", id, payload)
}

/// A connection's QoS 1 publishes are kept in order without each waiting for the one
/// before to be durable: several of them share the event log's commits (its group
/// sync), and still reach the log, the application and the device's PUBACKs in the
/// order sent.
#[tokio::test]
async fn a_connections_qos1_publishes_share_commits_and_keep_their_order() {
    let dir = tempfile::tempdir().unwrap();
    let server = LocalRunner::start_with(dir.path(), &["--publish-rate", "0"]).await;
    let mut app = application(&server).await;
    const COUNT: u16 = 500;
    for version in [4, 5] {
        let mut socket = device(&server, version).await;
        let commits = server.metric("drogue_event_commits_total").await;
        let data: Vec<u8> = (1..=COUNT)
            .flat_map(|n| {
                publish_qos1(
                    version,
                    n,
                    format!(r#"{{"burst":{version},"n":{n}}}"#).as_bytes(),
                )
            })
            .collect();
        socket.write_all(&data).await.unwrap();
        for id in 1..=COUNT {
            let ack = tokio::time::timeout(Duration::from_secs(10), read_packet(&mut socket))
                .await
                .unwrap_or_else(|_| panic!("MQTT {version}: no PUBACK for {id}"));
            assert_eq!(ack[0], 0x40, "MQTT {version}: a PUBACK: {ack:?}");
            assert_eq!(
                u16::from_be_bytes([ack[1], ack[2]]),
                id,
                "MQTT {version}: PUBACKs in the order of the publishes"
            );
            // (MQTT 5: a reason code may follow, success)
            assert!(ack.len() == 3 || ack[3] == 0, "MQTT {version}: {ack:?}");
        }
        let grouped = server.metric("drogue_event_commits_total").await - commits;
        assert!(
            grouped < u64::from(COUNT) * 9 / 10,
            "MQTT {version}: {grouped} commits for {COUNT} publishes of one connection"
        );
        let mut order = Vec::new();
        while order.len() < usize::from(COUNT) {
            let event = tokio::time::timeout(Duration::from_secs(10), app.event())
                .await
                .unwrap_or_else(|_| panic!("MQTT {version}: {} of {COUNT} came", order.len()));
            let data = &event.json()["data"];
            if data["burst"] == u64::from(version) {
                order.push(data["n"].as_u64().unwrap());
            }
        }
        assert_eq!(
            order,
            (1..=u64::from(COUNT)).collect::<Vec<_>>(),
            "MQTT {version}: the application receives them in the order sent"
        );
        drop(socket);
    }
}

#[tokio::test]
async fn publishes_waiting_on_the_rate_limit_are_dropped_when_the_device_loses_its_access() {
    let dir = tempfile::tempdir().unwrap();
    // one publish every 3.3 s, the first at once
    let server = LocalRunner::start_with(
        dir.path(),
        &["--publish-rate", "0.3", "--publish-burst", "1"],
    )
    .await;
    let mut app = application(&server).await;
    const COUNT: u64 = 30;
    let mut socket = device(&server, 4).await;
    let connected = Instant::now();
    let mut data = Vec::new();
    for n in 0..COUNT {
        data.extend(publish(4, format!(r#"{{"burst":1,"n":{n}}}"#).as_bytes()));
    }
    socket.write_all(&data).await.unwrap();
    let (first, _) = receive(&mut app, 1, 2, Duration::from_secs(10)).await;
    assert_eq!(first.len(), 2, "the first publishes, at the device's rate");

    // the password changes (3.3 s after the connect): the broker decides a device's
    // access again at its session's next tick (every 5 s from its connect), when a
    // publish is 1.7 s into its wait for the rate limit and 15 wait behind it; none of
    // them may become an event
    let body = serde_json::json!({"metadata": {"name": "dev1", "application": "app1"},
        "spec": {"authentication": {"credentials": [{"pass": "changed"}]}}});
    let status = server
        .put("/api/registry/v1alpha1/apps/app1/devices/dev1", &body)
        .await;
    assert!(
        (200..300).contains(&status),
        "the password change: {status}"
    );
    let tick = Duration::from_secs(5);
    let ticks = connected.elapsed().as_nanos().div_ceil(tick.as_nanos());
    let revoked = connected + tick * u32::try_from(ticks).unwrap();

    let mut closed = false;
    let mut buf = [0; 64];
    let mut late = Vec::new();
    let mut received = first.len();
    // (one taken just before the decision may arrive just after it)
    let watched_until = revoked + Duration::from_secs(6);
    while Instant::now() < watched_until {
        tokio::select! {
            read = socket.read(&mut buf), if !closed => {
                // (an error is a reset: closed too)
                closed = !matches!(read, Ok(n) if n > 0);
            }
            // (in short waits: a wait for an event panics after 10 s)
            event = tokio::time::timeout(Duration::from_millis(500), app.event()) => {
                if let Ok(event) = event {
                    let data = &event.json()["data"];
                    if data["burst"] == 1 {
                        received += 1;
                        if Instant::now() > revoked + Duration::from_secs(1) {
                            late.push(data["n"].clone());
                        }
                    }
                }
            }
        }
    }
    assert!(
        closed,
        "the broker ends the connection of a device whose password changed"
    );
    assert!(
        late.is_empty(),
        "events taken after the device lost its access: {late:?} ({received} of {COUNT} in all)"
    );
    assert!(received < COUNT as usize, "{received} of {COUNT}");
}
