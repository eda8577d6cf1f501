//! An unreachable backend gives 503 with a JSON body, quickly; never a hang or a 500.

use drogue_registry::Settings;
use drogue_shared::store::dynamodb::DynamoStore;
use drogue_tests::backend::dynamo_client;
use std::sync::Arc;
use std::time::Duration;

/// Asks the API, over a DynamoDB store at `endpoint`, for the applications.
async fn list_apps_with_store_at(endpoint: &str) -> reqwest::Response {
    let store = DynamoStore::new(dynamo_client(endpoint), "table");
    let router = drogue_registry::router(Arc::new(store), Settings::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });

    let token = drogue_shared::access::token_format::generate().token;
    tokio::time::timeout(
        Duration::from_secs(30),
        reqwest::Client::new()
            .get(format!("{base}/api/registry/v1alpha1/apps"))
            .basic_auth("admin", Some(token))
            .send(),
    )
    .await
    .expect("an answer, not a hang")
    .unwrap()
}

async fn assert_unavailable(response: reqwest::Response) {
    assert_eq!(response.status().as_u16(), 503);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"], "ServiceUnavailable");
    assert!(
        !body["message"].as_str().unwrap().contains("dispatch"),
        "no internal error text: {body}"
    );
}

#[tokio::test]
async fn an_unreachable_store_answers_503() {
    // nothing listens on this port
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    assert_unavailable(list_apps_with_store_at(&endpoint).await).await;
}

#[tokio::test]
async fn a_store_that_never_answers_gives_503_within_the_timeout() {
    // accepts connections (the backlog does) but never answers
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", silent.local_addr().unwrap());
    assert_unavailable(list_apps_with_store_at(&endpoint).await).await;
    drop(silent);
}
