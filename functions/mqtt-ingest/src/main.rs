//! The MQTT ingest function: the target of the IoT topic rules on `dt/#` and command
//! answers (and on `$PORT` as `POST /`).

use drogue_mqtt_ingest::{Config, Ingest};
use drogue_shared::runtime;
use drogue_shared::store::dynamodb::{self, DynamoStore};
use std::sync::Arc;

fn main() -> anyhow::Result<()> {
    runtime::block_on(start())
}

async fn start() -> anyhow::Result<()> {
    runtime::init_tracing();
    let runtime::Function { config, runtime } = runtime::Function::<Config>::parse()?;
    let aws = runtime.aws_config().await;
    let store = Arc::new(DynamoStore::new(
        dynamodb::client(&aws),
        config.table.as_str(),
    ));
    let sink = config.events.sink(&aws)?;
    let ingest = Ingest::new(store, sink, &config);
    runtime::run_events(&runtime, move |event, _| {
        let ingest = ingest.clone();
        async move { ingest.handle(event).await }
    })
    .await
}
