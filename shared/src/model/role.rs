//! The roles members hold in an application; what each role grants is decided in
//! [`crate::access::authz`].

use serde::{Deserialize, Serialize};

/// The role of an application member.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Role {
    Reader,
    Manager,
    Admin,
}
