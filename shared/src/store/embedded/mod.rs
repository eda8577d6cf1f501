//! The embedded adapter: one `redb` database file, for `drogue-local`.
//!
//! Every write is one ACID transaction, committed durably before the call returns, so
//! uniqueness of names, aliases and usernames, and the cascade of an application
//! delete, need no extra bookkeeping. Values are JSON.
//!
//! This module holds the database, its tables and what several ports share (the device
//! counts); each port has its own file: [`applications`], [`devices`], [`tokens`],
//! [`commands`]. Lists page by walking keys (a skipped device is not decoded), and
//! [`EmbeddedStore::create_devices_limited`] writes many devices in one transaction.

mod applications;
mod commands;
mod devices;
#[cfg(test)]
mod scale_tests;
mod tokens;

use super::{Conflict, StoreError, StoreResult, StoredApplication};
use crate::model::AppName;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};
use serde::Serialize;
use std::path::Path;
use std::sync::Arc;

const APPS: TableDefinition<&str, &[u8]> = TableDefinition::new("applications");
const DEVICES: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("devices");
/// (application, claim key) -> device name.
const CLAIMS: TableDefinition<(&str, &str), &str> = TableDefinition::new("device_claims");
/// (claim key, application) -> nothing: the applications holding a trust anchor subject
/// (shared: several applications may hold the same one).
const APP_CLAIMS: TableDefinition<(&str, &str), ()> =
    TableDefinition::new("application_trust_anchors");
/// claim key -> application name: the exclusive index of earlier versions, moved into
/// [`APP_CLAIMS`] when the database is opened.
const LEGACY_APP_CLAIMS: TableDefinition<&str, &str> = TableDefinition::new("application_claims");
/// (application, gateway, device) -> nothing: the devices a gateway serves.
const GATEWAYS: TableDefinition<(&str, &str, &str), ()> = TableDefinition::new("gateways");
/// (user, application) -> nothing: the applications a user owns or is a member of.
const USER_APPS: TableDefinition<(&str, &str), ()> = TableDefinition::new("user_applications");
/// application -> devices it holds (made when first needed, from the devices).
const DEVICE_COUNTS: TableDefinition<&str, u64> = TableDefinition::new("device_counts");
/// user -> devices of the applications the user owns (made when first needed, from the
/// applications' counts).
const OWNER_DEVICE_COUNTS: TableDefinition<&str, u64> = TableDefinition::new("owner_device_counts");
const TOKENS: TableDefinition<&str, &[u8]> = TableDefinition::new("tokens");
/// (user, prefix) -> nothing: the index of a user's tokens.
const USER_TOKENS: TableDefinition<(&str, &str), ()> = TableDefinition::new("user_tokens");

/// The embedded store; cheap to clone.
#[derive(Clone)]
pub struct EmbeddedStore {
    db: Arc<Database>,
}

type Outcome<T> = Result<Result<T, Conflict>, redb::Error>;

impl EmbeddedStore {
    /// Opens (or creates) the database file at `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let db = Database::create(path).map_err(StoreError::unavailable)?;
        let store = Self { db: Arc::new(db) };
        store
            .write_blocking(|txn| {
                txn.open_table(APPS)?;
                txn.open_table(DEVICES)?;
                txn.open_table(CLAIMS)?;
                txn.open_table(APP_CLAIMS)?;
                txn.open_table(USER_APPS)?;
                txn.open_table(GATEWAYS)?;
                txn.open_table(DEVICE_COUNTS)?;
                txn.open_table(OWNER_DEVICE_COUNTS)?;
                applications::migrate_app_claims(txn)?;
                txn.open_table(TOKENS)?;
                commands::create_tables(txn)?;
                txn.open_table(USER_TOKENS)?;
                Ok(Ok(()))
            })
            .map(|_| store)
    }

    fn write_blocking<T>(&self, f: impl FnOnce(&WriteTransaction) -> Outcome<T>) -> StoreResult<T> {
        let txn = self.db.begin_write().map_err(unavailable)?;
        match f(&txn).map_err(StoreError::unavailable)? {
            Ok(value) => {
                txn.commit().map_err(unavailable)?;
                Ok(value)
            }
            Err(conflict) => {
                txn.abort().map_err(unavailable)?;
                Err(StoreError::Conflict(conflict))
            }
        }
    }

    /// Runs a write transaction on the blocking pool (a commit waits for the disk).
    async fn write<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&WriteTransaction) -> Outcome<T> + Send + 'static,
    {
        let store = self.clone();
        tokio::task::spawn_blocking(move || store.write_blocking(f))
            .await
            .map_err(StoreError::unavailable)?
    }

    fn read_json<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, StoreError> {
        serde_json::from_slice(bytes).map_err(StoreError::unavailable)
    }

    /// The items of `table` that `index` lists under `user` ((user, key) -> nothing), in
    /// the order of their keys.
    fn read_indexed<T: serde::de::DeserializeOwned>(
        &self,
        index: TableDefinition<(&str, &str), ()>,
        table: TableDefinition<&str, &[u8]>,
        user: &str,
    ) -> StoreResult<Vec<T>> {
        let txn = self.db.begin_read().map_err(unavailable)?;
        let index = txn.open_table(index).map_err(unavailable)?;
        let table = txn.open_table(table).map_err(unavailable)?;
        let mut found = Vec::new();
        for entry in index.range((user, "")..).map_err(unavailable)? {
            let (key, _) = entry.map_err(unavailable)?;
            let (holder, name) = key.value();
            if holder != user {
                break;
            }
            if let Some(value) = table.get(name).map_err(unavailable)? {
                found.push(Self::read_json(value.value())?);
            }
        }
        Ok(found)
    }
}

fn unavailable(e: impl Into<redb::Error>) -> StoreError {
    StoreError::unavailable(e.into())
}

fn json(value: &impl Serialize) -> Vec<u8> {
    serde_json::to_vec(value).expect("stored records serialize")
}

/// Removes every `(app, _)` key of a table.
fn delete_prefix<V: redb::Value + 'static>(
    txn: &WriteTransaction,
    table: TableDefinition<(&'static str, &'static str), V>,
    app: &str,
) -> Result<(), redb::Error> {
    let mut table = txn.open_table(table)?;
    let keys: Vec<String> = table
        .range((app, "")..)?
        .map_while(|entry| {
            entry
                .map(|(k, _)| {
                    let (a, key) = k.value();
                    (a == app).then(|| key.to_owned())
                })
                .transpose()
        })
        .collect::<Result<_, _>>()?;
    for key in keys {
        table.remove((app, key.as_str()))?;
    }
    Ok(())
}

/// The devices an application holds: its count, or (for data written before there were
/// counts) the devices counted once.
fn device_count(txn: &WriteTransaction, app: &AppName) -> Result<u64, redb::Error> {
    if let Some(count) = txn.open_table(DEVICE_COUNTS)?.get(app.as_str())? {
        return Ok(count.value());
    }
    let devices = txn.open_table(DEVICES)?;
    let mut count = 0;
    for entry in devices.range((app.as_str(), "")..)? {
        if entry?.0.value().0 != app.as_str() {
            break;
        }
        count += 1;
    }
    Ok(count)
}

/// The devices of the applications a user owns: the user's count, or (for data written
/// before there were counts) the counts of the applications the user owns, added once.
fn owner_device_count(txn: &WriteTransaction, user: &str) -> Result<u64, redb::Error> {
    if let Some(count) = txn.open_table(OWNER_DEVICE_COUNTS)?.get(user)? {
        return Ok(count.value());
    }
    let mut owned = Vec::new();
    {
        let index = txn.open_table(USER_APPS)?;
        let apps = txn.open_table(APPS)?;
        for entry in index.range((user, "")..)? {
            let (key, _) = entry?;
            let (holder, name) = key.value();
            if holder != user {
                break;
            }
            let stored = apps
                .get(name)?
                .and_then(|v| serde_json::from_slice::<StoredApplication>(v.value()).ok());
            if stored.is_some_and(|s| s.owner == user)
                && let Ok(app) = AppName::parse(name)
            {
                owned.push(app);
            }
        }
    }
    let mut count = 0;
    for app in owned {
        count += device_count(txn, &app)?;
    }
    Ok(count)
}
