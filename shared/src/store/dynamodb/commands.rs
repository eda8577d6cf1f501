//! Commands in DynamoDB, with the table's TTL attribute (`expires`, epoch seconds) set on
//! every item so that DynamoDB removes them eventually; until it does (it may take days,
//! and emulators never do) expired items are skipped here.
//!
//! | item | `pk` | `sk` |
//! |---|---|---|
//! | a command in its device's inbox | `INBOX#{app}/{device}` | `{created µs:020}#{id}` |
//! | a command by request id | `CMD#{id}` | `#CMD` |
//! | its response | `CMD#{id}` | `#RESP` |
//!
//! Taking a command is a conditional delete of its inbox item: of two takers, only one
//! deletes it, so a command is delivered at most once.

use super::{Condition, DynamoStore, Item, TTL_ATTRIBUTE, data, json, s};
use crate::model::command::{Command, CommandResponse};
use crate::store::{CommandStore, StoreError, StoreResult};
use async_trait::async_trait;
use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, Utc};
use std::collections::HashMap;

/// Inbox items read per Query while looking for an unexpired command.
const PAGE: i32 = 16;

fn inbox_pk(application: &str, device: &str) -> String {
    format!("INBOX#{application}/{device}")
}

fn command_pk(id: &str) -> String {
    format!("CMD#{id}")
}

fn expires(time: DateTime<Utc>) -> AttributeValue {
    AttributeValue::N(time.timestamp().to_string())
}

fn expired(item: &Item, now: DateTime<Utc>) -> bool {
    match item.get(TTL_ATTRIBUTE) {
        Some(AttributeValue::N(n)) => n.parse::<i64>().is_ok_and(|at| at <= now.timestamp()),
        _ => false,
    }
}

#[async_trait]
impl CommandStore for DynamoStore {
    async fn enqueue(&self, command: &Command) -> StoreResult<()> {
        let order = format!(
            "{:020}#{}",
            command.created.timestamp_micros().max(0),
            command.id
        );
        let inbox = HashMap::from([
            (
                "pk".into(),
                s(inbox_pk(&command.application, &command.device)),
            ),
            ("sk".into(), s(order)),
            ("data".into(), json(command)),
            (TTL_ATTRIBUTE.into(), expires(command.expires)),
        ]);
        let by_id = HashMap::from([
            ("pk".into(), s(command_pk(&command.id))),
            ("sk".into(), s("#CMD")),
            ("data".into(), json(command)),
            (TTL_ATTRIBUTE.into(), expires(command.responses_until())),
        ]);
        self.transact(vec![
            (self.put(inbox, Some(Condition::absent()))?, None),
            (self.put(by_id, Some(Condition::absent()))?, None),
        ])
        .await
    }

    async fn take_command(
        &self,
        application: &str,
        device: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<Command>> {
        let pk = inbox_pk(application, device);
        let mut start = None;
        loop {
            let page = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("pk = :pk")
                .expression_attribute_values(":pk", s(pk.as_str()))
                .consistent_read(true)
                .limit(PAGE)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(StoreError::unavailable)?;
            for item in page.items() {
                let sk = super::attr(item, "sk").unwrap_or_default().to_owned();
                if expired(item, now) {
                    // gone for delivery; DynamoDB's TTL removes it later
                    continue;
                }
                if self.delete_if_present(&pk, &sk).await? {
                    return data(item).map(Some);
                }
            }
            match page.last_evaluated_key {
                Some(key) => start = Some(key),
                None => return Ok(None),
            }
        }
    }

    async fn get_command(&self, id: &str, now: DateTime<Utc>) -> StoreResult<Option<Command>> {
        match self.get_item(command_pk(id), "#CMD").await? {
            Some(item) if !expired(&item, now) => data(&item).map(Some),
            _ => Ok(None),
        }
    }

    async fn record_response(
        &self,
        response: &CommandResponse,
        until: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let item = HashMap::from([
            ("pk".into(), s(command_pk(&response.id))),
            ("sk".into(), s("#RESP")),
            ("data".into(), json(response)),
            (TTL_ATTRIBUTE.into(), expires(until)),
        ]);
        let put = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await;
        match put {
            Ok(_) => Ok(true),
            Err(e) => match e.as_service_error() {
                Some(service) if service.is_conditional_check_failed_exception() => Ok(false),
                _ => Err(StoreError::unavailable(e)),
            },
        }
    }

    async fn get_response(
        &self,
        id: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<CommandResponse>> {
        match self.get_item(command_pk(id), "#RESP").await? {
            Some(item) if !expired(&item, now) => data(&item).map(Some),
            _ => Ok(None),
        }
    }
}

impl DynamoStore {
    /// Deletes an item if it is still there; whether this call deleted it.
    async fn delete_if_present(&self, pk: &str, sk: &str) -> StoreResult<bool> {
        let deleted = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key("pk", s(pk))
            .key("sk", s(sk))
            .condition_expression("attribute_exists(pk)")
            .send()
            .await;
        match deleted {
            Ok(_) => Ok(true),
            Err(e) => match e.as_service_error() {
                Some(service) if service.is_conditional_check_failed_exception() => Ok(false),
                _ => Err(StoreError::unavailable(e)),
            },
        }
    }
}
