//! Access tokens of users: issuing, revoking, and authenticating a request that
//! presents `user:token`. A token acts as the user who made it, with the roles that user
//! had then.

use super::{Authentication, Principal};
use crate::store::{StoreError, StoredToken, TokenStore};
use crate::token;
use chrono::Utc;

/// Most access tokens one user may hold.
pub const MAX_TOKENS_PER_USER: usize = 100;
/// Longest token description accepted.
pub const MAX_DESCRIPTION_LEN: usize = 256;

/// Why a token operation did not happen.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("{0}")]
    Invalid(String),
    #[error("no access token with prefix '{0}'")]
    NotFound(String),
    #[error("the token store is unavailable")]
    Unavailable(#[from] StoreError),
}

/// Checks `user:token`; the token's format and checksum are checked before any lookup.
/// `Err` means the store could not be asked (so nothing was decided).
pub async fn authenticate(
    store: &dyn TokenStore,
    user: &str,
    token: &str,
) -> Result<Authentication, StoreError> {
    let Some(prefix) = token::prefix_of(token) else {
        return Ok(Authentication::Deny {
            reason: "malformed access token",
        });
    };
    let Some(stored) = store.get_token(prefix).await? else {
        return Ok(Authentication::Deny {
            reason: "unknown access token",
        });
    };
    let named = stored.user == user || stored.name.as_deref() == Some(user);
    if !named || !token::matches(token, &stored.hash) {
        return Ok(Authentication::Deny {
            reason: "access token does not match",
        });
    }
    Ok(Authentication::Allow(Principal {
        user: stored.user,
        name: stored.name,
        roles: stored.roles,
    }))
}

/// Issues a new token for `owner`, carrying its roles; the returned token is the only copy.
pub async fn create_token(
    store: &dyn TokenStore,
    owner: &Principal,
    description: Option<String>,
) -> Result<token::NewToken, TokenError> {
    let user = owner.user.as_str();
    if description
        .as_ref()
        .is_some_and(|d| d.len() > MAX_DESCRIPTION_LEN)
    {
        return Err(TokenError::Invalid(format!(
            "descriptions are at most {MAX_DESCRIPTION_LEN} bytes"
        )));
    }
    if store.list_tokens(user).await?.len() >= MAX_TOKENS_PER_USER {
        return Err(TokenError::Invalid(format!(
            "a user may hold at most {MAX_TOKENS_PER_USER} access tokens; delete one first"
        )));
    }
    let new = token::generate();
    store
        .create_token(&StoredToken {
            prefix: new.prefix.clone(),
            user: user.to_owned(),
            name: owner.name.clone(),
            roles: owner.roles.clone(),
            hash: token::hash(&new.token),
            created: Utc::now(),
            description,
        })
        .await?;
    tracing::info!(user, prefix = %new.prefix, "access token created");
    Ok(new)
}

/// Revokes one of `user`'s tokens.
pub async fn delete_token(
    store: &dyn TokenStore,
    user: &str,
    prefix: &str,
) -> Result<(), TokenError> {
    if store.delete_token(user, prefix).await? {
        tracing::info!(user, prefix, "access token deleted");
        Ok(())
    } else {
        Err(TokenError::NotFound(prefix.to_owned()))
    }
}
