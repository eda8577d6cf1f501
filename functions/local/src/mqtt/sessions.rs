//! Persistent MQTT sessions: a client that connects with MQTT 3.1.1's clean session off,
//! or MQTT 5's session expiry above zero, keeps its subscriptions across connections,
//! and its QoS 1 subscriptions to one application's events (`app/{app}`, no wildcard,
//! not shared) resume: after a reconnect they receive, in order and from the event
//! log, everything published since the last message the client acknowledged, then live
//! events (at least once: what was sent but not acknowledged comes again).
//!
//! The state is kept in the event log's file under `mqtt/{client id}` (client ids are in
//! their principal's namespace, so no other principal can take it up), saved every
//! second while connected and when the connection ends. It expires `expiry` seconds
//! after the client's last connection ended: MQTT 5's session expiry interval up to
//! [`MAX_EXPIRY`], and [`V3_EXPIRY`] for MQTT 3.1.1, whose sessions have none.

use super::hub::{ContentMode, Delivery, Handoff, Hub, Push, Track, delivery_for};
use chrono::{DateTime, Utc};
use drogue_shared::events::log::{EventLog, Follower};
use drogue_shared::mqtt::filter::TopicFilter;
use drogue_shared::mqtt::topics::application_events;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// The longest a session is kept after its client left (IoT Core's maximum).
pub const MAX_EXPIRY: u32 = 7 * 24 * 3600;
/// How long an MQTT 3.1.1 session is kept after its client left (IoT Core's default).
pub const V3_EXPIRY: u32 = 3600;
/// How often a connected session's state is saved.
pub const SAVE_INTERVAL: Duration = Duration::from_secs(1);
/// Events read from the log at once for a resuming subscription.
const BATCH: usize = 256;

/// A session's state as saved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionState {
    /// Seconds the session outlives its connection.
    pub expiry: u32,
    pub saved: DateTime<Utc>,
    pub subscriptions: Vec<SavedSubscription>,
    /// The `uid` of the device whose session it is (a device's): a device made anew
    /// under the same names (whose client ids they are then) does not take it up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
}

/// A subscription as saved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedSubscription {
    /// As subscribed (with `$share/{group}/` for shared ones).
    pub filter: String,
    pub qos1: bool,
    #[serde(default)]
    pub binary: bool,
    /// Where a resuming subscription stands.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<Cursor>,
}

/// How far a resuming subscription got: the last event the client acknowledged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    pub application: String,
    /// The application's uid: a later application of the same name starts afresh.
    pub uid: String,
    pub position: u64,
}

impl SessionState {
    fn expired(&self, now: DateTime<Utc>) -> bool {
        self.saved + chrono::Duration::seconds(i64::from(self.expiry)) < now
    }
}

fn key(client_id: &str) -> String {
    format!("mqtt/{client_id}")
}

/// The saved sessions, read and written by one thread in the order asked for. A
/// connection's last save, asked for as it ends, is written before the next connection
/// of its client id reads or forgets the session; a state is taken and queued in one
/// step ([`Self::save_with`]), so no state taken before a later save or forget is
/// written after it. Saves waiting together are written in one durable write.
#[derive(Clone)]
pub struct SessionStore {
    queue: Arc<std::sync::Mutex<std::sync::mpsc::Sender<Op>>>,
}

enum Op {
    Save {
        client_id: String,
        text: Option<String>,
        done: oneshot::Sender<()>,
    },
    Load {
        client_id: String,
        found: oneshot::Sender<Option<String>>,
    },
    Sweep {
        connected: Box<dyn Fn(&str) -> bool + Send>,
        done: oneshot::Sender<Result<usize, String>>,
    },
}

impl SessionStore {
    /// Starts the thread that reads and writes the sessions kept in `log`'s file; it ends
    /// with the last clone.
    pub fn start(log: EventLog) -> std::io::Result<Self> {
        let (queue, ops) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("mqtt-sessions".into())
            .spawn(move || serve(&log, &ops))?;
        Ok(Self {
            queue: Arc::new(std::sync::Mutex::new(queue)),
        })
    }

    fn queue(&self, op: Op) {
        // the thread ends only when every sender is gone
        let _ = self.queue.lock().expect("not poisoned").send(op);
    }

    /// The saved state of a client's session, if it has one that has not expired.
    pub async fn load(&self, client_id: &str) -> Option<SessionState> {
        let (found, text) = oneshot::channel();
        self.queue(Op::Load {
            client_id: client_id.to_owned(),
            found,
        });
        let text = text.await.ok()??;
        match serde_json::from_str::<SessionState>(&text) {
            Ok(state) if !state.expired(Utc::now()) => Some(state),
            Ok(_) => None,
            Err(e) => {
                tracing::warn!(client_id, error = %e, "an MQTT session's state does not read back");
                None
            }
        }
    }

    /// Forgets a client's session, after every read and write asked for before; returns
    /// once that is durable.
    pub async fn forget(&self, client_id: &str) {
        let (done, written) = oneshot::channel();
        self.queue(Op::Save {
            client_id: client_id.to_owned(),
            text: None,
            done,
        });
        let _ = written.await;
    }

    /// Removes the saved sessions that expired or do not read back, except those of the
    /// clients `connected` tells (whose state is saved again as they end), after every
    /// read and write asked for before; how many.
    pub async fn sweep(
        &self,
        connected: impl Fn(&str) -> bool + Send + 'static,
    ) -> Result<usize, String> {
        let (done, swept) = oneshot::channel();
        self.queue(Op::Sweep {
            connected: Box::new(connected),
            done,
        });
        swept
            .await
            .unwrap_or_else(|_| Err("the sessions' store has stopped".into()))
    }

    /// Saves the state `take` gives (a client id and its session), if any: `take` runs
    /// and its state is queued as one step, which no other save or forget interleaves.
    /// The returned receiver completes once it is durable (or could not be written,
    /// which is logged).
    pub fn save_with(
        &self,
        take: impl FnOnce() -> Option<(String, SessionState)>,
    ) -> Option<oneshot::Receiver<()>> {
        let queue = self.queue.lock().expect("not poisoned");
        let (client_id, state) = take()?;
        let (done, written) = oneshot::channel();
        let text = serde_json::to_string(&state).expect("sessions serialize");
        let _ = queue.send(Op::Save {
            client_id,
            text: Some(text),
            done,
        });
        Some(written)
    }
}

/// The store's thread: every operation in order; the saves queued together in one write,
/// before any read queued after them.
fn serve(log: &EventLog, ops: &std::sync::mpsc::Receiver<Op>) {
    type Save = (String, Option<String>, oneshot::Sender<()>);
    let mut saves: Vec<Save> = Vec::new();
    let write = |saves: &mut Vec<Save>| {
        if saves.is_empty() {
            return;
        }
        let keys = saves
            .iter()
            .map(|(client_id, _, _)| key(client_id))
            .collect::<Vec<_>>();
        let changes = keys
            .iter()
            .zip(saves.iter())
            .map(|(key, (_, text, _))| (key.as_str(), text.as_deref()));
        if let Err(e) = log.set_states(changes) {
            tracing::warn!(sessions = saves.len(), error = %e, "MQTT sessions' states cannot be saved");
        }
        for (_, _, done) in saves.drain(..) {
            let _ = done.send(());
        }
    };
    while let Ok(first) = ops.recv() {
        for op in std::iter::once(first).chain(ops.try_iter()) {
            match op {
                Op::Save {
                    client_id,
                    text,
                    done,
                } => saves.push((client_id, text, done)),
                Op::Load { client_id, found } => {
                    write(&mut saves);
                    let text = log.state(&key(&client_id)).unwrap_or_else(|e| {
                        tracing::warn!(client_id, error = %e, "an MQTT session's state cannot be read");
                        None
                    });
                    let _ = found.send(text);
                }
                Op::Sweep { connected, done } => {
                    write(&mut saves);
                    let _ = done.send(sweep(log, &*connected));
                }
            }
        }
        write(&mut saves);
    }
}

/// Removes the sessions that expired or do not read back, except connected clients'.
fn sweep(log: &EventLog, connected: &dyn Fn(&str) -> bool) -> Result<usize, String> {
    let now = Utc::now();
    let prefix = key("");
    let states = log.states(&prefix).map_err(|e| e.to_string())?;
    let gone: Vec<&str> = states
        .iter()
        .filter(|(key, text)| {
            let client_id = key.strip_prefix(&prefix).unwrap_or(key);
            !connected(client_id)
                && serde_json::from_str::<SessionState>(text)
                    .ok()
                    .is_none_or(|s| s.expired(now))
        })
        .map(|(key, _)| key.as_str())
        .collect();
    if !gone.is_empty() {
        log.set_states(gone.iter().map(|key| (*key, None)))
            .map_err(|e| e.to_string())?;
    }
    Ok(gone.len())
}

/// How often a connected session's state is saved when it does not change: its time of
/// saving is when its expiry counts from should the process end without saving it (a
/// crash), so it stays at most this old (or half its expiry, if shorter) while the
/// client is connected.
pub const REFRESH_INTERVAL: Duration = Duration::from_secs(60);

/// Whether a session's state need not be saved now: it is the one saved last (but for
/// its time of saving), and that was less than [`REFRESH_INTERVAL`] (or half its
/// expiry) ago.
fn saved_already(
    last: Option<&(SessionState, tokio::time::Instant)>,
    state: &SessionState,
    now: tokio::time::Instant,
) -> bool {
    let refresh = REFRESH_INTERVAL.min(Duration::from_secs(u64::from(state.expiry) / 2));
    last.is_some_and(|(last, at)| {
        now.duration_since(*at) < refresh
            && SessionState {
                saved: state.saved,
                ..last.clone()
            } == *state
    })
}

/// Saves a connected session's state every [`SAVE_INTERVAL`] while it changes, and every
/// [`REFRESH_INTERVAL`] while it does not; ends with the connection (whose end saves the
/// last state) or when another connection takes the session over.
pub async fn keep(hub: Arc<Hub>, store: SessionStore, client_id: String, session: u64) {
    let mut last = None;
    let mut interval = tokio::time::interval(SAVE_INTERVAL);
    loop {
        interval.tick().await;
        let mut ended = false;
        let written = store.save_with(|| {
            let Some(state) = hub.snapshot(session) else {
                ended = true;
                return None;
            };
            let now = tokio::time::Instant::now();
            if saved_already(last.as_ref(), &state, now) {
                return None;
            }
            last = Some((state.clone(), now));
            Some((client_id.clone(), state))
        });
        if ended {
            return;
        }
        // one save at a time per session: the store's queue stays as long as the sessions
        if let Some(written) = written {
            let _ = written.await;
        }
    }
}

/// Whether a filter is one application's events, exactly: `app/{app}`.
pub fn resumable_application(filter: &str) -> Option<&str> {
    let filter = TopicFilter::parse(filter).ok()?;
    if filter.group().is_some() {
        return None;
    }
    filter.application()
}

/// Which subscription a feed serves.
pub enum Fed {
    /// A resuming subscription (of a persistent session, or of one taken up for a
    /// single connection): each event's acknowledgement moves its cursor; fed for as
    /// long as it lives.
    Tracked,
    /// A clean session's subscription that fell behind (it keeps no cursor): fed until
    /// it has caught up with the log and routing takes it back through the handoff.
    Behind(Arc<Handoff>),
}

/// Starts feeding a subscription from the log (see [`feed`]) on the main runtime: the
/// events of the cursor's application (of its uid, when it has one) after its position.
pub fn start_feed(
    log: &EventLog,
    main: &tokio::runtime::Handle,
    cursor: &Cursor,
    mode: ContentMode,
    queue: mpsc::Sender<Push>,
    fed: Fed,
) -> tokio::task::AbortHandle {
    let uid = Some(cursor.uid.as_str()).filter(|uid| !uid.is_empty());
    let follower = log.follow(&cursor.application, uid, cursor.position);
    main.spawn(feed(follower, cursor.application.clone(), mode, queue, fed))
        .abort_handle()
}

/// Feeds a subscription from the log: every event of its application after
/// `follower`'s position, in order, into the session's queue (waiting while it is full:
/// nothing is dropped), each tracked (for [`Fed::Tracked`]) so that its acknowledgement
/// moves the cursor. A subscription that fell behind is fed until routing takes it back:
/// once a read reached the log's end and the queue is at most half full, the feed says
/// it has caught up, and it stops at its next read if routing took the subscription
/// back meanwhile.
async fn feed(
    mut follower: Follower,
    application: String,
    mode: ContentMode,
    queue: mpsc::Sender<Push>,
    fed: Fed,
) {
    let track = matches!(fed, Fed::Tracked);
    let topic = application_events(&application);
    let application: Arc<str> = application.into();
    // after a failed read: 1 s, doubled at each failure in a row up to 30 s
    let mut retry = std::time::Duration::from_secs(1);
    loop {
        let events = match follower.next(BATCH).await {
            Ok(events) => {
                retry = std::time::Duration::from_secs(1);
                events
            }
            Err(e) => {
                // (the follower stays where it was: tried again, nothing is skipped)
                tracing::warn!(application = %application, error = %e, retry_in = ?retry, "a subscription cannot read the event log");
                tokio::time::sleep(retry).await;
                retry = (retry * 2).min(std::time::Duration::from_secs(30));
                continue;
            }
        };
        if let Fed::Behind(handoff) = &fed
            && !handoff.go_on()
        {
            // routing delivers these, and what comes after them
            return;
        }
        // (a read shorter than a batch reached the log's end)
        let at_end = events.len() < BATCH;
        for event in events {
            let delivery: Arc<Delivery> = Arc::new(delivery_for(mode, &topic, &event.json));
            let push = Push {
                delivery,
                qos1: true,
                track: track.then(|| Track {
                    application: application.clone(),
                    position: event.sequence,
                }),
            };
            if queue.send(push).await.is_err() {
                // the connection ended
                return;
            }
        }
        if let Fed::Behind(handoff) = &fed
            && at_end
            && queue.capacity() * 2 >= queue.max_capacity()
        {
            handoff.caught_up(follower.position());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_one_applications_events_resume() {
        assert_eq!(resumable_application("app/app1"), Some("app1"));
        for filter in [
            "app/+",
            "app/#",
            "app/",
            "app/a/b",
            "$share/g/app/app1",
            "cmd/app1/#",
        ] {
            assert_eq!(resumable_application(filter), None, "{filter}");
        }
    }

    fn state(filter: &str) -> SessionState {
        SessionState {
            expiry: 3600,
            saved: Utc::now(),
            subscriptions: vec![SavedSubscription {
                filter: filter.into(),
                qos1: true,
                binary: false,
                cursor: None,
            }],
            device: None,
        }
    }

    #[tokio::test]
    async fn the_store_reads_and_writes_in_the_order_asked_for() {
        let dir = tempfile::tempdir().unwrap();
        let log = EventLog::open(dir.path().join("events.redb"), 100).unwrap();
        let store = SessionStore::start(log.clone()).unwrap();
        assert_eq!(store.load("c1").await, None);

        // a save not waited for (as a connection's last) is read by the next load
        let taken = state("app/app1");
        let _ = store.save_with(|| Some(("c1".into(), taken.clone())));
        assert_eq!(store.load("c1").await, Some(taken.clone()));

        // many saves queued at once, then a forget: written in that order, the forget
        // stays
        for n in 0..50 {
            let _ = store.save_with(|| Some(("c1".into(), state(&format!("app/a{n}")))));
            let _ = store.save_with(|| Some((format!("c{n}@app1"), state("app/app1"))));
        }
        store.forget("c1").await;
        assert_eq!(store.load("c1").await, None);
        assert_eq!(log.state("mqtt/c1").unwrap(), None);
        let other = store.load("c7@app1").await.unwrap();
        assert_eq!(other.subscriptions, state("app/app1").subscriptions);

        // nothing to take, nothing written
        assert!(store.save_with(|| None).is_none());
        assert_eq!(store.load("c1").await, None);

        // a written save completes its receiver once it is durable
        let written = store
            .save_with(|| Some(("c2".into(), taken.clone())))
            .unwrap();
        written.await.unwrap();
        assert!(log.state("mqtt/c2").unwrap().is_some());
    }

    #[tokio::test]
    async fn a_sweep_removes_expired_sessions_but_not_connected_clients() {
        let dir = tempfile::tempdir().unwrap();
        let log = EventLog::open(dir.path().join("events.redb"), 100).unwrap();
        let store = SessionStore::start(log.clone()).unwrap();
        let left_ago = |expiry| SessionState {
            expiry,
            saved: Utc::now() - chrono::Duration::seconds(100),
            ..state("app/app1")
        };
        for (client_id, expiry) in [("expired", 10), ("kept", 3600), ("connected", 10)] {
            let _ = store.save_with(|| Some((client_id.into(), left_ago(expiry))));
        }
        log.set_state("mqtt/garbled", Some("not a session"))
            .unwrap();
        log.set_state("ws/u1/g1", Some("12")).unwrap();

        assert_eq!(
            store.sweep(|client_id| client_id == "connected").await,
            Ok(2)
        );
        for (key, kept) in [
            ("mqtt/expired", false),
            ("mqtt/garbled", false),
            ("mqtt/kept", true),
            ("mqtt/connected", true),
            ("ws/u1/g1", true),
        ] {
            assert_eq!(log.state(key).unwrap().is_some(), kept, "{key}");
        }
        // a save asked for before a sweep is written before it
        let _ = store.save_with(|| Some(("late".into(), left_ago(10))));
        assert_eq!(store.sweep(|_| false).await, Ok(2));
        assert_eq!(log.states("mqtt/").unwrap().len(), 1);
    }

    #[test]
    fn an_unchanged_session_is_saved_again_every_refresh_interval() {
        let now = tokio::time::Instant::now();
        let at = |state: &SessionState, ago: u64| {
            Some((state.clone(), now - std::time::Duration::from_secs(ago)))
        };
        let saved = state("app/app1");
        let later = SessionState {
            saved: saved.saved + chrono::Duration::seconds(5),
            ..saved.clone()
        };
        // the time of saving is no change
        assert!(saved_already(at(&saved, 1).as_ref(), &later, now));
        assert!(saved_already(at(&saved, 59).as_ref(), &later, now));
        // but it is saved again once a minute
        assert!(!saved_already(at(&saved, 60).as_ref(), &later, now));
        // a session expiring sooner, at half its expiry
        let brief = |expiry| SessionState {
            expiry,
            ..later.clone()
        };
        assert!(saved_already(at(&brief(30), 14).as_ref(), &brief(30), now));
        assert!(!saved_already(at(&brief(30), 15).as_ref(), &brief(30), now));
        // a change is saved at once; the first state too
        let changed = state("app/app2");
        assert!(!saved_already(at(&saved, 1).as_ref(), &changed, now));
        assert!(!saved_already(None, &saved, now));
    }

    #[test]
    fn a_session_expires_after_its_interval() {
        let saved = Utc::now() - chrono::Duration::seconds(100);
        let state = |expiry| SessionState {
            expiry,
            saved,
            subscriptions: vec![],
            device: None,
        };
        assert!(state(99).expired(Utc::now()));
        assert!(!state(3600).expired(Utc::now()));
    }
}
