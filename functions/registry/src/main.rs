//! The registry function: on Lambda behind the HTTP API, or on `$PORT`.

use drogue_registry::{Config, router};
use drogue_shared::runtime;
use drogue_shared::store::dynamodb::{self, DynamoStore};
use std::sync::Arc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    runtime::init_tracing();
    let config = Config::from_env()?;
    let aws = drogue_shared::runtime::aws::config_from_env().await;
    let store = DynamoStore::new(dynamodb::client(&aws), &config.table);
    runtime::run(router(Arc::new(store), config.settings)).await
}
