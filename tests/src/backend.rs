//! The two storage backends, ready for a test.

use aws_sdk_dynamodb::config::{BehaviorVersion, Credentials, Region};
use drogue_shared::store::Store;
use drogue_shared::store::dynamodb::DynamoStore;
use drogue_shared::store::embedded::EmbeddedStore;
use std::sync::Arc;

/// The environment variable that holds the URL of moto's server; the test command
/// (`tests/run`) starts the server and sets it.
pub const MOTO_URL_VAR: &str = "DROGUE_TEST_MOTO_URL";

/// Which store a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Embedded,
    DynamoDb,
}

/// A fresh, empty store; dropping it removes its files (embedded).
pub struct TestStore {
    pub store: Arc<dyn Store>,
    _dir: Option<tempfile::TempDir>,
}

impl Backend {
    pub const ALL: [Backend; 2] = [Backend::Embedded, Backend::DynamoDb];

    /// A fresh, empty store of this backend.
    pub async fn store(self) -> TestStore {
        match self {
            Self::Embedded => {
                let dir = tempfile::tempdir().expect("a temporary directory");
                let store = EmbeddedStore::open(dir.path().join("test.redb"))
                    .expect("the embedded store opens");
                TestStore {
                    store: Arc::new(store),
                    _dir: Some(dir),
                }
            }
            Self::DynamoDb => TestStore {
                store: Arc::new(fresh_dynamo_table().await),
                _dir: None,
            },
        }
    }
}

/// The URL of moto's server. Fails the test, with the way to fix it, when unset.
pub fn moto_url() -> String {
    std::env::var(MOTO_URL_VAR).unwrap_or_else(|_| {
        panic!(
            "{MOTO_URL_VAR} is not set: run the suite with `tests/run`, which starts moto's server"
        )
    })
}

/// A DynamoDB client for an endpoint, with test credentials.
pub fn dynamo_client(endpoint: &str) -> aws_sdk_dynamodb::Client {
    let config = aws_sdk_dynamodb::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(Credentials::new("test", "test", None, None, "tests"))
        .timeout_config(drogue_shared::store::dynamodb::timeouts())
        .build();
    aws_sdk_dynamodb::Client::from_conf(config)
}

/// A DynamoDB store on a new table in moto.
pub async fn fresh_dynamo_table() -> DynamoStore {
    let table = format!("drogue-test-{}", uuid::Uuid::new_v4());
    let store = DynamoStore::new(dynamo_client(&moto_url()), table);
    store.create_table().await.expect("moto creates the table");
    store
}

/// A Kinesis client for an endpoint, with test credentials.
pub fn kinesis_client(endpoint: &str) -> aws_sdk_kinesis::Client {
    let config = aws_sdk_kinesis::Config::builder()
        .behavior_version(aws_sdk_kinesis::config::BehaviorVersion::latest())
        .region(aws_sdk_kinesis::config::Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(aws_sdk_kinesis::config::Credentials::new(
            "test", "test", None, None, "tests",
        ))
        .timeout_config(drogue_shared::store::dynamodb::timeouts())
        .build();
    aws_sdk_kinesis::Client::from_conf(config)
}

/// A new one-shard Kinesis stream in moto; its name.
pub async fn fresh_kinesis_stream(client: &aws_sdk_kinesis::Client) -> String {
    let name = format!("drogue-test-{}", uuid::Uuid::new_v4());
    let created = client
        .create_stream()
        .stream_name(&name)
        .shard_count(1)
        .send()
        .await;
    match created {
        Ok(_) => name,
        // made by an attempt whose answer came too late, which the SDK then tried again
        Err(err)
            if err
                .as_service_error()
                .is_some_and(|err| err.is_resource_in_use_exception()) =>
        {
            name
        }
        Err(err) => panic!("moto creates the stream: {err:?}"),
    }
}

/// Every record of a one-shard stream, as Kinesis gives it.
pub async fn kinesis_stream_records(
    client: &aws_sdk_kinesis::Client,
    stream: &str,
) -> Vec<aws_sdk_kinesis::types::Record> {
    let shards = client
        .list_shards()
        .stream_name(stream)
        .send()
        .await
        .unwrap();
    let shard = shards.shards()[0].shard_id().to_owned();
    let iterator = client
        .get_shard_iterator()
        .stream_name(stream)
        .shard_id(shard)
        .shard_iterator_type(aws_sdk_kinesis::types::ShardIteratorType::TrimHorizon)
        .send()
        .await
        .unwrap();
    client
        .get_records()
        .shard_iterator(iterator.shard_iterator().unwrap())
        .send()
        .await
        .unwrap()
        .records
}

/// Every record of a one-shard stream: (partition key, data).
pub async fn kinesis_records(
    client: &aws_sdk_kinesis::Client,
    stream: &str,
) -> Vec<(String, Vec<u8>)> {
    kinesis_stream_records(client, stream)
        .await
        .iter()
        .map(|r| {
            (
                r.partition_key().unwrap_or_default().to_owned(),
                r.data().as_ref().to_vec(),
            )
        })
        .collect()
}

/// An IoT control plane client for an endpoint, with test credentials.
pub fn iot_client(endpoint: &str) -> aws_sdk_iot::Client {
    let config = aws_sdk_iot::Config::builder()
        .behavior_version(aws_sdk_iot::config::BehaviorVersion::latest())
        .region(aws_sdk_iot::config::Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(aws_sdk_iot::config::Credentials::new(
            "test", "test", None, None, "tests",
        ))
        .timeout_config(drogue_shared::store::dynamodb::timeouts())
        .build();
    aws_sdk_iot::Client::from_conf(config)
}
