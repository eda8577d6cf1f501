//! The local MQTT broker with real clients (rumqttc, MQTT 3.1.1 and 5): devices publish
//! and applications receive the CloudEvents, commands reach devices and gateways, X.509
//! devices connect over TLS, and everything outside a client's policy is refused.

use super::mqtt_client::{In, Options, connect};
use super::runner::LocalRunner;
use drogue_tests::pki::TestCa;
use serde_json::{Value, json};
use std::time::Duration;

const APPS: &str = "/api/registry/v1alpha1/apps";

struct Setup {
    server: LocalRunner,
    ca: TestCa,
    /// The administrator's user and token (an MQTT application login).
    admin: (String, String),
    /// Eve, who owns app2 and may not see app1.
    eve: (String, String),
}

async fn setup(dir: &std::path::Path) -> Setup {
    let server = LocalRunner::start(dir).await;
    let ca = TestCa::new("app1", "App 1 CA");
    let app = json!({"metadata": {"name": "app1"}, "spec": {"trustAnchors": {"anchors": [{"certificate": ca.anchor()}]}}});
    assert_eq!(server.post(APPS, &app).await, 201);
    let pass = |p: &str| json!({"authentication": {"credentials": [{"pass": p}]}});
    for (name, spec) in [
        ("dev1", pass("p1")),
        ("dev2", pass("p2")),
        ("gw", pass("gw")),
        ("behind", json!({"gatewaySelector": {"matchNames": ["gw"]}})),
        ("device-1", json!({})),
    ] {
        let body = json!({"metadata": {"name": name}, "spec": spec});
        assert_eq!(
            server.post(&format!("{APPS}/app1/devices"), &body).await,
            201
        );
    }
    let token = server.admin_token();
    let (user, token) = token.split_once(':').unwrap();
    let made = server
        .post_json("/api/admin/v1alpha1/users/eve/tokens", &json!({}))
        .await;
    let eve = ("eve".to_owned(), made["token"].as_str().unwrap().to_owned());
    let http = reqwest::Client::new();
    for (path, body) in [
        (APPS.to_owned(), json!({"metadata": {"name": "app2"}})),
        (
            format!("{APPS}/app2/devices"),
            json!({"metadata": {"name": "x"}, "spec": pass("px")}),
        ),
    ] {
        let made = http
            .post(format!("{}{path}", server.base))
            .basic_auth(&eve.0, Some(&eve.1))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(made.status().as_u16(), 201);
    }
    Setup {
        admin: (user.to_owned(), token.to_owned()),
        eve,
        server,
        ca,
    }
}

/// Whether the connection was closed with "not authorized" (its access ended).
fn not_authorized(c: In) -> bool {
    matches!(c, In::Closed(reason) if reason.contains("NotAuthorized"))
}

impl Setup {
    /// Deletes a device of app1 as the administrator.
    async fn delete_device(&self, name: &str) {
        let deleted = reqwest::Client::new()
            .delete(format!("{}{APPS}/app1/devices/{name}", self.server.base))
            .basic_auth(&self.admin.0, Some(&self.admin.1))
            .send()
            .await
            .unwrap();
        assert_eq!(deleted.status().as_u16(), 204, "{name}");
    }

    /// Sets app1's members as the administrator.
    async fn set_members(&self, members: Value) {
        let set = reqwest::Client::new()
            .put(format!(
                "{}/api/admin/v1alpha1/apps/app1/members",
                self.server.base
            ))
            .basic_auth(&self.admin.0, Some(&self.admin.1))
            .json(&json!({ "members": members }))
            .send()
            .await
            .unwrap();
        assert_eq!(set.status().as_u16(), 204);
    }

    /// An application login with client id `{user}/{name}`, in the user's own namespace.
    fn app_login(&self, v5: bool, name: &str, who: &(String, String)) -> Options {
        let client_id = format!("{}/{name}", who.0);
        let options = if v5 {
            Options::v5(&client_id)
        } else {
            Options::v3(&client_id)
        };
        options.login(&who.0, &who.1)
    }

    /// Drops off a command over HTTP as the administrator; its request id comes back
    /// to MQTT 5 devices as correlation data.
    async fn command(&self, device: &str, command: &str, body: &str) {
        let dropped = reqwest::Client::new()
            .post(format!(
                "{}/api/command/v1alpha1/apps/app1/devices/{device}?command={command}",
                self.server.base
            ))
            .basic_auth(&self.admin.0, Some(&self.admin.1))
            .header("content-type", "application/json")
            .body(body.to_owned())
            .send()
            .await
            .unwrap();
        assert_eq!(dropped.status().as_u16(), 202, "{device} {command}");
    }

    fn server_certificate(&self) -> String {
        std::fs::read_to_string(self.server.data_dir.join("tls/server.pem")).unwrap()
    }
}

#[tokio::test]
async fn devices_publish_and_applications_receive_cloudevents() {
    let dir = tempfile::tempdir().unwrap();
    let s = setup(dir.path()).await;
    let addr = s.server.mqtt;

    // three application subscribers: MQTT 3.1.1, MQTT 5 structured, MQTT 5 binary
    let mut v3_app = connect(addr, s.app_login(false, "app-v3", &s.admin))
        .await
        .unwrap();
    let mut v5_app = connect(addr, s.app_login(true, "app-v5", &s.admin))
        .await
        .unwrap();
    let mut binary = connect(addr, s.app_login(true, "app-bin", &s.admin))
        .await
        .unwrap();
    assert!(v3_app.subscribed("app/app1", false).await);
    assert!(v5_app.subscribed("app/app1", false).await);
    assert!(binary.subscribed("app/app1", true).await);

    // a device over MQTT 3.1.1 with username device@app and password
    let mut dev1 = connect(addr, Options::v3("dev1@app1").login("dev1@app1", "p1"))
        .await
        .unwrap();
    // its connection event comes first
    let connected = v3_app.message().await.json();
    assert_eq!(connected["type"], "io.drogue.connection.v1");
    assert_eq!(connected["subject"], "connection");
    assert_eq!(connected["device"], "dev1");
    assert_eq!(connected["data"], json!({"connected": true}));

    dev1.publish("dt/app1/dev1/temp", true, br#"{"temp":21.5}"#, None)
        .await;
    assert_eq!(dev1.next_ack().await, In::PubAck("Success".into()));
    let (_, dev1_entity) = s.server.get(&format!("{APPS}/app1/devices/dev1")).await;
    let structured = Some("application/cloudevents+json; charset=utf-8");
    for (subscriber, content_type) in [(&mut v3_app, None), (&mut v5_app, structured)] {
        let m = subscriber.event().await;
        assert_eq!(m.topic, "app/app1");
        assert_eq!(m.content_type.as_deref(), content_type);
        let e = m.json();
        assert_eq!(e["specversion"], "1.0");
        assert_eq!(e["type"], "io.drogue.event.v1");
        assert_eq!(e["source"], "drogue://app1/dev1");
        assert_eq!(e["subject"], "temp");
        assert_eq!(e["application"], "app1");
        assert_eq!(e["device"], "dev1");
        assert_eq!(e["deviceuid"], dev1_entity["metadata"]["uid"]);
        assert_eq!(e["sender"], "dev1");
        assert_eq!(e["datacontenttype"], "application/json");
        assert_eq!(e["data"], json!({"temp": 21.5}));
    }
    let m = binary.event().await;
    assert_eq!(m.payload, br#"{"temp":21.5}"#);
    assert_eq!(m.content_type.as_deref(), Some("application/json"));
    assert_eq!(m.property("specversion"), Some("1.0"));
    assert_eq!(m.property("type"), Some("io.drogue.event.v1"));
    assert_eq!(m.property("subject"), Some("temp"));
    assert_eq!(m.property("device"), Some("dev1"));
    assert_eq!(m.property("source"), Some("drogue://app1/dev1"));
    assert!(m.property("id").is_some_and(|id| id.len() == 36));

    // MQTT 5, username of the device and client id device@app, a content type, and
    // more topic levels after the channel
    let mut dev2 = connect(addr, Options::v5("dev2@app1").login("dev2", "p2"))
        .await
        .unwrap();
    dev2.publish("dt/app1/dev2/state/room/1", true, b"on", Some("text/plain"))
        .await;
    assert_eq!(dev2.next_ack().await, In::PubAck("Success".into()));
    let e = v3_app.event().await.json();
    assert_eq!(e["subject"], "state");
    assert_eq!(e["topic"], "state/room/1");
    assert_eq!(e["datacontenttype"], "text/plain");
    assert_eq!(e["data_base64"], "b24=");
    let m = binary.event().await;
    assert_eq!(
        (m.payload.as_slice(), m.content_type.as_deref()),
        (&b"on"[..], Some("text/plain"))
    );

    assert_eq!(v5_app.event().await.json()["subject"], "state");

    // QoS 0 works too
    dev1.publish("dt/app1/dev1/temp", false, b"22", None).await;
    assert_eq!(v5_app.event().await.json()["data"], json!(22));
    assert_eq!(v3_app.event().await.json()["data"], json!(22));

    // a gateway publishes for the device behind it
    let gw = connect(addr, Options::v3("gw@app1").login("gw@app1", "gw"))
        .await
        .unwrap();
    gw.publish("dt/app1/behind/temp", true, b"7", None).await;
    let e = v3_app.event().await.json();
    assert_eq!(
        (e["device"].clone(), e["sender"].clone()),
        (json!("behind"), json!("gw"))
    );

    // the last will of a connection that drops is an ordinary event; then the
    // connection event
    let mut options = Options::v3("dev1@app1").login("dev1@app1", "p1");
    options.will = Some(("dt/app1/dev1/status".into(), "lost".into()));
    dev1.disconnect().await;
    let dev1 = connect(addr, options).await.unwrap();
    dev1.kill();
    let will = v3_app.event().await.json();
    assert_eq!(
        (will["subject"].clone(), will["data_base64"].clone()),
        (json!("status"), json!("bG9zdA=="))
    );
    let mut disconnected = Value::Null;
    for _ in 0..4 {
        let e = v3_app.message().await.json();
        if e["type"] == "io.drogue.connection.v1" && e["data"]["connected"] == false {
            disconnected = e;
            break;
        }
    }
    assert_eq!(disconnected["device"], "dev1");
    // a clean disconnect has no will
    dev2.disconnect().await;
    gw.disconnect().await;
    drop((v5_app, binary));
    let mut checker = connect(addr, s.app_login(true, "checker", &s.admin))
        .await
        .unwrap();
    assert!(checker.subscribed("app/app1", false).await);
    let mut options = Options::v3("dev1@app1").login("dev1@app1", "p1");
    options.will = Some(("dt/app1/dev1/status".into(), "lost".into()));
    let dev1 = connect(addr, options).await.unwrap();
    dev1.disconnect().await;
    loop {
        let e = checker.message().await.json();
        assert_ne!(
            e["subject"], "status",
            "a clean disconnect has no will: {e}"
        );
        if e["device"] == "dev1" && e["data"]["connected"] == false {
            break;
        }
    }
}

#[tokio::test]
async fn commands_reach_devices_and_gateways_and_answers_come_back() {
    let dir = tempfile::tempdir().unwrap();
    let s = setup(dir.path()).await;
    let addr = s.server.mqtt;
    let mut app = connect(addr, s.app_login(true, "app", &s.admin))
        .await
        .unwrap();
    assert!(app.subscribed("app/app1", false).await);

    let mut dev1 = connect(addr, Options::v3("dev1@app1").login("dev1@app1", "p1"))
        .await
        .unwrap();
    let mut dev2 = connect(addr, Options::v5("dev2@app1").login("dev2@app1", "p2"))
        .await
        .unwrap();
    let mut gw = connect(addr, Options::v5("gw@app1").login("gw@app1", "gw"))
        .await
        .unwrap();
    assert!(dev1.subscribed("cmd/app1/dev1/#", false).await);
    assert!(dev2.subscribed("cmd/app1/dev2/+", false).await);
    assert!(gw.subscribed("cmd/app1/behind/#", false).await);

    // from the command API
    s.command("dev1", "reboot", r#"{"delay":5}"#).await;
    let m = dev1.message().await;
    assert_eq!(m.topic, "cmd/app1/dev1/reboot");
    assert_eq!(m.payload, br#"{"delay":5}"#);
    s.command("behind", "open", "1").await;
    let m = gw.message().await;
    assert_eq!(
        (m.topic.as_str(), m.payload.as_slice()),
        ("cmd/app1/behind/open", &b"1"[..])
    );

    // MQTT 5 devices get the content type and the request id, and answer with it
    s.command("dev2", "set", r#"{"on":true}"#).await;
    let m = dev2.message().await;
    assert_eq!(m.topic, "cmd/app1/dev2/set");
    assert_eq!(m.content_type.as_deref(), Some("application/json"));
    let request = String::from_utf8(m.correlation_data.unwrap()).unwrap();
    assert_eq!(request.len(), 36);
    dev2.publish(
        &format!("cmd/app1/dev2/set/res/{request}/200"),
        true,
        br#"{"ok":true}"#,
        Some("application/json"),
    )
    .await;
    assert_eq!(dev2.next_ack().await, In::PubAck("Success".into()));
    let e = app.event().await.json();
    assert_eq!(e["type"], "io.drogue.command.response.v1");
    assert_eq!(e["subject"], "set");
    assert_eq!(e["requestid"], request.as_str());
    assert_eq!(e["status"], 200);
    assert_eq!(e["data"], json!({"ok": true}));
    // only once
    dev2.publish(
        &format!("cmd/app1/dev2/set/res/{request}/200"),
        true,
        b"{}",
        None,
    )
    .await;
    assert_eq!(
        dev2.next_ack().await,
        In::PubAck("ImplementationSpecificError".into())
    );

    // an application publishes a command over MQTT
    app.publish("command/app1/dev1/blink", true, b"3", Some("text/plain"))
        .await;
    assert_eq!(app.next_ack().await, In::PubAck("Success".into()));
    let m = dev1.message().await;
    assert_eq!(
        (m.topic.as_str(), m.payload.as_slice()),
        ("cmd/app1/dev1/blink", &b"3"[..])
    );
    // to a device that does not exist
    app.publish("command/app1/nobody/blink", true, b"3", None)
        .await;
    assert_eq!(
        app.next_ack().await,
        In::PubAck("ImplementationSpecificError".into())
    );
    // dev2 heard none of dev1's or the gateway's commands
    dev2.quiet(Duration::from_millis(300)).await;

    // the broker's sessions show in the metrics
    let metrics = reqwest::get(format!("{}/metrics", s.server.base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("\ndrogue_mqtt_sessions 4\n"), "{metrics}");
    assert!(
        metrics.contains("\ndrogue_mqtt_dropped_total 0\n"),
        "{metrics}"
    );
}

#[tokio::test]
async fn x509_devices_connect_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let s = setup(dir.path()).await;
    let mut app = connect(s.server.mqtt, s.app_login(false, "app", &s.admin))
        .await
        .unwrap();
    assert!(app.subscribed("app/app1", false).await);
    let tls = |identity: &drogue_tests::pki::Issued| {
        Some((
            s.server_certificate(),
            Some((identity.cert_pem.clone(), identity.key_pem.clone())),
        ))
    };

    let valid = s.ca.issue("app1", "device-1", 2025, 2099);
    for v5 in [false, true] {
        let mut options = if v5 {
            Options::v5("device-1@app1")
        } else {
            Options::v3("device-1@app1")
        };
        options.tls = tls(&valid);
        let mut device = connect(s.server.mqtts, options).await.unwrap();
        device
            .publish("dt/app1/device-1/temp", true, b"1", None)
            .await;
        assert_eq!(device.next_ack().await, In::PubAck("Success".into()));
        let e = app.event().await.json();
        assert_eq!(
            (e["device"].clone(), e["data"].clone()),
            (json!("device-1"), json!(1))
        );
        device.disconnect().await;
    }

    // expired, of an unknown device, or with another device's client id: refused
    let expired = s.ca.issue("app1", "device-1", 2000, 2001);
    let unknown = s.ca.issue("app1", "device-9", 2025, 2099);
    // dev1 holds a password only: it does not authenticate with certificates
    let password_only = s.ca.issue("app1", "dev1", 2025, 2099);
    for (identity, client_id) in [
        (&expired, "device-1@app1"),
        (&unknown, "device-9@app1"),
        (&valid, "dev1@app1"),
        (&password_only, "dev1@app1"),
    ] {
        let mut options = Options::v3(client_id);
        options.tls = tls(identity);
        assert!(
            connect(s.server.mqtts, options).await.is_err(),
            "{client_id}"
        );
    }
    // passwords work over TLS too
    let mut options = Options::v5("dev1@app1").login("dev1@app1", "p1");
    options.tls = Some((s.server_certificate(), None));
    connect(s.server.mqtts, options)
        .await
        .unwrap()
        .disconnect()
        .await;
}

#[tokio::test]
async fn everything_outside_the_policy_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let s = setup(dir.path()).await;
    let addr = s.server.mqtt;

    // wrong password, wrong client id, unknown device, a token that is not one
    for v5 in [false, true] {
        let o = |client_id: &str| {
            if v5 {
                Options::v5(client_id)
            } else {
                Options::v3(client_id)
            }
        };
        for options in [
            o("dev1@app1").login("dev1@app1", "wrong"),
            o("dev2@app1").login("dev1@app1", "p1"),
            o("dev1").login("dev1@app1", "p1"),
            o("nobody@app1").login("nobody@app1", "p1"),
            o("dev1@app2").login("dev1@app2", "p1"),
            o("app").login(&s.admin.0, "drg_not_a_token"),
        ] {
            let refused = connect(addr, options.clone()).await.err().expect("refused");
            assert!(
                refused.contains("BadUserNamePassword"),
                "{:?}: {refused}",
                options.client_id
            );
        }
    }

    // a device publishes for another device, into another application, or a command
    let mut dev1 = connect(addr, Options::v5("dev1@app1").login("dev1@app1", "p1"))
        .await
        .unwrap();
    for topic in [
        "dt/app1/dev2/temp",
        "dt/app2/x/temp",
        "command/app1/dev2/reboot",
        "cmd/app1/dev2/reboot/res/abc/200",
        "app/app1",
    ] {
        dev1.publish(topic, true, b"1", None).await;
        assert_eq!(
            dev1.next_ack().await,
            In::PubAck("NotAuthorized".into()),
            "{topic}"
        );
    }
    // invalid JSON declared as JSON
    dev1.publish("dt/app1/dev1/temp", true, b"{", Some("application/json"))
        .await;
    assert_eq!(
        dev1.next_ack().await,
        In::PubAck("PayloadFormatInvalid".into())
    );
    // ... and subscribes to other devices' commands or wildcards across them
    for filter in [
        "cmd/app1/dev2/#",
        "cmd/app1/+/#",
        "cmd/#",
        "#",
        "app/app1",
        "cmd/app2/x/#",
    ] {
        assert!(!dev1.subscribed(filter, false).await, "{filter}");
    }

    // over MQTT 3.1.1 a publish outside the policy closes the connection
    let mut dev1_v3 = connect(addr, Options::v3("dev1@app1").login("dev1@app1", "p1"))
        .await
        .unwrap();
    dev1_v3.publish("dt/app2/x/temp", true, b"1", None).await;
    assert!(matches!(dev1_v3.next_ack().await, In::Closed(_)));

    // eve may not follow app1 or send it commands, nor reach it with wildcards
    let mut eve = connect(addr, s.app_login(true, "eve", &s.eve))
        .await
        .unwrap();
    for filter in [
        "app/app1",
        "$share/g/app/app1",
        "app/+",
        "app/#",
        "#",
        "cmd/app1/dev1/#",
    ] {
        assert!(!eve.subscribed(filter, false).await, "{filter}");
    }
    eve.publish("command/app1/dev1/reboot", true, b"1", None)
        .await;
    assert_eq!(eve.next_ack().await, In::PubAck("NotAuthorized".into()));
    assert!(eve.subscribed("app/app2", false).await);
    // app1's events do not reach eve: the first she sees is app2's
    let dev1 = connect(addr, Options::v3("dev1@app1").login("dev1@app1", "p1"))
        .await
        .unwrap();
    dev1.publish("dt/app1/dev1/secret", true, b"1", None).await;
    let x = connect(addr, Options::v3("x@app2").login("x@app2", "px"))
        .await
        .unwrap();
    x.publish("dt/app2/x/temp", true, b"2", None).await;
    let e = eve.event().await.json();
    assert_eq!(
        (e["application"].clone(), e["device"].clone()),
        (json!("app2"), json!("x"))
    );

    // a shared subscription of the own application works
    let mut shared = connect(addr, s.app_login(false, "eve2", &s.eve))
        .await
        .unwrap();
    assert!(shared.subscribed("$share/workers/app/app2", false).await);
    x.publish("dt/app2/x/temp", true, b"3", None).await;
    assert_eq!(shared.event().await.json()["data"], json!(3));
}

/// A subscription is decided by the filter's structure, not by its spelling: the IoT
/// policy wildcard in `$share/*/app/{app}` spans levels, but a shared filter of another
/// application's telemetry that ends in the own `app/{app}` is refused in the SUBACK
/// (MQTT 5 `0x87` not authorized, 3.1.1 `0x80`), as are filters that are no valid shared
/// subscription; the rightful filters still work and deliver.
#[tokio::test]
async fn subscriptions_are_decided_by_the_filters_structure() {
    let dir = tempfile::tempdir().unwrap();
    let s = setup(dir.path()).await;
    let addr = s.server.mqtt;
    let refused_for_eve = [
        "$share/g/dt/app1/dev1/app/app2",
        "$share/g/dt/app1/+/app/app2",
        "$share/g/cmd/app1/dev1/app/app2",
        "$share/g/x/app/app2",
        "$share/g/app/app/app2",
        "$share/g/app/app2/#",
        "$share/g/app/+",
        "$share/g/#",
        "$share/+/app/app2",
        "$share//app/app2",
        "app/app2/#",
        "dt/app1/dev1/app/app2",
    ];
    for v5 in [true, false] {
        let refused = if v5 { "NotAuthorized" } else { "Failure" };
        let mut eve = connect(addr, s.app_login(v5, &format!("structure-{v5}"), &s.eve))
            .await
            .unwrap();
        for filter in refused_for_eve {
            assert_eq!(eve.suback(filter).await, refused, "{filter} (MQTT 5: {v5})");
        }
        // the administrator may read every application, still only its events
        let mut admin = connect(addr, s.app_login(v5, &format!("structure-{v5}"), &s.admin))
            .await
            .unwrap();
        for filter in [
            "$share/g/dt/app2/x/app/app1",
            "$share/g/dt/app2/+/app/+",
            "$share/g/x/app/+",
            "$share/g/cmd/app1/dev1/#",
        ] {
            assert_eq!(admin.suback(filter).await, refused, "admin: {filter}");
        }
        // a device: its own command topics only, never shared nor deeper in others'
        let options = if v5 {
            Options::v5("dev1@app1")
        } else {
            Options::v3("dev1@app1")
        };
        let mut dev1 = connect(addr, options.login("dev1@app1", "p1"))
            .await
            .unwrap();
        for filter in [
            "$share/g/cmd/app1/dev1/#",
            "cmd/app1/+/#",
            "cmd/app1/dev1",
            "cmd/+/dev1/#",
        ] {
            assert_eq!(dev1.suback(filter).await, refused, "dev1: {filter}");
        }
        // the rightful filters still work, after the refusals, and deliver
        assert_eq!(dev1.suback("cmd/app1/dev1/+").await, "Success");
        assert_eq!(eve.suback("app/app2").await, "Success");
        assert_eq!(eve.suback("$share/g/app/app2").await, "Success");
        assert_eq!(admin.suback("$share/g/app/+").await, "Success");
        let x = connect(addr, Options::v3("x@app2").login("x@app2", "px"))
            .await
            .unwrap();
        x.publish("dt/app2/x/temp", true, b"7", None).await;
        let mut seen = Vec::new();
        for _ in 0..2 {
            let event = eve.event().await;
            seen.push(event.topic.clone());
            assert_eq!(event.json()["data"], json!(7));
        }
        seen.sort();
        assert_eq!(seen, ["app/app2", "app/app2"], "direct and shared");
        let event = admin.event().await;
        assert_eq!(event.json()["application"], json!("app2"));
        s.command("dev1", "reboot", "{}").await;
        assert_eq!(dev1.message().await.topic, "cmd/app1/dev1/reboot");
        x.disconnect().await;
        for client in [eve, admin, dev1] {
            client.disconnect().await;
        }
    }
}

/// A client id names its owner: no user, not even one who may manage the device's
/// application, can take a device's client id and so its session; nor another user's.
#[tokio::test]
async fn no_client_takes_over_another_principals_session() {
    let dir = tempfile::tempdir().unwrap();
    let s = setup(dir.path()).await;
    let addr = s.server.mqtt;
    let mut dev1 = connect(addr, Options::v5("dev1@app1").login("dev1@app1", "p1"))
        .await
        .unwrap();
    let mut admin = connect(addr, s.app_login(true, "consumer", &s.admin))
        .await
        .unwrap();
    assert!(admin.subscribed("app/app1", false).await);

    for v5 in [false, true] {
        let o = |client_id: &str| {
            if v5 {
                Options::v5(client_id)
            } else {
                Options::v3(client_id)
            }
        };
        for (options, why) in [
            (
                o("dev1@app1").login(&s.eve.0, &s.eve.1),
                "a stranger as the device",
            ),
            (
                o("dev1@app1").login(&s.admin.0, &s.admin.1),
                "the owner as the device",
            ),
            (
                o("admin/consumer").login(&s.eve.0, &s.eve.1),
                "a stranger as the admin's client",
            ),
            (o("eve").login(&s.eve.0, &s.eve.1), "outside any namespace"),
            (
                o("eve/x@app1").login(&s.eve.0, &s.eve.1),
                "a name like a device's",
            ),
            (
                o("dev2@app1").login("dev1@app1", "p1"),
                "one device as another",
            ),
        ] {
            let refused = connect(addr, options).await.err().expect(why);
            assert!(refused.contains("BadUserNamePassword"), "{why}: {refused}");
        }
    }

    // both victims are still connected and served
    dev1.publish("dt/app1/dev1/temp", true, b"21", None).await;
    assert_eq!(dev1.next_ack().await, In::PubAck("Success".into()));
    let e = admin.event().await.json();
    assert_eq!(
        (e["device"].clone(), e["data"].clone()),
        (json!("dev1"), json!(21))
    );
    dev1.quiet(Duration::from_millis(300)).await;
    admin.quiet(Duration::from_millis(300)).await;

    // a user's own client id in her own namespace works
    connect(addr, s.app_login(false, "x", &s.eve))
        .await
        .unwrap()
        .disconnect()
        .await;
}

/// Access is decided again every 5 s on live sessions: a removed member stops receiving
/// the application's events, a deleted device and a deleted token are disconnected
/// (MQTT 5: "not authorized").
#[tokio::test]
async fn live_sessions_lose_what_their_client_loses() {
    let dir = tempfile::tempdir().unwrap();
    let s = setup(dir.path()).await;
    let addr = s.server.mqtt;
    let http = reqwest::Client::new();
    s.set_members(json!({"eve": {"role": "reader"}})).await;
    let second: Value = http
        .post(format!("{}/api/tokens/v1alpha1", s.server.base))
        .basic_auth(&s.eve.0, Some(&s.eve.1))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let eve2 = (
        s.eve.0.clone(),
        second["token"].as_str().unwrap().to_owned(),
    );

    let mut member = connect(addr, s.app_login(true, "member", &s.eve))
        .await
        .unwrap();
    assert!(member.subscribed("app/app1", false).await);
    let mut with_token = connect(addr, s.app_login(true, "second", &eve2))
        .await
        .unwrap();
    assert!(with_token.subscribed("app/app2", false).await);
    let mut owner = connect(addr, s.app_login(true, "owner", &s.admin))
        .await
        .unwrap();
    assert!(owner.subscribed("app/app1", false).await);
    let mut dev1 = connect(addr, Options::v5("dev1@app1").login("dev1@app1", "p1"))
        .await
        .unwrap();
    let mut dev2 = connect(addr, Options::v5("dev2@app1").login("dev2@app1", "p2"))
        .await
        .unwrap();
    dev1.publish("dt/app1/dev1/temp", true, b"1", None).await;
    assert_eq!(
        member.event().await.json()["data"],
        json!(1),
        "a member reads"
    );
    assert_eq!(owner.event().await.json()["data"], json!(1));

    // eve is no member any more, her second token is deleted, dev2 is deleted
    s.set_members(json!({})).await;
    let revoked = http
        .delete(format!(
            "{}/api/tokens/v1alpha1/{}",
            s.server.base,
            second["prefix"].as_str().unwrap()
        ))
        .basic_auth(&s.eve.0, Some(&s.eve.1))
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status().as_u16(), 204);
    s.delete_device("dev2").await;

    // within the period (and some slack) the deleted ones are disconnected
    let within = Duration::from_secs(8);
    let next = tokio::time::timeout(within, with_token.next_ack()).await;
    assert!(
        next.is_ok_and(not_authorized),
        "the deleted token's session"
    );
    let next = tokio::time::timeout(within, dev2.next_ack()).await;
    assert!(
        next.is_ok_and(not_authorized),
        "the deleted device's session"
    );
    // ... and the former member receives nothing more of app1 (the registry changes
    // made while it still could read are behind it), while the owner does
    member.drain(Duration::from_millis(300)).await;
    dev1.publish("dt/app1/dev1/temp", true, b"2", None).await;
    assert_eq!(dev1.next_ack().await, In::PubAck("Success".into()));
    assert_eq!(owner.event().await.json()["data"], json!(2));
    member.quiet(Duration::from_millis(500)).await;
}

/// A member removed from an application, whose token stays valid (so its connection
/// lives on), loses on that live connection what the recheck takes from its policy:
/// commands to the application are refused, a new subscription to its events is
/// refused, and a persistent session's subscription fed from the event log stops.
#[tokio::test]
async fn a_removed_member_can_no_longer_command_subscribe_or_be_fed_on_a_live_connection() {
    let dir = tempfile::tempdir().unwrap();
    let s = setup(dir.path()).await;
    let addr = s.server.mqtt;
    s.set_members(json!({"eve": {"role": "manager"}})).await;

    // a persistent session: its QoS 1 subscription to app1 resumes from the log
    let mut eve = connect(addr, s.app_login(true, "eve", &s.eve).persistent(600))
        .await
        .unwrap();
    assert!(eve.subscribed("app/app1", false).await);
    let mut dev1 = connect(addr, Options::v5("dev1@app1").login("dev1@app1", "p1"))
        .await
        .unwrap();
    assert!(dev1.subscribed("cmd/app1/dev1/#", false).await);
    dev1.publish("dt/app1/dev1/temp", true, b"1", None).await;
    assert_eq!(dev1.next_ack().await, In::PubAck("Success".into()));
    assert_eq!(eve.event().await.json()["data"], json!(1), "a member reads");
    eve.publish("command/app1/dev1/blink", true, b"1", None)
        .await;
    assert_eq!(eve.next_ack().await, In::PubAck("Success".into()));
    assert_eq!(dev1.message().await.topic, "cmd/app1/dev1/blink");

    s.set_members(json!({})).await;
    // within the recheck's period (and some slack), her commands are refused
    let deadline = tokio::time::Instant::now() + Duration::from_secs(8);
    loop {
        eve.publish("command/app1/dev1/blink", true, b"2", None)
            .await;
        match eve.next_ack().await {
            In::PubAck(reason) if reason == "NotAuthorized" => break,
            In::PubAck(reason) if reason == "Success" => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "a removed member still sends commands to app1"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    // (what she sent before the recheck reached dev1)
    dev1.drain(Duration::from_millis(300)).await;
    // the subscriptions she may no longer make
    for filter in ["app/app1", "$share/g/app/app1"] {
        assert!(!eve.subscribed(filter, false).await, "{filter}");
    }
    // and the resuming subscription she made as a member is fed no more
    eve.drain(Duration::from_millis(300)).await;
    dev1.publish("dt/app1/dev1/temp", true, b"3", None).await;
    assert_eq!(dev1.next_ack().await, In::PubAck("Success".into()));
    eve.quiet(Duration::from_millis(500)).await;
    dev1.quiet(Duration::from_millis(300)).await;
}

/// A device that logged in with a password depends on its application's records alone:
/// idle, its recheck waits for a write to its application or one of its devices
/// instead of deciding every 5 s. Another tenant's writes wake it never; a write to its
/// application wakes it for one decision at its next tick (it stays connected when
/// nothing of it changed); deleting it disconnects it.
#[tokio::test]
async fn idle_devices_are_decided_again_after_their_applications_writes_only() {
    let dir = tempfile::tempdir().unwrap();
    let s = setup(dir.path()).await;
    let until = |name: &'static str, value: u64| s.server.metric_reaches(name, value);
    let mut dev1 = connect(
        s.server.mqtt,
        Options::v5("dev1@app1").login("dev1@app1", "p1"),
    )
    .await
    .unwrap();
    until("drogue_mqtt_rechecks_waiting", 1).await;
    // another tenant's writes to her own application, then more than a period: no
    // decision
    let http = reqwest::Client::new();
    for name in ["y1", "y2", "y3"] {
        let made = http
            .post(format!("{}{APPS}/app2/devices", s.server.base))
            .basic_auth(&s.eve.0, Some(&s.eve.1))
            .json(&json!({"metadata": {"name": name}}))
            .send()
            .await
            .unwrap();
        assert_eq!(made.status().as_u16(), 201);
    }
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(s.server.metric("drogue_mqtt_rechecks_total").await, 0);
    assert_eq!(s.server.metric("drogue_mqtt_rechecks_waiting").await, 1);

    // a write to its own application (another device of it): one decision, and the
    // device goes on
    let made = http
        .post(format!("{}{APPS}/app1/devices", s.server.base))
        .basic_auth(&s.admin.0, Some(&s.admin.1))
        .json(&json!({"metadata": {"name": "y"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(made.status().as_u16(), 201);
    until("drogue_mqtt_rechecks_total", 1).await;
    until("drogue_mqtt_rechecks_waiting", 1).await;
    dev1.publish("dt/app1/dev1/temp", true, b"1", None).await;
    assert_eq!(dev1.next_ack().await, In::PubAck("Success".into()));

    // its own deletion: disconnected
    s.delete_device("dev1").await;
    let next = tokio::time::timeout(Duration::from_secs(8), dev1.next_ack()).await;
    assert!(
        next.is_ok_and(not_authorized),
        "the deleted device's session"
    );
    until("drogue_mqtt_rechecks_waiting", 0).await;
    assert_eq!(s.server.metric("drogue_mqtt_rechecks_total").await, 2);
}

/// A session's delivery task (which sends its messages and closes its connection when
/// it is taken over) ends with its connection, whether the session subscribed (and has
/// a queue) or only published (and has none), however the client leaves.
#[tokio::test]
async fn every_connections_delivery_task_ends_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let s = setup(dir.path()).await;
    let addr = s.server.mqtt;
    let tasks = |value: u64| s.server.metric_reaches("drogue_mqtt_delivery_tasks", value);
    let mut app = connect(addr, s.app_login(false, "app", &s.admin))
        .await
        .unwrap();
    assert!(app.subscribed("app/app1", false).await);
    let mut dev1 = connect(addr, Options::v5("dev1@app1").login("dev1@app1", "p1"))
        .await
        .unwrap();
    dev1.publish("dt/app1/dev1/temp", true, b"1", None).await;
    assert_eq!(dev1.next_ack().await, In::PubAck("Success".into()));
    assert_eq!(app.event().await.json()["data"], json!(1));
    let dev2 = connect(addr, Options::v3("dev2@app1").login("dev2@app1", "p2"))
        .await
        .unwrap();
    tasks(3).await;
    // a clean DISCONNECT, and a socket closed without one: sessions without a queue
    dev1.disconnect().await;
    dev2.kill();
    tasks(1).await;
    // a subscriber's session, with its queue
    app.disconnect().await;
    tasks(0).await;
    assert_eq!(s.server.metric("drogue_mqtt_sessions").await, 0);
}

/// A device with a certificate is decided again when a certificate of its chain
/// expires (or after a registry write), not every 5 s: once its certificate is past
/// its end, its session is ended.
#[tokio::test]
async fn a_certificate_session_ends_when_the_certificate_expires() {
    let dir = tempfile::tempdir().unwrap();
    let s = setup(dir.path()).await;
    let ends = std::time::SystemTime::now() + Duration::from_secs(12);
    let identity = s.ca.issue_until("app1", "device-1", ends);
    let mut options = Options::v5("device-1@app1");
    options.tls = Some((
        s.server_certificate(),
        Some((identity.cert_pem.clone(), identity.key_pem.clone())),
    ));
    let mut device = connect(s.server.mqtts, options).await.unwrap();
    device
        .publish("dt/app1/device-1/temp", true, b"1", None)
        .await;
    assert_eq!(device.next_ack().await, In::PubAck("Success".into()));
    // more than a period, the certificate still valid: no decision
    tokio::time::sleep(Duration::from_secs(7)).await;
    assert_eq!(s.server.metric("drogue_mqtt_rechecks_total").await, 0);
    assert_eq!(s.server.metric("drogue_mqtt_rechecks_waiting").await, 1);
    // past its end (and the next tick): disconnected
    let next = tokio::time::timeout(Duration::from_secs(15), device.next_ack()).await;
    assert!(
        next.is_ok_and(not_authorized),
        "the expired certificate's session"
    );
    assert!(std::time::SystemTime::now() > ends);
    assert_eq!(s.server.metric("drogue_mqtt_rechecks_total").await, 1);
}

/// A session holds at most 50 subscriptions (IoT Core's limit); beyond, a SUBACK
/// failure (MQTT 5: quota exceeded), and the session goes on.
#[tokio::test]
async fn subscriptions_per_session_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let s = setup(dir.path()).await;
    for v5 in [false, true] {
        let mut app = connect(s.server.mqtt, s.app_login(v5, "many", &s.admin))
            .await
            .unwrap();
        for i in 0..50 {
            let filter = format!("$share/g{i}/app/app1");
            assert!(app.subscribed(&filter, false).await, "{filter}");
        }
        assert!(!app.subscribed("app/app1", false).await, "the 51st");
        assert!(app.subscribed("$share/g7/app/app1", false).await, "again");
        app.disconnect().await;
    }
}

/// Discovery names the broker, for devices and for applications, where it listens.
#[tokio::test]
async fn discovery_announces_the_broker() {
    let dir = tempfile::tempdir().unwrap();
    let server = super::runner::LocalRunner::start(dir.path()).await;
    let (status, endpoints) = server.get("/.well-known/drogue-endpoints").await;
    assert_eq!(status, 200);
    let expected = json!({"host": "localhost", "port": server.mqtts.port()});
    assert_eq!(endpoints["mqtt"], expected, "{endpoints}");
    assert_eq!(endpoints["mqtt_integration"], expected);
    let (_, info) = server.get("/api/console/v1alpha1/info").await;
    assert_eq!(info["mqtt"], expected);
}

/// The Python interpreter with Eclipse Paho (`tests/run` sets it to its virtualenv's).
fn python() -> String {
    std::env::var("DROGUE_TEST_PYTHON").expect(
        "DROGUE_TEST_PYTHON names a Python with paho-mqtt; tests/run sets it up and exports it",
    )
}

#[tokio::test]
async fn eclipse_paho_clients_work_too() {
    let dir = tempfile::tempdir().unwrap();
    let s = setup(dir.path()).await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/black_box/paho_check.py");
    let output = tokio::process::Command::new(python())
        .arg(script)
        .arg("127.0.0.1")
        .arg(s.server.mqtt.port().to_string())
        .args([&s.admin.0, &s.admin.1])
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let seen: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(seen["app_connack"], 0);
    assert_eq!(seen["app_suback"], 1, "granted QoS 1");
    assert_eq!(seen["device_connack"], 0);
    assert_eq!(seen["puback"], 0);
    let event = &seen["event"];
    assert_eq!(event["type"], "io.drogue.event.v1");
    assert_eq!(event["subject"], "paho");
    assert_eq!(event["device"], "dev1");
    assert_eq!(event["data"], json!({"from": "paho"}));
    assert_eq!(seen["other_commands_suback"], 135, "not authorized");
    assert_eq!(seen["own_commands_suback"], 1);
    assert_eq!(
        seen["wrong_password_connack"], 134,
        "bad user name or password"
    );
}

/// Drogue Cloud's own device topics, as existing Drogue firmware uses them: telemetry on
/// `{channel}` and, as a gateway, `{channel}/{device}`; commands on `command/inbox/...`.
#[tokio::test]
async fn drogue_firmware_topics_work_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let s = setup(dir.path()).await;
    let addr = s.server.mqtt;
    let mut app = connect(addr, s.app_login(true, "app", &s.admin))
        .await
        .unwrap();
    assert!(app.subscribed("app/app1", false).await);

    // a device on MQTT 3.1.1 and a gateway on MQTT 5, both subscribed to the inbox
    let mut dev1 = connect(addr, Options::v3("dev1@app1").login("dev1@app1", "p1"))
        .await
        .unwrap();
    assert!(dev1.subscribed("command/inbox/#", false).await);
    let mut gw = connect(addr, Options::v5("gw@app1").login("gw@app1", "gw"))
        .await
        .unwrap();
    assert!(gw.subscribed("command/inbox/#", false).await);
    let mut own = connect(addr, Options::v5("dev2@app1").login("dev2@app1", "p2"))
        .await
        .unwrap();
    assert!(own.subscribed("command/inbox//#", false).await);

    // telemetry on `temp`, and the gateway's for `behind` on `temp/behind`
    dev1.publish("temp", false, br#"{"t":21}"#, None).await;
    let e = app.event().await.json();
    assert_eq!(
        (&e["device"], &e["sender"], &e["subject"]),
        (&json!("dev1"), &json!("dev1"), &json!("temp"))
    );
    assert_eq!(e["data"], json!({"t": 21}));
    gw.publish("temp/behind", true, br#"{"t":5}"#, None).await;
    assert_eq!(gw.next_ack().await, In::PubAck("Success".into()));
    let e = app.event().await.json();
    assert_eq!(
        (&e["device"], &e["sender"], &e["subject"]),
        (&json!("behind"), &json!("gw"), &json!("temp"))
    );
    // a device the gateway does not serve: refused
    gw.publish("temp/dev1", true, b"{}", None).await;
    assert_eq!(gw.next_ack().await, In::PubAck("NotAuthorized".into()));

    // commands: the device's own on `command/inbox//{command}`, a served device's on
    // `command/inbox/{device}/{command}`
    s.command("dev1", "reboot", r#"{"delay":5}"#).await;
    let m = dev1.message().await;
    assert_eq!(
        (m.topic.as_str(), m.payload.as_slice()),
        ("command/inbox//reboot", &br#"{"delay":5}"#[..])
    );
    s.command("behind", "open", "1").await;
    let m = gw.message().await;
    assert_eq!(
        (m.topic.as_str(), m.payload.as_slice()),
        ("command/inbox/behind/open", &b"1"[..])
    );
    s.command("dev2", "set", "2").await;
    assert_eq!(own.message().await.topic, "command/inbox//set");
    // nobody got another device's command
    for client in [&mut dev1, &mut gw, &mut own] {
        assert!(
            tokio::time::timeout(Duration::from_millis(500), client.message())
                .await
                .is_err()
        );
    }
}
