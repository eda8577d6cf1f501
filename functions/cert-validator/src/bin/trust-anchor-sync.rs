//! The trust anchor sync: the target of the table's DynamoDB stream (and on `$PORT` as
//! `POST /`).

use drogue_cert_validator::anchors::TrustAnchorSync;
use drogue_cert_validator::{iot_client, table_from_env};
use drogue_shared::runtime;
use drogue_shared::store::dynamodb::{self, DynamoStore};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    runtime::init_tracing();
    let table = table_from_env()?;
    let aws = drogue_shared::runtime::aws::config_from_env().await;
    let store = DynamoStore::new(dynamodb::client(&aws), table);
    let sync = TrustAnchorSync::new(iot_client(&aws), store);
    runtime::run_events(move |event, _| {
        let sync = sync.clone();
        async move { sync.handle(event).await }
    })
    .await
}
