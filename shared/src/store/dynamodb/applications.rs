//! Applications in DynamoDB, with their trust anchor subjects in a shared index: one
//! item per (subject, application), so that several applications (of any owners) may
//! hold the same trust anchor and a certificate's issuer finds all of them.

use super::{Condition, DynamoStore, Item, data, json, s};
use crate::model::{AppName, Claim};
use crate::store::{
    ApplicationStore, Conflict, StoreError, StoreResult, StoredApplication, application_claims,
};
use async_trait::async_trait;
use aws_sdk_dynamodb::types::{
    AttributeValue, DeleteRequest, KeysAndAttributes, TransactWriteItem, WriteRequest,
};
use std::collections::HashMap;

/// The sort key of an application's item.
pub(super) const APP_SK: &str = "#APP";
/// The partition key prefix of an application's partition (`APP#{app}`).
pub(super) const APP_PK_PREFIX: &str = "APP#";
/// BatchWriteItem takes at most 25 requests.
const BATCH: usize = 25;

pub(super) fn app_pk(app: &str) -> String {
    format!("{APP_PK_PREFIX}{app}")
}

fn claim_pk(claim: &Claim) -> String {
    format!("CA#{}", claim.key())
}

/// The sort key of an application's entry under a trust anchor subject.
fn claim_sk(app: &str) -> String {
    format!("APP#{app}")
}

pub(super) fn user_pk(user: &str) -> String {
    format!("USER#{user}")
}

fn user_sk(app: &str) -> String {
    format!("APP#{app}")
}

/// BatchGetItem takes at most 100 keys.
const BATCH_GET: usize = 100;

impl DynamoStore {
    fn app_item(&self, stored: &StoredApplication) -> Item {
        let name = &stored.app.metadata.name;
        HashMap::from([
            ("pk".into(), s(app_pk(name))),
            ("sk".into(), s(APP_SK)),
            ("gsi1pk".into(), s("APPS")),
            ("gsi1sk".into(), s(name.as_str())),
            (
                "rv".into(),
                s(stored.app.metadata.resource_version.as_str()),
            ),
            (
                "accepts".into(),
                AttributeValue::Bool(!stored.app.is_deleting()),
            ),
            (
                super::devices::OWNER_ATTRIBUTE.into(),
                s(stored.owner.as_str()),
            ),
            ("data".into(), json(stored)),
        ])
    }

    fn app_claim_item(&self, app: &str, claim: &Claim) -> Item {
        HashMap::from([
            ("pk".into(), s(claim_pk(claim))),
            ("sk".into(), s(claim_sk(app))),
            ("app".into(), s(app)),
        ])
    }

    /// Transaction items that move an application's entries in the per-user index.
    fn user_index_changes(
        &self,
        app: &str,
        before: &[&str],
        after: &[&str],
    ) -> StoreResult<Vec<(TransactWriteItem, Option<Conflict>)>> {
        let mut items = Vec::new();
        for user in before.iter().filter(|u| !after.contains(u)) {
            items.push((self.delete(user_pk(user), &user_sk(app), None)?, None));
        }
        for user in after.iter().filter(|u| !before.contains(u)) {
            let item = HashMap::from([
                ("pk".into(), s(user_pk(user))),
                ("sk".into(), s(user_sk(app))),
                ("app".into(), s(app)),
            ]);
            items.push((self.put(item, None)?, None));
        }
        Ok(items)
    }

    /// Reads applications by name (strongly consistent), skipping missing ones.
    async fn get_applications(&self, names: Vec<String>) -> StoreResult<Vec<StoredApplication>> {
        let mut found = Vec::new();
        for chunk in names.chunks(BATCH_GET) {
            let mut keys: Vec<Item> = chunk
                .iter()
                .map(|name| {
                    HashMap::from([("pk".into(), s(app_pk(name))), ("sk".into(), s(APP_SK))])
                })
                .collect();
            for attempt in 0.. {
                let request = KeysAndAttributes::builder()
                    .set_keys(Some(keys))
                    .consistent_read(true)
                    .build()
                    .map_err(super::build)?;
                let out = self
                    .client
                    .batch_get_item()
                    .request_items(&self.table, request)
                    .send()
                    .await
                    .map_err(StoreError::unavailable)?;
                for item in out
                    .responses
                    .and_then(|mut r| r.remove(&self.table))
                    .unwrap_or_default()
                {
                    found.push(data(&item)?);
                }
                keys = out
                    .unprocessed_keys
                    .and_then(|mut left| left.remove(&self.table))
                    .map(|k| k.keys)
                    .unwrap_or_default();
                if keys.is_empty() {
                    break;
                }
                if attempt == 8 {
                    return Err(StoreError::unavailable(std::io::Error::other(
                        "DynamoDB left reads unprocessed after retries",
                    )));
                }
                tokio::time::sleep(std::time::Duration::from_millis(20 << attempt)).await;
            }
        }
        found.sort_by(|a: &StoredApplication, b| a.app.metadata.name.cmp(&b.app.metadata.name));
        Ok(found)
    }

    /// Deletes items by key, in batches, retrying what DynamoDB left unprocessed.
    async fn delete_keys(&self, keys: Vec<(String, String)>) -> StoreResult<()> {
        for chunk in keys.chunks(BATCH) {
            let mut requests: Vec<WriteRequest> = chunk
                .iter()
                .map(|(pk, sk)| {
                    DeleteRequest::builder()
                        .key("pk", s(pk.as_str()))
                        .key("sk", s(sk.as_str()))
                        .build()
                        .map(|d| WriteRequest::builder().delete_request(d).build())
                })
                .collect::<Result<_, _>>()
                .map_err(super::build)?;
            for attempt in 0.. {
                let out = self
                    .client
                    .batch_write_item()
                    .request_items(&self.table, requests)
                    .send()
                    .await
                    .map_err(StoreError::unavailable)?;
                requests = out
                    .unprocessed_items
                    .and_then(|mut left| left.remove(&self.table))
                    .unwrap_or_default();
                if requests.is_empty() {
                    break;
                }
                if attempt == 8 {
                    return Err(StoreError::unavailable(std::io::Error::other(
                        "DynamoDB left deletes unprocessed after retries",
                    )));
                }
                tokio::time::sleep(std::time::Duration::from_millis(20 << attempt)).await;
            }
        }
        Ok(())
    }
}

#[async_trait]
impl ApplicationStore for DynamoStore {
    async fn get_application(&self, name: &AppName) -> StoreResult<Option<StoredApplication>> {
        match self.get_item(app_pk(name.as_str()), APP_SK).await? {
            Some(item) => data(&item).map(Some),
            None => Ok(None),
        }
    }

    async fn list_applications(&self) -> StoreResult<Vec<StoredApplication>> {
        self.query_index("APPS".into())
            .await?
            .iter()
            .map(data)
            .collect()
    }

    async fn create_application(&self, stored: &StoredApplication) -> StoreResult<()> {
        let name = stored.app.metadata.name.as_str();
        let mut items = vec![(
            self.put(self.app_item(stored), Some(Condition::absent()))?,
            Some(Conflict::AlreadyExists),
        )];
        // the subject index is shared: an entry of this application is its own, never
        // another's, so it is written without a condition
        for claim in application_claims(&stored.app) {
            items.push((self.put(self.app_claim_item(name, &claim), None)?, None));
        }
        items.extend(self.user_index_changes(name, &[], &stored.users())?);
        self.transact(items).await
    }

    async fn update_application_within(
        &self,
        previous: &StoredApplication,
        next: &StoredApplication,
        owner_limit: Option<u64>,
    ) -> StoreResult<()> {
        let name = next.app.metadata.name.as_str();
        let mut items = vec![(
            self.put(
                self.app_item(next),
                Some(Condition::revision(&previous.app.metadata.resource_version)),
            )?,
            Some(Conflict::Changed),
        )];
        if previous.owner != next.owner {
            let app = AppName::parse(name).map_err(StoreError::unavailable)?;
            items.extend(
                self.move_device_count(&app, &previous.owner, &next.owner, owner_limit)
                    .await?,
            );
        }
        items.extend(self.user_index_changes(name, &previous.users(), &next.users())?);
        let (before, after) = (
            application_claims(&previous.app),
            application_claims(&next.app),
        );
        for released in before.iter().filter(|c| !after.contains(c)) {
            items.push((
                self.delete(claim_pk(released), &claim_sk(name), None)?,
                None,
            ));
        }
        for taken in after.iter().filter(|c| !before.contains(c)) {
            items.push((self.put(self.app_claim_item(name, taken), None)?, None));
        }
        self.transact(items).await
    }

    /// Closes the application to new devices (conditional on its revision), deletes
    /// everything in its partition and its claims, then the application itself. A
    /// repeated delete after a failure picks up where the last one stopped.
    async fn delete_application(&self, previous: &StoredApplication) -> StoreResult<()> {
        let name = previous.app.metadata.name.as_str();
        // closed: no device is created nor deleted from now on (their writes check the
        // owner), so its count is final and leaves the owner's
        let closed = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(app_pk(name)))
            .key("sk", s(APP_SK))
            .update_expression("SET accepts = :false, #owner = :closed")
            .condition_expression("rv = :rv")
            .expression_attribute_names("#owner", super::devices::OWNER_ATTRIBUTE)
            .expression_attribute_values(":closed", s(super::devices::CLOSED_OWNER))
            .expression_attribute_values(":false", AttributeValue::Bool(false))
            .expression_attribute_values(":rv", s(previous.app.metadata.resource_version.as_str()))
            .send()
            .await;
        if let Err(e) = closed {
            return Err(match e.as_service_error() {
                Some(service) if service.is_conditional_check_failed_exception() => {
                    StoreError::Conflict(Conflict::Changed)
                }
                _ => StoreError::unavailable(e),
            });
        }
        let app = AppName::parse(name).map_err(StoreError::unavailable)?;
        self.release_device_count(&app, &previous.owner).await?;
        let mut keys: Vec<(String, String)> = self
            .query_prefix(app_pk(name), "")
            .await?
            .iter()
            .filter_map(|item| super::attr(item, "sk").map(str::to_owned))
            .filter(|sk| sk != APP_SK)
            .map(|sk| (app_pk(name), sk))
            .collect();
        keys.extend(
            application_claims(&previous.app)
                .iter()
                .map(|c| (claim_pk(c), claim_sk(name))),
        );
        keys.extend(previous.users().iter().map(|u| (user_pk(u), user_sk(name))));
        self.delete_keys(keys).await?;
        self.transact(vec![(self.delete(app_pk(name), APP_SK, None)?, None)])
            .await
    }

    async fn list_applications_of(&self, user: &str) -> StoreResult<Vec<StoredApplication>> {
        let names = self
            .query_prefix(user_pk(user), "APP#")
            .await?
            .iter()
            .filter_map(|item| super::attr(item, "app").map(str::to_owned))
            .collect();
        self.get_applications(names).await
    }

    async fn find_applications_by_claim(&self, claim: &Claim) -> StoreResult<Vec<AppName>> {
        // every holder's `APP#{app}` item, and the one `#CA` item of a table written
        // before the index was shared (read, never written); an application found
        // here that no longer trusts the subject is refused by its own anchors
        let mut apps: Vec<AppName> = self
            .query_prefix(claim_pk(claim), "")
            .await?
            .iter()
            .filter_map(|i| super::attr(i, "app"))
            .filter_map(|name| AppName::parse(name).ok())
            .collect();
        apps.sort();
        apps.dedup();
        Ok(apps)
    }
}
