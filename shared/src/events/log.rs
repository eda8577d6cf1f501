//! The event stream of `drogue-local`: a persistent log and live subscribers (the
//! WebSocket integration, the MQTT broker).
//!
//! Events go to append-only segment files (`segments`), read through an index per
//! application kept in memory; the consumers' state (positions, sessions) is a small
//! `redb` table. One writer thread commits events in groups: every event waiting when a
//! commit starts goes into one write and one `fdatasync`, so throughput grows with load
//! while each `publish` still returns only after its event is on disk. Each application
//! keeps its last `retention` events. Format and rules: docs/event-log.md.

mod relay;
mod segments;

pub use segments::REWRITE_STEP;

pub use relay::relay_acknowledgements;

use super::{EventSink, SinkError, StructuredEvent};
use async_trait::async_trait;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, TableError};
use segments::{Draft, SegmentWriter, Segments};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use tokio::sync::{Notify, broadcast, mpsc, oneshot};

/// The previous format's events, (application, sequence number) -> structured JSON
/// CloudEvent: moved to the segments at open, then dropped.
const EVENTS: TableDefinition<(&str, u64), &str> = TableDefinition::new("events");
/// The previous format's application -> last sequence number; dropped with `EVENTS`.
const SEQUENCES: TableDefinition<&str, u64> = TableDefinition::new("sequences");
/// The consumers' state (positions of WebSocket groups, persistent MQTT sessions), by
/// key.
const STATE: TableDefinition<&str, &str> = TableDefinition::new("state");

/// Most events one commit takes.
const MAX_GROUP: usize = 1024;

/// The size at which the log starts a new segment, by default.
pub const DEFAULT_SEGMENT_SIZE: u64 = 64 << 20;

/// An event as logged.
#[derive(Debug, Clone)]
pub struct LoggedEvent {
    pub application: String,
    /// The `applicationuid` extension: which application of that name.
    pub application_uid: Option<String>,
    pub subject: Option<String>,
    pub sequence: u64,
    /// The structured JSON CloudEvent.
    pub json: String,
}

/// What the writer thread calls with each committed event (see [`EventLog::on_commit`]).
pub type Listener = Box<dyn Fn(&LoggedEvent) + Send + Sync>;

/// What the writer thread is given to do.
enum Work {
    /// An event to commit.
    Event(Pending),
    /// Its housekeeping, now: records were forgotten ([`EventLog::forget`]).
    Housekeeping,
}

struct Pending {
    application: String,
    application_uid: Option<String>,
    subject: Option<String>,
    json: String,
    ack: relay::Ack,
    /// The relay of the thread it was published from, if that thread has one.
    relay: Option<Arc<relay::Relay>>,
}

/// Acknowledges an event, through its thread's relay if it has one; the relay to wake
/// once the group is acknowledged is added to `relays`.
fn acknowledge(
    ack: relay::Ack,
    relay: Option<Arc<relay::Relay>>,
    result: Result<(), String>,
    relays: &mut Vec<Arc<relay::Relay>>,
) {
    match relay {
        Some(relay) => {
            if relay.leave(ack, result) && !relays.iter().any(|r| Arc::ptr_eq(r, &relay)) {
                relays.push(relay);
            }
        }
        None => {
            let _ = ack.send(result);
        }
    }
}

/// The local event log; cheap to clone.
#[derive(Clone)]
pub struct EventLog {
    db: Arc<Database>,
    segments: Arc<Segments>,
    writer: mpsc::Sender<Work>,
    live: broadcast::Sender<Arc<LoggedEvent>>,
    listener: Arc<OnceLock<Listener>>,
    counters: Arc<Counters>,
    wakers: Arc<Wakers>,
}

/// Wakes the followers of an application when its events are committed: a follower is
/// woken by its own application's events only, so another tenant's many idle followers
/// cost a commit nothing (a channel of every event woke every follower at every event,
/// on the writer's thread).
#[derive(Default)]
struct Wakers(std::sync::Mutex<HashMap<String, (Arc<Notify>, usize)>>);

impl Wakers {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Arc<Notify>, usize)>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The waker of an application's followers, for one more of them.
    fn register(&self, application: &str) -> Arc<Notify> {
        let mut wakers = self.lock();
        match wakers.get_mut(application) {
            Some((notify, followers)) => {
                *followers += 1;
                notify.clone()
            }
            None => {
                let notify = Arc::new(Notify::new());
                wakers.insert(application.to_owned(), (notify.clone(), 1));
                notify
            }
        }
    }

    /// A follower ended: its application's waker goes with the last one.
    fn release(&self, application: &str) {
        let mut wakers = self.lock();
        if let Some((_, followers)) = wakers.get_mut(application) {
            *followers -= 1;
            if *followers == 0 {
                wakers.remove(application);
            }
        }
    }

    /// Whether any application is followed.
    fn any(&self) -> bool {
        !self.lock().is_empty()
    }

    /// Wakes the followers of the applications of committed events.
    fn wake<'a>(&self, applications: impl Iterator<Item = &'a str>) {
        let wakers = self.lock();
        if wakers.is_empty() {
            return;
        }
        let mut last = None;
        for application in applications {
            if last != Some(application) {
                if let Some((notify, _)) = wakers.get(application) {
                    notify.notify_waiters();
                }
                last = Some(application);
            }
        }
    }
}

/// What the writer did since the log was opened.
#[derive(Debug, Default)]
pub struct Counters {
    /// Events written.
    pub events: AtomicU64,
    /// Commits (each holds one or more events).
    pub commits: AtomicU64,
}

/// Events kept per application, by default.
pub const DEFAULT_RETENTION: u64 = 10_000;

/// How a log is opened.
#[derive(Debug, Clone, Copy)]
pub struct LogOptions {
    /// Events kept per application (at least one).
    pub retention: u64,
    /// The size at which a new segment is started.
    pub segment_size: u64,
    /// The bytes of records a segment's rewrite (a compaction, an erasure) copies
    /// between two groups.
    pub rewrite_step: usize,
}

impl Default for LogOptions {
    fn default() -> Self {
        Self {
            retention: DEFAULT_RETENTION,
            segment_size: DEFAULT_SEGMENT_SIZE,
            rewrite_step: REWRITE_STEP,
        }
    }
}

/// The directory of the segments of the log whose state file is `path`: the same name
/// with the extension `segments` (`events.redb` -> `events.segments/`).
pub fn segments_dir(path: &Path) -> PathBuf {
    path.with_extension("segments")
}

impl EventLog {
    /// Opens (or creates) the log whose state file is `path`, its segments beside it
    /// ([`segments_dir`]), and starts its writer thread.
    pub fn open(path: impl AsRef<Path>, retention: u64) -> Result<Self, SinkError> {
        Self::open_with(
            path,
            LogOptions {
                retention,
                ..LogOptions::default()
            },
        )
    }

    /// [`Self::open`] with every option.
    pub fn open_with(path: impl AsRef<Path>, options: LogOptions) -> Result<Self, SinkError> {
        let path = path.as_ref();
        let dir = segments_dir(path);
        if dir == path {
            return Err(SinkError::unavailable(std::io::Error::other(
                "the event log's state file cannot be named *.segments",
            )));
        }
        // the state file's lock (redb's) also keeps a second process off the segments
        let mut db = Database::create(path).map_err(SinkError::unavailable)?;
        let txn = db.begin_write().map_err(SinkError::unavailable)?;
        txn.open_table(STATE).map_err(SinkError::unavailable)?;
        txn.commit().map_err(SinkError::unavailable)?;
        let mut segments = SegmentWriter::open(&dir, options.segment_size, options.retention)
            .map_err(SinkError::unavailable)?;
        segments.set_rewrite_step(options.rewrite_step);
        migrate(&mut db, &mut segments).map_err(SinkError::unavailable)?;
        segments.settle().map_err(SinkError::unavailable)?;
        let db = Arc::new(db);
        let (writer, pending) = mpsc::channel(4 * MAX_GROUP);
        let (live, _) = broadcast::channel(4096);
        let counters = Arc::new(Counters::default());
        let listener = Arc::new(OnceLock::new());
        let store = segments.store();
        let (thread_db, thread_counters) = (db.clone(), counters.clone());
        let wakers = Arc::new(Wakers::default());
        let outlets = Outlets {
            live: live.clone(),
            listener: listener.clone(),
            wakers: wakers.clone(),
        };
        std::thread::Builder::new()
            .name("event-log".into())
            .spawn(move || {
                // the state file stays open (and locked) until the last group is written
                let _db = thread_db;
                write_loop(segments, pending, &outlets, &thread_counters)
            })
            .map_err(SinkError::unavailable)?;
        Ok(Self {
            db,
            segments: store,
            writer,
            live,
            listener,
            counters,
            wakers,
        })
    }

    /// Events and commits written since the log was opened.
    pub fn counters(&self) -> (u64, u64) {
        (
            self.counters.events.load(Ordering::Relaxed),
            self.counters.commits.load(Ordering::Relaxed),
        )
    }

    /// Live events, from now on. A subscriber that falls behind by more than the
    /// channel's capacity misses events (and is told so by `RecvError::Lagged`).
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<LoggedEvent>> {
        self.live.subscribe()
    }

    /// Hands every event committed from now on to `listener`, on the log's writer
    /// thread, once the publishers of its group have their acknowledgements: for the one
    /// consumer that must see every event at once and whose work is short and never
    /// waits (the MQTT broker's routing to its sessions). Unlike [`Self::subscribe`]'s
    /// channel it cannot fall behind, and it wakes no other thread to hand the event
    /// on. Set once: `false` (and `listener` dropped) when one is set already.
    pub fn on_commit(&self, listener: Listener) -> bool {
        self.listener.set(listener).is_ok()
    }

    /// The logged events of an application after `after`, oldest first, at most `limit`.
    pub fn read(
        &self,
        application: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<LoggedEvent>, SinkError> {
        self.segments
            .read(application, after, limit)
            .map_err(SinkError::unavailable)
    }

    /// The sequence number of an application's newest event (0 before the first).
    pub fn last_sequence(&self, application: &str) -> Result<u64, SinkError> {
        Ok(self.segments.last_sequence(application))
    }

    /// How many application names the log's index holds (a name goes once no
    /// application of it has events left: see [`Self::forget_all`]).
    pub fn names(&self) -> usize {
        self.segments.names()
    }

    /// The applications (`uid`s) of which the log keeps events, with their names.
    pub fn application_uids(&self) -> Vec<(String, String)> {
        self.segments.application_uids()
    }

    /// Drops the events of a deleted application (`uid`) of the name `application`; how
    /// many (see [`Self::forget_all`]).
    pub fn forget(&self, application: &str, uid: &str) -> usize {
        self.forget_all([(application, uid)])
    }

    /// Drops the events of deleted applications, (name, `uid`) each; how many. Readers
    /// no longer see them, and the writer erases them from disk at once, those
    /// retention dropped too, one segment between two groups. A name left with no
    /// events is forgotten for good, and a later application of it starts its sequence
    /// numbers above every forgotten name's; a name that keeps events of another
    /// application keeps the deleted one's newest as a tombstone, to keep its numbers
    /// going.
    pub fn forget_all<'a>(&self, deleted: impl IntoIterator<Item = (&'a str, &'a str)>) -> usize {
        let mut any = false;
        let removed = self
            .segments
            .forget_all(deleted.into_iter().inspect(|_| any = true));
        // (a full queue: the writer is busy, and its housekeeping comes after each group)
        if any {
            let _ = self.writer.try_send(Work::Housekeeping);
        }
        removed
    }

    /// Follows an application's events after `after`, from the log first and then as
    /// they come; only those of the application with `uid`, when given (a deleted
    /// application's events are not its successor's).
    pub fn follow(&self, application: &str, uid: Option<&str>, after: u64) -> Follower {
        Follower {
            wake: self.wakers.register(application),
            log: self.clone(),
            application: application.to_owned(),
            uid: uid.map(str::to_owned),
            after,
        }
    }

    /// A consumer's saved state.
    pub fn state(&self, key: &str) -> Result<Option<String>, SinkError> {
        let txn = self.db.begin_read().map_err(SinkError::unavailable)?;
        let table = txn.open_table(STATE).map_err(SinkError::unavailable)?;
        Ok(table
            .get(key)
            .map_err(SinkError::unavailable)?
            .map(|v| v.value().to_owned()))
    }

    /// Saves (`Some`) or forgets (`None`) a consumer's state, durably. It waits for the
    /// disk: call it off the async threads (`spawn_blocking`).
    pub fn set_state(&self, key: &str, value: Option<&str>) -> Result<(), SinkError> {
        self.set_states([(key, value)])
    }

    /// [`Self::set_state`] for several keys, in order, in one durable write: all or none.
    pub fn set_states<'a>(
        &self,
        changes: impl IntoIterator<Item = (&'a str, Option<&'a str>)>,
    ) -> Result<(), SinkError> {
        let txn = self.db.begin_write().map_err(SinkError::unavailable)?;
        {
            let mut table = txn.open_table(STATE).map_err(SinkError::unavailable)?;
            for (key, value) in changes {
                match value {
                    Some(value) => table.insert(key, value).map(drop),
                    None => table.remove(key).map(drop),
                }
                .map_err(SinkError::unavailable)?;
            }
        }
        txn.commit().map_err(SinkError::unavailable)
    }

    /// Changes states read earlier, in one durable write: each `(key, expected, value)`
    /// only while the key's state is still `expected` and `still(key)` holds at the
    /// write (so a state saved since, or a consumer that came back, is left); how many
    /// changed. It waits for the disk, as [`Self::set_states`].
    pub fn change_states_if<'a>(
        &self,
        changes: impl IntoIterator<Item = (&'a str, &'a str, Option<&'a str>)>,
        still: impl Fn(&str) -> bool,
    ) -> Result<usize, SinkError> {
        let txn = self.db.begin_write().map_err(SinkError::unavailable)?;
        let mut changed = 0;
        {
            let mut table = txn.open_table(STATE).map_err(SinkError::unavailable)?;
            for (key, expected, value) in changes {
                let current = table.get(key).map_err(SinkError::unavailable)?;
                if current.as_ref().map(|v| v.value()) != Some(expected) || !still(key) {
                    continue;
                }
                drop(current);
                match value {
                    Some(value) => table.insert(key, value).map(drop),
                    None => table.remove(key).map(drop),
                }
                .map_err(SinkError::unavailable)?;
                changed += 1;
            }
        }
        txn.commit().map_err(SinkError::unavailable)?;
        Ok(changed)
    }

    /// The saved states whose key starts with `prefix`.
    pub fn states(&self, prefix: &str) -> Result<Vec<(String, String)>, SinkError> {
        let txn = self.db.begin_read().map_err(SinkError::unavailable)?;
        let table = txn.open_table(STATE).map_err(SinkError::unavailable)?;
        let mut found = Vec::new();
        for entry in table.range(prefix..).map_err(SinkError::unavailable)? {
            let (key, value) = entry.map_err(SinkError::unavailable)?;
            if !key.value().starts_with(prefix) {
                break;
            }
            found.push((key.value().to_owned(), value.value().to_owned()));
        }
        Ok(found)
    }
}

/// Moves the events of the previous format (redb tables `events` and `sequences` in the
/// state file) into the segments, then drops those tables. Repeating it after a crash
/// half-way is harmless: what the segments hold already is skipped.
fn migrate(db: &mut Database, segments: &mut SegmentWriter) -> Result<(), redb::Error> {
    let txn = db.begin_read()?;
    let events = match txn.open_table(EVENTS) {
        Ok(events) => events,
        Err(TableError::TableDoesNotExist(_)) => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    let mut moved = 0u64;
    for entry in events.range::<(&str, u64)>(..)? {
        let (key, value) = entry?;
        let (application, sequence) = key.value();
        let json = value.value();
        let parsed = serde_json::from_str::<serde_json::Value>(json).unwrap_or_default();
        let draft = Draft {
            application,
            application_uid: parsed["applicationuid"].as_str(),
            subject: parsed["subject"].as_str(),
            json,
        };
        segments.migrate(sequence, draft)?;
        moved += 1;
    }
    segments.finish_migration()?;
    match txn.open_table(SEQUENCES) {
        Ok(sequences) => {
            for entry in sequences.iter()? {
                let (application, last) = entry?;
                let (application, last) = (application.value(), last.value());
                if segments.last_sequence(application) < last {
                    tracing::warn!(
                        application,
                        last,
                        "the previous event log counted more events than it kept; sequence numbers restart below it"
                    );
                }
            }
        }
        Err(TableError::TableDoesNotExist(_)) => {}
        Err(e) => return Err(e.into()),
    }
    drop(events);
    drop(txn);
    let txn = db.begin_write()?;
    txn.delete_table(EVENTS)?;
    txn.delete_table(SEQUENCES)?;
    txn.commit()?;
    db.compact()?;
    tracing::info!(
        events = moved,
        "the event log moved its events from the previous format to segment files"
    );
    Ok(())
}

/// A reader of one application's events that resumes where it left off: it reads the
/// log after its position and, when it has read everything, waits for the next event.
/// Nothing is missed however slow the reader, within the log's retention.
pub struct Follower {
    log: EventLog,
    /// Woken by its application's committed events.
    wake: Arc<Notify>,
    application: String,
    uid: Option<String>,
    after: u64,
}

impl Follower {
    /// The sequence number of the last event read.
    pub fn position(&self) -> u64 {
        self.after
    }

    /// The next events, oldest first, at most `limit`; waits while there are none.
    pub async fn next(&mut self, limit: usize) -> Result<Vec<LoggedEvent>, SinkError> {
        loop {
            // waiting from before the read: an event committed after it wakes this
            let woken = self.wake.clone();
            let woken = woken.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            let batch = self.log.read(&self.application, self.after, limit.max(1))?;
            if let (Some(first), Some(last)) = (batch.first(), batch.last()) {
                if self.after > 0 && first.sequence > self.after + 1 {
                    // (not the records of a deleted application erased in between, nor
                    // the numbers skipped by a name forgotten for good and back since)
                    let kept = self.log.segments.retained_from(&self.application);
                    let since = self.log.segments.since(&self.application);
                    let from = self.after.max(since.saturating_sub(1));
                    if kept > from + 1 {
                        tracing::warn!(
                            application = %self.application,
                            missed = kept.min(first.sequence).saturating_sub(from + 1),
                            "a consumer resumed behind the log's retention and missed events"
                        );
                    }
                }
                self.after = last.sequence;
                let wanted: Vec<LoggedEvent> = batch
                    .into_iter()
                    .filter(|e| {
                        self.uid.is_none()
                            || e.application_uid.is_none()
                            || e.application_uid == self.uid
                    })
                    .collect();
                if !wanted.is_empty() {
                    return Ok(wanted);
                }
                continue;
            }
            woken.await;
        }
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        self.log.wakers.release(&self.application);
    }
}

#[async_trait]
impl EventSink for EventLog {
    async fn publish_structured(&self, event: StructuredEvent) -> Result<(), SinkError> {
        self.append(event, &|| {}).await
    }

    /// The writer takes events in the order they are queued, so an event's place is
    /// fixed once it is in the writer's queue, before its group's sync.
    async fn publish_in_order(
        &self,
        event: StructuredEvent,
        sequenced: &(dyn Fn() + Send + Sync),
    ) -> Result<(), SinkError> {
        self.append(event, sequenced).await
    }
}

impl EventLog {
    /// Queues `event` for the writer, calls `sequenced` once it is queued, and waits
    /// until its group is durable. Both publishes of [`EventSink`] share it, so each is
    /// one boxed future (`async_trait`'s), not one boxing the other's.
    async fn append(
        &self,
        event: StructuredEvent,
        sequenced: &(dyn Fn() + Send + Sync),
    ) -> Result<(), SinkError> {
        let (ack, done) = oneshot::channel();
        let pending = Pending {
            application: event.application,
            application_uid: event.application_uid,
            subject: event.subject,
            json: event.json,
            ack,
            relay: relay::here(),
        };
        let stopped =
            || SinkError::unavailable(std::io::Error::other("the event log is not running"));
        self.writer
            .send(Work::Event(pending))
            .await
            .map_err(|_| stopped())?;
        sequenced();
        match done.await.map_err(|_| stopped())? {
            Ok(()) => Ok(()),
            Err(e) => Err(SinkError::unavailable(std::io::Error::other(e))),
        }
    }
}

/// Where the writer hands committed events: the live channel and the listener.
struct Outlets {
    live: broadcast::Sender<Arc<LoggedEvent>>,
    listener: Arc<OnceLock<Listener>>,
    wakers: Arc<Wakers>,
}

fn write_loop(
    mut segments: SegmentWriter,
    mut pending: mpsc::Receiver<Work>,
    outlets: &Outlets,
    counters: &Counters,
) {
    let mut committed = Vec::new();
    let mut relays = Vec::new();
    let mut group = Vec::new();
    loop {
        // while a segment is being rewritten (compacted, or erased of a deleted
        // application's records), a step at a time between groups, the writer does not
        // wait for work
        let first = if segments.rewriting() {
            match pending.try_recv() {
                Ok(work) => Some(work),
                Err(mpsc::error::TryRecvError::Empty) => None,
                Err(mpsc::error::TryRecvError::Disconnected) => break,
            }
        } else {
            match pending.blocking_recv() {
                Some(work) => Some(work),
                None => break,
            }
        };
        if let Some(Work::Event(first)) = first {
            group.push(first);
            while group.len() < MAX_GROUP {
                match pending.try_recv() {
                    Ok(Work::Event(more)) => group.push(more),
                    Ok(Work::Housekeeping) => {}
                    Err(_) => break,
                }
            }
        }
        if group.is_empty() {
            segments.housekeeping();
            continue;
        }
        let drafts = group.iter().map(|p| Draft {
            application: &p.application,
            application_uid: p.application_uid.as_deref(),
            subject: p.subject.as_deref(),
            json: &p.json,
        });
        match segments.commit(drafts) {
            Ok(sequences) => {
                counters
                    .events
                    .fetch_add(group.len() as u64, Ordering::Relaxed);
                counters.commits.fetch_add(1, Ordering::Relaxed);
                let listener = outlets.listener.get();
                // (a follower that starts waiting after this reads them: they are
                // readable now)
                let followed = outlets.wakers.any();
                for (p, sequence) in group.drain(..).zip(sequences) {
                    let event = Arc::new(LoggedEvent {
                        application: p.application,
                        application_uid: p.application_uid,
                        subject: p.subject,
                        sequence,
                        json: p.json,
                    });
                    if listener.is_some() || followed {
                        committed.push(event.clone());
                    }
                    let _ = outlets.live.send(event);
                    acknowledge(p.ack, p.relay, Ok(()), &mut relays);
                }
                for relay in relays.drain(..) {
                    relay.wake();
                }
                // after the acknowledgements: however many follow, no publish waits
                if followed {
                    outlets
                        .wakers
                        .wake(committed.iter().map(|e| e.application.as_str()));
                }
                if let Some(listener) = listener {
                    for event in &committed {
                        listener(event);
                    }
                }
                committed.clear();
            }
            Err(e) => {
                tracing::error!(error = %e, "the event log cannot write");
                for p in group.drain(..) {
                    acknowledge(p.ack, p.relay, Err(e.to_string()), &mut relays);
                }
                for relay in relays.drain(..) {
                    relay.wake();
                }
            }
        }
        // after the acknowledgements: deleting and compacting segments delays no publish
        segments.housekeeping();
    }
}

#[cfg(test)]
#[path = "log_tests.rs"]
mod log_tests;

#[cfg(test)]
mod tests {
    use super::*;
    use cloudevents::{Event, EventBuilder, EventBuilderV10};

    fn event(app: &str, uid: &str, n: u32) -> Event {
        EventBuilderV10::new()
            .id(format!("{app}-{uid}-{n}"))
            .ty("t")
            .source("drogue://test")
            .extension("application", app)
            .extension("applicationuid", uid)
            .build()
            .unwrap()
    }

    fn ids(events: &[LoggedEvent]) -> Vec<String> {
        events
            .iter()
            .map(|e| serde_json::from_str::<serde_json::Value>(&e.json).unwrap()["id"].to_string())
            .map(|id| id.trim_matches('"').to_owned())
            .collect()
    }

    #[tokio::test]
    async fn a_follower_reads_the_log_then_waits_for_what_comes() {
        let dir = tempfile::tempdir().unwrap();
        let log = EventLog::open(dir.path().join("events.redb"), 100).unwrap();
        for n in 1..=3 {
            log.publish(&event("a", "u1", n)).await.unwrap();
            log.publish(&event("b", "u9", n)).await.unwrap();
        }
        assert_eq!(log.last_sequence("a").unwrap(), 3);
        let mut follower = log.follow("a", Some("u1"), 1);
        assert_eq!(ids(&follower.next(10).await.unwrap()), ["a-u1-2", "a-u1-3"]);
        assert_eq!(follower.position(), 3);
        // nothing more yet: it waits, and wakes for the next event of its application
        let waiting = tokio::spawn(async move { (follower.next(10).await.unwrap(), follower) });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(!waiting.is_finished());
        log.publish(&event("b", "u9", 4)).await.unwrap();
        // a later application of the same name: not the follower's
        log.publish(&event("a", "u2", 4)).await.unwrap();
        log.publish(&event("a", "u1", 5)).await.unwrap();
        let (next, follower) = tokio::time::timeout(std::time::Duration::from_secs(5), waiting)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(ids(&next), ["a-u1-5"]);
        assert_eq!(follower.position(), 5);
    }

    /// Counts its wake-ups.
    struct Counting(std::sync::atomic::AtomicUsize);

    impl std::task::Wake for Counting {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// The "missed events" warnings logged on this thread while `run` runs.
    async fn missed_warnings(run: impl std::future::Future<Output = ()>) -> Vec<String> {
        use tracing_subscriber::layer::SubscriberExt;
        #[derive(Clone, Default)]
        struct Warnings(Arc<std::sync::Mutex<Vec<String>>>);
        struct Missed(String);
        impl tracing::field::Visit for Missed {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                if field.name() == "missed" {
                    self.0 = format!("{value:?}");
                }
            }
        }
        impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Warnings {
            fn on_event(
                &self,
                event: &tracing::Event<'_>,
                _: tracing_subscriber::layer::Context<'_, S>,
            ) {
                let mut missed = Missed(String::new());
                event.record(&mut missed);
                if !missed.0.is_empty() {
                    self.0.lock().unwrap().push(missed.0);
                }
            }
        }
        let warnings = Warnings::default();
        let subscriber = tracing_subscriber::registry().with(warnings.clone());
        let _guard = tracing::subscriber::set_default(subscriber);
        run.await;
        warnings.0.lock().unwrap().clone()
    }

    #[tokio::test]
    async fn only_events_that_retention_dropped_are_reported_missed() {
        let dir = tempfile::tempdir().unwrap();
        let log = EventLog::open(dir.path().join("events.redb"), 3).unwrap();
        // a consumer of "a" (uid u2) read 2; 3 is of a deleted application of the name
        log.publish(&event("a", "u2", 1)).await.unwrap();
        log.publish(&event("a", "u2", 2)).await.unwrap();
        log.publish(&event("a", "u1", 3)).await.unwrap();
        log.publish(&event("a", "u2", 4)).await.unwrap();
        assert_eq!(log.forget("a", "u1"), 1);
        let mut follower = log.follow("a", Some("u2"), 2);
        let warnings = missed_warnings(async {
            let read = follower.next(10).await.unwrap();
            assert_eq!(ids(&read), ["a-u2-4"]);
        })
        .await;
        assert_eq!(
            warnings,
            Vec::<String>::new(),
            "an erased event is not missed"
        );

        // one that read 1 missed 2, which retention dropped (3 was erased): one missed
        log.publish(&event("a", "u2", 5)).await.unwrap();
        let mut behind = log.follow("a", Some("u2"), 1);
        let warnings = missed_warnings(async {
            let read = behind.next(10).await.unwrap();
            assert_eq!(ids(&read), ["a-u2-4", "a-u2-5"]);
        })
        .await;
        assert_eq!(warnings, ["1"]);
    }

    #[tokio::test]
    async fn a_follower_is_woken_by_its_own_applications_events_only() {
        let dir = tempfile::tempdir().unwrap();
        let log = EventLog::open(dir.path().join("events.redb"), 100).unwrap();
        // another tenant's many idle followers, and one of app "a"
        let mut others: Vec<Follower> = (0..100).map(|_| log.follow("eve", None, 0)).collect();
        let mut follower = log.follow("a", None, 0);
        let counting = Arc::new(Counting(Default::default()));
        let waker = std::task::Waker::from(counting.clone());
        let mut cx = std::task::Context::from_waker(&waker);
        let mut waiting = Box::pin(follower.next(10));
        assert!(waiting.as_mut().poll(&mut cx).is_pending());
        let other_counts: Vec<_> = others
            .iter_mut()
            .map(|other| {
                let counting = Arc::new(Counting(Default::default()));
                let waker = std::task::Waker::from(counting.clone());
                let mut waiting = Box::pin(other.next(10));
                let pending = waiting
                    .as_mut()
                    .poll(&mut std::task::Context::from_waker(&waker))
                    .is_pending();
                assert!(pending);
                (waiting, counting)
            })
            .collect();
        // events of "b" wake neither the follower of "a" nor eve's
        for n in 1..=3 {
            log.publish(&event("b", "u9", n)).await.unwrap();
        }
        assert_eq!(counting.0.load(Ordering::SeqCst), 0);
        assert!(
            other_counts
                .iter()
                .all(|(_, c)| c.0.load(Ordering::SeqCst) == 0)
        );
        // one of "a" wakes its follower, which reads it
        log.publish(&event("a", "u1", 1)).await.unwrap();
        // (the writer wakes followers after it acknowledged the group)
        for _ in 0..200 {
            if counting.0.load(Ordering::SeqCst) >= 1 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert!(counting.0.load(Ordering::SeqCst) >= 1);
        match waiting.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(events) => assert_eq!(ids(&events.unwrap()), ["a-u1-1"]),
            std::task::Poll::Pending => panic!("woken, but nothing to read"),
        }
        assert!(
            other_counts
                .iter()
                .all(|(_, c)| c.0.load(Ordering::SeqCst) == 0)
        );
    }

    #[tokio::test]
    async fn the_listener_gets_every_committed_event_in_order_once_acknowledged() {
        use std::sync::Mutex;
        let dir = tempfile::tempdir().unwrap();
        let log = EventLog::open(dir.path().join("events.redb"), 100).unwrap();
        // before the listener: not handed to it
        log.publish(&event("a", "u1", 1)).await.unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (sink, writer) = (seen.clone(), std::thread::current().id());
        assert!(log.on_commit(Box::new(move |e: &LoggedEvent| {
            // on the log's own thread, not the publisher's
            assert_ne!(std::thread::current().id(), writer);
            sink.lock().unwrap().push(e.clone());
        })));
        // one listener only
        assert!(!log.on_commit(Box::new(|_: &LoggedEvent| {})));
        // many at once, so that groups hold several events
        let publishes = (2..=200).map(|n| {
            let log = log.clone();
            tokio::spawn(async move { log.publish(&event("a", "u1", n)).await })
        });
        for p in publishes.collect::<Vec<_>>() {
            p.await.unwrap().unwrap();
        }
        log.publish(&event("b", "u9", 1)).await.unwrap();
        // the last acknowledgement comes before its group reaches the listener
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while seen.lock().unwrap().len() < 200 && std::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        let seen = seen.lock().unwrap();
        let of_a: Vec<u64> = seen
            .iter()
            .filter(|e| e.application == "a")
            .map(|e| e.sequence)
            .collect();
        assert_eq!(of_a, (2..=200).collect::<Vec<u64>>());
        assert_eq!(seen.len(), 200);
        assert_eq!(seen[199].application, "b");
        assert_eq!(seen[199].sequence, 1);
        let (events, commits) = log.counters();
        assert_eq!(events, 201);
        assert!(commits < 200, "{commits} commits: no group held two events");
    }
    /// A chain of publishes, each started once the one before has its place in the log
    /// (as a connection's publishes are kept in order), from a task per publish.
    async fn chain(log: &EventLog, app: &'static str, in_order: bool) -> Vec<String> {
        let mut previous: Option<oneshot::Receiver<()>> = None;
        let mut tasks = Vec::new();
        for n in 1..=100 {
            let (placed, next) = oneshot::channel::<()>();
            let wait = previous.replace(next);
            let log = log.clone();
            tasks.push(tokio::spawn(async move {
                if let Some(wait) = wait {
                    let _ = wait.await;
                }
                let event = StructuredEvent::from(&event(app, "u1", n));
                if in_order {
                    let placed = std::sync::Mutex::new(Some(placed));
                    let pass = || drop(placed.lock().unwrap().take());
                    log.publish_in_order(event, &pass).await
                } else {
                    let result = log.publish_structured(event).await;
                    drop(placed);
                    result
                }
            }));
        }
        for task in tasks {
            task.await.unwrap().unwrap();
        }
        ids(&log.read(app, 0, 1000).unwrap())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn publishes_in_order_go_on_before_the_one_before_is_durable() {
        let dir = tempfile::tempdir().unwrap();
        let log = EventLog::open(dir.path().join("events.redb"), 1000).unwrap();
        let expected = |app: &str| {
            (1..=100)
                .map(|n| format!("{app}-u1-{n}"))
                .collect::<Vec<_>>()
        };
        // waiting for each to be durable: one commit each
        assert_eq!(chain(&log, "a", false).await, expected("a"));
        assert_eq!(log.counters(), (100, 100));
        // going on once each has its place: in the same order, several in a commit
        assert_eq!(chain(&log, "b", true).await, expected("b"));
        let (events, commits) = log.counters();
        assert_eq!(events, 200);
        assert!(
            commits - 100 < 100,
            "{} commits for 100 events: none went on before the one before was durable",
            commits - 100
        );
    }

    /// With a relay on their thread, the publishers of one commit are woken together:
    /// all are queued on the thread before any of them runs, so what the first one
    /// schedules (as the broker's first PUBACK schedules the connection's write) runs
    /// after all of them. Once the relay is gone, they are acknowledged directly.
    #[tokio::test]
    async fn a_relay_wakes_the_publishers_of_a_commit_together() {
        let dir = tempfile::tempdir().unwrap();
        let log = EventLog::open(dir.path().join("events.redb"), 1000).unwrap();
        // the writer waits in the listener after the first commit, until released
        let (hold, held) = std::sync::mpsc::channel::<()>();
        let held = std::sync::Mutex::new(held);
        assert!(log.on_commit(Box::new(move |e: &LoggedEvent| {
            if e.application == "first" {
                let _ = held.lock().unwrap().recv();
            }
        })));
        let local = tokio::task::LocalSet::new();
        local
            .run_until(async {
                tokio::task::spawn_local(relay_acknowledgements());
                tokio::task::yield_now().await;
                log.publish(&event("first", "u1", 1)).await.unwrap();
                // 50 publishers queue their events while the writer is held
                let queued = Arc::new(AtomicU64::new(0));
                let done = std::rc::Rc::new(std::cell::Cell::new(0));
                let seen = std::rc::Rc::new(std::cell::Cell::new(None));
                let tasks: Vec<_> = (1..=50)
                    .map(|n| {
                        let (log, queued) = (log.clone(), queued.clone());
                        let (done, seen) = (done.clone(), seen.clone());
                        tokio::task::spawn_local(async move {
                            let count = || {
                                queued.fetch_add(1, Ordering::SeqCst);
                            };
                            let event = StructuredEvent::from(&event("a", "u1", n));
                            log.publish_in_order(event, &count).await.unwrap();
                            done.set(done.get() + 1);
                            if done.get() == 1 {
                                // what the first one schedules sees how many ran
                                tokio::task::spawn_local(async move { seen.set(Some(done.get())) });
                            }
                        })
                    })
                    .collect();
                while queued.load(Ordering::SeqCst) < 50 {
                    tokio::task::yield_now().await;
                }
                hold.send(()).unwrap();
                for task in tasks {
                    task.await.unwrap();
                }
                assert_eq!(log.counters(), (51, 2), "the 50 in one commit");
                assert_eq!(seen.get(), Some(50), "all woken before any ran on");
            })
            .await;
        // the relay task is gone with its task set: acknowledged directly
        drop(local);
        log.publish(&event("a", "u1", 51)).await.unwrap();
        assert_eq!(log.read("a", 0, 100).unwrap().len(), 51);
    }

    #[tokio::test]
    async fn state_is_kept_by_key_and_across_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.redb");
        {
            let log = EventLog::open(&path, 100).unwrap();
            log.set_state("ws/u1/g1", Some("7")).unwrap();
            log.set_state("ws/u1/g2", Some("9")).unwrap();
            log.set_state("mqtt/c1", Some("{}")).unwrap();
            log.set_state("ws/u1/g2", None).unwrap();
            // several at once, in order: the last change of a key is what stays
            log.set_states([
                ("mqtt/c2", Some("{}")),
                ("mqtt/c3", Some("{}")),
                ("mqtt/c2", None),
                ("mqtt/c3", Some("{\"n\":3}")),
            ])
            .unwrap();
        }
        // the writer thread holds the file until it ends
        let log = loop {
            match EventLog::open(&path, 100) {
                Ok(log) => break log,
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
            }
        };
        assert_eq!(log.state("ws/u1/g1").unwrap().as_deref(), Some("7"));
        assert_eq!(log.state("ws/u1/g2").unwrap(), None);
        assert_eq!(
            log.states("ws/").unwrap(),
            [("ws/u1/g1".to_owned(), "7".to_owned())]
        );
        assert_eq!(log.state("mqtt/c2").unwrap(), None);
        assert_eq!(log.state("mqtt/c3").unwrap().as_deref(), Some("{\"n\":3}"));
    }
}
