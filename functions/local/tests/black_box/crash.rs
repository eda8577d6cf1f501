//! Nothing acknowledged is lost across a crash: `drogue-local` is killed (SIGKILL) while
//! MQTT QoS 1 devices and HTTP devices publish; after a restart on the same data
//! directory a resuming consumer receives every event whose publish was acknowledged
//! (PUBACK or 202), and the registry is intact.
//!
//! CI runs a few rounds; `DROGUE_CRASH_ROUNDS` asks for more (tests/bench/crash-loop.sh).

use super::mqtt_client::{Client, In, Options, connect};
use super::resume::setup;
use super::runner::LocalRunner;
use serde_json::{Value, json};
use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const APPS: &str = "/api/registry/v1alpha1/apps";
/// Publishing devices of each protocol.
const DEVICES: usize = 2;
/// The publishers go as fast as they are acknowledged: no rate limit.
const UNLIMITED: &[&str] = &["--publish-rate", "0"];

/// Publishes `{"m": "{prefix}-{i}"}` over MQTT 5 at QoS 1 until the connection ends;
/// every marker whose PUBACK said success goes into `acked`.
async fn mqtt_publisher(mut device: Client, prefix: String, acked: Arc<Mutex<Vec<String>>>) {
    for i in 0.. {
        let marker = format!("{prefix}-{i}");
        let body = json!({ "m": marker }).to_string();
        device
            .publish(&format!("dt/app1/{prefix}/t"), true, body.as_bytes(), None)
            .await;
        match device.next_ack().await {
            In::PubAck(reason) if reason == "Success" => acked.lock().unwrap().push(marker),
            _ => return,
        }
    }
}

/// Publishes over HTTP until the server is gone; every 202 goes into `acked`.
async fn http_publisher(base: String, device: String, acked: Arc<Mutex<Vec<String>>>) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    for i in 0.. {
        let marker = format!("{device}-{i}");
        let sent = http
            .post(format!("{base}/v1/telemetry"))
            .basic_auth(format!("{device}@app1"), Some("secret"))
            .json(&json!({ "m": marker }))
            .send()
            .await;
        match sent {
            Ok(answer) if answer.status().as_u16() == 202 => acked.lock().unwrap().push(marker),
            _ => return,
        }
    }
}

/// The markers a consumer receives until nothing has come for a while.
async fn drain_markers(consumer: &mut Client) -> HashSet<String> {
    let mut found = HashSet::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(2), consumer.event()).await {
            Ok(received) => {
                let event: Value = received.json();
                if let Some(marker) = event["data"]["m"].as_str() {
                    found.insert(marker.to_owned());
                }
            }
            Err(_) => return found,
        }
    }
}

async fn consumer(server: &LocalRunner, who: &(String, String)) -> Client {
    let options = Options::v5(&format!("{}/audit", who.0))
        .login(&who.0, &who.1)
        .persistent(3600);
    connect(server.mqtt, options).await.unwrap()
}

async fn devices(server: &LocalRunner) -> usize {
    let (status, list) = server.get(&format!("{APPS}/app1/devices")).await;
    assert_eq!(status, 200);
    list.as_array().unwrap().len()
}

/// One round: publishers until a SIGKILL, a restart, and the consumer's count.
async fn round(dir: &Path, round: usize, who: &(String, String)) -> (usize, usize) {
    let server = LocalRunner::start_with(dir, UNLIMITED).await;
    let before = devices(&server).await;
    let acked = Arc::new(Mutex::new(Vec::new()));
    let mut publishers = Vec::new();
    for d in 0..DEVICES {
        let name = format!("mqtt{d}");
        let device = connect(
            server.mqtt,
            Options::v5(&format!("{name}@app1")).login(&format!("{name}@app1"), "secret"),
        )
        .await
        .unwrap();
        publishers.push(tokio::spawn(mqtt_publisher(device, name, acked.clone())));
        publishers.push(tokio::spawn(http_publisher(
            server.base.clone(),
            format!("http{d}"),
            acked.clone(),
        )));
    }
    // let them publish for a while, varied from round to round
    tokio::time::sleep(Duration::from_millis(300 + 150 * (round as u64 % 4))).await;
    assert_eq!(server.stop("KILL").await, None, "killed by a signal");
    for publisher in publishers {
        tokio::time::timeout(Duration::from_secs(15), publisher)
            .await
            .expect("a publisher notices the crash")
            .unwrap();
    }
    let acked: Vec<String> = acked.lock().unwrap().clone();
    assert!(
        !acked.is_empty(),
        "something was published before the crash"
    );

    let server = LocalRunner::start(dir).await;
    assert_eq!(devices(&server).await, before, "the registry is intact");
    let mut consumer = consumer(&server, who).await;
    assert!(consumer.session_present, "the consumer's session survived");
    let received = drain_markers(&mut consumer).await;
    let lost: Vec<&String> = acked.iter().filter(|m| !received.contains(*m)).collect();
    eprintln!(
        "crash round {round}: acknowledged {}, received {} of them, lost {}",
        acked.len(),
        acked.len() - lost.len(),
        lost.len()
    );
    assert!(lost.is_empty(), "acknowledged but lost: {lost:?}");
    consumer.disconnect().await;
    server.stop("TERM").await;
    (acked.len(), received.len())
}

#[tokio::test]
async fn nothing_acknowledged_is_lost_when_the_runner_is_killed() {
    let rounds: usize = std::env::var("DROGUE_CRASH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let dir = tempfile::tempdir().unwrap();
    let who = {
        let server = LocalRunner::start(dir.path()).await;
        let who = setup(&server).await;
        for d in 0..DEVICES {
            for name in [format!("mqtt{d}"), format!("http{d}")] {
                let device = json!({"metadata": {"name": name},
                    "spec": {"authentication": {"credentials": [{"pass": "secret"}]}}});
                assert_eq!(
                    server.post(&format!("{APPS}/app1/devices"), &device).await,
                    201
                );
            }
        }
        // the consumer's persistent session, subscribed before any crash
        let mut consumer = consumer(&server, &who).await;
        assert!(consumer.subscribed("app/app1", false).await);
        consumer.disconnect().await;
        server.stop("TERM").await;
        who
    };
    let (mut acknowledged, mut received) = (0, 0);
    for r in 0..rounds {
        let (a, got) = round(dir.path(), r, &who).await;
        acknowledged += a;
        received += got;
    }
    eprintln!(
        "crash test: {rounds} rounds, {acknowledged} acknowledged, {received} received, 0 lost"
    );
}

/// A persistent session taken up again survives a SIGKILL right after: its
/// subscriptions are restored before the session is saved again, so no save in between
/// holds it without them.
#[tokio::test]
async fn a_session_taken_up_again_keeps_its_subscriptions_through_a_crash_right_after() {
    let dir = tempfile::tempdir().unwrap();
    let server = LocalRunner::start(dir.path()).await;
    let who = setup(&server).await;
    let mut first = consumer(&server, &who).await;
    assert!(first.subscribed("app/app1", false).await);
    first.disconnect().await;
    // taken up again, and the runner killed well within a save interval
    let again = consumer(&server, &who).await;
    assert!(again.session_present);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(server.stop("KILL").await, None, "killed by a signal");
    drop(again);

    let server = LocalRunner::start(dir.path()).await;
    let mut after = consumer(&server, &who).await;
    assert!(after.session_present, "the session survived");
    super::resume::publish(&server, [7]).await;
    let e = tokio::time::timeout(Duration::from_secs(5), after.event())
        .await
        .expect("the restored subscription delivers")
        .json();
    assert_eq!(e["data"], json!({"n": 7}));
    after.disconnect().await;
    server.stop("TERM").await;
}
