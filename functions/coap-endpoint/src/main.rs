//! The device CoAP endpoint on a cluster: a long-running UDP server (Lambda and Knative
//! take no UDP), on `DROGUE_COAP_BIND` (default `[::]:5683`); with a DTLS certificate
//! (`DROGUE_COAPS_CERTIFICATE`, `DROGUE_COAPS_KEY`) also CoAP over DTLS on
//! `DROGUE_COAPS_BIND` (default `[::]:5684`).

use drogue_coap_dtls::{DtlsConfig, DtlsServer, ServerCertificate};
use drogue_coap_endpoint::dtls::{self, RegistryPsk};
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
    let auth = DeviceAuthenticator::new(store.clone());
    let backend = Backend {
        auth: auth.clone(),
        sink: config.events.sink(&aws)?,
        commands: CommandService::new(store),
        limiter: PublishLimiter::new(config.publish_rate.limit()),
        instance: config.instance.as_str().to_owned(),
    };
    let socket = tokio::net::UdpSocket::bind(config.bind).await?;
    tracing::info!(address = %socket.local_addr()?, "serving CoAP");
    // a message layer per transport: exchanges are kept per peer address, and a spoofed
    // plain UDP datagram must never reach a DTLS peer's exchanges
    let core = CoapCore::new(backend.clone(), Limits::default());
    let shutdown = runtime::shutdown_signal();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let wait = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stopped| *stopped).await;
    };
    let coaps = match (&config.coaps_certificate, &config.coaps_key) {
        (Some(certificate), Some(key)) => {
            let psk = RegistryPsk { auth };
            let server = DtlsServer::new(
                tokio::net::UdpSocket::bind(config.coaps_bind).await?,
                DtlsConfig {
                    certificate: Some(ServerCertificate {
                        chain_pem: std::fs::read(certificate)?,
                        key_pem: std::fs::read(key)?,
                    }),
                    psk: Some(Arc::new(psk.clone())),
                    client_certificates: true,
                    ..DtlsConfig::default()
                },
            )?;
            tracing::info!(address = %server.local_addr(), "serving CoAP over DTLS");
            Some(tokio::spawn(dtls::serve(
                server,
                CoapCore::new(backend, Limits::default()),
                Some(psk),
                wait(stopped.clone()),
            )))
        }
        _ => None,
    };
    let udp = udp::serve(socket, core, wait(stopped));
    let signal = async move {
        shutdown.await;
        let _ = stop.send(true);
    };
    let (served, ()) = tokio::join!(udp, signal);
    if let Some(coaps) = coaps {
        coaps.await?;
    }
    served?;
    Ok(())
}
