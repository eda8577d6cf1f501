//! Housekeeping: what clients leave behind in the event log's state that nothing else
//! removes. At start and then every [`INTERVAL`], a sweep removes
//!
//! - the saved MQTT sessions that expired (their client left more than their session
//!   expiry ago) and those that no longer read back, unless their client is connected;
//! - the WebSocket consumer groups' positions of applications that no longer exist (by
//!   `uid`: an application made anew under the name starts its groups afresh anyway),
//!   and those of groups none of whose streams was open for the group expiry (a week);
//! - the events of applications that no longer exist, but each name's newest (it keeps
//!   the name's sequence numbers going).
//!
//! So a tenant that cycles client ids or application names leaves behind one event per
//! application name (and the name in the log's index), not its sessions, groups and
//! events; a deleted application's events do not stay for good.

use crate::mqtt::hub::Hub;
use crate::mqtt::sessions::SessionStore;
use crate::stream::{GROUP_KEYS, GroupState, Groups, unix_now};
use drogue_shared::events::log::EventLog;
use drogue_shared::store::ApplicationStore;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// How often the sweep runs.
pub const INTERVAL: Duration = Duration::from_secs(3600);

/// What the sweeps removed, for `/metrics`.
#[derive(Debug, Default)]
pub struct Swept {
    sweeps: AtomicU64,
    sessions: AtomicU64,
    groups: AtomicU64,
    events: AtomicU64,
}

impl Swept {
    /// Sweeps done, saved MQTT sessions removed, WebSocket groups removed, events removed.
    pub fn counts(&self) -> (u64, u64, u64, u64) {
        (
            self.sweeps.load(Ordering::Relaxed),
            self.sessions.load(Ordering::Relaxed),
            self.groups.load(Ordering::Relaxed),
            self.events.load(Ordering::Relaxed),
        )
    }
}

#[derive(Clone)]
pub struct Sweeper {
    pub sessions: SessionStore,
    pub hub: Arc<Hub>,
    pub log: EventLog,
    pub applications: Arc<dyn ApplicationStore>,
    pub swept: Arc<Swept>,
    /// The WebSocket groups with an open stream (kept however old their save).
    pub groups: Groups,
    /// How long a group is kept after its last stream ended (`--stream-group-expiry`).
    pub group_expiry: Duration,
}

impl Sweeper {
    /// Sweeps now, and then every [`INTERVAL`], until aborted.
    pub fn start(self) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            loop {
                self.sweep().await;
                tokio::time::sleep(INTERVAL).await;
            }
        })
    }

    /// One sweep; what cannot be read or removed now is logged and left for the next.
    pub async fn sweep(&self) {
        let hub = self.hub.clone();
        let sessions = self
            .sessions
            .sweep(move |client_id| hub.has_client(client_id))
            .await;
        let groups = self.sweep_groups().await;
        match self.sweep_events().await {
            Ok(0) => {}
            Ok(events) => {
                self.swept
                    .events
                    .fetch_add(events as u64, Ordering::Relaxed);
                tracing::info!(
                    events,
                    "housekeeping removed the events of deleted applications"
                );
            }
            Err(e) => {
                tracing::warn!(error = %e, "housekeeping could not sweep the events of deleted applications now")
            }
        }
        let (removed_sessions, removed_groups) = (
            *sessions.as_ref().unwrap_or(&0),
            *groups.as_ref().unwrap_or(&0),
        );
        self.swept
            .sessions
            .fetch_add(removed_sessions as u64, Ordering::Relaxed);
        self.swept
            .groups
            .fetch_add(removed_groups as u64, Ordering::Relaxed);
        if removed_sessions + removed_groups > 0 {
            tracing::info!(
                sessions = removed_sessions,
                groups = removed_groups,
                "housekeeping removed expired MQTT sessions and WebSocket groups"
            );
        }
        if sessions.is_ok() && groups.is_ok() {
            self.swept.sweeps.fetch_add(1, Ordering::Relaxed);
        } else {
            tracing::warn!(
                ?sessions,
                ?groups,
                "housekeeping could not sweep everything now"
            );
        }
    }

    /// The `uid`s of the applications that exist now.
    async fn existing_uids(&self) -> Result<HashSet<String>, String> {
        Ok(self
            .applications
            .list_applications()
            .await
            .map_err(|e| e.to_string())?
            .into_iter()
            .map(|stored| stored.app.metadata.uid)
            .collect())
    }

    /// Drops from the event log the events of applications that no longer exist, for its
    /// writer to erase them from its files; how many.
    async fn sweep_events(&self) -> Result<usize, String> {
        let log = self.log.clone();
        let present = tokio::task::spawn_blocking(move || log.application_uids())
            .await
            .map_err(|e| e.to_string())?;
        if present.is_empty() {
            return Ok(0);
        }
        // listed after the log's were read: an application read there and not listed
        // now is gone (a uid never comes back)
        let existing = self.existing_uids().await?;
        let log = self.log.clone();
        // (the log's index lock is taken: off the runtime's threads)
        tokio::task::spawn_blocking(move || {
            log.forget_all(
                present
                    .iter()
                    .filter(|(_, uid)| !existing.contains(uid))
                    .map(|(name, uid)| (name.as_str(), uid.as_str())),
            )
        })
        .await
        .map_err(|e| e.to_string())
    }

    /// Removes the groups of applications that no longer exist and the groups unused for
    /// the group expiry (a group saved before the time was kept gets the time now); how
    /// many were removed.
    async fn sweep_groups(&self) -> Result<usize, String> {
        let log = self.log.clone();
        let states = tokio::task::spawn_blocking(move || log.states(GROUP_KEYS))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        if states.is_empty() {
            return Ok(0);
        }
        // listed after the groups were read: a group read whose application is not
        // listed now belongs to one that is gone (a uid never comes back)
        let existing = self.existing_uids().await?;
        let now = unix_now();
        // (a group may be both: counted once)
        let mut stale: BTreeSet<String> =
            stale_groups(states.iter().map(|(key, _)| key.as_str()), &existing)
                .into_iter()
                .collect();
        let (expired, dated) = expired_groups(&states, now, self.group_expiry.as_secs());
        stale.extend(expired);
        if stale.is_empty() && dated.is_empty() {
            return Ok(0);
        }
        let read: HashMap<String, String> = states.into_iter().collect();
        let (log, groups) = (self.log.clone(), self.groups.clone());
        tokio::task::spawn_blocking(move || {
            // each as it was read (a stream that saved since keeps its group), and none
            // with an open stream (checked at the write)
            let removals = stale
                .iter()
                .map(|key| (key.as_str(), read[key].as_str(), None));
            let changed = log.change_states_if(removals, |key| !groups.is_open(key))?;
            let dates = dated
                .iter()
                .map(|(key, text)| (key.as_str(), read[key].as_str(), Some(text.as_str())));
            log.change_states_if(dates, |_| true)?;
            Ok::<usize, drogue_shared::events::SinkError>(changed)
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())
    }
}

/// The group keys (`ws/{uid}/{group}`) whose application `uid` is not among `existing`.
fn stale_groups<'a>(
    keys: impl Iterator<Item = &'a str>,
    existing: &HashSet<String>,
) -> Vec<String> {
    keys.filter(|key| {
        key.strip_prefix(GROUP_KEYS)
            .and_then(|rest| rest.split_once('/'))
            .is_none_or(|(uid, _)| !existing.contains(uid))
    })
    .map(str::to_owned)
    .collect()
}

/// Of the groups' saved states, the keys of those last saved more than `expiry` seconds
/// before `now`, and the states to save again with the time `now` (those saved before
/// the time was kept).
fn expired_groups(
    states: &[(String, String)],
    now: u64,
    expiry: u64,
) -> (Vec<String>, Vec<(String, String)>) {
    let (mut expired, mut dated) = (Vec::new(), Vec::new());
    for (key, text) in states {
        match GroupState::parse(text) {
            Some(GroupState {
                saved_at: Some(at), ..
            }) => {
                if now.saturating_sub(at) > expiry {
                    expired.push(key.clone());
                }
            }
            Some(GroupState {
                position,
                saved_at: None,
            }) => {
                let state = GroupState {
                    position,
                    saved_at: Some(now),
                };
                dated.push((key.clone(), state.to_text()));
            }
            // unreadable: no stream can resume from it
            None => expired.push(key.clone()),
        }
    }
    (expired, dated)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_of_applications_that_are_gone_are_stale() {
        let existing: HashSet<String> = ["u1".to_owned()].into();
        let keys = [
            "ws/u1/g1",
            "ws/u1/g/with/slashes",
            "ws/u2/g1",
            "ws/malformed",
        ];
        assert_eq!(
            stale_groups(keys.into_iter(), &existing),
            ["ws/u2/g1", "ws/malformed"]
        );
    }

    #[test]
    fn groups_unused_for_the_expiry_expire_and_old_states_get_a_time() {
        let states: Vec<(String, String)> = [
            ("ws/u1/old", "17 1000"),
            ("ws/u1/recent", "18 1950"),
            ("ws/u1/edge", "19 1900"),
            ("ws/u1/untimed", "20"),
            ("ws/u1/garbled", "x 1"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let (expired, dated) = expired_groups(&states, 2000, 100);
        assert_eq!(expired, ["ws/u1/old", "ws/u1/garbled"]);
        assert_eq!(dated, [("ws/u1/untimed".to_owned(), "20 2000".to_owned())]);
    }

    #[test]
    fn a_group_state_reads_back() {
        for state in [
            GroupState::now(7),
            GroupState {
                position: 3,
                saved_at: None,
            },
        ] {
            assert_eq!(GroupState::parse(&state.to_text()), Some(state));
        }
        assert_eq!(GroupState::parse("5").map(|s| s.position), Some(5));
        for bad in ["", "x", "5 y", "5 6 7", "-1 3"] {
            assert_eq!(GroupState::parse(bad), None, "{bad}");
        }
    }
}
