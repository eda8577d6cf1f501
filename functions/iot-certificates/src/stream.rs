//! The table's DynamoDB stream (new and old images), consumed by one function that hands
//! every record to each reaction: the trust anchors ([`crate::anchors`]), certificate
//! revocation ([`crate::revocation`]) and registry change events ([`crate::changes`]).
//!
//! Records are handled in order. A record that fails (any reaction) stops the batch: it
//! and everything after it are reported in `batchItemFailures` (Lambda's
//! `ReportBatchItemFailures`), so Lambda retries from that record on. Every reaction is
//! idempotent, so a retried record repeats the reactions that had succeeded harmlessly
//! (a change event may then be written twice, with the same `id`).

use crate::anchors::{AnchorError, TrustAnchorSync};
use crate::changes::{ChangeError, RegistryChanges};
use crate::error::Chain;
use crate::revocation::{Revocation, RevocationError};
use aws_lambda_events::event::dynamodb::{Event, EventRecord};
use drogue_shared::store::dynamodb::StreamImage;
use serde::Serialize;
use serde_json::Value;

/// A table item, as far as the reactions care (the DynamoDB adapter tells them apart).
pub use drogue_shared::store::dynamodb::TableItem as Item;

/// Why an image of a record cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// Not an image of a table item.
    #[error(transparent)]
    Attributes(#[from] serde_dynamo::Error),
    /// An item whose stored JSON is not what its key says.
    #[error(transparent)]
    Data(#[from] serde_json::Error),
}

/// Why a record failed (it and those after it are retried).
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error(transparent)]
    Revocation(#[from] RevocationError),
    #[error(transparent)]
    Anchors(#[from] AnchorError),
    #[error(transparent)]
    Changes(#[from] ChangeError),
}

/// One image of an item: what it is, and its stored JSON (`data`) as it was written.
#[derive(Debug)]
pub struct Image {
    pub item: Item,
    pub data: Option<String>,
}

impl Image {
    /// An image of a record; `None` for an absent one (the old image of an insert, the
    /// new one of a remove).
    pub fn parse(image: &serde_dynamo::Item) -> Result<Option<Self>, ImageError> {
        if image.is_empty() {
            return Ok(None);
        }
        let raw: StreamImage = serde_dynamo::from_item(image.clone())?;
        let item = raw.item()?;
        Ok(Some(Self {
            item,
            data: raw.into_data(),
        }))
    }
}

/// A stream record, its images parsed.
#[derive(Debug)]
pub struct Change<'a> {
    pub record: &'a EventRecord,
    pub old: Option<Image>,
    pub new: Option<Image>,
}

impl<'a> Change<'a> {
    pub fn parse(record: &'a EventRecord) -> Result<Self, ImageError> {
        Ok(Self {
            record,
            old: Image::parse(&record.change.old_image)?,
            new: Image::parse(&record.change.new_image)?,
        })
    }

    pub fn old_item(&self) -> Option<&Item> {
        self.old.as_ref().map(|i| &i.item)
    }

    pub fn new_item(&self) -> Option<&Item> {
        self.new.as_ref().map(|i| &i.item)
    }
}

/// What the reactions did with a batch.
#[derive(Debug, Default)]
struct Outcome {
    registered: Vec<String>,
    deregistered: Vec<String>,
    revoked: Vec<String>,
    events: Vec<Value>,
    failures: Vec<String>,
}

/// The stream's consumer; cheap to clone.
#[derive(Clone)]
pub struct StreamConsumer {
    anchors: TrustAnchorSync,
    revocation: Revocation,
    changes: RegistryChanges,
}

impl StreamConsumer {
    pub fn new(anchors: TrustAnchorSync, revocation: Revocation, changes: RegistryChanges) -> Self {
        Self {
            anchors,
            revocation,
            changes,
        }
    }

    /// Handles a batch of stream records (an event that is none is refused by the
    /// runtime: a function error): what was registered, deregistered, revoked and
    /// streamed, and the records to retry (`batchItemFailures`). Failed records are never
    /// an error of the handler.
    pub async fn handle(&self, event: Event) -> Result<StreamOutcome, SyncError> {
        let mut outcome = Outcome::default();
        let mut failed = false;
        for record in &event.records {
            if !failed && let Err(e) = self.record(record, &mut outcome).await {
                tracing::error!(event = %record.event_id, error = %Chain(&e), "a stream record failed; it is retried");
                failed = true;
            }
            if failed {
                let id = record
                    .change
                    .sequence_number
                    .clone()
                    .unwrap_or_else(|| record.event_id.clone());
                outcome.failures.push(id);
            }
        }
        Ok(StreamOutcome {
            registered: outcome.registered,
            deregistered: outcome.deregistered,
            revoked: outcome.revoked,
            events: outcome.events,
            batch_item_failures: outcome
                .failures
                .into_iter()
                .map(|item_identifier| ItemFailure { item_identifier })
                .collect(),
        })
    }

    /// Hands a record to every reaction (all of them, even after one failed: revoking
    /// must not wait for an event stream that is down); the first error, if any.
    async fn record(&self, record: &EventRecord, outcome: &mut Outcome) -> Result<(), RecordError> {
        let change = Change::parse(record)?;
        // boxed: the three state machines together are too deep for the compiler's layout
        let revoked = Box::pin(self.revocation.record(&change)).await;
        let anchors = Box::pin(self.anchors.record(&change)).await;
        let events = Box::pin(self.changes.record(&change)).await;
        let mut first: Option<RecordError> = None;
        match revoked {
            Ok(ids) => outcome.revoked.extend(ids),
            Err(e) => first = first.or(Some(e.into())),
        }
        match anchors {
            Ok((registered, deregistered)) => {
                outcome.registered.extend(registered);
                outcome.deregistered.extend(deregistered);
            }
            Err(e) => first = first.or(Some(e.into())),
        }
        match events {
            Ok(events) => outcome.events.extend(events),
            Err(e) => first = first.or(Some(e.into())),
        }
        first.map_or(Ok(()), Err)
    }
}

/// The answer to a batch: `{"registered", "deregistered", "revoked", "events",
/// "batchItemFailures": [{"itemIdentifier"}]}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StreamOutcome {
    pub registered: Vec<String>,
    pub deregistered: Vec<String>,
    pub revoked: Vec<String>,
    pub events: Vec<Value>,
    pub batch_item_failures: Vec<ItemFailure>,
}

/// A record to retry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ItemFailure {
    pub item_identifier: String,
}

impl StreamOutcome {
    /// Whether records failed.
    pub fn has_failures(&self) -> bool {
        !self.batch_item_failures.is_empty()
    }
}

/// Why a batch failed as a whole: on `$PORT`, where the caller retries whole batches, a
/// batch with failed records (under Lambda they are reported in `batchItemFailures`).
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// Records failed (their sequence numbers).
    #[error("stream records failed: {0:?}")]
    RecordsFailed(Vec<String>),
}
