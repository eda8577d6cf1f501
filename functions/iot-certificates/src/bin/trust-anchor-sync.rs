//! The consumer of the table's DynamoDB stream (and on `$PORT` as `POST /`): trust
//! anchors into IoT Core, revocation of device certificates, registry change events into
//! the event stream (`K_SINK` when set, else the Kinesis stream `DROGUE_EVENT_STREAM`,
//! with `instance` `DROGUE_INSTANCE`).
//!
//! Under Lambda, failed records are reported in `batchItemFailures`; on `$PORT`, where
//! the caller retries whole batches, a batch with a failed record is an error.

use drogue_iot_certificates::StreamConfig;
use drogue_iot_certificates::anchors::TrustAnchorSync;
use drogue_iot_certificates::changes::RegistryChanges;
use drogue_iot_certificates::revocation::Revocation;
use drogue_iot_certificates::stream::{StreamConsumer, SyncError};
use drogue_shared::store::dynamodb::{self, DynamoStore};
use drogue_shared::{aws, runtime};

fn main() -> anyhow::Result<()> {
    runtime::block_on(start())
}

async fn start() -> anyhow::Result<()> {
    runtime::init_tracing();
    let runtime::Function { config, runtime } = runtime::Function::<StreamConfig>::parse()?;
    let aws = runtime.aws_config().await;
    let store = DynamoStore::new(dynamodb::client(&aws), config.table.as_str());
    let iot = aws::iot_client(&aws);
    let sink = config.events.sink(&aws)?;
    let consumer = StreamConsumer::new(
        TrustAnchorSync::new(iot.clone(), store.clone()),
        Revocation::new(iot, store.clone()),
        RegistryChanges::new(store, sink, config.instance.as_str()),
    );
    let on_lambda = runtime::on_lambda();
    runtime::run_events(&runtime, move |event, _| {
        let consumer = consumer.clone();
        async move {
            let answer = consumer.handle(event).await?;
            if !on_lambda && answer.has_failures() {
                return Err(SyncError::RecordsFailed(
                    answer
                        .batch_item_failures
                        .into_iter()
                        .map(|f| f.item_identifier)
                        .collect(),
                ));
            }
            Ok(answer)
        }
    })
    .await
}
