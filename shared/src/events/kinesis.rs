//! The event stream on AWS: a Kinesis Data Stream. Each event is one record, the
//! structured JSON CloudEvent, with the event's `partitionkey` (`{app}/{device}`) as the
//! partition key, so a device's events stay in order.

use super::{EventSink, SinkError, StructuredEvent};
use crate::aws::Lazy;
use async_trait::async_trait;
use aws_sdk_kinesis::primitives::Blob;
use sha2::{Digest, Sha256};

/// Kinesis takes partition keys of at most 256 characters.
const MAX_PARTITION_KEY: usize = 256;

/// Writes events to a Kinesis Data Stream.
#[derive(Clone, Debug)]
pub struct KinesisSink {
    client: Lazy<aws_sdk_kinesis::Client>,
    stream: String,
}

/// A Kinesis client from the shared AWS configuration (its home is [`crate::aws`]).
pub use crate::aws::kinesis_client as client;

impl KinesisSink {
    /// The sink of `stream`, through `client` (a client, or one built on first use).
    pub fn new(
        client: impl Into<Lazy<aws_sdk_kinesis::Client>>,
        stream: impl Into<String>,
    ) -> Self {
        Self {
            client: client.into(),
            stream: stream.into(),
        }
    }
}

/// The record's partition key: the event's, or its SHA-256 when too long for Kinesis.
pub fn record_key(key: &str) -> String {
    if key.chars().count() <= MAX_PARTITION_KEY {
        key.to_owned()
    } else {
        Sha256::digest(key.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

#[async_trait]
impl EventSink for KinesisSink {
    async fn publish_structured(&self, event: StructuredEvent) -> Result<(), SinkError> {
        self.client
            .put_record()
            .stream_name(&self.stream)
            .partition_key(record_key(&event.partition_key))
            .data(Blob::new(event.json))
            .send()
            .await
            .map_err(SinkError::unavailable)?;
        Ok(())
    }
}
