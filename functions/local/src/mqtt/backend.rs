//! What the local broker decides, on the main runtime with the rest of the cloud: who may
//! connect (the same authorizer as IoT Core's), whether a publish or subscription is
//! within the client's policy, what becomes of a publish (the same ingest as the
//! `mqtt-ingest` function, or a command drop-off), and the connection events.

use super::hub::Hub;
use super::sessions::{Cursor, SessionStore};
use chrono::Utc;
use drogue_shared::commands::{CommandError, CommandService};
use drogue_shared::events::log::EventLog;
use drogue_shared::events::{self, EventSink, Publish};
use drogue_shared::model::AppName;
use drogue_shared::mqtt::topics::{self, Published};
use drogue_shared::mqtt::{
    Action, ConnectDecision, DeviceMessage, Ingested, MqttAuthError, MqttAuthorizer, MqttConnect,
    MqttIdentity, MqttIngest, Policy, Refusal, application_command,
};
use drogue_shared::rate_limit::PublishLimiter;
use drogue_shared::registry::Changes;
use drogue_shared::store::ApplicationStore;
use std::sync::Arc;
use std::time::Duration;

/// A connected, authorized client.
#[derive(Debug)]
pub struct Client {
    pub client_id: String,
    pub identity: MqttIdentity,
    /// The policy its client holds now: the CONNECT's, replaced by each recheck's
    /// (`broker::connect::recheck`), so that a client that loses access to an
    /// application can no longer publish to it or subscribe to it on a live connection.
    policy: std::sync::RwLock<Arc<Policy>>,
    /// The user whose connections it counts against: a device's application's owner,
    /// an application client's own user.
    pub owner: String,
}

impl Client {
    /// The policy the client holds now.
    pub fn policy(&self) -> Arc<Policy> {
        self.policy.read().expect("not poisoned").clone()
    }

    /// Whether the policy the client holds now allows `action` on `topic` (read in
    /// place: no reference to count on a publish's path).
    pub fn allows(&self, action: Action, topic: &str) -> bool {
        self.policy
            .read()
            .expect("not poisoned")
            .allows(action, topic)
    }

    /// Gives the client the policy a recheck decided.
    pub fn set_policy(&self, policy: Arc<Policy>) {
        *self.policy.write().expect("not poisoned") = policy;
    }

    fn describe(&self) -> String {
        match &self.identity {
            MqttIdentity::Device {
                application,
                device,
            } => format!(
                "device {}/{}",
                application.metadata.name, device.metadata.name
            ),
            MqttIdentity::Application { principal } => format!("user {}", principal.user),
        }
    }
}

/// The answer to a CONNECT.
#[derive(Debug)]
pub enum Connected {
    Allowed(Arc<Client>),
    Refused(&'static str),
}

/// What became of a publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The event is in the stream (or the command dropped off).
    Accepted,
    /// The client's policy does not allow the topic.
    NotAuthorized,
    /// The message was refused: why (not JSON though declared so, no such command, ...).
    Refused(Refusal),
    /// The stream or the store is unavailable: the message is not kept.
    Unavailable,
}

/// A message from a client: a publish or its last will.
pub struct Message<'a> {
    pub topic: &'a str,
    pub payload: &'a [u8],
    pub content_type: Option<&'a str>,
    /// Called once a device's telemetry has its place in the stream, before it is
    /// durable: the connection's next publish may go on from then.
    pub sequenced: Option<&'a (dyn Fn() + Send + Sync)>,
}

/// The broker's decisions; `Send + Sync`, cheap to clone.
#[derive(Clone)]
pub struct Backend {
    pub authorizer: MqttAuthorizer,
    pub ingest: MqttIngest,
    /// Applications, for the event log cursors of resuming subscriptions.
    pub applications: Arc<dyn ApplicationStore>,
    pub commands: CommandService,
    pub sink: Arc<dyn EventSink>,
    pub hub: Arc<Hub>,
    pub instance: String,
    /// The event log, where resuming subscriptions read.
    pub log: EventLog,
    /// The persistent sessions' saved states (kept in the event log's file).
    pub sessions: SessionStore,
    /// The publish rate limit per device, shared with the HTTP endpoint.
    pub limiter: PublishLimiter,
    /// The registry's count of writes, when every registry write in this process counts
    /// on it: while it stands still, a device's recheck has nothing new to decide
    /// (`None`: every recheck decides).
    pub registry_changes: Option<Changes>,
}

impl Backend {
    /// Decides a CONNECT (and finds whose connections it counts against). The device's
    /// connection event is emitted once its session is taken up ([`Self::announce`]).
    pub async fn connect(&self, connect: MqttConnect) -> Result<Connected, MqttAuthError> {
        match self.authorizer.connect(&connect).await? {
            ConnectDecision::Deny { reason } => {
                tracing::info!(client_id = %connect.client_id, reason, "MQTT connection refused");
                Ok(Connected::Refused(reason))
            }
            ConnectDecision::Allow(authorized) => {
                let owner = match &authorized.identity {
                    MqttIdentity::Device { application, .. } => {
                        let Ok(name) = AppName::parse(&application.metadata.name) else {
                            return Ok(Connected::Refused("unknown application"));
                        };
                        match self.applications.get_application(&name).await? {
                            Some(stored) if stored.app.metadata.uid == application.metadata.uid => {
                                stored.owner
                            }
                            // deleted (or made anew) a moment ago
                            _ => return Ok(Connected::Refused("unknown application")),
                        }
                    }
                    MqttIdentity::Application { principal } => principal.user.clone(),
                };
                let client = Arc::new(Client {
                    client_id: connect.client_id,
                    identity: authorized.identity,
                    policy: std::sync::RwLock::new(Arc::new(authorized.policy)),
                    owner,
                });
                tracing::info!(client_id = %client.client_id, who = %client.describe(), "MQTT client connected");
                Ok(Connected::Allowed(client))
            }
        }
    }

    /// A client's session is taken up: the device's connection event.
    pub async fn announce(&self, client: &Client) {
        self.connection_event(client, true).await;
    }

    /// A cursor at an application's newest event; `None` when it does not exist (or
    /// cannot be looked up now).
    pub async fn new_cursor(&self, application: &str) -> Option<Cursor> {
        let name = AppName::parse(application).ok()?;
        let stored = self.applications.get_application(&name).await.ok()??;
        let position = self.log.last_sequence(application).ok()?;
        Some(Cursor {
            application: application.to_owned(),
            uid: stored.app.metadata.uid,
            position,
        })
    }

    /// A saved cursor as it stands now: kept for the same application (and when that
    /// cannot be told now), a new one for a later application of the same name, none
    /// for an application that is gone.
    pub async fn current_cursor(&self, saved: Cursor) -> Option<Cursor> {
        let Ok(name) = AppName::parse(&saved.application) else {
            return None;
        };
        match self.applications.get_application(&name).await {
            Ok(Some(stored)) if stored.app.metadata.uid == saved.uid => Some(saved),
            Ok(Some(_)) => self.new_cursor(&saved.application).await,
            Ok(None) => None,
            Err(_) => Some(saved),
        }
    }

    /// Takes a publish on `topic` from its rate limit: a device's from the device's, an
    /// application's command from the commands of the application it is for (only a
    /// publish the client's policy allows takes one: no client drains another
    /// application's). `Err` with the time until it may publish again.
    pub fn admit(&self, client: &Client, topic: &str) -> Result<(), Duration> {
        match &client.identity {
            MqttIdentity::Device { device, .. } => self.limiter.check(&device.metadata.uid),
            MqttIdentity::Application { .. } => {
                let Some(Published::Command { app, .. }) = topics::parse(topic) else {
                    return Ok(());
                };
                if !client.allows(Action::Publish, topic) {
                    return Ok(());
                }
                match self.commands.admit(app) {
                    Err(CommandError::TooManyRequests(wait)) => Err(wait),
                    _ => Ok(()),
                }
            }
        }
    }

    /// Whether a client may subscribe to a filter. A device may also subscribe to
    /// Drogue's command inbox (`command/inbox/...`): what reaches it there is what its
    /// policy lets it receive on `cmd/...`.
    pub fn may_subscribe(&self, client: &Client, filter: &str) -> bool {
        let device = matches!(client.identity, MqttIdentity::Device { .. });
        let allowed = (device && topics::drogue::inbox(filter).is_some())
            || client.allows(Action::Subscribe, filter);
        if !allowed {
            tracing::info!(client_id = %client.client_id, filter, "MQTT subscription refused by policy");
        }
        allowed
    }

    /// Handles a publish: a device's telemetry or command answer, or an application's
    /// command. Returns once the event is in the stream.
    pub async fn publish(&self, client: &Client, message: &Message<'_>) -> Outcome {
        // a device's Drogue topic (`{channel}`, `{channel}/{device}`) is its `dt/` topic
        let translated;
        let message = match &client.identity {
            MqttIdentity::Device {
                application,
                device,
            } if topics::parse(message.topic).is_none() => {
                match topics::drogue::publish(message.topic) {
                    Some((channel, acting_for)) => {
                        translated = format!(
                            "dt/{}/{}/{channel}",
                            application.metadata.name,
                            acting_for.unwrap_or(&device.metadata.name)
                        );
                        &Message {
                            topic: &translated,
                            ..*message
                        }
                    }
                    None => message,
                }
            }
            _ => message,
        };
        if !client.allows(Action::Publish, message.topic) {
            tracing::info!(client_id = %client.client_id, topic = message.topic, "MQTT publish refused by policy");
            return Outcome::NotAuthorized;
        }
        let result = match &client.identity {
            MqttIdentity::Device { device, .. } => {
                self.ingest
                    .device_message(&DeviceMessage {
                        topic: message.topic,
                        client_id: &client.client_id,
                        payload: message.payload,
                        content_type: message.content_type,
                        received: Utc::now(),
                        sequenced: message.sequenced,
                        sender_uid: Some(&device.metadata.uid),
                    })
                    .await
            }
            // (boxed: commands are rarer than telemetry, which need not carry the room
            // for one in its future)
            MqttIdentity::Application { .. } => match self.commanded(client, message.topic).await {
                Ok(Some(uid)) => {
                    Box::pin(application_command(
                        &self.commands,
                        message.topic,
                        uid.as_deref(),
                        message.payload,
                        message.content_type,
                    ))
                    .await
                }
                Ok(None) => {
                    tracing::info!(client_id = %client.client_id, topic = message.topic, "MQTT command refused: its application was made anew since the client's access was decided");
                    return Outcome::NotAuthorized;
                }
                Err(e) => Err(e.into()),
            },
        };
        match result {
            Ok(Ingested::Accepted) => Outcome::Accepted,
            Ok(Ingested::Refused(reason)) => {
                tracing::info!(client_id = %client.client_id, topic = message.topic, %reason, "MQTT publish refused");
                Outcome::Refused(reason)
            }
            Err(e) => {
                tracing::warn!(client_id = %client.client_id, topic = message.topic, error = %e, "MQTT publish not kept");
                Outcome::Unavailable
            }
        }
    }

    /// The `uid` of the application an application client's command on `topic` is for
    /// (when there is no such application now, the one the client's policy was decided
    /// for, which an application made in the meantime does not have: the drop-off
    /// refuses it), or `None` when the client's policy was decided for another
    /// application of that name (made anew since; the next recheck gives the client the
    /// policy it holds now).
    async fn commanded(
        &self,
        client: &Client,
        topic: &str,
    ) -> Result<Option<Option<String>>, drogue_shared::store::StoreError> {
        let Some(Published::Command { app, .. }) = topics::parse(topic) else {
            return Ok(Some(None));
        };
        let Ok(name) = AppName::parse(app) else {
            return Ok(Some(None));
        };
        let uid = self
            .applications
            .get_application(&name)
            .await?
            .map(|stored| stored.app.metadata.uid);
        match uid {
            Some(uid) if !client.policy().admits_application(app, Some(&uid)) => Ok(None),
            Some(uid) => Ok(Some(Some(uid))),
            None => Ok(Some(
                client.policy().application_uid(app).map(str::to_owned),
            )),
        }
    }

    /// A connection ended: its last will, if it did not disconnect cleanly, is published
    /// like any message, then the device's connection event.
    pub async fn disconnected(&self, client: Arc<Client>, will: Option<Will>) {
        if let Some(will) = will {
            let outcome = self
                .publish(
                    &client,
                    &Message {
                        topic: &will.topic,
                        payload: &will.payload,
                        content_type: will.content_type.as_deref(),
                        sequenced: None,
                    },
                )
                .await;
            tracing::info!(client_id = %client.client_id, topic = %will.topic, ?outcome, "last will published");
        }
        self.connection_event(&client, false).await;
        tracing::info!(client_id = %client.client_id, "MQTT client disconnected");
    }

    async fn connection_event(&self, client: &Client, connected: bool) {
        let MqttIdentity::Device {
            application,
            device,
        } = &client.identity
        else {
            return;
        };
        let event = events::connection(
            &Publish {
                application,
                device,
                sender: device,
                channel: "connection",
                suffix: None,
                content_type: None,
                data_schema: None,
                instance: &self.instance,
                received: Utc::now(),
            },
            connected,
        );
        if let Err(e) = self.sink.publish_structured(event).await {
            tracing::warn!(client_id = %client.client_id, connected, error = %e, "a connection event was not kept");
        }
    }
}

/// A client's last will.
#[derive(Debug, Clone)]
pub struct Will {
    pub topic: String,
    pub payload: Vec<u8>,
    pub content_type: Option<String>,
}
