//! The Lambda entry: API Gateway HTTP API events from `events/`, read by `lambda_http`
//! as on AWS, answered by the registry's router over DynamoDB (moto).

use drogue_registry::Settings;
use drogue_tests::backend::fresh_dynamo_table;
use drogue_tests::events::{event_text, store_fixture_token};
use http_body_util::BodyExt;
use std::sync::Arc;
use tower::ServiceExt;

async fn invoke(
    router: &axum::Router,
    event: &str,
) -> (u16, axum::http::HeaderMap, serde_json::Value) {
    let request = lambda_http::request::from_str(&event_text(event))
        .unwrap_or_else(|e| panic!("{event}: {e}"));
    let response = router.clone().oneshot(request).await.unwrap();
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    let value = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
    (parts.status.as_u16(), parts.headers, value)
}

#[tokio::test]
async fn api_gateway_events_are_answered() {
    let store = fresh_dynamo_table().await;
    store_fixture_token(&store, vec![]).await;
    let router = drogue_registry::router(Arc::new(store), Settings::default());

    let (status, headers, _) = invoke(&router, "registry-create-app.json").await;
    assert_eq!(status, 201);
    assert_eq!(
        headers["location"],
        "https://abc123.execute-api.eu-west-1.amazonaws.com/api/registry/v1alpha1/apps/from-lambda"
    );
    let (status, _, listed) = invoke(&router, "registry-list-apps.json").await;
    assert_eq!(status, 200);
    assert_eq!(listed[0]["metadata"]["name"], "from-lambda");
    assert_eq!(listed.as_array().unwrap().len(), 1);

    let (status, _, _) = invoke(&router, "registry-create-device.json").await;
    assert_eq!(status, 201);
    let (status, _, device) = invoke(&router, "registry-get-device.json").await;
    assert_eq!(status, 200);
    let password = &device["spec"]["authentication"]["credentials"][0]["pass"];
    assert!(
        password["sha512"].as_str().unwrap().starts_with("$6$"),
        "{password}"
    );

    let (status, _, _) = invoke(&router, "registry-delete-app.json").await;
    assert_eq!(status, 204);
    let (status, _, _) = invoke(&router, "registry-get-device.json").await;
    assert_eq!(status, 404);
}
