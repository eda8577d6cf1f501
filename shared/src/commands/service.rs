//! Dropping off commands and waiting: for a command (a device's long poll) and for a
//! response (an application's drop-off with a timeout).
//!
//! Waiters look into the store; in one process ([`Signals`]) a drop-off or a response
//! wakes them at once, elsewhere they look again every 250 ms.

use super::{Command, CommandPublisher, CommandResponse, publisher::PublishError};
use crate::store::{CommandStore, StoreError};
use chrono::Utc;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast;
use tokio::time::Instant;

/// How often a waiter without signals looks into the store.
const POLL_INTERVAL: Duration = Duration::from_millis(250);

/// What changed, for waiters in the same process.
#[derive(Debug, Clone)]
enum Signal {
    Inbox { application: String, device: String },
    Response { id: String },
}

/// In-process wakeups for waiters; cheap to clone.
#[derive(Clone)]
pub struct Signals(broadcast::Sender<Signal>);

impl Default for Signals {
    fn default() -> Self {
        Self(broadcast::channel(4096).0)
    }
}

/// Why a command operation did not happen.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("the command store is unavailable")]
    Unavailable(#[from] StoreError),
    #[error(transparent)]
    Publish(#[from] PublishError),
}

/// Drop-off, delivery and responses.
#[derive(Clone)]
pub struct CommandService {
    store: Arc<dyn CommandStore>,
    publisher: Option<Arc<dyn CommandPublisher>>,
    signals: Option<Signals>,
}

impl CommandService {
    /// A service over the command store; it publishes to MQTT once given a publisher
    /// (the device endpoint, which only waits and takes responses, needs none).
    pub fn new(store: Arc<dyn CommandStore>) -> Self {
        Self {
            store,
            publisher: None,
            signals: None,
        }
    }

    /// Publishes dropped-off commands to MQTT subscribers through `publisher`.
    pub fn with_publisher(mut self, publisher: Arc<dyn CommandPublisher>) -> Self {
        self.publisher = Some(publisher);
        self
    }

    /// Wakes waiters of this process through `signals` instead of polling.
    pub fn with_signals(mut self, signals: Signals) -> Self {
        self.signals = Some(signals);
        self
    }

    /// Publishes the command to MQTT subscribers, then keeps it for HTTP devices. If the
    /// MQTT publish fails, nothing is kept; if keeping fails after the publish, MQTT
    /// devices may have it already (a retry may reach them twice).
    pub async fn drop_off(&self, command: &Command) -> Result<(), CommandError> {
        if let Some(publisher) = &self.publisher {
            publisher.publish(command).await?;
        }
        self.store.enqueue(command).await?;
        self.signal(Signal::Inbox {
            application: command.application.clone(),
            device: command.device.clone(),
        });
        tracing::info!(
            application = %command.application,
            device = %command.device,
            command = %command.name,
            request = %command.id,
            "command dropped off"
        );
        Ok(())
    }

    /// The next command for a device, waiting up to `timeout` for one. Commands left for
    /// an earlier device of the same name (another `uid`) are taken and dropped, never
    /// delivered.
    pub async fn wait_for_command(
        &self,
        application: &str,
        device: &crate::model::Device,
        timeout: Duration,
    ) -> Result<Option<Command>, CommandError> {
        let store = self.store.clone();
        let name = device.metadata.name.as_str();
        let matches = |signal: &Signal| matches!(signal, Signal::Inbox { application: a, device: d } if a == application && d == name);
        self.wait(timeout, matches, || {
            let store = store.clone();
            async move {
                loop {
                    match store.take_command(application, name, Utc::now()).await? {
                        Some(command) if !command.is_for(application, device) => {
                            tracing::info!(
                                application,
                                device = name,
                                request = %command.id,
                                "a command for an earlier device of the same name is dropped"
                            );
                        }
                        found => return Ok(found),
                    }
                }
            }
        })
        .await
    }

    /// A command by its request id, unless it is past taking responses.
    pub async fn command(&self, id: &str) -> Result<Option<Command>, CommandError> {
        Ok(self.store.get_command(id, Utc::now()).await?)
    }

    /// Records a response; `false` if the command had one already.
    pub async fn respond(
        &self,
        command: &Command,
        response: &CommandResponse,
    ) -> Result<bool, CommandError> {
        let recorded = self
            .store
            .record_response(response, command.responses_until())
            .await?;
        if recorded {
            self.signal(Signal::Response {
                id: response.id.clone(),
            });
        }
        Ok(recorded)
    }

    /// The response to a command, waiting up to `timeout` for it.
    pub async fn wait_for_response(
        &self,
        id: &str,
        timeout: Duration,
    ) -> Result<Option<CommandResponse>, CommandError> {
        let store = self.store.clone();
        let matches = |signal: &Signal| matches!(signal, Signal::Response { id: i } if i == id);
        self.wait(timeout, matches, || {
            let store = store.clone();
            async move { store.get_response(id, Utc::now()).await }
        })
        .await
    }

    fn signal(&self, signal: Signal) {
        if let Some(signals) = &self.signals {
            let _ = signals.0.send(signal);
        }
    }

    /// Looks with `look` until it finds something or `timeout` passes, woken by matching
    /// signals (or every [`POLL_INTERVAL`] without them).
    async fn wait<T, F, Fut>(
        &self,
        timeout: Duration,
        matches: impl Fn(&Signal) -> bool,
        look: F,
    ) -> Result<Option<T>, CommandError>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<Option<T>, StoreError>>,
    {
        let deadline = Instant::now() + timeout;
        // subscribe before looking, so nothing signalled in between is missed
        let mut wakeups = self.signals.as_ref().map(|s| s.0.subscribe());
        loop {
            if let Some(found) = look().await? {
                return Ok(Some(found));
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            match &mut wakeups {
                Some(wakeups) => loop {
                    match tokio::time::timeout_at(deadline, wakeups.recv()).await {
                        Err(_) => return Ok(None),
                        Ok(Ok(signal)) if !matches(&signal) => continue,
                        // a match, a lag (maybe missed one) or closed: look again
                        Ok(_) => break,
                    }
                },
                None => tokio::time::sleep_until((now + POLL_INTERVAL).min(deadline)).await,
            }
        }
    }
}
