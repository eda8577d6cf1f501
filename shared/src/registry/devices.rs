//! Devices of an application: create, read, list, update, delete.

use super::lifecycle::{self, DeletePlan, UpdatePlan};
use super::{ListOptions, Registry, RegistryError, RegistryResult, store_error, unavailable};
use crate::access::{Permission, Principal};
use crate::events::Change;
use crate::model::device_spec::{prepare_device_spec, redact_secrets};
use crate::model::status::device_status;
use crate::model::{AppName, DeleteOptions, Device, DeviceName, ResourceInput};
use crate::store::StoredApplication;
use chrono::Utc;

impl Registry {
    /// Creates a device in an existing application.
    pub async fn create_device(
        &self,
        principal: &Principal,
        app: &AppName,
        input: ResourceInput,
    ) -> RegistryResult<Device> {
        self.admit_write(principal)?;
        check_application(app, &input)?;
        let name = input
            .metadata
            .name
            .clone()
            .ok_or_else(|| RegistryError::InvalidRequest("metadata.name is required".into()))?;
        let name =
            DeviceName::parse(&name).map_err(|e| RegistryError::InvalidRequest(e.to_string()))?;
        let stored = match self
            .application_for(principal, app, Permission::Write)
            .await
        {
            Ok(stored) if !stored.app.is_deleting() => stored,
            Ok(_) | Err(RegistryError::NotFound(_)) => {
                return Err(RegistryError::ReferenceNotFound(app.to_string()));
            }
            Err(e) => return Err(e),
        };
        let spec = prepare_device_spec(input.spec)
            .map_err(|e| RegistryError::InvalidRequest(e.to_string()))?;
        let now = Utc::now();
        let device = Device {
            metadata: lifecycle::new_metadata(
                name.to_string(),
                Some(app.to_string()),
                input.metadata,
                now,
            ),
            spec,
            status: device_status(None, now),
        };
        // the quotas keep one tenant from filling the store; administrators are not held
        // (their devices count); the devices of all applications a user owns count
        // against that owner, whoever creates them
        let admin = self.authz.is_admin(principal);
        let limit = |quota: usize| (quota != 0 && !admin).then_some(quota as u64);
        let limits = crate::store::DeviceLimits {
            per_application: limit(self.quotas.devices_per_application),
            per_owner: limit(self.quotas.devices_per_user),
        };
        self.devices
            .create_device_limited(app, &device, limits)
            .await
            .map_err(|e| match e {
                crate::store::StoreError::Conflict(crate::store::Conflict::QuotaExceeded) => {
                    RegistryError::QuotaExceeded(format!(
                        "an application may hold at most {} devices",
                        self.quotas.devices_per_application
                    ))
                }
                crate::store::StoreError::Conflict(crate::store::Conflict::OwnerQuotaExceeded) => {
                    RegistryError::QuotaExceeded(format!(
                        "the applications a user owns may hold at most {} devices together, and \
                     the owner of '{app}' holds that many",
                        self.quotas.devices_per_user
                    ))
                }
                e => store_error(|| format!("the device '{name}'"))(e),
            })?;
        self.changed(&stored.app, Some(&device), Change::Created)
            .await;
        tracing::info!(application = %app, device = %name, "device created");
        Ok(device)
    }

    /// A device of an application the caller may read, if it exists.
    pub async fn get_device(
        &self,
        principal: &Principal,
        app: &AppName,
        name: &DeviceName,
    ) -> RegistryResult<Option<Device>> {
        let stored = self
            .application_for(principal, app, Permission::Read)
            .await?;
        let device = self
            .devices
            .get_device(app, name)
            .await
            .map_err(unavailable)?;
        Ok(device.map(|d| self.as_seen_by(principal, &stored, d)))
    }

    /// A device as `principal` may see it: without secrets unless it may change it.
    fn as_seen_by(
        &self,
        principal: &Principal,
        app: &crate::store::StoredApplication,
        mut device: Device,
    ) -> Device {
        if !self.authz.permits(principal, app, Permission::Write) {
            redact_secrets(&mut device.spec);
        }
        device
    }

    /// The devices of an application the caller may read, ordered by name, filtered and
    /// paged.
    pub async fn list_devices(
        &self,
        principal: &Principal,
        app: &AppName,
        options: &ListOptions,
    ) -> RegistryResult<Vec<Device>> {
        let stored = self
            .application_for(principal, app, Permission::Read)
            .await?;
        // the store skips and filters: a page costs what it holds, not the application
        let page = self
            .devices
            .list_devices_page(
                app,
                &options.selector,
                options.offset.unwrap_or(0),
                options.limit,
            )
            .await
            .map_err(unavailable)?;
        Ok(page
            .into_iter()
            .map(|d| self.as_seen_by(principal, &stored, d))
            .collect())
    }

    /// Replaces a device's labels, annotations, finalizers and spec.
    pub async fn update_device(
        &self,
        principal: &Principal,
        app: &AppName,
        name: &DeviceName,
        input: ResourceInput,
    ) -> RegistryResult<()> {
        self.admit_write(principal)?;
        check_application(app, &input)?;
        if input.metadata.name.as_deref() != Some(name.as_str()) {
            return Err(RegistryError::InvalidRequest(format!(
                "metadata.name must be the device of the path ('{name}')"
            )));
        }
        let (stored, current) = self.existing_device(principal, app, name).await?;
        let spec = prepare_device_spec(input.spec)
            .map_err(|e| RegistryError::InvalidRequest(e.to_string()))?;
        let what = || format!("the device '{name}'");
        match lifecycle::plan_update(&current, &input.metadata, &spec)? {
            UpdatePlan::Unchanged => Ok(()),
            UpdatePlan::Remove => {
                self.devices
                    .delete_device(app, &current)
                    .await
                    .map_err(store_error(what))?;
                self.changed(&stored.app, Some(&current), Change::Deleted)
                    .await;
                Ok(())
            }
            UpdatePlan::Write(metadata) => {
                let next = Device {
                    metadata,
                    spec,
                    status: device_status(Some(&current.status), Utc::now()),
                };
                self.devices
                    .update_device(app, &current, &next)
                    .await
                    .map_err(store_error(what))?;
                self.changed(&stored.app, Some(&next), Change::Updated)
                    .await;
                Ok(())
            }
        }
    }

    /// Deletes a device (or marks it deleted while finalizers remain).
    pub async fn delete_device(
        &self,
        principal: &Principal,
        app: &AppName,
        name: &DeviceName,
        options: DeleteOptions,
    ) -> RegistryResult<()> {
        self.admit_write(principal)?;
        let (stored, current) = self.existing_device(principal, app, name).await?;
        if current.is_deleting() {
            return Err(not_found(app, name));
        }
        let what = || format!("the device '{name}'");
        match lifecycle::plan_delete(&current, &options.preconditions, Utc::now())? {
            DeletePlan::Remove => {
                self.devices
                    .delete_device(app, &current)
                    .await
                    .map_err(store_error(what))?;
                self.changed(&stored.app, Some(&current), Change::Deleted)
                    .await;
                tracing::info!(application = %app, device = %name, "device deleted");
                Ok(())
            }
            DeletePlan::MarkDeleted(metadata) => {
                let next = Device {
                    metadata,
                    ..current.clone()
                };
                self.devices
                    .update_device(app, &current, &next)
                    .await
                    .map_err(store_error(what))?;
                self.changed(&stored.app, Some(&next), Change::Updated)
                    .await;
                Ok(())
            }
        }
    }

    /// A device to change, and its application: the caller needs write access to it.
    async fn existing_device(
        &self,
        principal: &Principal,
        app: &AppName,
        name: &DeviceName,
    ) -> RegistryResult<(StoredApplication, Device)> {
        let stored = self
            .application_for(principal, app, Permission::Write)
            .await?;
        let device = self
            .devices
            .get_device(app, name)
            .await
            .map_err(unavailable)?
            .ok_or_else(|| not_found(app, name))?;
        Ok((stored, device))
    }
}

/// `metadata.application`, when given, must be the application of the path.
fn check_application(app: &AppName, input: &ResourceInput) -> RegistryResult<()> {
    match input.metadata.application.as_deref() {
        Some(given) if given != app.as_str() => Err(RegistryError::InvalidRequest(format!(
            "metadata.application must be the application of the path ('{app}')"
        ))),
        _ => Ok(()),
    }
}

fn not_found(app: &AppName, name: &DeviceName) -> RegistryError {
    RegistryError::NotFound(format!(
        "the device '{name}' does not exist in the application '{app}'"
    ))
}
