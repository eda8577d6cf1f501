//! Tenants are strangers: what one tenant does to its own devices (costly password
//! hashes, wrong-password floods) does not slow another tenant's devices.

use super::runner::{LocalRunner, Socket};
use drogue_shared::model::credentials::MAX_BCRYPT_COST;
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

const APPS: &str = "/api/registry/v1alpha1/apps";

/// Eve's token, made by the administrator; eve owns nothing yet.
async fn eve(server: &LocalRunner) -> (String, String) {
    server.user("eve").await
}

/// Posts `body` to `path` as `who` (user, access token): the status.
pub(crate) async fn post_as(
    server: &LocalRunner,
    who: &(String, String),
    path: &str,
    body: serde_json::Value,
) -> u16 {
    reqwest::Client::new()
        .post(format!("{}{path}", server.base))
        .basic_auth(&who.0, Some(&who.1))
        .json(&body)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Latency percentiles (p50, p99) of `samples`.
fn percentiles(samples: &mut [Duration]) -> (Duration, Duration) {
    samples.sort();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    (at(0.5), at(0.99))
}

/// `rounds` publishes of the healthy device, one after the other: their latencies.
async fn publish_rounds(server: &LocalRunner, rounds: usize) -> Vec<Duration> {
    let http = reqwest::Client::new();
    let mut latencies = Vec::with_capacity(rounds);
    for i in 0..rounds {
        let started = Instant::now();
        let status = http
            .post(format!("{}/v1/temp", server.base))
            .basic_auth("healthy@app1", Some("hey-rodney"))
            .json(&json!({"i": i}))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16();
        latencies.push(started.elapsed());
        assert_eq!(status, 202, "the healthy device's publish {i}");
    }
    latencies
}

#[tokio::test]
async fn a_wrong_password_flood_on_a_costly_hash_does_not_slow_another_tenant() {
    let dir = tempfile::tempdir().unwrap();
    // no publish rate limit: the healthy device publishes as fast as it is answered
    let server = LocalRunner::start_with(dir.path(), &["--publish-rate", "0"]).await;
    let eve = eve(&server).await;

    // the administrator's application and healthy device
    assert_eq!(
        server
            .post(APPS, &json!({"metadata": {"name": "app1"}}))
            .await,
        201
    );
    let healthy = json!({"metadata": {"name": "healthy"}, "spec": {"authentication": {"credentials": [{"pass": "hey-rodney"}]}}});
    assert_eq!(
        server.post(&format!("{APPS}/app1/devices"), &healthy).await,
        201
    );

    // eve's device with the costliest hash allowed; a costlier one is refused
    assert_eq!(
        post_as(&server, &eve, APPS, json!({"metadata": {"name": "app2"}})).await,
        201
    );
    let costly = bcrypt::hash("right", MAX_BCRYPT_COST).unwrap();
    let too_costly = bcrypt::hash("right", 4)
        .unwrap()
        .replacen("$04$", "$17$", 1);
    let device = |hash: &str| json!({"metadata": {"name": "target"}, "spec": {"authentication": {"credentials": [{"pass": {"bcrypt": hash}}]}}});
    let devices = format!("{APPS}/app2/devices");
    assert_eq!(
        post_as(&server, &eve, &devices, device(&too_costly)).await,
        400
    );
    assert_eq!(post_as(&server, &eve, &devices, device(&costly)).await, 201);

    // the healthy device alone (its first publish verifies its password)
    // (100 rounds each in CI; DROGUE_FLOOD_ROUNDS=2000 for the figures in BENCHMARKS.md)
    let rounds = std::env::var("DROGUE_FLOOD_ROUNDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(100);
    publish_rounds(&server, 5).await;
    let mut alone = publish_rounds(&server, rounds).await;
    let (alone_p50, alone_p99) = percentiles(&mut alone);

    // eve floods her own device with wrong passwords, each one different
    let stop = Arc::new(AtomicBool::new(false));
    let (refused, other) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    // The attackers run on a runtime and thread of their own: on the test's runtime, the
    // healthy client's timings would include waiting for 32 attacker tasks to be polled.
    let url = format!("{}/v1/temp", server.base);
    let attack = {
        let (stop, refused, other) = (stop.clone(), refused.clone(), other.clone());
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let http = reqwest::Client::new();
                let mut attackers = Vec::new();
                for a in 0..32 {
                    let (stop, refused, other) = (stop.clone(), refused.clone(), other.clone());
                    let (url, http) = (url.clone(), http.clone());
                    attackers.push(tokio::spawn(async move {
                        let mut n = 0u64;
                        while !stop.load(Ordering::Relaxed) {
                            n += 1;
                            let sent = http
                                .post(&url)
                                .basic_auth("target@app2", Some(format!("wrong-{a}-{n}")))
                                .body("1")
                                .timeout(Duration::from_secs(30))
                                .send()
                                .await;
                            match sent.map(|r| r.status().as_u16()) {
                                Ok(403) => refused.fetch_add(1, Ordering::Relaxed),
                                _ => other.fetch_add(1, Ordering::Relaxed),
                            };
                        }
                    }));
                }
                for a in attackers {
                    a.await.unwrap();
                }
            })
        })
    };
    // under way: every attacker has had an answer
    let started = Instant::now();
    while refused.load(Ordering::Relaxed) < 32 && started.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut attacked = publish_rounds(&server, rounds).await;
    stop.store(true, Ordering::Relaxed);
    tokio::task::spawn_blocking(move || attack.join().unwrap())
        .await
        .unwrap();
    let (attacked_p50, attacked_p99) = percentiles(&mut attacked);
    println!(
        "healthy device alone: p50 {alone_p50:?}, p99 {alone_p99:?}; under attack: p50 {attacked_p50:?}, p99 {attacked_p99:?}; attack requests refused {}, otherwise answered {}",
        refused.load(Ordering::Relaxed),
        other.load(Ordering::Relaxed)
    );
    assert!(refused.load(Ordering::Relaxed) > 32, "the attack ran");
    assert_eq!(
        other.load(Ordering::Relaxed),
        0,
        "every wrong password gets a 403"
    );
    // On the async runtime, each wrong password held a runtime thread for a whole
    // bcrypt (~60 ms at cost 10), and the healthy device queued behind dozens of them.
    assert!(
        attacked_p50 < Duration::from_millis(100),
        "the healthy device's median publish under attack: {attacked_p50:?}"
    );

    // the right password still works for eve's device, after the flood
    let status = reqwest::Client::new()
        .post(format!("{}/v1/temp", server.base))
        .basic_auth("target@app2", Some("right"))
        .body("1")
        .send()
        .await
        .unwrap()
        .status()
        .as_u16();
    assert_eq!(status, 202);
}

/// State is bound to identities: commands left for a device of a deleted application
/// never reach a device of the same name in an application made again under the name,
/// by another tenant.
/// The administrator's app1, with `device` in it.
async fn app1_with(server: &LocalRunner, device: &serde_json::Value) {
    assert_eq!(
        server
            .post(APPS, &json!({"metadata": {"name": "app1"}}))
            .await,
        201
    );
    assert_eq!(
        server.post(&format!("{APPS}/app1/devices"), device).await,
        201
    );
}

/// The administrator deletes app1; `who` makes it again at once, with `device` in it.
async fn app1_made_anew_by(
    server: &LocalRunner,
    who: &(String, String),
    device: serde_json::Value,
) {
    let token = server.admin_token();
    let (user, token) = token.split_once(':').unwrap();
    let deleted = reqwest::Client::new()
        .delete(format!("{}{APPS}/app1", server.base))
        .basic_auth(user, Some(token))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status().as_u16(), 204);
    assert_eq!(
        post_as(server, who, APPS, json!({"metadata": {"name": "app1"}})).await,
        201
    );
    assert_eq!(
        post_as(server, who, &format!("{APPS}/app1/devices"), device).await,
        201
    );
}

#[tokio::test]
async fn a_recreated_name_sees_nothing_of_its_predecessor() {
    let dir = tempfile::tempdir().unwrap();
    let server = LocalRunner::start(dir.path()).await;
    let eve = eve(&server).await;
    let http = reqwest::Client::new();
    let device = json!({"metadata": {"name": "dev1"}, "spec": {"authentication": {"credentials": [{"pass": "p1"}]}}});

    // the administrator's app1/dev1 gets a command that waits an hour, then app1 goes
    app1_with(&server, &device).await;
    let token = server.admin_token();
    let (user, token) = token.split_once(':').unwrap();
    let dropped = http
        .post(format!(
            "{}/api/command/v1alpha1/apps/app1/devices/dev1?command=open-door&ttl=3600",
            server.base
        ))
        .basic_auth(user, Some(token))
        .body("secret")
        .send()
        .await
        .unwrap();
    assert_eq!(dropped.status().as_u16(), 202);
    // eve takes the name, and a device of the same name and password
    app1_made_anew_by(&server, &eve, device).await;
    let polled = http
        .post(format!("{}/v1/telemetry?ct=2", server.base))
        .basic_auth("dev1@app1", Some("p1"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(
        (
            polled.status().as_u16(),
            polled.headers().get("command").cloned()
        ),
        (202, None),
        "no command of the earlier app1/dev1"
    );

    // commands for the new device still arrive
    let dropped = http
        .post(format!(
            "{}/api/command/v1alpha1/apps/app1/devices/dev1?command=hello",
            server.base
        ))
        .basic_auth(&eve.0, Some(&eve.1))
        .body("hi")
        .send()
        .await
        .unwrap();
    assert_eq!(dropped.status().as_u16(), 202);
    let polled = http
        .post(format!("{}/v1/telemetry?ct=2", server.base))
        .basic_auth("dev1@app1", Some("p1"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(polled.status().as_u16(), 200);
    assert_eq!(polled.headers()["command"], "hello");
}

#[tokio::test]
async fn a_devices_live_connection_and_session_do_not_pass_to_a_stranger_taking_its_names() {
    use super::mqtt_client::{self, In, Options};
    use futures_util::StreamExt;
    let dir = tempfile::tempdir().unwrap();
    let server = LocalRunner::start(dir.path()).await;
    let eve = eve(&server).await;
    let device = json!({"metadata": {"name": "dev1"}, "spec": {"authentication": {"credentials": [{"pass": "p1"}]}}});
    app1_with(&server, &device).await;
    // the administrator's device, connected with a persistent session
    let options = || {
        Options::v5("dev1@app1")
            .login("dev1@app1", "p1")
            .persistent(600)
    };
    let mut old = mqtt_client::connect(server.mqtt, options()).await.unwrap();
    assert!(old.subscribed("command/inbox/#", false).await);
    old.publish("dt/app1/dev1/t", true, b"{}", None).await;
    assert_eq!(old.next_ack().await, In::PubAck("Success".into()));

    // app1 goes, and eve makes it again at once, with a device of the same name and
    // password, and watches its events
    app1_made_anew_by(&server, &eve, device).await;
    let mut watched = stream(&server, "app1", (&eve.0, &eve.1)).await;

    // the old connection's publishes are not the new device's, and it is closed
    old.publish("dt/app1/dev1/t", true, br#"{"old":true}"#, None)
        .await;
    match old.next_ack().await {
        In::PubAck(reason) => assert_ne!(reason, "Success"),
        In::Closed(_) => {}
        other => panic!("{other:?}"),
    }
    closed_by_recheck(&mut old).await;
    while let Ok(Some(message)) =
        tokio::time::timeout(Duration::from_millis(500), watched.next()).await
    {
        if let tokio_tungstenite::tungstenite::Message::Text(text) = message.unwrap() {
            assert!(
                !text.contains("old"),
                "eve got the old device's event: {text}"
            );
        }
    }

    // eve's device, connecting under the same client id, has no session of the old one
    let new = mqtt_client::connect(server.mqtt, options()).await.unwrap();
    assert!(
        !new.session_present,
        "the old device's session is not eve's"
    );
}

/// Between an application's deletion and the next recheck of its clients' access (5 s),
/// nothing of the application a stranger makes anew under its name reaches the old
/// owner's live clients, nor the other way round: not her subscribers the stranger's
/// events, not her device the stranger's commands, not the stranger's subscribers her
/// device's events; and her application client cannot command the new application.
#[tokio::test]
async fn an_application_made_anew_by_a_stranger_shares_nothing_with_the_old_ones_live_clients() {
    use super::mqtt_client::{self, In, Options};
    let dir = tempfile::tempdir().unwrap();
    let server = LocalRunner::start(dir.path()).await;
    let http = reqwest::Client::new();
    let alice = server.user("alice").await;
    let eve = eve(&server).await;
    let device = json!({"metadata": {"name": "dev1"}, "spec": {"authentication": {"credentials": [{"pass": "p1"}]}}});
    assert_eq!(
        post_as(&server, &alice, APPS, json!({"metadata": {"name": "app1"}})).await,
        201
    );
    let devices = format!("{APPS}/app1/devices");
    assert_eq!(
        post_as(&server, &alice, &devices, device.clone()).await,
        201
    );
    let alices = uid_of(&server, &alice, "app1").await;

    // alice's device, waiting for commands, and alice's application client, following
    // app1 (their accesses are decided again 5 s after they connect: what follows
    // happens before)
    let started = Instant::now();
    let mut old_device = mqtt_client::connect(
        server.mqtt,
        Options::v5("dev1@app1").login("dev1@app1", "p1"),
    )
    .await
    .unwrap();
    assert!(old_device.subscribed("command/inbox/#", false).await);
    assert!(old_device.subscribed("cmd/app1/dev1/#", false).await);
    let mut old_reader = mqtt_client::connect(
        server.mqtt,
        Options::v5("alice/reader").login("alice", &alice.1),
    )
    .await
    .unwrap();
    assert!(old_reader.subscribed("app/app1", false).await);
    // and one with a persistent session, yet to subscribe
    let mut old_late = mqtt_client::connect(
        server.mqtt,
        Options::v5("alice/late")
            .login("alice", &alice.1)
            .persistent(600),
    )
    .await
    .unwrap();

    // alice deletes app1; eve makes it anew at once, with a device of the same name and
    // password, and follows it
    let deleted = http
        .delete(format!("{}{APPS}/app1", server.base))
        .basic_auth(&alice.0, Some(&alice.1))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status().as_u16(), 204);
    assert_eq!(
        post_as(&server, &eve, APPS, json!({"metadata": {"name": "app1"}})).await,
        201
    );
    assert_eq!(post_as(&server, &eve, &devices, device).await, 201);
    let eves = uid_of(&server, &eve, "app1").await;
    let mut new_reader =
        mqtt_client::connect(server.mqtt, Options::v5("eve/reader").login("eve", &eve.1))
            .await
            .unwrap();
    assert!(new_reader.subscribed("app/app1", false).await);
    // (its subscription, QoS 1 in a persistent session, would follow app1 in the
    // event log from its newest event: not the app1 eve made)
    assert!(old_late.subscribed("app/app1", false).await);

    // eve's device publishes, and eve sends it a command
    let published = http
        .post(format!("{}/v1/t", server.base))
        .basic_auth("dev1@app1", Some("p1"))
        .json(&json!({"eve": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(published.status().as_u16(), 202);
    let event = new_reader.event().await;
    assert!(String::from_utf8_lossy(&event.payload).contains("eve"));
    let commanded = http
        .post(format!(
            "{}/api/command/v1alpha1/apps/app1/devices/dev1?command=secret",
            server.base
        ))
        .basic_auth(&eve.0, Some(&eve.1))
        .json(&json!({"for": "eve's device"}))
        .send()
        .await
        .unwrap();
    assert_eq!(commanded.status().as_u16(), 202);

    // alice's clients get nothing of eve's, while still connected (the readers only
    // the deletion of alice's app1)
    nothing_of(&mut old_reader, &eves, Duration::from_millis(300)).await;
    nothing_of(&mut old_late, &eves, Duration::from_millis(300)).await;
    old_device.quiet(Duration::from_millis(300)).await;
    // and alice's client may not command the application eve made
    old_reader
        .publish("command/app1/dev1/x", true, b"{}", None)
        .await;
    assert_eq!(old_reader.next().await, In::PubAck("NotAuthorized".into()));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the test ran past the first recheck ({:?}): it would show nothing",
        started.elapsed()
    );

    // the recheck then closes alice's device; its disconnect event is not eve's
    closed_by_recheck(&mut old_device).await;
    nothing_of(&mut new_reader, &alices, Duration::from_millis(500)).await;
}

/// One user's open event streams are bounded (`--max-streams-per-user`): a further one
/// is refused with 429 `QuotaExceeded`, until one of them ends; another user's are not.
#[tokio::test]
async fn a_users_open_streams_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let server = LocalRunner::start_with(dir.path(), &["--max-streams-per-user", "2"]).await;
    let eve = eve(&server).await;
    assert_eq!(
        post_as(&server, &eve, APPS, json!({"metadata": {"name": "app2"}})).await,
        201
    );
    assert_eq!(
        server
            .post(APPS, &json!({"metadata": {"name": "app1"}}))
            .await,
        201
    );
    let first = stream(&server, "app2", (&eve.0, &eve.1)).await;
    let mut second = stream(&server, "app2?group_id=g1", (&eve.0, &eve.1)).await;
    // (a plain GET past the quota is refused as no WebSocket request: 400)
    let open_another = || async {
        let response = reqwest::Client::new()
            .get(format!("{}/stream/app2", server.base))
            .basic_auth(&eve.0, Some(&eve.1))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json::<serde_json::Value>().await.unwrap())
    };
    let (status, body) = open_another().await;
    assert_eq!(status, 429);
    assert_eq!(body["error"], "QuotaExceeded", "{body}");
    // but a stream taking over her group's (as after a lost connection) goes on, once
    // the older one has ended
    assert_eq!(
        open_status(&server, "app2", "g1", (&eve.0, &eve.1)).await,
        101
    );
    assert_eq!(
        closed_within(&mut second, Duration::from_secs(5)).await,
        Some(4000)
    );
    // the administrator's streams are not eve's
    let admin = server.admin_token();
    let admin = admin.split_once(':').unwrap();
    let _admins = stream(&server, "app1", admin).await;
    let _admins_too = stream(&server, "app1", admin).await;
    // one of eve's ends: she may open another
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (status, body) = open_another().await;
        if status == 400 {
            break;
        }
        assert_eq!(status, 429, "{body}");
        assert!(Instant::now() < deadline, "the ended stream still counts");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// An application keeps at most 1,000 stream groups' positions: a stream of a further
/// new group is refused with 429, the existing groups and other applications' go on.
#[tokio::test]
async fn an_applications_stream_groups_are_bounded() {
    use futures_util::StreamExt;
    let dir = tempfile::tempdir().unwrap();
    let server = LocalRunner::start(dir.path()).await;
    for app in ["app1", "app2"] {
        assert_eq!(
            server.post(APPS, &json!({"metadata": {"name": app}})).await,
            201
        );
    }
    let admin = server.admin_token();
    let admin = admin.split_once(':').unwrap();
    // (16 at a time)
    let server = &server;
    futures_util::stream::iter(0..1000)
        .for_each_concurrent(16, |n| async move {
            assert_eq!(
                open_status(server, "app1", &format!("g{n}"), admin).await,
                101
            );
        })
        .await;
    assert_eq!(open_status(server, "app1", "g1000", admin).await, 429);
    assert_eq!(open_status(server, "app1", "g7", admin).await, 101);
    assert_eq!(open_status(server, "app2", "g1000", admin).await, 101);
}

/// The status of opening a stream of `app` in `group` as `who`: 101 when it opened.
async fn open_status(server: &LocalRunner, app: &str, group: &str, who: (&str, &str)) -> u16 {
    match server
        .try_websocket(&format!("/stream/{app}?group_id={group}"), who)
        .await
    {
        Ok(_) => 101,
        Err(status) => status,
    }
}

/// Waits (at most 12 s) for a recheck to close an MQTT connection as not authorized.
async fn closed_by_recheck(client: &mut super::mqtt_client::Client) {
    let closed = tokio::time::timeout(Duration::from_secs(12), async {
        loop {
            if let super::mqtt_client::In::Closed(why) = client.next().await {
                return why;
            }
        }
    })
    .await
    .expect("the connection is closed within a recheck");
    assert!(closed.contains("NotAuthorized"), "{closed}");
}

/// The `uid` of an application, as `who` reads it.
pub(super) async fn uid_of(server: &LocalRunner, who: &(String, String), app: &str) -> String {
    let read: serde_json::Value = reqwest::Client::new()
        .get(format!("{}{APPS}/{app}", server.base))
        .basic_auth(&who.0, Some(&who.1))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    read["metadata"]["uid"].as_str().unwrap().to_owned()
}

/// Asserts that nothing of the application with `uid` reaches `client` for `wait`.
async fn nothing_of(client: &mut super::mqtt_client::Client, uid: &str, wait: Duration) {
    let deadline = tokio::time::Instant::now() + wait;
    while let Ok(got) = tokio::time::timeout_at(deadline, client.next()).await {
        if let super::mqtt_client::In::Publish(p) = got {
            let payload = String::from_utf8_lossy(&p.payload);
            assert!(!payload.contains(uid), "a stranger's message: {payload}");
        }
    }
}

/// What clients leave behind is swept at start (and hourly): the saved MQTT sessions
/// that expired and the WebSocket groups of deleted applications; what is still to be
/// taken up stays.
#[tokio::test]
async fn expired_sessions_and_deleted_applications_groups_are_swept() {
    use super::mqtt_client::{self, Options};
    let dir = tempfile::tempdir().unwrap();
    let server = LocalRunner::start(dir.path()).await;
    let admin = server.admin_token();
    let (user, token) = admin.split_once(':').unwrap();
    for app in ["app1", "app2"] {
        assert_eq!(
            server.post(APPS, &json!({"metadata": {"name": app}})).await,
            201
        );
    }
    // a group of each application
    for app in ["app1", "app2"] {
        let socket = server
            .websocket(&format!("/stream/{app}?group_id=g1"), (user, token))
            .await;
        drop(socket);
    }
    // a session expiring a second after its client left, one kept for ten minutes
    for (name, expiry) in [("brief", 1), ("kept", 600)] {
        let mut client = mqtt_client::connect(
            server.mqtt,
            Options::v5(&format!("{user}/{name}"))
                .login(user, token)
                .persistent(expiry),
        )
        .await
        .unwrap();
        assert!(client.subscribed("app/app2", false).await);
        client.disconnect().await;
    }
    let deleted = reqwest::Client::new()
        .delete(format!("{}{APPS}/app1", server.base))
        .basic_auth(user, Some(token))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status().as_u16(), 204);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    server.stop("TERM").await;

    let server = LocalRunner::start(dir.path()).await;
    server
        .metric_reaches("drogue_housekeeping_sweeps_total", 1)
        .await;
    assert_eq!(
        server
            .metric("drogue_housekeeping_removed_total{kind=\"mqtt_session\"}")
            .await,
        1
    );
    assert_eq!(
        server
            .metric("drogue_housekeeping_removed_total{kind=\"websocket_group\"}")
            .await,
        1
    );
    let present = |name: &'static str| {
        mqtt_client::connect(
            server.mqtt,
            Options::v5(&format!("{user}/{name}"))
                .login(user, token)
                .persistent(600),
        )
    };
    assert!(present("kept").await.unwrap().session_present);
    assert!(!present("brief").await.unwrap().session_present);
}

/// A WebSocket stream of `app` as `user:token`.
async fn stream(server: &LocalRunner, app: &str, who: (&str, &str)) -> Socket {
    server.websocket(&format!("/stream/{app}"), who).await
}

/// Waits up to `within` for the server to close the stream; its close code, if it did.
async fn closed_within(socket: &mut Socket, within: Duration) -> Option<u16> {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, socket.next()).await {
            Err(_) => return None,
            Ok(Some(Ok(Message::Close(frame)))) => {
                return Some(frame.map_or(0, |f| u16::from(f.code)));
            }
            Ok(None) | Ok(Some(Err(_))) => return Some(0),
            Ok(Some(Ok(_))) => {}
        }
    }
}

/// Access is checked again on open streams: a removed member, a deleted token and a
/// deleted application each end the stream within the re-check period (5 s).
#[tokio::test]
async fn streams_end_when_access_ends() {
    let dir = tempfile::tempdir().unwrap();
    let server = LocalRunner::start(dir.path()).await;
    let http = reqwest::Client::new();
    let admin = server.admin_token();
    let admin = admin.split_once(':').unwrap();
    let eve = eve(&server).await;
    for app in ["app1", "app3"] {
        assert_eq!(
            server.post(APPS, &json!({"metadata": {"name": app}})).await,
            201
        );
    }
    // eve reads app1 as a member, and owns app2 which she follows with a second token
    let members = json!({"members": {"eve": {"role": "reader"}}});
    let set = http
        .put(format!(
            "{}/api/admin/v1alpha1/apps/app1/members",
            server.base
        ))
        .basic_auth(admin.0, Some(admin.1))
        .json(&members)
        .send()
        .await
        .unwrap();
    assert_eq!(set.status().as_u16(), 204);
    assert_eq!(
        post_as(&server, &eve, APPS, json!({"metadata": {"name": "app2"}})).await,
        201
    );
    let second: serde_json::Value = http
        .post(format!(
            "{}/api/tokens/v1alpha1?description=stream",
            server.base
        ))
        .basic_auth(&eve.0, Some(&eve.1))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let second_token = second["token"].as_str().unwrap().to_owned();
    let second_prefix = second["prefix"].as_str().unwrap().to_owned();

    let mut as_member = stream(&server, "app1", (&eve.0, &eve.1)).await;
    let mut with_token = stream(&server, "app2", (&eve.0, &second_token)).await;
    let mut of_deleted = stream(&server, "app3", admin).await;
    let mut unaffected = stream(&server, "app1", admin).await;

    let removed = http
        .put(format!(
            "{}/api/admin/v1alpha1/apps/app1/members",
            server.base
        ))
        .basic_auth(admin.0, Some(admin.1))
        .json(&json!({"members": {}}))
        .send()
        .await
        .unwrap();
    assert_eq!(removed.status().as_u16(), 204);
    let revoked = http
        .delete(format!(
            "{}/api/tokens/v1alpha1/{second_prefix}",
            server.base
        ))
        .basic_auth(&eve.0, Some(&eve.1))
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status().as_u16(), 204);
    let deleted = http
        .delete(format!("{}{APPS}/app3", server.base))
        .basic_auth(admin.0, Some(admin.1))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status().as_u16(), 204);

    // 1008: policy violation; within the 5 s period (and a little slack)
    let within = Duration::from_secs(8);
    let (member, token, app) = tokio::join!(
        closed_within(&mut as_member, within),
        closed_within(&mut with_token, within),
        closed_within(&mut of_deleted, within),
    );
    assert_eq!(member, Some(1008), "a removed member");
    assert_eq!(token, Some(1008), "a deleted token");
    assert_eq!(app, Some(1008), "a deleted application");
    assert_eq!(
        closed_within(&mut unaffected, Duration::from_secs(1)).await,
        None,
        "the owner's stream stays"
    );
}

/// A client that opens a TLS connection and says nothing holds it for the handshake
/// timeout (10 s) at most.
#[tokio::test]
async fn a_silent_tls_client_is_dropped() {
    use tokio::io::AsyncReadExt;
    let dir = tempfile::tempdir().unwrap();
    let server = LocalRunner::start(dir.path()).await;
    let port = server.https.rsplit(':').next().unwrap();
    let mut silent = tokio::net::TcpStream::connect(format!("127.0.0.1:{port}"))
        .await
        .unwrap();
    let started = Instant::now();
    let mut buffer = [0u8; 16];
    let read = tokio::time::timeout(Duration::from_secs(20), silent.read(&mut buffer)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "closed by the server: {read:?}"
    );
    assert!(
        started.elapsed() >= Duration::from_secs(9),
        "{:?}",
        started.elapsed()
    );
}

/// A device that sends many requests at once with its right password before it was ever
/// verified (a cold start, a gateway's connections) gets every one through, for one hash:
/// requests with a password already in line wait for its check instead of being refused
/// as a flood of guesses.
#[tokio::test]
async fn many_requests_of_one_device_at_once_cost_one_password_check() {
    let dir = tempfile::tempdir().unwrap();
    let server = LocalRunner::start_with(dir.path(), &["--publish-rate", "0"]).await;
    assert_eq!(
        server
            .post(APPS, &json!({"metadata": {"name": "app1"}}))
            .await,
        201
    );
    // a costly hash (~60 ms) so that every request arrives while the first is checked
    let costly = bcrypt::hash("right", MAX_BCRYPT_COST).unwrap();
    let device = json!({"metadata": {"name": "busy"}, "spec": {"authentication": {"credentials": [{"pass": {"bcrypt": costly}}]}}});
    assert_eq!(
        server.post(&format!("{APPS}/app1/devices"), &device).await,
        201
    );
    let checks = || server.metric("drogue_device_password_checks_total");
    let before = checks().await;
    let http = reqwest::Client::new();
    let requests = (0..32).map(|_| {
        http.post(format!("{}/v1/temp", server.base))
            .basic_auth("busy@app1", Some("right"))
            .body("1")
            .timeout(Duration::from_secs(30))
            .send()
    });
    let statuses: Vec<u16> = futures_util::future::join_all(requests)
        .await
        .into_iter()
        .map(|r| r.unwrap().status().as_u16())
        .collect();
    assert!(
        statuses.iter().all(|s| *s == 202),
        "every request accepted: {statuses:?}"
    );
    assert_eq!(checks().await - before, 1, "one password check for all");
    // other passwords are still limited while one is checked: of a flood of guesses at
    // once, those beyond the line are refused without a hash
    let guesses = (0..32).map(|n| {
        http.post(format!("{}/v1/temp", server.base))
            .basic_auth("busy@app1", Some(format!("wrong-{n}")))
            .body("1")
            .timeout(Duration::from_secs(30))
            .send()
    });
    let refused = futures_util::future::join_all(guesses)
        .await
        .into_iter()
        .filter(|r| r.as_ref().unwrap().status().as_u16() == 403)
        .count();
    assert_eq!(refused, 32, "every guess refused");
    // one running and eight waiting (more if they arrive spread over several hashes)
    let hashed = checks().await - before - 1;
    assert!(
        hashed < 32,
        "{hashed} of 32 guesses hashed: none refused at once"
    );
}

/// A stranger writing to the registry in a loop (devices made and changed in her own
/// application) makes no lookup of another tenant's device stale: its publishes go on
/// from the lookup remembered, with no registry read, where one change counter for the
/// whole registry made every tenant's devices read it again after each of her writes.
/// A write to the device's own application still makes its next publish read it.
#[tokio::test]
async fn a_strangers_registry_writes_make_no_lookup_of_another_tenant_stale() {
    let dir = tempfile::tempdir().unwrap();
    let server = LocalRunner::start_with(dir.path(), &["--publish-rate", "0"]).await;
    let eve = eve(&server).await;
    let device = json!({"metadata": {"name": "healthy"}, "spec": {"authentication": {"credentials": [{"pass": "hey-rodney"}]}}});
    app1_with(&server, &device).await;
    assert_eq!(
        post_as(&server, &eve, APPS, json!({"metadata": {"name": "eves"}})).await,
        201
    );
    let reads = || server.metric("drogue_device_lookup_reads_total");
    // a lookup is remembered for 5 s: a round that took longer decides nothing, and
    // is made again
    let mut decided = false;
    for round in 0..3 {
        // a write to app1 first: the next publish reads the registry, and what it read
        // is remembered from then on
        let fresh = json!({"metadata": {"name": format!("fresh{round}")}});
        assert_eq!(
            server.post(&format!("{APPS}/app1/devices"), &fresh).await,
            201
        );
        let before = reads().await;
        publish_rounds(&server, 1).await;
        let started = Instant::now();
        assert_eq!(reads().await, before + 1, "the write to app1 read again");
        let before = before + 1;
        for i in 0..10 {
            let name = format!("r{round}-{i}");
            let made = json!({"metadata": {"name": name, "labels": {"n": "1"}}});
            let path = format!("{APPS}/eves/devices");
            assert_eq!(post_as(&server, &eve, &path, made).await, 201);
            let changed = reqwest::Client::new()
                .put(format!("{}{path}/{name}", server.base))
                .basic_auth(&eve.0, Some(&eve.1))
                .json(&json!({"metadata": {"name": name, "application": "eves", "labels": {"n": "2"}}}))
                .send()
                .await
                .unwrap();
            assert!(
                changed.status().is_success(),
                "eve's change of {name}: {}",
                changed.status()
            );
        }
        publish_rounds(&server, 3).await;
        if started.elapsed() < Duration::from_secs(4) {
            assert_eq!(
                reads().await,
                before,
                "the stranger's 20 writes made the device read the registry again"
            );
            decided = true;
            break;
        }
    }
    assert!(decided, "no round within the lookup's 5 s");
    // a write to its own application: read again, once
    let before = reads().await;
    let other = json!({"metadata": {"name": "sibling"}});
    assert_eq!(
        server.post(&format!("{APPS}/app1/devices"), &other).await,
        201
    );
    publish_rounds(&server, 3).await;
    assert_eq!(reads().await, before + 1);
}
