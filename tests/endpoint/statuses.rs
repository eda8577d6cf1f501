//! Status codes and bodies of the endpoint, and the payload rules.

use super::setup::Endpoint;
use drogue_tests::suite::Case;
use serde_json::json;

pub const CASES: &[Case<Endpoint>] = &[
    ("payloads are typed, checked and sniffed", |e| {
        Box::pin(payloads(e))
    }),
    ("bad input gets a JSON error and writes nothing", |e| {
        Box::pin(bad_input(e))
    }),
];

const DEV: Option<(&str, &str)> = Some(("dev1@app1", "secret"));

async fn payloads(e: Endpoint) {
    assert_eq!(
        e.publish("/v1/j", DEV, Some("application/json"), r#"{"a":1}"#)
            .await
            .0,
        202
    );
    assert_eq!(
        e.publish("/v1/s", DEV, Some("application/senml+json"), "[1,2]")
            .await
            .0,
        202
    );
    assert_eq!(
        e.publish("/v1/t", DEV, Some("text/plain"), "hello").await.0,
        202
    );
    assert_eq!(e.publish("/v1/n", DEV, None, r#"{"b":2}"#).await.0, 202);
    assert_eq!(
        e.publish("/v1/o", DEV, None, vec![0xffu8, 0x00]).await.0,
        202
    );
    assert_eq!(
        e.publish("/v1/temp/room/1?data_schema=urn:x", DEV, None, "1")
            .await
            .0,
        202
    );
    let events = e.events();
    let typed: Vec<(&str, &str)> = events
        .iter()
        .map(|v| {
            (
                v["subject"].as_str().unwrap(),
                v["datacontenttype"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        typed,
        [
            ("j", "application/json"),
            ("s", "application/json"),
            ("t", "text/plain"),
            ("n", "application/json"),
            ("o", "application/octet-stream"),
            ("temp", "application/json"),
        ]
    );
    assert_eq!(events[0]["data"], json!({"a": 1}));
    assert_eq!(events[2]["data_base64"], "aGVsbG8=");
    assert_eq!(events[4]["data_base64"], "/wA=");
    assert_eq!(events[5]["topic"], "temp/room/1");
    assert_eq!(events[5]["dataschema"], "urn:x");
    for v in &events {
        assert_eq!(v["type"], "io.drogue.event.v1");
        assert_eq!(v["application"], "app1");
        assert_eq!(v["instance"], "drogue");
        assert!(v["applicationuid"].is_string() && v["deviceuid"].is_string());
    }
}

async fn bad_input(e: Endpoint) {
    let (status, body) = e
        .publish("/v1/j", DEV, Some("application/json"), "{not json")
        .await;
    assert_eq!(status, 406);
    assert_eq!(body["code"], 406);
    assert_eq!(body["error"], "InvalidFormat");

    let (status, body) = e
        .publish("/v1/big", DEV, None, vec![b'x'; 64 * 1024 + 1])
        .await;
    assert_eq!(status, 413);
    assert_eq!(body["error"], "PayloadTooLarge");
    assert_eq!(
        e.publish("/v1/fits", DEV, None, vec![b'x'; 64 * 1024])
            .await
            .0,
        202
    );

    let (status, body) = e.publish("/v1/c?ct=soon", DEV, None, "1").await;
    assert_eq!(status, 400);
    assert_eq!(body["error"], "InvalidRequest");

    let get = e
        .client
        .get(format!("{}/v1/x", e.base))
        .send()
        .await
        .unwrap();
    assert_eq!(get.status().as_u16(), 405);
    assert_eq!(
        e.events().len(),
        1,
        "only the payload that fits was written"
    );
}
