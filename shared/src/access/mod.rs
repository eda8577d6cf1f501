//! Who is calling, and what they may do: users authenticated by access tokens or OIDC
//! bearer tokens, and their permissions on applications (owner, members, roles).

pub mod authz;
#[cfg(feature = "local")]
pub mod issuer;
pub mod oidc;
pub mod token_format;
mod tokens;

pub use authz::{Permission, Role};
pub use tokens::{
    MAX_DESCRIPTION_LEN, MAX_TOKENS_PER_USER, TokenError, TokenOptions, authenticate, create_token,
    create_token_with, delete_token, parse_expiry,
};

/// An authenticated user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The user id: an OIDC token's `sub`, or the user an access token was made for.
    pub user: String,
    /// A readable name (`preferred_username` and the like), if the issuer gives one.
    pub name: Option<String>,
    /// Roles and groups (Keycloak realm and client roles, Cognito groups).
    pub roles: Vec<String>,
}

impl Principal {
    /// A user with no roles.
    pub fn user(user: impl Into<String>) -> Self {
        Self {
            user: user.into(),
            name: None,
            roles: Vec::new(),
        }
    }

    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }
}

/// The outcome of checking credentials: a decision. `Err` in the callers' results means
/// "could not decide" (a backend could not be asked), never "denied".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Authentication {
    Allow(Principal),
    Deny { reason: &'static str },
}
