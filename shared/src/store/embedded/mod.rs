//! The embedded adapter: one `redb` database file, for `drogue-local`.
//!
//! Every write is one ACID transaction, committed durably before the call returns, so
//! uniqueness of names, aliases and usernames, and the cascade of an application
//! delete, need no extra bookkeeping. Values are JSON.

mod commands;

use super::*;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};
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
                migrate_app_claims(txn)?;
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

/// The stored application, if it is still at the revision of `previous`.
fn current_app(
    txn: &WriteTransaction,
    previous: &Application,
) -> Result<Option<StoredApplication>, redb::Error> {
    let apps = txn.open_table(APPS)?;
    let current = apps
        .get(previous.metadata.name.as_str())?
        .and_then(|v| serde_json::from_slice::<StoredApplication>(v.value()).ok());
    Ok(current.filter(|c| c.app.metadata.resource_version == previous.metadata.resource_version))
}

/// The `resourceVersion` of a stored device, for conditional writes.
fn device_revision(bytes: &[u8]) -> Option<String> {
    serde_json::from_slice::<Device>(bytes)
        .ok()
        .map(|d| d.metadata.resource_version)
}

#[async_trait]
impl ApplicationStore for EmbeddedStore {
    async fn get_application(&self, name: &AppName) -> StoreResult<Option<StoredApplication>> {
        let txn = self.db.begin_read().map_err(unavailable)?;
        let table = txn.open_table(APPS).map_err(unavailable)?;
        match table.get(name.as_str()).map_err(unavailable)? {
            Some(value) => Self::read_json(value.value()).map(Some),
            None => Ok(None),
        }
    }

    async fn list_applications(&self) -> StoreResult<Vec<StoredApplication>> {
        let txn = self.db.begin_read().map_err(unavailable)?;
        let table = txn.open_table(APPS).map_err(unavailable)?;
        let mut apps = Vec::new();
        for entry in table.iter().map_err(unavailable)? {
            let (_, value) = entry.map_err(unavailable)?;
            apps.push(Self::read_json(value.value())?);
        }
        Ok(apps)
    }

    async fn create_application(&self, app: &StoredApplication) -> StoreResult<()> {
        let (name, value) = (app.app.metadata.name.clone(), json(app));
        let claims = application_claims(&app.app);
        let users = owned_users(app);
        self.write(move |txn| {
            let mut table = txn.open_table(APPS)?;
            if table.get(name.as_str())?.is_some() {
                return Ok(Err(Conflict::AlreadyExists));
            }
            take_app_claims(txn, &name, &claims)?;
            index_users(txn, &name, &[], &users)?;
            table.insert(name.as_str(), value.as_slice())?;
            Ok(Ok(()))
        })
        .await
    }

    async fn update_application_within(
        &self,
        previous: &StoredApplication,
        next: &StoredApplication,
        owner_limit: Option<u64>,
    ) -> StoreResult<()> {
        let (previous, name, value) =
            (previous.clone(), next.app.metadata.name.clone(), json(next));
        let claims = application_claims(&next.app);
        let users = owned_users(next);
        let new_owner = next.owner.clone();
        self.write(move |txn| {
            let Some(current) = current_app(txn, &previous.app)? else {
                return Ok(Err(Conflict::Changed));
            };
            if current.owner != new_owner {
                let app = AppName::parse(&name).expect("stored names are valid");
                let moved = device_count(txn, &app)?;
                let (old, new) = (
                    owner_device_count(txn, &current.owner)?,
                    owner_device_count(txn, &new_owner)?,
                );
                if owner_limit.is_some_and(|limit| new + moved > limit) {
                    return Ok(Err(Conflict::OwnerQuotaExceeded));
                }
                let mut counts = txn.open_table(OWNER_DEVICE_COUNTS)?;
                counts.insert(current.owner.as_str(), old.saturating_sub(moved))?;
                counts.insert(new_owner.as_str(), new + moved)?;
            }
            release_app_claims(txn, &name, &application_claims(&current.app))?;
            take_app_claims(txn, &name, &claims)?;
            index_users(txn, &name, &owned_users(&current), &users)?;
            txn.open_table(APPS)?
                .insert(name.as_str(), value.as_slice())?;
            Ok(Ok(()))
        })
        .await
    }
    async fn delete_application(&self, previous: &StoredApplication) -> StoreResult<()> {
        let previous = previous.app.clone();
        self.write(move |txn| {
            let name = previous.metadata.name.as_str();
            let Some(current) = current_app(txn, &previous)? else {
                return Ok(Err(Conflict::Changed));
            };
            // its devices leave the owner's count
            let app = AppName::parse(name).expect("stored names are valid");
            let (held, owned) = (
                device_count(txn, &app)?,
                owner_device_count(txn, &current.owner)?,
            );
            txn.open_table(OWNER_DEVICE_COUNTS)?
                .insert(current.owner.as_str(), owned.saturating_sub(held))?;
            txn.open_table(APPS)?.remove(name)?;
            index_users(txn, name, &owned_users(&current), &[])?;
            release_app_claims(txn, name, &application_claims(&current.app))?;
            delete_prefix(txn, DEVICES, name)?;
            txn.open_table(DEVICE_COUNTS)?.remove(name)?;
            index_gateways_of_app(txn, name)?;
            delete_prefix(txn, CLAIMS, name)?;
            Ok(Ok(()))
        })
        .await
    }
    async fn list_applications_of(&self, user: &str) -> StoreResult<Vec<StoredApplication>> {
        self.read_indexed(USER_APPS, APPS, user)
    }

    async fn find_applications_by_claim(&self, claim: &Claim) -> StoreResult<Vec<AppName>> {
        let txn = self.db.begin_read().map_err(unavailable)?;
        let table = txn.open_table(APP_CLAIMS).map_err(unavailable)?;
        let mut found = Vec::new();
        for entry in table.range((claim.key(), "")..).map_err(unavailable)? {
            let (key, _) = entry.map_err(unavailable)?;
            let (subject, app) = key.value();
            if subject != claim.key() {
                break;
            }
            if let Ok(name) = AppName::parse(app) {
                found.push(name);
            }
        }
        Ok(found)
    }
}

fn owned_users(app: &StoredApplication) -> Vec<String> {
    app.users().into_iter().map(str::to_owned).collect()
}

/// Moves an application's entries in the per-user index from `before` to `after`.
fn index_users(
    txn: &WriteTransaction,
    app: &str,
    before: &[String],
    after: &[String],
) -> Result<(), redb::Error> {
    let mut index = txn.open_table(USER_APPS)?;
    for user in before.iter().filter(|u| !after.contains(u)) {
        index.remove((user.as_str(), app))?;
    }
    for user in after {
        index.insert((user.as_str(), app), ())?;
    }
    Ok(())
}

/// Adds an application's entries to the shared trust anchor subject index.
fn take_app_claims(txn: &WriteTransaction, app: &str, claims: &[Claim]) -> Result<(), redb::Error> {
    let mut table = txn.open_table(APP_CLAIMS)?;
    for claim in claims {
        table.insert((claim.key(), app), ())?;
    }
    Ok(())
}

/// Removes an application's entries (only its own) from the trust anchor subject index.
fn release_app_claims(
    txn: &WriteTransaction,
    app: &str,
    claims: &[Claim],
) -> Result<(), redb::Error> {
    let mut table = txn.open_table(APP_CLAIMS)?;
    for claim in claims {
        table.remove((claim.key(), app))?;
    }
    Ok(())
}

/// Moves the entries of the earlier, exclusive subject index into the shared one and
/// drops it; nothing to do on a database made since.
fn migrate_app_claims(txn: &WriteTransaction) -> Result<(), redb::Error> {
    let legacy: Vec<(String, String)> = txn
        .open_table(LEGACY_APP_CLAIMS)?
        .iter()?
        .map(|entry| entry.map(|(k, v)| (k.value().to_owned(), v.value().to_owned())))
        .collect::<Result<_, _>>()?;
    let mut table = txn.open_table(APP_CLAIMS)?;
    for (subject, app) in &legacy {
        table.insert((subject.as_str(), app.as_str()), ())?;
    }
    drop(table);
    txn.delete_table(LEGACY_APP_CLAIMS)?;
    Ok(())
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

#[async_trait]
impl DeviceStore for EmbeddedStore {
    async fn get_device(&self, app: &AppName, device: &DeviceName) -> StoreResult<Option<Device>> {
        let txn = self.db.begin_read().map_err(unavailable)?;
        let table = txn.open_table(DEVICES).map_err(unavailable)?;
        match table
            .get((app.as_str(), device.as_str()))
            .map_err(unavailable)?
        {
            Some(value) => Self::read_json(value.value()).map(Some),
            None => Ok(None),
        }
    }

    async fn list_devices(&self, app: &AppName) -> StoreResult<Vec<Device>> {
        let txn = self.db.begin_read().map_err(unavailable)?;
        let table = txn.open_table(DEVICES).map_err(unavailable)?;
        let mut devices = Vec::new();
        for entry in table.range((app.as_str(), "")..).map_err(unavailable)? {
            let (key, value) = entry.map_err(unavailable)?;
            if key.value().0 != app.as_str() {
                break;
            }
            devices.push(Self::read_json(value.value())?);
        }
        Ok(devices)
    }

    async fn devices_served_by(
        &self,
        app: &AppName,
        gateway: &str,
    ) -> StoreResult<Vec<DeviceName>> {
        let txn = self.db.begin_read().map_err(unavailable)?;
        let index = txn.open_table(GATEWAYS).map_err(unavailable)?;
        let mut served = Vec::new();
        for entry in index
            .range((app.as_str(), gateway, "")..)
            .map_err(unavailable)?
        {
            let (key, _) = entry.map_err(unavailable)?;
            let (a, g, device) = key.value();
            if a != app.as_str() || g != gateway {
                break;
            }
            if let Ok(name) = DeviceName::parse(device) {
                served.push(name);
            }
        }
        Ok(served)
    }

    async fn find_device_by_claim(
        &self,
        app: &AppName,
        claim: &Claim,
    ) -> StoreResult<Option<DeviceName>> {
        let txn = self.db.begin_read().map_err(unavailable)?;
        let table = txn.open_table(CLAIMS).map_err(unavailable)?;
        let found = table
            .get((app.as_str(), claim.key()))
            .map_err(unavailable)?
            .map(|v| v.value().to_owned());
        Ok(found.and_then(|name| DeviceName::parse(&name).ok()))
    }

    async fn count_devices(&self, app: &AppName) -> StoreResult<u64> {
        let txn = self.db.begin_read().map_err(unavailable)?;
        let counts = txn.open_table(DEVICE_COUNTS).map_err(unavailable)?;
        if let Some(count) = counts.get(app.as_str()).map_err(unavailable)? {
            return Ok(count.value());
        }
        let devices = txn.open_table(DEVICES).map_err(unavailable)?;
        let mut count = 0;
        for entry in devices.range((app.as_str(), "")..).map_err(unavailable)? {
            if entry.map_err(unavailable)?.0.value().0 != app.as_str() {
                break;
            }
            count += 1;
        }
        Ok(count)
    }

    async fn count_owned_devices(&self, user: &str) -> StoreResult<u64> {
        let user = user.to_owned();
        // (a write: counts of data written before there were counts are made once)
        self.write(move |txn| {
            let count = owner_device_count(txn, &user)?;
            txn.open_table(OWNER_DEVICE_COUNTS)?
                .insert(user.as_str(), count)?;
            Ok(Ok(count))
        })
        .await
    }

    async fn create_device_limited(
        &self,
        app: &AppName,
        device: &Device,
        limits: DeviceLimits,
    ) -> StoreResult<()> {
        let (app, device) = (app.clone(), device.clone());
        let limit = limits.per_application;
        self.write(move |txn| {
            if !application_accepts_devices(txn, &app)? {
                return Ok(Err(Conflict::ApplicationGone));
            }
            let name = device.metadata.name.as_str();
            let owner = application_owner(txn, &app)?.unwrap_or_default();
            let owned = owner_device_count(txn, &owner)?;
            // (before the devices table is open: it may count in it)
            let held = device_count(txn, &app)?;
            let mut devices = txn.open_table(DEVICES)?;
            if devices.get((app.as_str(), name))?.is_some() {
                return Ok(Err(Conflict::AlreadyExists));
            }
            if limit.is_some_and(|limit| held >= limit) {
                return Ok(Err(Conflict::QuotaExceeded));
            }
            if limits.per_owner.is_some_and(|limit| owned >= limit) {
                return Ok(Err(Conflict::OwnerQuotaExceeded));
            }
            txn.open_table(DEVICE_COUNTS)?
                .insert(app.as_str(), held + 1)?;
            txn.open_table(OWNER_DEVICE_COUNTS)?
                .insert(owner.as_str(), owned + 1)?;
            if let Err(conflict) = take_claims(txn, &app, name, &device_claims(&device))? {
                return Ok(Err(conflict));
            }
            index_gateways(txn, app.as_str(), name, &[], &device_gateways(&device))?;
            devices.insert((app.as_str(), name), json(&device).as_slice())?;
            Ok(Ok(()))
        })
        .await
    }

    async fn update_device(
        &self,
        app: &AppName,
        previous: &Device,
        next: &Device,
    ) -> StoreResult<()> {
        let (app, previous, next) = (app.clone(), previous.clone(), next.clone());
        self.write(move |txn| {
            let name = next.metadata.name.as_str();
            let mut devices = txn.open_table(DEVICES)?;
            let current = devices
                .get((app.as_str(), name))?
                .and_then(|v| device_revision(v.value()));
            if current.as_ref() != Some(&previous.metadata.resource_version) {
                return Ok(Err(Conflict::Changed));
            }
            release_claims(txn, &app, &device_claims(&previous))?;
            if let Err(conflict) = take_claims(txn, &app, name, &device_claims(&next))? {
                return Ok(Err(conflict));
            }
            let gateways = (device_gateways(&previous), device_gateways(&next));
            index_gateways(txn, app.as_str(), name, &gateways.0, &gateways.1)?;
            devices.insert((app.as_str(), name), json(&next).as_slice())?;
            Ok(Ok(()))
        })
        .await
    }

    async fn delete_device(&self, app: &AppName, previous: &Device) -> StoreResult<()> {
        let (app, previous) = (app.clone(), previous.clone());
        self.write(move |txn| {
            let name = previous.metadata.name.as_str();
            let owner = application_owner(txn, &app)?.unwrap_or_default();
            let owned = owner_device_count(txn, &owner)?;
            // (before the devices table is open: it may count in it)
            let held = device_count(txn, &app)?;
            let mut devices = txn.open_table(DEVICES)?;
            let current = devices
                .get((app.as_str(), name))?
                .and_then(|v| device_revision(v.value()));
            if current.as_ref() != Some(&previous.metadata.resource_version) {
                return Ok(Err(Conflict::Changed));
            }
            devices.remove((app.as_str(), name))?;
            txn.open_table(DEVICE_COUNTS)?
                .insert(app.as_str(), held.saturating_sub(1))?;
            txn.open_table(OWNER_DEVICE_COUNTS)?
                .insert(owner.as_str(), owned.saturating_sub(1))?;
            release_claims(txn, &app, &device_claims(&previous))?;
            index_gateways(txn, app.as_str(), name, &device_gateways(&previous), &[])?;
            Ok(Ok(()))
        })
        .await
    }
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

/// The owner of a stored application.
fn application_owner(txn: &WriteTransaction, app: &AppName) -> Result<Option<String>, redb::Error> {
    let apps = txn.open_table(APPS)?;
    let owner = apps
        .get(app.as_str())?
        .and_then(|v| serde_json::from_slice::<StoredApplication>(v.value()).ok())
        .map(|stored| stored.owner);
    Ok(owner)
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

/// Moves a device's entries in the gateway index from `before` to `after`.
fn index_gateways(
    txn: &WriteTransaction,
    app: &str,
    device: &str,
    before: &[String],
    after: &[String],
) -> Result<(), redb::Error> {
    let mut index = txn.open_table(GATEWAYS)?;
    for gateway in before.iter().filter(|g| !after.contains(g)) {
        index.remove((app, gateway.as_str(), device))?;
    }
    for gateway in after {
        index.insert((app, gateway.as_str(), device), ())?;
    }
    Ok(())
}

/// Removes every gateway index entry of an application.
fn index_gateways_of_app(txn: &WriteTransaction, app: &str) -> Result<(), redb::Error> {
    let mut index = txn.open_table(GATEWAYS)?;
    let keys: Vec<(String, String)> = index
        .range((app, "", "")..)?
        .map_while(|entry| {
            entry
                .map(|(k, _)| {
                    let (a, gateway, device) = k.value();
                    (a == app).then(|| (gateway.to_owned(), device.to_owned()))
                })
                .transpose()
        })
        .collect::<Result<_, _>>()?;
    for (gateway, device) in keys {
        index.remove((app, gateway.as_str(), device.as_str()))?;
    }
    Ok(())
}

fn application_accepts_devices(txn: &WriteTransaction, app: &AppName) -> Result<bool, redb::Error> {
    let apps = txn.open_table(APPS)?;
    let Some(value) = apps.get(app.as_str())? else {
        return Ok(false);
    };
    let stored: Option<StoredApplication> = serde_json::from_slice(value.value()).ok();
    Ok(stored.is_some_and(|s| !s.app.is_deleting()))
}

fn take_claims(
    txn: &WriteTransaction,
    app: &AppName,
    device: &str,
    claims: &[Claim],
) -> Outcome<()> {
    let mut table = txn.open_table(CLAIMS)?;
    for claim in claims {
        let key = (app.as_str(), claim.key());
        if let Some(holder) = table.get(key)?
            && holder.value() != device
        {
            return Ok(Err(Conflict::ClaimTaken(claim.clone())));
        }
        table.insert(key, device)?;
    }
    Ok(Ok(()))
}

fn release_claims(
    txn: &WriteTransaction,
    app: &AppName,
    claims: &[Claim],
) -> Result<(), redb::Error> {
    let mut table = txn.open_table(CLAIMS)?;
    for claim in claims {
        table.remove((app.as_str(), claim.key()))?;
    }
    Ok(())
}

#[async_trait]
impl TokenStore for EmbeddedStore {
    async fn create_token(&self, token: &StoredToken) -> StoreResult<()> {
        let token = token.clone();
        self.write(move |txn| {
            let mut tokens = txn.open_table(TOKENS)?;
            if tokens.get(token.prefix.as_str())?.is_some() {
                return Ok(Err(Conflict::AlreadyExists));
            }
            tokens.insert(token.prefix.as_str(), json(&token).as_slice())?;
            txn.open_table(USER_TOKENS)?
                .insert((token.user.as_str(), token.prefix.as_str()), ())?;
            Ok(Ok(()))
        })
        .await
    }

    async fn get_token(&self, prefix: &str) -> StoreResult<Option<StoredToken>> {
        let txn = self.db.begin_read().map_err(unavailable)?;
        let table = txn.open_table(TOKENS).map_err(unavailable)?;
        match table.get(prefix).map_err(unavailable)? {
            Some(value) => Self::read_json(value.value()).map(Some),
            None => Ok(None),
        }
    }

    async fn list_tokens(&self, user: &str) -> StoreResult<Vec<StoredToken>> {
        self.read_indexed(USER_TOKENS, TOKENS, user)
    }

    async fn delete_token(&self, user: &str, prefix: &str) -> StoreResult<bool> {
        let (user, prefix) = (user.to_owned(), prefix.to_owned());
        self.write(move |txn| {
            let mut tokens = txn.open_table(TOKENS)?;
            let owned = match tokens.get(prefix.as_str())? {
                Some(value) => serde_json::from_slice::<StoredToken>(value.value())
                    .is_ok_and(|t| t.user == user),
                None => false,
            };
            if owned {
                tokens.remove(prefix.as_str())?;
                txn.open_table(USER_TOKENS)?
                    .remove((user.as_str(), prefix.as_str()))?;
            }
            Ok(Ok(owned))
        })
        .await
    }
}
