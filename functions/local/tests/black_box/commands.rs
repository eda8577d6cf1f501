//! Commands end to end on drogue-local: long polls, time-to-live, gateways, isolation,
//! request and response (on the WebSocket stream and to a waiting drop-off), timeouts,
//! bad input, and `drg cmd`.

use super::runner::LocalRunner;
use reqwest::Response;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

struct Setup {
    server: LocalRunner,
    http: reqwest::Client,
    admin: (String, String),
}

async fn setup(dir: &std::path::Path) -> Setup {
    let server = LocalRunner::start(dir).await;
    let apps = "/api/registry/v1alpha1/apps";
    assert_eq!(
        server
            .post(apps, &json!({"metadata": {"name": "app1"}}))
            .await,
        201
    );
    let pass = |p: &str| json!({"authentication": {"credentials": [{"pass": p}]}});
    for (name, spec) in [
        ("dev1", pass("p1")),
        ("dev2", pass("p2")),
        ("gw", pass("gw")),
        ("behind", json!({"gatewaySelector": {"matchNames": ["gw"]}})),
        ("off", json!({"core": {"disabled": true}})),
    ] {
        let body = json!({"metadata": {"name": name}, "spec": spec});
        assert_eq!(
            server.post(&format!("{apps}/app1/devices"), &body).await,
            201
        );
    }
    let token = server.admin_token();
    let (user, token) = token.split_once(':').unwrap();
    Setup {
        admin: (user.to_owned(), token.to_owned()),
        server,
        http: reqwest::Client::new(),
    }
}

impl Setup {
    /// Drops off a command as the administrator.
    async fn drop_off(&self, device: &str, query: &str, body: &str) -> Response {
        self.http
            .post(format!(
                "{}/api/command/v1alpha1/apps/app1/devices/{device}?{query}",
                self.server.base
            ))
            .basic_auth(&self.admin.0, Some(&self.admin.1))
            .header("content-type", "application/json")
            .body(body.to_owned())
            .send()
            .await
            .unwrap()
    }

    /// Publishes as `user` with `?{query}`; the answer.
    async fn poll(&self, user: &str, password: &str, query: &str) -> Response {
        self.http
            .post(format!("{}/v1/telemetry?{query}", self.server.base))
            .basic_auth(user, Some(password))
            .body("{}")
            .send()
            .await
            .unwrap()
    }
}

fn header(response: &Response, name: &str) -> String {
    response
        .headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

#[tokio::test]
async fn devices_get_their_commands_and_only_theirs() {
    let dir = tempfile::tempdir().unwrap();
    let s = setup(dir.path()).await;

    // a long poll gets a command dropped off while it waits
    let started = Instant::now();
    let waiting = {
        let (http, base) = (s.http.clone(), s.server.base.clone());
        tokio::spawn(async move {
            http.post(format!("{base}/v1/telemetry?ct=10"))
                .basic_auth("dev1@app1", Some("p1"))
                .body("{}")
                .send()
                .await
                .unwrap()
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let dropped = s.drop_off("dev1", "command=reboot", r#"{"delay":5}"#).await;
    assert_eq!(dropped.status().as_u16(), 202);
    let request = header(&dropped, "request");
    let got = waiting.await.unwrap();
    assert_eq!(got.status().as_u16(), 200);
    assert_eq!(header(&got, "command"), "reboot");
    assert_eq!(header(&got, "request"), request);
    assert_eq!(header(&got, "content-type"), "application/json");
    assert_eq!(got.text().await.unwrap(), r#"{"delay":5}"#);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "delivered when dropped off, not at the timeout"
    );

    // dropped off first, taken by the next poll; never twice
    assert_eq!(
        s.drop_off("dev1", "command=later", "1")
            .await
            .status()
            .as_u16(),
        202
    );
    let got = s.poll("dev1@app1", "p1", "ct=1").await;
    assert_eq!(header(&got, "command"), "later");
    assert_eq!(
        s.poll("dev1@app1", "p1", "ct=1").await.status().as_u16(),
        202
    );

    // another device never gets it
    assert_eq!(
        s.drop_off("dev1", "command=mine", "1")
            .await
            .status()
            .as_u16(),
        202
    );
    assert_eq!(
        s.poll("dev2@app1", "p2", "ct=1").await.status().as_u16(),
        202
    );
    assert_eq!(
        s.poll("gw@app1", "gw", "ct=1").await.status().as_u16(),
        202,
        "gw is not dev1's gateway"
    );
    assert_eq!(
        header(&s.poll("dev1@app1", "p1", "ct=1").await, "command"),
        "mine"
    );

    // a gateway gets the commands of the devices it serves
    assert_eq!(
        s.drop_off("behind", "command=open", "1")
            .await
            .status()
            .as_u16(),
        202
    );
    let got = s.poll("gw@app1", "gw", "as=behind&ct=2").await;
    assert_eq!(header(&got, "command"), "open");

    // a command expires: within its time-to-live it is delivered, after it never
    assert_eq!(
        s.drop_off("dev2", "command=short&ttl=1", "1")
            .await
            .status()
            .as_u16(),
        202
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        s.poll("dev2@app1", "p2", "ct=1").await.status().as_u16(),
        202,
        "expired, never delivered"
    );
    assert_eq!(
        s.drop_off("dev2", "command=fresh&ttl=30", "1")
            .await
            .status()
            .as_u16(),
        202
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        header(&s.poll("dev2@app1", "p2", "ct=1").await, "command"),
        "fresh"
    );
}

#[tokio::test]
async fn responses_reach_the_stream_and_the_waiting_drop_off() {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let dir = tempfile::tempdir().unwrap();
    let s = setup(dir.path()).await;

    let mut request = format!(
        "{}/stream/app1",
        s.server.base.replacen("http://", "ws://", 1)
    )
    .into_client_request()
    .unwrap();
    use base64::Engine;
    let basic = base64::engine::general_purpose::STANDARD.encode(s.server.admin_token());
    request
        .headers_mut()
        .insert("authorization", format!("Basic {basic}").parse().unwrap());
    let (mut stream, _) = tokio_tungstenite::connect_async(request).await.unwrap();

    let waiting = {
        let (http, base, admin) = (s.http.clone(), s.server.base.clone(), s.admin.clone());
        tokio::spawn(async move {
            http.post(format!(
                "{base}/api/command/v1alpha1/apps/app1/devices/dev1?command=read&timeout=10"
            ))
            .basic_auth(&admin.0, Some(&admin.1))
            .body("?")
            .send()
            .await
            .unwrap()
        })
    };
    let got = s.poll("dev1@app1", "p1", "ct=5").await;
    assert_eq!(header(&got, "command"), "read");
    let id = header(&got, "request");
    let answered = s
        .http
        .post(format!(
            "{}/v1/command-response?request={id}&status=201",
            s.server.base
        ))
        .basic_auth("dev1@app1", Some("p1"))
        .header("content-type", "application/json")
        .body(r#"{"temperature":21}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(answered.status().as_u16(), 202);

    let answer = waiting.await.unwrap();
    assert_eq!(answer.status().as_u16(), 200);
    assert_eq!(header(&answer, "command-status"), "201");
    assert_eq!(header(&answer, "request"), id);
    assert_eq!(
        answer.json::<Value>().await.unwrap(),
        json!({"temperature": 21})
    );

    // the stream shows the telemetry, then the response
    let mut events = Vec::new();
    while events.len() < 2 {
        let frame = tokio::time::timeout(Duration::from_secs(5), stream.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if let tokio_tungstenite::tungstenite::Message::Text(text) = frame {
            events.push(serde_json::from_str::<Value>(&text).unwrap());
        }
    }
    let response = &events[1];
    assert_eq!(response["type"], "io.drogue.command.response.v1");
    assert_eq!(response["subject"], "read");
    assert_eq!(response["requestid"], id.as_str());
    assert_eq!(response["status"], 201);
    assert_eq!(response["device"], "dev1");
    assert_eq!(response["data"], json!({"temperature": 21}));

    // answering twice, or another device's command, or an unknown one
    let again = |user: &'static str, password: &'static str, id: String| {
        let (http, base) = (s.http.clone(), s.server.base.clone());
        async move {
            http.post(format!(
                "{base}/v1/command-response?request={id}&status=200"
            ))
            .basic_auth(user, Some(password))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
        }
    };
    assert_eq!(again("dev1@app1", "p1", id.clone()).await, 409);
    assert_eq!(again("dev2@app1", "p2", id.clone()).await, 404);
    assert_eq!(
        again("dev1@app1", "p1", "no-such-request".into()).await,
        404
    );

    // nobody answers: 504
    let started = Instant::now();
    let silent = s.drop_off("dev2", "command=ping&timeout=1", "1").await;
    assert_eq!(silent.status().as_u16(), 504);
    assert_eq!(
        silent.json::<Value>().await.unwrap()["error"],
        "GatewayTimeout"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn drop_offs_check_their_input_and_caller() {
    let dir = tempfile::tempdir().unwrap();
    let s = setup(dir.path()).await;
    let error = |r: Response| async move {
        (
            r.status().as_u16(),
            r.json::<Value>().await.unwrap()["error"].clone(),
        )
    };
    assert_eq!(
        error(s.drop_off("nobody", "command=x", "1").await).await,
        (406, json!("NotAcceptable"))
    );
    assert_eq!(
        error(s.drop_off("off", "command=x", "1").await).await,
        (406, json!("NotAcceptable"))
    );
    assert_eq!(
        error(s.drop_off("dev1", "", "1").await).await,
        (400, json!("InvalidRequest"))
    );
    assert_eq!(
        error(s.drop_off("dev1", "command=x&ttl=0", "1").await).await,
        (400, json!("InvalidRequest"))
    );
    assert_eq!(
        error(
            s.drop_off("dev1", "command=x", &"x".repeat(64 * 1024 + 1))
                .await
        )
        .await,
        (413, json!("PayloadTooLarge"))
    );

    // the 0.3.0 form
    let old = s
        .http
        .post(format!("{}/command/app1/dev1/legacy", s.server.base))
        .basic_auth(&s.admin.0, Some(&s.admin.1))
        .body("1")
        .send()
        .await
        .unwrap();
    assert_eq!(old.status().as_u16(), 202);
    assert_eq!(
        header(&s.poll("dev1@app1", "p1", "ct=1").await, "command"),
        "legacy"
    );

    // someone who cannot see the application: 404; a reader may send
    let eve = s
        .server
        .post_json("/api/admin/v1alpha1/users/eve/tokens", &json!({}))
        .await;
    let eve = eve["token"].as_str().unwrap().to_owned();
    let as_eve = || {
        s.http
            .post(format!(
                "{}/api/command/v1alpha1/apps/app1/devices/dev1?command=x",
                s.server.base
            ))
            .basic_auth("eve", Some(&eve))
            .body("1")
    };
    assert_eq!(as_eve().send().await.unwrap().status().as_u16(), 404);
    let members = json!({"members": {"eve": {"role": "reader"}}});
    let set = s
        .http
        .put(format!(
            "{}/api/admin/v1alpha1/apps/app1/members",
            s.server.base
        ))
        .basic_auth(&s.admin.0, Some(&s.admin.1))
        .json(&members)
        .send()
        .await
        .unwrap();
    assert_eq!(set.status().as_u16(), 204);
    assert_eq!(as_eve().send().await.unwrap().status().as_u16(), 202);
    let anonymous = s
        .http
        .post(format!(
            "{}/api/command/v1alpha1/apps/app1/devices/dev1?command=x",
            s.server.base
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status().as_u16(), 401);
}
