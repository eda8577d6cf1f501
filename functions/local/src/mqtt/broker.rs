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
use super::hub::Hub;
use connect::Conn;
use ntex_io::IoBoxed;
use ntex_mqtt::error::MqttError;
use ntex_mqtt::{Control, MqttServer, Reason};
use ntex_service::cfg::SharedCfg;
use ntex_service::{Service, ServiceCtx};
use ntex_service::{ServiceFactory, fn_factory_with_config, fn_service};
use ntex_util::task::LocalWaker;
use ntex_util::time::Millis;
use std::cell::Cell;
use std::rc::Rc;
use std::sync::Arc;
use std::task::Poll;
use tokio::runtime::Handle;

/// How long a closed connection's publishes in flight may go without one of them ending
/// before the rest are dropped.
const DRAIN: Millis = Millis(5_000);

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

/// The publish service of one connection. Each publish takes its turn as it arrives,
/// before anything is awaited, and is handed to the version's `publish`.
///
/// How many publishes are in flight is limited before it, by ntex-mqtt
/// ([`PUBLISHES_IN_FLIGHT`] and 64 KiB, counted as each is decoded): beyond, the broker
/// stops reading from the client, which slows it down rather than the broker filling its
/// memory. (A readiness of its own would be asked again within each call, and a call
/// waiting on it keeps the connection's dispatcher from seeing the service ready at all.)
/// Its `shutdown` waits for the publishes in flight, which ntex-mqtt would otherwise
/// cancel when the connection ends (a client may write its publishes and close its
/// socket at once), as long as they go on ending: after [`DRAIN`] without one ending, the
/// rest are dropped with a warning.
struct Publishes<S, P, F> {
    session: ntex_mqtt::Session<S, Conn>,
    publish: fn(Conn, publish::Turn, P) -> F,
    in_flight: Rc<InFlight>,
}

/// A connection's publishes being handled.
struct InFlight {
    count: Cell<usize>,
    /// The service's shutdown, waiting for a publish to end.
    waiter: LocalWaker,
    /// The broker's publishes in flight, for the metrics.
    hub: Arc<Hub>,
}

/// Holds a publish's place among those in flight until dropped.
struct Slot(Rc<InFlight>);

impl Slot {
    fn new(in_flight: &Rc<InFlight>) -> Self {
        in_flight.count.set(in_flight.count.get() + 1);
        in_flight.hub.publish_started();
        Self(in_flight.clone())
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.count.set(self.0.count.get() - 1);
        self.0.hub.publish_ended();
        self.0.waiter.wake();
    }
}

impl<S, P, F, R> Service<P> for Publishes<S, P, F>
where
    S: 'static,
    P: 'static,
    F: Future<Output = Result<R, BrokerError>>,
{
    type Response = R;
    type Error = BrokerError;

    async fn call(&self, p: P, _: ServiceCtx<'_, Self>) -> Result<R, BrokerError> {
        let slot = Slot::new(&self.in_flight);
        let conn = Conn::clone(&self.session);
        let turn = conn.turn();
        let result = (self.publish)(conn, turn, p).await;
        drop(slot);
        result
    }

    async fn shutdown(&self) {
        loop {
            let before = self.in_flight.count.get();
            if before == 0 {
                return;
            }
            let one_ended = std::future::poll_fn(|cx| {
                if self.in_flight.count.get() < before {
                    return Poll::Ready(());
                }
                self.in_flight.waiter.register(cx.waker());
                Poll::Pending
            });
            if ntex_util::time::timeout(DRAIN, one_ended).await.is_err() {
                tracing::warn!(
                    client_id = %self.session.client.client_id,
                    publishes = before,
                    "a closed MQTT connection's publishes stopped being handled for {} s; dropped",
                    DRAIN.0 / 1000
                );
                return;
            }
        }
    }
}

/// The publish service factory of a version's connections.
fn publishes<S, P, F, R>(
    publish: fn(Conn, publish::Turn, P) -> F,
) -> impl ServiceFactory<
    P,
    ntex_mqtt::Session<S, Conn>,
    Response = R,
    Error = BrokerError,
    InitError = BrokerError,
>
where
    S: 'static,
    P: 'static,
    F: Future<Output = Result<R, BrokerError>> + 'static,
{
    fn_factory_with_config(async move |session: ntex_mqtt::Session<S, Conn>| {
        let in_flight = Rc::new(InFlight {
            count: Cell::new(0),
            waiter: LocalWaker::new(),
            hub: session.backend.hub.clone(),
        });
        Ok(Publishes {
            session,
            publish,
            in_flight,
        })
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
    MqttServer::new()
        // (the handshakes boxed: a connection's future would otherwise keep their room,
        // about 3 KB, for as long as the connection lives)
        .v3(ntex_mqtt::v3::MqttServer::new(fn_service(move |hs| {
            Box::pin(v3::handshake(b3.clone(), m3.clone(), hs))
        }))
        .protocol(controls(v3::control))
        .control(connection_control())
        .publish(publishes(v3::publish)))
        .v5(ntex_mqtt::v5::MqttServer::new(fn_service(move |hs| {
            Box::pin(v5::handshake(b5.clone(), m5.clone(), hs))
        }))
        .protocol(controls(v5::control))
        .control(connection_control())
        .publish(publishes(v5::publish)))
}
