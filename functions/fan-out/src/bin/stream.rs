//! The WebSocket API's routes (`$connect`, `$disconnect`, `$default`): applications'
//! stream consumers on AWS.

// the Lambda runtime's service around the authentication's futures nests deeply
#![recursion_limit = "256"]

use drogue_fan_out::stream::{Config, StreamRoutes};
use drogue_shared::runtime;
use drogue_shared::store::dynamodb::{self, DynamoStore};

fn main() -> anyhow::Result<()> {
    runtime::block_on(start())
}

async fn start() -> anyhow::Result<()> {
    runtime::init_tracing();
    let runtime::Function { config, runtime } = runtime::Function::<Config>::parse()?;
    let aws = runtime.aws_config().await;
    let store = DynamoStore::new(dynamodb::client(&aws), config.table.as_str());
    let routes = StreamRoutes::new(store, &config);
    runtime::run_events(&runtime, move |event, _| {
        let routes = routes.clone();
        async move { routes.handle(event).await }
    })
    .await
}
