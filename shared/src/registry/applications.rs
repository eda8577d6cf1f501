//! Applications: create, read, list, update, delete.

use super::lifecycle::{self, DeletePlan, UpdatePlan};
use super::{ListOptions, Registry, RegistryError, RegistryResult, store_error, unavailable};
use crate::model::status::application_status;
use crate::model::{AppName, Application, DeleteOptions, ResourceInput};
use crate::store::StoredApplication;
use chrono::Utc;

impl Registry {
    /// Creates an application owned by `owner`.
    pub async fn create_application(
        &self,
        owner: &str,
        input: ResourceInput,
    ) -> RegistryResult<Application> {
        let name = input
            .metadata
            .name
            .clone()
            .ok_or_else(|| RegistryError::InvalidRequest("metadata.name is required".into()))?;
        let name =
            AppName::parse(&name).map_err(|e| RegistryError::InvalidRequest(e.to_string()))?;
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
            owner: owner.to_owned(),
        };
        self.store
            .create_application(&stored)
            .await
            .map_err(store_error(|| format!("the application '{name}'")))?;
        tracing::info!(application = %name, owner, "application created");
        Ok(stored.app)
    }

    /// An application, if it exists.
    pub async fn get_application(
        &self,
        name: &AppName,
    ) -> RegistryResult<Option<StoredApplication>> {
        self.store.get_application(name).await.map_err(unavailable)
    }

    /// Applications ordered by name, filtered and paged.
    pub async fn list_applications(
        &self,
        options: &ListOptions,
    ) -> RegistryResult<Vec<Application>> {
        let all = self.store.list_applications().await.map_err(unavailable)?;
        Ok(options.apply(all.into_iter().map(|s| s.app)))
    }

    /// Replaces an application's metadata labels, annotations, finalizers and spec.
    pub async fn update_application(
        &self,
        name: &AppName,
        input: ResourceInput,
    ) -> RegistryResult<()> {
        if input.metadata.name.as_deref() != Some(name.as_str()) {
            return Err(RegistryError::InvalidRequest(format!(
                "metadata.name must be the application of the path ('{name}')"
            )));
        }
        let current = self.existing_application(name).await?;
        let what = || format!("the application '{name}'");
        match lifecycle::plan_update(&current.app, &input.metadata, &input.spec)? {
            UpdatePlan::Unchanged => Ok(()),
            UpdatePlan::Remove => self
                .store
                .delete_application(&current.app)
                .await
                .map_err(store_error(what)),
            UpdatePlan::Write(metadata) => {
                let status = application_status(&input.spec, Some(&current.app.status), Utc::now())
                    .map_err(|e| RegistryError::InvalidRequest(e.to_string()))?;
                let next = StoredApplication {
                    app: Application {
                        metadata,
                        spec: input.spec,
                        status,
                    },
                    owner: current.owner.clone(),
                };
                self.store
                    .update_application(&current.app, &next)
                    .await
                    .map_err(store_error(what))
            }
        }
    }

    /// Deletes an application and all its devices (or marks it deleted while
    /// finalizers remain).
    pub async fn delete_application(
        &self,
        name: &AppName,
        options: DeleteOptions,
    ) -> RegistryResult<()> {
        let current = self.existing_application(name).await?;
        if current.app.is_deleting() {
            return Err(not_found(name));
        }
        let what = || format!("the application '{name}'");
        match lifecycle::plan_delete(&current.app, &options.preconditions, Utc::now())? {
            DeletePlan::Remove => {
                self.store
                    .delete_application(&current.app)
                    .await
                    .map_err(store_error(what))?;
                tracing::info!(application = %name, "application deleted");
                Ok(())
            }
            DeletePlan::MarkDeleted(metadata) => {
                let next = StoredApplication {
                    app: Application {
                        metadata,
                        ..current.app.clone()
                    },
                    owner: current.owner.clone(),
                };
                self.store
                    .update_application(&current.app, &next)
                    .await
                    .map_err(store_error(what))
            }
        }
    }

    /// The application, or `NotFound`.
    pub(super) async fn existing_application(
        &self,
        name: &AppName,
    ) -> RegistryResult<StoredApplication> {
        self.get_application(name)
            .await?
            .ok_or_else(|| not_found(name))
    }
}

fn not_found(name: &AppName) -> RegistryError {
    RegistryError::NotFound(format!("the application '{name}' does not exist"))
}
