//! The local runner: mounts every function on one HTTP listener (and an HTTPS one that
//! asks devices for client certificates) over an embedded, persistent store and event
//! log under a data directory, and bootstraps an administrator.

mod bootstrap;
mod housekeeping;
mod metrics;
pub mod mqtt;
mod stream;
mod tls;

use anyhow::Context;
use clap::Parser;
use drogue_registry::{QuotaArgs, Settings};
use drogue_shared::access::authz::AccessControl;
use drogue_shared::access::issuer::{Issuer, IssuerConfig, UserAdmin};
use drogue_shared::access::oidc::{OidcConfig, OidcVerifier};
use drogue_shared::commands::external::ExternalSender;
use drogue_shared::commands::{CommandService, Signals};
use drogue_shared::config::AdminRole;
use drogue_shared::device_auth::DeviceAuthenticator;
use drogue_shared::events::DEFAULT_INSTANCE;
use drogue_shared::events::log::{DEFAULT_RETENTION, EventLog};
use drogue_shared::mqtt::{MqttAuthorizer, MqttIngest};
use drogue_shared::rate_limit::{CommandRate, PublishLimiter, PublishRate};
use drogue_shared::registry::{Changes, Registry};
use drogue_shared::store::Store;
use drogue_shared::store::embedded::EmbeddedStore;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::net::TcpListener;

/// The start-up summary: what listens where, where the data and the administrator's
/// token are; one line each.
fn log_listeners(
    http: SocketAddr,
    https: Option<SocketAddr>,
    mqtt: Option<SocketAddr>,
    mqtts: Option<SocketAddr>,
    coap: Option<SocketAddr>,
    coaps: Option<SocketAddr>,
    dir: &std::path::Path,
) {
    let line = |address: Option<SocketAddr>, scheme: &str, what: &str| match address {
        Some(address) => format!("{scheme}://{address} ({what})"),
        None => "off".to_owned(),
    };
    let http = line(
        Some(http),
        "http",
        "management API, device endpoint, streams",
    );
    let https = line(https, "https", "device endpoint, client certificates");
    let mqtt = line(mqtt, "mqtt", "devices and applications");
    let mqtts = line(
        mqtts,
        "mqtts",
        "devices and applications, client certificates",
    );
    tracing::info!("HTTP   {http}");
    tracing::info!("HTTPS  {https}");
    tracing::info!("MQTT   {mqtt}");
    tracing::info!("MQTTS  {mqtts}");
    tracing::info!("CoAP   {}", line(coap, "coap", "device endpoint, UDP"));
    tracing::info!(
        "CoAPS  {}",
        line(
            coaps,
            "coaps",
            "device endpoint, DTLS: PSK, client certificates"
        )
    );
    tracing::info!(
        "data   {} (administrator token in {})",
        dir.display(),
        dir.join(bootstrap::TOKEN_FILE).display()
    );
    tracing::info!("drogue-local is ready");
}

/// Command-line options of `drogue-local`.
#[derive(Debug, Clone, Parser)]
#[command(name = "drogue-local", version, about)]
pub struct Config {
    /// Where the data is kept (created if missing).
    #[arg(long, env = "DROGUE_DATA_DIR", default_value = ".drogue")]
    pub data_dir: PathBuf,
    /// The address of the HTTP listener (management API, device endpoint, streams).
    #[arg(long, env = "DROGUE_HTTP_BIND", default_value = "127.0.0.1:8080")]
    pub http_bind: SocketAddr,
    /// The address of the HTTPS listener, which asks devices for client certificates;
    /// `off` for none.
    #[arg(long, env = "DROGUE_HTTPS_BIND", default_value = "127.0.0.1:8443")]
    pub https_bind: String,
    /// The HTTPS server certificate chain (PEM); without one, a self-signed certificate
    /// for localhost is made and kept in the data directory.
    #[arg(long, env = "DROGUE_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The key of `--tls-cert` (PEM).
    #[arg(long, env = "DROGUE_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// The URL clients reach the HTTP listener at, if not the one they used.
    #[arg(long, env = "DROGUE_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// An OpenID Connect issuer (e.g. a Keycloak realm URL) whose bearer tokens are
    /// accepted besides access tokens.
    #[arg(long, env = "DROGUE_OIDC_ISSUER")]
    pub oidc_issuer: Option<String>,
    /// The audience (`aud` or `azp`) bearer tokens must be for: the client id. Its client
    /// roles count besides the realm roles. Set it with any issuer: without it, tokens
    /// the issuer made for any of its clients are accepted.
    #[arg(long, env = "DROGUE_OIDC_AUDIENCE", requires = "oidc_issuer")]
    pub oidc_audience: Option<String>,
    /// Without `--oidc-issuer`, the built-in issuer's login page knows the administrator
    /// (`admin`) by this password when the administrator is made (first start); unset, a
    /// password is generated and printed once.
    #[arg(long, env = "DROGUE_ADMIN_PASSWORD", hide_env_values = true)]
    pub admin_password: Option<String>,
    /// Seconds the built-in issuer's access tokens are good for (refresh tokens: 30 days).
    #[arg(long, env = "DROGUE_SSO_TOKEN_LIFETIME", default_value_t = 300, value_parser = clap::value_parser!(u64).range(10..))]
    pub sso_token_lifetime: u64,
    /// The role that may do everything; the bootstrapped administrator holds it
    /// (`--admin-role`, DROGUE_ADMIN_ROLE).
    #[command(flatten)]
    pub admin_role: AdminRole,
    /// The address of the MQTT listener (MQTT 3.1.1 and 5); `off` for none.
    #[arg(long, env = "DROGUE_MQTT_BIND", default_value = "127.0.0.1:1883")]
    pub mqtt_bind: String,
    /// The address of the MQTT over TLS listener, which asks devices for client
    /// certificates (same server certificate as HTTPS); `off` for none.
    #[arg(long, env = "DROGUE_MQTTS_BIND", default_value = "127.0.0.1:8883")]
    pub mqtts_bind: String,
    /// The UDP address of the CoAP device endpoint (`coap://`, RFC 7252); `off` for none.
    #[arg(long, env = "DROGUE_COAP_BIND", default_value = "127.0.0.1:5683")]
    pub coap_bind: String,
    /// The UDP address of CoAP over DTLS (`coaps://`): devices' `psk` credentials, and
    /// client certificates asked for but optional (same server certificate as HTTPS);
    /// `off` for none.
    #[arg(long, env = "DROGUE_COAPS_BIND", default_value = "127.0.0.1:5684")]
    pub coaps_bind: String,
    /// Threads serving MQTT connections.
    #[arg(long, env = "DROGUE_MQTT_WORKERS", default_value_t = 2)]
    pub mqtt_workers: usize,
    /// The registry's quotas (`--max-applications-per-user`,
    /// `--max-devices-per-application`, `--max-devices-per-user`), as for the registry
    /// function.
    #[command(flatten)]
    pub quotas: QuotaArgs,
    /// The publish rate limit per device (`--publish-rate`, `--publish-burst`), over HTTP
    /// and MQTT together.
    #[command(flatten)]
    pub publish_rate: PublishRate,
    /// The command rate limit per application (`--command-rate`, `--command-burst`).
    #[command(flatten)]
    pub command_rate: CommandRate,
    /// Live MQTT connections one device may hold (under its name, aliases and unique
    /// usernames as client ids); a further one takes over the oldest. 0 for no limit.
    #[arg(long, env = "DROGUE_MAX_CONNECTIONS_PER_DEVICE", default_value_t = mqtt::hub::DEFAULT_CONNECTIONS_PER_DEVICE)]
    pub max_connections_per_device: usize,
    /// Live MQTT connections of one user's tenancy: the devices of the applications the
    /// user owns and the user's own application clients together; a further one is
    /// refused (MQTT 5: CONNACK 0x97 quota exceeded; 3.1.1: server unavailable). 0 for
    /// no limit.
    #[arg(long, env = "DROGUE_MAX_CONNECTIONS_PER_USER", default_value_t = mqtt::hub::DEFAULT_CONNECTIONS_PER_USER)]
    pub max_connections_per_user: usize,
    /// Open WebSocket event streams (`/stream/...`) of one user; a further one is refused
    /// (429 `QuotaExceeded`). 0 for no limit.
    #[arg(long, env = "DROGUE_MAX_STREAMS_PER_USER", default_value_t = stream::DEFAULT_STREAMS_PER_USER)]
    pub max_streams_per_user: usize,
    /// Seconds a WebSocket stream's client may stay silent (it is pinged every half of
    /// that, and a pong answers once the client has read what was sent before the ping)
    /// or leave the server waiting to send, before its stream is closed.
    #[arg(long, env = "DROGUE_STREAM_CLIENT_TIMEOUT", default_value_t = stream::DEFAULT_CLIENT_TIMEOUT.as_secs(), value_parser = clap::value_parser!(u64).range(1..))]
    pub stream_client_timeout: u64,
    /// Seconds a WebSocket stream group's position is kept after its last stream ended
    /// (removed at the hourly housekeeping sweep); default a week.
    #[arg(long, env = "DROGUE_STREAM_GROUP_EXPIRY", default_value_t = stream::DEFAULT_GROUP_EXPIRY.as_secs(), value_parser = clap::value_parser!(u64).range(1..))]
    pub stream_group_expiry: u64,
    /// Lets devices' external command endpoints (`spec.commands`) be on loopback and
    /// private addresses, for a test bed standing in for The Things Network; never where
    /// tenants are strangers (their URLs would reach into this machine's network).
    #[arg(long, env = "DROGUE_ALLOW_PRIVATE_COMMAND_TARGETS")]
    pub allow_private_command_targets: bool,
    /// Seconds a client may take to send a request's line and headers on the HTTP and
    /// HTTPS listeners (and a kept-alive connection may idle) before it is closed.
    #[arg(long, env = "DROGUE_HEADER_READ_TIMEOUT", default_value_t = drogue_shared::runtime::HEADER_READ_TIMEOUT.as_secs(), value_parser = clap::value_parser!(u64).range(1..))]
    pub header_read_timeout: u64,
    /// Threads that verify device password hashes (bcrypt, SHA-512-crypt), apart from
    /// the threads serving requests; default: half the cores, at least one.
    #[arg(long, env = "DROGUE_PASSWORD_CHECK_THREADS")]
    pub password_check_threads: Option<usize>,
    /// Events kept per application in the local event log.
    #[arg(long, env = "DROGUE_EVENT_RETENTION", default_value_t = DEFAULT_RETENTION)]
    pub event_retention: u64,
    /// Once listening, write the bound addresses here as JSON (`{"http": .., "https": ..,
    /// "mqtt": .., "mqtts": .., "coap": .., "coaps": ..}`, `null` for a listener that is off),
    /// for scripts and tests that bind port 0.
    #[arg(long)]
    pub ready_file: Option<PathBuf>,
}

/// Whether an issuer is configured without an audience: then bearer tokens the issuer
/// made for any of its clients are accepted, and no client roles count.
fn lacks_audience(config: &Config) -> bool {
    config.oidc_issuer.as_deref().is_some_and(|i| !i.is_empty())
        && config.oidc_audience.as_deref().is_none_or(str::is_empty)
}

fn warn_without_audience(config: &Config) {
    if lacks_audience(config) {
        tracing::warn!(
            issuer = config.oidc_issuer.as_deref().unwrap_or_default(),
            "an OIDC issuer is configured without an audience (--oidc-audience, \
             DROGUE_OIDC_AUDIENCE): bearer tokens the issuer made for ANY of its clients are \
             accepted, and no client's roles count (only realm roles and groups). Set the \
             audience to the client id of this API."
        );
    }
}

/// A started local runner.
pub struct Server {
    http: TcpListener,
    https: Option<(TcpListener, Arc<rustls::ServerConfig>)>,
    router: axum::Router,
    admin: bootstrap::AdminCredentials,
    events: EventLog,
    /// The MQTT broker, unless both its listeners are off.
    broker: Option<mqtt::Broker>,
    /// The sweeps of expired sessions and deleted applications' groups.
    housekeeping: tokio::task::JoinHandle<()>,
    mqtt_hub: Arc<mqtt::hub::Hub>,
    /// The CoAP endpoint's socket and message layer, unless it is off.
    coap: Option<(tokio::net::UdpSocket, Arc<drogue_coap_endpoint::CoapCore>)>,
    /// The CoAP over DTLS server and its PSK lookup, unless it is off.
    coaps: Option<(
        drogue_coap_dtls::DtlsServer,
        drogue_coap_endpoint::dtls::RegistryPsk,
        Arc<drogue_coap_endpoint::CoapCore>,
    )>,
    header_read_timeout: std::time::Duration,
}

impl Server {
    /// Opens the store and the event log, bootstraps the administrator and binds the
    /// listeners.
    pub async fn start(config: Config) -> anyhow::Result<Self> {
        let dir = &config.data_dir;
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create the data directory {}", dir.display()))?;
        let store = EmbeddedStore::open(dir.join("drogue.redb"))
            .with_context(|| format!("cannot open the store in {}", dir.display()))?;
        let events = EventLog::open(dir.join("events.redb"), config.event_retention)
            .with_context(|| format!("cannot open the event log in {}", dir.display()))?;
        let admin = bootstrap::ensure_admin(&store, dir, config.admin_role.as_str()).await?;
        let store: Arc<dyn Store> = Arc::new(store);

        warn_without_audience(&config);
        // the MQTT listeners first, so that discovery can announce where they are
        let mqtt_tcp = std_listener(&config.mqtt_bind, "--mqtt-bind")?;
        let mqtts_listener = std_listener(&config.mqtts_bind, "--mqtts-bind")?;
        let mqtt_announced = mqtts_listener
            .as_ref()
            .or(mqtt_tcp.as_ref())
            .and_then(|l| l.local_addr().ok())
            .map(|addr| announced_mqtt(config.public_url.as_deref(), addr));
        let coap_socket = std_udp_socket(&config.coap_bind, "--coap-bind")?;
        let coaps_socket = std_udp_socket(&config.coaps_bind, "--coaps-bind")?;
        let announce_udp = |socket: &Option<std::net::UdpSocket>, scheme: &str| {
            socket
                .as_ref()
                .and_then(|s| s.local_addr().ok())
                .map(|addr| {
                    let at = announced_mqtt(config.public_url.as_deref(), addr);
                    let host = if at.host.contains(':') {
                        format!("[{}]", at.host)
                    } else {
                        at.host
                    };
                    format!("{scheme}://{host}:{}", at.port)
                })
        };
        let coap_announced = announce_udp(&coap_socket, "coap");
        let coaps_announced = announce_udp(&coaps_socket, "coaps");
        let http = TcpListener::bind(config.http_bind)
            .await
            .with_context(|| format!("cannot listen on {}", config.http_bind))?;
        // bearer tokens: of the configured issuer, or of the built-in one
        let (oidc, verifier, sso) = match config.oidc_issuer.clone().filter(|i| !i.is_empty()) {
            Some(issuer) => {
                let oidc = OidcConfig::new(issuer, config.oidc_audience.clone());
                let verifier = Arc::new(OidcVerifier::new(oidc.clone()));
                (Some(oidc), Some(verifier), None)
            }
            None => {
                let sso = built_in_issuer(&config, http.local_addr()?)?;
                (
                    Some(sso.oidc_config()),
                    Some(Arc::new(sso.verifier())),
                    Some(sso),
                )
            }
        };
        let settings = Settings {
            public_url: config.public_url.clone(),
            http_url: None,
            oidc: oidc.clone(),
            admin_role: config.admin_role.as_str().to_owned(),
            websocket_path: Some(stream::PATH.into()),
            mqtt: mqtt_announced,
            coap: coap_announced,
            coaps: coaps_announced,
            quotas: config.quotas.quotas(),
            write_rate: config.quotas.write_rate(),
        };
        // registry writes make device authentication look again at once
        let changes = Changes::default();
        let registry = Registry::new(
            store.clone(),
            AccessControl::new(config.admin_role.as_str()),
        )
        .with_changes(changes.clone())
        .with_quotas(settings.quotas)
        .with_write_rate(settings.write_rate)
        .with_change_events(Arc::new(events.clone()), DEFAULT_INSTANCE);
        let stream_groups = stream::Groups::default();
        let stream_state = stream::StreamState {
            registry: registry.clone(),
            oidc: verifier.clone(),
            log: events.clone(),
            groups: stream_groups.clone(),
            open: stream::OpenStreams::with_limit(config.max_streams_per_user),
            positions: stream::Positions::start(events.clone())
                .context("cannot start the stream groups' writer")?,
            client_timeout: std::time::Duration::from_secs(config.stream_client_timeout),
            group_refresh: std::time::Duration::from_secs(
                (config.stream_group_expiry / 4).clamp(1, 3600),
            ),
        };
        let hub = Arc::new(
            mqtt::hub::Hub::with_limits(mqtt::hub::ConnectionLimits {
                per_device: config.max_connections_per_device,
                per_user: config.max_connections_per_user,
            })
            .with_feeder(subscribers_behind_from(events.clone())),
        );
        // commands: MQTT subscribers get them from the broker's hub, routed as they are
        // dropped off (in the sender's task, through no queue shared with other
        // applications' commands), HTTP devices from the store, woken in-process when
        // one arrives
        let commands = CommandService::new(store.clone())
            .with_publisher(hub.clone())
            .with_signals(Signals::default())
            .with_rate_limit(config.command_rate.limit());
        let commands = if config.allow_private_command_targets {
            tracing::warn!(
                "devices' external command endpoints may be on loopback and private addresses"
            );
            commands.with_external_sender(ExternalSender::allowing_private_addresses())
        } else {
            commands
        };
        let command = drogue_command::router_with(drogue_command::CommandState {
            registry: registry.clone(),
            tokens: store.clone(),
            oidc: verifier.clone(),
            commands: commands.clone(),
        });
        let mut device_auth = DeviceAuthenticator::new(store.clone()).with_changes(changes.clone());
        if let Some(threads) = config.password_check_threads {
            device_auth = device_auth.with_password_check_threads(threads);
        }
        let limiter = PublishLimiter::new(config.publish_rate.limit());
        let mqtt_backend = mqtt::backend::Backend {
            authorizer: MqttAuthorizer::new(
                device_auth.clone(),
                registry.clone(),
                verifier.clone(),
            ),
            ingest: MqttIngest::new(
                device_auth.clone(),
                Arc::new(events.clone()),
                commands.clone(),
                DEFAULT_INSTANCE,
            ),
            applications: store.clone(),
            commands: commands.clone(),
            sink: Arc::new(events.clone()),
            hub,
            instance: DEFAULT_INSTANCE.into(),
            log: events.clone(),
            sessions: mqtt::sessions::SessionStore::start(events.clone())
                .context("cannot start the MQTT sessions' store")?,
            limiter: limiter.clone(),
            registry_changes: Some(changes),
        };
        let swept = Arc::new(housekeeping::Swept::default());
        // a message layer per transport: exchanges are kept per peer address, and a
        // spoofed plain UDP datagram must never reach a DTLS peer's exchanges (its
        // cached answers, its block-wise uploads)
        let coap_backend = drogue_coap_endpoint::Backend {
            auth: device_auth.clone(),
            sink: Arc::new(events.clone()),
            commands: commands.clone(),
            limiter: limiter.clone(),
            instance: DEFAULT_INSTANCE.into(),
        };
        let coap_core = || {
            drogue_coap_endpoint::CoapCore::new(
                coap_backend.clone(),
                drogue_coap_endpoint::Limits::default(),
            )
        };
        let coap = match coap_socket {
            Some(socket) => {
                socket.set_nonblocking(true)?;
                Some((tokio::net::UdpSocket::from_std(socket)?, coap_core()))
            }
            None => None,
        };
        let coap_addr = coap.as_ref().and_then(|(s, _)| s.local_addr().ok());
        let coaps = match coaps_socket {
            Some(socket) => {
                socket.set_nonblocking(true)?;
                let (chain_pem, key_pem) = tls::certificate_pem(&config)?;
                let psk = drogue_coap_endpoint::dtls::RegistryPsk {
                    auth: device_auth.clone(),
                };
                let server = drogue_coap_dtls::DtlsServer::new(
                    tokio::net::UdpSocket::from_std(socket)?,
                    drogue_coap_dtls::DtlsConfig {
                        certificate: Some(drogue_coap_dtls::ServerCertificate {
                            chain_pem,
                            key_pem,
                        }),
                        psk: Some(Arc::new(psk.clone())),
                        client_certificates: true,
                        ..drogue_coap_dtls::DtlsConfig::default()
                    },
                )
                .context("cannot start CoAP over DTLS")?;
                Some((server, psk, coap_core()))
            }
            None => None,
        };
        let coaps_addr = coaps.as_ref().map(|(s, _, _)| s.local_addr());
        let endpoint = drogue_http_endpoint::router_with(drogue_http_endpoint::EndpointState {
            auth: device_auth.clone(),
            sink: Arc::new(events.clone()),
            commands,
            settings: Arc::new(drogue_http_endpoint::Settings::default()),
            limiter,
        });
        let positions = stream_state.positions.clone();
        let router = drogue_registry::router_for(registry, settings, verifier.clone())
            .merge(endpoint)
            .merge(command)
            .merge(stream::router(stream_state))
            .merge(metrics::router(metrics::Metrics {
                device_auth,
                events: events.clone(),
                mqtt: mqtt_backend.hub.clone(),
                swept: swept.clone(),
                positions,
            }));
        let router = match sso {
            Some(sso) => router.merge(drogue_shared::access::issuer::router(
                sso,
                UserAdmin {
                    tokens: store.clone(),
                    oidc: verifier.clone(),
                    admin_role: config.admin_role.as_str().to_owned(),
                },
            )),
            None => router,
        };
        let https = match config.https_bind.as_str() {
            "off" => None,
            bind => {
                let addr: SocketAddr = bind.parse().with_context(|| {
                    format!("--https-bind takes an address or `off`, not {bind:?}")
                })?;
                let tls = tls::server_config(&config)?;
                let listener = TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("cannot listen on {addr}"))?;
                Some((listener, tls))
            }
        };
        let https_addr = https.as_ref().and_then(|(l, _)| l.local_addr().ok());
        let mqtt_tls = match (&https, mqtts_listener) {
            (_, None) => None,
            (Some((_, tls)), Some(listener)) => Some((listener, mqtt::tls_config(tls))),
            (None, Some(listener)) => {
                Some((listener, mqtt::tls_config(&*tls::server_config(&config)?)))
            }
        };
        let broker = match (mqtt_tcp, mqtt_tls) {
            (None, None) => None,
            (tcp, tls) => Some(
                mqtt::Broker::start(
                    mqtt_backend.clone(),
                    mqtt::Listeners {
                        tcp,
                        tls,
                        workers: config.mqtt_workers,
                    },
                )
                .context("cannot start the MQTT broker")?,
            ),
        };
        let mqtt_addr = broker.as_ref().and_then(mqtt::Broker::tcp_addr);
        let mqtts_addr = broker.as_ref().and_then(mqtt::Broker::tls_addr);
        mqtt_routing(mqtt_backend.hub.clone(), &events)?;
        let housekeeping = housekeeping::Sweeper {
            sessions: mqtt_backend.sessions.clone(),
            hub: mqtt_backend.hub.clone(),
            log: events.clone(),
            applications: store.clone(),
            swept,
            groups: stream_groups,
            group_expiry: std::time::Duration::from_secs(config.stream_group_expiry),
        }
        .start();
        log_listeners(
            http.local_addr()?,
            https_addr,
            mqtt_addr,
            mqtts_addr,
            coap_addr,
            coaps_addr,
            dir,
        );
        if let Some(path) = &config.ready_file {
            let quoted =
                |a: Option<SocketAddr>| a.map_or("null".to_owned(), |a| format!("\"{a}\""));
            let ready = format!(
                "{{\"http\":\"{}\",\"https\":{},\"mqtt\":{},\"mqtts\":{},\"coap\":{},\"coaps\":{}}}\n",
                http.local_addr()?,
                quoted(https_addr),
                quoted(mqtt_addr),
                quoted(mqtts_addr),
                quoted(coap_addr),
                quoted(coaps_addr),
            );
            std::fs::write(path, ready)
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
        Ok(Self {
            http,
            https,
            router,
            admin,
            events,
            broker,
            housekeeping,
            mqtt_hub: mqtt_backend.hub,
            coap,
            coaps,
            header_read_timeout: std::time::Duration::from_secs(config.header_read_timeout),
        })
    }

    /// Where the HTTP listener is bound.
    pub fn http_addr(&self) -> SocketAddr {
        self.http
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Where the HTTPS listener is bound, if there is one.
    pub fn https_addr(&self) -> Option<SocketAddr> {
        self.https.as_ref().and_then(|(l, _)| l.local_addr().ok())
    }

    /// Where the MQTT listener is bound, if there is one.
    pub fn mqtt_addr(&self) -> Option<SocketAddr> {
        self.broker.as_ref().and_then(mqtt::Broker::tcp_addr)
    }

    /// Where the MQTT over TLS listener is bound, if there is one.
    pub fn mqtts_addr(&self) -> Option<SocketAddr> {
        self.broker.as_ref().and_then(mqtt::Broker::tls_addr)
    }

    /// Where the CoAP endpoint is bound, if there is one.
    pub fn coap_addr(&self) -> Option<SocketAddr> {
        self.coap.as_ref().and_then(|(s, _)| s.local_addr().ok())
    }

    /// Where CoAP over DTLS is bound, if it is on.
    pub fn coaps_addr(&self) -> Option<SocketAddr> {
        self.coaps.as_ref().map(|(s, _, _)| s.local_addr())
    }

    /// The MQTT broker's sessions.
    pub fn mqtt_hub(&self) -> &Arc<mqtt::hub::Hub> {
        &self.mqtt_hub
    }

    /// The bootstrapped administrator's `user:token`.
    pub fn admin_credentials(&self) -> (&str, &str) {
        (&self.admin.user, &self.admin.token)
    }

    /// The event log, for in-process subscribers.
    pub fn events(&self) -> &EventLog {
        &self.events
    }

    /// Serves until `shutdown` completes.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let wait = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|stopped| *stopped).await;
        };
        let https = self.https.map(|(listener, config)| {
            let (router, stopped) = (self.router.clone(), wait(stopped.clone()));
            tokio::spawn(drogue_shared::runtime::tls::serve_tls_with(
                listener,
                config,
                router,
                stopped,
                self.header_read_timeout,
            ))
        });
        let coap = self.coap.map(|(socket, core)| {
            tokio::spawn(drogue_coap_endpoint::udp::serve(
                socket,
                core,
                wait(stopped.clone()),
            ))
        });
        let coaps = self.coaps.map(|(server, psk, core)| {
            tokio::spawn(drogue_coap_endpoint::dtls::serve(
                server,
                core,
                Some(psk),
                wait(stopped.clone()),
            ))
        });
        let http = drogue_shared::runtime::serve_with(
            self.http,
            self.router,
            wait(stopped),
            self.header_read_timeout,
        );
        let signal = async move {
            shutdown.await;
            let _ = stop.send(true);
        };
        let (served, ()) = tokio::join!(http, signal);
        self.housekeeping.abort();
        if let Some(broker) = self.broker {
            broker.stop().await;
        }
        if let Some(https) = https {
            https.await??;
        }
        if let Some(coap) = coap {
            coap.await??;
        }
        if let Some(coaps) = coaps {
            coaps.await?;
        }
        served
    }
}

/// The MQTT endpoint discovery announces: the public URL's host (else `localhost` for a
/// loopback or unspecified address, which the self-signed certificate names, else the
/// address) and the bound port.
fn announced_mqtt(public_url: Option<&str>, addr: SocketAddr) -> drogue_registry::MqttEndpoint {
    let from_url = public_url.and_then(|url| {
        let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
        let authority = rest.split('/').next().unwrap_or_default();
        let host = match authority.rsplit_once(':') {
            Some((host, port)) if port.chars().all(|c| c.is_ascii_digit()) => host,
            _ => authority,
        };
        (!host.is_empty()).then(|| {
            host.trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned()
        })
    });
    let host = from_url.unwrap_or_else(|| {
        if addr.ip().is_loopback() || addr.ip().is_unspecified() {
            "localhost".to_owned()
        } else {
            addr.ip().to_string()
        }
    });
    drogue_registry::MqttEndpoint {
        host,
        port: addr.port(),
    }
}

/// The built-in OpenID Connect issuer at `<public URL>/sso` (or the HTTP listener's
/// address), its key and users in the data directory. Prints the administrator's password
/// when it was generated now.
fn built_in_issuer(config: &Config, http: SocketAddr) -> anyhow::Result<Issuer> {
    let base = match &config.public_url {
        Some(url) if !url.is_empty() => url.trim_end_matches('/').to_owned(),
        _ if http.ip().is_unspecified() => format!("http://localhost:{}", http.port()),
        _ => format!("http://{http}"),
    };
    let mut settings = IssuerConfig::new(
        format!("{base}/sso"),
        &config.data_dir,
        config.admin_role.as_str(),
    );
    settings.admin_password = config.admin_password.clone();
    settings.access_token_lifetime = std::time::Duration::from_secs(config.sso_token_lifetime);
    let (issuer, generated) = Issuer::open(settings).context("cannot start the built-in issuer")?;
    if let Some(password) = generated {
        println!(
            "Log in with `drg login {base}` as {} and the \
             password (shown once, kept hashed):\n\n    {password}\n",
            drogue_shared::access::issuer::ADMIN_USER
        );
    }
    Ok(issuer)
}

/// A listener for `bind` (an address, or `off`).
fn std_listener(bind: &str, flag: &str) -> anyhow::Result<Option<std::net::TcpListener>> {
    if bind == "off" {
        return Ok(None);
    }
    let addr: SocketAddr = bind
        .parse()
        .with_context(|| format!("{flag} takes an address or `off`, not {bind:?}"))?;
    let listener =
        std::net::TcpListener::bind(addr).with_context(|| format!("cannot listen on {addr}"))?;
    Ok(Some(listener))
}

/// A UDP socket for `bind` (an address, or `off`).
fn std_udp_socket(bind: &str, flag: &str) -> anyhow::Result<Option<std::net::UdpSocket>> {
    if bind == "off" {
        return Ok(None);
    }
    let addr: SocketAddr = bind
        .parse()
        .with_context(|| format!("{flag} takes an address or `off`, not {bind:?}"))?;
    let socket =
        std::net::UdpSocket::bind(addr).with_context(|| format!("cannot listen on UDP {addr}"))?;
    Ok(Some(socket))
}

/// How the broker's subscriptions that fall behind go on: from the event log, on the
/// main runtime, untracked (a clean session keeps no cursor).
fn subscribers_behind_from(events: EventLog) -> mqtt::hub::Feeder {
    let main = tokio::runtime::Handle::current();
    Box::new(move |cursor, mode, queue, handoff| {
        mqtt::sessions::start_feed(
            &events,
            &main,
            cursor,
            mode,
            queue,
            mqtt::sessions::Fed::Behind(handoff),
        )
    })
}

/// Hands the event log's events to the broker's sessions on the log's writer thread as
/// each group is committed (routing takes a read lock and fills the sessions' queues
/// without waiting, and a hop to another thread would wake it for every group).
fn mqtt_routing(hub: Arc<mqtt::hub::Hub>, events: &EventLog) -> anyhow::Result<()> {
    anyhow::ensure!(
        events.on_commit(Box::new(move |event| {
            hub.event(event);
        })),
        "the event log already routes its events elsewhere"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(args: &[&str]) -> Config {
        Config::try_parse_from(std::iter::once("drogue-local").chain(args.iter().copied())).unwrap()
    }

    #[test]
    fn the_announced_mqtt_host_is_the_public_one() {
        let addr: SocketAddr = "127.0.0.1:8883".parse().unwrap();
        let at = |url| {
            let e = announced_mqtt(url, addr);
            (e.host, e.port)
        };
        assert_eq!(at(None), ("localhost".into(), 8883));
        assert_eq!(
            at(Some("https://iot.example.com:8443/x")),
            ("iot.example.com".into(), 8883)
        );
        assert_eq!(at(Some("http://[::1]:8080")), ("::1".into(), 8883));
        let other: SocketAddr = "192.0.2.3:1883".parse().unwrap();
        assert_eq!(announced_mqtt(None, other).host, "192.0.2.3");
    }

    #[test]
    fn an_issuer_without_an_audience_is_warned_about() {
        let issuer = ["--oidc-issuer", "https://sso/realms/r"];
        assert!(lacks_audience(&config(&issuer)));
        assert!(lacks_audience(&config(
            &[&issuer[..], &["--oidc-audience", ""]].concat()
        )));
        assert!(!lacks_audience(&config(
            &[&issuer[..], &["--oidc-audience", "drogue"]].concat()
        )));
        assert!(!lacks_audience(&config(&[])), "no issuer, no bearer tokens");
    }
}
