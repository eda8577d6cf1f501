//! Permissions on applications. The owner may do everything; members hold a role;
//! users with the administrator role (by default `drogue-admin`) may do everything on
//! every application.
//!
//! | role | read app and devices, send commands | write devices, update app | delete app, members | transfer ownership |
//! |---|---|---|---|---|
//! | `reader` | yes | | | |
//! | `manager` | yes | yes | | |
//! | `admin` | yes | yes | yes | |
//! | owner | yes | yes | yes | yes |

use super::Principal;
pub use crate::model::Role;
use crate::store::StoredApplication;

/// What a request needs on an application.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Permission {
    /// Read the application and its devices; send commands.
    Read,
    /// Create, update and delete devices; update the application.
    Write,
    /// Delete the application; read and edit its members.
    Admin,
    /// Transfer the ownership.
    Owner,
}

impl Role {
    fn grants(self, permission: Permission) -> bool {
        match self {
            Role::Reader => permission == Permission::Read,
            Role::Manager => permission <= Permission::Write,
            Role::Admin => permission <= Permission::Admin,
        }
    }
}

/// The name of the role that may do everything, and decisions taken with it.
#[derive(Debug, Clone)]
pub struct AccessControl {
    admin_role: String,
}

impl Default for AccessControl {
    fn default() -> Self {
        Self::new(Self::DEFAULT_ADMIN_ROLE)
    }
}

impl AccessControl {
    pub const DEFAULT_ADMIN_ROLE: &'static str = "drogue-admin";

    pub fn new(admin_role: impl Into<String>) -> Self {
        Self {
            admin_role: admin_role.into(),
        }
    }

    /// Whether the principal may do everything everywhere.
    pub fn is_admin(&self, principal: &Principal) -> bool {
        principal.has_role(&self.admin_role)
    }

    /// Whether `principal` holds `permission` on `app`.
    pub fn permits(
        &self,
        principal: &Principal,
        app: &StoredApplication,
        permission: Permission,
    ) -> bool {
        if self.is_admin(principal) || app.owner == principal.user {
            return true;
        }
        app.members
            .get(&principal.user)
            .is_some_and(|role| role.grants(permission))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Application, Metadata};
    use std::collections::BTreeMap;

    fn app(owner: &str, members: &[(&str, Role)]) -> StoredApplication {
        StoredApplication {
            app: Application {
                metadata: Metadata {
                    name: "a".into(),
                    application: None,
                    uid: String::new(),
                    creation_timestamp: chrono::Utc::now(),
                    generation: 0,
                    resource_version: String::new(),
                    deletion_timestamp: None,
                    finalizers: vec![],
                    labels: BTreeMap::new(),
                    annotations: BTreeMap::new(),
                },
                spec: Default::default(),
                status: Default::default(),
            },
            owner: owner.into(),
            members: members.iter().map(|(u, r)| (u.to_string(), *r)).collect(),
            transfer_owner: None,
        }
    }

    #[test]
    fn every_role_grants_what_the_table_says() {
        let authz = AccessControl::default();
        let app = app(
            "owner",
            &[
                ("reader", Role::Reader),
                ("manager", Role::Manager),
                ("admin", Role::Admin),
            ],
        );
        let all = [
            Permission::Read,
            Permission::Write,
            Permission::Admin,
            Permission::Owner,
        ];
        for (user, granted) in [
            ("owner", 4),
            ("admin", 3),
            ("manager", 2),
            ("reader", 1),
            ("stranger", 0),
        ] {
            let principal = Principal::user(user);
            for (i, permission) in all.iter().enumerate() {
                assert_eq!(
                    authz.permits(&principal, &app, *permission),
                    i < granted,
                    "{user} {permission:?}"
                );
            }
        }
        let mut root = Principal::user("root");
        root.roles.push("drogue-admin".into());
        assert!(authz.permits(&root, &app, Permission::Owner));
        assert!(!AccessControl::new("other-role").permits(&root, &app, Permission::Read));
    }
}
