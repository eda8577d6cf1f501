//! The table's DynamoDB stream (new and old images), consumed by one function that hands
//! every record to each reaction: the trust anchors ([`crate::anchors`]), certificate
//! revocation ([`crate::revocation`]) and registry change events ([`crate::changes`]).
//!
//! Records are handled in order. A record that fails (any reaction) stops the batch: it
//! and everything after it are reported in `batchItemFailures` (Lambda's
//! `ReportBatchItemFailures`), so Lambda retries from that record on. Every reaction is
//! idempotent, so a retried record repeats the reactions that had succeeded harmlessly
//! (a change event may then be written twice, with the same `id`).

use crate::anchors::TrustAnchorSync;
use crate::changes::RegistryChanges;
use crate::revocation::Revocation;
use aws_lambda_events::event::dynamodb::{Event, EventRecord};
use drogue_shared::store::dynamodb::StreamImage;
use serde_json::{Value, json};

/// A table item, as far as the reactions care (the DynamoDB adapter tells them apart).
pub use drogue_shared::store::dynamodb::TableItem as Item;

/// One image of an item: what it is, and its stored JSON (`data`) as it was written.
#[derive(Debug)]
pub struct Image {
    pub item: Item,
    pub data: Option<String>,
}

impl Image {
    /// An image of a record; `None` for an absent one (the old image of an insert, the
    /// new one of a remove).
    pub fn parse(image: &serde_dynamo::Item) -> anyhow::Result<Option<Self>> {
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
    pub fn parse(record: &'a EventRecord) -> anyhow::Result<Self> {
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

    /// Handles a batch of stream records: `{"registered", "deregistered", "revoked",
    /// "events", "batchItemFailures"}`. Only an event that is not a batch of stream
    /// records is an error.
    pub async fn handle(&self, event: Value) -> anyhow::Result<Value> {
        let event: Event = serde_json::from_value(event)?;
        let mut outcome = Outcome::default();
        let mut failed = false;
        for record in &event.records {
            if !failed && let Err(e) = self.record(record, &mut outcome).await {
                tracing::error!(event = %record.event_id, error = ?e, "a stream record failed; it is retried");
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
        Ok(json!({
            "registered": outcome.registered,
            "deregistered": outcome.deregistered,
            "revoked": outcome.revoked,
            "events": outcome.events,
            "batchItemFailures": outcome
                .failures
                .iter()
                .map(|id| json!({"itemIdentifier": id}))
                .collect::<Vec<_>>(),
        }))
    }

    /// Hands a record to every reaction (all of them, even after one failed: revoking
    /// must not wait for an event stream that is down); the first error, if any.
    async fn record(&self, record: &EventRecord, outcome: &mut Outcome) -> anyhow::Result<()> {
        let change = Change::parse(record)?;
        // boxed: the three state machines together are too deep for the compiler's layout
        let revoked = Box::pin(self.revocation.record(&change)).await;
        let anchors = Box::pin(self.anchors.record(&change)).await;
        let events = Box::pin(self.changes.record(&change)).await;
        let mut first = None;
        match revoked {
            Ok(ids) => outcome.revoked.extend(ids),
            Err(e) => first = first.or(Some(e)),
        }
        match anchors {
            Ok((registered, deregistered)) => {
                outcome.registered.extend(registered);
                outcome.deregistered.extend(deregistered);
            }
            Err(e) => first = first.or(Some(e)),
        }
        match events {
            Ok(events) => outcome.events.extend(events),
            Err(e) => first = first.or(Some(e)),
        }
        first.map_or(Ok(()), Err)
    }
}

/// Whether a handled batch reported failed records.
pub fn has_failures(answer: &Value) -> bool {
    answer["batchItemFailures"]
        .as_array()
        .is_some_and(|f| !f.is_empty())
}
