//! The local MQTT broker: behaves as AWS IoT Core does with this project's functions
//! (the same authorizer, policies, topic scheme and ingest), on a plain TCP listener and
//! a TLS one that asks devices for client certificates.
//!
//! It runs on its own ntex system (one thread for accepting, worker threads for the
//! connections), next to the main tokio runtime that serves HTTP.

pub mod backend;
mod broker;
pub mod hub;
pub mod sessions;

use backend::Backend;
use drogue_shared::events::log::relay_acknowledgements;
use ntex_mqtt::QoS;
use ntex_service::cfg::{SharedCfg, SharedCfgBuilder};
use ntex_util::time::Seconds;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;

/// The largest payload a client may publish: IoT Core's 128 KiB (the packet may be a
/// little larger, for the topic and properties).
pub const MAX_PAYLOAD: u32 = 128 * 1024;
const MAX_PACKET: u32 = MAX_PAYLOAD + 4 * 1024;
/// QoS 1 messages a subscriber may have unacknowledged (IoT Core's limit per client;
/// an MQTT 5 client's smaller receive maximum is kept). With 64, one subscriber of
/// 100 devices waited for its acknowledgements: 55,000–62,000 msg/s against
/// 61,000–70,000 (BENCHMARKS.md).
pub const MAX_UNACKNOWLEDGED: u16 = 100;

/// How long the broker's workers may take to start.
const STARTUP: std::time::Duration = std::time::Duration::from_secs(30);
/// How long a stop may wait for connections to close and threads to end.
const SHUTDOWN: std::time::Duration = std::time::Duration::from_secs(5);

/// Where the broker listens.
pub struct Listeners {
    pub tcp: Option<TcpListener>,
    /// TLS, with the server configuration (which asks for client certificates).
    pub tls: Option<(TcpListener, Arc<rustls::ServerConfig>)>,
    /// Connection worker threads.
    pub workers: usize,
}

/// A running broker.
pub struct Broker {
    server: ntex_server::net::Server,
    thread: Option<std::thread::JoinHandle<std::io::Result<()>>>,
    tcp: Option<SocketAddr>,
    tls: Option<SocketAddr>,
}

fn mqtt_config() -> SharedCfgBuilder {
    SharedCfg::new("MQTT").add(
        ntex_mqtt::MqttServiceConfig::new()
            .set_max_qos(QoS::AtLeastOnce)
            // publishes a connection may have in flight (with 64 KiB of them; the MQTT 5
            // receive maximum); beyond, the broker stops reading from it
            .set_max_receive(broker::PUBLISHES_IN_FLIGHT as u16)
            // a publish read after the client's DISCONNECT (or close) was sent before
            // it: handled, as a plain broker does
            .set_handle_qos_after_disconnect(Some(QoS::AtLeastOnce))
            // QoS 1 messages to a client it has not acknowledged yet
            .set_max_send(MAX_UNACKNOWLEDGED)
            .set_max_size(MAX_PACKET)
            // every publish decoded whole, never streamed in chunks (a streamed one
            // could be lost when its connection ended: vendor/ntex-mqtt/PATCHED.md)
            .set_min_chunk_size(MAX_PACKET + 1)
            .set_connect_timeout(Seconds(10))
            .set_handshake_timeout(Seconds(10)),
    )
}

impl Broker {
    /// Starts the broker on its own threads. Call from within the main runtime, which
    /// the broker's decisions run on.
    pub fn start(backend: Backend, listeners: Listeners) -> std::io::Result<Self> {
        // shared by every connection (each used to hold a copy of its ~800 bytes)
        let backend = std::sync::Arc::new(backend);
        let main = tokio::runtime::Handle::current();
        let tcp = listeners
            .tcp
            .as_ref()
            .map(TcpListener::local_addr)
            .transpose()?;
        let tls = listeners
            .tls
            .as_ref()
            .map(|(l, _)| l.local_addr())
            .transpose()?;
        for listener in listeners
            .tcp
            .iter()
            .chain(listeners.tls.iter().map(|(l, _)| l))
        {
            listener.set_nonblocking(true)?;
        }
        let (started, server) = std::sync::mpsc::channel();
        // every worker builds one service per listener; the broker counts as started
        // once all workers have begun to (this narrows, without closing, the window in
        // which a stop reaches ntex before its workers are registered and so misses them;
        // `stop` is bounded for that case)
        let workers = listeners.workers.max(1);
        let services = workers * (usize::from(tcp.is_some()) + usize::from(tls.is_some()));
        let (built, built_rx) = std::sync::mpsc::channel::<()>();
        let built_tls = built.clone();
        let thread = std::thread::Builder::new()
            .name("mqtt".into())
            .spawn(move || {
                ntex_rt::System::build()
                    .name("mqtt")
                    .signals(false)
                    .build(ntex_net::DefaultRuntime)
                    .block_on(async move {
                        let mut builder = ntex_server::net::build()
                            .workers(workers)
                            .shutdown_timeout(Seconds(3))
                            .disable_signals();
                        if let Some(listener) = listeners.tcp {
                            let (backend, main) = (backend.clone(), main.clone());
                            builder = builder
                                .listen("mqtt", listener, async move |_| {
                                    let _ = built.send(());
                                    // (once per worker thread, whatever its listeners)
                                    ntex_rt::spawn(relay_acknowledgements());
                                    broker::service(backend.clone(), main.clone())
                                })?
                                .config("mqtt", mqtt_config());
                        }
                        if let Some((listener, config)) = listeners.tls {
                            builder = builder
                                .listen("mqtts", listener, async move |_| {
                                    let _ = built_tls.send(());
                                    ntex_rt::spawn(relay_acknowledgements());
                                    ntex_service::chain_factory(ntex_tls::rustls::TlsAcceptor::new(
                                        config.clone(),
                                    ))
                                    .map_err(|e| {
                                        ntex_mqtt::error::MqttError::Service(broker::BrokerError(
                                            format!("TLS: {e}"),
                                        ))
                                    })
                                    .and_then(broker::service(backend.clone(), main.clone()))
                                })?
                                .config("mqtts", mqtt_config());
                        }
                        let server = builder.run();
                        let _ = started.send(server.clone());
                        server.await
                    })
            })?;
        let server = server
            .recv()
            .map_err(|_| std::io::Error::other("the MQTT broker did not start"))?;
        let deadline = std::time::Instant::now() + STARTUP;
        for _ in 0..services {
            built_rx
                .recv_timeout(deadline.saturating_duration_since(std::time::Instant::now()))
                .map_err(|_| std::io::Error::other("the MQTT broker's workers did not start"))?;
        }
        Ok(Self {
            server,
            thread: Some(thread),
            tcp,
            tls,
        })
    }

    /// Where the plain listener is bound.
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.tcp
    }

    /// Where the TLS listener is bound.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls
    }

    /// Stops accepting, closes the connections and waits for the threads, for at most
    /// [`SHUTDOWN`] (the process may exit with a connection still closing).
    pub async fn stop(mut self) {
        let thread = self.thread.take();
        let stopped = async move {
            self.server.stop(true).await;
            if let Some(thread) = thread {
                let _ = tokio::task::spawn_blocking(move || thread.join()).await;
            }
        };
        if tokio::time::timeout(SHUTDOWN, stopped).await.is_err() {
            tracing::warn!(
                "the MQTT broker did not stop within {} s; exiting without it",
                SHUTDOWN.as_secs()
            );
        }
    }
}

/// The TLS configuration for MQTT: the HTTPS one, without its HTTP ALPN.
pub fn tls_config(https: &rustls::ServerConfig) -> Arc<rustls::ServerConfig> {
    let mut config = https.clone();
    config.alpn_protocols.clear();
    Arc::new(config)
}
