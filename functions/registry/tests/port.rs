//! The registry binary, not started by the Lambda runtime, serves on `$PORT` (Knative
//! and other container platforms), over DynamoDB (moto).

use std::process::Stdio;
use std::time::Duration;

#[tokio::test]
async fn the_binary_serves_on_port_over_dynamodb() {
    let moto = std::env::var("DROGUE_TEST_MOTO_URL")
        .expect("DROGUE_TEST_MOTO_URL is not set: run the suite with `tests/run`");
    let table = format!("port-test-{}", std::process::id());
    let store = drogue_shared::store::dynamodb::DynamoStore::new(
        drogue_tests::backend::dynamo_client(&moto),
        &table,
    );
    store.create_table().await.unwrap();
    let token = drogue_shared::access::create_token(
        &store,
        &drogue_shared::access::Principal::user("admin"),
        None,
    )
    .await
    .unwrap()
    .token;

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_registry"))
        .env_remove("AWS_LAMBDA_RUNTIME_API")
        .env("PORT", port.to_string())
        .env("DROGUE_TABLE", &table)
        .env("AWS_ENDPOINT_URL", &moto)
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();

    let client = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let mut created = None;
    for _ in 0..200 {
        let attempt = client
            .post(format!("{base}/api/registry/v1alpha1/apps"))
            .basic_auth("admin", Some(&token))
            .json(&serde_json::json!({"metadata": {"name": "on-port"}}))
            .send()
            .await;
        if let Ok(response) = attempt {
            created = Some(response.status().as_u16());
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(created, Some(201), "the binary answers on $PORT");
    let listed: serde_json::Value = client
        .get(format!("{base}/api/registry/v1alpha1/apps"))
        .basic_auth("admin", Some(&token))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed[0]["metadata"]["name"], "on-port");
    child.kill().await.unwrap();
}
