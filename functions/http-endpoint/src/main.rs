//! The device HTTP endpoint: on Lambda behind the HTTP API (with a mutual-TLS custom
//! domain for client certificates), or on `$PORT`.

use drogue_http_endpoint::{Config, router};
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
    runtime::run(&runtime, router(store, sink, config.settings())).await
}
