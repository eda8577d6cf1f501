//! Registry change events on AWS: a reaction to the table's DynamoDB stream
//! ([`crate::stream`]). Every write of an application or a device item that changes
//! the stored resource becomes an `io.drogue.registry.v1` CloudEvent
//! ([`drogue_shared::events::registry_change`]) in the event stream: an insert
//! `created`, a modification `updated` (an application whose deletion is pending too),
//! a removal `deleted`. A modification that leaves the stored resource as it was (such
//! as closing an application to new devices before deleting it) and every other item
//! (claims, tokens, commands, certificates) give none.
//!
//! The event's `time` is the stream record's (when the change was made), its `id` is
//! derived from the stream record's id, so a retried record gives the same event again
//! (consumers may drop duplicates by `id`). A device's `applicationuid` comes from its
//! application as the table holds it now, and is left out when the application is gone
//! (or was made again after the device).

use crate::stream::{Change, Item};
use chrono::{DateTime, Utc};
use cloudevents::event::AttributesWriter;
use drogue_shared::events::{Change as Changed, ChangedIn, EventSink, SinkError, registry_change};
use drogue_shared::model::{AppName, Resource};
use drogue_shared::store::dynamodb::DynamoStore;
use drogue_shared::store::{ApplicationStore, StoreError};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::sync::Arc;

/// Writes registry change events; cheap to clone.
#[derive(Clone)]
pub struct RegistryChanges {
    store: DynamoStore,
    sink: Arc<dyn EventSink>,
    instance: String,
}

/// Why a record's change event could not be written (the record is retried).
#[derive(Debug, thiserror::Error)]
pub enum ChangeError {
    /// The application of a changed device could not be read.
    #[error("cannot read the application {app}")]
    Application {
        app: String,
        #[source]
        source: StoreError,
    },
    /// The event stream did not take the event.
    #[error("cannot write a registry change event")]
    Publish(#[source] SinkError),
}

/// What an image is: an application, or a device of an application.
enum Subject<'a> {
    Application(&'a Resource),
    Device(&'a str, &'a Resource),
}

fn subject(item: Option<&Item>) -> Option<Subject<'_>> {
    match item? {
        Item::Application(stored) => Some(Subject::Application(&stored.app)),
        Item::Device {
            application,
            device,
        } => Some(Subject::Device(application, device)),
        _ => None,
    }
}

/// The event id of a stream record: a UUID from the SHA-256 of the record's id.
pub fn event_id(record_id: &str) -> String {
    let digest = Sha256::digest(record_id.as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_custom_bytes(bytes)
        .into_uuid()
        .to_string()
}

impl RegistryChanges {
    pub fn new(store: DynamoStore, sink: Arc<dyn EventSink>, instance: impl Into<String>) -> Self {
        Self {
            store,
            sink,
            instance: instance.into(),
        }
    }

    /// Follows one stream record: `{"subject", "name", "change"}` of the event written,
    /// if any.
    pub async fn record(&self, change: &Change<'_>) -> Result<Vec<Value>, ChangeError> {
        let (old, new) = (change.old.as_ref(), change.new.as_ref());
        let what = match (old, new) {
            (None, Some(_)) => Changed::Created,
            (Some(old), Some(new)) if old.data == new.data => return Ok(Vec::new()),
            (Some(_), Some(_)) => Changed::Updated,
            (Some(_), None) => Changed::Deleted,
            (None, None) => return Ok(Vec::new()),
        };
        let Some(subject) = subject(change.new_item()).or(subject(change.old_item())) else {
            return Ok(Vec::new());
        };
        let recorded = change.record.change.approximate_creation_date_time;
        let time = if recorded.timestamp() > 0 {
            recorded
        } else {
            Utc::now()
        };
        let mut event = match subject {
            Subject::Application(app) => {
                let changed_in = ChangedIn {
                    name: app.name(),
                    uid: Some(&app.metadata.uid),
                };
                registry_change(&self.instance, &changed_in, None, app, what, time)
            }
            Subject::Device(app, device) => {
                let uid = self
                    .application_uid(app, device.metadata.creation_timestamp)
                    .await?;
                let changed_in = ChangedIn {
                    name: app,
                    uid: uid.as_deref(),
                };
                registry_change(
                    &self.instance,
                    &changed_in,
                    Some(device),
                    device,
                    what,
                    time,
                )
            }
        };
        event.set_id(event_id(&change.record.event_id));
        self.sink
            .publish(&event)
            .await
            .map_err(ChangeError::Publish)?;
        let (kind, name) = match subject {
            Subject::Application(app) => ("applications", app.name()),
            Subject::Device(_, device) => ("devices", device.name()),
        };
        Ok(vec![
            json!({"subject": kind, "name": name, "change": what.as_str()}),
        ])
    }

    /// The `uid` of the application a device created at `created` belongs to: the
    /// application of that name, unless it is gone or younger than the device.
    async fn application_uid(
        &self,
        app: &str,
        created: DateTime<Utc>,
    ) -> Result<Option<String>, ChangeError> {
        let Ok(name) = AppName::parse(app) else {
            return Ok(None);
        };
        let stored =
            self.store
                .get_application(&name)
                .await
                .map_err(|source| ChangeError::Application {
                    app: app.to_owned(),
                    source,
                })?;
        Ok(stored
            .filter(|s| s.app.metadata.creation_timestamp <= created)
            .map(|s| s.app.metadata.uid))
    }
}
