//! The MQTT 3.1.1 and 5 protocol side of the local broker, on ntex-mqtt: each
//! connection lives on one ntex worker thread; every decision is asked of the
//! [`Backend`] on the main runtime.
//!
//! Both versions take one connection path: [`connect`] (CONNECT and the session),
//! [`publish`], [`subscribe`] and [`deliver`] (the session's messages to the client)
//! decide on version-neutral inputs; [`v3`] and [`v5`] only translate ntex-mqtt's
//! packets to them and the answers back.
//!
//! - CONNECT: the authorizer; refusals get "bad user name or password" (or "server
//!   unavailable" when the registry cannot be reached).
//! - PUBLISH: the device's rate limit (MQTT 5 QoS 1: PUBACK "quota exceeded" beyond
//!   it; otherwise the publish waits until the device may publish again), the client's
//!   policy, then the ingest; a QoS 1 publish is acknowledged once the event is in the
//!   stream. A connection's publishes are handled in order. MQTT 5
//!   clients get a failure PUBACK (with a reason string) for a refused QoS 1 publish;
//!   MQTT 3.1.1 has no such thing, so the connection is closed, as IoT Core does for a
//!   publish outside the policy.
//! - SUBSCRIBE: the client's policy, per filter; MQTT 5 subscriptions with the user
//!   property `content-mode=binary` get events in binary mode.
//! - DISCONNECT: a clean one discards the last will; otherwise it is published.

mod connect;
mod deliver;
mod publish;
mod subscribe;
mod v3;
mod v5;

pub use publish::PUBLISHES_IN_FLIGHT;

use super::backend::Backend;
use connect::Conn;
use ntex_io::IoBoxed;
use ntex_mqtt::error::MqttError;
use ntex_mqtt::{Control, MqttServer, Reason};
use ntex_service::cfg::SharedCfg;
use ntex_service::{ServiceFactory, fn_factory_with_config, fn_service};
use ntex_util::services::inflight::InFlight;
use std::sync::Arc;
use tokio::runtime::Handle;

/// Why a connection is closed.
#[derive(Debug, Clone)]
pub struct BrokerError(pub String);

impl std::fmt::Display for BrokerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BrokerError {}

impl From<()> for BrokerError {
    fn from(_: ()) -> Self {
        Self("the service is not available".into())
    }
}

/// The publish service of a version's connections: each publish takes its turn as it
/// arrives, before anything is awaited, and is handed to the version's `publish`.
fn publishes<Sink, P, R, F>(
    publish: fn(Conn, publish::Turn, P) -> F,
) -> impl ServiceFactory<
    P,
    ntex_mqtt::Session<Sink, Conn>,
    Response = R,
    Error = BrokerError,
    InitError = BrokerError,
>
where
    Sink: 'static,
    P: 'static,
    F: Future<Output = Result<R, BrokerError>>,
{
    fn_factory_with_config(async move |session: ntex_mqtt::Session<Sink, Conn>| {
        Ok(fn_service(move |p: P| {
            let conn = Conn::clone(&session);
            let turn = conn.turn();
            publish(conn, turn, p)
        }))
    })
}

/// The control service of a version's connections (SUBSCRIBE, UNSUBSCRIBE, DISCONNECT,
/// ...): each message is handed to the version's `control`.
fn controls<Sink, M, R, F>(
    control: fn(Conn, M) -> F,
) -> impl ServiceFactory<
    M,
    ntex_mqtt::Session<Sink, Conn>,
    Response = R,
    Error = BrokerError,
    InitError = BrokerError,
>
where
    Sink: 'static,
    M: 'static,
    F: Future<Output = Result<R, BrokerError>>,
{
    fn_factory_with_config(async move |session: ntex_mqtt::Session<Sink, Conn>| {
        Ok(fn_service(move |msg: M| {
            control(Conn::clone(&session), msg)
        }))
    })
}

/// The connection control service of both versions (write back-pressure, a
/// connection's end): nothing to answer; an end by the broker's own error is logged
/// (ntex-mqtt's default service warns at every connection's end, whatever ended it).
fn connection_control<Sink, R>() -> impl ServiceFactory<
    Control<BrokerError>,
    ntex_mqtt::Session<Sink, Conn>,
    Response = Option<R>,
    Error = BrokerError,
    InitError = BrokerError,
>
where
    Sink: 'static,
    R: 'static,
{
    fn_factory_with_config(async |_: ntex_mqtt::Session<Sink, Conn>| {
        Ok(fn_service(async |control: Control<BrokerError>| {
            match control {
                Control::Stop(Reason::Error(e)) => {
                    tracing::warn!(error = %e.get_ref(), "an MQTT connection ended by an error");
                }
                Control::Stop(Reason::Protocol(e)) => {
                    tracing::debug!(error = %e.get_ref(), "an MQTT client broke the protocol");
                }
                Control::Stop(Reason::PeerGone(_)) | Control::WrBackpressure(_) => {}
            }
            Ok(None)
        }))
    })
}

/// The MQTT service for one listener: 3.1.1 and 5, told apart by the CONNECT.
// (the factories are closures: their types cannot be named in an alias)
#[allow(clippy::type_complexity)]
pub fn service(
    backend: Arc<Backend>,
    main: Handle,
) -> MqttServer<
    impl ServiceFactory<
        IoBoxed,
        SharedCfg,
        Response = (),
        Error = MqttError<BrokerError>,
        InitError = (),
    > + use<>,
    impl ServiceFactory<
        IoBoxed,
        SharedCfg,
        Response = (),
        Error = MqttError<BrokerError>,
        InitError = (),
    > + use<>,
    BrokerError,
    (),
> {
    let (b3, m3, b5, m5) = (backend.clone(), main.clone(), backend, main);
    let in_flight = InFlight::new(PUBLISHES_IN_FLIGHT);
    MqttServer::new()
        // (the handshakes boxed: a connection's future would otherwise keep their room,
        // about 3 KB, for as long as the connection lives)
        .v3(ntex_mqtt::v3::MqttServer::new(fn_service(move |hs| {
            Box::pin(v3::handshake(b3.clone(), m3.clone(), hs))
        }))
        .protocol(controls(v3::control))
        .control(connection_control())
        .publish(ntex_service::apply(in_flight, publishes(v3::publish))))
        .v5(ntex_mqtt::v5::MqttServer::new(fn_service(move |hs| {
            Box::pin(v5::handshake(b5.clone(), m5.clone(), hs))
        }))
        .protocol(controls(v5::control))
        .control(connection_control())
        .publish(ntex_service::apply(in_flight, publishes(v5::publish))))
}
