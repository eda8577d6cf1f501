//! A slow MQTT subscriber loses nothing the broker acknowledged: an application client
//! that stops acknowledging its QoS 1 messages while a device publishes thousands of
//! events falls behind its session's queue (4,096) and goes on from the event log; once
//! it acknowledges again it gets every event once, in the order a subscriber that kept
//! up got them (the log's order; the device's client may send a few out of its own
//! order), and once it has caught up it is routed live again.

use super::runner::LocalRunner;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::json;
use std::time::Duration;

/// More than the subscriber's 100 unacknowledged messages and its queue of 4,096.
const EVENTS: u64 = 6_000;

#[tokio::test]
async fn a_subscriber_that_stops_acknowledging_gets_everything_from_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let server = LocalRunner::start_with(dir.path(), &["--publish-rate", "0"]).await;
    let (user, key) = super::resume::setup(&server).await;
    let port = server.mqtt.port();
    let login = |client_id: &str, username: &str, password: &str| {
        let mut options = MqttOptions::new(client_id, "localhost", port);
        options.set_credentials(username, password);
        options.set_keep_alive(Duration::from_secs(30));
        options
    };

    // the application's subscriber acknowledges only when told to (a clean session)
    let mut options = login(&format!("{user}/slow"), &user, &key);
    options.set_manual_acks(true);
    let (subscriber, mut events) = AsyncClient::new(options, 10_000);
    subscriber
        .subscribe("app/app1", QoS::AtLeastOnce)
        .await
        .unwrap();
    let (received_tx, mut received) = tokio::sync::mpsc::unbounded_channel();
    let reader = tokio::spawn(async move {
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    if received_tx.send(p).is_err() {
                        break;
                    }
                }
                Ok(Event::Incoming(Packet::SubAck(s))) => {
                    assert!(
                        matches!(
                            s.return_codes[..],
                            [rumqttc::SubscribeReasonCode::Success(_)]
                        ),
                        "{s:?}"
                    );
                }
                Ok(_) => {}
                Err(e) => panic!("the subscriber's connection failed: {e:?}"),
            }
        }
    });
    // a subscriber that keeps up, for the order the events were routed in
    let options = login(&format!("{user}/fast"), &user, &key);
    let (fast, mut fast_events) = AsyncClient::new(options, 100);
    fast.subscribe("app/app1", QoS::AtLeastOnce).await.unwrap();
    let kept_up = tokio::spawn(async move {
        let mut numbers = Vec::new();
        while (numbers.len() as u64) < EVENTS {
            match fast_events.poll().await {
                Ok(Event::Incoming(Packet::Publish(p))) => numbers.extend(telemetry(&p.payload)),
                Ok(_) => {}
                Err(e) => panic!("the fast subscriber's connection failed: {e:?}"),
            }
        }
        numbers
    });
    tokio::time::sleep(Duration::from_millis(300)).await;

    // the device publishes every event at QoS 1; each one acknowledged is in the log
    let mut options = login("device1@app1", "device1@app1", "secret");
    options.set_inflight(100);
    let (device, mut device_events) = AsyncClient::new(options, 100);
    let publisher = tokio::spawn(async move {
        for n in 0..EVENTS {
            let payload = json!({ "n": n }).to_string();
            device
                .publish("telemetry", QoS::AtLeastOnce, false, payload)
                .await
                .unwrap();
        }
        device
    });
    let mut acknowledged = 0;
    while acknowledged < EVENTS {
        match tokio::time::timeout(Duration::from_secs(30), device_events.poll()).await {
            Ok(Ok(Event::Incoming(Packet::PubAck(_)))) => acknowledged += 1,
            Ok(Ok(_)) => {}
            Ok(Err(e)) => panic!("the device's connection failed after {acknowledged}: {e:?}"),
            Err(_) => panic!("only {acknowledged} of {EVENTS} publishes acknowledged"),
        }
    }
    let device = publisher.await.unwrap();

    // the subscriber fell behind: its subscription went on from the log (once the
    // routing got there), nothing dropped
    let mut fell_behind = 0;
    for _ in 0..100 {
        fell_behind = server.metric("drogue_mqtt_fell_behind_total").await;
        if fell_behind > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(fell_behind >= 1, "the slow subscriber fell behind");
    assert_eq!(server.metric("drogue_mqtt_dropped_total").await, 0);

    // acknowledging again, it gets every event once, in order
    let mut numbers = Vec::new();
    while (numbers.len() as u64) < EVENTS {
        let publish = tokio::time::timeout(Duration::from_secs(30), received.recv())
            .await
            .unwrap_or_else(|_| panic!("only {} of {EVENTS} events came", numbers.len()))
            .expect("the subscriber stays connected");
        subscriber.ack(&publish).await.unwrap();
        numbers.extend(telemetry(&publish.payload));
    }
    let expected = tokio::time::timeout(Duration::from_secs(30), kept_up)
        .await
        .expect("the fast subscriber gets every event")
        .unwrap();
    let mut distinct = expected.clone();
    distinct.sort_unstable();
    assert!(
        distinct.into_iter().eq(0..EVENTS),
        "the fast subscriber got each event once"
    );
    if numbers != expected {
        let at = numbers.iter().zip(&expected).position(|(a, b)| a != b);
        let mut sorted = numbers.clone();
        sorted.sort_unstable();
        sorted.dedup();
        panic!(
            "events out of order, missing or twice: first difference at {at:?} ({:?}), {} distinct of {EVENTS}",
            at.map(|i| &numbers[i.saturating_sub(3)..(i + 3).min(numbers.len())]),
            sorted.len()
        );
    }

    // caught up with the log, it is routed live again: events published one at a time
    // now come once each, in order, and the broker counts the subscription caught up
    for n in EVENTS..EVENTS + MORE {
        let payload = json!({ "n": n }).to_string();
        device
            .publish("telemetry", QoS::AtLeastOnce, false, payload)
            .await
            .unwrap();
        loop {
            match tokio::time::timeout(Duration::from_secs(30), device_events.poll()).await {
                Ok(Ok(Event::Incoming(Packet::PubAck(_)))) => break,
                Ok(Ok(_)) => {}
                Ok(Err(e)) => panic!("the device's connection failed at {n}: {e:?}"),
                Err(_) => panic!("publish {n} not acknowledged"),
            }
        }
        let publish = tokio::time::timeout(Duration::from_secs(30), received.recv())
            .await
            .unwrap_or_else(|_| panic!("event {n} did not come"))
            .expect("the subscriber stays connected");
        subscriber.ack(&publish).await.unwrap();
        assert_eq!(telemetry(&publish.payload), Some(n));
    }
    // (counted when the log's reader hands the subscription back, which may come just
    // after it delivered the last of these events itself)
    server
        .metric_reaches_at_least("drogue_mqtt_caught_up_total", 1)
        .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(received.try_recv().is_err(), "nothing came twice");
    reader.abort();
}

/// Events published one at a time once the subscriber has caught up.
const MORE: u64 = 100;

/// The `n` of a telemetry event (connection events are skipped).
fn telemetry(payload: &[u8]) -> Option<u64> {
    let event: serde_json::Value = serde_json::from_slice(payload).unwrap();
    (event["type"] == "io.drogue.event.v1").then(|| event["data"]["n"].as_u64().unwrap())
}
