//! What devices publish over MQTT, turned into events exactly as over HTTP: telemetry on
//! `dt/{app}/{device}/{channel}` and answers to commands on
//! `cmd/{app}/{device}/{command}/res/{request}/{status}`. The client id (`{device}@{app}`)
//! names the sender; a topic of another device means the sender acts as its gateway,
//! which is checked as for HTTP's `as`.
//!
//! On AWS, IoT rules hand messages to the `mqtt-ingest` function; the local broker calls
//! this in-process, and acknowledges a QoS 1 publish only once the event is accepted.

use super::topics::{self, Published};
use crate::commands::{CommandError, CommandResponse, CommandService};
use crate::device_auth::{DeviceAuthentication, DeviceAuthenticator};
use crate::events::{self, EventSink, Publish, SinkError};
use crate::store::StoreError;
use chrono::{DateTime, Utc};
use std::sync::Arc;

/// A message a device published.
#[derive(Debug, Clone)]
pub struct DeviceMessage<'a> {
    pub topic: &'a str,
    pub client_id: &'a str,
    pub payload: &'a [u8],
    pub content_type: Option<&'a str>,
    pub received: DateTime<Utc>,
}

/// What became of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ingested {
    /// The event is in the stream.
    Accepted,
    /// The message was refused (and dropped); why.
    Refused(&'static str),
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
            return Ok(Ingested::Refused(
                "the client id is not <device>@<application>",
            ));
        };
        let Some(published) = topics::parse(message.topic) else {
            return Ok(Ingested::Refused("not a device topic"));
        };
        let (app, device) = match &published {
            Published::Telemetry { app, device, .. }
            | Published::CommandResponse { app, device, .. } => (*app, *device),
            Published::Command { .. } => {
                return Ok(Ingested::Refused("devices do not publish commands"));
            }
        };
        if app != sender_app {
            return Ok(Ingested::Refused("a topic of another application"));
        }
        let authenticated = match self.devices.resolve(app, sender, Some(device)).await? {
            DeviceAuthentication::Allow(a) => a,
            DeviceAuthentication::Deny { reason } => return Ok(Ingested::Refused(reason)),
        };
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
                    return Ok(Ingested::Refused(
                        "the payload is declared as JSON but is not",
                    ));
                };
                self.sink.publish(&event).await?;
                Ok(Ingested::Accepted)
            }
            Published::CommandResponse {
                request, status, ..
            } => {
                let Some(status) = status
                    .parse::<u16>()
                    .ok()
                    .filter(|s| (100..=599).contains(s))
                else {
                    return Ok(Ingested::Refused("the status is not 100-599"));
                };
                let command = self.commands.command(request).await?;
                let Some(command) = command.filter(|c| c.is_for(app, &authenticated.device)) else {
                    return Ok(Ingested::Refused("no such command for the device"));
                };
                let Ok(event) = events::command_response(
                    &publish(&command.name, None),
                    request,
                    status,
                    message.payload,
                ) else {
                    return Ok(Ingested::Refused(
                        "the payload is declared as JSON but is not",
                    ));
                };
                let response = CommandResponse {
                    id: request.to_owned(),
                    status,
                    responder: authenticated.sender.metadata.name.clone(),
                    content_type: message.content_type.map(str::to_owned),
                    payload: message.payload.to_vec(),
                    received: message.received,
                };
                if !self.commands.respond(&command, &response).await? {
                    return Ok(Ingested::Refused("the command was answered already"));
                }
                self.sink.publish(&event).await?;
                Ok(Ingested::Accepted)
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
            return Ok(Ingested::Refused("the client is no device"));
        };
        let authenticated = match self.devices.resolve(app, sender, None).await? {
            DeviceAuthentication::Allow(a) => a,
            DeviceAuthentication::Deny { reason } => return Ok(Ingested::Refused(reason)),
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
        self.sink.publish(&event).await?;
        Ok(Ingested::Accepted)
    }
}

/// A command an application published on `command/{app}/{device}/{command}`: dropped
/// off like one from the API (the client's policy allowed publishing it only for
/// applications it may read).
pub async fn application_command(
    store: &dyn crate::store::Store,
    commands: &CommandService,
    topic: &str,
    payload: &[u8],
    content_type: Option<&str>,
    now: DateTime<Utc>,
) -> Result<Ingested, IngestError> {
    let Some(Published::Command {
        app,
        device,
        command,
    }) = topics::parse(topic)
    else {
        return Ok(Ingested::Refused("not a command topic"));
    };
    let (Ok(app_name), Ok(device_name)) = (
        crate::model::AppName::parse(app),
        crate::model::DeviceName::parse(device),
    ) else {
        return Ok(Ingested::Refused("no such device"));
    };
    let Some(target) = store.get_device(&app_name, &device_name).await? else {
        return Ok(Ingested::Refused("no such device"));
    };
    let disabled = target
        .spec
        .get("core")
        .and_then(|c| c.get("disabled"))
        .and_then(|d| d.as_bool())
        == Some(true);
    if disabled || target.is_deleting() {
        return Ok(Ingested::Refused("the device does not take commands"));
    }
    if payload.len() > crate::commands::MAX_PAYLOAD {
        return Ok(Ingested::Refused("the payload is too large"));
    }
    let command = crate::commands::Command::new(
        app,
        &target,
        command,
        content_type.map(str::to_owned),
        payload.to_vec(),
        crate::commands::DEFAULT_TTL_SECONDS,
        now,
    );
    commands.drop_off(&command).await?;
    Ok(Ingested::Accepted)
}
