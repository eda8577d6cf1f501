//! The broker's sessions and their subscriptions: routes the applications' events (to
//! `app/{app}`) and the devices' commands (to `cmd/{app}/{device}/{command}`) to every
//! matching session whose policy lets it receive them, and to one member of each shared
//! subscription group (`$share/{group}/...`).
//!
//! The hub is `Send + Sync` and never blocks: each session has a bounded queue, drained
//! by its connection. A QoS 1 subscription to one application's events (`app/{app}`)
//! whose queue is full falls back to the event log: from the first event that did not
//! fit, a feed reads the application's events from the log, waiting for the connection
//! (nothing acknowledged to a device is dropped for a slow subscriber, within the log's
//! retention); once the feed has caught up with the log and the queue has room again,
//! routing takes the subscription back at the next event (see [`Handoff`]). Other
//! subscriptions that fall that far behind lose messages, counted and logged.
//!
//! Routing does not scan the sessions: every live subscription (but the resuming ones,
//! fed from the log) is kept in an [`Index`], a trie over the filters' levels, which
//! gives the subscriptions matching a topic; only their sessions' policies are checked.
//! The sessions with a Drogue `command/inbox/...` subscription are kept apart for
//! [`Hub::command`], by their device's application: a command looks at its own
//! application's only (another tenant's many sessions cost it nothing). Routing takes a
//! read lock: subscribing, ending and taking over sessions take the write lock.

use super::sessions::{Cursor, SavedSubscription, SessionState, resumable_application};
use drogue_shared::commands::{Command, CommandPublisher, PublishError, PublishedCommand};
use drogue_shared::events::log::LoggedEvent;
use drogue_shared::mqtt::filter::TopicFilter;
use drogue_shared::mqtt::topics::{application_events, drogue};
use drogue_shared::mqtt::{Action, Policy};
use ntex_bytes::{ByteString, Bytes};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use tokio::sync::{Notify, mpsc};

/// Subscriptions one session may hold (IoT Core's limit per connection).
pub const MAX_SUBSCRIPTIONS: usize = 50;

/// Live connections one device may hold (with its name, aliases and unique usernames as
/// client ids); a further one takes over the oldest.
pub const DEFAULT_CONNECTIONS_PER_DEVICE: usize = 4;

/// Live connections one user's tenancy may hold: the devices of the applications the
/// user owns and the user's own application clients together (as many as the devices a
/// user may own by default); a further one is refused.
pub const DEFAULT_CONNECTIONS_PER_USER: usize = 10_000;

/// Live connections at most; 0 for no limit.
#[derive(Debug, Clone, Copy, Default)]
pub struct ConnectionLimits {
    /// Per device (its name, aliases and unique usernames as client ids): a further
    /// connection takes over the device's oldest.
    pub per_device: usize,
    /// Per user: a further connection is refused.
    pub per_user: usize,
}

/// A connection refused: its owner holds as many live connections as it may.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OverQuota {
    pub limit: usize,
}

/// How many messages wait for one session before new ones are dropped.
pub const SESSION_QUEUE: usize = 4096;

/// The content type of structured CloudEvents.
pub const STRUCTURED: &str = "application/cloudevents+json; charset=utf-8";

/// How an application receives events: the JSON CloudEvent, or (MQTT 5) the data as
/// payload with the attributes as user properties.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContentMode {
    Structured,
    Binary,
}

/// A message for sessions, built once for all of them: its parts are the connections'
/// own buffer types, so that sending it to each session clones reference counts (or
/// copies a few inline bytes), never the payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub topic: ByteString,
    pub payload: Bytes,
    pub content_type: Option<ByteString>,
    pub correlation_data: Option<Bytes>,
    pub user_properties: Vec<(ByteString, ByteString)>,
}

/// What a session's connection is told to do.
#[derive(Debug, Clone)]
pub struct Push {
    pub delivery: Arc<Delivery>,
    pub qos1: bool,
    /// For a resuming subscription: the event its acknowledgement moves the cursor to.
    pub track: Option<Track>,
}

/// An event of a resuming subscription, by its place in its application's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Track {
    pub application: Arc<str>,
    pub position: u64,
}

/// Starts the task feeding a subscription that fell behind from the event log: the
/// events of the cursor's application after its position, into a session's queue, until
/// the routing takes the subscription back through the [`Handoff`] (see
/// `sessions::start_feed`).
pub type Feeder = Box<
    dyn Fn(&Cursor, ContentMode, mpsc::Sender<Push>, Arc<Handoff>) -> tokio::task::AbortHandle
        + Send
        + Sync,
>;

/// How a subscription fed from the log after falling behind goes back to live routing,
/// with no event missed or sent twice. Its feed tells, after queueing everything up to
/// a position and with room left in the queue, that it has caught up there; the routing
/// of the next event (the one after that position) and the feed's next read then race
/// for the subscription: whichever moves the state first delivers that event and the
/// ones after it, and the other leaves them. Routing runs in the order of the log, so
/// it sees that next event before any later one.
#[derive(Debug)]
pub struct Handoff(AtomicU64);

impl Handoff {
    /// The feed is behind (or reading): routing leaves the subscription to it.
    const FEEDING: u64 = u64::MAX - 1;
    /// Routing took the subscription back: the feed stops.
    const LIVE: u64 = u64::MAX;

    fn new() -> Self {
        Self(AtomicU64::new(Self::FEEDING))
    }

    /// The feed queued every event up to `position` and its queue has room: routing may
    /// take the subscription back at the next event.
    pub fn caught_up(&self, position: u64) {
        let _ =
            self.0
                .compare_exchange(Self::FEEDING, position, Ordering::AcqRel, Ordering::Acquire);
    }

    /// The feed read more events: whether it still feeds them (`false`: routing took the
    /// subscription back, and the feed must queue nothing more).
    pub fn go_on(&self) -> bool {
        match self.0.load(Ordering::Acquire) {
            Self::LIVE => false,
            Self::FEEDING => true,
            position => self
                .0
                .compare_exchange(position, Self::FEEDING, Ordering::AcqRel, Ordering::Acquire)
                .is_ok(),
        }
    }

    /// Routing's side, at the event `sequence`: whether it takes the subscription back
    /// (its feed caught up just before this event and reads no further).
    fn take_back(&self, sequence: u64) -> bool {
        sequence > 0
            && self
                .0
                .compare_exchange(
                    sequence - 1,
                    Self::LIVE,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                )
                .is_ok()
    }
}

/// The feed of a subscription that fell behind, and how it hands the subscription back.
struct Feeding {
    handoff: Arc<Handoff>,
    /// The application whose events it feeds (its name and `uid`).
    application: String,
    uid: String,
    _feed: Feed,
}

/// The task feeding a resuming subscription from the log; ends with it.
struct Feed(tokio::task::AbortHandle);

impl Drop for Feed {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A resuming subscription's cursor and feed.
struct Resume {
    /// Its application (the position it started at).
    cursor: Cursor,
    /// The newest position the client acknowledged (moved under the hub's read lock:
    /// acknowledgements do not hold up routing).
    position: AtomicU64,
    _feed: Feed,
}

impl Resume {
    fn new(cursor: Cursor, feed: Feed) -> Self {
        Self {
            position: AtomicU64::new(cursor.position),
            cursor,
            _feed: feed,
        }
    }

    /// The cursor as it stands.
    fn cursor(&self) -> Cursor {
        Cursor {
            position: self.position.load(Ordering::Relaxed),
            ..self.cursor.clone()
        }
    }
}

/// How a connection takes up its session (see [`Hub::register`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct Taking {
    /// Seconds a persistent session outlives its connection; `None` for a clean one.
    pub expiry: Option<u32>,
    /// The connection restores a state saved or taken over (it has no clean start)
    /// after it registers: until it is done ([`Hub::restored`]), a connection taking
    /// its session over inherits nothing from it and reads the saved state itself.
    pub restoring: bool,
}

impl From<Option<u32>> for Taking {
    fn from(expiry: Option<u32>) -> Self {
        Self {
            expiry,
            restoring: false,
        }
    }
}

/// The sending side of a session, as its connection registered it.
pub struct SessionHandle {
    pub id: u64,
    /// Notified when the connection must end: another connection took the session over,
    /// or (with `revoked` set) the client's access ended.
    pub close: Arc<Notify>,
    pub revoked: Arc<AtomicBool>,
}

struct Subscription {
    /// Its name in the [`Index`] (unique in the hub).
    key: u64,
    filter: String,
    group: Option<String>,
    qos1: bool,
    mode: ContentMode,
    /// Fed from the log rather than routed live, with a cursor (a persistent session's).
    resume: Option<Resume>,
    /// Fed from the log since it fell behind (still in the index: routing takes it back
    /// once its feed has caught up).
    fed: Option<Feeding>,
    /// A live shared subscription's group's turn, shared by its members.
    turn: Option<Arc<AtomicUsize>>,
    /// The position of the first event that did not fit in the session's queue, once
    /// the subscription falls back to the log (0 while it is routed live).
    behind: AtomicU64,
}

impl Subscription {
    fn saved(&self) -> SavedSubscription {
        SavedSubscription {
            filter: match &self.group {
                Some(group) => format!("$share/{group}/{}", self.filter),
                None => self.filter.clone(),
            },
            qos1: self.qos1,
            binary: self.mode == ContentMode::Binary,
            cursor: self.resume.as_ref().map(Resume::cursor),
        }
    }
}

struct Entry {
    client_id: String,
    policy: Arc<Policy>,
    subscriptions: Vec<Subscription>,
    /// The session's queue; `None` until its first subscription (see
    /// [`Hub::attach_queue`]): a client that only publishes never gets one.
    queue: Option<mpsc::Sender<Push>>,
    close: Arc<Notify>,
    revoked: Arc<AtomicBool>,
    /// Seconds a persistent session outlives its connection; `None` for a clean one.
    expiry: Option<u32>,
    /// The device's `uid`, for a device's connection.
    device: Option<String>,
    /// The user the connection counts against, if any.
    owner: Option<String>,
    /// Whether the session's state is its live subscriptions.
    held: Held,
}

/// What a session's state is, to save or to hand to a connection taking it over.
enum Held {
    /// Its live subscriptions.
    Live,
    /// Its connection is still restoring its earlier state (see [`Taking`]): that state
    /// once read ([`Hub::restoring`]); nothing before (the saved state stays as it is).
    Restoring(Option<SessionState>),
    /// Closed by its device's connection limit: its state then (the session is kept
    /// for its client's next connection, though its connection feeds nothing more).
    Closed(Option<SessionState>),
}

impl Entry {
    fn snapshot(&self) -> Option<SessionState> {
        let expiry = self.expiry?;
        if let Held::Restoring(state) | Held::Closed(state) = &self.held {
            return state.as_ref().map(|state| SessionState {
                expiry,
                device: self.device.clone(),
                ..state.clone()
            });
        }
        Some(SessionState {
            expiry,
            saved: chrono::Utc::now(),
            subscriptions: self.subscriptions.iter().map(Subscription::saved).collect(),
            device: self.device.clone(),
        })
    }
}

#[derive(Default)]
struct Sessions {
    by_id: HashMap<u64, Entry>,
    by_client: HashMap<String, u64>,
    /// The live sessions of each device (by `uid`), oldest first.
    by_device: HashMap<String, std::collections::VecDeque<u64>>,
    /// How many live sessions count against each user.
    by_owner: HashMap<String, usize>,
    /// The subscriptions routed live, by their filters.
    index: Index,
    /// The sessions holding a Drogue `command/inbox/...` subscription.
    inbox: Inboxes,
    /// The key of the next subscription.
    next_key: u64,
}

impl Sessions {
    /// Ends every subscription of a session (its connection feeds nothing more).
    fn clear_subscriptions(&mut self, id: u64) {
        if let Some(entry) = self.by_id.get_mut(&id) {
            for sub in entry.subscriptions.drain(..) {
                self.index.remove(id, &sub);
            }
            self.inbox.remove(&entry.client_id, id);
        }
    }

    /// Keeps the set of inbox sessions up to date after a session's subscriptions
    /// changed.
    fn list_inbox(&mut self, id: u64) {
        let Some(entry) = self.by_id.get(&id) else {
            return;
        };
        let listed = entry
            .subscriptions
            .iter()
            .any(|sub| drogue::inbox(&sub.filter).is_some());
        if listed {
            self.inbox.insert(&entry.client_id, id);
        } else {
            self.inbox.remove(&entry.client_id, id);
        }
    }

    /// Forgets a session in its device's list.
    fn unlist_device(&mut self, device: &str, id: u64) {
        if let Some(ids) = self.by_device.get_mut(device) {
            ids.retain(|i| *i != id);
            if ids.is_empty() {
                self.by_device.remove(device);
            }
        }
    }
}

/// The sessions holding a Drogue `command/inbox/...` subscription, by their device's
/// application (of their client id, `{device}@{application}`; only a device's session
/// can hold one).
#[derive(Default)]
struct Inboxes(HashMap<String, HashSet<u64>>);

impl Inboxes {
    fn application(client_id: &str) -> &str {
        client_id
            .rsplit_once('@')
            .map_or("", |(_, application)| application)
    }

    fn insert(&mut self, client_id: &str, id: u64) {
        let application = Self::application(client_id);
        match self.0.get_mut(application) {
            Some(ids) => {
                ids.insert(id);
            }
            None => {
                self.0.insert(application.to_owned(), HashSet::from([id]));
            }
        }
    }

    fn remove(&mut self, client_id: &str, id: u64) {
        let application = Self::application(client_id);
        if let Some(ids) = self.0.get_mut(application) {
            ids.remove(&id);
            if ids.is_empty() {
                self.0.remove(application);
            }
        }
    }

    /// The sessions of an application's devices.
    fn of(&self, application: &str) -> impl Iterator<Item = &u64> {
        self.0.get(application).into_iter().flatten()
    }

    fn len(&self) -> usize {
        self.0.values().map(HashSet::len).sum()
    }
}

/// An event of the log being routed, and the subscriptions (session, key) that fell
/// behind at it.
struct FromLog<'a> {
    event: &'a LoggedEvent,
    behind: Vec<(u64, u64)>,
}

/// A session's recheck counted as waiting for a registry change (see
/// [`Hub::waiting_for_change`]).
pub struct WaitingForChange<'a>(&'a AtomicU64);

impl Drop for WaitingForChange<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A session's delivery task, counted while it runs (see [`Hub::delivery_task`]).
pub struct DeliveryTask(Arc<Hub>);

impl Drop for DeliveryTask {
    fn drop(&mut self) {
        self.0.delivery_tasks.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The live sessions.
#[derive(Default)]
pub struct Hub {
    next: AtomicU64,
    turn: AtomicUsize,
    dropped: AtomicU64,
    fell_behind: AtomicU64,
    caught_up: AtomicU64,
    rechecks: AtomicU64,
    waiting_for_change: AtomicU64,
    publishes_in_flight: AtomicU64,
    delivery_tasks: AtomicU64,
    sessions: RwLock<Sessions>,
    limits: ConnectionLimits,
    /// Feeds the subscriptions that fell behind from the log; without one, they drop.
    feeder: Option<Feeder>,
}

impl Hub {
    /// A hub whose connections are held to `limits`.
    pub fn with_limits(limits: ConnectionLimits) -> Self {
        Self {
            limits,
            ..Self::default()
        }
    }

    /// A hub whose subscriptions that fall behind are fed from the log by `feeder`.
    pub fn with_feeder(self, feeder: Feeder) -> Self {
        Self {
            feeder: Some(feeder),
            ..self
        }
    }

    /// Adds a session (persistent when `expiry` is given), of a device (its `uid`) or
    /// not, counted against its `owner`'s connections, if any. An earlier session with
    /// the same client id is closed, as MQTT wants; a session that is persistent or
    /// restoring, taking over a persistent one, gets its state (while that one is still
    /// restoring its own: the state it restores, or nothing before it read it, and the
    /// new connection reads the saved state). Beyond the device's connection limit its
    /// oldest other session is taken over (closed) too. Refused when the owner holds its
    /// limit of live sessions and this one takes over none of them; nothing changes then.
    pub fn register(
        &self,
        client_id: &str,
        owner: Option<&str>,
        device: Option<&str>,
        policy: Arc<Policy>,
        queue: Option<mpsc::Sender<Push>>,
        taking: impl Into<Taking>,
    ) -> Result<(SessionHandle, Option<SessionState>), OverQuota> {
        let Taking { expiry, restoring } = taking.into();
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let close = Arc::new(Notify::new());
        let revoked = Arc::new(AtomicBool::new(false));
        let mut sessions = self.sessions.write().expect("not poisoned");
        if let Some(owner) = owner {
            self.within_quota(&sessions, client_id, owner, device)?;
        }
        let mut inherited = None;
        if let Some(old) = sessions.by_client.insert(client_id.to_owned(), id)
            && let Some(entry) = sessions.by_id.get_mut(&old)
        {
            tracing::info!(client_id, "a new connection takes over the session");
            // (a connection without a clean start takes the session up, persistent or
            // for itself only: MQTT 5's session expiry of 0)
            if expiry.is_some() || restoring {
                inherited = entry.snapshot();
            }
            entry.close.notify_one();
            let device = entry.device.clone();
            // the old connection feeds nothing more
            sessions.clear_subscriptions(old);
            if let Some(device) = device {
                sessions.unlist_device(&device, old);
            }
        }
        if let Some(device) = device {
            let limit = self.limits.per_device;
            let live = sessions.by_device.entry(device.to_owned()).or_default();
            let mut taken = Vec::new();
            while limit > 0 && live.len() >= limit {
                taken.extend(live.pop_front());
            }
            live.push_back(id);
            for old in taken {
                if let Some(entry) = sessions.by_id.get_mut(&old) {
                    tracing::info!(
                        client_id,
                        older = %entry.client_id,
                        limit,
                        "a device's new connection takes over its oldest one"
                    );
                    entry.close.notify_one();
                    if !matches!(entry.held, Held::Closed(_)) {
                        entry.held = Held::Closed(entry.snapshot());
                    }
                    sessions.clear_subscriptions(old);
                }
            }
        }
        sessions.by_id.insert(
            id,
            Entry {
                client_id: client_id.to_owned(),
                policy,
                subscriptions: Vec::new(),
                queue,
                close: close.clone(),
                revoked: revoked.clone(),
                expiry,
                device: device.map(str::to_owned),
                owner: owner.map(str::to_owned),
                held: if restoring {
                    Held::Restoring(None)
                } else {
                    Held::Live
                },
            },
        );
        if let Some(owner) = owner {
            *sessions.by_owner.entry(owner.to_owned()).or_default() += 1;
        }
        Ok((SessionHandle { id, close, revoked }, inherited))
    }

    /// Whether one more session of `owner` is allowed: under its limit, or taking over
    /// one of its own (a connection with the client id of one of its sessions, or a
    /// device's beyond its own limit) and so adding none.
    fn within_quota(
        &self,
        sessions: &Sessions,
        client_id: &str,
        owner: &str,
        device: Option<&str>,
    ) -> Result<(), OverQuota> {
        let limit = self.limits.per_user;
        let live = sessions.by_owner.get(owner).copied().unwrap_or(0);
        if limit == 0 || live < limit {
            return Ok(());
        }
        let takes_over_own = sessions
            .by_client
            .get(client_id)
            .and_then(|old| sessions.by_id.get(old))
            .is_some_and(|old| old.owner.as_deref() == Some(owner));
        let device_full = device.is_some_and(|device| {
            self.limits.per_device > 0
                && sessions
                    .by_device
                    .get(device)
                    .is_some_and(|live| live.len() >= self.limits.per_device)
        });
        if takes_over_own || device_full {
            return Ok(());
        }
        tracing::info!(
            client_id,
            owner,
            limit,
            "an MQTT connection beyond its owner's limit refused"
        );
        Err(OverQuota { limit })
    }

    /// A persistent session's state now; `None` for a clean or ended one, and for one
    /// that a newer connection took over (whose state is the newer one's now).
    pub fn snapshot(&self, id: u64) -> Option<SessionState> {
        let sessions = self.sessions.read().expect("not poisoned");
        let entry = sessions.by_id.get(&id)?;
        if sessions.by_client.get(&entry.client_id) != Some(&id) {
            return None;
        }
        entry.snapshot()
    }

    /// The earlier state a session's connection is restoring: until it is done, what a
    /// connection taking the session over inherits, and what is saved if it ends.
    pub fn restoring(&self, id: u64, state: &SessionState) {
        self.with_entry(id, |entry| {
            if let Held::Restoring(held) = &mut entry.held {
                *held = Some(state.clone());
            }
        });
    }

    /// A session's connection restored its earlier state: its live subscriptions are
    /// its state from now on.
    pub fn restored(&self, id: u64) {
        self.with_entry(id, |entry| {
            if let Held::Restoring(_) = entry.held {
                entry.held = Held::Live;
            }
        });
    }

    /// Changes a live session's entry (under the write lock).
    fn with_entry(&self, id: u64, change: impl FnOnce(&mut Entry)) {
        if let Some(entry) = self
            .sessions
            .write()
            .expect("not poisoned")
            .by_id
            .get_mut(&id)
        {
            change(entry);
        }
    }

    /// The client acknowledged an event of a resuming subscription.
    pub fn acked(&self, id: u64, track: &Track) {
        {
            // (a read lock: every PUBACK of a resuming subscription comes here)
            let sessions = self.sessions.read().expect("not poisoned");
            let Some(entry) = sessions.by_id.get(&id) else {
                return;
            };
            for sub in &entry.subscriptions {
                if let Some(resume) = &sub.resume
                    && *resume.cursor.application == *track.application
                {
                    resume.position.fetch_max(track.position, Ordering::Relaxed);
                }
            }
            if !matches!(entry.held, Held::Restoring(Some(_)) | Held::Closed(Some(_))) {
                return;
            }
        }
        // and the state held for the session, which is saved rather than its
        // subscriptions (while it restores, or once closed by its device's limit)
        let mut sessions = self.sessions.write().expect("not poisoned");
        if let Some(entry) = sessions.by_id.get_mut(&id)
            && let Held::Restoring(Some(state)) | Held::Closed(Some(state)) = &mut entry.held
        {
            for cursor in state
                .subscriptions
                .iter_mut()
                .filter_map(|s| s.cursor.as_mut())
            {
                if *cursor.application == *track.application {
                    cursor.position = cursor.position.max(track.position);
                }
            }
        }
    }

    /// Gives a live session the policy its client holds now; `false` if it is gone.
    pub fn set_policy(&self, id: u64, policy: Arc<Policy>) -> bool {
        // every live session is decided again every few seconds, and nearly always gets
        // the policy it has: that takes no write lock (which would hold up the routing
        // of every session's messages: with 10,000 connections, 2,000 times a second)
        {
            let sessions = self.sessions.read().expect("not poisoned");
            match sessions.by_id.get(&id) {
                None => return false,
                Some(entry) if entry.policy == policy => return true,
                Some(_) => {}
            }
        }
        let mut sessions = self.sessions.write().expect("not poisoned");
        let sessions = &mut *sessions;
        match sessions.by_id.get_mut(&id) {
            Some(entry) => {
                // routing checks the policy at every event; a feed from the log does
                // not: one of an application the client may no longer receive stops
                // (a resuming subscription, its cursor forgotten, is routed from then on)
                // (or another application of its name than the one it follows: routing
                // then takes the one the policy was decided for now)
                let forbidden =
                    |application: &str, uid: &str| !receives_application(&policy, application, uid);
                for sub in &mut entry.subscriptions {
                    if sub
                        .resume
                        .as_ref()
                        .is_some_and(|r| forbidden(&r.cursor.application, &r.cursor.uid))
                    {
                        sub.resume = None;
                        sessions.index.insert(id, sub);
                    }
                    if sub
                        .fed
                        .as_ref()
                        .is_some_and(|f| forbidden(&f.application, &f.uid))
                    {
                        // routing takes the subscription back, and checks each event
                        sub.fed = None;
                        sub.behind.store(0, Ordering::Relaxed);
                    }
                }
                entry.policy = policy;
                true
            }
            None => false,
        }
    }

    /// Ends a session whose client lost its access: it receives nothing more, and its
    /// connection is closed (MQTT 5: reason "not authorized").
    pub fn revoke(&self, id: u64) {
        let mut sessions = self.sessions.write().expect("not poisoned");
        if let Some(entry) = sessions.by_id.get_mut(&id) {
            entry.policy = Arc::new(Policy::default());
            entry.revoked.store(true, Ordering::SeqCst);
            entry.close.notify_one();
        }
    }

    /// Whether a session is live.
    pub fn is_live(&self, id: u64) -> bool {
        self.sessions
            .read()
            .expect("not poisoned")
            .by_id
            .contains_key(&id)
    }

    /// Removes a session whose connection ended; its state to save when it is
    /// persistent (and no newer connection took it over).
    pub fn remove(&self, id: u64) -> Option<(String, SessionState)> {
        let mut sessions = self.sessions.write().expect("not poisoned");
        let sessions = &mut *sessions;
        let entry = sessions.by_id.remove(&id)?;
        for sub in &entry.subscriptions {
            sessions.index.remove(id, sub);
        }
        sessions.inbox.remove(&entry.client_id, id);
        if let Some(device) = &entry.device {
            sessions.unlist_device(device, id);
        }
        if let Some(owner) = &entry.owner
            && let Some(live) = sessions.by_owner.get_mut(owner)
        {
            *live -= 1;
            if *live == 0 {
                sessions.by_owner.remove(owner);
            }
        }
        if sessions.by_client.get(&entry.client_id) != Some(&id) {
            return None;
        }
        sessions.by_client.remove(&entry.client_id);
        let state = entry.snapshot()?;
        Some((entry.client_id.clone(), state))
    }

    /// Gives a session its queue, before its first subscription: routing sends nothing
    /// to a session without one. A session keeps the first queue it is given.
    pub fn attach_queue(&self, id: u64, queue: mpsc::Sender<Push>) {
        self.with_entry(id, |entry| {
            entry.queue.get_or_insert(queue);
        });
    }

    /// Adds (or replaces) a subscription of a session; `false` when the session holds
    /// [`MAX_SUBSCRIPTIONS`] others already.
    pub fn subscribe(&self, id: u64, filter: &str, qos1: bool, mode: ContentMode) -> bool {
        self.subscribe_resuming(id, filter, qos1, mode, None, |_| unreachable!())
    }

    /// Adds (or replaces) a subscription; with a cursor, a resuming one fed by the task
    /// `feed` starts (unless the subscription resumes already: it keeps its cursor).
    pub fn subscribe_resuming(
        &self,
        id: u64,
        filter: &str,
        qos1: bool,
        mode: ContentMode,
        cursor: Option<Cursor>,
        feed: impl FnOnce(&Cursor) -> tokio::task::AbortHandle,
    ) -> bool {
        // the broker subscribes only to filters its client may have: valid ones
        let Ok(parsed) = TopicFilter::parse(filter) else {
            return false;
        };
        let (group, filter) = (
            parsed.group().map(str::to_owned),
            parsed.filter().to_owned(),
        );
        let mut sessions = self.sessions.write().expect("not poisoned");
        let sessions = &mut *sessions;
        if let Some(entry) = sessions.by_id.get_mut(&id) {
            let mut kept = None;
            if let Some(at) = entry
                .subscriptions
                .iter()
                .position(|s| s.filter == filter && s.group == group)
            {
                let old = entry.subscriptions.swap_remove(at);
                sessions.index.remove(id, &old);
                kept = old.resume;
            }
            if entry.subscriptions.len() >= MAX_SUBSCRIPTIONS {
                sessions.list_inbox(id);
                return false;
            }
            // (the client's policy was read before; the entry's is the one a recheck
            // changes, and it sees only the subscriptions made when it does)
            let cursor =
                cursor.filter(|c| receives_application(&entry.policy, &c.application, &c.uid));
            let resume = match cursor {
                None => None,
                // a resuming subscription subscribed again goes on where it is (unless
                // its application was made anew since)
                Some(cursor)
                    if kept.as_ref().is_some_and(|kept| {
                        kept.cursor.application == cursor.application
                            && kept.cursor.uid == cursor.uid
                    }) =>
                {
                    kept
                }
                Some(cursor) => Some(Resume::new(cursor.clone(), Feed(feed(&cursor)))),
            };
            let key = sessions.next_key;
            sessions.next_key += 1;
            let turn = match (&group, &resume) {
                (Some(group), None) => Some(sessions.index.turn(group, &filter)),
                _ => None,
            };
            let sub = Subscription {
                key,
                filter,
                group,
                qos1,
                mode,
                resume,
                fed: None,
                turn,
                behind: AtomicU64::new(0),
            };
            sessions.index.insert(id, &sub);
            entry.subscriptions.push(sub);
            sessions.list_inbox(id);
        }
        true
    }

    /// The cursor of a session's resuming subscription to `filter`, if it has one.
    pub fn resuming(&self, id: u64, filter: &str) -> Option<Cursor> {
        let sessions = self.sessions.read().expect("not poisoned");
        sessions
            .by_id
            .get(&id)?
            .subscriptions
            .iter()
            .find_map(|sub| {
                sub.resume
                    .as_ref()
                    .filter(|_| sub.group.is_none() && sub.filter == filter)
                    .map(Resume::cursor)
            })
    }

    /// Removes a subscription; whether there was one.
    pub fn unsubscribe(&self, id: u64, filter: &str) -> bool {
        let mut sessions = self.sessions.write().expect("not poisoned");
        let sessions = &mut *sessions;
        let Some(entry) = sessions.by_id.get_mut(&id) else {
            return false;
        };
        let Ok(filter) = TopicFilter::parse(filter) else {
            return false;
        };
        let before = entry.subscriptions.len();
        let index = &mut sessions.index;
        entry.subscriptions.retain(|s| {
            let keep = s.filter != filter.filter() || s.group.as_deref() != filter.group();
            if !keep {
                index.remove(id, s);
            }
            keep
        });
        let removed = entry.subscriptions.len() != before;
        sessions.list_inbox(id);
        removed
    }

    /// The routing index's size: subscriptions and trie nodes in it, and sessions in the
    /// set of inbox subscribers; 0 when no session subscribes to anything.
    pub fn indexed(&self) -> usize {
        let sessions = self.sessions.read().expect("not poisoned");
        sessions.index.size() + sessions.inbox.len()
    }

    /// Messages dropped because a session's queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Subscriptions that fell behind their session's queue and went on from the log.
    pub fn fell_behind(&self) -> u64 {
        self.fell_behind.load(Ordering::Relaxed)
    }

    /// Subscriptions fed from the log after falling behind that caught up and are routed
    /// live again.
    pub fn caught_up(&self) -> u64 {
        self.caught_up.load(Ordering::Relaxed)
    }

    /// Counts a live session's access decided again.
    pub fn count_recheck(&self) {
        self.rechecks.fetch_add(1, Ordering::Relaxed);
    }

    /// Live sessions' access decided again.
    pub fn rechecks(&self) -> u64 {
        self.rechecks.load(Ordering::Relaxed)
    }

    /// Counts a session's recheck as waiting for a registry change while the guard
    /// lives.
    pub fn waiting_for_change(&self) -> WaitingForChange<'_> {
        self.waiting_for_change.fetch_add(1, Ordering::Relaxed);
        WaitingForChange(&self.waiting_for_change)
    }

    /// Sessions whose recheck waits for a registry change.
    pub fn rechecks_waiting(&self) -> u64 {
        self.waiting_for_change.load(Ordering::Relaxed)
    }

    /// Counts a session's delivery task until the guard is dropped (the task's end).
    pub fn delivery_task(self: &Arc<Self>) -> DeliveryTask {
        self.delivery_tasks.fetch_add(1, Ordering::Relaxed);
        DeliveryTask(self.clone())
    }

    /// Sessions' delivery tasks running: one per connection, none left after it.
    pub fn delivery_tasks(&self) -> u64 {
        self.delivery_tasks.load(Ordering::Relaxed)
    }

    /// Counts a publish of a connection as being handled, until [`Hub::publish_ended`].
    pub fn publish_started(&self) {
        self.publishes_in_flight.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a publish counted by [`Hub::publish_started`] as handled.
    pub fn publish_ended(&self) {
        self.publishes_in_flight.fetch_sub(1, Ordering::Relaxed);
    }

    /// Publishes of all connections being handled (read and not yet answered).
    pub fn publishes_in_flight(&self) -> u64 {
        self.publishes_in_flight.load(Ordering::Relaxed)
    }

    /// Whether a client id has a live session.
    pub fn has_client(&self, client_id: &str) -> bool {
        self.sessions
            .read()
            .expect("not poisoned")
            .by_client
            .contains_key(client_id)
    }

    /// Live sessions.
    pub fn sessions(&self) -> usize {
        self.sessions.read().expect("not poisoned").by_id.len()
    }

    /// Routes an application's event to `app/{app}`; how many sessions it went to.
    pub fn event(&self, event: &LoggedEvent) -> usize {
        let topic = application_events(&event.application);
        let mut structured = None;
        let mut binary = None;
        let mut from_log = FromLog {
            event,
            behind: Vec::new(),
        };
        let sent = self.route(
            &topic,
            (&event.application, event.application_uid.as_deref()),
            None,
            |mode| match mode {
                ContentMode::Structured => structured
                    .get_or_insert_with(|| Arc::new(delivery_for(mode, &topic, &event.json)))
                    .clone(),
                ContentMode::Binary => binary
                    .get_or_insert_with(|| Arc::new(binary_delivery(&topic, &event.json)))
                    .clone(),
            },
            Some(&mut from_log),
        );
        if !from_log.behind.is_empty() {
            self.fall_back_to_log(event, from_log.behind);
        }
        sent
    }

    /// Feeds the subscriptions (session, subscription key) that fell behind at `event`
    /// from the log, from that event on; they stay in the index, left to their feed
    /// until it hands them back.
    fn fall_back_to_log(&self, event: &LoggedEvent, behind: Vec<(u64, u64)>) {
        let Some(feeder) = &self.feeder else {
            return;
        };
        let mut sessions = self.sessions.write().expect("not poisoned");
        let sessions = &mut *sessions;
        for (id, key) in behind {
            let Some(entry) = sessions.by_id.get_mut(&id) else {
                continue;
            };
            let Some(sub) = entry.subscriptions.iter_mut().find(|s| s.key == key) else {
                continue;
            };
            let Some(queue) = entry.queue.clone() else {
                // (not reached: a subscription falls behind only when its session's
                // queue is full) routing must not wait for a feed that never starts
                sub.behind.store(0, Ordering::Relaxed);
                continue;
            };
            let position = *sub.behind.get_mut();
            if sub.resume.is_some() || position == 0 {
                continue;
            }
            let uid = match &event.application_uid {
                Some(uid) => uid.clone(),
                None => entry
                    .policy
                    .application_uid(&event.application)
                    .unwrap_or_default()
                    .to_owned(),
            };
            if !receives_application(&entry.policy, &event.application, &uid) {
                // its policy changed since routing read it: it drops what it missed,
                // as a subscription routed live
                sub.behind.store(0, Ordering::Relaxed);
                continue;
            }
            let cursor = Cursor {
                application: event.application.clone(),
                uid,
                position: position - 1,
            };
            let handoff = Arc::new(Handoff::new());
            // (a feed of an earlier fall, if any, has stopped: routing took it back)
            sub.fed = Some(Feeding {
                _feed: Feed(feeder(&cursor, sub.mode, queue, handoff.clone())),
                handoff,
                application: cursor.application,
                uid: cursor.uid,
            });
            self.fell_behind.fetch_add(1, Ordering::Relaxed);
            tracing::info!(
                client_id = %entry.client_id,
                application = %event.application,
                position,
                "a subscriber falls behind: its queue is full, its events now come from the event log"
            );
        }
    }

    /// Routes a command to `cmd/{app}/{device}/{command}`, with its content type and the
    /// request id as correlation data; how many sessions it went to.
    pub fn command(&self, published: &PublishedCommand) -> usize {
        let delivery = Arc::new(Delivery {
            topic: ByteString::from(published.topic.as_str()),
            payload: Bytes::copy_from_slice(&published.command.payload),
            content_type: published
                .command
                .content_type
                .as_deref()
                .map(ByteString::from),
            correlation_data: Some(Bytes::copy_from_slice(published.command.id.as_bytes())),
            user_properties: Vec::new(),
        });
        let command = &published.command;
        let application = (
            command.application.as_str(),
            Some(command.application_uid.as_str()),
        );
        // (and not to the connection of an earlier device of its name, deleted since)
        let device = Some((command.device.as_str(), command.device_uid.as_str()));
        self.route(
            &published.topic,
            application,
            device,
            |_| delivery.clone(),
            None,
        ) + self.route_inbox(published, &delivery)
    }

    /// Routes a command to the sessions subscribed to Drogue's `command/inbox/...` that
    /// may receive it (the device and the gateways serving it, by their policies), on the
    /// topic Drogue gives it there (see [`drogue`]).
    fn route_inbox(&self, published: &PublishedCommand, delivery: &Arc<Delivery>) -> usize {
        let command = &published.command;
        let sessions = self.sessions.read().expect("not poisoned");
        let mut sent = 0;
        for entry in sessions
            .inbox
            .of(&command.application)
            .filter_map(|id| sessions.by_id.get(id))
        {
            if !entry.policy.allows(Action::Receive, &published.topic)
                || !entry
                    .policy
                    .admits_application(&command.application, Some(&command.application_uid))
                || !entry.policy.admits_device(
                    &command.application,
                    &command.device,
                    &command.device_uid,
                )
            {
                continue;
            }
            let own = entry.device.as_deref() == Some(command.device_uid.as_str())
                && !command.device_uid.is_empty();
            // one copy per session: the first inbox subscription that asks for it
            let found = entry.subscriptions.iter().find_map(|sub| {
                let inbox = drogue::inbox(&sub.filter)?;
                drogue::inbox_topic(inbox, own, &command.device, &command.name)
                    .map(|topic| (sub, topic))
            });
            if let Some((sub, topic)) = found {
                let renamed = Arc::new(Delivery {
                    topic: topic.into(),
                    ..(**delivery).clone()
                });
                sent += usize::from(self.push(entry, sub, renamed, None));
            }
        }
        sent
    }

    /// Routes a message of `application` (its name and `uid`, if known) to the sessions
    /// whose subscriptions match `topic` and whose policies were decided for that very
    /// application (and, for a command, not for the connection of another device of the
    /// name of its `device`, a name and `uid`); for an event of the log, the
    /// subscriptions that fall behind at it are added to its list.
    fn route(
        &self,
        topic: &str,
        (application, uid): (&str, Option<&str>),
        device: Option<(&str, &str)>,
        mut delivery: impl FnMut(ContentMode) -> Arc<Delivery>,
        mut from_log: Option<&mut FromLog<'_>>,
    ) -> usize {
        let sessions = self.sessions.read().expect("not poisoned");
        let mut found = Vec::new();
        sessions.index.matching(topic, &mut found);
        if found.is_empty() {
            return 0;
        }
        // by session: each session's policy is checked once
        found.sort_unstable();
        let mut sent = 0;
        // shared groups: (group, filter) -> members that may receive
        let mut groups: HashMap<(&str, &str), Vec<(&Entry, &Subscription)>> = HashMap::new();
        for run in found.chunk_by(|a, b| a.session == b.session) {
            let Some(entry) = sessions.by_id.get(&run[0].session) else {
                continue;
            };
            if !entry.policy.allows(Action::Receive, topic)
                || !entry.policy.admits_application(application, uid)
                || device
                    .is_some_and(|(name, uid)| !entry.policy.admits_device(application, name, uid))
            {
                continue;
            }
            let mut direct: Option<&Subscription> = None;
            // in the session's order of subscriptions, as matched by the index
            for sub in &entry.subscriptions {
                if !run.iter().any(|leaf| leaf.key == sub.key) {
                    continue;
                }
                match &sub.group {
                    Some(group) => groups
                        .entry((group.as_str(), sub.filter.as_str()))
                        .or_default()
                        .push((entry, sub)),
                    // one copy per session, at the highest QoS granted
                    None if direct.is_none_or(|d| sub.qos1 && !d.qos1) => direct = Some(sub),
                    None => {}
                }
            }
            if let Some(sub) = direct {
                let from_log = from_log.as_deref_mut().map(|f| (run[0].session, f));
                sent += usize::from(self.push(entry, sub, delivery(sub.mode), from_log));
            }
        }
        for members in groups.values() {
            // the group's own turn: round robin over its members, whatever other groups
            // and topics are routed meanwhile
            let turn = match &members[0].1.turn {
                Some(turn) => turn.fetch_add(1, Ordering::Relaxed),
                None => self.turn.fetch_add(1, Ordering::Relaxed),
            };
            let (entry, sub) = members[turn % members.len()];
            sent += usize::from(self.push(entry, sub, delivery(sub.mode), None));
        }
        sent
    }

    /// Queues a message for a session; whether it goes to the session. With the event
    /// of the log it is (and the session's id, and the list of subscriptions that fell
    /// behind), a QoS 1 subscription to its application whose queue is full is listed
    /// to be fed from the log, from this event on, rather than dropping it.
    fn push(
        &self,
        entry: &Entry,
        sub: &Subscription,
        delivery: Arc<Delivery>,
        from_log: Option<(u64, &mut FromLog<'_>)>,
    ) -> bool {
        if sub.behind.load(Ordering::Relaxed) != 0 {
            // fed from the log (or being handed to its feed): the feed delivers this event
            // too, unless it caught up just before it and routing takes the subscription
            // back here
            let position = match (&sub.fed, &from_log) {
                (Some(fed), Some((_, from_log)))
                    if fed.handoff.take_back(from_log.event.sequence) =>
                {
                    from_log.event.sequence
                }
                _ => return true,
            };
            sub.behind.store(0, Ordering::Relaxed);
            self.caught_up.fetch_add(1, Ordering::Relaxed);
            tracing::info!(
                client_id = %entry.client_id,
                position,
                "a subscriber caught up with the event log: its events are routed live again"
            );
        }
        // (a subscription is added only once its session has a queue)
        let Some(queue) = &entry.queue else {
            return false;
        };
        match queue.try_send(Push {
            delivery,
            qos1: sub.qos1,
            track: None,
        }) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                if let Some((id, FromLog { event, behind })) = from_log
                    && self.feeder.is_some()
                    && sub.qos1
                    && sub.group.is_none()
                    && event.sequence > 0
                    && resumable_application(&sub.filter) == Some(event.application.as_str())
                    && sub
                        .behind
                        .compare_exchange(0, event.sequence, Ordering::Relaxed, Ordering::Relaxed)
                        .is_ok()
                {
                    behind.push((id, sub.key));
                    return true;
                }
                let dropped = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                // (not every time: a subscriber that cannot keep up drops many)
                if dropped.is_power_of_two() || dropped.is_multiple_of(10_000) {
                    tracing::warn!(
                        client_id = %entry.client_id,
                        dropped,
                        "a subscriber falls behind: its queue is full and messages were dropped"
                    );
                }
                false
            }
            // the connection is ending
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }
}

/// Whether a policy lets its client receive the events of the application `application`
/// with `uid` (from the log, where routing does not check each event).
fn receives_application(policy: &Policy, application: &str, uid: &str) -> bool {
    policy.allows(Action::Receive, &application_events(application))
        && policy.admits_application(application, Some(uid))
}

/// The local broker's side of command delivery: a command dropped off is routed to the
/// sessions that may receive it before the drop-off goes on (without waiting: a session
/// whose queue is full misses it, as a live QoS 0 message).
#[async_trait::async_trait]
impl CommandPublisher for Hub {
    async fn publish(&self, command: &Command) -> Result<(), PublishError> {
        self.command(&PublishedCommand {
            topic: drogue_shared::commands::topic(command),
            command: command.clone(),
        });
        Ok(())
    }
}

/// An event as a subscription in `mode` receives it.
pub fn delivery_for(mode: ContentMode, topic: &str, json: &str) -> Delivery {
    match mode {
        ContentMode::Structured => Delivery {
            topic: ByteString::from(topic),
            payload: Bytes::copy_from_slice(json.as_bytes()),
            content_type: Some(STRUCTURED.into()),
            correlation_data: None,
            user_properties: Vec::new(),
        },
        ContentMode::Binary => binary_delivery(topic, json),
    }
}

/// Binary content mode: the data as payload, `datacontenttype` as the content type and
/// every other attribute and extension as a user property of the same name.
fn binary_delivery(topic: &str, json: &str) -> Delivery {
    use cloudevents::{AttributesReader, Data};
    let event = match drogue_shared::events::read_structured(json) {
        Ok(event) => event,
        Err(e) => {
            // the log holds only events it serialized itself
            tracing::error!(error = %e, "a logged event does not read back");
            return Delivery {
                topic: ByteString::from(topic),
                payload: Bytes::copy_from_slice(json.as_bytes()),
                content_type: Some(STRUCTURED.into()),
                correlation_data: None,
                user_properties: Vec::new(),
            };
        }
    };
    let user_properties = event
        .iter()
        .filter(|(name, _)| *name != "datacontenttype")
        .map(|(name, value)| (ByteString::from(name), ByteString::from(value.to_string())))
        .collect();
    let payload = match event.data() {
        Some(Data::Binary(bytes)) => Bytes::copy_from_slice(bytes),
        Some(Data::String(text)) => Bytes::copy_from_slice(text.as_bytes()),
        Some(Data::Json(value)) => serde_json::to_vec(value).expect("JSON serializes").into(),
        None => Bytes::new(),
    };
    Delivery {
        topic: ByteString::from(topic),
        payload,
        content_type: event.datacontenttype().map(ByteString::from),
        correlation_data: None,
        user_properties,
    }
}

/// A subscription in the [`Index`]: its session, and its key among the session's
/// subscriptions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Leaf {
    session: u64,
    key: u64,
}

/// The subscriptions routed live, as a trie over their filters' levels: a topic's
/// subscriptions are found by walking its levels (a literal child and the `+` child at
/// each), never by scanning the sessions. Empty nodes are pruned as subscriptions go.
#[derive(Default)]
struct Index {
    root: Node,
    /// The turn of each shared subscription group (group, filter) with live members.
    turns: HashMap<(String, String), Arc<AtomicUsize>>,
}

#[derive(Default)]
struct Node {
    literal: HashMap<Box<str>, Node>,
    plus: Option<Box<Node>>,
    /// Filters ending at this node (`a/b` at `a` -> `b`).
    exact: Vec<Leaf>,
    /// Filters ending in `#` below this node (`a/b/#` at `a` -> `b`): they match this
    /// level and every level below.
    rest: Vec<Leaf>,
}

impl Index {
    /// Adds a session's subscription, unless it resumes (a feed delivers it from the log).
    fn insert(&mut self, session: u64, sub: &Subscription) {
        if sub.resume.is_none() {
            let leaf = Leaf {
                session,
                key: sub.key,
            };
            self.root.insert(sub.filter.split('/'), leaf);
        }
    }

    /// The turn of a shared subscription group, for a new member.
    fn turn(&mut self, group: &str, filter: &str) -> Arc<AtomicUsize> {
        self.turns
            .entry((group.to_owned(), filter.to_owned()))
            .or_default()
            .clone()
    }

    /// Removes a session's subscription (nothing for a resuming one: not indexed).
    fn remove(&mut self, session: u64, sub: &Subscription) {
        if let (Some(turn), Some(group)) = (&sub.turn, &sub.group) {
            // the last member leaves: (held by the index and by it)
            if Arc::strong_count(turn) <= 2 {
                self.turns.remove(&(group.clone(), sub.filter.clone()));
            }
        }
        if sub.resume.is_none() {
            let leaf = Leaf {
                session,
                key: sub.key,
            };
            self.root.remove(sub.filter.split('/'), leaf);
        }
    }

    /// Adds the subscriptions whose filters match `topic` to `found`. A topic starting
    /// with `$` is not matched by a first-level wildcard (as
    /// [`drogue_shared::mqtt::filter::levels_match`]).
    fn matching(&self, topic: &str, found: &mut Vec<Leaf>) {
        let mut levels = topic.split('/');
        if topic.starts_with('$') {
            let first = levels.next().unwrap_or_default();
            if let Some(child) = self.root.literal.get(first) {
                child.matching(levels, found);
            }
        } else {
            self.root.matching(levels, found);
        }
    }

    /// Subscriptions, nodes (but the root) and shared groups held.
    fn size(&self) -> usize {
        self.root.size() - 1 + self.turns.len()
    }
}

impl Node {
    fn insert<'a>(&mut self, mut levels: impl Iterator<Item = &'a str>, leaf: Leaf) {
        match levels.next() {
            None => self.exact.push(leaf),
            Some("#") => self.rest.push(leaf),
            Some("+") => self
                .plus
                .get_or_insert_with(Box::default)
                .insert(levels, leaf),
            Some(level) => self
                .literal
                .entry(level.into())
                .or_default()
                .insert(levels, leaf),
        }
    }

    fn remove<'a>(&mut self, mut levels: impl Iterator<Item = &'a str>, leaf: Leaf) {
        match levels.next() {
            None => self.exact.retain(|l| *l != leaf),
            Some("#") => self.rest.retain(|l| *l != leaf),
            Some("+") => {
                if let Some(child) = &mut self.plus {
                    child.remove(levels, leaf);
                    if child.is_empty() {
                        self.plus = None;
                    }
                }
            }
            Some(level) => {
                if let Some(child) = self.literal.get_mut(level) {
                    child.remove(levels, leaf);
                    if child.is_empty() {
                        self.literal.remove(level);
                    }
                }
            }
        }
    }

    fn matching(&self, mut levels: std::str::Split<'_, char>, found: &mut Vec<Leaf>) {
        found.extend_from_slice(&self.rest);
        match levels.next() {
            None => found.extend_from_slice(&self.exact),
            Some(level) => {
                if let Some(child) = self.literal.get(level) {
                    child.matching(levels.clone(), found);
                }
                if let Some(child) = &self.plus {
                    child.matching(levels, found);
                }
            }
        }
    }

    fn is_empty(&self) -> bool {
        self.exact.is_empty()
            && self.rest.is_empty()
            && self.plus.is_none()
            && self.literal.is_empty()
    }

    fn size(&self) -> usize {
        1 + self.exact.len()
            + self.rest.len()
            + self.plus.as_ref().map_or(0, |child| child.size())
            + self.literal.values().map(Node::size).sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(rules: &[(Action, &str)]) -> Arc<Policy> {
        let mut policy = Policy::default();
        for (action, pattern) in rules {
            policy.allow(*action, *pattern);
        }
        Arc::new(policy)
    }

    fn logged(app: &str) -> LoggedEvent {
        LoggedEvent {
            application: app.into(),
            application_uid: None,
            subject: Some("temp".into()),
            sequence: 1,
            json: serde_json::json!({
                "specversion": "1.0",
                "id": "e1",
                "type": "io.drogue.event.v1",
                "source": "drogue://app1/dev1",
                "subject": "temp",
                "datacontenttype": "application/json",
                "application": app,
                "device": "dev1",
                "data": {"t": 21}
            })
            .to_string(),
        }
    }

    fn session(hub: &Hub, client: &str, p: Arc<Policy>) -> (u64, mpsc::Receiver<Push>) {
        let (tx, rx) = mpsc::channel(8);
        (
            hub.register(client, None, None, p, Some(tx), None)
                .unwrap()
                .0
                .id,
            rx,
        )
    }

    #[test]
    fn events_reach_only_subscribers_the_policy_lets_receive() {
        let hub = Hub::default();
        let reader = policy(&[(Action::Receive, "app/app1")]);
        let (a, mut rx_a) = session(&hub, "a", reader.clone());
        let (b, mut rx_b) = session(&hub, "b", policy(&[(Action::Receive, "app/app2")]));
        hub.subscribe(a, "app/app1", true, ContentMode::Structured);
        // a filter that matches, with a policy that does not let it receive
        hub.subscribe(b, "app/+", false, ContentMode::Structured);
        assert_eq!(hub.event(&logged("app1")), 1);
        let push = rx_a.try_recv().unwrap();
        assert!(push.qos1);
        assert_eq!(push.delivery.topic, "app/app1");
        assert_eq!(push.delivery.content_type.as_deref(), Some(STRUCTURED));
        let json: serde_json::Value = serde_json::from_slice(&push.delivery.payload).unwrap();
        assert_eq!(json["data"]["t"], 21);
        assert!(rx_b.try_recv().is_err());
        assert!(hub.unsubscribe(a, "app/app1"));
        assert_eq!(hub.event(&logged("app1")), 0);
    }

    #[test]
    fn a_session_without_a_queue_is_routed_nothing_and_keeps_its_first_queue() {
        let hub = Hub::default();
        let reader = policy(&[(Action::Receive, "app/app1")]);
        let (id, _) = hub.register("a", None, None, reader, None, None).unwrap();
        // no queue: a subscription added anyway is routed nothing, and nothing fails
        hub.subscribe(id.id, "app/app1", false, ContentMode::Structured);
        assert_eq!(hub.event(&logged("app1")), 0);
        let (tx, mut rx) = mpsc::channel(8);
        hub.attach_queue(id.id, tx);
        assert_eq!(hub.event(&logged("app1")), 1);
        assert!(rx.try_recv().is_ok());
        // a second queue does not replace the first
        let (other, mut rx_other) = mpsc::channel(8);
        hub.attach_queue(id.id, other);
        assert_eq!(hub.event(&logged("app1")), 1);
        assert!(rx.try_recv().is_ok());
        assert!(rx_other.try_recv().is_err());
    }

    #[test]
    fn a_recheck_keeps_or_replaces_the_policy() {
        let hub = Hub::default();
        let reader = policy(&[(Action::Receive, "app/app1")]);
        let (a, mut rx) = session(&hub, "a", reader.clone());
        hub.subscribe(a, "app/app1", false, ContentMode::Structured);
        // the same policy again (an equal one, not the same allocation)
        assert!(hub.set_policy(a, policy(&[(Action::Receive, "app/app1")])));
        assert_eq!(hub.event(&logged("app1")), 1);
        assert!(rx.try_recv().is_ok());
        // a policy that no longer lets it receive
        assert!(hub.set_policy(a, policy(&[(Action::Receive, "app/app2")])));
        assert_eq!(hub.event(&logged("app1")), 0);
        hub.remove(a);
        assert!(!hub.set_policy(a, reader));
    }

    #[test]
    fn binary_mode_maps_attributes_to_user_properties() {
        let hub = Hub::default();
        let (a, mut rx) = session(&hub, "a", policy(&[(Action::Receive, "app/*")]));
        hub.subscribe(a, "app/app1", false, ContentMode::Binary);
        hub.event(&logged("app1"));
        let delivery = rx.try_recv().unwrap().delivery;
        assert_eq!(delivery.payload, br#"{"t":21}"#);
        assert_eq!(delivery.content_type.as_deref(), Some("application/json"));
        let props: HashMap<_, _> = delivery.user_properties.iter().cloned().collect();
        assert_eq!(props["specversion"], "1.0");
        assert_eq!(props["id"], "e1");
        assert_eq!(props["type"], "io.drogue.event.v1");
        assert_eq!(props["subject"], "temp");
        assert_eq!(props["device"], "dev1");
        assert!(!props.contains_key("datacontenttype"));
    }

    #[test]
    fn a_shared_group_gets_each_message_once() {
        let hub = Hub::default();
        let p = policy(&[(Action::Receive, "app/app1")]);
        let (a, mut rx_a) = session(&hub, "a", p.clone());
        let (b, mut rx_b) = session(&hub, "b", p.clone());
        let (c, mut rx_c) = session(&hub, "c", p);
        hub.subscribe(a, "$share/g/app/app1", false, ContentMode::Structured);
        hub.subscribe(b, "$share/g/app/app1", false, ContentMode::Structured);
        hub.subscribe(c, "app/app1", false, ContentMode::Structured);
        for _ in 0..4 {
            assert_eq!(hub.event(&logged("app1")), 2);
        }
        let count =
            |rx: &mut mpsc::Receiver<Push>| std::iter::from_fn(|| rx.try_recv().ok()).count();
        assert_eq!(count(&mut rx_a) + count(&mut rx_b), 4);
        assert_eq!(count(&mut rx_c), 4);
        assert!(hub.unsubscribe(a, "$share/g/app/app1"));
    }

    #[test]
    fn a_session_holds_a_bounded_number_of_subscriptions() {
        let hub = Hub::default();
        let p = policy(&[(Action::Receive, "app/app1")]);
        let (a, _rx) = session(&hub, "a", p.clone());
        for i in 0..MAX_SUBSCRIPTIONS {
            let filter = format!("$share/g{i}/app/app1");
            assert!(hub.subscribe(a, &filter, false, ContentMode::Structured));
        }
        assert!(!hub.subscribe(a, "app/app1", false, ContentMode::Structured));
        assert!(
            hub.subscribe(a, "$share/g0/app/app1", true, ContentMode::Binary),
            "replacing one is no new one"
        );
        assert!(hub.unsubscribe(a, "$share/g1/app/app1"));
        assert!(hub.subscribe(a, "app/app1", false, ContentMode::Structured));
        // another session has its own count
        let (b, _rx_b) = session(&hub, "b", p);
        assert!(hub.subscribe(b, "app/app1", false, ContentMode::Structured));
    }

    #[test]
    fn a_full_queue_drops_and_counts_and_the_same_client_id_takes_over() {
        let hub = Hub::default();
        let p = policy(&[(Action::Receive, "app/app1")]);
        let (tx, _rx) = mpsc::channel(1);
        let (first, _) = hub
            .register("a", None, None, p.clone(), Some(tx), None)
            .unwrap();
        hub.subscribe(first.id, "app/app1", false, ContentMode::Structured);
        assert_eq!(hub.event(&logged("app1")), 1);
        assert_eq!(hub.event(&logged("app1")), 0);
        assert_eq!(hub.dropped(), 1);

        let (tx, _rx2) = mpsc::channel(1);
        let (second, _) = hub.register("a", None, None, p, Some(tx), None).unwrap();
        // the first session is told to close; its removal leaves the second in place
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap()
            .block_on(async {
                tokio::time::timeout(std::time::Duration::from_secs(1), first.close.notified())
                    .await
                    .expect("the first session is closed");
            });
        hub.remove(first.id);
        assert_eq!(hub.sessions(), 1);
        hub.remove(second.id);
        assert_eq!(hub.sessions(), 0);
    }

    #[test]
    fn a_session_taken_over_has_no_state_of_its_own_to_save() {
        let hub = Hub::default();
        let p = policy(&[(Action::Receive, "app/app1")]);
        let (tx, _rx) = mpsc::channel(1);
        let (first, _) = hub
            .register("a", None, None, p.clone(), Some(tx), Some(3600))
            .unwrap();
        hub.subscribe(first.id, "app/app1", true, ContentMode::Structured);
        assert_eq!(hub.snapshot(first.id).unwrap().subscriptions.len(), 1);

        let (tx, _rx2) = mpsc::channel(1);
        let (second, inherited) = hub
            .register("a", None, None, p, Some(tx), Some(3600))
            .unwrap();
        assert_eq!(
            inherited.unwrap().subscriptions.len(),
            1,
            "the newer one inherits"
        );
        // the first connection has not ended yet: neither its periodic save nor its
        // last one may overwrite what the newer connection does with the session
        assert_eq!(hub.snapshot(first.id), None);
        assert!(hub.remove(first.id).is_none());
        assert!(hub.snapshot(second.id).is_some());
        assert!(hub.remove(second.id).is_some());
    }

    #[test]
    fn a_session_taken_over_while_it_is_restored_leaves_its_state_to_be_read() {
        let hub = Hub::default();
        let p = policy(&[(Action::Receive, "app/app1"), (Action::Receive, "app/app2")]);
        let restoring = Taking {
            expiry: Some(3600),
            restoring: true,
        };
        let (first, _) = hub
            .register("a", None, None, p.clone(), None, restoring)
            .unwrap();
        // taken over before it read its saved state: nothing is inherited (the next
        // connection reads the saved state), nor saved
        let (second, inherited) = hub
            .register("a", None, None, p.clone(), None, restoring)
            .unwrap();
        assert_eq!(inherited, None);
        assert!(hub.remove(first.id).is_none());
        // taken over with one of its two saved subscriptions restored: the state it
        // read is inherited whole, not the part restored
        let saved = SessionState {
            expiry: 60,
            saved: chrono::Utc::now(),
            subscriptions: ["app/app1", "app/app2"]
                .map(|filter| SavedSubscription {
                    filter: filter.into(),
                    qos1: true,
                    binary: false,
                    cursor: None,
                })
                .to_vec(),
            device: None,
        };
        hub.restoring(second.id, &saved);
        hub.subscribe(second.id, "app/app1", true, ContentMode::Structured);
        let (third, inherited) = hub
            .register("a", None, None, p.clone(), None, restoring)
            .unwrap();
        let inherited = inherited.unwrap();
        assert_eq!(inherited.subscriptions, saved.subscriptions);
        assert_eq!(inherited.expiry, 3600, "with the new connection's expiry");
        assert!(hub.remove(second.id).is_none());
        // a connection that ends while it restores saves the state it read
        hub.restoring(third.id, &saved);
        assert_eq!(hub.remove(third.id).unwrap().1.subscriptions.len(), 2);
        let (second, _) = hub
            .register("a", None, None, p.clone(), None, restoring)
            .unwrap();
        // restored, the session is inherited whole
        hub.subscribe(second.id, "app/app1", true, ContentMode::Structured);
        hub.subscribe(second.id, "app/app2", true, ContentMode::Structured);
        hub.restored(second.id);
        let (_, inherited) = hub
            .register("a", None, None, p.clone(), None, restoring)
            .unwrap();
        assert_eq!(inherited.unwrap().subscriptions.len(), 2);

        // closed by its device's connection limit while it restores: the state it read
        // is kept, with what was acknowledged since
        let limited = Hub::with_limits(ConnectionLimits {
            per_device: 1,
            ..ConnectionLimits::default()
        });
        let cursor = Cursor {
            application: "app1".into(),
            uid: "u-app1".into(),
            position: 10,
        };
        let mut saved = saved;
        saved.subscriptions[0].cursor = Some(cursor);
        let (first, _) = limited
            .register("dev1@app1", None, Some("d1"), p.clone(), None, restoring)
            .unwrap();
        limited.restoring(first.id, &saved);
        limited.subscribe(first.id, "app/app2", true, ContentMode::Structured);
        limited
            .register("alias@app1", None, Some("d1"), p, None, None)
            .unwrap();
        limited.restored(first.id);
        let track = Track {
            application: "app1".into(),
            position: 12,
        };
        limited.acked(first.id, &track);
        let (_, kept) = limited.remove(first.id).unwrap();
        assert_eq!(kept.subscriptions.len(), 2);
        assert_eq!(kept.subscriptions[0].cursor.as_ref().unwrap().position, 12);
    }

    #[test]
    fn commands_carry_content_type_and_request_id() {
        let hub = Hub::default();
        let (a, mut rx) = session(
            &hub,
            "dev1@app1",
            policy(&[(Action::Receive, "cmd/app1/dev1/*")]),
        );
        hub.subscribe(a, "cmd/app1/dev1/#", true, ContentMode::Structured);
        let command = drogue_shared::commands::Command {
            content_type: Some("text/plain".into()),
            ..inbox_command("reboot").command
        };
        let other = drogue_shared::commands::Command {
            device: "dev2".into(),
            ..command.clone()
        };
        for c in [&command, &other] {
            hub.command(&PublishedCommand {
                topic: drogue_shared::commands::topic(c),
                command: c.clone(),
            });
        }
        let delivery = rx.try_recv().unwrap().delivery;
        assert_eq!(delivery.topic, "cmd/app1/dev1/reboot");
        assert_eq!(delivery.payload, b"now");
        assert_eq!(delivery.content_type.as_deref(), Some("text/plain"));
        assert_eq!(delivery.correlation_data.as_deref(), Some(&b"r1"[..]));
        assert!(rx.try_recv().is_err());
    }

    /// The command service publishes to the hub itself: once a drop-off's publish
    /// returns, the command is in its subscribers' queues (no queue in between, shared
    /// with other applications' commands, that could lag and lose it).
    #[tokio::test]
    async fn a_published_command_is_queued_for_its_subscribers_when_publish_returns() {
        let hub = Arc::new(Hub::default());
        let (a, mut rx) = session(
            &hub,
            "dev1@app1",
            policy(&[(Action::Receive, "cmd/app1/dev1/*")]),
        );
        hub.subscribe(a, "cmd/app1/dev1/#", true, ContentMode::Structured);
        let publisher: Arc<dyn CommandPublisher> = hub.clone();
        for name in ["a", "b", "c"] {
            publisher
                .publish(&inbox_command(name).command)
                .await
                .unwrap();
            let delivery = rx.try_recv().expect("queued at once").delivery;
            assert_eq!(delivery.topic, format!("cmd/app1/dev1/{name}"));
        }
    }

    #[test]
    fn a_device_holds_at_most_its_connections_and_the_oldest_goes() {
        let hub = Hub::with_limits(ConnectionLimits {
            per_device: 2,
            ..ConnectionLimits::default()
        });
        let p = policy(&[(Action::Receive, "cmd/app1/dev1/*")]);
        let connect = |client: &str, device: &str| {
            let (tx, _rx) = mpsc::channel(8);
            hub.register(client, None, Some(device), p.clone(), Some(tx), None)
                .unwrap()
                .0
        };
        let first = connect("dev1@app1", "u1");
        let second = connect("alias@app1", "u1");
        let other = connect("dev2@app1", "u2");
        // two live connections of dev1: nothing is closed
        assert_eq!(hub.sessions(), 3);
        let closed = |h: &SessionHandle| {
            let notified = h.close.notified();
            tokio::pin!(notified);
            // a stored permit completes the future at once
            notified
                .as_mut()
                .poll(&mut std::task::Context::from_waker(std::task::Waker::noop()))
                .is_ready()
        };
        assert!(!closed(&first) && !closed(&second) && !closed(&other));
        // a third takes over the oldest, not another device's
        let third = connect("user@app1", "u1");
        assert!(closed(&first), "the oldest connection is closed");
        assert!(!closed(&second) && !closed(&third) && !closed(&other));
        // a connection that ended makes room
        hub.remove(second.id);
        let fourth = connect("dev1@app1", "u1");
        assert!(!closed(&third) && !closed(&fourth));
        // a connection taking over a client id does not count twice
        hub.remove(first.id);
        let fifth = connect("dev1@app1", "u1");
        assert!(closed(&fourth), "the same client id takes over");
        assert!(!closed(&third) && !closed(&fifth));
        // without a limit, any number
        let unlimited = Hub::default();
        let handles: Vec<_> = (0..10)
            .map(|i| {
                let (tx, _rx) = mpsc::channel(8);
                unlimited
                    .register(
                        &format!("c{i}@app1"),
                        None,
                        Some("u1"),
                        p.clone(),
                        Some(tx),
                        None,
                    )
                    .unwrap()
                    .0
            })
            .collect();
        assert!(handles.iter().all(|h| !closed(h)));
    }

    #[test]
    fn an_owner_holds_at_most_its_connections_and_strangers_go_on() {
        let hub = Hub::with_limits(ConnectionLimits {
            per_device: 2,
            per_user: 3,
        });
        let p = policy(&[(Action::Receive, "cmd/app1/dev1/*")]);
        let connect = |client: &str, owner: &str, device: Option<&str>| {
            let (tx, _rx) = mpsc::channel(8);
            hub.register(client, Some(owner), device, p.clone(), Some(tx), None)
                .map(|(handle, _)| handle)
        };
        let alice: Vec<_> = [
            ("d1@a", Some("u1")),
            ("a1@a", Some("u1")),
            ("app@alice", None),
        ]
        .into_iter()
        .map(|(client, device)| connect(client, "alice", device).unwrap())
        .collect();
        // a fourth of alice's is refused, and nothing of hers is touched
        assert_eq!(
            connect("d3@a", "alice", Some("u3")).err(),
            Some(OverQuota { limit: 3 })
        );
        assert_eq!(hub.sessions(), 3);
        assert!(alice.iter().all(|h| hub.is_live(h.id)));
        // whatever client id or device she uses
        assert!(connect("d1@b", "alice", Some("u9")).is_err());
        assert!(connect("bob-looking@x", "alice", None).is_err());
        // a stranger connects as ever, even with the client id alice tried
        let bob = connect("d1@b", "bob", Some("u4")).unwrap();
        assert!(hub.is_live(bob.id));
        // taking over one of her own sessions by its client id adds none: allowed
        let again = connect("a1@a", "alice", Some("u1")).unwrap();
        hub.remove(alice[1].id);
        // a device's connection beyond the device's own limit takes over its oldest
        // (d1@a): allowed too
        let newest = connect("a2@a", "alice", Some("u1")).unwrap();
        hub.remove(alice[0].id);
        assert!(hub.is_live(again.id) && hub.is_live(newest.id) && hub.is_live(alice[2].id));
        assert!(connect("d5@a", "alice", Some("u5")).is_err());
        // a connection that ends makes room
        hub.remove(again.id);
        assert!(connect("d5@a", "alice", Some("u5")).is_ok());
        assert!(connect("d6@a", "alice", Some("u6")).is_err());
        // sessions counted against no owner are not limited
        for i in 0..10 {
            let (tx, _rx) = mpsc::channel(8);
            assert!(
                hub.register(&format!("free{i}"), None, None, p.clone(), Some(tx), None)
                    .is_ok()
            );
        }
    }

    /// A command `name` for app1's dev1 (uid `u1`), request id `r1`.
    fn inbox_command(name: &str) -> PublishedCommand {
        let command = drogue_shared::commands::Command {
            id: "r1".into(),
            application: "app1".into(),
            application_uid: String::new(),
            device: "dev1".into(),
            device_uid: "u1".into(),
            name: name.into(),
            content_type: None,
            payload: b"now".to_vec(),
            created: chrono::Utc::now(),
            expires: chrono::Utc::now(),
        };
        PublishedCommand {
            topic: drogue_shared::commands::topic(&command),
            command,
        }
    }

    fn drain(rx: &mut mpsc::Receiver<Push>) -> Vec<Push> {
        std::iter::from_fn(|| rx.try_recv().ok()).collect()
    }

    /// Routes a message to a topic, as commands are (one delivery for every mode).
    fn route_to(hub: &Hub, topic: &str) -> usize {
        let delivery = Arc::new(Delivery {
            topic: ByteString::from(topic),
            payload: Bytes::from_static(b"x"),
            content_type: None,
            correlation_data: None,
            user_properties: Vec::new(),
        });
        hub.route(topic, ("app1", None), None, |_| delivery.clone(), None)
    }

    #[test]
    fn the_index_matches_wildcards_as_mqtt_does() {
        let hub = Hub::default();
        let everything = policy(&[(Action::Receive, "*")]);
        let filters = [
            "#",
            "app/+",
            "app/#",
            "+/+",
            "+",
            "app/app1",
            "app/app1/#",
            "app/app2",
            "app/+/x",
            "$SYS/#",
            "a/+/c",
            "a//c",
        ];
        let mut receivers = Vec::new();
        for (i, filter) in filters.iter().enumerate() {
            let (id, rx) = session(&hub, &format!("c{i}"), everything.clone());
            assert!(hub.subscribe(id, filter, false, ContentMode::Structured));
            receivers.push(rx);
        }
        // (topic, the filters that match it, by levels_match)
        for topic in [
            "app/app1",
            "app/app2",
            "app",
            "app/app1/x",
            "$SYS/x",
            "a//c",
            "a/b/c",
            "x",
        ] {
            let expected: Vec<&str> = filters
                .iter()
                .copied()
                .filter(|f| drogue_shared::mqtt::filter::levels_match(f, topic))
                .collect();
            assert_eq!(
                route_to(&hub, topic),
                expected.len(),
                "{topic}: {expected:?}"
            );
            for (filter, rx) in filters.iter().zip(&mut receivers) {
                let got = drain(rx);
                assert_eq!(
                    got.len(),
                    usize::from(expected.contains(filter)),
                    "{topic} {filter}"
                );
                if let Some(push) = got.first() {
                    assert_eq!(push.delivery.topic, topic);
                }
            }
        }
        // spot checks of what levels_match decided
        assert_eq!(
            route_to(&hub, "app/app1"),
            6,
            "# app/+ app/# +/+ app/app1 app/app1/# (which takes its parent level)"
        );
        assert_eq!(
            route_to(&hub, "$SYS/x"),
            1,
            "only $SYS/#: no first-level wildcard"
        );
        assert_eq!(
            route_to(&hub, "app"),
            3,
            "# + app/#: # takes the parent level"
        );
    }

    #[test]
    fn overlapping_filters_give_one_copy_at_the_highest_qos() {
        let hub = Hub::default();
        let (a, mut rx) = session(&hub, "a", policy(&[(Action::Receive, "app/app1")]));
        hub.subscribe(a, "app/+", false, ContentMode::Structured);
        hub.subscribe(a, "#", true, ContentMode::Binary);
        hub.subscribe(a, "app/app1", false, ContentMode::Structured);
        assert_eq!(hub.event(&logged("app1")), 1);
        let got = drain(&mut rx);
        assert_eq!(got.len(), 1);
        assert!(got[0].qos1);
        // the mode of the subscription chosen: binary
        assert_eq!(&got[0].delivery.payload[..], br#"{"t":21}"#);
    }

    #[test]
    fn a_tenant_with_hash_gets_only_what_its_policy_lets_it_receive() {
        let hub = Hub::default();
        let (a, mut rx_a) = session(&hub, "a@app1", policy(&[(Action::Receive, "app/app1")]));
        let (b, mut rx_b) = session(&hub, "b@app2", policy(&[(Action::Receive, "app/app2")]));
        for id in [a, b] {
            hub.subscribe(id, "#", true, ContentMode::Structured);
            hub.subscribe(id, "$share/g/#", true, ContentMode::Structured);
            hub.subscribe(id, "app/+", true, ContentMode::Structured);
        }
        // one direct copy and the group's one to app1's session only
        assert_eq!(hub.event(&logged("app1")), 2);
        assert_eq!(drain(&mut rx_a).len(), 2);
        assert!(drain(&mut rx_b).is_empty());
        assert_eq!(hub.event(&logged("app2")), 2);
        assert!(drain(&mut rx_a).is_empty());
        let got = drain(&mut rx_b);
        assert_eq!(got.len(), 2);
        assert!(got.iter().all(|p| p.delivery.topic == "app/app2"));
        assert_eq!(route_to(&hub, "cmd/app1/dev1/reboot"), 0);
        // a session whose access ended receives nothing more
        hub.revoke(a);
        assert_eq!(hub.event(&logged("app1")), 0);
    }

    #[test]
    fn shared_groups_via_the_index_take_turns() {
        let hub = Hub::default();
        let p = policy(&[(Action::Receive, "app/*")]);
        let (a, mut rx_a) = session(&hub, "a", p.clone());
        let (b, mut rx_b) = session(&hub, "b", p.clone());
        let (c, mut rx_c) = session(&hub, "c", policy(&[(Action::Receive, "app/app2")]));
        for id in [a, b, c] {
            hub.subscribe(id, "$share/g/app/+", true, ContentMode::Structured);
        }
        // the same group with another filter is another group
        hub.subscribe(a, "$share/g/#", false, ContentMode::Structured);
        for _ in 0..4 {
            assert_eq!(hub.event(&logged("app1")), 2);
        }
        let (got_a, got_b) = (drain(&mut rx_a), drain(&mut rx_b));
        // `$share/g/#` has one member (a): 4; `$share/g/app/+` two that may receive,
        // in turns: 2 each
        assert_eq!(got_a.iter().filter(|p| !p.qos1).count(), 4);
        assert_eq!(got_a.iter().filter(|p| p.qos1).count(), 2);
        assert_eq!(got_b.len(), 2);
        assert!(
            !got_b.is_empty() && got_a.iter().any(|p| p.qos1),
            "turns are taken"
        );
        assert!(
            drain(&mut rx_c).is_empty(),
            "c may not receive app1's events"
        );
        // the last member of a group gets every message
        hub.remove(a);
        hub.unsubscribe(b, "$share/g/app/+");
        assert_eq!(hub.event(&logged("app2")), 1);
        assert_eq!(drain(&mut rx_c).len(), 1);
        assert_eq!(hub.event(&logged("app1")), 0);
        assert!(drain(&mut rx_b).is_empty());
        hub.remove(b);
        hub.remove(c);
        assert_eq!(hub.indexed(), 0, "no group is left behind");
    }

    #[test]
    fn unsubscribing_removing_and_taking_over_leave_nothing_in_the_index() {
        let hub = Hub::with_limits(ConnectionLimits {
            per_device: 1,
            ..ConnectionLimits::default()
        });
        let p = policy(&[
            (Action::Receive, "app/app1"),
            (Action::Receive, "cmd/app1/dev1/*"),
        ]);
        assert_eq!(hub.indexed(), 0);
        let subscribe_all = |id: u64| {
            for filter in [
                "app/app1",
                "app/+",
                "#",
                "$share/g/app/app1",
                "command/inbox/#",
                "cmd/app1/dev1/#",
            ] {
                assert!(hub.subscribe(id, filter, true, ContentMode::Structured));
            }
        };
        // unsubscribed, one by one
        let (a, mut rx_a) = session(&hub, "a", p.clone());
        subscribe_all(a);
        assert!(hub.indexed() > 0);
        // replacing a subscription does not add another
        let size = hub.indexed();
        assert!(hub.subscribe(a, "app/+", false, ContentMode::Binary));
        assert_eq!(hub.indexed(), size);
        for filter in [
            "app/app1",
            "app/+",
            "#",
            "$share/g/app/app1",
            "command/inbox/#",
        ] {
            assert!(hub.unsubscribe(a, filter));
        }
        assert!(!hub.unsubscribe(a, "app/+"), "gone already");
        assert!(hub.unsubscribe(a, "cmd/app1/dev1/#"));
        assert_eq!(hub.indexed(), 0);
        assert_eq!(hub.event(&logged("app1")), 0);
        assert!(drain(&mut rx_a).is_empty());
        // removed
        subscribe_all(a);
        hub.remove(a);
        assert_eq!(hub.indexed(), 0);
        assert_eq!(hub.event(&logged("app1")), 0);
        assert!(
            drain(&mut rx_a).is_empty(),
            "a removed session gets nothing"
        );
        // taken over by its client id: the new session's subscriptions only
        let (old, mut rx_old) = session(&hub, "b", p.clone());
        subscribe_all(old);
        let (new, mut rx_new) = session(&hub, "b", p.clone());
        assert_eq!(hub.indexed(), 0);
        hub.subscribe(new, "app/app1", false, ContentMode::Structured);
        assert_eq!(hub.event(&logged("app1")), 1);
        assert!(drain(&mut rx_old).is_empty());
        assert_eq!(drain(&mut rx_new).len(), 1);
        hub.remove(old);
        hub.remove(new);
        assert_eq!(hub.indexed(), 0);
        // taken over as the device's oldest connection
        let (tx, mut rx_first) = mpsc::channel(8);
        let first = hub
            .register("dev1@app1", None, Some("u1"), p.clone(), Some(tx), None)
            .unwrap()
            .0;
        subscribe_all(first.id);
        let (tx, mut rx_second) = mpsc::channel(8);
        let second = hub
            .register("alias@app1", None, Some("u1"), p.clone(), Some(tx), None)
            .unwrap()
            .0;
        assert_eq!(hub.indexed(), 0);
        hub.subscribe(second.id, "command/inbox/#", true, ContentMode::Structured);
        let published = inbox_command("reboot");
        assert_eq!(hub.command(&published), 1);
        assert!(drain(&mut rx_first).is_empty());
        let got = drain(&mut rx_second);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].delivery.topic, "command/inbox//reboot");
        assert_eq!(
            got[0].delivery.correlation_data.as_deref(),
            Some(&b"r1"[..])
        );
        assert!(hub.unsubscribe(second.id, "command/inbox/#"));
        assert_eq!(hub.indexed(), 0);
        assert_eq!(hub.command(&published), 0);
        hub.remove(first.id);
        hub.remove(second.id);
        assert_eq!((hub.sessions(), hub.indexed()), (0, 0));
    }

    #[test]
    fn a_command_looks_at_its_own_applications_inbox_sessions_only() {
        let hub = Hub::default();
        // eve's many devices in her application, each subscribed to its inbox (with a
        // policy that would even let them receive app1's: not looked at all the same)
        let wide = policy(&[(Action::Receive, "cmd/*")]);
        let mut eves: Vec<_> = (0..100)
            .map(|i| session(&hub, &format!("d{i}@eve-app"), wide.clone()))
            .collect();
        for (id, _) in &eves {
            hub.subscribe(*id, "command/inbox/#", true, ContentMode::Structured);
        }
        let (own, mut rx) = session(
            &hub,
            "dev1@app1",
            policy(&[(Action::Receive, "cmd/app1/dev1/*")]),
        );
        hub.subscribe(own, "command/inbox/#", true, ContentMode::Structured);
        assert_eq!(hub.sessions.read().unwrap().inbox.of("app1").count(), 1);
        assert_eq!(hub.command(&inbox_command("open")), 1);
        assert_eq!(drain(&mut rx).len(), 1);
        assert!(eves.iter_mut().all(|(_, rx)| drain(rx).is_empty()));
        // and the lists go with their sessions
        for (id, _) in &eves {
            hub.remove(*id);
        }
        hub.remove(own);
        assert_eq!(hub.indexed(), 0);
    }

    /// A session whose policy was decided for app1 with uid `old` receives nothing of a
    /// later app1 (deleted and made anew, perhaps by a stranger): neither its events
    /// nor its commands, on `cmd/` or in the inbox, until a recheck decides again.
    #[test]
    fn what_belongs_to_an_application_made_anew_reaches_no_session_decided_for_the_old_one() {
        let hub = Hub::default();
        let decided = |rules: &[(Action, &str)], uid: &str| {
            let mut p = (*policy(rules)).clone();
            p.decided_for("app1", uid);
            Arc::new(p)
        };
        let reader = [(Action::Receive, "app/app1")];
        let device = [(Action::Receive, "cmd/app1/dev1/*")];
        let (old_reader, mut old_events) = session(&hub, "alice/c", decided(&reader, "old"));
        let (new_reader, mut new_events) = session(&hub, "eve/c", decided(&reader, "new"));
        let (old_device, mut old_commands) = session(&hub, "dev1@app1", decided(&device, "old"));
        hub.subscribe(old_reader, "app/app1", true, ContentMode::Structured);
        hub.subscribe(new_reader, "app/app1", false, ContentMode::Binary);
        hub.subscribe(old_device, "cmd/app1/dev1/#", true, ContentMode::Structured);
        hub.subscribe(old_device, "command/inbox/#", true, ContentMode::Structured);

        let event = |uid: &str| LoggedEvent {
            application_uid: Some(uid.into()),
            ..logged("app1")
        };
        assert_eq!(hub.event(&event("new")), 1);
        assert_eq!(drain(&mut new_events).len(), 1);
        assert!(drain(&mut old_events).is_empty());
        assert_eq!(hub.event(&event("old")), 1);
        assert_eq!(drain(&mut old_events).len(), 1);
        assert!(drain(&mut new_events).is_empty());

        let command = |uid: &str| {
            let mut published = inbox_command("open");
            published.command.application_uid = uid.into();
            published
        };
        assert_eq!(hub.command(&command("new")), 0);
        assert!(drain(&mut old_commands).is_empty());
        // its own application's command, and one whose application is not known (as
        // IoT Core's rule drops them off), by the names alone
        assert_eq!(hub.command(&command("old")), 2);
        assert_eq!(hub.command(&command("")), 2);
        assert_eq!(drain(&mut old_commands).len(), 4);
        // an administrator's policy is decided for every application
        let (admin, mut all) = session(&hub, "admin/c", policy(&reader));
        hub.subscribe(admin, "app/app1", true, ContentMode::Structured);
        assert_eq!(hub.event(&event("new")), 2);
        assert_eq!(drain(&mut all).len(), 1);
    }

    /// A device deleted and made again with its name is another device: the commands of
    /// the new one reach neither `cmd/` nor the inbox of a connection decided for the old
    /// one, while its gateway (decided for a device of another name) still gets them.
    #[test]
    fn a_devices_commands_reach_no_connection_of_an_earlier_device_of_its_name() {
        let hub = Hub::default();
        let device = |rules: &[(Action, &str)], name: &str, uid: &str| {
            let mut p = (*policy(rules)).clone();
            p.decided_for("app1", "a1");
            p.decided_for_device("app1", name, uid);
            Arc::new(p)
        };
        let own = [(Action::Receive, "cmd/app1/dev1/*")];
        let (old, mut old_commands) = session(&hub, "dev1@app1", device(&own, "dev1", "u0"));
        let (gateway, mut gateway_commands) = session(&hub, "gw@app1", device(&own, "gw", "g1"));
        for id in [old, gateway] {
            hub.subscribe(id, "cmd/app1/dev1/#", true, ContentMode::Structured);
            hub.subscribe(id, "command/inbox/#", true, ContentMode::Structured);
        }
        let command = |device_uid: &str| {
            let mut published = inbox_command("open");
            published.command.application_uid = "a1".into();
            published.command.device_uid = device_uid.into();
            published
        };
        // the device made again (u1): its gateway only, on `cmd/` and in the inbox
        assert_eq!(hub.command(&command("u1")), 2);
        assert!(drain(&mut old_commands).is_empty());
        assert_eq!(drain(&mut gateway_commands).len(), 2);
        // the device the connection was decided for, and a command without a device uid
        assert_eq!(hub.command(&command("u0")), 4);
        assert_eq!(hub.command(&command("")), 4);
        assert_eq!(drain(&mut old_commands).len(), 4);
        assert_eq!(drain(&mut gateway_commands).len(), 4);
    }

    /// Binary mode: the data as the payload, the attributes as user properties, a
    /// `dataschema` that is no URI (as `?data_schema=` may be) included.
    #[test]
    fn binary_deliveries_carry_the_data_and_every_attribute() {
        let json = r#"{"specversion":"1.0","id":"e1","type":"io.drogue.event.v1","source":"drogue://app1/dev1","datacontenttype":"application/json","subject":"s","data":{"temp":1},"dataschema":"v1 schema","application":"app1"}"#;
        let delivery = delivery_for(ContentMode::Binary, "app/app1", json);
        assert_eq!(&delivery.payload[..], br#"{"temp":1}"#);
        assert_eq!(delivery.content_type.as_deref(), Some("application/json"));
        let property = |name: &str| {
            delivery
                .user_properties
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.to_string())
        };
        assert_eq!(property("dataschema").as_deref(), Some("v1 schema"));
        assert_eq!(property("id").as_deref(), Some("e1"));
        assert_eq!(property("subject").as_deref(), Some("s"));
        assert_eq!(property("application").as_deref(), Some("app1"));
        assert_eq!(property("datacontenttype"), None);
    }

    /// A QoS 1 subscriber of `app/app1` whose queue (2 messages here) is full goes on
    /// from the log, from the first event that did not fit, in order, without gaps or
    /// duplicates, and is routed live again once it has caught up; a QoS 0 one drops
    /// what does not fit.
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_subscriber_that_falls_behind_goes_on_from_the_log_then_live_again() {
        use cloudevents::{EventBuilder, EventBuilderV10};
        use drogue_shared::events::EventSink;
        let dir = tempfile::tempdir().unwrap();
        let log = drogue_shared::events::log::EventLog::open(dir.path().join("events.redb"), 100)
            .unwrap();
        let (feeder_log, main) = (log.clone(), tokio::runtime::Handle::current());
        let hub = Hub::default().with_feeder(Box::new(move |cursor, mode, queue, handoff| {
            use super::super::sessions::{Fed, start_feed};
            start_feed(
                &feeder_log,
                &main,
                cursor,
                mode,
                queue,
                Fed::Behind(handoff),
            )
        }));
        let p = policy(&[(Action::Receive, "app/app1")]);
        let (tx, mut slow) = mpsc::channel(2);
        let (a, _) = hub
            .register("a", None, None, p.clone(), Some(tx), None)
            .unwrap();
        assert!(hub.subscribe(a.id, "app/app1", true, ContentMode::Structured));
        let (tx, mut lossy) = mpsc::channel(2);
        let (b, _) = hub.register("b", None, None, p, Some(tx), None).unwrap();
        assert!(hub.subscribe(b.id, "app/app1", false, ContentMode::Structured));
        // (the broker routes what the log hands out live)
        let mut live = log.subscribe();
        macro_rules! publish_and_route {
            ($n:expr) => {{
                let event = EventBuilderV10::new()
                    .id(format!("e{}", $n))
                    .ty("io.drogue.event.v1")
                    .source("drogue://app1/dev1")
                    .extension("application", "app1")
                    .extension("applicationuid", "u1")
                    .build()
                    .unwrap();
                log.publish(&event).await.unwrap();
                hub.event(&live.recv().await.unwrap())
            }};
        }
        for n in 1..=10 {
            // both queues take 2; from the third on the QoS 0 subscriber drops, and the
            // other one goes on from the log (its feed delivers what routing leaves it)
            let reached = match n {
                1 | 2 => 2,
                _ => 1,
            };
            assert_eq!(publish_and_route!(n), reached, "event {n}");
        }
        assert_eq!(hub.fell_behind(), 1);
        assert_eq!(hub.dropped(), 8, "the QoS 0 subscriber kept 2 of 10");
        assert!(hub.indexed() > 0, "the QoS 0 subscription is still routed");
        let id = |push: Push| {
            serde_json::from_slice::<serde_json::Value>(&push.delivery.payload).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned()
        };
        let mut got = Vec::new();
        let next = async |slow: &mut mpsc::Receiver<Push>| {
            let push = tokio::time::timeout(std::time::Duration::from_secs(5), slow.recv())
                .await
                .expect("the feed goes on")
                .unwrap();
            assert!(push.qos1 && push.track.is_none());
            id(push)
        };
        while got.len() < 10 {
            got.push(next(&mut slow).await);
        }
        let wanted = |to: u32| (1..=to).map(|n| format!("e{n}")).collect::<Vec<_>>();
        assert_eq!(got, wanted(10));
        assert_eq!(drain(&mut lossy).len(), 2);
        // what the feed delivered is not routed again: nothing comes twice
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(slow.try_recv().is_err());
        assert_eq!(hub.caught_up(), 0);

        // the feed reached the log's end with room in the queue: at a next event routing
        // takes the subscription back (the feed, woken by the same event, may win the
        // race for a few first), and the feed stops; nothing is missed or comes twice
        let mut n = 10;
        while hub.caught_up() == 0 && n < 1000 {
            n += 1;
            publish_and_route!(n);
            got.push(next(&mut slow).await);
            drain(&mut lossy);
        }
        assert_eq!(hub.caught_up(), 1, "routed live again after {n} events");
        for _ in 0..3 {
            n += 1;
            assert_eq!(publish_and_route!(n), 2, "both routed live");
            got.push(next(&mut slow).await);
            drain(&mut lossy);
        }
        // and it can fall behind again: its queue takes 2, the rest comes from the log
        for _ in 0..6 {
            n += 1;
            publish_and_route!(n);
        }
        assert_eq!(hub.fell_behind(), 2);
        while got.len() < n as usize {
            got.push(next(&mut slow).await);
        }
        assert_eq!(got, wanted(n));
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(slow.try_recv().is_err(), "nothing twice");
        hub.remove(a.id);
        hub.remove(b.id);
        assert_eq!(hub.indexed(), 0);
    }

    #[test]
    fn resuming_subscriptions_are_fed_not_routed() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let hub = Hub::default();
        let (a, mut rx) = session(&hub, "a", policy(&[(Action::Receive, "app/app1")]));
        let cursor = Cursor {
            application: "app1".into(),
            uid: "u1".into(),
            position: 0,
        };
        let _guard = runtime.enter();
        let resumed = hub.subscribe_resuming(
            a,
            "app/app1",
            true,
            ContentMode::Structured,
            Some(cursor),
            |_| tokio::spawn(std::future::pending::<()>()).abort_handle(),
        );
        assert!(resumed);
        assert_eq!(hub.indexed(), 0, "a feed delivers it");
        assert_eq!(hub.event(&logged("app1")), 0);
        assert!(drain(&mut rx).is_empty());
        // a live subscription next to it is routed
        hub.subscribe(a, "app/+", false, ContentMode::Structured);
        assert_eq!(hub.event(&logged("app1")), 1);
        // subscribing to it without a cursor makes it live
        hub.subscribe(a, "app/app1", true, ContentMode::Structured);
        assert_eq!(hub.event(&logged("app1")), 1);
        let got = drain(&mut rx);
        assert_eq!(got.len(), 2);
        assert!(got[1].qos1, "one copy, at the highest QoS");
        hub.remove(a);
        assert_eq!(hub.indexed(), 0);
    }

    /// A feed from the log follows one application (by `uid`), which routing does not
    /// check event by event: it starts only for the application the session's policy
    /// was decided for, and a recheck deciding for another one (made anew under the
    /// name, which the client may read) routes the subscription live again.
    #[test]
    fn a_resuming_subscription_follows_only_the_application_its_policy_is_for() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let _guard = runtime.enter();
        let hub = Hub::default();
        let decided = |uid: &str| {
            let mut p = (*policy(&[(Action::Receive, "app/app1")])).clone();
            p.decided_for("app1", uid);
            Arc::new(p)
        };
        let (a, mut rx) = session(&hub, "alice/c", decided("old"));
        let cursor = |uid: &str| Cursor {
            application: "app1".into(),
            uid: uid.into(),
            position: 0,
        };
        let feeds = Arc::new(AtomicUsize::new(0));
        let subscribe = |uid: &str| {
            let feeds = feeds.clone();
            hub.subscribe_resuming(
                a,
                "app/app1",
                true,
                ContentMode::Structured,
                Some(cursor(uid)),
                move |_| {
                    feeds.fetch_add(1, Ordering::Relaxed);
                    tokio::spawn(std::future::pending::<()>()).abort_handle()
                },
            )
        };
        // a cursor of app1 made anew: no feed, routed live (and that app1's events do
        // not reach it)
        assert!(subscribe("new"));
        assert_eq!(feeds.load(Ordering::Relaxed), 0);
        assert_ne!(hub.indexed(), 0, "routed live");
        let event = |uid: &str| LoggedEvent {
            application_uid: Some(uid.into()),
            ..logged("app1")
        };
        assert_eq!(hub.event(&event("new")), 0);
        // its own application's: fed
        assert!(subscribe("old"));
        assert_eq!(feeds.load(Ordering::Relaxed), 1);
        assert_eq!(hub.indexed(), 0);
        // decided again for the new app1 (the client may read it now): routed live
        assert!(hub.set_policy(a, decided("new")));
        assert_ne!(hub.indexed(), 0, "routed live");
        assert_eq!(hub.snapshot(a), None, "a clean session");
        assert_eq!(hub.event(&event("new")), 1);
        assert_eq!(hub.event(&event("old")), 0);
        assert_eq!(drain(&mut rx).len(), 1);
    }
}
