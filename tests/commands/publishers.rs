//! Commands to MQTT devices: the local bus, and AWS IoT Core's data plane (moto).

use super::store::command;
use drogue_shared::commands::{
    CommandPublisher, CommandService, IotDataPublisher, LocalCommandBus,
};
use drogue_tests::backend::{fresh_dynamo_table, moto_url};
use std::sync::Arc;

#[tokio::test]
async fn the_local_bus_carries_commands_to_their_topic() {
    let bus = LocalCommandBus::default();
    let mut subscriber = bus.subscribe();
    let store = Arc::new(fresh_dynamo_table().await);
    let service = CommandService::new(store).with_publisher(Arc::new(bus.clone()));
    let c = command("device 1", "reboot", 0, 60);
    service.drop_off(&c).await.unwrap();
    let published = subscriber.try_recv().expect("published at once");
    assert_eq!(published.topic, "cmd/app1/device 1/reboot");
    assert_eq!(published.command, c);
}

/// moto keeps no published messages where a client can read them, but its recorder
/// shows every request it got.
async fn recorded_requests(moto: &str) -> Vec<serde_json::Value> {
    let text = reqwest::get(format!("{moto}/moto-api/recorder/download-recording"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

#[tokio::test]
async fn commands_are_published_through_the_iot_data_plane() {
    let moto = moto_url();
    let client = reqwest::Client::new();
    client
        .post(format!("{moto}/moto-api/recorder/start-recording"))
        .send()
        .await
        .unwrap();
    let config = aws_sdk_iotdataplane::Config::builder()
        .behavior_version(aws_sdk_iotdataplane::config::BehaviorVersion::latest())
        .region(aws_sdk_iotdataplane::config::Region::new("us-east-1"))
        .endpoint_url(&moto)
        .credentials_provider(aws_sdk_iotdataplane::config::Credentials::new(
            "test", "test", None, None, "tests",
        ))
        .build();
    let publisher = IotDataPublisher::new(aws_sdk_iotdataplane::Client::from_conf(config));
    let mut c = command(&format!("dev-{}", uuid::Uuid::new_v4()), "set-temp", 0, 60);
    c.payload = br#"{"t":20}"#.to_vec();
    publisher.publish(&c).await.expect("moto takes the publish");

    let expected = format!("/topics/cmd%2Fapp1%2F{}%2Fset-temp", c.device);
    let requests = recorded_requests(&moto).await;
    client
        .post(format!("{moto}/moto-api/recorder/stop-recording"))
        .send()
        .await
        .unwrap();
    let request = requests
        .iter()
        .find(|r| r["url"].as_str().is_some_and(|u| u.contains(&expected)))
        .unwrap_or_else(|| panic!("no publish to {expected} among {} requests", requests.len()));
    assert!(request["url"].as_str().unwrap().contains("qos=1"));
    use base64::Engine;
    let body = base64::engine::general_purpose::STANDARD
        .decode(request["body"].as_str().unwrap())
        .unwrap();
    assert_eq!(body, br#"{"t":20}"#);
}
