//! `drogue-local`: every function of the serverless Drogue Cloud in one process.

use drogue_local::{Config, Server};
use drogue_shared::runtime;

/// Many small, short-lived allocations on several threads: mimalloc does them several
/// times faster than the system allocator (see BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    runtime::init_tracing();
    let server = Server::start(drogue_shared::config::parse::<Config>()?).await?;
    server.run_until(runtime::shutdown_signal()).await
}
