//! The Lambda entry of the command function: an API Gateway event from `events/`, read by
//! `lambda_http` as on AWS, over DynamoDB and the IoT data plane (moto).

use chrono::Utc;
use drogue_shared::access::Principal;
use drogue_shared::access::authz::AccessControl;
use drogue_shared::commands::{CommandService, IotDataPublisher};
use drogue_shared::model::AppName;
use drogue_shared::registry::Registry;
use drogue_shared::store::CommandStore;
use drogue_tests::backend::{fresh_dynamo_table, moto_url};
use drogue_tests::events::{event_text, store_fixture_token};
use serde_json::json;
use std::sync::Arc;
use tower::ServiceExt;

#[tokio::test]
async fn an_api_gateway_drop_off_is_kept_for_the_device() {
    let store = Arc::new(fresh_dynamo_table().await);
    let mut admin = Principal::user("admin");
    admin.roles.push("drogue-admin".into());
    store_fixture_token(store.as_ref(), admin.roles.clone()).await;
    let registry = Registry::new(store.clone(), AccessControl::default());
    let input = |v| serde_json::from_value(v).unwrap();
    registry
        .create_application(&admin, input(json!({"metadata": {"name": "from-lambda"}})))
        .await
        .unwrap();
    registry
        .create_device(
            &admin,
            &AppName::parse("from-lambda").unwrap(),
            input(json!({"metadata": {"name": "device1"}})),
        )
        .await
        .unwrap();

    let config = aws_sdk_iotdataplane::Config::builder()
        .behavior_version(aws_sdk_iotdataplane::config::BehaviorVersion::latest())
        .region(aws_sdk_iotdataplane::config::Region::new("us-east-1"))
        .endpoint_url(moto_url())
        .credentials_provider(aws_sdk_iotdataplane::config::Credentials::new(
            "test", "test", None, None, "tests",
        ))
        .build();
    let publisher = Arc::new(IotDataPublisher::new(
        aws_sdk_iotdataplane::Client::from_conf(config),
    ));
    let commands = CommandService::new(store.clone()).with_publisher(publisher);
    let router =
        drogue_command::router(store.clone(), commands, drogue_command::Settings::default());

    let request = lambda_http::request::from_str(&event_text("command-drop-off.json")).unwrap();
    let response = router.oneshot(request).await.unwrap();
    assert_eq!(response.status().as_u16(), 202);
    let request_id = response.headers()["request"].to_str().unwrap().to_owned();

    let taken = store
        .take_command("from-lambda", "device1", Utc::now())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(taken.id, request_id);
    assert_eq!(taken.name, "reboot");
    assert_eq!(taken.payload, br#"{"delay": 5}"#);
    assert!(taken.expires <= Utc::now() + chrono::Duration::seconds(60));
}
