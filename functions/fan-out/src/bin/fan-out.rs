//! The event fan-out: the target of the Kinesis event stream's event source mapping (and
//! on `$PORT` as `POST /`).

use drogue_fan_out::fanout::{Config, Connections, FanOut, IotCore};
use drogue_shared::access::authz::AccessControl;
use drogue_shared::commands::iot_data_client;
use drogue_shared::store::dynamodb::{self, DynamoStore};
use drogue_shared::{aws, runtime};
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
    let publisher = Arc::new(IotCore(iot_data_client(
        &aws,
        config.iot.iot_data_endpoint.as_deref(),
    )));
    let poster = config.websocket_callback_url.as_deref().map(|url| {
        Arc::new(Connections(aws::connections_client(&aws, url)))
            as Arc<dyn drogue_fan_out::fanout::ConnectionPoster>
    });
    let fan_out = FanOut::new(publisher, poster, store)
        .concurrency(config.fanout_concurrency.max(1))
        .authorizer(AccessControl::new(config.admin_role.as_str()));
    runtime::run_events(&runtime, move |event, _| {
        let fan_out = fan_out.clone();
        async move { fan_out.handle(event).await }
    })
    .await
}
