//! Applications in the embedded store, with the per-user index of the applications a user
//! owns or is a member of and the shared index of trust anchor subjects.

use super::devices::index_gateways_of_app;
use super::{
    APP_CLAIMS, APPS, CLAIMS, DEVICE_COUNTS, DEVICES, EmbeddedStore, LEGACY_APP_CLAIMS,
    OWNER_DEVICE_COUNTS, USER_APPS, delete_prefix, device_count, json, owner_device_count,
    unavailable,
};
use crate::model::{AppName, Application, Claim};
use crate::store::{
    ApplicationStore, Conflict, StoreResult, StoredApplication, application_claims,
};
use async_trait::async_trait;
use redb::{ReadableDatabase, ReadableTable, WriteTransaction};

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
pub(super) fn migrate_app_claims(txn: &WriteTransaction) -> Result<(), redb::Error> {
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
