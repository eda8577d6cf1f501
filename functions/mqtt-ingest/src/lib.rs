//! IoT rules hand device messages to this function, as the JSON their SQL selects:
//!
//! ([`RuleMessage`]):
//!
//! ```sql
//! SELECT encode(*, 'base64') AS payload, topic() AS topic, clientid() AS clientId,
//!        get_mqtt_property('content_type') AS contentType, timestamp() AS timestamp
//! FROM 'dt/#'
//! ```
//!
//! (and the same `FROM 'cmd/+/+/+/res/#'` for answers to commands), and IoT Core's
//! lifecycle events as they are (`SELECT * FROM '$aws/events/presence/+/+'`), which
//! become the devices' `io.drogue.connection.v1` events. Each message becomes
//! the same CloudEvent as over HTTP; a refused message (a topic the sender may not use, an
//! unknown device, JSON that is not) is logged and dropped; an unreachable registry or
//! stream is a function error, so that Lambda retries and the rule's error action gets it.

use chrono::{DateTime, Utc};
use clap::Parser;
use drogue_shared::commands::CommandService;
use drogue_shared::config::{Instance, Table};
use drogue_shared::device_auth::{DeviceAuthenticator, LookupCache};
use drogue_shared::events::EventSink;
use drogue_shared::events::destination::Destination;
use drogue_shared::mqtt::{
    DeviceMessage, IngestError, Ingested, MqttIngest, RuleMessage, RuleOutcome,
};
use drogue_shared::store::Store;
use serde::Deserialize;
use serde_json::Value;
use std::sync::Arc;

/// What the function reads from its flags and environment (see `drogue_shared::config`).
#[derive(Debug, Clone, Parser)]
#[command(
    name = "mqtt-ingest",
    about = "The MQTT ingest of the serverless Drogue Cloud"
)]
pub struct Config {
    #[command(flatten)]
    pub table: Table,
    /// Where events go: `K_SINK` (HTTP, binary-mode CloudEvents) when set, else the
    /// Kinesis stream `DROGUE_EVENT_STREAM`.
    #[command(flatten)]
    pub events: Destination,
    #[command(flatten)]
    pub instance: Instance,
    /// `DROGUE_DEVICE_CACHE_TTL` and `DROGUE_DEVICE_CACHE_SIZE`: how long and how many
    /// device lookups are remembered (0 s: every message reads the registry once).
    #[command(flatten)]
    pub lookup_cache: LookupCache,
}

/// What the rules hand to the function: a device message, or an IoT Core lifecycle event
/// (told apart by its `eventType`).
#[derive(Debug)]
pub enum IngestEvent {
    Message(RuleMessage),
    Lifecycle(LifecycleEvent),
}

impl<'de> Deserialize<'de> for IngestEvent {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let event = Value::deserialize(d)?;
        if event.get("eventType").is_some() {
            serde_json::from_value(event)
                .map(Self::Lifecycle)
                .map_err(D::Error::custom)
        } else {
            serde_json::from_value(event)
                .map(Self::Message)
                .map_err(D::Error::custom)
        }
    }
}

/// Why the ingest failed a message or event (a function error: Lambda retries it, then
/// the rule's error action gets it).
#[derive(Debug)]
pub enum MqttIngestError {
    /// A device message without the sender's client id.
    NoClientId,
    /// The registry, the event stream or the command store could not be reached.
    Ingest(IngestError),
}

impl std::fmt::Display for MqttIngestError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NoClientId => f.write_str("a rule message without a clientId"),
            Self::Ingest(e) => write!(f, "the message could not be ingested: {e}"),
        }
    }
}

impl std::error::Error for MqttIngestError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::NoClientId => None,
            Self::Ingest(e) => Some(e),
        }
    }
}

impl From<IngestError> for MqttIngestError {
    fn from(e: IngestError) -> Self {
        Self::Ingest(e)
    }
}

/// An IoT Core lifecycle event (`$aws/events/presence/{connected|disconnected}/{clientId}`).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LifecycleEvent {
    pub client_id: String,
    /// `connected`, `disconnected` (others, such as `connect_failed`, are ignored).
    pub event_type: String,
    /// Milliseconds since the epoch.
    #[serde(default)]
    pub timestamp: Option<i64>,
    #[serde(default)]
    pub disconnect_reason: Option<String>,
}

/// The ingest; cheap to clone.
#[derive(Clone)]
pub struct Ingest {
    ingest: MqttIngest,
}

impl Ingest {
    pub fn new(store: Arc<dyn Store>, sink: Arc<dyn EventSink>, config: &Config) -> Self {
        let devices = config
            .lookup_cache
            .apply(DeviceAuthenticator::new(store.clone()));
        Self {
            ingest: MqttIngest::new(
                devices,
                sink,
                CommandService::new(store),
                config.instance.as_str(),
            ),
        }
    }

    pub async fn handle(&self, event: IngestEvent) -> Result<RuleOutcome, MqttIngestError> {
        match event {
            IngestEvent::Message(message) => self.message(message).await,
            IngestEvent::Lifecycle(event) => self.lifecycle(event).await,
        }
    }

    async fn message(&self, message: RuleMessage) -> Result<RuleOutcome, MqttIngestError> {
        let Some(client_id) = message.client_id.as_deref() else {
            return Err(MqttIngestError::NoClientId);
        };
        let Some(payload) = message.payload() else {
            tracing::warn!(topic = %message.topic, "a message without a base64 payload");
            return Ok(RuleOutcome::NOT_BASE64);
        };
        let outcome = self
            .ingest
            .device_message(&DeviceMessage {
                topic: &message.topic,
                client_id,
                payload: &payload,
                content_type: message.content_type(),
                received: message.received(),
                sequenced: None,
                // (IoT Core's rule tells the client id alone)
                sender_uid: None,
            })
            .await?;
        Ok(match outcome {
            Ingested::Accepted => RuleOutcome::Accepted,
            Ingested::Refused(reason) => {
                tracing::warn!(topic = %message.topic, client = %client_id, %reason, "message refused");
                RuleOutcome::Refused {
                    reason: reason.reason(),
                }
            }
        })
    }

    async fn lifecycle(&self, event: LifecycleEvent) -> Result<RuleOutcome, MqttIngestError> {
        let connected = match event.event_type.as_str() {
            "connected" => true,
            "disconnected" => false,
            _ => return Ok(RuleOutcome::Ignored { reason: None }),
        };
        let at = event
            .timestamp
            .and_then(DateTime::<Utc>::from_timestamp_millis)
            .unwrap_or_else(Utc::now);
        let outcome = self
            .ingest
            .connection(&event.client_id, connected, at)
            .await?;
        Ok(match outcome {
            Ingested::Accepted => {
                tracing::info!(client = %event.client_id, connected, reason = ?event.disconnect_reason, "connection event");
                RuleOutcome::Accepted
            }
            // applications connect too; they have no connection events
            Ingested::Refused(reason) => RuleOutcome::Ignored {
                reason: Some(reason.reason()),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use drogue_shared::config::{assert_refused, try_parse_flags};

    #[test]
    fn a_good_configuration() {
        let config =
            try_parse_flags::<Config>(&["--table", "drogue", "--event-stream", "events"]).unwrap();
        assert_eq!(config.table.as_str(), "drogue");
        assert_eq!(config.events, Destination::Kinesis("events".into()));
        assert_eq!(config.instance.as_str(), "drogue");
        assert_eq!(config.lookup_cache, LookupCache::default());
        let config = try_parse_flags::<Config>(&[
            "--table",
            "drogue",
            "--sink",
            "https://broker.example.com/",
            "--instance",
            "mine",
            "--device-cache-ttl",
            "60",
        ])
        .unwrap();
        assert!(matches!(config.events, Destination::Http(_)));
        assert_eq!(config.instance.as_str(), "mine");
        assert_eq!(
            config.lookup_cache.device_cache_ttl,
            std::time::Duration::from_secs(60)
        );
    }

    #[test]
    fn missing_or_empty_values_are_refused() {
        assert_refused::<Config>(&["--event-stream", "events"], &["DROGUE_TABLE"]);
        assert_refused::<Config>(&["--table", "t"], &["DROGUE_EVENT_STREAM", "K_SINK"]);
        assert_refused::<Config>(
            &["--table", "t", "--event-stream", ""],
            &["DROGUE_EVENT_STREAM", "empty"],
        );
        assert_refused::<Config>(
            &[
                "--table",
                "t",
                "--event-stream",
                "e",
                "--device-cache-ttl",
                "x",
            ],
            &["DROGUE_DEVICE_CACHE_TTL"],
        );
    }

    #[test]
    fn bad_values_are_refused() {
        assert_refused::<Config>(&["--table", "t", "--sink", "not a url"], &["K_SINK"]);
        assert_refused::<drogue_shared::runtime::Function<Config>>(
            &["--table", "t", "--event-stream", "e", "--port", "70000"],
            &["PORT"],
        );
    }
}
