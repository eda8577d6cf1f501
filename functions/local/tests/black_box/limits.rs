//! Limits per device and per connection: the publish rate limit over HTTP and MQTT, the
//! quotas of devices per application and per user, a user's registry write rate, the
//! HTTP header read timeout, and connections per device.

use super::mqtt_client::{self, In, Options};
use super::runner::LocalRunner;
use super::tenants::post_as;
use futures_util::StreamExt;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

const APPS: &str = "/api/registry/v1alpha1/apps";

/// A rate small enough to reach in a test: 5 publishes per second, 10 at once.
const RATE: [&str; 4] = ["--publish-rate", "5", "--publish-burst", "10"];

/// A 429 answer's `Retry-After` (1 or 2 s at the rates of these tests) and its JSON
/// error, checked.
async fn too_many(answer: reqwest::Response) -> (u64, Value) {
    let retry: u64 = answer.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry), "Retry-After {retry}");
    let body: Value = answer.json().await.unwrap();
    assert_eq!(body["error"], "TooManyRequests", "{body}");
    (retry, body)
}

/// `app1` with password devices `dev1`, `dev2` and `dev3` (password `secret`).
async fn setup(server: &LocalRunner) {
    assert_eq!(
        server
            .post(APPS, &json!({"metadata": {"name": "app1"}}))
            .await,
        201
    );
    for name in ["dev1", "dev2", "dev3"] {
        let device = json!({"metadata": {"name": name}, "spec": {"authentication": {"credentials": [{"pass": "secret"}]}}});
        assert_eq!(
            server.post(&format!("{APPS}/app1/devices"), &device).await,
            201
        );
    }
}

/// The telemetry events (`data.i`) of `device` on the stream until it is quiet for 2 s.
async fn streamed(socket: &mut super::runner::Socket, device: &str) -> BTreeSet<u64> {
    let mut found = BTreeSet::new();
    while let Ok(Some(message)) = tokio::time::timeout(Duration::from_secs(2), socket.next()).await
    {
        if let Message::Text(text) = message.unwrap() {
            let event: Value = serde_json::from_str(&text).unwrap();
            if event["type"] == "io.drogue.event.v1" && event["device"] == device {
                found.insert(event["data"]["i"].as_u64().unwrap());
            }
        }
    }
    found
}

async fn http_publish(
    http: &reqwest::Client,
    server: &LocalRunner,
    device: &str,
    i: u64,
) -> reqwest::Response {
    http.post(format!("{}/v1/telemetry", server.base))
        .basic_auth(format!("{device}@app1"), Some("secret"))
        .json(&json!({ "i": i }))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn http_publishes_beyond_the_rate_get_429_and_others_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let server = LocalRunner::start_with(dir.path(), &RATE).await;
    setup(&server).await;
    let token = server.admin_token();
    let mut socket = server
        .websocket("/stream/app1", token.split_once(':').unwrap())
        .await;
    let http = reqwest::Client::new();
    // the first publish of each device verifies its password; it counts like any other
    assert_eq!(
        http_publish(&http, &server, "dev2", 1000).await.status(),
        202
    );

    let (mut accepted, mut limited) = (BTreeSet::new(), 0);
    let started = Instant::now();
    for i in 0..40 {
        let answer = http_publish(&http, &server, "dev1", i).await;
        match answer.status().as_u16() {
            202 => {
                accepted.insert(i);
            }
            429 => {
                limited += 1;
                let (_, body) = too_many(answer).await;
                assert_eq!(body["code"], 429);
            }
            other => panic!("publish {i}: {other}"),
        }
        // another device of the same tenant is not held back meanwhile
        if i % 10 == 0 {
            assert_eq!(
                http_publish(&http, &server, "dev2", 1001 + i)
                    .await
                    .status(),
                202
            );
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    assert!(accepted.len() >= 10, "the burst passes: {accepted:?}");
    assert!(
        (accepted.len() as f64) <= 10.0 + 5.0 * elapsed + 1.0,
        "{} accepted in {elapsed:.2} s",
        accepted.len()
    );
    assert!(
        limited > 0,
        "40 publishes in {elapsed:.2} s are over the rate"
    );

    // after a pause, the device publishes again
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        http_publish(&http, &server, "dev1", 100).await.status(),
        202
    );
    accepted.insert(100);

    // every accepted publish is in the stream, and no refused one
    assert_eq!(streamed(&mut socket, "dev1").await, accepted);
}

#[tokio::test]
async fn mqtt_publishes_beyond_the_rate_are_refused_or_wait() {
    let dir = tempfile::tempdir().unwrap();
    let server = LocalRunner::start_with(dir.path(), &RATE).await;
    setup(&server).await;
    let connect = |id: &str, v5: bool| {
        let options = if v5 {
            Options::v5(&format!("{id}@app1"))
        } else {
            Options::v3(&format!("{id}@app1"))
        };
        mqtt_client::connect(server.mqtt, options.login(&format!("{id}@app1"), "secret"))
    };
    let mut app = mqtt_client::connect(server.mqtt, {
        let token = server.admin_token();
        let (user, token) = token.split_once(':').unwrap();
        Options::v5(&format!("{user}/limits")).login(user, token)
    })
    .await
    .unwrap();
    assert!(app.subscribed("app/app1", false).await);

    // MQTT 5 QoS 1: beyond the burst, PUBACK "quota exceeded"; the connection stays
    let mut dev1 = connect("dev1", true).await.unwrap();
    let mut dev2 = connect("dev2", true).await.unwrap();
    let started = Instant::now();
    for i in 0..30u64 {
        let body = json!({ "i": i }).to_string();
        dev1.publish("dt/app1/dev1/t", true, body.as_bytes(), None)
            .await;
    }
    let mut acks = Vec::new();
    for _ in 0..30 {
        match dev1.next_ack().await {
            In::PubAck(reason) => acks.push(reason),
            other => panic!("expected a PUBACK, got {other:?}"),
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let success = acks.iter().filter(|r| *r == "Success").count();
    let refused = acks.iter().filter(|r| *r == "QuotaExceeded").count();
    assert_eq!(success + refused, 30, "{acks:?}");
    assert!(success >= 10, "the burst passes: {acks:?}");
    assert!(
        (success as f64) <= 10.0 + 5.0 * elapsed + 1.0,
        "{success} accepted in {elapsed:.2} s"
    );
    assert!(refused > 0, "{acks:?}");
    // meanwhile another device publishes as usual
    for i in 0..5u64 {
        let body = json!({ "i": 100 + i }).to_string();
        dev2.publish("dt/app1/dev2/t", true, body.as_bytes(), None)
            .await;
        assert_eq!(dev2.next_ack().await, In::PubAck("Success".into()));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    dev1.publish("dt/app1/dev1/t", true, br#"{"i": 99}"#, None)
        .await;
    assert_eq!(dev1.next_ack().await, In::PubAck("Success".into()));

    // every acknowledged publish reached the application, and no refused one
    let mut received = 0;
    loop {
        let Ok(event) = tokio::time::timeout(Duration::from_secs(2), app.event()).await else {
            break;
        };
        if event.json()["device"] == "dev1" {
            received += 1;
        }
    }
    assert_eq!(received, success + 1);

    // MQTT 3.1.1 cannot refuse: the publishes wait for the device's rate, none is lost,
    // and another device's publishes do not wait meanwhile
    let mut dev3 = connect("dev3", false).await.unwrap();
    let started = Instant::now();
    for i in 0..20u64 {
        let body = json!({ "i": i }).to_string();
        dev3.publish("dt/app1/dev3/t", true, body.as_bytes(), None)
            .await;
    }
    let other = Instant::now();
    for i in 0..5u64 {
        let body = json!({ "i": 200 + i }).to_string();
        dev2.publish("dt/app1/dev2/t", true, body.as_bytes(), None)
            .await;
        assert_eq!(dev2.next_ack().await, In::PubAck("Success".into()));
    }
    let other = other.elapsed();
    for _ in 0..20 {
        assert_eq!(dev3.next_ack().await, In::PubAck("Success".into()));
    }
    let shaped = started.elapsed();
    assert!(
        shaped >= Duration::from_millis(1500),
        "20 publishes at 5/s after a burst of 10 take about 2 s, not {shaped:?}"
    );
    assert!(
        other < Duration::from_millis(1500),
        "the other device waited {other:?}"
    );
    let mut received = BTreeSet::new();
    while let Ok(event) = tokio::time::timeout(Duration::from_secs(2), app.event()).await {
        let event = event.json();
        if event["device"] == "dev3" {
            received.insert(event["data"]["i"].as_u64().unwrap());
        }
    }
    assert_eq!(received, (0..20).collect());
}

#[tokio::test]
async fn an_application_holds_at_most_its_quota_of_devices() {
    let dir = tempfile::tempdir().unwrap();
    let server = LocalRunner::start_with(dir.path(), &["--max-devices-per-application", "2"]).await;
    let made = server
        .post_json("/api/admin/v1alpha1/users/eve/tokens", &json!({}))
        .await;
    let eve = ("eve", made["token"].as_str().unwrap().to_owned());
    let http = reqwest::Client::new();
    let devices = format!("{}{APPS}/app2/devices", server.base);
    let as_eve = |request: reqwest::RequestBuilder| request.basic_auth(eve.0, Some(&eve.1));
    let create =
        |name: &'static str| as_eve(http.post(&devices)).json(&json!({"metadata": {"name": name}}));
    let status = |r: reqwest::Response| r.status().as_u16();
    assert_eq!(
        status(
            as_eve(http.post(format!("{}{APPS}", server.base)))
                .json(&json!({"metadata": {"name": "app2"}}))
                .send()
                .await
                .unwrap()
        ),
        201
    );
    assert_eq!(status(create("d1").send().await.unwrap()), 201);
    assert_eq!(status(create("d2").send().await.unwrap()), 201);
    let refused = create("d3").send().await.unwrap();
    assert_eq!(refused.status().as_u16(), 429);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"], "QuotaExceeded", "{body}");
    let (_, listed) = server.get(&format!("{APPS}/app2/devices")).await;
    assert_eq!(listed.as_array().unwrap().len(), 2, "nothing was made");

    // administrators are not held by the quota; their devices count for the tenant
    assert_eq!(
        server
            .post(
                &format!("{APPS}/app2/devices"),
                &json!({"metadata": {"name": "a3"}})
            )
            .await,
        201
    );
    let delete = |name: &str| as_eve(http.delete(format!("{devices}/{name}"))).send();
    assert_eq!(status(delete("d1").await.unwrap()), 204);
    assert_eq!(status(create("d3").send().await.unwrap()), 429);
    assert_eq!(status(delete("d2").await.unwrap()), 204);
    assert_eq!(status(create("d3").send().await.unwrap()), 201);
}

/// A user writing to the registry faster than its rate (here 2 a second, 5 at once)
/// gets 429 with `Retry-After` and a JSON error, and nothing is made (an access token
/// neither); another user's
/// writes, and the administrator's, go on meanwhile; once the wait is over, the user
/// writes again.
#[tokio::test]
async fn registry_writes_beyond_a_users_rate_get_429_and_others_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let server = LocalRunner::start_with(
        dir.path(),
        &["--registry-write-rate", "2", "--registry-write-burst", "5"],
    )
    .await;
    let eve = server.user("eve").await;
    let bob = server.user("bob").await;
    let http = reqwest::Client::new();
    let write = |who: &(String, String), path: String, name: String| {
        http.post(format!("{}{path}", server.base))
            .basic_auth(&who.0, Some(&who.1))
            .json(&json!({"metadata": {"name": name}}))
            .send()
    };
    for (who, name) in [(&eve, "eves"), (&bob, "bobs")] {
        let app = json!({"metadata": {"name": name}});
        assert_eq!(post_as(&server, who, APPS, app).await, 201);
    }
    // eve's burst, then 429 (a few may pass as her bucket refills meanwhile)
    let (mut made, mut refused) = (0, None);
    for i in 0..20 {
        let answer = write(&eve, format!("{APPS}/eves/devices"), format!("d{i}"))
            .await
            .unwrap();
        match answer.status().as_u16() {
            201 => made += 1,
            429 => {
                refused = Some((i, answer));
                break;
            }
            other => panic!("eve's write {i}: {other}"),
        }
    }
    let (i, answer) = refused.expect("eve was never refused");
    // her access tokens are written under the same rate (at once: her next write is
    // half a second away)
    let token = http
        .post(format!("{}/api/tokens/v1alpha1", server.base))
        .basic_auth(&eve.0, Some(&eve.1))
        .send()
        .await
        .unwrap();
    assert_eq!(token.status(), 429, "eve's token while over her rate");
    assert!(
        (4..=8).contains(&made),
        "{made} writes before the first 429"
    );
    let (retry, _) = too_many(answer).await;
    let (status, _) = server.get(&format!("{APPS}/eves/devices/d{i}")).await;
    assert_eq!(status, 404, "the refused device was not made");
    // bob and the administrator are not held by eve's rate
    for n in 0..3 {
        let answer = write(&bob, format!("{APPS}/bobs/devices"), format!("b{n}"));
        assert_eq!(answer.await.unwrap().status(), 201, "bob's write {n}");
    }
    for n in 0..20 {
        let device = json!({"metadata": {"name": format!("a{n}")}});
        let path = format!("{APPS}/eves/devices");
        assert_eq!(
            server.post(&path, &device).await,
            201,
            "the administrator's {n}"
        );
    }
    // after the wait, eve writes again
    tokio::time::sleep(Duration::from_secs(retry)).await;
    let again = write(&eve, format!("{APPS}/eves/devices"), format!("d{i}"));
    assert_eq!(again.await.unwrap().status(), 201);
}

/// The devices of all applications a user owns count against that owner, whoever made
/// them (a member's count, an administrator's too though the administrator is not held);
/// a transfer that would put the new owner above the quota is refused, the devices move
/// with an accepted one, and an application's delete frees its devices' places.
#[tokio::test]
async fn a_user_owns_at_most_its_quota_of_devices() {
    let dir = tempfile::tempdir().unwrap();
    let server = LocalRunner::start_with(dir.path(), &["--max-devices-per-user", "3"]).await;
    let mut users = Vec::new();
    for name in ["alice", "bob"] {
        let made = server
            .post_json(
                &format!("/api/admin/v1alpha1/users/{name}/tokens"),
                &json!({}),
            )
            .await;
        users.push((name, made["token"].as_str().unwrap().to_owned()));
    }
    let (alice, bob) = (&users[0], &users[1]);
    let http = reqwest::Client::new();
    let base = &server.base;
    let send = |who: &(&str, String), request: reqwest::RequestBuilder| {
        let request = request.basic_auth(who.0, Some(&who.1));
        async move { request.send().await.unwrap() }
    };
    let create_app = |who, name: &'static str| {
        send(
            who,
            http.post(format!("{base}{APPS}"))
                .json(&json!({"metadata": {"name": name}})),
        )
    };
    let create = |who, app: &'static str, name: &'static str| {
        send(
            who,
            http.post(format!("{base}{APPS}/{app}/devices"))
                .json(&json!({"metadata": {"name": name}})),
        )
    };
    let delete = |who, path: String| send(who, http.delete(format!("{base}{path}")));
    let status = |r: reqwest::Response| r.status().as_u16();

    for app in ["a1", "a2"] {
        assert_eq!(status(create_app(alice, app).await), 201);
    }
    assert_eq!(status(create_app(bob, "b1").await), 201);
    assert_eq!(status(create(alice, "a1", "d1").await), 201);
    assert_eq!(status(create(alice, "a1", "d2").await), 201);
    assert_eq!(status(create(alice, "a2", "d3").await), 201);
    // the quota is the owner's, across its applications
    let refused = create(alice, "a2", "d4").await;
    assert_eq!(refused.status().as_u16(), 429);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"], "QuotaExceeded", "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("at most 3 devices"),
        "{body}"
    );
    let (_, listed) = server.get(&format!("{APPS}/a2/devices")).await;
    assert_eq!(listed.as_array().unwrap().len(), 1, "nothing was made");

    // a member's devices count against the owner
    let members = send(
        alice,
        http.get(format!("{base}/api/admin/v1alpha1/apps/a1/members")),
    )
    .await;
    let version = members.json::<Value>().await.unwrap()["resourceVersion"].clone();
    let set = json!({"resourceVersion": version, "members": {"bob": {"role": "manager"}}});
    assert_eq!(
        status(
            send(
                alice,
                http.put(format!("{base}/api/admin/v1alpha1/apps/a1/members"))
                    .json(&set)
            )
            .await
        ),
        204
    );
    assert_eq!(status(create(bob, "a1", "m1").await), 429, "alice's quota");
    assert_eq!(status(create(bob, "b1", "e1").await), 201, "bob's own");

    // administrators are not held; their devices count for the owner
    assert_eq!(
        server
            .post(
                &format!("{APPS}/a1/devices"),
                &json!({"metadata": {"name": "x1"}})
            )
            .await,
        201
    );
    assert_eq!(
        status(delete(alice, format!("{APPS}/a1/devices/d1")).await),
        204
    );
    assert_eq!(status(create(alice, "a2", "d4").await), 429, "3 with x1");

    // a transfer moves the devices: a1 (d2, x1) to bob, who then owns 3
    let transfer = |app: &'static str| {
        send(
            alice,
            http.put(format!(
                "{base}/api/admin/v1alpha1/apps/{app}/transfer-ownership"
            ))
            .json(&json!({"newUser": "bob"})),
        )
    };
    let accept = |app: &'static str| {
        send(
            bob,
            http.put(format!(
                "{base}/api/admin/v1alpha1/apps/{app}/accept-ownership"
            )),
        )
    };
    assert_eq!(status(transfer("a1").await), 204);
    assert_eq!(status(accept("a1").await), 204);
    assert_eq!(status(create(alice, "a2", "d4").await), 201, "alice owns 2");
    assert_eq!(status(create(bob, "b1", "e2").await), 429, "bob owns 3");

    // a transfer that would put bob above his quota is refused, and nothing moves
    assert_eq!(status(transfer("a2").await), 204);
    let refused = accept("a2").await;
    assert_eq!(refused.status().as_u16(), 429);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"], "QuotaExceeded", "{body}");
    let (_, a2) = server.get(&format!("{APPS}/a2")).await;
    assert_eq!(a2["metadata"]["name"], "a2");
    assert_eq!(
        status(create(alice, "a2", "d5").await),
        201,
        "still alice's"
    );
    assert_eq!(status(create(alice, "a2", "d6").await), 429, "alice owns 3");

    // deleting an application frees its devices' places
    assert_eq!(status(delete(bob, format!("{APPS}/a1")).await), 204);
    assert_eq!(status(create(bob, "b1", "e2").await), 201, "bob owns 2");
    assert_eq!(status(create(bob, "b1", "e3").await), 201, "bob owns 3");
    assert_eq!(status(create(bob, "b1", "e4").await), 429);
}

/// Sends a request line and a header, then nothing: how long until the server closes.
/// A partial request on `addr` (over TLS when `server_pem`, the server's certificate, is
/// given); how long until the server closes the connection.
async fn stalled(addr: &str, server_pem: Option<&str>) -> Duration {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let partial = b"GET / HTTP/1.1\r\nHost: x\r\n";
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 1024];
    let read = if let Some(pem) = server_pem {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject;
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
            roots.add(cert.unwrap()).unwrap();
        }
        let config = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let mut tls = connector.connect(name, tcp).await.unwrap();
        tls.write_all(partial).await.unwrap();
        tokio::time::timeout(Duration::from_secs(10), tls.read(&mut buf)).await
    } else {
        let mut tcp = tcp;
        tcp.write_all(partial).await.unwrap();
        tokio::time::timeout(Duration::from_secs(10), tcp.read(&mut buf)).await
    };
    match read {
        // closed (a 408 answer first is fine too; then the close follows)
        Ok(Ok(_) | Err(_)) => started.elapsed(),
        Err(_) => panic!("the server still holds the stalled connection after 10 s"),
    }
}

#[tokio::test]
async fn a_client_that_stalls_in_its_headers_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let server = LocalRunner::start_with(dir.path(), &["--header-read-timeout", "1"]).await;
    let http = server.base.trim_start_matches("http://").to_owned();
    let https = format!("127.0.0.1:{}", server.https.rsplit(':').next().unwrap());
    let pem = std::fs::read_to_string(server.data_dir.join("tls/server.pem")).unwrap();
    let (plain, tls) = tokio::join!(stalled(&http, None), stalled(&https, Some(&pem)));
    for (what, took) in [("HTTP", plain), ("HTTPS", tls)] {
        assert!(
            took >= Duration::from_millis(900) && took < Duration::from_secs(3),
            "{what}: closed after {took:?}"
        );
    }
    // a whole request in time is answered as ever
    let answer = reqwest::get(format!("{}/.well-known/drogue-version", server.base))
        .await
        .unwrap();
    assert_eq!(answer.status().as_u16(), 200);
}

#[tokio::test]
async fn a_device_holds_at_most_its_connections() {
    let dir = tempfile::tempdir().unwrap();
    let server = LocalRunner::start_with(dir.path(), &["--max-connections-per-device", "2"]).await;
    assert_eq!(
        server
            .post(APPS, &json!({"metadata": {"name": "app1"}}))
            .await,
        201
    );
    let devices = format!("{APPS}/app1/devices");
    let dev1 = json!({"metadata": {"name": "dev1"}, "spec": {"alias": ["a1", "a2"], "authentication": {"credentials": [{"pass": "secret"}]}}});
    let dev2 = json!({"metadata": {"name": "dev2"}, "spec": {"authentication": {"credentials": [{"pass": "secret"}]}}});
    assert_eq!(server.post(&devices, &dev1).await, 201);
    assert_eq!(server.post(&devices, &dev2).await, 201);
    let connect = |client_id: &str, device: &str| {
        mqtt_client::connect(
            server.mqtt,
            Options::v5(client_id).login(&format!("{device}@app1"), "secret"),
        )
    };
    let mut first = connect("dev1@app1", "dev1").await.unwrap();
    let mut second = connect("a1@app1", "dev1").await.unwrap();
    let mut other = connect("dev2@app1", "dev2").await.unwrap();
    first.quiet(Duration::from_millis(300)).await;
    second.quiet(Duration::from_millis(300)).await;

    // a third connection of dev1 takes over its oldest one, and only that one
    let mut third = connect("a2@app1", "dev1").await.unwrap();
    match first.next().await {
        In::Closed(why) => assert!(why.contains("SessionTakenOver"), "{why}"),
        other => panic!("the oldest connection should close, got {other:?}"),
    }
    for (client, topic) in [
        (&mut second, "dt/app1/dev1/t"),
        (&mut third, "dt/app1/dev1/t"),
        (&mut other, "dt/app1/dev2/t"),
    ] {
        client.publish(topic, true, b"{}", None).await;
        assert_eq!(client.next_ack().await, In::PubAck("Success".into()));
    }
}

#[tokio::test]
async fn a_persistent_session_closed_by_its_devices_limit_keeps_its_subscriptions() {
    let dir = tempfile::tempdir().unwrap();
    let server = LocalRunner::start_with(dir.path(), &["--max-connections-per-device", "1"]).await;
    setup(&server).await;
    // dev1, with an alias: a second client id of its own
    let dev1 = json!({"metadata": {"name": "dev1"}, "spec": {"alias": ["a1"], "authentication": {"credentials": [{"pass": "secret"}]}}});
    assert_eq!(
        server
            .put(&format!("{APPS}/app1/devices/dev1"), &dev1)
            .await,
        204
    );
    let admin = server.admin_token();
    let admin = admin.split_once(':').unwrap();
    let persistent = |client_id: &str| {
        Options::v5(client_id)
            .login("dev1@app1", "secret")
            .persistent(600)
    };
    let mut first = mqtt_client::connect(server.mqtt, persistent("dev1@app1"))
        .await
        .unwrap();
    assert!(first.subscribed("command/inbox/#", false).await);

    // a second connection of dev1, under another client id, closes the first
    let second = mqtt_client::connect(
        server.mqtt,
        Options::v5("a1@app1").login("dev1@app1", "secret"),
    )
    .await
    .unwrap();
    match first.next().await {
        In::Closed(why) => assert!(why.contains("SessionTakenOver"), "{why}"),
        other => panic!("the first connection should close, got {other:?}"),
    }
    second.disconnect().await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    // the first session comes back with its subscription, and gets a command
    let mut again = mqtt_client::connect(server.mqtt, persistent("dev1@app1"))
        .await
        .unwrap();
    assert!(again.session_present, "the session was kept");
    again.quiet(Duration::from_millis(300)).await;
    let (status, _, _) = http_command(&server, admin, "app1", 1).await;
    assert_eq!(status, 202);
    let command = again.message().await;
    assert_eq!(command.topic, "command/inbox//set");
    assert_eq!(command.json(), json!({ "i": 1 }));
}

/// A command over the command API: its status, `Retry-After` and body.
async fn http_command(
    server: &LocalRunner,
    who: (&str, &str),
    app: &str,
    i: u64,
) -> (u16, Option<String>, Value) {
    let response = reqwest::Client::new()
        .post(format!(
            "{}/api/command/v1alpha1/apps/{app}/devices/dev1?command=set",
            server.base
        ))
        .basic_auth(who.0, Some(who.1))
        .json(&json!({ "i": i }))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let retry = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    (status, retry, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn commands_beyond_an_applications_rate_are_refused_and_other_applications_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let server =
        LocalRunner::start_with(dir.path(), &["--command-rate", "1", "--command-burst", "5"]).await;
    setup(&server).await;
    let admin = server.admin_token();
    let admin = admin.split_once(':').unwrap();
    // eve, a stranger, with an application and device of her own
    let made = server
        .post_json("/api/admin/v1alpha1/users/eve/tokens", &json!({}))
        .await;
    let eve = ("eve", made["token"].as_str().unwrap().to_owned());
    let http = reqwest::Client::new();
    for (path, body) in [
        (APPS.to_owned(), json!({"metadata": {"name": "app2"}})),
        (
            format!("{APPS}/app2/devices"),
            json!({"metadata": {"name": "dev1"}}),
        ),
    ] {
        let status = http
            .post(format!("{}{path}", server.base))
            .basic_auth(eve.0, Some(&eve.1))
            .json(&body)
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, 201);
    }

    // app1's device waits for its commands over MQTT
    let mut dev1 = mqtt_client::connect(
        server.mqtt,
        Options::v5("dev1@app1").login("dev1@app1", "secret"),
    )
    .await
    .unwrap();
    assert!(dev1.subscribed("cmd/app1/dev1/#", false).await);

    // eve publishes app1's commands: refused by her policy, and taking none of app1's rate
    let mut eves = mqtt_client::connect(
        server.mqtt,
        Options::v5("eve/commands").login(eve.0, &eve.1),
    )
    .await
    .unwrap();
    for _ in 0..10 {
        eves.publish("command/app1/dev1/set", true, b"{}", None)
            .await;
        assert_eq!(eves.next_ack().await, In::PubAck("NotAuthorized".into()));
    }

    // app1: the burst passes, then 429 with Retry-After and a JSON error
    let mut accepted = 0;
    let mut refused = 0;
    for i in 0..10 {
        let (status, retry, body) = http_command(&server, admin, "app1", i).await;
        match status {
            202 => accepted += 1,
            429 => {
                refused += 1;
                assert_eq!(body["error"], "TooManyRequests", "{body}");
                let retry: u64 = retry.expect("Retry-After").parse().unwrap();
                assert!((1..=2).contains(&retry), "{retry}");
            }
            other => panic!("unexpected status {other}: {body}"),
        }
        if i < 5 {
            assert_eq!(
                status, 202,
                "the burst of 5 is whole: eve drained none of it"
            );
        }
    }
    assert!(refused >= 3, "{accepted} accepted, {refused} refused");

    // meanwhile eve's application commands as usual, over HTTP and MQTT
    for i in 0..3 {
        let (status, _, body) = http_command(&server, (eve.0, &eve.1), "app2", i).await;
        assert_eq!(status, 202, "{body}");
    }
    eves.publish("command/app2/dev1/set", true, b"{}", None)
        .await;
    assert_eq!(eves.next_ack().await, In::PubAck("Success".into()));

    // app1 over MQTT 5 QoS 1, still over its rate: PUBACK quota exceeded
    let mut app = mqtt_client::connect(
        server.mqtt,
        Options::v5(&format!("{}/commands", admin.0)).login(admin.0, admin.1),
    )
    .await
    .unwrap();
    app.publish("command/app1/dev1/set", true, b"{}", None)
        .await;
    assert_eq!(app.next_ack().await, In::PubAck("QuotaExceeded".into()));

    // the device got the accepted commands, and none of the refused ones
    let mut delivered = 0;
    while let Ok(m) = tokio::time::timeout(Duration::from_secs(2), dev1.message()).await {
        assert!(m.topic.contains("set"), "{}", m.topic);
        delivered += 1;
    }
    assert_eq!(delivered, accepted);
}

/// `who` makes an application and devices `d0..`, with the password "secret".
async fn tenancy(server: &LocalRunner, who: &(String, String), app: &str, devices: usize) {
    let http = reqwest::Client::new();
    let mut requests = vec![(APPS.to_owned(), json!({"metadata": {"name": app}}))];
    for i in 0..devices {
        requests.push((
            format!("{APPS}/{app}/devices"),
            json!({"metadata": {"name": format!("d{i}")}, "spec": {"authentication": {"credentials": [{"pass": "secret"}]}}}),
        ));
    }
    for (path, body) in requests {
        let status = http
            .post(format!("{}{path}", server.base))
            .basic_auth(&who.0, Some(&who.1))
            .json(&body)
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, 201, "{path}");
    }
}

#[tokio::test]
async fn a_tenant_holds_at_most_its_connections_and_strangers_connect_as_ever() {
    let dir = tempfile::tempdir().unwrap();
    let server = LocalRunner::start_with(dir.path(), &["--max-connections-per-user", "3"]).await;
    let (eve, bob) = (server.user("eve").await, server.user("bob").await);
    // eve's devices are in two applications: they count together
    tenancy(&server, &eve, "eve1", 3).await;
    tenancy(&server, &eve, "eve2", 2).await;
    tenancy(&server, &bob, "bob1", 2).await;
    let device = |v5: bool, client_id: &str, login: &str| {
        let options = if v5 {
            Options::v5(client_id)
        } else {
            Options::v3(client_id)
        };
        mqtt_client::connect(server.mqtt, options.login(login, "secret"))
    };
    let mut e0 = device(true, "d0@eve1", "d0@eve1").await.unwrap();
    let e1 = device(true, "d1@eve1", "d1@eve1").await.unwrap();
    let _f0 = device(false, "d0@eve2", "d0@eve2").await.unwrap();

    // a fourth of eve's is refused, whatever it is: a device of either application, over
    // either version, or eve herself as an application client
    let refused = device(true, "d2@eve1", "d2@eve1")
        .await
        .err()
        .expect("refused");
    assert!(refused.contains("QuotaExceeded"), "{refused}");
    let refused = device(false, "d1@eve2", "d1@eve2")
        .await
        .err()
        .expect("refused");
    assert!(refused.contains("ServiceUnavailable"), "{refused}");
    let refused = mqtt_client::connect(server.mqtt, Options::v5("eve/app").login(&eve.0, &eve.1))
        .await
        .err()
        .expect("refused");
    assert!(refused.contains("QuotaExceeded"), "{refused}");

    // bob, a stranger, connects as ever: devices and an application client
    let mut b0 = device(true, "d0@bob1", "d0@bob1").await.unwrap();
    let _b1 = device(false, "d1@bob1", "d1@bob1").await.unwrap();
    let mut bob_app =
        mqtt_client::connect(server.mqtt, Options::v5("bob/app").login(&bob.0, &bob.1))
            .await
            .unwrap();
    assert!(bob_app.subscribed("app/bob1", false).await);
    b0.publish("dt/bob1/d0/t", true, b"{}", None).await;
    assert_eq!(b0.next_ack().await, In::PubAck("Success".into()));
    assert_eq!(bob_app.event().await.json()["device"], "d0");

    // eve's own connections go on; a reconnect with one of their client ids takes over
    // (and adds none): allowed at the limit
    e0.publish("dt/eve1/d0/t", true, b"{}", None).await;
    assert_eq!(e0.next_ack().await, In::PubAck("Success".into()));
    let mut again = device(true, "d0@eve1", "d0@eve1").await.unwrap();
    match e0.next().await {
        In::Closed(why) => assert!(why.contains("SessionTakenOver"), "{why}"),
        other => panic!("the earlier connection should close, got {other:?}"),
    }
    again.publish("dt/eve1/d0/t", true, b"{}", None).await;
    assert_eq!(again.next_ack().await, In::PubAck("Success".into()));

    // a connection that ends makes room
    e1.disconnect().await;
    let mut room = None;
    for _ in 0..50 {
        if let Ok(client) = device(true, "d2@eve1", "d2@eve1").await {
            room = Some(client);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        room.is_some(),
        "a connection of eve's ended: another may connect"
    );
}
