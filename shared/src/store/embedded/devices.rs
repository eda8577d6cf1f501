//! Devices in the embedded store, with their claims (names, aliases, unique usernames),
//! the index of the devices each gateway serves, and the device counts.

use super::{
    APPS, CLAIMS, DEVICE_COUNTS, DEVICES, EmbeddedStore, GATEWAYS, OWNER_DEVICE_COUNTS, Outcome,
    device_count, json, owner_device_count, unavailable,
};
use crate::model::{AppName, Claim, Device, DeviceName, LabelSelector};
use crate::store::{
    Conflict, DeviceLimits, DeviceStore, StoreError, StoreResult, StoredApplication, device_claims,
    device_gateways,
};
use async_trait::async_trait;
use redb::{ReadableDatabase, ReadableTable, WriteTransaction};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The `resourceVersion` of a stored device, for conditional writes.
fn device_revision(bytes: &[u8]) -> Option<String> {
    serde_json::from_slice::<Device>(bytes)
        .ok()
        .map(|d| d.metadata.resource_version)
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

    async fn get_application_device(
        &self,
        app: &AppName,
        device: &DeviceName,
    ) -> StoreResult<Option<(StoredApplication, Option<Device>)>> {
        // one read transaction: both as of the same commit
        let txn = self.db.begin_read().map_err(unavailable)?;
        let apps = txn.open_table(APPS).map_err(unavailable)?;
        let Some(stored) = apps.get(app.as_str()).map_err(unavailable)? else {
            return Ok(None);
        };
        let stored: StoredApplication = Self::read_json(stored.value())?;
        let devices = txn.open_table(DEVICES).map_err(unavailable)?;
        let device = match devices
            .get((app.as_str(), device.as_str()))
            .map_err(unavailable)?
        {
            Some(value) => Some(Self::read_json(value.value())?),
            None => None,
        };
        Ok(Some((stored, device)))
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

    async fn list_devices_page(
        &self,
        app: &AppName,
        selector: &LabelSelector,
        offset: usize,
        limit: Option<usize>,
    ) -> StoreResult<Vec<Device>> {
        // a read that may walk a large application: off the async workers
        let (store, app, selector) = (self.clone(), app.clone(), selector.clone());
        tokio::task::spawn_blocking(move || store.devices_page(&app, &selector, offset, limit))
            .await
            .map_err(StoreError::unavailable)?
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
        self.write(move |txn| create_in(txn, &app, &device, limits))
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

/// The labels of a stored device, read without the rest of it.
#[derive(Deserialize)]
struct LabelsOnly {
    metadata: MetadataLabels,
}

#[derive(Deserialize)]
struct MetadataLabels {
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

impl EmbeddedStore {
    /// [`DeviceStore::list_devices_page`]: one walk over the application's keys; a
    /// skipped device is not decoded (with a selector, only its labels are), so a page
    /// costs its own devices plus a key step per device before it.
    fn devices_page(
        &self,
        app: &AppName,
        selector: &LabelSelector,
        offset: usize,
        limit: Option<usize>,
    ) -> StoreResult<Vec<Device>> {
        let limit = limit.unwrap_or(usize::MAX);
        let mut page = Vec::new();
        if limit == 0 {
            return Ok(page);
        }
        let txn = self.db.begin_read().map_err(unavailable)?;
        let table = txn.open_table(DEVICES).map_err(unavailable)?;
        let mut skipped = 0;
        for entry in table.range((app.as_str(), "")..).map_err(unavailable)? {
            let (key, value) = entry.map_err(unavailable)?;
            if key.value().0 != app.as_str() {
                break;
            }
            if !selector.is_empty() {
                let labels: LabelsOnly = Self::read_json(value.value())?;
                if !selector.matches(&labels.metadata.labels) {
                    continue;
                }
            }
            if skipped < offset {
                skipped += 1;
                continue;
            }
            page.push(Self::read_json(value.value())?);
            if page.len() >= limit {
                break;
            }
        }
        Ok(page)
    }

    /// Creates devices of one application in one transaction (one commit, one `fsync`),
    /// each with the checks and index entries of [`DeviceStore::create_device_limited`]
    /// (the application exists and is not being deleted, the quotas, a name free, its
    /// aliases and unique usernames free, the gateway index, the counts): all of them
    /// or, at the first conflict, none, and the position of the device that failed with
    /// its conflict. Devices come as the registry makes them (their specs checked and
    /// their passwords hashed); for imports and for filling a store to measure it.
    pub async fn create_devices_limited(
        &self,
        app: &AppName,
        devices: Vec<Device>,
        limits: DeviceLimits,
    ) -> StoreResult<Result<(), (usize, Conflict)>> {
        let app = app.clone();
        let failed = Arc::new(AtomicUsize::new(usize::MAX));
        let at = failed.clone();
        let outcome = self
            .write(move |txn| {
                for (position, device) in devices.iter().enumerate() {
                    if let Err(conflict) = create_in(txn, &app, device, limits)? {
                        at.store(position, Ordering::Relaxed);
                        return Ok(Err(conflict));
                    }
                }
                Ok(Ok(()))
            })
            .await;
        match outcome {
            Ok(()) => Ok(Ok(())),
            Err(StoreError::Conflict(conflict)) => {
                Ok(Err((failed.load(Ordering::Relaxed), conflict)))
            }
            Err(e) => Err(e),
        }
    }
}

/// One device create within a write transaction; a conflict leaves the transaction to
/// be aborted.
fn create_in(
    txn: &WriteTransaction,
    app: &AppName,
    device: &Device,
    limits: DeviceLimits,
) -> Outcome<()> {
    if !application_accepts_devices(txn, app)? {
        return Ok(Err(Conflict::ApplicationGone));
    }
    let name = device.metadata.name.as_str();
    let owner = application_owner(txn, app)?.unwrap_or_default();
    let owned = owner_device_count(txn, &owner)?;
    // (before the devices table is open: it may count in it)
    let held = device_count(txn, app)?;
    let mut devices = txn.open_table(DEVICES)?;
    if devices.get((app.as_str(), name))?.is_some() {
        return Ok(Err(Conflict::AlreadyExists));
    }
    if limits.per_application.is_some_and(|limit| held >= limit) {
        return Ok(Err(Conflict::QuotaExceeded));
    }
    if limits.per_owner.is_some_and(|limit| owned >= limit) {
        return Ok(Err(Conflict::OwnerQuotaExceeded));
    }
    txn.open_table(DEVICE_COUNTS)?
        .insert(app.as_str(), held + 1)?;
    txn.open_table(OWNER_DEVICE_COUNTS)?
        .insert(owner.as_str(), owned + 1)?;
    if let Err(conflict) = take_claims(txn, app, name, &device_claims(device))? {
        return Ok(Err(conflict));
    }
    index_gateways(txn, app.as_str(), name, &[], &device_gateways(device))?;
    devices.insert((app.as_str(), name), json(device).as_slice())?;
    Ok(Ok(()))
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
pub(super) fn index_gateways_of_app(txn: &WriteTransaction, app: &str) -> Result<(), redb::Error> {
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
