//! The WebSocket integration: applications follow their devices' events live, as with
//! Drogue Cloud's `websocket-integration` (which `drg stream` uses).
//!
//! `GET /stream/{app}` (or `/stream/{app}/{channel}` for one channel) upgrades to a
//! WebSocket that receives one text frame per event, the structured JSON CloudEvent.
//! Callers authenticate as on the management API (Basic access token, bearer token,
//! `?token=`, `?username=&api_key=`) and need read access to the application. The
//! server pings every half of the client timeout (5 seconds), every second while events
//! flow, and after the event that brings those sent since the last ping to
//! [`PING_BYTES`]; a client silent for the timeout (10 seconds), or whose socket takes
//! no send for that long, is closed. Frames from the client other than pongs are
//! ignored.
//!
//! `?group_id=NAME` (as Drogue Cloud's integration takes it) makes the stream resume:
//! the group's position in the application's events is kept in the event log, so a
//! stream that reconnects with the same group gets, in order, everything published
//! since the group's last stream ended (within the log's retention), then live events.
//! A new group starts at the newest event. A group has one stream at a time: a new one
//! takes over and the older is closed (code 4000). A group's position is what its
//! client acknowledged with pongs (see [`Delivery`]), saved every second and when a
//! stream ends, so after a crash or a lost connection a group may see a second or two
//! of events again (at least once). The position belongs to the application's `uid`: a
//! later application of the same name starts afresh.
//!
//! Access is checked again every [`RECHECK_INTERVAL`]: when the caller's credentials no
//! longer hold (a deleted token), it may no longer read the application (a removed
//! member), or the application is gone (or another one has its name), the stream is
//! closed with code 1008 (policy violation).

use axum::Router;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade, close_code};
use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use drogue_shared::access::Permission;
use drogue_shared::access::oidc::OidcVerifier;
use drogue_shared::events::log::{EventLog, Follower};
use drogue_shared::http::{ApiError, authenticate_user};
use drogue_shared::model::AppName;
use drogue_shared::registry::Registry;
use futures_util::FutureExt;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

/// The path the integration serves under.
pub const PATH: &str = "/stream/";
/// How often an open stream's access is checked again (the device lookup cache's period).
pub const RECHECK_INTERVAL: Duration = Duration::from_secs(5);
/// How long a closed stream waits for the client's Close.
const CLOSING_HANDSHAKE: Duration = Duration::from_secs(2);
/// Largest frame and message a client may send (clients send nothing but control frames).
const MAX_CLIENT_MESSAGE: usize = 64 * 1024;
/// Longest group id.
const MAX_GROUP_ID: usize = 128;
/// Events read from the log at once.
const BATCH: usize = 256;
/// The default of `--stream-client-timeout`: as Drogue Cloud's integration, which pings
/// every 5 seconds and closes a client silent for 10.
pub const DEFAULT_CLIENT_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a group's position is saved while its stream is open.
const SAVE_INTERVAL: Duration = Duration::from_secs(1);
/// While events flow, a ping also goes after the event that brings those sent since the
/// last ping to this many bytes: a client that reads on answers a ping after reading
/// about this much (or one larger event), however much the sockets' buffers hold
/// between it and the server.
const PING_BYTES: usize = 256 << 10;
/// The close code of a stream whose group another stream took over.
const TAKEN_OVER: u16 = 4000;

#[derive(Clone)]
pub struct StreamState {
    pub registry: Registry,
    pub oidc: Option<Arc<OidcVerifier>>,
    pub log: EventLog,
    pub groups: Groups,
    pub open: OpenStreams,
    pub positions: Positions,
    /// How long a client may leave a ping unanswered or a send waiting before its
    /// stream is closed (`--stream-client-timeout`).
    pub client_timeout: Duration,
    /// How often an open stream saves its group's position even when unchanged, so that
    /// its group is not taken for unused (a quarter of `--stream-group-expiry`, at most
    /// an hour).
    pub group_refresh: Duration,
}

/// The consumer groups (`group_id`) whose positions the log keeps for one application;
/// a stream of a further new group is refused (429). A deleted application's groups
/// are swept (see `housekeeping`).
pub const MAX_GROUPS_PER_APPLICATION: usize = 1000;

/// Where the groups' positions are kept in the log's state: `ws/{application uid}/{group}`.
pub const GROUP_KEYS: &str = "ws/";

/// The key of a group's position (see [`GROUP_KEYS`]).
fn group_key(uid: &str, group: &str) -> String {
    format!("{GROUP_KEYS}{uid}/{group}")
}

/// The default of `--stream-group-expiry`: a group none of whose streams was open for a
/// week is removed (as Kafka keeps a consumer group's offsets 7 days after it empties).
pub const DEFAULT_GROUP_EXPIRY: Duration = Duration::from_secs(7 * 24 * 3600);

/// A group's saved state: its position, and when a stream of it last saved (seconds
/// since the Unix epoch).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupState {
    pub position: u64,
    /// `None` for a state saved before the time was kept.
    pub saved_at: Option<u64>,
}

impl GroupState {
    /// A position saved now.
    pub fn now(position: u64) -> Self {
        Self {
            position,
            saved_at: Some(unix_now()),
        }
    }

    /// The stored text: `{position} {saved_at}` (a position alone before the time was kept).
    pub fn to_text(self) -> String {
        match self.saved_at {
            Some(at) => format!("{} {at}", self.position),
            None => self.position.to_string(),
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        let (position, saved_at) = match text.split_once(' ') {
            Some((position, at)) => (position, Some(at.parse().ok()?)),
            None => (text, None),
        };
        Some(Self {
            position: position.parse().ok()?,
            saved_at,
        })
    }
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The default of `--max-streams-per-user`.
pub const DEFAULT_STREAMS_PER_USER: usize = 1000;

/// The open streams of each user, at most `limit` (0 for no limit): one user's streams
/// (each a task and a follower of the log) cannot take the memory other users need.
#[derive(Clone, Default)]
pub struct OpenStreams {
    limit: usize,
    open: Arc<Mutex<HashMap<String, usize>>>,
}

impl OpenStreams {
    pub fn with_limit(limit: usize) -> Self {
        Self {
            limit,
            ..Self::default()
        }
    }

    /// Counts a stream of `user`, for as long as the returned count lives; `None` when
    /// the user holds `limit` open streams already.
    fn open(&self, user: &str) -> Option<StreamCount> {
        let mut open = self.open.lock().expect("not poisoned");
        let count = open.entry(user.to_owned()).or_default();
        if self.limit > 0 && *count >= self.limit {
            return None;
        }
        *count += 1;
        Some(StreamCount {
            streams: self.clone(),
            user: user.to_owned(),
        })
    }
}

/// One open stream of a user (see [`OpenStreams`]).
struct StreamCount {
    streams: OpenStreams,
    user: String,
}

impl Drop for StreamCount {
    fn drop(&mut self) {
        let mut open = self.streams.open.lock().expect("not poisoned");
        if let Some(count) = open.get_mut(&self.user) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.user);
            }
        }
    }
}

/// The groups with an open stream: a new stream of a group closes the older one and
/// starts where it ended.
#[derive(Clone, Default)]
pub struct Groups {
    next: Arc<AtomicU64>,
    open: Arc<Mutex<HashMap<String, Member>>>,
    /// Held while a new group is counted and saved (the count of an application's
    /// groups and the new one's position, as one step).
    creating: Arc<Mutex<()>>,
}

/// The open stream of a group.
struct Member {
    id: u64,
    /// Tells it to close.
    taken_over: Arc<Notify>,
    /// Told when it has saved its position and left.
    left: Arc<Notify>,
}

/// How long a new stream of a group waits for the older one to save its position.
const TAKEOVER_WAIT: Duration = Duration::from_secs(3);

impl Groups {
    /// Whether a group has an open stream.
    pub fn is_open(&self, key: &str) -> bool {
        self.open.lock().expect("not poisoned").contains_key(key)
    }

    /// Registers a stream of a group; an older stream, if any, is closed and waited for.
    async fn join(&self, key: &str) -> Group {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (taken_over, left) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
        let older = self.open.lock().expect("not poisoned").insert(
            key.to_owned(),
            Member {
                id,
                taken_over: taken_over.clone(),
                left: left.clone(),
            },
        );
        if let Some(older) = older {
            older.taken_over.notify_one();
            if tokio::time::timeout(TAKEOVER_WAIT, older.left.notified())
                .await
                .is_err()
            {
                tracing::warn!("the older stream of a group did not end in time");
            }
        }
        Group {
            groups: self.clone(),
            key: key.to_owned(),
            id,
            taken_over,
            left,
        }
    }
}

/// A stream leaves its group when it is dropped (after saving its position).
impl Drop for Group {
    fn drop(&mut self) {
        let mut open = self.groups.open.lock().expect("not poisoned");
        if open.get(&self.key).is_some_and(|m| m.id == self.id) {
            open.remove(&self.key);
        }
        self.left.notify_one();
    }
}

/// A stream's group: where its position is saved.
struct Group {
    groups: Groups,
    key: String,
    id: u64,
    taken_over: Arc<Notify>,
    left: Arc<Notify>,
}

pub fn router(state: StreamState) -> Router {
    Router::new()
        .route("/stream/{app}", get(stream))
        .route("/stream/{app}/{channel}", get(stream))
        .with_state(state)
}

async fn stream(
    State(state): State<StreamState>,
    Path(params): Path<HashMap<String, String>>,
    mut parts: Parts,
) -> Result<Response, ApiError> {
    let principal =
        authenticate_user(&parts, state.registry.tokens(), state.oidc.as_deref()).await?;
    let raw = params.get("app").map(String::as_str).unwrap_or_default();
    let app = AppName::parse(raw)
        .map_err(|_| ApiError::NotFound(format!("the application '{raw}' does not exist")))?;
    let uid = state
        .registry
        .application_for(&principal, &app, Permission::Read)
        .await?
        .app
        .metadata
        .uid;
    let quota = || {
        ApiError::QuotaExceeded(format!(
            "a user may hold at most {} open streams",
            state.open.limit
        ))
    };
    let count = state.open.open(&principal.user);
    let group_id = query_value(&parts, "group_id");
    // at the quota, a stream taking over a group's open stream (its own, after a lost
    // connection) goes on once the older one has left, whose count it takes
    let taking_over = group_id
        .as_ref()
        .is_some_and(|g| state.groups.is_open(&group_key(&uid, g)));
    if count.is_none() && !taking_over {
        return Err(quota());
    }
    let upgrade = WebSocketUpgrade::from_request_parts(&mut parts, &())
        .await
        .map_err(|e| ApiError::InvalidRequest(format!("not a WebSocket request: {e}")))?
        .max_frame_size(MAX_CLIENT_MESSAGE)
        .max_message_size(MAX_CLIENT_MESSAGE);
    let channel = params.get("channel").cloned();
    if let Some(group) = &group_id
        && (group.is_empty() || group.len() > MAX_GROUP_ID || group.chars().any(char::is_control))
    {
        return Err(ApiError::InvalidRequest(format!(
            "group_id must be 1 to {MAX_GROUP_ID} bytes without control characters"
        )));
    }
    let (follower, group) = follow(&state, &app, &uid, group_id.as_deref()).await?;
    let count = match count {
        Some(count) => count,
        None => state.open.open(&principal.user).ok_or_else(quota)?,
    };
    tracing::info!(application = %app, user = %principal.user, ?channel, group = ?group_id, "stream opened");
    let access = Access {
        state,
        credentials: credentials_of(&parts),
        app: app.clone(),
        uid,
    };
    Ok(upgrade
        .on_upgrade(move |socket| forward(socket, follower, (group, count), access, channel))
        .into_response())
}

/// A query parameter of the request, decoded.
fn query_value(parts: &Parts, name: &str) -> Option<String> {
    form_urlencoded::parse(parts.uri.query().unwrap_or_default().as_bytes())
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.into_owned())
}

/// Where a stream starts: a group's saved position (a new group's is the newest event,
/// saved at once), or the newest event.
async fn follow(
    state: &StreamState,
    app: &AppName,
    uid: &str,
    group_id: Option<&str>,
) -> Result<(Follower, Option<Group>), ApiError> {
    let log = state.log.clone();
    let (name, uid_owned) = (app.to_string(), uid.to_owned());
    let group = match group_id {
        Some(g) => Some(state.groups.join(&group_key(uid, g)).await),
        None => None,
    };
    let saved_key = group.as_ref().map(|g| g.key.clone());
    let groups_of_app = group_key(uid, "");
    let creating = state.groups.creating.clone();
    let start = tokio::task::spawn_blocking(
        move || -> Result<Option<u64>, drogue_shared::events::SinkError> {
            let saved = match &saved_key {
                Some(key) => log
                    .state(key)?
                    .and_then(|v| GroupState::parse(&v))
                    .map(|state| state.position),
                None => None,
            };
            match saved {
                Some(position) => Ok(Some(position)),
                None => {
                    let newest = log.last_sequence(&name)?;
                    if let Some(key) = &saved_key {
                        // a new group: within the application's quota
                        let _one = creating.lock().expect("not poisoned");
                        if log.states(&groups_of_app)?.len() >= MAX_GROUPS_PER_APPLICATION {
                            return Ok(None);
                        }
                        log.set_state(key, Some(&GroupState::now(newest).to_text()))?;
                    }
                    Ok(Some(newest))
                }
            }
        },
    )
    .await
    .map_err(|e| ApiError::Unavailable(Box::new(e)))?
    .map_err(|e| ApiError::Unavailable(Box::new(e)))?
    .ok_or_else(|| {
        ApiError::QuotaExceeded(format!(
            "an application holds at most {MAX_GROUPS_PER_APPLICATION} stream groups"
        ))
    })?;
    let follower = state.log.follow(app.as_str(), Some(&uid_owned), start);
    Ok((follower, group))
}

/// What the stream was opened with, to check its access again.
struct Access {
    state: StreamState,
    /// The request's URI and headers: the caller's credentials.
    credentials: Parts,
    app: AppName,
    /// The application's `uid` when the stream was opened.
    uid: String,
}

fn credentials_of(parts: &Parts) -> Parts {
    let mut request = axum::http::Request::new(());
    *request.uri_mut() = parts.uri.clone();
    *request.headers_mut() = parts.headers.clone();
    request.into_parts().0
}

impl Access {
    /// Whether the caller may still read the very application it opened the stream for;
    /// `None` when that cannot be told now (a backend is unavailable).
    async fn still_allowed(&self) -> Option<bool> {
        let registry = &self.state.registry;
        let principal = match authenticate_user(
            &self.credentials,
            registry.tokens(),
            self.state.oidc.as_deref(),
        )
        .await
        {
            Ok(principal) => principal,
            Err(ApiError::Unavailable(_)) => return None,
            Err(_) => return Some(false),
        };
        match registry
            .application_for(&principal, &self.app, Permission::Read)
            .await
        {
            Ok(stored) => Some(stored.app.metadata.uid == self.uid),
            Err(drogue_shared::registry::RegistryError::Unavailable(_)) => None,
            Err(_) => Some(false),
        }
    }
}

/// How far a stream's client has got: the events sent, and the events it has shown it
/// read. A ping carries the sequence number of the last event sent before it; the
/// client's pong echoes it (RFC 6455 5.5.3) once it has read everything sent before the
/// ping, so a group's saved position is one the client reached, not one lost in a
/// connection that broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Delivery {
    /// The last event handed to the socket (or skipped: another channel's).
    sent: u64,
    /// The position the last ping carried.
    pinged: u64,
    /// The last position a pong acknowledged.
    acked: u64,
}

impl Delivery {
    fn starting_at(position: u64) -> Self {
        Self {
            sent: position,
            pinged: position,
            acked: position,
        }
    }

    /// A ping's payload: the position sent so far.
    fn ping(&mut self) -> Vec<u8> {
        self.pinged = self.sent;
        self.sent.to_string().into_bytes()
    }

    /// A pong from the client: it acknowledges the position its payload names, when that
    /// is one sent (an unsolicited or foreign pong acknowledges nothing); whether it
    /// acknowledged more.
    fn pong(&mut self, payload: &[u8]) -> bool {
        let named = std::str::from_utf8(payload)
            .ok()
            .and_then(|text| text.parse::<u64>().ok());
        if let Some(position) = named
            && position > self.acked
            && position <= self.pinged
        {
            self.acked = position;
            return true;
        }
        false
    }
}

/// How a stream ended. Either way its group keeps what the client acknowledged.
enum Ending {
    /// The client closed it, the connection broke, or the client stopped answering or
    /// reading.
    Gone,
    /// The server closes it with this code and reason, after a last ping whose pong in
    /// the closing handshake counts.
    Closing(u16, &'static str),
}

/// Sends a message, waiting at most `within` for a client that does not read.
async fn send(socket: &mut WebSocket, message: Message, within: Duration) -> bool {
    matches!(
        tokio::time::timeout(within, socket.send(message)).await,
        Ok(Ok(()))
    )
}

/// A stream's socket and what its client has shown it read.
struct Link {
    socket: WebSocket,
    delivery: Delivery,
    /// The client timeout: how long a ping may wait for its pong, or a send for the socket.
    timeout: Duration,
    pinged_at: tokio::time::Instant,
    /// The bytes of events sent since the last ping.
    unpinged_bytes: usize,
    /// Since when a ping has waited for its pong; each pong that acknowledges more
    /// starts it again (the client reads on, if slowly), the pong of the last ping ends it.
    unanswered_since: Option<tokio::time::Instant>,
    /// Told when another stream of the group takes over (a stream with a group).
    taken_over: Option<Arc<Notify>>,
}

impl Link {
    fn new(
        socket: WebSocket,
        position: u64,
        timeout: Duration,
        taken_over: Option<Arc<Notify>>,
    ) -> Self {
        Self {
            socket,
            delivery: Delivery::starting_at(position),
            timeout,
            pinged_at: tokio::time::Instant::now(),
            unpinged_bytes: 0,
            unanswered_since: None,
            taken_over,
        }
    }

    /// Sends a message within the client timeout; a send waiting for a slow client gives
    /// way to a stream taking the group over.
    async fn put(&mut self, message: Message) -> Result<(), Ending> {
        let sent = match &self.taken_over {
            Some(taken_over) => tokio::select! {
                biased;
                () = taken_over.notified() => return Err(TAKEOVER),
                sent = send(&mut self.socket, message, self.timeout) => sent,
            },
            None => send(&mut self.socket, message, self.timeout).await,
        };
        if sent { Ok(()) } else { Err(Ending::Gone) }
    }

    /// Takes a frame from the client; whether the stream is over (its Close, or the
    /// connection broke). Other frames than pongs are ignored.
    fn heard(&mut self, received: Option<Result<Message, axum::Error>>) -> bool {
        match received {
            Some(Ok(Message::Pong(payload))) => {
                let advanced = self.delivery.pong(&payload);
                if self.delivery.acked == self.delivery.pinged {
                    self.unanswered_since = None;
                } else if advanced {
                    self.unanswered_since = Some(tokio::time::Instant::now());
                }
                false
            }
            Some(Ok(Message::Close(_)) | Err(_)) | None => true,
            Some(Ok(_)) => false,
        }
    }

    /// Takes the frames the client sent that are there already; whether the stream is over.
    fn take_waiting(&mut self) -> bool {
        while let Some(received) = self.socket.recv().now_or_never() {
            if self.heard(received) {
                return true;
            }
        }
        false
    }

    /// Whether a ping has waited the client timeout for its pong.
    fn silent(&self) -> bool {
        self.unanswered_since
            .is_some_and(|since| since.elapsed() >= self.timeout)
    }

    /// Pings when due: a second after the last ping if events went out since (or once
    /// [`PING_BYTES`] of them did), else half the client timeout after it.
    async fn ping_when_due(&mut self) -> Result<(), Ending> {
        let keepalive = self.timeout / 2;
        let every = if self.delivery.sent != self.delivery.pinged {
            SAVE_INTERVAL.min(keepalive)
        } else {
            keepalive
        };
        if self.pinged_at.elapsed() < every && self.unpinged_bytes < PING_BYTES {
            return Ok(());
        }
        self.pinged_at = tokio::time::Instant::now();
        self.unpinged_bytes = 0;
        self.unanswered_since.get_or_insert(self.pinged_at);
        let ping = Message::Ping(self.delivery.ping().into());
        self.put(ping).await
    }

    /// Sends a batch of events (those of `channel`, if given), reading the client's
    /// frames and pinging as it goes; why the stream ends, if it does.
    async fn send_events(
        &mut self,
        events: Vec<drogue_shared::events::log::LoggedEvent>,
        channel: Option<&str>,
    ) -> Result<(), Ending> {
        for event in events {
            if channel.is_none_or(|c| event.subject.as_deref() == Some(c)) {
                self.unpinged_bytes += event.json.len();
                self.put(Message::Text(event.json.into())).await?;
            }
            self.delivery.sent = event.sequence;
            if self.take_waiting() || self.silent() {
                return Err(Ending::Gone);
            }
            self.ping_when_due().await?;
        }
        Ok(())
    }

    /// Closes the stream with `code` and `reason`, after a last ping; the closing
    /// handshake (the client's Close, and the pong before it) within [`CLOSING_HANDSHAKE`].
    async fn close(&mut self, code: u16, reason: &'static str) {
        let close = CloseFrame {
            code,
            reason: reason.into(),
        };
        let ping = Message::Ping(self.delivery.ping().into());
        let _ = tokio::time::timeout(CLOSING_HANDSHAKE, async {
            if self.socket.send(ping).await.is_err()
                || self.socket.send(Message::Close(Some(close))).await.is_err()
            {
                return;
            }
            while let Some(Ok(message)) = self.socket.recv().await {
                match message {
                    Message::Pong(payload) => {
                        self.delivery.pong(&payload);
                    }
                    Message::Close(_) => break,
                    _ => {}
                }
            }
        })
        .await;
    }
}

/// How a stream taken over by another of its group ends.
const TAKEOVER: Ending = Ending::Closing(TAKEN_OVER, "another stream of the group took over");

/// Sends the events to the socket until the stream ends; `count` counts the stream
/// against its user until then (released before the group is left: a stream taking the
/// group over at the user's quota takes its place).
async fn forward(
    socket: WebSocket,
    mut follower: Follower,
    (group, count): (Option<Group>, StreamCount),
    access: Access,
    channel: Option<String>,
) {
    let app = access.app.clone();
    let timeout = access.state.client_timeout;
    let taken_over = group.as_ref().map(|g| g.taken_over.clone());
    let mut link = Link::new(socket, follower.position(), timeout, taken_over.clone());
    let mut tick = tokio::time::interval(SAVE_INTERVAL.min(timeout / 2));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let start = tokio::time::Instant::now() + RECHECK_INTERVAL;
    let mut recheck = tokio::time::interval_at(start, RECHECK_INTERVAL);
    // (saved at the first tick: a sweep that took the group for unused just before this
    // stream joined it sees it again)
    let (mut saved, mut saved_at) = (follower.position(), None::<tokio::time::Instant>);
    let ending = loop {
        // the server's own work first: a client sending frames without pause cannot
        // hold off the checks of its access, its silence or a takeover
        tokio::select! {
            biased;
            () = async { taken_over.as_ref().expect("a group").notified().await }, if taken_over.is_some() => {
                break TAKEOVER;
            }
            _ = recheck.tick() => match access.still_allowed().await {
                Some(true) => {}
                Some(false) => {
                    tracing::info!(application = %app, "access to a stream's application ended: closing it");
                    break Ending::Closing(close_code::POLICY, "access to the application ended");
                }
                None => tracing::warn!(application = %app, "cannot check a stream's access now; it stays open"),
            },
            _ = tick.tick() => {
                // (a pong already there is not silence)
                if link.take_waiting() {
                    break Ending::Gone;
                }
                if link.silent() {
                    tracing::info!(application = %app, ?timeout, "a stream's client did not answer a ping: closing it");
                    break Ending::Gone;
                }
                if let Err(ending) = link.ping_when_due().await {
                    break ending;
                }
                // saved when it moved, and now and then when not: the time of the save
                // tells the group is in use (see `--stream-group-expiry`)
                let acked = link.delivery.acked;
                if let Some(group) = &group
                    && (acked != saved
                        || saved_at.is_none_or(|at| at.elapsed() >= access.state.group_refresh))
                    && save_position(&access.state.positions, &group.key, acked).await
                {
                    // (not saved: tried again at the next tick)
                    (saved, saved_at) = (acked, Some(tokio::time::Instant::now()));
                }
            }
            received = link.socket.recv() => if link.heard(received) {
                break Ending::Gone;
            },
            events = follower.next(BATCH) => match events {
                Ok(events) => {
                    if let Err(ending) = link.send_events(events, channel.as_deref()).await {
                        if matches!(ending, Ending::Gone) {
                            tracing::info!(application = %app, ?timeout, "a stream's client left, stopped reading or did not answer: closing it");
                        }
                        break ending;
                    }
                    // (the events another application of the name had are passed too)
                    link.delivery.sent = follower.position();
                }
                Err(e) => {
                    tracing::warn!(application = %app, error = %e, "a stream cannot read the event log");
                    break Ending::Closing(close_code::ERROR, "the event stream is unavailable");
                }
            },
        }
    };
    if let Ending::Closing(code, reason) = ending {
        if code == TAKEN_OVER {
            tracing::info!(application = %app, "another stream of the group took over: closing this one");
        }
        link.close(code, reason).await;
    }
    if let Some(group) = &group {
        // saved even when unchanged: the time of the save is when the group was last used
        save_position(&access.state.positions, &group.key, link.delivery.acked).await;
    }
    drop(count);
    drop(group);
    tracing::info!(application = %app, "stream closed");
}

/// Saves a group's position; a failure is logged (the group sees events again);
/// whether it was saved.
async fn save_position(positions: &Positions, key: &str, position: u64) -> bool {
    let saved = positions.save(key, position).await;
    if !saved {
        tracing::warn!(position, "a stream group's position could not be saved");
    }
    saved
}

/// A group's position to save, and who waits for it to be durable.
type Save = (String, u64, tokio::sync::oneshot::Sender<bool>);

/// Saves the groups' positions on one thread: the saves waiting together (every open
/// stream saves each second) go into one durable write, so many streams cost few disk
/// syncs, which the event log's commits would otherwise wait behind.
#[derive(Clone)]
pub struct Positions {
    queue: std::sync::mpsc::Sender<Save>,
    /// Durable writes made.
    writes: Arc<AtomicU64>,
}

impl Positions {
    /// Starts the thread that writes into `log`'s state; it ends with the last clone.
    pub fn start(log: EventLog) -> std::io::Result<Self> {
        let (queue, saves) = std::sync::mpsc::channel::<Save>();
        let writes = Arc::new(AtomicU64::new(0));
        let counted = writes.clone();
        std::thread::Builder::new()
            .name("stream-groups".into())
            .spawn(move || {
                while let Ok(first) = saves.recv() {
                    let batch: Vec<Save> = std::iter::once(first).chain(saves.try_iter()).collect();
                    // each group's last position asked for, in one write
                    let mut newest: HashMap<&str, String> = HashMap::new();
                    for (key, position, _) in &batch {
                        newest.insert(key, GroupState::now(*position).to_text());
                    }
                    let written = log
                        .set_states(newest.iter().map(|(key, text)| (*key, Some(text.as_str()))))
                        .is_ok();
                    if written {
                        counted.fetch_add(1, Ordering::Relaxed);
                    }
                    drop(newest);
                    for (_, _, done) in batch {
                        let _ = done.send(written);
                    }
                }
            })?;
        Ok(Self { queue, writes })
    }

    /// Durable writes made of groups' positions.
    pub fn writes(&self) -> u64 {
        self.writes.load(Ordering::Relaxed)
    }

    /// Saves a group's position; whether it is durable.
    async fn save(&self, key: &str, position: u64) -> bool {
        let (done, saved) = tokio::sync::oneshot::channel();
        if self.queue.send((key.to_owned(), position, done)).is_err() {
            return false;
        }
        saved.await.unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pong_acknowledges_only_a_position_pinged() {
        let mut delivery = Delivery::starting_at(10);
        delivery.sent = 15;
        // a pong before any ping with events in it, or naming what was not sent
        delivery.pong(b"15");
        delivery.pong(b"99");
        assert_eq!(delivery.acked, 10);
        assert_eq!(delivery.ping(), b"15");
        delivery.sent = 20;
        for foreign in [&b""[..], b"x", b"-1", b"16", b"20", b"\xff"] {
            delivery.pong(foreign);
        }
        assert_eq!(delivery.acked, 10, "nothing above the ping's 15");
        delivery.pong(b"12");
        assert_eq!(delivery.acked, 12);
        delivery.pong(b"15");
        assert_eq!(delivery.acked, 15);
        // an older pong, late, takes nothing back
        delivery.pong(b"12");
        assert_eq!(delivery.acked, 15);
    }

    #[tokio::test]
    async fn the_positions_saved_together_go_in_one_write() {
        let dir = tempfile::tempdir().unwrap();
        let log = EventLog::open(dir.path().join("events.redb"), 100).unwrap();
        let positions = Positions::start(log.clone()).unwrap();
        // 200 streams' saves at once, and one group saved twice in a row
        let saves = (0..200).map(|n| {
            let positions = positions.clone();
            async move { positions.save(&format!("ws/u1/g{n}"), n).await }
        });
        let saved = futures_util::future::join_all(saves).await;
        assert!(saved.iter().all(|ok| *ok));
        let writes = positions.writes();
        assert!(writes < 50, "{writes} writes for 200 saves");
        assert!(positions.save("ws/u1/g7", 1000).await);
        assert!(positions.save("ws/u1/g7", 1001).await);
        for n in 0..200 {
            let expected = if n == 7 { 1001 } else { n };
            let text = log.state(&format!("ws/u1/g{n}")).unwrap().unwrap();
            let state = GroupState::parse(&text).unwrap();
            assert_eq!(state.position, expected);
            assert!(
                state
                    .saved_at
                    .is_some_and(|at| at.abs_diff(unix_now()) < 60)
            );
        }
    }
}
