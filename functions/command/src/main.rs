//! The command function: on Lambda behind the management HTTP API (or, with
//! `DROGUE_COMMAND_SOURCE=mqtt`, behind the IoT rule on `command/#`), or on `$PORT`.

use drogue_command::{Config, router};
use drogue_shared::commands::{CommandService, IotDataPublisher, iot_data_client};
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
    let publisher = Arc::new(IotDataPublisher::new(iot_data_client(
        &aws,
        config.iot.iot_data_endpoint.as_deref(),
    )));
    let commands = CommandService::new(store.clone())
        .with_publisher(publisher)
        .with_rate_limit(config.command_rate.limit());
    if config.from_mqtt() {
        return runtime::run_events(&runtime, move |event, _| {
            drogue_command::mqtt::handle(commands.clone(), event)
        })
        .await;
    }
    runtime::run(&runtime, router(store, commands, config.settings())).await
}
