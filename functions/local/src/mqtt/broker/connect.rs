//! A CONNECT, for both versions: the authorizer decides it, then the session is taken
//! up (the one just taken over, or the saved one) or started afresh; a live session's
//! access is decided again every [`RECHECK_INTERVAL`].

use super::BrokerError;
use super::deliver::{Outgoing, Outlet, Slot};
use crate::mqtt::backend::{Backend, Client, Connected, Will};
use crate::mqtt::hub::{ContentMode, OverQuota, Push, SessionHandle, Taking};
use crate::mqtt::sessions::{self, SessionState};
use drogue_shared::device_auth::valid_until;
use drogue_shared::mqtt::authorizer::ConnectDecision;
use drogue_shared::mqtt::{MqttConnect, MqttIdentity};
use drogue_shared::registry::AppChanges;
use ntex_io::IoBoxed;
use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use tokio::runtime::Handle;
use tokio::sync::{mpsc, oneshot};

/// How often a live session's access is decided again (the device lookup cache's period).
pub const RECHECK_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

/// The longest a device's recheck waits without a write to its application (IoT
/// Core's shortest policy refresh), less up to [`WAIT_SPREAD`] by session: a write
/// whose count was lost (its process stopped between the commit and the count) is
/// decided within it.
const LONGEST_WAIT: std::time::Duration = std::time::Duration::from_secs(300);

/// How far the sessions' longest waits are spread, so that devices connected together
/// are not all decided again in the same tick.
const WAIT_SPREAD: std::time::Duration = std::time::Duration::from_secs(60);

/// Session `id`'s longest wait.
fn longest_wait(id: u64) -> std::time::Duration {
    let spread = WAIT_SPREAD.as_millis() as u64;
    LONGEST_WAIT - WAIT_SPREAD
        + std::time::Duration::from_millis(id.wrapping_mul(0x9E37_79B9_7F4A_7C15) % spread)
}

/// A CONNECT, whichever the version.
pub(super) struct Connect {
    pub client_id: String,
    pub username: Option<String>,
    pub password: Option<Vec<u8>>,
    /// The TLS client's certificate chain.
    pub certificates: Option<Vec<Vec<u8>>>,
    /// Start afresh: an earlier session is discarded.
    pub clean_start: bool,
    /// Seconds the session is asked to outlive the connection (0: it ends with it).
    pub session_expiry: u32,
    pub will: Option<Will>,
}

/// The answer to a CONNECT.
pub(super) enum Connection {
    Accepted(Accepted),
    /// Refused by the authorizer ("bad user name or password"), with why.
    Refused(&'static str),
    /// The registry cannot be reached now ("server unavailable").
    Unavailable,
    /// The client's owner holds as many live connections as it may (this many).
    OverQuota(usize),
}

/// What the handshake hands over once the client is allowed.
pub(super) struct Accepted {
    pub conn: Conn,
    close: Arc<tokio::sync::Notify>,
    revoked: Arc<std::sync::atomic::AtomicBool>,
    /// Whether an earlier session was taken up again.
    pub session_present: bool,
    /// The session expiry the broker grants when it is less than the one asked for.
    pub capped_expiry: Option<u32>,
}

impl Accepted {
    /// Starts delivering the session's messages through `outlet`; the connection's
    /// state, for the protocol's session.
    pub fn deliver(self, outlet: impl Outlet) -> Conn {
        let Self {
            conn,
            close,
            revoked,
            ..
        } = self;
        let outgoing = Outgoing::new();
        let (acks, hub, session) = (outgoing.clone(), conn.backend.hub.clone(), conn.session);
        outlet.on_ack(move |id, disconnected| {
            if let Some(track) = acks.acked(id, disconnected) {
                hub.acked(session, &track);
            }
        });
        let (slot, counted) = (conn.slot.clone(), conn.backend.hub.delivery_task());
        ntex_rt::spawn(async move {
            let _counted = counted;
            super::deliver::run(outlet, outgoing, slot, close, revoked).await;
        });
        conn
    }
}

/// A connection's state, on its worker.
#[derive(Clone)]
pub struct Conn(Rc<ConnInner>);

pub struct ConnInner {
    pub(super) session: u64,
    /// The session's recheck task, ended with the connection.
    recheck: tokio::task::AbortHandle,
    pub(super) client: Arc<Client>,
    pub(super) backend: Arc<Backend>,
    pub(super) main: Handle,
    /// The session's queue, made with its first subscription ([`ConnInner::queue`]).
    queue: RefCell<Option<mpsc::Sender<Push>>>,
    /// Where the queue, once made, reaches the session's delivery task.
    slot: Rc<Slot>,
    /// Seconds the session outlives the connection; `None` for a clean session.
    pub(super) expiry: Option<u32>,
    pub(super) will: RefCell<Option<Will>>,
    /// Completes when the publish before the newest one is handled.
    pub(super) previous: RefCell<Option<oneshot::Receiver<()>>>,
    /// Set when a publish was refused in a way that closes the connection: the
    /// publishes after it are not handled (their client sends them again after it
    /// reconnects, as for any publish it has no acknowledgement for).
    pub(super) closing: std::cell::Cell<bool>,
    /// Set when the client's access ended: what it sent before is not handled.
    pub(super) revoked: Arc<std::sync::atomic::AtomicBool>,
}

impl std::ops::Deref for Conn {
    type Target = ConnInner;
    fn deref(&self) -> &ConnInner {
        &self.0
    }
}

impl Drop for ConnInner {
    fn drop(&mut self) {
        self.recheck.abort();
        // a delivery task without a queue has no sender to outlive: it ends here
        self.slot.end();
        // a persistent session's state, saved before a later connection of its client
        // id reads it
        let (hub, session) = (&self.backend.hub, self.session);
        self.backend.sessions.save_with(|| hub.remove(session));
        let (backend, client, will) = (
            self.backend.clone(),
            self.client.clone(),
            self.will.borrow_mut().take(),
        );
        self.main
            .spawn(async move { backend.disconnected(client, will).await });
    }
}

impl ConnInner {
    /// The session's queue, for its subscriptions and the feeds of resuming ones: made
    /// on first use, and given to the hub (before the subscription that needs it) and
    /// to the session's delivery task.
    pub(super) fn queue(&self) -> mpsc::Sender<Push> {
        self.queue
            .borrow_mut()
            .get_or_insert_with(|| {
                let (tx, rx) = mpsc::channel(crate::mqtt::hub::SESSION_QUEUE);
                self.backend.hub.attach_queue(self.session, tx.clone());
                self.slot.put(rx);
                tx
            })
            .clone()
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

    /// A DISCONNECT: a clean one discards the last will (`keep_will`: one that asks for
    /// it to be published, as MQTT 5 may).
    pub(super) fn disconnect(&self, keep_will: bool) {
        if !keep_will {
            self.will.borrow_mut().take();
        }
    }
}

/// Runs `fut` on the main runtime and awaits it from the worker.
pub(super) async fn on_main<F>(main: &Handle, fut: F) -> Result<F::Output, BrokerError>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    main.spawn(fut)
        .await
        .map_err(|e| BrokerError(format!("the handler failed: {e}")))
}

pub(super) fn peer_certificates(io: &IoBoxed) -> Option<Vec<Vec<u8>>> {
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

/// Decides a CONNECT and takes up its session.
pub(super) async fn connect(
    backend: &Arc<Backend>,
    main: &Handle,
    request: Connect,
) -> Result<Connection, BrokerError> {
    let Connect {
        client_id,
        username,
        password,
        certificates,
        clean_start: clean,
        session_expiry,
        will,
    } = request;
    let connect = MqttConnect {
        client_id,
        username,
        password,
        certificates,
    };
    // the session outlives the connection for at most the broker's maximum
    let expiry = match session_expiry {
        0 => None,
        requested => Some(requested.min(sessions::MAX_EXPIRY)),
    };
    let capped_expiry = (session_expiry > sessions::MAX_EXPIRY).then_some(sessions::MAX_EXPIRY);
    let b = backend.clone();
    let again = connect.clone();
    // the registry as the decision reads it (or later): a device's decision reads its
    // application alone, the one its client id names (or it is refused)
    let seen = backend.registry_changes.as_ref().and_then(|changes| {
        let (_, app) = connect.client_id.rsplit_once('@')?;
        // (a name that cannot be an application's is refused anyway, and kept nowhere)
        let app = changes.of(drogue_shared::model::AppName::parse(app).ok()?.as_str());
        let seen = app.current();
        Some((app, seen))
    });
    let connected = on_main(main, async move { b.connect(connect).await }).await?;
    let client = match connected {
        Ok(Connected::Allowed(client)) => client,
        Ok(Connected::Refused(reason)) => return Ok(Connection::Refused(reason)),
        Err(e) => {
            tracing::warn!(error = %e, "an MQTT connection could not be decided");
            return Ok(Connection::Unavailable);
        }
    };
    let device = match &client.identity {
        MqttIdentity::Device { device, .. } => Some(device.metadata.uid.as_str()),
        MqttIdentity::Application { .. } => None,
    };
    let registered = backend.hub.register(
        &client.client_id,
        Some(&client.owner),
        device,
        client.policy(),
        None,
        Taking {
            expiry,
            restoring: !clean,
        },
    );
    let (SessionHandle { id, close, revoked }, inherited) = match registered {
        Ok(registered) => registered,
        Err(OverQuota { limit }) => return Ok(Connection::OverQuota(limit)),
    };
    // a device's decision changes only with its application's records (and, with a
    // certificate, when it expires); an application client's also when its token expires
    let seen = seen.filter(|_| match &client.identity {
        MqttIdentity::Device { application, .. } => {
            again.client_id.rsplit_once('@').map(|(_, app)| app)
                == Some(application.metadata.name.as_str())
        }
        MqttIdentity::Application { .. } => false,
    });
    // an earlier session: the one just taken over, or the saved one
    let client_id = client.client_id.clone();
    let (b, taken_over) = (backend.clone(), inherited.clone());
    let announced = client.clone();
    let device_of = match &client.identity {
        MqttIdentity::Device { device, .. } => Some((
            device.metadata.uid.clone(),
            device.metadata.creation_timestamp,
        )),
        MqttIdentity::Application { .. } => None,
    };
    let earlier = on_main(main, async move {
        b.announce(&announced).await;
        let mut saved = match taken_over {
            Some(state) => Some(state),
            None => b.sessions.load(&client_id).await,
        };
        // the session of a device deleted since, whose names are this one's now, is
        // not this one's (a stranger's, perhaps)
        let another = saved
            .as_ref()
            .is_some_and(|state| another_devices(state, device_of.as_ref()));
        if another {
            tracing::info!(
                client_id,
                "the session of a device deleted since is dropped"
            );
            saved = None;
        }
        // a session that is not kept has no saved state
        if another || (saved.is_some() && (clean || expiry.is_none())) {
            b.sessions.forget(&client_id).await;
        }
        saved
    })
    .await?
    .filter(|_| !clean);
    let recheck = main
        .spawn(recheck(backend.clone(), again, client.clone(), id, seen))
        .abort_handle();
    let conn = Conn(Rc::new(ConnInner {
        session: id,
        recheck,
        client,
        backend: backend.clone(),
        main: main.clone(),
        queue: RefCell::new(None),
        slot: Rc::new(Slot::default()),
        expiry,
        will: RefCell::new(will),
        previous: RefCell::new(None),
        closing: std::cell::Cell::new(false),
        revoked: revoked.clone(),
    }));
    let session_present = earlier.is_some();
    if let Some(state) = earlier {
        // what a connection taking the session over meanwhile inherits, and what is
        // saved should this one end first: the state whole, not the part restored yet
        backend.hub.restoring(id, &state);
        conn.restore(state).await;
    }
    backend.hub.restored(id);
    // kept from here on: saved before the restore, the session would be saved without
    // its subscriptions, and a crash before the next save would lose them
    if expiry.is_some() {
        main.spawn(sessions::keep(
            backend.hub.clone(),
            backend.sessions.clone(),
            conn.client.client_id.clone(),
            id,
        ));
    }
    Ok(Connection::Accepted(Accepted {
        conn,
        close,
        revoked,
        session_present,
        capped_expiry,
    }))
}

/// Whether a saved session is another device's than `device` (its `uid` and creation
/// time), whose names it has now: saved with another `uid`, or, saved before sessions
/// recorded their device, saved before `device` was made.
fn another_devices(
    state: &SessionState,
    device: Option<&(String, chrono::DateTime<chrono::Utc>)>,
) -> bool {
    match (&state.device, device) {
        (Some(saved), Some((uid, _))) => saved != uid,
        (Some(_), None) => true,
        (None, Some((_, created))) => state.saved < *created,
        (None, None) => false,
    }
}

/// Whether a device's decision is for the device and application (by `uid`) that it
/// was first decided for; always for an application client (its user is its client
/// id's).
fn same_device(first: &MqttIdentity, now: &MqttIdentity) -> bool {
    match (first, now) {
        (
            MqttIdentity::Device {
                application: a1,
                device: d1,
            },
            MqttIdentity::Device {
                application: a2,
                device: d2,
            },
        ) => a1.metadata.uid == a2.metadata.uid && d1.metadata.uid == d2.metadata.uid,
        (MqttIdentity::Application { .. }, MqttIdentity::Application { .. }) => true,
        _ => false,
    }
}

/// Waits until a device's access may have changed since its decision at its
/// application's write count `decided`: a write to the application or its devices, or
/// the expiry of a certificate of its `chain`, or `longest` at most. A chain
/// that cannot be read, or is expired all through, does not wait: it is decided at
/// every tick.
async fn news_for_device(
    backend: &Backend,
    changes: &AppChanges,
    decided: u64,
    chain: Option<&[Vec<u8>]>,
    longest: std::time::Duration,
) {
    let wait = match chain {
        None => longest,
        Some(chain) => {
            let now = std::time::SystemTime::now();
            let Some(until) = valid_until(chain, now) else {
                return;
            };
            until.duration_since(now).unwrap_or_default().min(longest)
        }
    };
    let _waiting = backend.hub.waiting_for_change();
    tokio::select! {
        _ = changes.changed_since(decided) => {}
        _ = tokio::time::sleep(wait) => {}
    }
}

/// Decides a live session's CONNECT again every [`RECHECK_INTERVAL`], as IoT Core
/// refreshes a custom authorizer's policy: the session gets the policy its client holds
/// now (an application the user may no longer read stops reaching it, from the log too,
/// and the client can no longer publish to it or subscribe to it), or is ended when
/// the client would be refused now (a deleted or disabled device, a deleted or expired
/// token, an application's uid changed). An unreachable registry changes nothing.
///
/// `seen` is, for a device, its application's write count and the value read before
/// the last decision: a device's decision depends on its application's records alone
/// (and on time only through its certificate's validity). Until the count moves on,
/// or a certificate of its chain expires, there is nothing new to decide, so the task
/// waits for a write to the application or one of its devices (no periodic timer, no
/// decision, for up to [`LONGEST_WAIT`] at most: 10,000 idle devices cost few wake-ups, and
/// another tenant's writes wake none of them), then decides at the session's next tick (the sessions' decisions
/// after a write stay spread over the period). The connection's end aborts the task.
async fn recheck(
    backend: Arc<Backend>,
    connect: MqttConnect,
    client: Arc<Client>,
    id: u64,
    mut seen: Option<(AppChanges, u64)>,
) {
    let mut next = tokio::time::Instant::now() + RECHECK_INTERVAL;
    loop {
        if let Some((changes, decided)) = &seen {
            let chain = connect.certificates.as_deref();
            news_for_device(&backend, changes, *decided, chain, longest_wait(id)).await;
            // the first of this session's ticks from now
            let late = tokio::time::Instant::now().saturating_duration_since(next);
            let periods = late.as_nanos().div_ceil(RECHECK_INTERVAL.as_nanos());
            next += RECHECK_INTERVAL * u32::try_from(periods).unwrap_or(u32::MAX);
        }
        tokio::time::sleep_until(next).await;
        next += RECHECK_INTERVAL;
        if !backend.hub.is_live(id) {
            return;
        }
        let now = seen.as_ref().map(|(changes, _)| changes.current());
        backend.hub.count_recheck();
        // (boxed while it runs: the decision's future is kilobytes, and this task
        // lives as long as its connection)
        match Box::pin(backend.authorizer.connect(&connect)).await {
            Ok(ConnectDecision::Allow(allowed))
                if !same_device(&client.identity, &allowed.identity) =>
            {
                // its device (or the device's application) was deleted and made anew
                // under the same names, perhaps by a stranger: not the one it connected as
                tracing::info!(client_id = %connect.client_id, "an MQTT client's device was made anew: disconnecting it");
                backend.hub.revoke(id);
                return;
            }
            Ok(ConnectDecision::Allow(allowed)) => {
                // what it may publish and subscribe to, and what reaches it
                // (the hub's first: a subscription made in between, checked by the
                // client's, is fed by the hub only within the hub's)
                let policy = Arc::new(allowed.policy);
                if !backend.hub.set_policy(id, policy.clone()) {
                    return;
                }
                client.set_policy(policy);
                if let (Some((_, decided)), Some(now)) = (&mut seen, now) {
                    *decided = now;
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

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Duration, Utc};

    #[test]
    fn longest_waits_are_spread_over_a_minute() {
        let waits: Vec<_> = (0..1000).map(longest_wait).collect();
        assert!(
            waits
                .iter()
                .all(|w| (LONGEST_WAIT - WAIT_SPREAD..LONGEST_WAIT).contains(w))
        );
        // sessions made one after the other land all over the minute
        let early = waits
            .iter()
            .filter(|w| **w < LONGEST_WAIT - WAIT_SPREAD / 2);
        assert!((400..600).contains(&early.count()));
    }

    #[test]
    fn a_saved_session_is_taken_up_by_its_own_device_only() {
        let now = Utc::now();
        let saved = |device: Option<&str>, ago: i64| SessionState {
            expiry: 600,
            saved: now - Duration::seconds(ago),
            subscriptions: Vec::new(),
            device: device.map(str::to_owned),
        };
        let device = |uid: &str, ago: i64| (uid.to_owned(), now - Duration::seconds(ago));
        // recorded with its device: by the uid
        assert!(!another_devices(
            &saved(Some("u1"), 0),
            Some(&device("u1", 60))
        ));
        assert!(another_devices(
            &saved(Some("u1"), 60),
            Some(&device("u2", 0))
        ));
        // saved before sessions recorded their device: by the time
        assert!(!another_devices(&saved(None, 10), Some(&device("u1", 60))));
        assert!(another_devices(&saved(None, 60), Some(&device("u2", 10))));
        // an application client's
        assert!(!another_devices(&saved(None, 60), None));
        assert!(another_devices(&saved(Some("u1"), 60), None));
    }
}
