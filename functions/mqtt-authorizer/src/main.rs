//! The IoT Core custom authorizer: invoked by IoT Core for each MQTT CONNECT (and on
//! `$PORT` as `POST /`, for Knative and tests).

use drogue_mqtt_authorizer::{Authorizer, Config};
use drogue_shared::runtime;
use drogue_shared::store::dynamodb::{self, DynamoStore};
use std::sync::Arc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    runtime::init_tracing();
    let config = Config::from_env()?;
    let aws = drogue_shared::runtime::aws::config_from_env().await;
    let store = Arc::new(DynamoStore::new(dynamodb::client(&aws), &config.table));
    let authorizer = Authorizer::new(store, &config);
    runtime::run_events(move |event, context| {
        let authorizer = authorizer.clone();
        async move { authorizer.handle(event, &context).await }
    })
    .await
}
