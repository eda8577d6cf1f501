//! Commands to MQTT devices: published on `cmd/{app}/{device}/{command}`, through the IoT
//! data plane on AWS and through the local broker's bus in `drogue-local`. Devices
//! subscribe to their own topic; gateways to the topics of the devices they serve.

use super::Command;
use crate::aws::Lazy;
use async_trait::async_trait;
use aws_sdk_iotdataplane::primitives::Blob;
use tokio::sync::broadcast;

/// The MQTT topic a command is published on.
pub fn topic(command: &Command) -> String {
    format!(
        "cmd/{}/{}/{}",
        command.application, command.device, command.name
    )
}

/// Why a command could not be published.
#[derive(Debug, thiserror::Error)]
#[error("the command could not be published to MQTT")]
pub struct PublishError(#[source] Box<dyn std::error::Error + Send + Sync>);

/// Publishes commands to MQTT subscribers.
#[async_trait]
pub trait CommandPublisher: Send + Sync {
    async fn publish(&self, command: &Command) -> Result<(), PublishError>;
}

/// AWS IoT Core, through the data plane's `Publish` (QoS 1; MQTT 5 properties carry the
/// content type and the request id as correlation data).
#[derive(Clone, Debug)]
pub struct IotDataPublisher {
    client: Lazy<aws_sdk_iotdataplane::Client>,
}

impl IotDataPublisher {
    /// Publishes through `client` (a client, or one built on first use).
    pub fn new(client: impl Into<Lazy<aws_sdk_iotdataplane::Client>>) -> Self {
        Self {
            client: client.into(),
        }
    }
}

/// An IoT data plane client from the shared AWS configuration (its home is
/// [`crate::aws`]).
pub use crate::aws::iot_data_client;

#[async_trait]
impl CommandPublisher for IotDataPublisher {
    async fn publish(&self, command: &Command) -> Result<(), PublishError> {
        let mut request = self
            .client
            .publish()
            .topic(topic(command))
            .qos(1)
            .payload(Blob::new(command.payload.clone()))
            .correlation_data(base64_encode(command.id.as_bytes()));
        if let Some(content_type) = &command.content_type {
            request = request.content_type(content_type);
        }
        request
            .send()
            .await
            .map_err(|e| PublishError(Box::new(e)))?;
        Ok(())
    }
}

fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A command as published on the local bus.
#[derive(Debug, Clone)]
pub struct PublishedCommand {
    pub topic: String,
    pub command: Command,
}

/// The local broker's side of command delivery: commands published here reach the
/// broker's subscribers (and anyone else listening, such as tests).
#[derive(Clone)]
pub struct LocalCommandBus {
    sender: broadcast::Sender<PublishedCommand>,
}

impl Default for LocalCommandBus {
    fn default() -> Self {
        Self {
            sender: broadcast::channel(1024).0,
        }
    }
}

impl LocalCommandBus {
    pub fn subscribe(&self) -> broadcast::Receiver<PublishedCommand> {
        self.sender.subscribe()
    }
}

#[async_trait]
impl CommandPublisher for LocalCommandBus {
    async fn publish(&self, command: &Command) -> Result<(), PublishError> {
        // nobody listening is no error: MQTT has no subscriber to reach then
        let _ = self.sender.send(PublishedCommand {
            topic: topic(command),
            command: command.clone(),
        });
        Ok(())
    }
}
