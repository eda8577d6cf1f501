//! What devices publish over MQTT, turned into events exactly as over HTTP: telemetry on
//! `dt/{app}/{device}/{channel}` and answers to commands on
//! `cmd/{app}/{device}/{command}/res/{request}/{status}`. The client id (`{device}@{app}`)
//! names the sender; a topic of another device means the sender acts as its gateway,
//! which is checked as for HTTP's `as`.
//!
//! On AWS, IoT rules hand messages to the `mqtt-ingest` function; the local broker calls
//! this in-process, and acknowledges a QoS 1 publish only once the event is accepted.

use super::topics::{self, Published};
use crate::commands::{Answer, CommandError, CommandService, DEFAULT_TTL_SECONDS, DropOff};
use crate::device_auth::{DeviceAuthentication, DeviceAuthenticator};
use crate::events::{self, EventSink, Publish, SinkError};
use crate::store::StoreError;
use chrono::{DateTime, Utc};
use std::sync::Arc;

/// A message a device published.
#[derive(Clone)]
pub struct DeviceMessage<'a> {
    pub topic: &'a str,
    pub client_id: &'a str,
    pub payload: &'a [u8],
    pub content_type: Option<&'a str>,
    pub received: DateTime<Utc>,
    /// Called once a telemetry event's place in the stream is fixed, before it is
    /// durable (see [`EventSink::publish_in_order`]): a broker that keeps a connection's
    /// publishes in order may handle the next one from then on.
    pub sequenced: Option<&'a (dyn Fn() + Send + Sync)>,
    /// The `uid` of the device its connection authenticated as, when the broker knows
    /// it: a message of a connection whose device has since been deleted and made anew
    /// under the same names (by its owner or, with its application, by a stranger) is
    /// refused, not taken as the new device's.
    pub sender_uid: Option<&'a str>,
}

/// What became of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ingested {
    /// The event is in the stream.
    Accepted,
    /// The message was refused (and dropped); why.
    Refused(Refusal),
}

/// Why a message was refused: its kind (which the broker maps to an MQTT 5 reason
/// code) and a reason for logs and the reason string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The payload is not what its content type says (MQTT 5: payload format invalid).
    PayloadFormat(&'static str),
    /// Any other refusal (MQTT 5: implementation specific error).
    Other(&'static str),
}

impl Refusal {
    pub fn reason(&self) -> &'static str {
        match self {
            Self::PayloadFormat(reason) | Self::Other(reason) => reason,
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.reason())
    }
}

impl serde::Serialize for Refusal {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.reason())
    }
}

fn refused(reason: &'static str) -> Ingested {
    Ingested::Refused(Refusal::Other(reason))
}

/// A command use-case's error as what becomes of the message: its refusals by variant,
/// and an error (retry) when nothing could be decided.
fn command_outcome(error: CommandError) -> Result<Ingested, IngestError> {
    Ok(Ingested::Refused(match error {
        CommandError::InvalidName => Refusal::Other("the command name is not allowed"),
        CommandError::InvalidTtl => Refusal::Other("the time to live is not allowed"),
        CommandError::PayloadTooLarge(_) => Refusal::Other("the payload is too large"),
        CommandError::NoSuchDevice(_) => Refusal::Other("no such device"),
        CommandError::NotTakingCommands(_) => Refusal::Other("the device does not take commands"),
        CommandError::InvalidStatus => Refusal::Other("the status is not 100-599"),
        CommandError::NoSuchCommand(_) => Refusal::Other("no such command for the device"),
        CommandError::AlreadyAnswered(_) => Refusal::Other("the command was answered already"),
        CommandError::TooManyRequests(_) => Refusal::Other("command rate too high"),
        CommandError::External(_) => {
            Refusal::Other("the device's external command endpoint did not take it")
        }
        CommandError::InvalidPayload(_) => {
            Refusal::PayloadFormat("the payload is declared as JSON but is not")
        }
        e @ (CommandError::Unavailable(_) | CommandError::Publish(_)) => {
            return Err(IngestError::Commands(e));
        }
        CommandError::Events(e) => return Err(IngestError::Sink(e)),
    }))
}

/// Nothing could be decided or kept: the message must be retried.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("the registry is unavailable")]
    Store(#[from] StoreError),
    #[error("the event stream is unavailable")]
    Sink(#[from] SinkError),
    #[error("the command store is unavailable")]
    Commands(#[from] CommandError),
}

/// Turns device messages into events.
#[derive(Clone)]
pub struct MqttIngest {
    devices: DeviceAuthenticator,
    sink: Arc<dyn EventSink>,
    commands: CommandService,
    instance: String,
}

impl MqttIngest {
    pub fn new(
        devices: DeviceAuthenticator,
        sink: Arc<dyn EventSink>,
        commands: CommandService,
        instance: impl Into<String>,
    ) -> Self {
        Self {
            devices,
            sink,
            commands,
            instance: instance.into(),
        }
    }

    pub async fn device_message(
        &self,
        message: &DeviceMessage<'_>,
    ) -> Result<Ingested, IngestError> {
        let Some((sender, sender_app)) = message.client_id.rsplit_once('@') else {
            return Ok(refused("the client id is not <device>@<application>"));
        };
        let Some(published) = topics::parse(message.topic) else {
            return Ok(refused("not a device topic"));
        };
        let (app, device) = match &published {
            Published::Telemetry { app, device, .. }
            | Published::CommandResponse { app, device, .. } => (*app, *device),
            Published::Command { .. } => {
                return Ok(refused("devices do not publish commands"));
            }
        };
        if app != sender_app {
            return Ok(refused("a topic of another application"));
        }
        let authenticated = match self.devices.resolve(app, sender, Some(device)).await? {
            DeviceAuthentication::Allow(a) => a,
            DeviceAuthentication::Deny { reason } => return Ok(refused(reason)),
        };
        if message
            .sender_uid
            .is_some_and(|uid| uid != authenticated.sender.metadata.uid)
        {
            return Ok(refused(
                "the device connected is no longer: it was deleted, and its names are another's",
            ));
        }
        let publish = |channel, suffix| Publish {
            application: &authenticated.application,
            device: &authenticated.device,
            sender: &authenticated.sender,
            channel,
            suffix,
            content_type: message.content_type,
            data_schema: None,
            instance: &self.instance,
            received: message.received,
        };
        match published {
            Published::Telemetry {
                channel, suffix, ..
            } => {
                let Ok(event) = events::telemetry(&publish(channel, suffix), message.payload)
                else {
                    return Ok(Ingested::Refused(Refusal::PayloadFormat(
                        "the payload is declared as JSON but is not",
                    )));
                };
                let sequenced = message.sequenced.unwrap_or(&|| {});
                self.sink.publish_in_order(event, sequenced).await?;
                Ok(Ingested::Accepted)
            }
            Published::CommandResponse {
                request, status, ..
            } => {
                let answered = match crate::commands::response_status(status) {
                    Ok(status) => {
                        let answer = Answer {
                            by: &authenticated,
                            request,
                            status,
                            content_type: message.content_type,
                            payload: message.payload,
                            instance: &self.instance,
                            received: message.received,
                        };
                        // (boxed: answers are rarer than telemetry, which need not carry
                        // the room for one in its future)
                        Box::pin(self.commands.answer(answer, self.sink.as_ref())).await
                    }
                    Err(e) => Err(e),
                };
                match answered {
                    Ok(_) => Ok(Ingested::Accepted),
                    Err(e) => command_outcome(e),
                }
            }
            Published::Command { .. } => unreachable!("refused above"),
        }
    }
}

impl MqttIngest {
    /// A client connected or disconnected (IoT Core's lifecycle events): the device's
    /// `io.drogue.connection.v1` event. Clients that are no device (applications) have
    /// none.
    pub async fn connection(
        &self,
        client_id: &str,
        connected: bool,
        at: DateTime<Utc>,
    ) -> Result<Ingested, IngestError> {
        let Some((sender, app)) = client_id.rsplit_once('@') else {
            return Ok(refused("the client is no device"));
        };
        let authenticated = match self.devices.resolve(app, sender, None).await? {
            DeviceAuthentication::Allow(a) => a,
            DeviceAuthentication::Deny { reason } => return Ok(refused(reason)),
        };
        let event = events::connection(
            &Publish {
                application: &authenticated.application,
                device: &authenticated.sender,
                sender: &authenticated.sender,
                channel: "connection",
                suffix: None,
                content_type: None,
                data_schema: None,
                instance: &self.instance,
                received: at,
            },
            connected,
        );
        self.sink.publish_structured(event).await?;
        Ok(Ingested::Accepted)
    }
}

/// A command an application published on `command/{app}/{device}/{command}`: dropped
/// off like one from the API (the client's policy allowed publishing it only for
/// applications it may read; `application_uid` is the application's it was decided for,
/// if known), with the default time to live.
pub async fn application_command(
    commands: &CommandService,
    topic: &str,
    application_uid: Option<&str>,
    payload: &[u8],
    content_type: Option<&str>,
) -> Result<Ingested, IngestError> {
    let Some(Published::Command {
        app,
        device,
        command,
    }) = topics::parse(topic)
    else {
        return Ok(refused("not a command topic"));
    };
    let dropped = commands
        .submit(DropOff {
            application: app,
            application_uid,
            device,
            name: command,
            content_type: content_type.map(str::to_owned),
            payload: payload.to_vec(),
            ttl_seconds: DEFAULT_TTL_SECONDS,
        })
        .await;
    match dropped {
        Ok(_) => Ok(Ingested::Accepted),
        Err(e) => command_outcome(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::embedded::EmbeddedStore;
    use crate::store::{ApplicationStore, CommandStore, DeviceStore, StoredApplication};
    use serde_json::json;

    fn resource(
        name: &str,
        application: Option<&str>,
        spec: serde_json::Value,
    ) -> crate::model::Resource {
        serde_json::from_value(json!({
            "metadata": {"name": name, "application": application, "uid": format!("uid-of-{name}"),
                         "creationTimestamp": Utc::now(), "generation": 1, "resourceVersion": "1"},
            "spec": spec,
        }))
        .unwrap()
    }

    /// An application's MQTT command goes through the command service's rules; its
    /// refusals are typed, and the store failing is an error, not a refusal.
    #[tokio::test]
    async fn application_commands_follow_the_command_rules() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(EmbeddedStore::open(dir.path().join("db")).unwrap());
        store
            .create_application(&StoredApplication {
                app: resource("app1", None, json!({})),
                owner: "alice".into(),
                members: Default::default(),
                transfer_owner: None,
            })
            .await
            .unwrap();
        let app = crate::model::AppName::parse("app1").unwrap();
        for (name, spec) in [
            ("d1", json!({})),
            ("off", json!({"core": {"disabled": true}})),
        ] {
            store
                .create_device(&app, &resource(name, Some("app1"), spec))
                .await
                .unwrap();
        }
        let commands = CommandService::new(store.clone());
        let outcome = |topic: &'static str| {
            let commands = commands.clone();
            async move {
                application_command(&commands, topic, None, b"1", None)
                    .await
                    .unwrap()
            }
        };
        let refused = |reason| Ingested::Refused(Refusal::Other(reason));
        assert_eq!(outcome("command/app1/d1/reboot").await, Ingested::Accepted);
        assert_eq!(
            outcome("command/app1/d1/a+b").await,
            refused("the command name is not allowed")
        );
        assert_eq!(
            outcome("command/app1/d1/#").await,
            refused("the command name is not allowed")
        );
        assert_eq!(
            outcome("command/app1/off/reboot").await,
            refused("the device does not take commands")
        );
        assert_eq!(
            outcome("command/app1/nobody/x").await,
            refused("no such device")
        );
        assert_eq!(
            outcome("command/app1/d1/a/b").await,
            refused("not a command topic")
        );
        let taken = store.take_command("app1", "d1", Utc::now()).await.unwrap();
        assert_eq!(taken.map(|c| c.name), Some("reboot".to_owned()));
        assert!(
            store
                .take_command("app1", "d1", Utc::now())
                .await
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn answers_not_as_declared_are_payload_format_refusals() {
        let not_json = crate::events::command_response(
            &Publish {
                application: &resource("app1", None, json!({})),
                device: &resource("d1", Some("app1"), json!({})),
                sender: &resource("d1", Some("app1"), json!({})),
                channel: "x",
                suffix: None,
                content_type: Some("application/json"),
                data_schema: None,
                instance: "drogue",
                received: Utc::now(),
            },
            "r",
            200,
            b"{",
        )
        .unwrap_err();
        assert_eq!(
            command_outcome(CommandError::InvalidPayload(not_json)).unwrap(),
            Ingested::Refused(Refusal::PayloadFormat(
                "the payload is declared as JSON but is not"
            ))
        );
        let unavailable =
            CommandError::Unavailable(StoreError::unavailable(std::io::Error::other("down")));
        assert!(matches!(
            command_outcome(unavailable),
            Err(IngestError::Commands(_))
        ));
    }
}
