//! Devices in DynamoDB, in their application's partition, with their names, aliases
//! and unique usernames as claims in the same partition.

use super::applications::app_pk;
use super::{Condition, DynamoStore, Item, attr, data, json, s};
use crate::model::{AppName, Claim, Device, DeviceName};
use crate::store::{Conflict, DeviceStore, StoreResult, device_claims, device_gateways};
use async_trait::async_trait;
use aws_sdk_dynamodb::types::{AttributeValue, ConditionCheck, TransactWriteItem, Update};
use std::collections::HashMap;

pub(super) fn device_sk(device: &str) -> String {
    format!("DEV#{device}")
}

fn claim_sk(claim: &Claim) -> String {
    format!("NAME#{}", claim.key())
}

/// The count of an application's devices (attribute `n`), kept with every create and
/// delete; `#` sorts before every other key of the partition but none.
pub(super) const DEVICE_COUNT_SK: &str = "#DEVICES";

/// The gateway index: device names hold no `/`.
fn gateway_sk(gateway: &str, device: &str) -> String {
    format!("GWAY#{gateway}/{device}")
}

impl DynamoStore {
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

    async fn list_devices(&self, app: &AppName) -> StoreResult<Vec<Device>> {
        self.query_prefix(app_pk(app.as_str()), "DEV#")
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
        Ok(match item.as_ref().and_then(|i| i.get("n")) {
            Some(AttributeValue::N(n)) => n.parse::<i64>().unwrap_or(0).max(0) as u64,
            _ => 0,
        })
    }

    async fn create_device_within(
        &self,
        app: &AppName,
        device: &Device,
        limit: Option<u64>,
    ) -> StoreResult<()> {
        let name = device.metadata.name.as_str();
        let app_open = ConditionCheck::builder()
            .table_name(&self.table)
            .key("pk", s(app_pk(app.as_str())))
            .key("sk", s("#APP"))
            .condition_expression("accepts = :true")
            .expression_attribute_values(":true", AttributeValue::Bool(true))
            .build()
            .map_err(super::build)?;
        let mut items = vec![
            (
                TransactWriteItem::builder()
                    .condition_check(app_open)
                    .build(),
                Some(Conflict::ApplicationGone),
            ),
            (
                self.put(self.device_item(app, device), Some(Condition::absent()))?,
                Some(Conflict::AlreadyExists),
            ),
            (
                self.count_devices_by(app, 1, limit)?,
                Some(Conflict::QuotaExceeded),
            ),
        ];
        items.extend(self.claim_changes(app, name, &[], &device_claims(device))?);
        items.extend(self.gateway_changes(app, name, &[], &device_gateways(device))?);
        self.transact(items).await
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
        let condition = Condition::revision(&previous.metadata.resource_version);
        let mut items = vec![(
            self.delete(app_pk(app.as_str()), &device_sk(name), Some(condition))?,
            Some(Conflict::Changed),
        )];
        items.push((self.count_devices_by(app, -1, None)?, None));
        items.extend(self.claim_changes(app, name, &device_claims(previous), &[])?);
        items.extend(self.gateway_changes(app, name, &device_gateways(previous), &[])?);
        self.transact(items).await
    }
}
