//! The event stream of `drogue-local`: a persistent log in a `redb` file, and live
//! subscribers (the WebSocket integration, the MQTT broker).
//!
//! One writer thread commits events in groups: every event waiting when a commit starts
//! goes into it, so throughput grows with load while each `publish` still returns only
//! after its event is on disk. Each application keeps its last `retention` events.

use super::{EventSink, SinkError, application_of, to_json};
use async_trait::async_trait;
use cloudevents::{AttributesReader, Event};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::{broadcast, mpsc, oneshot};

/// (application, sequence number) -> structured JSON CloudEvent.
const EVENTS: TableDefinition<(&str, u64), &str> = TableDefinition::new("events");
/// application -> last sequence number.
const SEQUENCES: TableDefinition<&str, u64> = TableDefinition::new("sequences");

/// Most events one commit takes.
const MAX_GROUP: usize = 1024;

/// An event as logged.
#[derive(Debug, Clone)]
pub struct LoggedEvent {
    pub application: String,
    pub subject: Option<String>,
    pub sequence: u64,
    /// The structured JSON CloudEvent.
    pub json: String,
}

struct Pending {
    application: String,
    subject: Option<String>,
    json: String,
    ack: oneshot::Sender<Result<(), String>>,
}

/// The local event log; cheap to clone.
#[derive(Clone)]
pub struct EventLog {
    db: Arc<Database>,
    writer: mpsc::Sender<Pending>,
    live: broadcast::Sender<Arc<LoggedEvent>>,
    counters: Arc<Counters>,
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

impl EventLog {
    /// Opens (or creates) the log file and starts its writer thread.
    pub fn open(path: impl AsRef<Path>, retention: u64) -> Result<Self, SinkError> {
        let db = Arc::new(Database::create(path).map_err(SinkError::unavailable)?);
        let txn = db.begin_write().map_err(SinkError::unavailable)?;
        txn.open_table(EVENTS).map_err(SinkError::unavailable)?;
        txn.open_table(SEQUENCES).map_err(SinkError::unavailable)?;
        txn.commit().map_err(SinkError::unavailable)?;
        let (writer, pending) = mpsc::channel(4 * MAX_GROUP);
        let (live, _) = broadcast::channel(4096);
        let counters = Arc::new(Counters::default());
        let (thread_db, thread_live, thread_counters) =
            (db.clone(), live.clone(), counters.clone());
        std::thread::Builder::new()
            .name("event-log".into())
            .spawn(move || {
                write_loop(
                    &thread_db,
                    pending,
                    &thread_live,
                    &thread_counters,
                    retention.max(1),
                )
            })
            .map_err(SinkError::unavailable)?;
        Ok(Self {
            db,
            writer,
            live,
            counters,
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

    /// The logged events of an application after `after`, oldest first, at most `limit`.
    pub fn read(
        &self,
        application: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<LoggedEvent>, SinkError> {
        let txn = self.db.begin_read().map_err(SinkError::unavailable)?;
        let table = txn.open_table(EVENTS).map_err(SinkError::unavailable)?;
        let mut found = Vec::new();
        for entry in table
            .range((application, after.saturating_add(1))..=(application, u64::MAX))
            .map_err(SinkError::unavailable)?
        {
            let (key, value) = entry.map_err(SinkError::unavailable)?;
            let json = value.value().to_owned();
            let subject = serde_json::from_str::<serde_json::Value>(&json)
                .ok()
                .and_then(|v| v["subject"].as_str().map(str::to_owned));
            found.push(LoggedEvent {
                application: application.to_owned(),
                subject,
                sequence: key.value().1,
                json,
            });
            if found.len() >= limit {
                break;
            }
        }
        Ok(found)
    }
}

#[async_trait]
impl EventSink for EventLog {
    async fn publish(&self, event: &Event) -> Result<(), SinkError> {
        let (ack, done) = oneshot::channel();
        let pending = Pending {
            application: application_of(event).unwrap_or_default(),
            subject: event.subject().map(str::to_owned),
            json: to_json(event),
            ack,
        };
        let stopped =
            || SinkError::unavailable(std::io::Error::other("the event log is not running"));
        self.writer.send(pending).await.map_err(|_| stopped())?;
        match done.await.map_err(|_| stopped())? {
            Ok(()) => Ok(()),
            Err(e) => Err(SinkError::unavailable(std::io::Error::other(e))),
        }
    }
}

fn write_loop(
    db: &Database,
    mut pending: mpsc::Receiver<Pending>,
    live: &broadcast::Sender<Arc<LoggedEvent>>,
    counters: &Counters,
    retention: u64,
) {
    while let Some(first) = pending.blocking_recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match pending.try_recv() {
                Ok(more) => group.push(more),
                Err(_) => break,
            }
        }
        match commit(db, &group, retention) {
            Ok(sequences) => {
                counters
                    .events
                    .fetch_add(group.len() as u64, Ordering::Relaxed);
                counters.commits.fetch_add(1, Ordering::Relaxed);
                for (p, sequence) in group.into_iter().zip(sequences) {
                    let _ = live.send(Arc::new(LoggedEvent {
                        application: p.application,
                        subject: p.subject,
                        sequence,
                        json: p.json,
                    }));
                    let _ = p.ack.send(Ok(()));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "the event log cannot write");
                for p in group {
                    let _ = p.ack.send(Err(e.to_string()));
                }
            }
        }
    }
}

/// Writes a group in one transaction; the sequence number of each.
fn commit(db: &Database, group: &[Pending], retention: u64) -> Result<Vec<u64>, redb::Error> {
    let txn = db.begin_write()?;
    let mut sequences = Vec::with_capacity(group.len());
    {
        let mut events = txn.open_table(EVENTS)?;
        let mut counters = txn.open_table(SEQUENCES)?;
        for p in group {
            let app = p.application.as_str();
            let sequence = counters.get(app)?.map(|v| v.value()).unwrap_or(0) + 1;
            counters.insert(app, sequence)?;
            events.insert((app, sequence), p.json.as_str())?;
            if sequence > retention {
                events.remove((app, sequence - retention))?;
            }
            sequences.push(sequence);
        }
    }
    txn.commit()?;
    Ok(sequences)
}
