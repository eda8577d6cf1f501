//! Members of an application and the transfer of its ownership, as Drogue Cloud's admin
//! API has them (`/api/admin/v1alpha1/apps/{app}/...`).

use super::{Registry, RegistryError, RegistryResult, not_found, store_error};
use crate::access::{Permission, Principal, Role};
use crate::events::Change;
use crate::model::AppName;
use crate::store::StoreError;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Most members an application may have.
pub const MAX_MEMBERS: usize = 32;

/// The members document; `resourceVersion` is the application's, for optimistic locking.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Members {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_version: Option<String>,
    #[serde(default)]
    pub members: BTreeMap<String, MemberEntry>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MemberEntry {
    pub role: Role,
}

/// A pending transfer: `{"newUser": ".."}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TransferOwnership {
    pub new_user: String,
}

impl Registry {
    /// The members of an application (application administrators only).
    pub async fn members(&self, principal: &Principal, name: &AppName) -> RegistryResult<Members> {
        let app = self
            .application_for(principal, name, Permission::Admin)
            .await?;
        Ok(Members {
            resource_version: Some(app.app.metadata.resource_version.clone()),
            members: app
                .members
                .iter()
                .map(|(user, role)| (user.clone(), MemberEntry { role: *role }))
                .collect(),
        })
    }

    /// Replaces the members; a non-empty `resourceVersion` must be the application's.
    pub async fn set_members(
        &self,
        principal: &Principal,
        name: &AppName,
        members: Members,
    ) -> RegistryResult<()> {
        self.admit_write(principal)?;
        if members.members.len() > MAX_MEMBERS {
            return Err(RegistryError::InvalidRequest(format!(
                "an application has at most {MAX_MEMBERS} members"
            )));
        }
        if members.members.keys().any(|user| user.is_empty()) {
            return Err(RegistryError::InvalidRequest(
                "member user ids must not be empty".into(),
            ));
        }
        let current = self
            .application_for(principal, name, Permission::Admin)
            .await?;
        let expected = members.resource_version.as_deref().unwrap_or_default();
        if !expected.is_empty() && expected != current.app.metadata.resource_version {
            return Err(RegistryError::Conflict(format!(
                "the application '{name}' changed meanwhile; read the members again"
            )));
        }
        let mut next = current.clone();
        next.members = members
            .members
            .into_iter()
            .filter(|(user, _)| *user != current.owner)
            .map(|(user, entry)| (user, entry.role))
            .collect();
        if next.members == current.members {
            return Ok(());
        }
        next.app.metadata.resource_version = uuid::Uuid::new_v4().to_string();
        self.applications
            .update_application(&current, &next)
            .await
            .map_err(store_error(|| format!("the application '{name}'")))?;
        self.changed(&next.app, None, Change::Updated).await;
        tracing::info!(application = %name, members = next.members.len(), "members updated");
        Ok(())
    }

    /// The pending transfer of an application's ownership, if any (owner only).
    pub async fn transfer(
        &self,
        principal: &Principal,
        name: &AppName,
    ) -> RegistryResult<Option<TransferOwnership>> {
        let app = self
            .application_for(principal, name, Permission::Owner)
            .await?;
        Ok(app
            .transfer_owner
            .map(|new_user| TransferOwnership { new_user }))
    }

    /// Offers the ownership to another user (owner only), or withdraws the offer (`None`).
    pub async fn offer_ownership(
        &self,
        principal: &Principal,
        name: &AppName,
        new_user: Option<String>,
    ) -> RegistryResult<()> {
        self.admit_write(principal)?;
        if new_user.as_deref() == Some("") {
            return Err(RegistryError::InvalidRequest(
                "newUser must not be empty".into(),
            ));
        }
        let current = self
            .application_for(principal, name, Permission::Owner)
            .await?;
        let mut next = current.clone();
        next.transfer_owner = new_user;
        next.app.metadata.resource_version = uuid::Uuid::new_v4().to_string();
        self.applications
            .update_application(&current, &next)
            .await
            .map_err(store_error(|| format!("the application '{name}'")))?;
        self.changed(&next.app, None, Change::Updated).await;
        Ok(())
    }

    /// Takes over an application whose ownership was offered to the caller.
    pub async fn accept_ownership(
        &self,
        principal: &Principal,
        name: &AppName,
    ) -> RegistryResult<()> {
        self.admit_write(principal)?;
        let found = self
            .applications
            .get_application(name)
            .await
            .map_err(super::unavailable)?;
        let Some(current) = found.filter(|a| a.transfer_owner.as_deref() == Some(&principal.user))
        else {
            return Err(not_found(name));
        };
        let mut next = current.clone();
        next.members.remove(&principal.user);
        next.owner = principal.user.clone();
        next.transfer_owner = None;
        next.app.metadata.resource_version = uuid::Uuid::new_v4().to_string();
        // the application's devices move to the new owner, within its device quota
        let quota = self.quotas.devices_per_user;
        let limit = (quota != 0 && !self.authz.is_admin(principal)).then_some(quota as u64);
        self.applications
            .update_application_within(&current, &next, limit)
            .await
            .map_err(|e| match e {
                StoreError::Conflict(crate::store::Conflict::OwnerQuotaExceeded) => {
                    RegistryError::QuotaExceeded(format!(
                        "the applications a user owns may hold at most {quota} devices \
                         together: with those of '{name}' yours would hold more"
                    ))
                }
                e => store_error(|| format!("the application '{name}'"))(e),
            })?;
        self.changed(&next.app, None, Change::Updated).await;
        tracing::info!(application = %name, owner = %principal.user, "ownership transferred");
        Ok(())
    }
}
