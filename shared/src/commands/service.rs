//! The command use-cases, for every entry point: a drop-off (from the command API or an
//! application's MQTT publish), delivery to a waiting device, and a device's answer
//! (over HTTP or MQTT). The HTTP handlers and the MQTT ingest only translate their input
//! into these calls and [`CommandError`] into statuses or MQTT outcomes.
//!
//! Waiters look into the store; in one process ([`Signals`]) a drop-off or a response
//! wakes them at once, elsewhere they look again every 250 ms.

use super::external::{self, ExternalEndpoint, ExternalError, ExternalSender};
use super::rules::{check_name, check_ttl, takes_commands, valid_status};
use super::{Command, CommandPublisher, CommandResponse, MAX_PAYLOAD, publisher::PublishError};
use crate::device_auth::Authenticated;
use crate::events::{self, EventSink, InvalidJson, Publish, SinkError};
use crate::model::{AppName, Device, DeviceName, device_spec};
use crate::rate_limit::{PublishLimiter, RateLimit};
use crate::store::{ApplicationStore, CommandStore, DeviceStore, Store, StoreError};
use chrono::{DateTime, Utc};
use std::sync::{Arc, LazyLock};
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

/// Why a command operation did not happen. Entry points map the variants (never the
/// text) to HTTP statuses and MQTT outcomes.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The name breaks [`check_name`](super::check_name).
    #[error("command names must not be empty nor contain '/', '+' or '#'")]
    InvalidName,
    /// The time to live breaks [`check_ttl`](super::check_ttl).
    #[error("ttl must be 1 to {} seconds", super::MAX_TTL_SECONDS)]
    InvalidTtl,
    /// The payload is larger than [`MAX_PAYLOAD`].
    #[error("the payload is larger than {0} bytes")]
    PayloadTooLarge(usize),
    /// The target device does not exist (or its name cannot be one).
    #[error("the device '{0}' does not exist")]
    NoSuchDevice(String),
    /// The target device is disabled or being deleted.
    #[error("the device '{0}' does not take commands")]
    NotTakingCommands(String),
    /// An answer's status is not 100-599.
    #[error("the status must be 100 to 599")]
    InvalidStatus,
    /// No command with this request id takes answers from this device.
    #[error("no command with request id {0} for this device")]
    NoSuchCommand(String),
    /// The command has its answer already.
    #[error("the command {0} was answered already")]
    AlreadyAnswered(String),
    /// An answer's payload is not what its content type says.
    #[error(transparent)]
    InvalidPayload(#[from] InvalidJson),
    #[error("the command store is unavailable")]
    Unavailable(#[from] StoreError),
    #[error(transparent)]
    Publish(#[from] PublishError),
    #[error("the event stream is unavailable")]
    Events(#[from] SinkError),
    /// The application drops off commands faster than its rate limit: the time until it
    /// may again.
    #[error("the application sends commands too fast: retry after {} ms", .0.as_millis().max(1))]
    TooManyRequests(Duration),
    /// The device's external command endpoint did not take it.
    #[error(transparent)]
    External(#[from] ExternalError),
}

/// The storage ports the service uses: devices (to check a drop-off's target) and
/// commands.
#[derive(Clone)]
pub struct CommandPorts {
    pub applications: Arc<dyn ApplicationStore>,
    pub devices: Arc<dyn DeviceStore>,
    pub commands: Arc<dyn CommandStore>,
}

impl From<Arc<dyn Store>> for CommandPorts {
    fn from(store: Arc<dyn Store>) -> Self {
        Self {
            applications: store.clone(),
            devices: store.clone(),
            commands: store,
        }
    }
}

impl<S: ApplicationStore + DeviceStore + CommandStore + 'static> From<Arc<S>> for CommandPorts {
    fn from(store: Arc<S>) -> Self {
        Self {
            applications: store.clone(),
            devices: store.clone(),
            commands: store,
        }
    }
}

/// A command to drop off, as an entry point read it. Whoever calls has checked the
/// caller may send commands to `application` (read access, or an MQTT policy that
/// allows the topic).
#[derive(Debug, Clone)]
pub struct DropOff<'a> {
    pub application: &'a str,
    /// The `uid` of the application the sender was authorized for, if known: the
    /// command carries it (see [`Command::application_uid`]), and is refused as for an
    /// unknown device when the application is another one by the time its device is
    /// read (deleted and made anew in between).
    pub application_uid: Option<&'a str>,
    pub device: &'a str,
    pub name: &'a str,
    pub content_type: Option<String>,
    pub payload: Vec<u8>,
    pub ttl_seconds: u64,
}

/// A device's answer to a command, as an entry point read it.
#[derive(Debug, Clone)]
pub struct Answer<'a> {
    /// Who answers: the device the answer is for and its sender (itself or a gateway).
    pub by: &'a Authenticated,
    /// The request id of the command.
    pub request: &'a str,
    pub status: u16,
    pub content_type: Option<&'a str>,
    pub payload: &'a [u8],
    /// The `instance` of the response event.
    pub instance: &'a str,
    pub received: DateTime<Utc>,
}

/// Drop-off, delivery and responses.
#[derive(Clone)]
pub struct CommandService {
    applications: Arc<dyn ApplicationStore>,
    devices: Arc<dyn DeviceStore>,
    store: Arc<dyn CommandStore>,
    publisher: Option<Arc<dyn CommandPublisher>>,
    signals: Option<Signals>,
    limiter: Option<PublishLimiter>,
    external: Option<ExternalSender>,
}

impl CommandService {
    /// A service over the device and command ports (a whole store gives both); it
    /// publishes to MQTT once given a publisher (the device endpoint, which only waits
    /// and takes responses, needs none).
    pub fn new(ports: impl Into<CommandPorts>) -> Self {
        let ports = ports.into();
        Self {
            applications: ports.applications,
            devices: ports.devices,
            store: ports.commands,
            publisher: None,
            signals: None,
            limiter: None,
            external: None,
        }
    }

    /// Sends commands for devices behind an external system through `sender` (by default
    /// one that refuses loopback and private addresses, see [`super::external`]).
    pub fn with_external_sender(mut self, sender: ExternalSender) -> Self {
        self.external = Some(sender);
        self
    }

    /// Limits how fast each application drops off commands (see [`Self::admit`]); the
    /// buckets are this process's, shared by the service's clones.
    pub fn with_rate_limit(mut self, limit: RateLimit) -> Self {
        self.limiter = limit.enabled().then(|| PublishLimiter::new(limit));
        self
    }

    /// Takes one command of `application` from its rate limit, before its drop-off (the
    /// command API refuses one over it with 429, the local broker with PUBACK 0x97 or by
    /// making an MQTT 3.1.1 or QoS 0 publisher wait).
    pub fn admit(&self, application: &str) -> Result<(), CommandError> {
        match &self.limiter {
            Some(limiter) => limiter
                .check(application)
                .map_err(CommandError::TooManyRequests),
            None => Ok(()),
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

    /// The drop-off use-case, for the command API and for applications publishing on
    /// `command/{app}/{device}/{command}`: checks the name, the time to live, the
    /// payload's size and that the device exists and takes commands, then
    /// [delivers](Self::drop_off) the command.
    pub async fn submit(&self, request: DropOff<'_>) -> Result<Command, CommandError> {
        check_name(request.name)?;
        check_ttl(request.ttl_seconds)?;
        if request.payload.len() > MAX_PAYLOAD {
            return Err(CommandError::PayloadTooLarge(MAX_PAYLOAD));
        }
        let no_such_device = || CommandError::NoSuchDevice(request.device.to_owned());
        let (Ok(app), Ok(name)) = (
            AppName::parse(request.application),
            DeviceName::parse(request.device),
        ) else {
            return Err(no_such_device());
        };
        let device = self
            .devices
            .get_device(&app, &name)
            .await?
            .ok_or_else(no_such_device)?;
        let takes = takes_commands(&device);
        let external = match takes {
            true => self.external_endpoint(&app, &device).await,
            false => Ok(None),
        };
        // the application the sender was authorized for, read again after the device and
        // its gateways: still that one (a uid is never used again), it stood when they
        // were read, so they are its own, not ones of their names that a stranger made in
        // an application made anew in between (every read strongly consistent); until
        // then, nothing of what was read is told (a stranger's disabled device, its
        // endpoint's faults)
        if let Some(uid) = request.application_uid {
            let current = self.applications.get_application(&app).await?;
            if current.is_none_or(|current| current.app.metadata.uid != uid) {
                return Err(no_such_device());
            }
        }
        if !takes {
            return Err(CommandError::NotTakingCommands(request.device.to_owned()));
        }
        let external = external?;
        let mut command = Command::new(
            app.as_str(),
            &device,
            request.name,
            request.content_type,
            request.payload,
            request.ttl_seconds,
            Utc::now(),
        );
        command.application_uid = request.application_uid.unwrap_or_default().to_owned();
        match external {
            Some(endpoint) => {
                static CLOUD: LazyLock<ExternalSender> = LazyLock::new(ExternalSender::default);
                let sender = self.external.as_ref().unwrap_or(&CLOUD);
                sender.send(&endpoint, &command).await?;
                tracing::info!(
                    application = %command.application,
                    device = %command.device,
                    command = %command.name,
                    request = %command.id,
                    "command sent to the device's external endpoint"
                );
            }
            None => self.drop_off(&command).await?,
        }
        Ok(command)
    }

    /// The external endpoint that takes a device's commands: its own `spec.commands`, else
    /// that of the first enabled gateway serving it that has one (as Drogue Cloud).
    async fn external_endpoint(
        &self,
        app: &AppName,
        device: &Device,
    ) -> Result<Option<ExternalEndpoint>, CommandError> {
        let invalid = |e: String| CommandError::External(ExternalError::Invalid(e));
        if let Some(endpoint) = external::endpoint_of(device).map_err(invalid)? {
            return Ok(Some(endpoint));
        }
        for gateway in device_spec::gateways(&device.spec).unwrap_or_default() {
            let Ok(name) = DeviceName::parse(&gateway) else {
                continue;
            };
            let Some(gateway) = self.devices.get_device(app, &name).await? else {
                continue;
            };
            if !takes_commands(&gateway) {
                continue;
            }
            if let Some(endpoint) = external::endpoint_of(&gateway).map_err(invalid)? {
                return Ok(Some(endpoint));
            }
        }
        Ok(None)
    }

    /// Publishes the command to MQTT subscribers, then keeps it for HTTP devices. If the
    /// MQTT publish fails, nothing is kept; if keeping fails after the publish, MQTT
    /// devices may have it already (a retry may reach them twice).
    pub async fn drop_off(&self, command: &Command) -> Result<(), CommandError> {
        // stored first: a device that gets it over MQTT may answer at once, and an
        // answer is taken only for a command that is stored
        self.store.enqueue(command).await?;
        self.signal(Signal::Inbox {
            application: command.application.clone(),
            device: command.device.clone(),
        });
        if let Some(publisher) = &self.publisher {
            publisher.publish(command).await?;
        }
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

    /// The answer use-case, over HTTP and MQTT: the status must be 100-599, the command
    /// must be for the answering device ([`Command::is_for`]: its own, or one its
    /// gateway serves), the payload as its content type says, and the command not
    /// answered yet. The answer is recorded (waking a waiting drop-off), then its
    /// `io.drogue.command.response.v1` event goes to `events`. Returns the command.
    pub async fn answer(
        &self,
        answer: Answer<'_>,
        events: &dyn EventSink,
    ) -> Result<Command, CommandError> {
        if !valid_status(answer.status) {
            return Err(CommandError::InvalidStatus);
        }
        let by = answer.by;
        let command = self
            .command(answer.request)
            .await?
            .filter(|c| c.is_for(&by.application.metadata.name, &by.device))
            .ok_or_else(|| CommandError::NoSuchCommand(answer.request.to_owned()))?;
        let event = events::command_response(
            &Publish {
                application: &by.application,
                device: &by.device,
                sender: &by.sender,
                channel: &command.name,
                suffix: None,
                content_type: answer.content_type,
                data_schema: None,
                instance: answer.instance,
                received: answer.received,
            },
            answer.request,
            answer.status,
            answer.payload,
        )?;
        let response = CommandResponse {
            id: answer.request.to_owned(),
            status: answer.status,
            responder: by.sender.metadata.name.clone(),
            content_type: answer.content_type.map(str::to_owned),
            payload: answer.payload.to_vec(),
            received: answer.received,
        };
        if !self.respond(&command, &response).await? {
            return Err(CommandError::AlreadyAnswered(answer.request.to_owned()));
        }
        events.publish_structured(event).await?;
        Ok(command)
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

#[cfg(test)]
#[path = "service_tests.rs"]
mod tests;
