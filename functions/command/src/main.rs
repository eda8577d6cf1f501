//! The command function: on Lambda behind the management HTTP API (or, with
//! `DROGUE_COMMAND_SOURCE=mqtt`, behind the IoT rule on `command/#`), or on `$PORT`.

use drogue_command::{Config, router};
use drogue_shared::commands::{CommandService, IotDataPublisher, iot_data_client};
use drogue_shared::runtime;
use drogue_shared::store::dynamodb::{self, DynamoStore};
use std::sync::Arc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    runtime::init_tracing();
    let config = Config::from_env()?;
    let aws = drogue_shared::runtime::aws::config_from_env().await;
    let store = Arc::new(DynamoStore::new(dynamodb::client(&aws), &config.table));
    let publisher = Arc::new(IotDataPublisher::new(iot_data_client(
        &aws,
        config.iot_endpoint.as_deref(),
    )));
    let commands = CommandService::new(store.clone())
        .with_publisher(publisher)
        .with_rate_limit(config.command_rate);
    if config.from_mqtt {
        return runtime::run_events(move |event, _| {
            drogue_command::mqtt::handle(commands.clone(), event)
        })
        .await;
    }
    runtime::run(router(store, commands, config.settings)).await
}
