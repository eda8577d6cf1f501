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

use super::hub::{ContentMode, Delivery, Hub, Push, Track, delivery_for};
use chrono::{DateTime, Utc};
use drogue_shared::events::log::{EventLog, Follower};
use drogue_shared::mqtt::filter::TopicFilter;
use drogue_shared::mqtt::topics::application_events;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

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

/// The saved state of a client's session, if it has one that has not expired.
pub async fn load(log: &EventLog, client_id: &str) -> Option<SessionState> {
    let (log, key) = (log.clone(), key(client_id));
    let found = tokio::task::spawn_blocking(move || log.state(&key)).await;
    let text = match found {
        Ok(Ok(Some(text))) => text,
        Ok(Ok(None)) => return None,
        _ => {
            tracing::warn!(client_id, "an MQTT session's state cannot be read");
            return None;
        }
    };
    match serde_json::from_str::<SessionState>(&text) {
        Ok(state) if !state.expired(Utc::now()) => Some(state),
        Ok(_) => None,
        Err(e) => {
            tracing::warn!(client_id, error = %e, "an MQTT session's state does not read back");
            None
        }
    }
}

/// Saves (`Some`) or forgets (`None`) a client's session.
pub async fn save(log: &EventLog, client_id: &str, state: Option<&SessionState>) {
    let (log, key) = (log.clone(), key(client_id));
    let text = state.map(|s| serde_json::to_string(s).expect("sessions serialize"));
    let saved = tokio::task::spawn_blocking(move || log.set_state(&key, text.as_deref())).await;
    if !matches!(saved, Ok(Ok(()))) {
        tracing::warn!(client_id, "an MQTT session's state cannot be saved");
    }
}

/// Saves a connected session's state every [`SAVE_INTERVAL`] while it changes; ends
/// with the connection (whose end saves the last state).
pub async fn keep(hub: Arc<Hub>, log: EventLog, client_id: String, session: u64) {
    let mut last = None;
    let mut interval = tokio::time::interval(SAVE_INTERVAL);
    loop {
        interval.tick().await;
        let Some(mut state) = hub.snapshot(session) else {
            return;
        };
        // the time of saving is no change
        let saved = std::mem::replace(&mut state.saved, DateTime::<Utc>::MIN_UTC);
        if last.as_ref() != Some(&state) {
            last = Some(state.clone());
            state.saved = saved;
            save(&log, &client_id, Some(&state)).await;
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

/// Starts feeding a subscription from the log (see [`feed`]) on the main runtime: the
/// events of the cursor's application (of its uid, when it has one) after its position.
/// `track`: each event's acknowledgement moves the subscription's cursor (a resuming
/// subscription of a persistent session; a clean session's subscription that fell
/// behind keeps no cursor).
pub fn start_feed(
    log: &EventLog,
    main: &tokio::runtime::Handle,
    cursor: &Cursor,
    mode: ContentMode,
    queue: mpsc::Sender<Push>,
    track: bool,
) -> tokio::task::AbortHandle {
    let uid = Some(cursor.uid.as_str()).filter(|uid| !uid.is_empty());
    let follower = log.follow(&cursor.application, uid, cursor.position);
    main.spawn(feed(
        follower,
        cursor.application.clone(),
        mode,
        queue,
        track,
    ))
    .abort_handle()
}

/// Feeds a subscription from the log: every event of its application after
/// `follower`'s position, in order, into the session's queue (waiting while it is full:
/// nothing is dropped), each tracked (with `track`) so that its acknowledgement moves
/// the cursor.
async fn feed(
    mut follower: Follower,
    application: String,
    mode: ContentMode,
    queue: mpsc::Sender<Push>,
    track: bool,
) {
    let topic = application_events(&application);
    let application: Arc<str> = application.into();
    loop {
        let events = match follower.next(BATCH).await {
            Ok(events) => events,
            Err(e) => {
                tracing::warn!(application = %application, error = %e, "a subscription cannot read the event log");
                return;
            }
        };
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

    #[test]
    fn a_session_expires_after_its_interval() {
        let saved = Utc::now() - chrono::Duration::seconds(100);
        let state = |expiry| SessionState {
            expiry,
            saved,
            subscriptions: vec![],
        };
        assert!(state(99).expired(Utc::now()));
        assert!(!state(3600).expired(Utc::now()));
    }
}
