//! Devices in DynamoDB, in their application's partition, with their names, aliases
//! and unique usernames as claims in the same partition.

use super::applications::{APP_SK, app_pk, user_pk};
use super::{Condition, DynamoStore, Item, attr, data, json, s};
use crate::model::{AppName, Claim, Device, DeviceName};
use crate::store::ApplicationStore;
use crate::store::{
    Conflict, DeviceLimits, DeviceStore, StoreError, StoreResult, StoredApplication, device_claims,
    device_gateways,
};
use async_trait::async_trait;
use aws_sdk_dynamodb::types::{
    AttributeValue, ConditionCheck, Delete, KeysAndAttributes, Select, TransactWriteItem, Update,
};
use std::collections::HashMap;

/// The sort key prefix of device items (`DEV#{device}`).
pub(super) const DEVICE_SK_PREFIX: &str = "DEV#";

pub(super) fn device_sk(device: &str) -> String {
    format!("{DEVICE_SK_PREFIX}{device}")
}

fn claim_sk(claim: &Claim) -> String {
    format!("NAME#{}", claim.key())
}

/// The count of an application's devices (attribute `n`), kept with every create and
/// delete; `#` sorts before every other key of the partition but none.
pub(super) const DEVICE_COUNT_SK: &str = "#DEVICES";

/// The count of the devices of all applications a user owns (attribute `n`), in the
/// user's partition, kept with every device create and delete, application delete and
/// transfer of ownership.
pub(super) const OWNER_DEVICE_COUNT_SK: &str = "#DEVICES";

/// The attribute of an application's item naming its owner, so that device writes can
/// be conditional on it (their count moves with the ownership).
pub(super) const OWNER_ATTRIBUTE: &str = "ownerid";

/// The owner attribute of an application being deleted: no device write matches it.
pub(super) const CLOSED_OWNER: &str = "#closed#";

/// How often a device write is tried again when the application's owner changed
/// between reading it and writing.
const OWNER_RETRIES: usize = 3;

/// The gateway index: device names hold no `/`.
fn gateway_sk(gateway: &str, device: &str) -> String {
    format!("GWAY#{gateway}/{device}")
}

/// The count an item holds (attribute `n`), never below zero.
fn count_of(item: &Item) -> Option<u64> {
    match item.get("n") {
        Some(AttributeValue::N(n)) => Some(n.parse::<i64>().unwrap_or(0).max(0) as u64),
        _ => None,
    }
}

impl DynamoStore {
    /// Two items of a partition in one request (a BatchGetItem, eventually consistent),
    /// retrying what DynamoDB leaves unprocessed: the first and the second, if there.
    async fn get_eventually(
        &self,
        pk: &str,
        sks: &[&str; 2],
    ) -> StoreResult<(Option<Item>, Option<Item>)> {
        let key = |sk: &str| HashMap::from([("pk".to_owned(), s(pk)), ("sk".to_owned(), s(sk))]);
        let mut keys: Vec<Item> = sks.iter().copied().map(key).collect();
        let mut found: Vec<Item> = Vec::with_capacity(2);
        for attempt in 0.. {
            let request = KeysAndAttributes::builder()
                .set_keys(Some(keys))
                .consistent_read(false)
                .build()
                .map_err(super::build)?;
            let out = self
                .client
                .batch_get_item()
                .request_items(&self.table, request)
                .send()
                .await
                .map_err(StoreError::unavailable)?;
            found.extend(
                out.responses
                    .and_then(|mut r| r.remove(&self.table))
                    .unwrap_or_default(),
            );
            keys = out
                .unprocessed_keys
                .and_then(|mut left| left.remove(&self.table))
                .map(|k| k.keys)
                .unwrap_or_default();
            if keys.is_empty() {
                break;
            }
            if attempt == 4 {
                return Err(StoreError::unavailable(std::io::Error::other(
                    "DynamoDB left reads unprocessed after retries",
                )));
            }
            tokio::time::sleep(std::time::Duration::from_millis(20 << attempt)).await;
        }
        let mut take = |sk: &str| {
            found
                .iter()
                .position(|item| attr(item, "sk") == Some(sk))
                .map(|i| found.swap_remove(i))
        };
        let first = take(sks[0]);
        let second = take(sks[1]);
        Ok((first, second))
    }

    /// Adds `delta` to an application's device count; with a limit, only while the count
    /// is below it.
    fn count_devices_by(
        &self,
        app: &AppName,
        delta: i64,
        limit: Option<u64>,
    ) -> StoreResult<TransactWriteItem> {
        let mut update = Update::builder()
            .table_name(&self.table)
            .key("pk", s(app_pk(app.as_str())))
            .key("sk", s(DEVICE_COUNT_SK))
            .update_expression("ADD n :delta")
            .expression_attribute_values(":delta", AttributeValue::N(delta.to_string()));
        if let Some(limit) = limit {
            update = update
                .condition_expression("attribute_not_exists(n) OR n < :limit")
                .expression_attribute_values(":limit", AttributeValue::N(limit.to_string()));
        }
        Ok(TransactWriteItem::builder()
            .update(update.build().map_err(super::build)?)
            .build())
    }

    /// Adds `delta` to the count of the devices a user owns; with `below`, only while
    /// the count is below it.
    fn count_owned_by(
        &self,
        user: &str,
        delta: i64,
        below: Option<u64>,
    ) -> StoreResult<TransactWriteItem> {
        let mut update = Update::builder()
            .table_name(&self.table)
            .key("pk", s(user_pk(user)))
            .key("sk", s(OWNER_DEVICE_COUNT_SK))
            .update_expression("ADD n :delta")
            .expression_attribute_values(":delta", AttributeValue::N(delta.to_string()));
        if let Some(below) = below {
            update = update
                .condition_expression("attribute_not_exists(n) OR n < :below")
                .expression_attribute_values(":below", AttributeValue::N(below.to_string()));
        }
        Ok(TransactWriteItem::builder()
            .update(update.build().map_err(super::build)?)
            .build())
    }

    /// Makes sure the counts a device write moves are there (a table written before the
    /// counts were kept gets them counted first), so that they never start from zero
    /// with devices already there.
    async fn counts_kept(&self, app: &AppName, owner: &str) -> StoreResult<()> {
        self.count_devices(app).await?;
        if owner != CLOSED_OWNER {
            self.count_owned_devices(owner).await?;
        }
        Ok(())
    }

    /// The devices of an application, counted item by item (a count-only Query).
    async fn tally_devices(&self, app: &AppName) -> StoreResult<u64> {
        let pages = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk AND begins_with(sk, :prefix)")
            .expression_attribute_values(":pk", s(app_pk(app.as_str())))
            .expression_attribute_values(":prefix", s(DEVICE_SK_PREFIX))
            .select(Select::Count)
            .consistent_read(true)
            .into_paginator()
            .send();
        let counts: Vec<_> = pages
            .collect::<Result<Vec<_>, _>>()
            .await
            .map_err(StoreError::unavailable)?;
        Ok(counts.iter().map(|page| page.count().max(0) as u64).sum())
    }

    /// Writes a count that is missing (a table written before the counts were kept),
    /// unless one was written meanwhile; an application's, only while it is open (not
    /// being deleted).
    async fn keep_missing_count(
        &self,
        pk: String,
        sk: &str,
        n: u64,
        app: Option<&AppName>,
    ) -> StoreResult<()> {
        let count = HashMap::from([
            ("pk".to_owned(), s(pk)),
            ("sk".to_owned(), s(sk)),
            ("n".to_owned(), AttributeValue::N(n.to_string())),
        ]);
        let missing = Condition {
            expression: "attribute_not_exists(n)".into(),
            names: None,
            values: None,
        };
        let mut items = vec![(self.put(count, Some(missing))?, None)];
        if let Some(app) = app {
            let open = ConditionCheck::builder()
                .table_name(&self.table)
                .key("pk", s(app_pk(app.as_str())))
                .key("sk", s("#APP"))
                .condition_expression("accepts = :true")
                .expression_attribute_values(":true", AttributeValue::Bool(true))
                .build()
                .map_err(super::build)?;
            items.push((
                TransactWriteItem::builder().condition_check(open).build(),
                None,
            ));
        }
        match self.transact(items).await {
            // counted meanwhile, or closed: the count there is the one to go by
            Err(StoreError::Conflict(_)) => Ok(()),
            done => done,
        }
    }

    /// The owner of an application, read from its item (`None` when there is none).
    async fn application_owner(&self, app: &AppName) -> StoreResult<Option<String>> {
        let Some(item) = self.get_item(app_pk(app.as_str()), "#APP").await? else {
            return Ok(None);
        };
        if let Some(owner) = attr(&item, OWNER_ATTRIBUTE) {
            return Ok(Some(owner.to_owned()));
        }
        // items written before the attribute: the owner in the data
        Ok(Some(data::<StoredApplication>(&item)?.owner))
    }

    /// A check that an application still has `owner` (items written before the owner
    /// attribute pass), and with `open` that it accepts devices.
    fn owner_check(
        &self,
        app: &AppName,
        owner: &str,
        open: bool,
    ) -> StoreResult<TransactWriteItem> {
        let mut expression = "(#owner = :owner OR attribute_not_exists(#owner))".to_owned();
        let mut values = HashMap::from([(":owner".to_owned(), s(owner))]);
        if open {
            expression.push_str(" AND accepts = :true");
            values.insert(":true".into(), AttributeValue::Bool(true));
        }
        let check = ConditionCheck::builder()
            .table_name(&self.table)
            .key("pk", s(app_pk(app.as_str())))
            .key("sk", s("#APP"))
            .condition_expression(expression)
            .expression_attribute_names("#owner", OWNER_ATTRIBUTE)
            .set_expression_attribute_values(Some(values))
            .build()
            .map_err(super::build)?;
        Ok(TransactWriteItem::builder().condition_check(check).build())
    }

    /// Whether a write that found the application changed should be tried again: the
    /// application is still there, open, with another owner.
    async fn owner_moved(&self, app: &AppName, owner: &str) -> StoreResult<bool> {
        Ok(self
            .application_owner(app)
            .await?
            .is_some_and(|now| now != owner && now != CLOSED_OWNER))
    }

    /// The items that move an application's devices from `from`'s count to `to`'s (a
    /// transfer of ownership), on condition that the application's count is still the
    /// one read; with a limit, `to` may then own at most `limit` devices.
    pub(super) async fn move_device_count(
        &self,
        app: &AppName,
        from: &str,
        to: &str,
        limit: Option<u64>,
    ) -> StoreResult<Vec<(TransactWriteItem, Option<Conflict>)>> {
        let held = self.count_devices(app).await?;
        self.count_owned_devices(from).await?;
        self.count_owned_devices(to).await?;
        let exists = self
            .get_item(app_pk(app.as_str()), DEVICE_COUNT_SK)
            .await?
            .is_some_and(|item| item.contains_key("n"));
        if limit.is_some_and(|limit| held > limit) {
            return Err(StoreError::Conflict(Conflict::OwnerQuotaExceeded));
        }
        let (expression, values) = if exists {
            (
                "n = :n",
                Some(HashMap::from([(
                    ":n".to_owned(),
                    AttributeValue::N(held.to_string()),
                )])),
            )
        } else {
            ("attribute_not_exists(n)", None)
        };
        let unchanged = ConditionCheck::builder()
            .table_name(&self.table)
            .key("pk", s(app_pk(app.as_str())))
            .key("sk", s(DEVICE_COUNT_SK))
            .condition_expression(expression)
            .set_expression_attribute_values(values)
            .build()
            .map_err(super::build)?;
        let mut items = vec![(
            TransactWriteItem::builder()
                .condition_check(unchanged)
                .build(),
            Some(Conflict::Changed),
        )];
        if held > 0 {
            let delta = i64::try_from(held).unwrap_or(i64::MAX);
            items.push((self.count_owned_by(from, -delta, None)?, None));
            // `to` then owns at most `limit`: below `limit - held + 1` before
            let below = limit.map(|limit| limit - held + 1);
            items.push((
                self.count_owned_by(to, delta, below)?,
                Some(Conflict::OwnerQuotaExceeded),
            ));
        }
        Ok(items)
    }

    /// Takes a closed application's devices off its owner's count, and its count with
    /// them (a repeated call finds no count and does nothing).
    pub(super) async fn release_device_count(&self, app: &AppName, owner: &str) -> StoreResult<()> {
        let Some(item) = self.get_item(app_pk(app.as_str()), DEVICE_COUNT_SK).await? else {
            return Ok(());
        };
        let held = match item.get("n") {
            Some(AttributeValue::N(n)) => n.parse::<i64>().unwrap_or(0),
            _ => 0,
        };
        let delete = Delete::builder()
            .table_name(&self.table)
            .key("pk", s(app_pk(app.as_str())))
            .key("sk", s(DEVICE_COUNT_SK))
            .condition_expression("attribute_not_exists(n) OR n = :n")
            .expression_attribute_values(":n", AttributeValue::N(held.to_string()))
            .build()
            .map_err(super::build)?;
        let mut items = vec![(
            TransactWriteItem::builder().delete(delete).build(),
            Some(Conflict::Changed),
        )];
        if held > 0 {
            items.push((self.count_owned_by(owner, -held, None)?, None));
        }
        self.transact(items).await
    }

    fn device_item(&self, app: &AppName, device: &Device) -> Item {
        HashMap::from([
            ("pk".into(), s(app_pk(app.as_str()))),
            ("sk".into(), s(device_sk(&device.metadata.name))),
            ("rv".into(), s(device.metadata.resource_version.as_str())),
            ("data".into(), json(device)),
        ])
    }

    fn claim_item(&self, app: &AppName, device: &str, claim: &Claim) -> Item {
        HashMap::from([
            ("pk".into(), s(app_pk(app.as_str()))),
            ("sk".into(), s(claim_sk(claim))),
            ("device".into(), s(device)),
        ])
    }

    /// Transaction items that move a device's gateway index entries.
    fn gateway_changes(
        &self,
        app: &AppName,
        device: &str,
        before: &[String],
        after: &[String],
    ) -> StoreResult<Vec<(TransactWriteItem, Option<Conflict>)>> {
        let mut items = Vec::new();
        for gateway in before.iter().filter(|g| !after.contains(g)) {
            items.push((
                self.delete(app_pk(app.as_str()), &gateway_sk(gateway, device), None)?,
                None,
            ));
        }
        for gateway in after.iter().filter(|g| !before.contains(g)) {
            let item = HashMap::from([
                ("pk".into(), s(app_pk(app.as_str()))),
                ("sk".into(), s(gateway_sk(gateway, device))),
                ("device".into(), s(device)),
            ]);
            items.push((self.put(item, None)?, None));
        }
        Ok(items)
    }

    /// Transaction items that move a device's claims from `before` to `after`.
    fn claim_changes(
        &self,
        app: &AppName,
        device: &str,
        before: &[Claim],
        after: &[Claim],
    ) -> StoreResult<Vec<(TransactWriteItem, Option<Conflict>)>> {
        let mut items = Vec::new();
        for released in before.iter().filter(|c| !after.contains(c)) {
            let condition = Condition::absent_or("device", device);
            items.push((
                self.delete(app_pk(app.as_str()), &claim_sk(released), Some(condition))?,
                None,
            ));
        }
        for taken in after.iter().filter(|c| !before.contains(c)) {
            let item = self.claim_item(app, device, taken);
            let put = self.put(item, Some(Condition::absent_or("device", device)))?;
            items.push((put, Some(Conflict::ClaimTaken(taken.clone()))));
        }
        Ok(items)
    }
}

#[async_trait]
impl DeviceStore for DynamoStore {
    async fn get_device(&self, app: &AppName, device: &DeviceName) -> StoreResult<Option<Device>> {
        match self
            .get_item(app_pk(app.as_str()), &device_sk(device.as_str()))
            .await?
        {
            Some(item) => data(&item).map(Some),
            None => Ok(None),
        }
    }

    async fn get_application_device(
        &self,
        app: &AppName,
        device: &DeviceName,
    ) -> StoreResult<Option<(StoredApplication, Option<Device>)>> {
        let pk = app_pk(app.as_str());
        let device_sk = device_sk(device.as_str());
        let (stored, found) = self
            .get_eventually(&pk, &[APP_SK, device_sk.as_str()])
            .await?;
        // an application an eventually consistent read did not find may have been
        // created a moment ago: asked again, strongly consistent (a device is, by its
        // name's claim, by the caller)
        let stored: StoredApplication = match stored {
            Some(item) => data(&item)?,
            None => match self.get_application(app).await? {
                Some(stored) => stored,
                None => return Ok(None),
            },
        };
        let device: Option<Device> = found.as_ref().map(data).transpose()?;
        Ok(Some((stored, device)))
    }

    async fn list_devices(&self, app: &AppName) -> StoreResult<Vec<Device>> {
        self.query_prefix(app_pk(app.as_str()), DEVICE_SK_PREFIX)
            .await?
            .iter()
            .map(data)
            .collect()
    }

    async fn devices_served_by(
        &self,
        app: &AppName,
        gateway: &str,
    ) -> StoreResult<Vec<DeviceName>> {
        Ok(self
            .query_prefix(app_pk(app.as_str()), &format!("GWAY#{gateway}/"))
            .await?
            .iter()
            .filter_map(|item| attr(item, "device"))
            .filter_map(|name| DeviceName::parse(name).ok())
            .collect())
    }

    async fn find_device_by_claim(
        &self,
        app: &AppName,
        claim: &Claim,
    ) -> StoreResult<Option<DeviceName>> {
        let item = self
            .get_item(app_pk(app.as_str()), &claim_sk(claim))
            .await?;
        Ok(item
            .as_ref()
            .and_then(|i| attr(i, "device"))
            .and_then(|name| DeviceName::parse(name).ok()))
    }

    async fn count_devices(&self, app: &AppName) -> StoreResult<u64> {
        let item = self.get_item(app_pk(app.as_str()), DEVICE_COUNT_SK).await?;
        if let Some(n) = item.as_ref().and_then(count_of) {
            return Ok(n);
        }
        // a table written before the counts were kept: count once, and keep the count
        let held = self.tally_devices(app).await?;
        if held > 0 {
            self.keep_missing_count(app_pk(app.as_str()), DEVICE_COUNT_SK, held, Some(app))
                .await?;
        }
        Ok(held)
    }

    async fn count_owned_devices(&self, user: &str) -> StoreResult<u64> {
        let item = self.get_item(user_pk(user), OWNER_DEVICE_COUNT_SK).await?;
        if let Some(n) = item.as_ref().and_then(count_of) {
            return Ok(n);
        }
        // a table written before the counts were kept: the owned applications' counts
        let mut held = 0;
        for owned in self.list_applications_of(user).await? {
            if owned.owner != user {
                continue;
            }
            let Ok(app) = AppName::parse(&owned.app.metadata.name) else {
                continue;
            };
            held += self.count_devices(&app).await?;
        }
        if held > 0 {
            self.keep_missing_count(user_pk(user), OWNER_DEVICE_COUNT_SK, held, None)
                .await?;
        }
        Ok(held)
    }

    async fn create_device_limited(
        &self,
        app: &AppName,
        device: &Device,
        limits: DeviceLimits,
    ) -> StoreResult<()> {
        let name = device.metadata.name.as_str();
        for attempt in 1..=OWNER_RETRIES {
            let Some(owner) = self.application_owner(app).await? else {
                return Err(StoreError::Conflict(Conflict::ApplicationGone));
            };
            self.counts_kept(app, &owner).await?;
            let mut items = vec![
                (
                    self.owner_check(app, &owner, true)?,
                    Some(Conflict::ApplicationGone),
                ),
                (
                    self.put(self.device_item(app, device), Some(Condition::absent()))?,
                    Some(Conflict::AlreadyExists),
                ),
                (
                    self.count_devices_by(app, 1, limits.per_application)?,
                    Some(Conflict::QuotaExceeded),
                ),
                (
                    self.count_owned_by(&owner, 1, limits.per_owner)?,
                    Some(Conflict::OwnerQuotaExceeded),
                ),
            ];
            items.extend(self.claim_changes(app, name, &[], &device_claims(device))?);
            items.extend(self.gateway_changes(app, name, &[], &device_gateways(device))?);
            match self.transact(items).await {
                Err(StoreError::Conflict(Conflict::ApplicationGone))
                    if attempt < OWNER_RETRIES && self.owner_moved(app, &owner).await? => {}
                done => return done,
            }
        }
        unreachable!("the last attempt returns")
    }

    async fn update_device(
        &self,
        app: &AppName,
        previous: &Device,
        next: &Device,
    ) -> StoreResult<()> {
        let name = next.metadata.name.as_str();
        let condition = Condition::revision(&previous.metadata.resource_version);
        let mut items = vec![(
            self.put(self.device_item(app, next), Some(condition))?,
            Some(Conflict::Changed),
        )];
        items.extend(self.claim_changes(
            app,
            name,
            &device_claims(previous),
            &device_claims(next),
        )?);
        items.extend(self.gateway_changes(
            app,
            name,
            &device_gateways(previous),
            &device_gateways(next),
        )?);
        self.transact(items).await
    }

    async fn delete_device(&self, app: &AppName, previous: &Device) -> StoreResult<()> {
        let name = previous.metadata.name.as_str();
        for attempt in 1..=OWNER_RETRIES {
            let owner = self.application_owner(app).await?;
            if owner.as_deref() == Some(CLOSED_OWNER) {
                // the application's deletion removes its devices and settles the counts
                return Err(StoreError::Conflict(Conflict::ApplicationGone));
            }
            if let Some(owner) = &owner {
                self.counts_kept(app, owner).await?;
            }
            let condition = Condition::revision(&previous.metadata.resource_version);
            let mut items = vec![(
                self.delete(app_pk(app.as_str()), &device_sk(name), Some(condition))?,
                Some(Conflict::Changed),
            )];
            items.push((self.count_devices_by(app, -1, None)?, None));
            if let Some(owner) = &owner {
                items.push((
                    self.owner_check(app, owner, false)?,
                    Some(Conflict::Changed),
                ));
                items.push((self.count_owned_by(owner, -1, None)?, None));
            }
            items.extend(self.claim_changes(app, name, &device_claims(previous), &[])?);
            items.extend(self.gateway_changes(app, name, &device_gateways(previous), &[])?);
            match self.transact(items).await {
                Err(StoreError::Conflict(Conflict::Changed))
                    if attempt < OWNER_RETRIES
                        && owner.is_some()
                        && self
                            .owner_moved(app, owner.as_deref().unwrap_or_default())
                            .await? => {}
                done => return done,
            }
        }
        unreachable!("the last attempt returns")
    }
}
