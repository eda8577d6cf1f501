//! The event stream on AWS: a Kinesis Data Stream. Each event is one record, the
//! structured JSON CloudEvent, with the event's `partitionkey` (`{app}/{device}`) as the
//! partition key, so a device's events stay in order.

use super::{EventSink, SinkError, partition_key, to_json};
use async_trait::async_trait;
use aws_sdk_kinesis::primitives::Blob;
use cloudevents::Event;
use sha2::{Digest, Sha256};

/// Kinesis takes partition keys of at most 256 characters.
const MAX_PARTITION_KEY: usize = 256;

/// Writes events to a Kinesis Data Stream.
#[derive(Clone, Debug)]
pub struct KinesisSink {
    client: aws_sdk_kinesis::Client,
    stream: String,
}

/// A Kinesis client from the shared AWS configuration (its home is [`crate::aws`]).
pub use crate::aws::kinesis_client as client;

impl KinesisSink {
    pub fn new(client: aws_sdk_kinesis::Client, stream: impl Into<String>) -> Self {
        Self {
            client,
            stream: stream.into(),
        }
    }
}

/// The record's partition key: the event's, or its SHA-256 when too long for Kinesis.
pub fn record_key(event: &Event) -> String {
    let key = partition_key(event);
    if key.chars().count() <= MAX_PARTITION_KEY {
        key
    } else {
        Sha256::digest(key.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

#[async_trait]
impl EventSink for KinesisSink {
    async fn publish(&self, event: &Event) -> Result<(), SinkError> {
        self.client
            .put_record()
            .stream_name(&self.stream)
            .partition_key(record_key(event))
            .data(Blob::new(to_json(event)))
            .send()
            .await
            .map_err(SinkError::unavailable)?;
        Ok(())
    }
}
