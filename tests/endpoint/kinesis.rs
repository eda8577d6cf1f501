//! On AWS: DynamoDB and Kinesis (moto). Events land in the stream as structured JSON,
//! keyed by `{app}/{device}`; an unreachable stream answers 503 and writes nothing.

use super::setup::{populate, serve};
use drogue_shared::events::kinesis::KinesisSink;
use drogue_tests::backend::{
    fresh_dynamo_table, fresh_kinesis_stream, kinesis_client, kinesis_records, moto_url,
};
use std::sync::Arc;

#[tokio::test]
async fn events_go_to_kinesis() {
    let store = Arc::new(fresh_dynamo_table().await);
    populate(store.clone()).await;
    let client = kinesis_client(&moto_url());
    let stream = fresh_kinesis_stream(&client).await;
    let base = serve(store, Arc::new(KinesisSink::new(client.clone(), &stream))).await;

    let http = reqwest::Client::new();
    for (i, (user, pw, query)) in [("dev1@app1", "secret", ""), ("gw@app1", "gw", "?as=behind")]
        .iter()
        .enumerate()
    {
        let response = http
            .post(format!("{base}/v1/telemetry{query}"))
            .basic_auth(user, Some(pw))
            .json(&serde_json::json!({"n": i}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 202);
    }
    let records = kinesis_records(&client, &stream).await;
    assert_eq!(records.len(), 2);
    let keys: Vec<&str> = records.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["app1/dev1", "app1/behind"]);
    let event: serde_json::Value = serde_json::from_slice(&records[1].1).unwrap();
    assert_eq!(event["specversion"], "1.0");
    assert_eq!(event["device"], "behind");
    assert_eq!(event["sender"], "gw");
    assert_eq!(event["data"], serde_json::json!({"n": 1}));
}

#[tokio::test]
async fn an_unreachable_stream_answers_503() {
    let store = Arc::new(fresh_dynamo_table().await);
    populate(store.clone()).await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let base = serve(
        store,
        Arc::new(KinesisSink::new(kinesis_client(&endpoint), "gone")),
    )
    .await;
    let response = reqwest::Client::new()
        .post(format!("{base}/v1/telemetry"))
        .basic_auth("dev1@app1", Some("secret"))
        .body("1")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 503);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["code"], 503);
    assert_eq!(body["error"], "ServiceUnavailable");

    // and a stream that does not exist is no better
    let client = kinesis_client(&moto_url());
    let store = Arc::new(fresh_dynamo_table().await);
    populate(store.clone()).await;
    let base = serve(store, Arc::new(KinesisSink::new(client, "no-such-stream"))).await;
    let response = reqwest::Client::new()
        .post(format!("{base}/v1/telemetry"))
        .basic_auth("dev1@app1", Some("secret"))
        .body("1")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 503);
}

#[tokio::test]
async fn an_unreachable_store_answers_503_and_publishes_nothing() {
    use drogue_shared::store::dynamodb::DynamoStore;
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let store = Arc::new(DynamoStore::new(
        drogue_tests::backend::dynamo_client(&endpoint),
        "gone",
    ));
    let client = kinesis_client(&moto_url());
    let stream = fresh_kinesis_stream(&client).await;
    let base = serve(store, Arc::new(KinesisSink::new(client.clone(), &stream))).await;
    let response = reqwest::Client::new()
        .post(format!("{base}/v1/telemetry"))
        .basic_auth("dev1@app1", Some("secret"))
        .body("1")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 503);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"], "ServiceUnavailable");
    assert!(kinesis_records(&client, &stream).await.is_empty());
}
