//! The MQTT 3.1.1 and 5 protocol side of the local broker, on ntex-mqtt: each
//! connection lives on one ntex worker thread; every decision is asked of the
//! [`Backend`] on the main runtime.
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

use super::backend::{Backend, Client, Connected, Message, Outcome, Will};
use super::hub::{ContentMode, Push, SessionHandle, Track};
use super::sessions::{self, Cursor, SessionState};
use drogue_shared::mqtt::authorizer::ConnectDecision;
use drogue_shared::mqtt::{MqttConnect, MqttIdentity, Refusal};
use ntex_bytes::{ByteString, Bytes};
use ntex_io::IoBoxed;
use ntex_mqtt::error::MqttError;
use ntex_mqtt::{MqttServer, QoS, v3, v5};
use ntex_service::cfg::SharedCfg;
use ntex_service::{ServiceFactory, fn_factory_with_config, fn_service};
use ntex_util::services::inflight::InFlight;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use tokio::runtime::Handle;
use tokio::sync::{mpsc, oneshot};

/// How often a live session's access is decided again (the device lookup cache's period).
pub const RECHECK_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

/// Publishes of one connection handled at once (each waits for the one before it to
/// reach the stream); beyond, the broker stops reading from the client, which slows it
/// down rather than the broker filling its memory.
pub const PUBLISHES_IN_FLIGHT: usize = 16;

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

/// An error of the MQTT 5 publish service closes the connection (refusals that can be
/// told in a PUBACK are answered with one before it gets here).
impl TryFrom<BrokerError> for v5::PublishAck {
    type Error = BrokerError;
    fn try_from(err: BrokerError) -> Result<Self, Self::Error> {
        Err(err)
    }
}

/// A connection's state, on its worker.
#[derive(Clone)]
pub struct Conn(Rc<ConnInner>);

pub struct ConnInner {
    session: u64,
    client: Arc<Client>,
    backend: Backend,
    main: Handle,
    /// The session's queue, for the feeds of resuming subscriptions.
    queue: mpsc::Sender<Push>,
    /// Seconds the session outlives the connection; `None` for a clean session.
    expiry: Option<u32>,
    will: RefCell<Option<Will>>,
    /// Completes when the publish before the newest one is handled.
    previous: RefCell<Option<oneshot::Receiver<()>>>,
}

impl std::ops::Deref for Conn {
    type Target = ConnInner;
    fn deref(&self) -> &ConnInner {
        &self.0
    }
}

impl Drop for ConnInner {
    fn drop(&mut self) {
        let persistent = self.backend.hub.remove(self.session);
        let (backend, client, will) = (
            self.backend.clone(),
            self.client.clone(),
            self.will.borrow_mut().take(),
        );
        self.main.spawn(async move {
            if let Some((client_id, state)) = persistent {
                sessions::save(&backend.log, &client_id, Some(&state)).await;
            }
            backend.disconnected(client, will).await
        });
    }
}

/// A publish's place in its connection's order: wait for the one before, and let the
/// next one go when dropped.
struct Turn {
    previous: Option<oneshot::Receiver<()>>,
    _done: oneshot::Sender<()>,
}

impl Turn {
    async fn wait(&mut self) {
        if let Some(previous) = self.previous.take() {
            // an error only means the one before is gone: it is done either way
            let _ = previous.await;
        }
    }
}

impl ConnInner {
    /// Subscribes; a QoS 1 subscription of a persistent session to one application's
    /// events resumes (from `cursor`, or a new one at the newest event). `false` when
    /// the session holds too many subscriptions.
    async fn subscribe(
        &self,
        filter: &str,
        qos1: bool,
        mode: ContentMode,
        cursor: Option<Cursor>,
    ) -> bool {
        let cursor = match (self.expiry, qos1, sessions::resumable_application(filter)) {
            (Some(_), true, Some(app)) => match cursor {
                Some(cursor) => self.backend.current_cursor(cursor).await,
                None => self.backend.new_cursor(app).await,
            },
            _ => None,
        };
        let (backend, main, queue) = (&self.backend, &self.main, &self.queue);
        backend
            .hub
            .subscribe_resuming(self.session, filter, qos1, mode, cursor, |c| {
                let follower = backend.log.follow(&c.application, Some(&c.uid), c.position);
                main.spawn(sessions::feed(
                    follower,
                    c.application.clone(),
                    mode,
                    queue.clone(),
                ))
                .abort_handle()
            })
    }

    /// Restores the subscriptions of a session taken up again, as far as the client's
    /// policy still allows them.
    async fn restore(&self, state: SessionState) {
        for saved in state.subscriptions {
            if !self.backend.may_subscribe(&self.client, &saved.filter) {
                continue;
            }
            let mode = if saved.binary {
                ContentMode::Binary
            } else {
                ContentMode::Structured
            };
            self.subscribe(&saved.filter, saved.qos1, mode, saved.cursor)
                .await;
        }
    }

    /// Waits until the device may publish again under its rate limit. Publishes of one
    /// connection wait in order, at most [`PUBLISHES_IN_FLIGHT`] of them; beyond, the
    /// broker stops reading from the connection. Other connections do not wait.
    async fn shaped(&self, topic: &str) {
        while let Err(wait) = self.backend.admit(&self.client, topic) {
            tracing::trace!(client_id = %self.client.client_id, ?wait, "MQTT publish over the rate limit waits");
            ntex_util::time::sleep(ntex_util::time::Millis(
                u32::try_from(wait.as_millis()).unwrap_or(u32::MAX).max(1),
            ))
            .await;
        }
    }

    /// Called synchronously as each publish arrives, so turns follow arrival order.
    fn turn(&self) -> Turn {
        let (done, next) = oneshot::channel();
        Turn {
            previous: self.previous.replace(Some(next)),
            _done: done,
        }
    }

    /// Handles a publish on this worker: the ingest needs nothing of the main runtime
    /// (the store, the event log and the caches work from any thread), and each hop to
    /// it would cost two thread switches per message.
    async fn publish(&self, topic: &str, payload: Bytes, content_type: Option<&str>) -> Outcome {
        self.backend
            .publish(
                &self.client,
                &Message {
                    topic,
                    payload: &payload,
                    content_type,
                },
            )
            .await
    }
}

/// Runs `fut` on the main runtime and awaits it from the worker.
async fn on_main<F>(main: &Handle, fut: F) -> Result<F::Output, BrokerError>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    main.spawn(fut)
        .await
        .map_err(|e| BrokerError(format!("the handler failed: {e}")))
}

fn peer_certificates(io: &IoBoxed) -> Option<Vec<Vec<u8>>> {
    io.query::<ntex_tls::rustls::PeerCertChain<'static>>()
        .as_ref()
        .map(|chain| {
            chain
                .0
                .iter()
                .map(|c| c.as_ref().to_vec())
                .collect::<Vec<_>>()
        })
        .filter(|chain| !chain.is_empty())
}

/// What the handshake hands over once the client is allowed.
struct Accepted {
    conn: Conn,
    queue: mpsc::Receiver<Push>,
    close: Arc<tokio::sync::Notify>,
    revoked: Arc<std::sync::atomic::AtomicBool>,
    /// Whether an earlier session was taken up again.
    session_present: bool,
}

/// What a CONNECT asks of its session.
#[derive(Debug, Clone, Copy)]
struct SessionRequest {
    /// Start afresh: an earlier session is discarded.
    clean: bool,
    /// Seconds the session outlives the connection (`None`: it ends with it).
    expiry: Option<u32>,
}

async fn accept(
    backend: &Backend,
    main: &Handle,
    connect: MqttConnect,
    will: Option<Will>,
    request: SessionRequest,
) -> Result<Result<Accepted, Option<&'static str>>, BrokerError> {
    let b = backend.clone();
    let again = connect.clone();
    let connected = on_main(main, async move { b.connect(connect).await }).await?;
    let client = match connected {
        Ok(Connected::Allowed(client)) => client,
        Ok(Connected::Refused(reason)) => return Ok(Err(Some(reason))),
        Err(e) => {
            tracing::warn!(error = %e, "an MQTT connection could not be decided");
            return Ok(Err(None));
        }
    };
    let (tx, queue) = mpsc::channel(super::hub::SESSION_QUEUE);
    let (SessionHandle { id, close, revoked }, inherited) = match &client.identity {
        MqttIdentity::Device { device, .. } => backend.hub.register_device(
            &client.client_id,
            &device.metadata.uid,
            client.policy.clone(),
            tx.clone(),
            request.expiry,
        ),
        MqttIdentity::Application { .. } => backend.hub.register(
            &client.client_id,
            client.policy.clone(),
            tx.clone(),
            request.expiry,
        ),
    };
    main.spawn(recheck(backend.clone(), again, id));
    // an earlier session: the one just taken over, or the saved one
    let client_id = client.client_id.clone();
    let (b, taken_over) = (backend.clone(), inherited.clone());
    let earlier = on_main(main, async move {
        let saved = match taken_over {
            Some(state) => Some(state),
            None => sessions::load(&b.log, &client_id).await,
        };
        // a session that is not kept has no saved state
        if saved.is_some() && (request.clean || request.expiry.is_none()) {
            sessions::save(&b.log, &client_id, None).await;
        }
        saved
    })
    .await?
    .filter(|_| !request.clean);
    if request.expiry.is_some() {
        main.spawn(sessions::keep(
            backend.hub.clone(),
            backend.log.clone(),
            client.client_id.clone(),
            id,
        ));
    }
    let conn = Conn(Rc::new(ConnInner {
        session: id,
        client,
        backend: backend.clone(),
        main: main.clone(),
        queue: tx,
        expiry: request.expiry,
        will: RefCell::new(will),
        previous: RefCell::new(None),
    }));
    let session_present = earlier.is_some();
    if let Some(state) = earlier {
        conn.restore(state).await;
    }
    Ok(Ok(Accepted {
        conn,
        queue,
        close,
        revoked,
        session_present,
    }))
}

/// The packet ids of QoS 1 messages sent to a client, and what each acknowledgement
/// moves on: the broker numbers them itself, to know which event a PUBACK is for.
struct Outgoing {
    next: Cell<u16>,
    tracked: RefCell<HashMap<u16, Track>>,
}

impl Outgoing {
    fn new() -> Rc<Self> {
        Rc::new(Self {
            next: Cell::new(0),
            tracked: RefCell::new(HashMap::new()),
        })
    }

    /// The next packet id, remembering what it carries.
    fn send(&self, track: Option<Track>) -> u16 {
        let id = match self.next.get().wrapping_add(1) {
            0 => 1,
            id => id,
        };
        self.next.set(id);
        let mut tracked = self.tracked.borrow_mut();
        match track {
            Some(track) => tracked.insert(id, track),
            None => tracked.remove(&id),
        };
        id
    }

    /// A PUBACK arrived (not a connection's end): the cursor it moves.
    fn acked(&self, id: u16, disconnected: bool) -> Option<Track> {
        let track = self.tracked.borrow_mut().remove(&id);
        track.filter(|_| !disconnected)
    }
}

/// Decides a live session's CONNECT again every [`RECHECK_INTERVAL`], as IoT Core
/// refreshes a custom authorizer's policy: the session gets the policy its client holds
/// now (an application the user may no longer read stops reaching it), or is ended when
/// the client would be refused now (a deleted or disabled device, a deleted or expired
/// token, an application's uid changed). An unreachable registry changes nothing.
async fn recheck(backend: Backend, connect: MqttConnect, id: u64) {
    let start = tokio::time::Instant::now() + RECHECK_INTERVAL;
    let mut interval = tokio::time::interval_at(start, RECHECK_INTERVAL);
    loop {
        interval.tick().await;
        if !backend.hub.is_live(id) {
            return;
        }
        match backend.authorizer.connect(&connect).await {
            Ok(ConnectDecision::Allow(now)) => {
                if !backend.hub.set_policy(id, Arc::new(now.policy)) {
                    return;
                }
            }
            Ok(ConnectDecision::Deny { reason }) => {
                tracing::info!(client_id = %connect.client_id, reason, "an MQTT client lost its access: disconnecting it");
                backend.hub.revoke(id);
                return;
            }
            Err(e) => {
                tracing::warn!(client_id = %connect.client_id, error = %e, "cannot check an MQTT client's access now");
            }
        }
    }
}

fn granted(requested: QoS) -> (QoS, bool) {
    match requested {
        QoS::AtMostOnce => (QoS::AtMostOnce, false),
        _ => (QoS::AtLeastOnce, true),
    }
}

// ---- MQTT 3.1.1 ----

async fn handshake_v3(
    backend: Backend,
    main: Handle,
    hs: v3::Handshake,
) -> Result<v3::HandshakeAck<Conn>, BrokerError> {
    let packet = hs.packet();
    let connect = MqttConnect {
        client_id: packet.client_id.to_string(),
        username: packet.username.as_ref().map(ToString::to_string),
        password: packet.password.as_ref().map(|p| p.to_vec()),
        certificates: peer_certificates(hs.io()),
    };
    let will = packet.last_will.as_ref().map(|w| Will {
        topic: w.topic.to_string(),
        payload: w.message.to_vec(),
        content_type: None,
    });
    // MQTT 3.1.1 sessions have no expiry of their own
    let request = SessionRequest {
        clean: packet.clean_session,
        expiry: (!packet.clean_session).then_some(sessions::V3_EXPIRY),
    };
    let accepted = match accept(&backend, &main, connect, will, request).await? {
        Ok(accepted) => accepted,
        Err(Some(_)) => return Ok(hs.bad_username_or_pwd()),
        Err(None) => return Ok(hs.service_unavailable()),
    };
    let sink = hs.sink();
    let Accepted {
        conn,
        mut queue,
        close,
        // MQTT 3.1.1 has no reason to tell: the connection is closed either way
        revoked: _,
        session_present,
    } = accepted;
    let outgoing = Outgoing::new();
    let (acks, hub, session) = (outgoing.clone(), backend.hub.clone(), conn.session);
    sink.publish_ack_cb(move |id, disconnected| {
        if let Some(track) = acks.acked(id.get(), disconnected) {
            hub.acked(session, &track);
        }
    });
    ntex_rt::spawn(async move {
        loop {
            let push = tokio::select! {
                push = queue.recv() => match push { Some(push) => push, None => break },
                () = close.notified() => { sink.close(); break; }
            };
            let d = &push.delivery;
            let publish = sink.publish(ByteString::from(d.topic.as_str()));
            let payload = Bytes::copy_from_slice(&d.payload);
            // the client's receive window (QoS 1) and the connection's write buffer
            // (both): a slow subscriber holds its queue back, not the broker's memory
            if !sink.ready().await {
                break;
            }
            let sent = if push.qos1 {
                publish
                    .packet_id(outgoing.send(push.track))
                    .send_at_least_once_no_block(payload)
            } else {
                publish.send_at_most_once(payload)
            };
            if sent.is_err() {
                break;
            }
        }
    });
    Ok(hs.ack(conn, session_present))
}

async fn publish_v3(conn: Conn, mut turn: Turn, p: v3::Publish) -> Result<(), BrokerError> {
    let payload = p
        .read_all()
        .await
        .map_err(|e| BrokerError(format!("cannot read the payload: {e:?}")))?;
    turn.wait().await;
    // MQTT 3.1.1 cannot refuse a publish: one over the device's rate waits for its turn
    conn.shaped(p.publish_topic()).await;
    match conn.publish(p.publish_topic(), payload, None).await {
        Outcome::Accepted => Ok(()),
        // MQTT 3.1.1 cannot refuse a publish but by closing the connection
        refused => Err(BrokerError(format!("publish refused: {refused:?}"))),
    }
}

fn protocol_v3() -> impl ServiceFactory<
    v3::ProtocolMessage,
    v3::Session<Conn>,
    Response = v3::ProtocolMessageAck,
    Error = BrokerError,
    InitError = BrokerError,
> {
    fn_factory_with_config(async |session: v3::Session<Conn>| {
        Ok(fn_service(move |msg: v3::ProtocolMessage| {
            let conn = Conn::clone(&session);
            async move {
                match msg {
                    v3::ProtocolMessage::Subscribe(mut s) => {
                        for mut sub in s.iter_mut() {
                            let filter = sub.topic().to_string();
                            let (qos, qos1) = granted(sub.qos());
                            if conn.backend.may_subscribe(&conn.client, &filter)
                                && conn
                                    .subscribe(&filter, qos1, ContentMode::Structured, None)
                                    .await
                            {
                                sub.confirm(qos);
                            } else {
                                sub.fail();
                            }
                        }
                        Ok(s.ack())
                    }
                    v3::ProtocolMessage::Unsubscribe(u) => {
                        for filter in u.iter() {
                            conn.backend.hub.unsubscribe(conn.session, filter);
                        }
                        Ok(u.ack())
                    }
                    v3::ProtocolMessage::Disconnect(d) => {
                        conn.will.borrow_mut().take();
                        Ok(d.ack())
                    }
                    other => Ok(other.ack()),
                }
            }
        }))
    })
}

// ---- MQTT 5 ----

async fn handshake_v5(
    backend: Backend,
    main: Handle,
    hs: v5::Handshake,
) -> Result<v5::HandshakeAck<Conn>, BrokerError> {
    let packet = hs.packet();
    let connect = MqttConnect {
        client_id: packet.client_id.to_string(),
        username: packet.username.as_ref().map(ToString::to_string),
        password: packet.password.as_ref().map(|p| p.to_vec()),
        certificates: peer_certificates(hs.io()),
    };
    let will = packet.last_will.as_ref().map(|w| Will {
        topic: w.topic.to_string(),
        payload: w.message.to_vec(),
        content_type: w.content_type.as_ref().map(ToString::to_string),
    });
    let refuse = |code, reason: &str| v5::codec::ConnectAck {
        reason_code: code,
        reason_string: Some(ByteString::from(reason)),
        ..Default::default()
    };
    let expiry = match packet.session_expiry_interval_secs {
        0 => None,
        requested => Some(requested.min(sessions::MAX_EXPIRY)),
    };
    let request = SessionRequest {
        clean: packet.clean_start,
        expiry,
    };
    let capped = (packet.session_expiry_interval_secs > sessions::MAX_EXPIRY)
        .then_some(sessions::MAX_EXPIRY);
    let accepted = match accept(&backend, &main, connect, will, request).await? {
        Ok(accepted) => accepted,
        Err(Some(reason)) => {
            return Ok(hs.fail_with(refuse(
                v5::codec::ConnectAckReason::BadUserNameOrPassword,
                reason,
            )));
        }
        Err(None) => {
            return Ok(hs.fail_with(refuse(
                v5::codec::ConnectAckReason::ServerUnavailable,
                "the registry is unavailable",
            )));
        }
    };
    let sink = hs.sink();
    let Accepted {
        conn,
        mut queue,
        close,
        revoked,
        session_present,
    } = accepted;
    let outgoing = Outgoing::new();
    let (acks, hub, session) = (outgoing.clone(), backend.hub.clone(), conn.session);
    sink.publish_ack_cb(move |ack, disconnected| {
        if let Some(track) = acks.acked(ack.packet_id.get(), disconnected) {
            hub.acked(session, &track);
        }
    });
    ntex_rt::spawn(async move {
        loop {
            let push = tokio::select! {
                push = queue.recv() => match push { Some(push) => push, None => break },
                () = close.notified() => {
                    let reason_code = if revoked.load(std::sync::atomic::Ordering::SeqCst) {
                        v5::codec::DisconnectReasonCode::NotAuthorized
                    } else {
                        v5::codec::DisconnectReasonCode::SessionTakenOver
                    };
                    sink.close_with_reason(v5::codec::Disconnect {
                        reason_code,
                        ..Default::default()
                    });
                    break;
                }
            };
            let d = &push.delivery;
            let publish = sink
                .publish(ByteString::from(d.topic.as_str()))
                .properties(|p| {
                    p.content_type = d.content_type.as_deref().map(ByteString::from);
                    p.correlation_data = d.correlation_data.as_deref().map(Bytes::copy_from_slice);
                    p.user_properties = d
                        .user_properties
                        .iter()
                        .map(|(k, v)| (ByteString::from(k.as_str()), ByteString::from(v.as_str())))
                        .collect();
                });
            let payload = Bytes::copy_from_slice(&d.payload);
            // the client's receive window (QoS 1) and the connection's write buffer
            // (both): a slow subscriber holds its queue back, not the broker's memory
            if !sink.ready().await {
                break;
            }
            let sent = if push.qos1 {
                publish
                    .packet_id(outgoing.send(push.track))
                    .send_at_least_once_no_block(payload)
            } else {
                publish.send_at_most_once(payload)
            };
            if sent.is_err() {
                break;
            }
        }
    });
    Ok(hs.ack(conn).with(|ack| {
        ack.session_present = session_present;
        ack.session_expiry_interval_secs = capped;
        ack.retain_available = false;
        ack.subscription_identifiers_available = false;
        ack.shared_subscription_available = true;
        ack.wildcard_subscription_available = true;
    }))
}

async fn publish_v5(
    conn: Conn,
    mut turn: Turn,
    p: v5::Publish,
) -> Result<v5::PublishAck, BrokerError> {
    let payload = p
        .read_all()
        .await
        .map_err(|e| BrokerError(format!("cannot read the payload: {e:?}")))?;
    turn.wait().await;
    if p.qos() == QoS::AtMostOnce {
        // nothing to refuse it with: one over the device's rate waits for its turn
        conn.shaped(p.publish_topic()).await;
    } else if let Err(wait) = conn.backend.admit(&conn.client, p.publish_topic()) {
        tracing::debug!(client_id = %conn.client.client_id, ?wait, "MQTT publish over the rate limit refused");
        // MQTT 5 has "message rate too high" (0x96) for DISCONNECT only; a PUBACK says
        // "quota exceeded" (0x97)
        return Ok(p
            .ack()
            .reason_code(v5::codec::PublishAckReason::QuotaExceeded)
            .reason(ByteString::from(format!(
                "message rate too high: retry after {} ms",
                wait.as_millis().max(1)
            ))));
    }
    let content_type = p.packet().properties.content_type.clone();
    let outcome = conn
        .publish(p.publish_topic(), payload, content_type.as_deref())
        .await;
    use v5::codec::PublishAckReason as Reason;
    let (code, reason) = match outcome {
        Outcome::Accepted => return Ok(p.ack()),
        Outcome::NotAuthorized => (Reason::NotAuthorized, "the topic is not allowed"),
        Outcome::Refused(Refusal::PayloadFormat(reason)) => (Reason::PayloadFormatInvalid, reason),
        Outcome::Refused(Refusal::Other(reason)) => (Reason::ImplementationSpecificError, reason),
        Outcome::Unavailable => (Reason::UnspecifiedError, "the event stream is unavailable"),
    };
    if p.qos() == QoS::AtMostOnce {
        // nothing to answer: the connection is closed instead
        return Err(BrokerError(format!("publish refused: {reason}")));
    }
    Ok(p.ack().reason_code(code).reason(ByteString::from(reason)))
}

fn content_mode(properties: &[(ByteString, ByteString)]) -> ContentMode {
    if properties
        .iter()
        .any(|(k, v)| k == "content-mode" && v.eq_ignore_ascii_case("binary"))
    {
        ContentMode::Binary
    } else {
        ContentMode::Structured
    }
}

fn protocol_v5() -> impl ServiceFactory<
    v5::ProtocolMessage,
    v5::Session<Conn>,
    Response = v5::ProtocolMessageAck,
    Error = BrokerError,
    InitError = BrokerError,
> {
    fn_factory_with_config(async |session: v5::Session<Conn>| {
        Ok(fn_service(move |msg: v5::ProtocolMessage| {
            let conn = Conn::clone(&session);
            async move {
                match msg {
                    v5::ProtocolMessage::Subscribe(mut s) => {
                        let mode = content_mode(&s.packet().user_properties);
                        for mut sub in s.iter_mut() {
                            let filter = sub.topic().to_string();
                            if !conn.backend.may_subscribe(&conn.client, &filter) {
                                sub.fail(v5::codec::SubscribeAckReason::NotAuthorized);
                                continue;
                            }
                            let (qos, qos1) = granted(sub.options().qos);
                            if conn.subscribe(&filter, qos1, mode, None).await {
                                sub.confirm(qos);
                            } else {
                                sub.fail(v5::codec::SubscribeAckReason::QuotaExceeded);
                            }
                        }
                        Ok(s.ack())
                    }
                    v5::ProtocolMessage::Unsubscribe(mut u) => {
                        let filters: Vec<String> = u.iter().map(ToString::to_string).collect();
                        for (mut item, filter) in u.iter_mut().zip(filters) {
                            if conn.backend.hub.unsubscribe(conn.session, &filter) {
                                item.success();
                            } else {
                                item.fail(v5::codec::UnsubscribeAckReason::NoSubscriptionExisted);
                            }
                        }
                        Ok(u.ack())
                    }
                    v5::ProtocolMessage::Disconnect(d) => {
                        let with_will = d.packet().reason_code
                            == v5::codec::DisconnectReasonCode::DisconnectWithWillMessage;
                        if !with_will {
                            conn.will.borrow_mut().take();
                        }
                        Ok(d.ack())
                    }
                    other => Ok(other.ack()),
                }
            }
        }))
    })
}

/// The MQTT service for one listener: 3.1.1 and 5, told apart by the CONNECT.
// (the factories are closures: their types cannot be named in an alias)
#[allow(clippy::type_complexity)]
pub fn service(
    backend: Backend,
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
    let publish_v3 = fn_factory_with_config(async |session: v3::Session<Conn>| {
        Ok::<_, BrokerError>(fn_service(move |p| {
            let conn = Conn::clone(&session);
            let turn = conn.turn();
            publish_v3(conn, turn, p)
        }))
    });
    let publish_v5 = fn_factory_with_config(async |session: v5::Session<Conn>| {
        Ok::<_, BrokerError>(fn_service(move |p| {
            let conn = Conn::clone(&session);
            let turn = conn.turn();
            publish_v5(conn, turn, p)
        }))
    });
    let in_flight = InFlight::new(PUBLISHES_IN_FLIGHT);
    MqttServer::new()
        .v3(v3::MqttServer::new(fn_service(move |hs| {
            handshake_v3(b3.clone(), m3.clone(), hs)
        }))
        .protocol(protocol_v3())
        .publish(ntex_service::apply(in_flight, publish_v3)))
        .v5(v5::MqttServer::new(fn_service(move |hs| {
            handshake_v5(b5.clone(), m5.clone(), hs)
        }))
        .protocol(protocol_v5())
        .publish(ntex_service::apply(in_flight, publish_v5)))
}
