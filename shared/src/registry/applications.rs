//! Applications: create, read, list, update, delete.

use super::lifecycle::{self, DeletePlan, UpdatePlan};
use super::{
    ListOptions, Registry, RegistryError, RegistryResult, not_found, store_error, unavailable,
};
use crate::access::{Permission, Principal};
use crate::events::Change;
use crate::model::status::application_status;
use crate::model::{AppName, Application, DeleteOptions, ResourceInput};
use crate::store::StoredApplication;
use chrono::Utc;

impl Registry {
    /// Creates an application owned by the caller.
    pub async fn create_application(
        &self,
        principal: &Principal,
        input: ResourceInput,
    ) -> RegistryResult<Application> {
        self.admit_write(principal)?;
        let name = input
            .metadata
            .name
            .clone()
            .ok_or_else(|| RegistryError::InvalidRequest("metadata.name is required".into()))?;
        let name =
            AppName::parse(&name).map_err(|e| RegistryError::InvalidRequest(e.to_string()))?;
        self.check_application_quota(principal).await?;
        let now = Utc::now();
        let status = application_status(&input.spec, None, now)
            .map_err(|e| RegistryError::InvalidRequest(e.to_string()))?;
        let app = Application {
            metadata: lifecycle::new_metadata(name.to_string(), None, input.metadata, now),
            spec: input.spec,
            status,
        };
        let stored = StoredApplication {
            app,
            owner: principal.user.clone(),
            members: Default::default(),
            transfer_owner: None,
        };
        self.applications
            .create_application(&stored)
            .await
            .map_err(store_error(|| format!("the application '{name}'")))?;
        self.changed(&stored.app, None, Change::Created).await;
        tracing::info!(application = %name, owner = %principal.user, "application created");
        Ok(stored.app)
    }

    /// Refuses a new application to a user who owns as many as the quota allows.
    async fn check_application_quota(&self, principal: &Principal) -> RegistryResult<()> {
        let limit = self.quotas.applications_per_user;
        if limit == 0 || self.authz.is_admin(principal) {
            return Ok(());
        }
        let owned = self
            .applications
            .list_applications_of(&principal.user)
            .await
            .map_err(unavailable)?
            .iter()
            .filter(|a| a.owner == principal.user)
            .count();
        if owned >= limit {
            return Err(RegistryError::QuotaExceeded(format!(
                "a user may own at most {limit} applications"
            )));
        }
        Ok(())
    }

    /// An application the caller may read.
    pub async fn get_application(
        &self,
        principal: &Principal,
        name: &AppName,
    ) -> RegistryResult<Application> {
        Ok(self
            .application_for(principal, name, Permission::Read)
            .await?
            .app)
    }

    /// The applications the caller may read, ordered by name, filtered and paged.
    pub async fn list_applications(
        &self,
        principal: &Principal,
        options: &ListOptions,
    ) -> RegistryResult<Vec<Application>> {
        let readable = self.readable_applications(principal).await?;
        Ok(options.apply(readable.into_iter().map(|(app, _)| app)))
    }

    /// The applications a user may read, ordered by name, each with whether the user owns
    /// it (for an application client's policy on IoT Core, which holds its own
    /// applications before those other users made it a member of).
    pub async fn readable_applications(
        &self,
        principal: &Principal,
    ) -> RegistryResult<Vec<(Application, bool)>> {
        let all = if self.authz.is_admin(principal) {
            self.applications.list_applications().await
        } else {
            self.applications
                .list_applications_of(&principal.user)
                .await
        }
        .map_err(unavailable)?;
        Ok(all
            .into_iter()
            .filter(|a| self.authz.permits(principal, a, Permission::Read))
            .map(|a| {
                let owned = a.owner == principal.user;
                (a.app, owned)
            })
            .collect())
    }

    /// Replaces an application's labels, annotations, finalizers and spec.
    pub async fn update_application(
        &self,
        principal: &Principal,
        name: &AppName,
        input: ResourceInput,
    ) -> RegistryResult<()> {
        self.admit_write(principal)?;
        if input.metadata.name.as_deref() != Some(name.as_str()) {
            return Err(RegistryError::InvalidRequest(format!(
                "metadata.name must be the application of the path ('{name}')"
            )));
        }
        let current = self
            .application_for(principal, name, Permission::Write)
            .await?;
        let what = || format!("the application '{name}'");
        match lifecycle::plan_update(&current.app, &input.metadata, &input.spec)? {
            UpdatePlan::Unchanged => Ok(()),
            UpdatePlan::Remove => {
                self.applications
                    .delete_application(&current)
                    .await
                    .map_err(store_error(what))?;
                self.changed(&current.app, None, Change::Deleted).await;
                Ok(())
            }
            UpdatePlan::Write(metadata) => {
                let status = application_status(&input.spec, Some(&current.app.status), Utc::now())
                    .map_err(|e| RegistryError::InvalidRequest(e.to_string()))?;
                let next = StoredApplication {
                    app: Application {
                        metadata,
                        spec: input.spec,
                        status,
                    },
                    ..current.clone()
                };
                self.applications
                    .update_application(&current, &next)
                    .await
                    .map_err(store_error(what))?;
                self.changed(&next.app, None, Change::Updated).await;
                Ok(())
            }
        }
    }

    /// Deletes an application and all its devices (or marks it deleted while
    /// finalizers remain).
    pub async fn delete_application(
        &self,
        principal: &Principal,
        name: &AppName,
        options: DeleteOptions,
    ) -> RegistryResult<()> {
        self.admit_write(principal)?;
        let current = self
            .application_for(principal, name, Permission::Admin)
            .await?;
        if current.app.is_deleting() {
            return Err(not_found(name));
        }
        let what = || format!("the application '{name}'");
        match lifecycle::plan_delete(&current.app, &options.preconditions, Utc::now())? {
            DeletePlan::Remove => {
                self.applications
                    .delete_application(&current)
                    .await
                    .map_err(store_error(what))?;
                self.changed(&current.app, None, Change::Deleted).await;
                tracing::info!(application = %name, "application deleted");
                Ok(())
            }
            DeletePlan::MarkDeleted(metadata) => {
                let mut next = current.clone();
                next.app.metadata = metadata;
                self.applications
                    .update_application(&current, &next)
                    .await
                    .map_err(store_error(what))?;
                self.changed(&next.app, None, Change::Updated).await;
                Ok(())
            }
        }
    }
}
