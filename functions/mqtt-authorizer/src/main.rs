//! The IoT Core custom authorizer: invoked by IoT Core for each MQTT CONNECT (and on
//! `$PORT` as `POST /`, for Knative and tests).

use drogue_mqtt_authorizer::{Config, IotAuthorizer};
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
    let authorizer = IotAuthorizer::new(store, &config);
    runtime::run_events(&runtime, move |event, context| {
        let authorizer = authorizer.clone();
        async move { authorizer.handle(event, &context).await }
    })
    .await
}
