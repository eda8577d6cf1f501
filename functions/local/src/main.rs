//! `drogue-local`: every function of the serverless Drogue Cloud in one process.

use clap::Parser;
use drogue_local::{Config, Server};
use drogue_shared::runtime;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    runtime::init_tracing();
    let server = Server::start(Config::parse()).await?;
    server.run_until(runtime::shutdown_signal()).await
}
