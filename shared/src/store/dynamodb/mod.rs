//! The DynamoDB adapter: one table for the registry and the tokens.
//!
//! | item | `pk` | `sk` | more |
//! |---|---|---|---|
//! | application | `APP#{app}` | `#APP` | `gsi1pk=APPS`, `gsi1sk={app}`, `accepts` (may get devices), `ownerid` (the owner; device writes are conditional on it) |
//! | device | `APP#{app}` | `DEV#{device}` | |
//! | the devices an application holds | `APP#{app}` | `#DEVICES` | `n` |
//! | the devices of all applications a user owns | `USER#{user}` | `#DEVICES` | `n` |
//! | device name, alias, unique username | `APP#{app}` | `NAME#{name}` | `device` |
//! | trust anchor subject, per application holding it | `CA#{subject}` | `APP#{app}` | `app` |
//! | access token | `TOKEN#{prefix}` | `#TOKEN` | `user`, `gsi1pk=TOKENS#{user}`, `gsi1sk={prefix}` |
//! | trust anchor registered with IoT Core | `IOTCA#{sha256 of DER}` | `#IOTCA` | `ca` (IoT certificate id), `apps` (string set: the applications holding it), `deleting` |
//! | stream consumer's WebSocket connection, by application | `WSAPP#{app}` | `{connection id}` | `appuid`, `user`, `channel`, `connected`, `expires` (TTL) |
//! | the same connection, by id | `WSCONN#{connection id}` | `#WSCONN` | `app`, `expires` (TTL) |
//! | device certificate activated on IoT Core | `APP#{app}` | `IOTCERT#{device}#{certificate id}` | `data` ([`ActivatedCertificate`]) |
//!
//! Every request-path read is a GetItem or a Query (strongly consistent), but device
//! authentication's lookup of an application and a device: one BatchGetItem, eventually
//! consistent, then GetItems of what it did not find. Every write that must be unique or
//! must not lose against a concurrent one is conditional (a transaction when it spans
//! several items): names and claims with `attribute_not_exists`, updates and deletes
//! with the expected `rv` (`resourceVersion`).

mod applications;
mod commands;
mod connections;
mod devices;
mod iot;
mod stream;
mod tokens;

pub use connections::StreamConnection;
pub use iot::{ACTIVATED_CERTIFICATE_PREFIX, ActivatedCertificate, RegisteredCa};
pub use stream::{StreamImage, TableItem, item_of};

use super::{Conflict, StoreError, StoreResult};
use crate::aws::Lazy;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, Delete, GlobalSecondaryIndex,
    KeySchemaElement, KeyType, Projection, ProjectionType, Put, ScalarAttributeType,
    TimeToLiveSpecification, TransactWriteItem,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::HashMap;

/// The name of the global secondary index used for listings.
pub const GSI1: &str = "gsi1";
/// The attribute DynamoDB's TTL removes expired items by (epoch seconds).
pub const TTL_ATTRIBUTE: &str = "expires";

type Item = HashMap<String, AttributeValue>;

/// The DynamoDB store; cheap to clone.
#[derive(Clone, Debug)]
pub struct DynamoStore {
    client: Lazy<Client>,
    table: String,
}

/// The timeouts of every AWS call, and a DynamoDB client with them (their home is
/// [`crate::aws`]).
pub use crate::aws::{dynamodb_client as client, timeouts};

impl DynamoStore {
    /// The store of `table`, through `client` (a client, or one built on first use).
    pub fn new(client: impl Into<Lazy<Client>>, table: impl Into<String>) -> Self {
        Self {
            client: client.into(),
            table: table.into(),
        }
    }

    /// The table's name.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// Creates the table (on-demand, with the index and TTL) as `template.yaml` does, unless
    /// a table of its name is there already; for tests and emulators.
    pub async fn create_table(&self) -> StoreResult<()> {
        let attr = |name: &str| {
            AttributeDefinition::builder()
                .attribute_name(name)
                .attribute_type(ScalarAttributeType::S)
                .build()
        };
        let key = |name: &str, kind| {
            KeySchemaElement::builder()
                .attribute_name(name)
                .key_type(kind)
                .build()
        };
        let index = GlobalSecondaryIndex::builder()
            .index_name(GSI1)
            .key_schema(key("gsi1pk", KeyType::Hash).map_err(build)?)
            .key_schema(key("gsi1sk", KeyType::Range).map_err(build)?)
            .projection(
                Projection::builder()
                    .projection_type(ProjectionType::All)
                    .build(),
            )
            .build()
            .map_err(build)?;
        let created = self
            .client
            .create_table()
            .table_name(&self.table)
            .billing_mode(BillingMode::PayPerRequest)
            .set_attribute_definitions(Some(
                ["pk", "sk", "gsi1pk", "gsi1sk"]
                    .into_iter()
                    .map(attr)
                    .collect::<Result<_, _>>()
                    .map_err(build)?,
            ))
            .key_schema(key("pk", KeyType::Hash).map_err(build)?)
            .key_schema(key("sk", KeyType::Range).map_err(build)?)
            .global_secondary_indexes(index)
            .send()
            .await;
        match created {
            Ok(_) => {}
            // made already: by an attempt whose answer came too late (the SDK then tries
            // again), or by an earlier run
            Err(err)
                if err
                    .as_service_error()
                    .is_some_and(|err| err.is_resource_in_use_exception()) => {}
            Err(err) => return Err(StoreError::unavailable(err)),
        }
        self.client
            .update_time_to_live()
            .table_name(&self.table)
            .time_to_live_specification(
                TimeToLiveSpecification::builder()
                    .enabled(true)
                    .attribute_name(TTL_ATTRIBUTE)
                    .build()
                    .map_err(build)?,
            )
            .send()
            .await
            .map_err(StoreError::unavailable)?;
        Ok(())
    }

    /// Reads one item by its key, strongly consistent.
    async fn get_item(&self, pk: String, sk: &str) -> StoreResult<Option<Item>> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(pk))
            .key("sk", s(sk))
            .consistent_read(true)
            .send()
            .await
            .map_err(StoreError::unavailable)?;
        Ok(out.item)
    }

    /// Every item of a partition whose sort key starts with `prefix` (all of them for an
    /// empty prefix), in key order.
    async fn query_prefix(&self, pk: String, prefix: &str) -> StoreResult<Vec<Item>> {
        let mut query = self
            .client
            .query()
            .table_name(&self.table)
            .expression_attribute_values(":pk", s(pk));
        query = if prefix.is_empty() {
            query.key_condition_expression("pk = :pk")
        } else {
            query
                .key_condition_expression("pk = :pk AND begins_with(sk, :prefix)")
                .expression_attribute_values(":prefix", s(prefix))
        };
        let pages = query.consistent_read(true).into_paginator().items().send();
        pages
            .collect::<Result<Vec<_>, _>>()
            .await
            .map_err(StoreError::unavailable)
    }

    /// Every item of the listing index under `gsi1pk`, ordered by `gsi1sk`.
    async fn query_index(&self, gsi1pk: String) -> StoreResult<Vec<Item>> {
        let pages = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(GSI1)
            .key_condition_expression("gsi1pk = :pk")
            .expression_attribute_values(":pk", s(gsi1pk))
            .into_paginator()
            .items()
            .send();
        pages
            .collect::<Result<Vec<_>, _>>()
            .await
            .map_err(StoreError::unavailable)
    }

    /// Runs a transaction; `meanings[i]` is the conflict when the condition of item `i` fails.
    async fn transact(&self, items: Vec<(TransactWriteItem, Option<Conflict>)>) -> StoreResult<()> {
        let (items, meanings): (Vec<_>, Vec<_>) = items.into_iter().unzip();
        match self
            .client
            .transact_write_items()
            .set_transact_items(Some(items))
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(SdkError::ServiceError(e)) => match e.into_err() {
                TransactWriteItemsError::TransactionCanceledException(cancelled) => {
                    let reasons = cancelled.cancellation_reasons();
                    let failed = reasons
                        .iter()
                        .position(|r| r.code() == Some("ConditionalCheckFailed"));
                    match failed {
                        Some(i) => Err(StoreError::Conflict(
                            meanings
                                .get(i)
                                .cloned()
                                .flatten()
                                .unwrap_or(Conflict::Changed),
                        )),
                        None if reasons
                            .iter()
                            .any(|r| r.code() == Some("TransactionConflict")) =>
                        {
                            Err(StoreError::Conflict(Conflict::Changed))
                        }
                        None => Err(StoreError::unavailable(cancelled)),
                    }
                }
                other => Err(StoreError::unavailable(other)),
            },
            Err(e) => Err(StoreError::unavailable(e)),
        }
    }

    fn put(&self, item: Item, condition: Option<Condition>) -> StoreResult<TransactWriteItem> {
        let mut put = Put::builder().table_name(&self.table).set_item(Some(item));
        if let Some(c) = condition {
            put = put
                .condition_expression(c.expression)
                .set_expression_attribute_names(c.names)
                .set_expression_attribute_values(c.values);
        }
        Ok(TransactWriteItem::builder()
            .put(put.build().map_err(build)?)
            .build())
    }

    fn delete(
        &self,
        pk: String,
        sk: &str,
        condition: Option<Condition>,
    ) -> StoreResult<TransactWriteItem> {
        let mut delete = Delete::builder()
            .table_name(&self.table)
            .key("pk", s(pk))
            .key("sk", s(sk));
        if let Some(c) = condition {
            delete = delete
                .condition_expression(c.expression)
                .set_expression_attribute_names(c.names)
                .set_expression_attribute_values(c.values);
        }
        Ok(TransactWriteItem::builder()
            .delete(delete.build().map_err(build)?)
            .build())
    }
}

/// A condition expression with its placeholders.
struct Condition {
    expression: String,
    names: Option<HashMap<String, String>>,
    values: Option<HashMap<String, AttributeValue>>,
}

impl Condition {
    /// The item must not exist yet.
    fn absent() -> Self {
        Self {
            expression: "attribute_not_exists(pk)".into(),
            names: None,
            values: None,
        }
    }

    /// The item must not exist, or `attribute` must already be `value` (a claim re-taken
    /// by its holder).
    fn absent_or(attribute: &str, value: &str) -> Self {
        Self {
            expression: "attribute_not_exists(pk) OR #a = :v".into(),
            names: Some(HashMap::from([("#a".into(), attribute.into())])),
            values: Some(HashMap::from([(":v".into(), s(value))])),
        }
    }

    /// The item must hold this resource version.
    fn revision(rv: &str) -> Self {
        Self {
            expression: "rv = :rv".into(),
            names: None,
            values: Some(HashMap::from([(":rv".into(), s(rv))])),
        }
    }
}

fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

fn build(e: aws_sdk_dynamodb::error::BuildError) -> StoreError {
    StoreError::unavailable(e)
}

/// The JSON document in an item's `data` attribute.
fn data<T: DeserializeOwned>(item: &Item) -> StoreResult<T> {
    match item.get("data") {
        Some(AttributeValue::S(json)) => {
            serde_json::from_str(json).map_err(StoreError::unavailable)
        }
        _ => Err(StoreError::unavailable(std::io::Error::other(
            "item without a data attribute",
        ))),
    }
}

fn json(value: &impl Serialize) -> AttributeValue {
    s(serde_json::to_string(value).expect("stored records serialize"))
}

/// A string attribute of an item.
fn attr<'a>(item: &'a Item, name: &str) -> Option<&'a str> {
    match item.get(name) {
        Some(AttributeValue::S(value)) => Some(value),
        _ => None,
    }
}
