//! The registry function: on Lambda behind the HTTP API, or on `$PORT`.

use drogue_registry::{Config, router};
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
    let store = DynamoStore::new(dynamodb::client(&aws), config.table.as_str());
    runtime::run(&runtime, router(Arc::new(store), config.settings())).await
}
