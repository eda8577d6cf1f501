//! The Lambda entry of the device endpoint: API Gateway events from `events/` (Basic
//! auth, and a mutual-TLS custom domain passing the client certificate), read by
//! `lambda_http` as on AWS, over DynamoDB and Kinesis (moto).

use base64::Engine;
use drogue_shared::access::Principal;
use drogue_shared::access::authz::AccessControl;
use drogue_shared::events::kinesis::KinesisSink;
use drogue_shared::model::AppName;
use drogue_shared::registry::Registry;
use drogue_tests::backend::{
    fresh_dynamo_table, fresh_kinesis_stream, kinesis_client, kinesis_records, moto_url,
};
use serde_json::json;
use std::sync::Arc;
use tower::ServiceExt;

async fn invoke(router: &axum::Router, event: &str) -> u16 {
    let request = lambda_http::request::from_str(&drogue_tests::events::event_text(event)).unwrap();
    router
        .clone()
        .oneshot(request)
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn api_gateway_events_are_published() {
    let store = Arc::new(fresh_dynamo_table().await);
    let registry = Registry::new(store.clone(), AccessControl::default());
    let owner = Principal::user("owner");
    let anchor = base64::engine::general_purpose::STANDARD
        .encode(include_str!("../testdata/pki/lambda-ca.pem"));
    let app = json!({"metadata": {"name": "from-lambda"}, "spec": {"trustAnchors": {"anchors": [{"certificate": anchor}]}}});
    registry
        .create_application(&owner, serde_json::from_value(app).unwrap())
        .await
        .unwrap();
    // a password, and the client certificate of events/http-telemetry-mtls.json
    let device = json!({"metadata": {"name": "device1"}, "spec": {"authentication": {"credentials": [
        {"pass": "hey-rodney"},
        {"cert": include_str!("../testdata/pki/device1.pem")}
    ]}}});
    registry
        .create_device(
            &owner,
            &AppName::parse("from-lambda").unwrap(),
            serde_json::from_value(device).unwrap(),
        )
        .await
        .unwrap();
    let client = kinesis_client(&moto_url());
    let stream = fresh_kinesis_stream(&client).await;
    let router = drogue_http_endpoint::router(
        store,
        Arc::new(KinesisSink::new(client.clone(), &stream)),
        drogue_http_endpoint::Settings::default(),
    );

    assert_eq!(invoke(&router, "http-telemetry-basic.json").await, 202);
    assert_eq!(invoke(&router, "http-telemetry-mtls.json").await, 202);
    assert_eq!(
        invoke(&router, "http-telemetry-bad-password.json").await,
        403
    );

    let records = kinesis_records(&client, &stream).await;
    assert_eq!(records.len(), 2, "the refused publish wrote nothing");
    let basic: serde_json::Value = serde_json::from_slice(&records[0].1).unwrap();
    assert_eq!(basic["data"], json!({"temp": 21.5}));
    let mtls: serde_json::Value = serde_json::from_slice(&records[1].1).unwrap();
    assert_eq!(mtls["subject"], "state");
    assert_eq!(mtls["device"], "device1");
    assert_eq!(mtls["dataschema"], "urn:example:state");
    assert_eq!(mtls["data_base64"], "b24=");
    assert_eq!(records[1].0, "from%2Dlambda/device1");
}
