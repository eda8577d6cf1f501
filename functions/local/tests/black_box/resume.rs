//! Consumers that resume: a WebSocket stream with a `group_id`, and (in `mqtt`) MQTT
//! persistent sessions, get after a reconnect what was published meanwhile, in order.

use super::mqtt_client::{Client, In, Options, connect};
use super::runner::{LocalRunner, Socket};
use super::tenants::uid_of;
use futures_util::StreamExt;
use serde_json::{Value, json};
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

const APPS: &str = "/api/registry/v1alpha1/apps";

/// An application `app1` with a device `device1` (password `secret`); the admin.
pub async fn setup(server: &LocalRunner) -> (String, String) {
    app_with_device(server, "app1").await;
    let token = server.admin_token();
    let (user, key) = token.split_once(':').unwrap();
    (user.to_owned(), key.to_owned())
}

/// An application `app` with a device `device1` (password `secret`).
async fn app_with_device(server: &LocalRunner, app: &str) {
    assert_eq!(
        server.post(APPS, &json!({"metadata": {"name": app}})).await,
        201
    );
    let device = json!({"metadata": {"name": "device1"},
        "spec": {"authentication": {"credentials": [{"pass": "secret"}]}}});
    assert_eq!(
        server.post(&format!("{APPS}/{app}/devices"), &device).await,
        201
    );
}

/// Publishes `{"n": n}` for each `n` as device1 over HTTP; each is acknowledged (202).
pub async fn publish(server: &LocalRunner, numbers: impl IntoIterator<Item = u64>) {
    publish_to(server, "app1", numbers).await;
}

/// [`publish`] as `app`'s device1.
async fn publish_to(server: &LocalRunner, app: &str, numbers: impl IntoIterator<Item = u64>) {
    let http = reqwest::Client::new();
    let user = format!("device1@{app}");
    for n in numbers {
        let answer = http
            .post(format!("{}/v1/telemetry", server.base))
            .basic_auth(&user, Some("secret"))
            .json(&json!({ "n": n }))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status().as_u16(), 202);
    }
}

/// [`publish`], 32 at a time (in no set order).
async fn publish_concurrently(server: &LocalRunner, numbers: Vec<u64>) {
    let http = reqwest::Client::new();
    let url = format!("{}/v1/telemetry", server.base);
    futures_util::stream::iter(numbers)
        .map(|n| {
            let request = http
                .post(&url)
                .basic_auth("device1@app1", Some("secret"))
                .json(&json!({ "n": n }));
            async move {
                let answer = request.send().await.unwrap();
                assert_eq!(answer.status().as_u16(), 202);
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<()>>()
        .await;
}

/// The `n` of the next `count` telemetry events on the stream (other events skipped),
/// within 30 seconds.
async fn numbers(socket: &mut Socket, count: usize) -> Vec<u64> {
    let mut found = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while found.len() < count {
        let message = tokio::time::timeout_at(deadline, socket.next())
            .await
            .unwrap_or_else(|_| panic!("only {} of {count} events came: {found:?}", found.len()))
            .expect("the stream stays open")
            .unwrap();
        if let Message::Text(text) = message {
            let event: Value = serde_json::from_str(&text).unwrap();
            if event["type"] == "io.drogue.event.v1" {
                found.push(event["data"]["n"].as_u64().unwrap());
            }
        }
    }
    found
}

/// Whether the stream gets no telemetry event for a while.
async fn quiet(socket: &mut Socket) -> bool {
    numbers_within(socket, Duration::from_millis(500))
        .await
        .is_empty()
}

async fn numbers_within(socket: &mut Socket, within: Duration) -> Vec<u64> {
    let mut found = Vec::new();
    let deadline = tokio::time::Instant::now() + within;
    while let Ok(Some(Ok(message))) = tokio::time::timeout_at(deadline, socket.next()).await {
        if let Message::Text(text) = message {
            let event: Value = serde_json::from_str(&text).unwrap();
            if event["type"] == "io.drogue.event.v1" {
                found.push(event["data"]["n"].as_u64().unwrap());
            }
        }
    }
    found
}

/// Reads on for a while (no telemetry events coming), so that the client answers the
/// server's ping of what it read: its group's position moves there.
async fn acknowledge(socket: &mut Socket) {
    let more = numbers_within(socket, Duration::from_millis(2500)).await;
    assert!(more.is_empty(), "{more:?}");
}

#[tokio::test]
async fn a_websocket_group_resumes_where_it_left_off() {
    let dir = tempfile::tempdir().unwrap();
    let server = LocalRunner::start(dir.path()).await;
    let (user, key) = setup(&server).await;
    let who = (user.as_str(), key.as_str());
    let group = "/stream/app1?group_id=g1";

    // a new group starts at the newest event: what came before is not its
    publish(&server, [1000]).await;
    let mut socket = server.websocket(group, who).await;
    publish(&server, [0]).await;
    assert_eq!(numbers(&mut socket, 1).await, [0]);
    acknowledge(&mut socket).await;
    socket.close(None).await.unwrap();
    drop(socket);

    // 100 events while nobody listens, then the group comes back
    publish(&server, 1..=100).await;
    let mut socket = server.websocket(group, who).await;
    let expected: Vec<u64> = (1..=100).collect();
    assert_eq!(numbers(&mut socket, 100).await, expected, "all, in order");
    assert!(quiet(&mut socket).await, "and nothing twice");
    publish(&server, [101]).await;
    assert_eq!(numbers(&mut socket, 1).await, [101], "then live events");

    // a second stream of the group takes over (the older one's client reads on: what it
    // read counts); a stream without a group is live only
    let mut plain = server.websocket("/stream/app1", who).await;
    let older = tokio::spawn(async move {
        tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                match socket.next().await {
                    Some(Ok(Message::Close(frame))) => return frame.map(|f| u16::from(f.code)),
                    Some(Ok(_)) => {}
                    _ => return None,
                }
            }
        })
        .await
    });
    let mut second = server.websocket(group, who).await;
    let closed = older
        .await
        .unwrap()
        .expect("the older stream of the group is closed");
    assert_eq!(closed, Some(4000));
    publish(&server, [102]).await;
    assert_eq!(numbers(&mut second, 1).await, [102]);
    assert_eq!(numbers(&mut plain, 1).await, [102]);

    // another group starts at the newest event
    let mut other = server.websocket("/stream/app1?group_id=g2", who).await;
    assert!(quiet(&mut other).await);
    publish(&server, [103]).await;
    assert_eq!(numbers(&mut other, 1).await, [103]);
}

#[tokio::test]
async fn a_group_of_a_deleted_application_does_not_resume_into_its_successor() {
    let dir = tempfile::tempdir().unwrap();
    let server = LocalRunner::start(dir.path()).await;
    let (user, key) = setup(&server).await;
    let who = (user.as_str(), key.as_str());
    let group = "/stream/app1?group_id=g1";
    let socket = server.websocket(group, who).await;
    drop(socket);
    publish(&server, [1, 2]).await;

    // app1 is deleted and made again, with a device of the same name
    let http = reqwest::Client::new();
    let deleted = http
        .delete(format!("{}{APPS}/app1", server.base))
        .basic_auth(&user, Some(&key))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status().as_u16(), 204);
    setup(&server).await;
    publish(&server, [3]).await;
    let mut socket = server.websocket(group, who).await;
    assert!(
        numbers_within(&mut socket, Duration::from_secs(1))
            .await
            .is_empty(),
        "the group is new for the new application: the old one's events are not shown"
    );
    publish(&server, [4]).await;
    assert_eq!(numbers(&mut socket, 1).await, [4]);
}

/// A group's position is what its client read (its pongs say so), not what the server
/// sent: a connection lost with events unread leaves them to the group's next stream.
#[tokio::test]
async fn a_websocket_group_keeps_what_a_lost_connection_left_unread() {
    let dir = tempfile::tempdir().unwrap();
    let server = LocalRunner::start(dir.path()).await;
    let (user, key) = setup(&server).await;
    let who = (user.as_str(), key.as_str());
    // one client's connection breaks (no Close), the other's Close comes before it
    // read what was sent
    let (lost, closed) = ("/stream/app1?group_id=lost", "/stream/app1?group_id=closed");
    let unread = server.websocket(lost, who).await;
    let mut closing = server.websocket(closed, who).await;
    // sent to clients that read none of it, past a save of the groups' positions
    publish(&server, 1..=50).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    drop(unread);
    closing.close(None).await.unwrap();
    drop(closing);
    let expected: Vec<u64> = (1..=50).collect();
    for group in [lost, closed] {
        let mut socket = server.websocket(group, who).await;
        assert_eq!(numbers(&mut socket, 50).await, expected, "{group}");
        assert!(quiet(&mut socket).await, "and nothing twice");
    }
}

/// A client that reads on, if slowly, through more than the client timeout's worth of
/// events is not taken for a silent one: each pong it sends as it gets to the pings sent
/// among the events shows it. The sockets' buffers (grown by the kernel) held up to
/// about 10 MB between the server and the client on the development machine, several
/// seconds of this client's reading: more than the timeout. It failed in every run
/// tried when only the pong of the last ping counts (the timeout running from the first
/// ping unanswered), and in four runs of six when pings go by time alone (a ping
/// waiting behind those buffers).
#[tokio::test]
async fn a_slow_reader_behind_a_backlog_is_not_closed() {
    const TIMEOUT: Duration = Duration::from_secs(2);
    let dir = tempfile::tempdir().unwrap();
    let options = ["--stream-client-timeout", "2"];
    let server = LocalRunner::start_with(dir.path(), &options).await;
    let (user, key) = setup(&server).await;
    let who = (user.as_str(), key.as_str());
    let group = "/stream/app1?group_id=g1";
    let mut socket = server.websocket(group, who).await;
    socket.close(None).await.unwrap();
    drop(socket);
    // 15 MB, read at about 1 MB a second
    publish_large(&server, 1..=250).await;
    let mut socket = server.websocket(group, who).await;
    let started = tokio::time::Instant::now();
    let mut read = Vec::new();
    while read.len() < 250 {
        read.extend(numbers(&mut socket, 5).await);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(
        started.elapsed() > TIMEOUT * 3 / 2,
        "{:?}",
        started.elapsed()
    );
    assert_eq!(read, (1..=250).collect::<Vec<u64>>());
    publish(&server, [251]).await;
    assert_eq!(
        numbers(&mut socket, 1).await,
        [251],
        "the same stream goes on"
    );
}

/// [`publish`], each event 60 KB.
async fn publish_large(server: &LocalRunner, numbers: impl IntoIterator<Item = u64>) {
    let http = reqwest::Client::new();
    let pad = "x".repeat(60_000);
    for n in numbers {
        let answer = http
            .post(format!("{}/v1/telemetry", server.base))
            .basic_auth("device1@app1", Some("secret"))
            .json(&json!({ "n": n, "pad": pad }))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status().as_u16(), 202);
    }
}

/// Opens a stream once the user's quota has room again, within `within`.
async fn open_when_free(
    server: &LocalRunner,
    path: &str,
    who: (&str, &str),
    within: Duration,
) -> Socket {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match server.try_websocket(path, who).await {
            Ok(socket) => return socket,
            Err(429) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(status) => panic!("the stream did not open in {within:?}: {status}"),
        }
    }
}

/// A server with a stream client timeout of 1 s and one stream per user, set up as by
/// [`setup`].
async fn impatient(dir: &std::path::Path) -> (LocalRunner, String, String) {
    let options = [
        "--stream-client-timeout",
        "1",
        "--max-streams-per-user",
        "1",
    ];
    let server = LocalRunner::start_with(dir, &options).await;
    let (user, key) = setup(&server).await;
    (server, user, key)
}

/// The client timeout of [`impatient`].
const TIMEOUT: Duration = Duration::from_secs(1);

/// Checks that the user's one stream, opened after `started`, still holds its place
/// unless the client timeout has passed.
async fn held_for_the_timeout(
    server: &LocalRunner,
    started: tokio::time::Instant,
    who: (&str, &str),
) {
    match server.try_websocket("/stream/app1", who).await {
        Err(status) => assert_eq!(status, 429),
        Ok(_) => assert!(
            started.elapsed() >= TIMEOUT,
            "a stream closed before the client timeout: {:?}",
            started.elapsed()
        ),
    }
}

/// A client that neither reads nor answers pings is closed after the client timeout,
/// which frees its place in its user's quota.
#[tokio::test]
async fn a_silent_stream_client_is_closed_and_frees_its_place() {
    let dir = tempfile::tempdir().unwrap();
    let (server, user, key) = impatient(dir.path()).await;
    let who = (user.as_str(), key.as_str());
    let started = tokio::time::Instant::now();
    let silent = server.websocket("/stream/app1", who).await;
    held_for_the_timeout(&server, started, who).await;
    let _next = open_when_free(&server, "/stream/app1", who, Duration::from_secs(10)).await;
    assert!(started.elapsed() >= TIMEOUT, "{:?}", started.elapsed());
    drop(silent);
}

/// A client that stops reading leaves the server's sends waiting once the connection's
/// buffers are full; such a send waits at most the client timeout, then the stream is
/// closed, and its group's next stream gets everything the client did not read.
#[tokio::test]
async fn a_stream_client_that_stops_reading_is_closed_and_its_group_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (server, user, key) = impatient(dir.path()).await;
    let who = (user.as_str(), key.as_str());
    let group = "/stream/app1?group_id=g1";
    let mut socket = server.websocket(group, who).await;
    socket.close(None).await.unwrap();
    drop(socket);
    // more than a loopback connection buffers, for the group
    publish_large(&server, 1..=200).await;
    let started = tokio::time::Instant::now();
    let stuck = open_when_free(&server, group, who, Duration::from_secs(10)).await;
    held_for_the_timeout(&server, started, who).await;
    let probe = open_when_free(&server, "/stream/app1", who, Duration::from_secs(10)).await;
    drop(probe);
    let mut socket = open_when_free(&server, group, who, Duration::from_secs(10)).await;
    let expected: Vec<u64> = (1..=200).collect();
    assert_eq!(numbers(&mut socket, 200).await, expected);
    drop(stuck);
}

/// A group none of whose streams was open for the group expiry is removed by the
/// housekeeping sweep (here the one at start): a stream of it starts afresh, at the
/// newest event. A group used since is kept.
#[tokio::test]
async fn a_group_unused_for_its_expiry_is_removed() {
    let dir = tempfile::tempdir().unwrap();
    // (the group used is swept within the expiry of its last use, a restart later)
    let options = ["--stream-group-expiry", "5"];
    let server = LocalRunner::start_with(dir.path(), &options).await;
    let (user, key) = setup(&server).await;
    let who = (user.as_str(), key.as_str());
    for group in ["old", "used"] {
        let mut socket = server
            .websocket(&format!("/stream/app1?group_id={group}"), who)
            .await;
        socket.close(None).await.unwrap();
    }
    // a group whose stream stays open (idle) through the expiry and to the restart
    let held = server.websocket("/stream/app1?group_id=held", who).await;
    publish(&server, [1]).await;
    tokio::time::sleep(Duration::from_secs(7)).await;
    let mut used = server.websocket("/stream/app1?group_id=used", who).await;
    assert_eq!(numbers(&mut used, 1).await, [1]);
    acknowledge(&mut used).await;
    used.close(None).await.unwrap();
    drop(used);
    publish(&server, [2]).await;
    server.stop("TERM").await;
    drop(held);

    let server = LocalRunner::start_with(dir.path(), &options).await;
    server
        .metric_reaches("drogue_housekeeping_sweeps_total", 1)
        .await;
    assert_eq!(
        server
            .metric("drogue_housekeeping_removed_total{kind=\"websocket_group\"}")
            .await,
        1,
        "the old group alone: the held one saved its position now and then"
    );
    let mut used = server.websocket("/stream/app1?group_id=used", who).await;
    assert_eq!(numbers(&mut used, 1).await, [2], "the group used resumes");
    let mut old = server.websocket("/stream/app1?group_id=old", who).await;
    assert!(quiet(&mut old).await, "the expired group starts afresh");
    publish(&server, [3]).await;
    assert_eq!(numbers(&mut old, 1).await, [3]);
}

/// Whether a file under `dir` with the extension `seg` (the event log's segments)
/// holds `bytes`.
fn in_segments(dir: &std::path::Path, bytes: &[u8]) -> bool {
    std::fs::read_dir(dir).unwrap().any(|entry| {
        let path = entry.unwrap().path();
        if path.is_dir() {
            in_segments(&path, bytes)
        } else {
            path.extension().is_some_and(|x| x == "seg")
                && std::fs::read(&path)
                    .is_ok_and(|data| data.windows(bytes.len()).any(|w| w == bytes))
        }
    })
}

/// The events of a deleted application leave the log at the housekeeping sweep (here
/// the one at start), and are erased from its files without waiting for another
/// event; another application's stay, and a group of it resumes over the restart.
#[tokio::test]
async fn a_deleted_applications_events_are_removed() {
    let dir = tempfile::tempdir().unwrap();
    let server = LocalRunner::start(dir.path()).await;
    let (user, key) = setup(&server).await;
    let who = (user.as_str(), key.as_str());
    app_with_device(&server, "app2").await;
    let mut group = server.websocket("/stream/app2?group_id=g1", who).await;
    group.close(None).await.unwrap();
    publish(&server, 1..=50).await;
    publish_to(&server, "app2", 1..=5).await;
    let owner = (user.clone(), key.clone());
    let (uid1, uid2) = (
        uid_of(&server, &owner, "app1").await,
        uid_of(&server, &owner, "app2").await,
    );
    assert!(in_segments(dir.path(), uid1.as_bytes()));
    server.metric_reaches("drogue_event_log_names", 2).await;
    let deleted = reqwest::Client::new()
        .delete(format!("{}{APPS}/app1", server.base))
        .basic_auth(&user, Some(&key))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status().as_u16(), 204);
    server.stop("TERM").await;

    let server = LocalRunner::start(dir.path()).await;
    server
        .metric_reaches("drogue_housekeeping_sweeps_total", 1)
        .await;
    let removed = server
        .metric("drogue_housekeeping_removed_total{kind=\"event\"}")
        .await;
    assert!(removed >= 50, "{removed} events removed");
    // (the newest of them too: a tombstone of its number, nothing of the event)
    let mut erased = false;
    for _ in 0..100 {
        if !in_segments(dir.path(), uid1.as_bytes()) {
            erased = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(erased, "the deleted application's events are still on disk");
    // no application has the name any more: the log forgets it for good
    server.metric_reaches("drogue_event_log_names", 1).await;
    assert!(in_segments(dir.path(), uid2.as_bytes()));
    let mut group = server.websocket("/stream/app2?group_id=g1", who).await;
    assert_eq!(numbers(&mut group, 5).await, [1, 2, 3, 4, 5]);
    group.close(None).await.unwrap();

    // a later application of the name: its group gets its events, through a restart too
    app_with_device(&server, "app1").await;
    let mut later = server.websocket("/stream/app1?group_id=g1", who).await;
    publish(&server, 1..=3).await;
    assert_eq!(numbers(&mut later, 3).await, [1, 2, 3]);
    server.metric_reaches("drogue_event_log_names", 2).await;
    acknowledge(&mut later).await;
    later.close(None).await.unwrap();
    server.stop("TERM").await;
    let server = LocalRunner::start(dir.path()).await;
    publish(&server, 4..=5).await;
    let mut later = server.websocket("/stream/app1?group_id=g1", who).await;
    assert_eq!(numbers(&mut later, 2).await, [4, 5]);
}

#[tokio::test]
async fn a_bad_group_id_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let server = LocalRunner::start(dir.path()).await;
    let (user, key) = setup(&server).await;
    let long = "g".repeat(129);
    let answer = reqwest::Client::new()
        .get(format!("{}/stream/app1?group_id={long}", server.base))
        .basic_auth(&user, Some(&key))
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status().as_u16(), 400);
    let body: Value = answer.json().await.unwrap();
    assert!(
        body["message"].as_str().unwrap().contains("group_id"),
        "{body}"
    );
}

/// The `n` of the next `count` telemetry events an MQTT client receives.
async fn mqtt_numbers(client: &mut Client, count: usize) -> Vec<u64> {
    let mut found = Vec::new();
    while found.len() < count {
        let event = client.event().await.json();
        if event["type"] == "io.drogue.event.v1" {
            found.push(event["data"]["n"].as_u64().unwrap());
        }
    }
    found
}

/// An application's MQTT client with a persistent session gets, after reconnecting,
/// everything published while it was away, in order, and then live events; without
/// subscribing again.
async fn an_mqtt_session_resumes(v5: bool, gone: usize) {
    let dir = tempfile::tempdir().unwrap();
    let server = LocalRunner::start(dir.path()).await;
    let (user, key) = setup(&server).await;
    let client_id = format!("{user}/consumer");
    let options = || {
        let options = if v5 {
            Options::v5(&client_id)
        } else {
            Options::v3(&client_id)
        };
        options.login(&user, &key)
    };

    let mut consumer = connect(server.mqtt, options().persistent(3600))
        .await
        .unwrap();
    assert!(!consumer.session_present, "a new session");
    assert!(consumer.subscribed("app/app1", false).await);
    publish(&server, [0]).await;
    assert_eq!(mqtt_numbers(&mut consumer, 1).await, [0]);
    if v5 {
        consumer.disconnect().await;
    } else {
        // an abrupt end keeps the session too
        consumer.kill();
    }

    let expected: Vec<u64> = (1..=gone as u64).collect();
    publish(&server, expected.iter().copied()).await;
    let mut consumer = connect(server.mqtt, options().persistent(3600))
        .await
        .unwrap();
    assert!(consumer.session_present, "the session is taken up again");
    assert_eq!(
        mqtt_numbers(&mut consumer, gone).await,
        expected,
        "everything missed, in order"
    );
    publish(&server, [1000]).await;
    assert_eq!(mqtt_numbers(&mut consumer, 1).await, [1000], "then live");
    consumer.disconnect().await;

    // a clean session discards the saved one
    let clean = connect(server.mqtt, options()).await.unwrap();
    assert!(!clean.session_present);
    clean.disconnect().await;
    publish(&server, [2000]).await;
    let mut again = connect(server.mqtt, options().persistent(3600))
        .await
        .unwrap();
    assert!(!again.session_present, "nothing was kept");
    again.quiet(Duration::from_millis(500)).await;
}

#[tokio::test]
async fn an_mqtt_5_session_resumes_after_a_disconnect() {
    an_mqtt_session_resumes(true, 100).await;
}

#[tokio::test]
async fn an_mqtt_3_session_resumes_after_the_connection_is_lost() {
    an_mqtt_session_resumes(false, 100).await;
}

/// MQTT 5: a connection without a clean start takes the session up, and with a session
/// expiry of 0 ends it with itself; it gets what was missed all the same.
#[tokio::test]
async fn an_mqtt_5_session_taken_up_for_one_connection_gets_what_it_missed() {
    let dir = tempfile::tempdir().unwrap();
    // (one device publishes thousands of events at once)
    let unlimited = ["--publish-rate", "1000000", "--publish-burst", "1000000"];
    let server = LocalRunner::start_with(dir.path(), &unlimited).await;
    let (user, key) = setup(&server).await;
    let client_id = format!("{user}/consumer");
    let options = || Options::v5(&client_id).login(&user, &key);
    let mut consumer = connect(server.mqtt, options().persistent(3600))
        .await
        .unwrap();
    assert!(consumer.subscribed("app/app1", false).await);
    publish(&server, [0]).await;
    assert_eq!(mqtt_numbers(&mut consumer, 1).await, [0]);
    consumer.disconnect().await;

    publish(&server, 1..=5).await;
    let mut once = connect(server.mqtt, options().persistent(0)).await.unwrap();
    assert!(once.session_present, "the session is taken up");
    assert_eq!(mqtt_numbers(&mut once, 5).await, [1, 2, 3, 4, 5]);
    publish(&server, [6]).await;
    assert_eq!(mqtt_numbers(&mut once, 1).await, [6], "then live");
    once.disconnect().await;

    // subscribed again, as many clients do after a CONNACK, the subscription goes on
    // where it was: far more than the session's queue holds comes, all of it
    let mut consumer = connect(server.mqtt, options().persistent(3600))
        .await
        .unwrap();
    assert!(
        !consumer.session_present,
        "the last one ended with its connection"
    );
    assert!(consumer.subscribed("app/app1", false).await);
    consumer.disconnect().await;
    let many: Vec<u64> = (100..5100).collect();
    publish_concurrently(&server, many.clone()).await;
    let mut once = connect(server.mqtt, options().persistent(0)).await.unwrap();
    // (events come before the SUBACK too)
    once.subscribe("app/app1", false).await;
    let (mut got, mut acked) = (Vec::new(), false);
    while got.len() < many.len() || !acked {
        match once.next().await {
            In::Publish(event) => got.push(event.json()["data"]["n"].as_u64().unwrap()),
            In::SubAck(codes) => {
                assert_eq!(codes, ["Success"]);
                acked = true;
            }
            other => panic!("{other:?} after {} events", got.len()),
        }
    }
    got.sort_unstable();
    assert_eq!(got, many, "everything missed");
    once.disconnect().await;

    // and it ended with that connection too
    publish(&server, [7]).await;
    let mut again = connect(server.mqtt, options().persistent(3600))
        .await
        .unwrap();
    assert!(!again.session_present, "nothing was kept");
    again.quiet(Duration::from_millis(500)).await;
}
