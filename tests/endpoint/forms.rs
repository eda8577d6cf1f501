//! Each way a device presents itself, accepted and refused, and what the event says.

use super::setup::Endpoint;
use drogue_tests::suite::Case;
use serde_json::json;

pub const CASES: &[Case<Endpoint>] = &[
    ("every credential form of Drogue Cloud is accepted", |e| {
        Box::pin(accepted(e))
    }),
    ("wrong or mixed credentials get the same 403", |e| {
        Box::pin(refused(e))
    }),
    ("a gateway publishes for the devices it serves", |e| {
        Box::pin(gateway(e))
    }),
];

async fn accepted(e: Endpoint) {
    for (path, user, password) in [
        ("/v1/a", "dev1@app1", "secret"),
        ("/v1/b?application=app1", "dev1", "secret"),
        ("/v1/c?application=app1&device=user-dev", "alice", "pw"),
        ("/v1/d?device=user-dev", "alice@app1", "pw"),
        ("/v1/e", "dev%31@app1", "secret"),
    ] {
        let (status, body) = e.publish(path, Some((user, password)), None, "{}").await;
        assert_eq!(status, 202, "{path} as {user}: {body}");
    }
    let subjects: Vec<String> = e
        .events()
        .iter()
        .map(|v| v["subject"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(subjects, ["a", "b", "c", "d", "e"]);
    assert_eq!(e.events()[2]["device"], "user-dev");
}

async fn refused(e: Endpoint) {
    let forbidden =
        json!({"code": 403, "error": "AuthenticationError", "message": "Authentication failed"});
    for (path, auth) in [
        ("/v1/x", None),
        ("/v1/x", Some(("dev1@app1", "wrong"))),
        ("/v1/x", Some(("dev1", "secret"))),
        ("/v1/x", Some(("dev1@app2", "secret"))),
        ("/v1/x", Some(("nobody@app1", "secret"))),
        (
            "/v1/x?application=app1&device=user-dev",
            Some(("alice", "wrong")),
        ),
        ("/v1/x?application=app1&device=dev1", Some(("alice", "pw"))),
        ("/v1/x?device=user-dev", Some(("alice", "pw"))),
    ] {
        let (status, body) = e.publish(path, auth, None, "{}").await;
        assert_eq!((status, &body), (403, &forbidden), "{path} {auth:?}");
    }
    let bearer = e
        .client
        .post(format!("{}/v1/x", e.base))
        .bearer_auth("dev1@app1")
        .send()
        .await
        .unwrap();
    assert_eq!(bearer.status().as_u16(), 403);
    assert!(e.events().is_empty(), "nothing refused was written");
}

async fn gateway(e: Endpoint) {
    let (status, _) = e
        .publish("/v1/t?as=behind", Some(("gw@app1", "gw")), None, "{}")
        .await;
    assert_eq!(status, 202);
    let (status, _) = e
        .publish("/v1/t?as=dev1", Some(("gw@app1", "gw")), None, "{}")
        .await;
    assert_eq!(status, 403, "dev1 does not name gw as its gateway");
    let (status, _) = e
        .publish("/v1/t?as=behind", Some(("dev1@app1", "secret")), None, "{}")
        .await;
    assert_eq!(status, 403);
    let events = e.events();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["device"], "behind");
    assert_eq!(events[0]["sender"], "gw");
    assert_eq!(events[0]["source"], "drogue://app1/behind");
    assert_eq!(events[0]["partitionkey"], "app1/behind");
    assert_ne!(events[0]["deviceuid"], events[0]["senderuid"]);
}
