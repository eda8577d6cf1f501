//! The device CoAP endpoint on a cluster: a long-running UDP server (Lambda and Knative
//! take no UDP), on `DROGUE_COAP_BIND` (default `[::]:5683`).

use drogue_coap_endpoint::{Backend, CoapCore, Config, Limits, udp};
use drogue_shared::commands::CommandService;
use drogue_shared::device_auth::DeviceAuthenticator;
use drogue_shared::rate_limit::PublishLimiter;
use drogue_shared::runtime;
use drogue_shared::store::Store;
use drogue_shared::store::dynamodb::{self, DynamoStore};
use std::sync::Arc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    runtime::init_tracing();
    let runtime::Function { config, runtime } = runtime::Function::<Config>::parse()?;
    let aws = runtime.aws_config().await;
    let store: Arc<dyn Store> = Arc::new(DynamoStore::new(
        dynamodb::client(&aws),
        config.table.as_str(),
    ));
    let backend = Backend {
        auth: DeviceAuthenticator::new(store.clone()),
        sink: config.events.sink(&aws)?,
        commands: CommandService::new(store),
        limiter: PublishLimiter::new(config.publish_rate.limit()),
        instance: config.instance.as_str().to_owned(),
    };
    let socket = tokio::net::UdpSocket::bind(config.bind).await?;
    tracing::info!(address = %socket.local_addr()?, "serving CoAP");
    let core = CoapCore::new(backend, Limits::default());
    udp::serve(socket, core, runtime::shutdown_signal()).await?;
    Ok(())
}
