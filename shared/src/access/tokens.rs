//! Access tokens of users: issuing, revoking, and authenticating a request that
//! presents `user:token`. A token acts as the user who made it, with the roles that user
//! had then, until it is revoked or, if it was made with an expiry, until it expires.

use super::token_format as token;
use super::{Authentication, Principal};
use crate::store::{StoreError, StoredToken, TokenStore};
use chrono::{DateTime, Utc};

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
    if is_expired(&stored, Utc::now()) {
        return Ok(Authentication::Deny {
            reason: "access token expired",
        });
    }
    Ok(Authentication::Allow(Principal {
        user: stored.user,
        name: stored.name,
        roles: stored.roles,
    }))
}

/// What a new token is made with.
#[derive(Debug, Clone, Default)]
pub struct TokenOptions {
    pub description: Option<String>,
    /// From when on the token is refused; `None`: it lasts until it is revoked.
    pub expires: Option<DateTime<Utc>>,
}

/// Issues a new token for `owner`, carrying its roles, that does not expire; the returned
/// token is the only copy.
pub async fn create_token(
    store: &dyn TokenStore,
    owner: &Principal,
    description: Option<String>,
) -> Result<token::NewToken, TokenError> {
    let options = TokenOptions {
        description,
        expires: None,
    };
    create_token_with(store, owner, options).await
}

/// Issues a new token for `owner`, carrying its roles; the returned token is the only
/// copy. An expiry must lie in the future.
pub async fn create_token_with(
    store: &dyn TokenStore,
    owner: &Principal,
    options: TokenOptions,
) -> Result<token::NewToken, TokenError> {
    let TokenOptions {
        description,
        expires,
    } = options;
    let user = owner.user.as_str();
    if description
        .as_ref()
        .is_some_and(|d| d.len() > MAX_DESCRIPTION_LEN)
    {
        return Err(TokenError::Invalid(format!(
            "descriptions are at most {MAX_DESCRIPTION_LEN} bytes"
        )));
    }
    let now = Utc::now();
    if expires.is_some_and(|e| e <= now) {
        return Err(TokenError::Invalid(
            "the expiry of a new token must lie in the future".into(),
        ));
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
            created: now,
            description,
            expires,
        })
        .await?;
    tracing::info!(user, prefix = %new.prefix, expires = ?expires, "access token created");
    Ok(new)
}

/// Reads the expiry of a new token as the API takes it: an RFC 3339 timestamp such as
/// `2030-01-31T12:00:00Z` or `2030-01-31T13:00:00+01:00`.
pub fn parse_expiry(value: &str) -> Result<DateTime<Utc>, TokenError> {
    DateTime::parse_from_rfc3339(value.trim())
        .map(|e| e.to_utc())
        .map_err(|e| {
            TokenError::Invalid(format!(
                "expires takes an RFC 3339 timestamp (such as 2030-01-31T12:00:00Z): {e}"
            ))
        })
}

/// Whether a token is expired at `now`. Tokens without an expiry (all those stored
/// before tokens could expire) never are.
fn is_expired(token: &StoredToken, now: DateTime<Utc>) -> bool {
    token.expires.is_some_and(|expires| expires <= now)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::embedded::EmbeddedStore;
    use chrono::TimeDelta;

    fn stored(expires: Option<DateTime<Utc>>) -> StoredToken {
        StoredToken {
            prefix: "drg_aaaaaa".into(),
            user: "alice".into(),
            name: None,
            roles: vec![],
            hash: String::new(),
            created: Utc::now(),
            description: None,
            expires,
        }
    }

    #[test]
    fn a_token_expires_at_its_expiry_and_old_tokens_never() {
        let now = Utc::now();
        assert!(!is_expired(&stored(None), now));
        assert!(!is_expired(&stored(Some(now + TimeDelta::seconds(1))), now));
        assert!(is_expired(&stored(Some(now)), now));
        assert!(is_expired(&stored(Some(now - TimeDelta::seconds(1))), now));
    }

    #[test]
    fn tokens_stored_before_expiries_existed_read_as_never_expiring() {
        let old = r#"{"prefix":"drg_aaaaaa","user":"alice","hash":"00","created":"2024-01-01T00:00:00Z"}"#;
        let token: StoredToken = serde_json::from_str(old).unwrap();
        assert_eq!(token.expires, None);
        assert!(
            !serde_json::to_string(&token).unwrap().contains("expires"),
            "no expiry, no key: the stored format stays the same"
        );
    }

    #[test]
    fn expiries_are_rfc_3339_timestamps() {
        let parsed = parse_expiry("2030-01-31T13:00:00+01:00").unwrap();
        assert_eq!(parsed.to_rfc3339(), "2030-01-31T12:00:00+00:00");
        for bad in ["", "tomorrow", "3600", "2030-01-31", "2030-01-31 12:00:00"] {
            assert!(
                matches!(parse_expiry(bad), Err(TokenError::Invalid(_))),
                "{bad:?}"
            );
        }
    }

    #[tokio::test]
    async fn an_expired_token_is_refused_and_new_ones_expire_only_in_the_future() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path().join("tokens.redb")).unwrap();
        let alice = Principal::user("alice");
        let in_an_hour = Utc::now() + TimeDelta::hours(1);
        let options = |expires| TokenOptions {
            description: None,
            expires: Some(expires),
        };

        let valid = create_token_with(&store, &alice, options(in_an_hour))
            .await
            .unwrap();
        assert!(matches!(
            authenticate(&store, "alice", &valid.token).await.unwrap(),
            Authentication::Allow(p) if p.user == "alice"
        ));
        let kept = store.get_token(&valid.prefix).await.unwrap().unwrap();
        assert_eq!(kept.expires, Some(in_an_hour));

        let past = Utc::now() - TimeDelta::seconds(1);
        let refused = create_token_with(&store, &alice, options(past)).await;
        assert!(
            matches!(refused, Err(TokenError::Invalid(_))),
            "{refused:?}"
        );

        // a token whose time has come (stored directly: it cannot be made expired)
        let new = token::generate();
        let expired = StoredToken {
            prefix: new.prefix.clone(),
            hash: token::hash(&new.token),
            ..stored(Some(past))
        };
        store.create_token(&expired).await.unwrap();
        assert_eq!(
            authenticate(&store, "alice", &new.token).await.unwrap(),
            Authentication::Deny {
                reason: "access token expired"
            }
        );
    }
}
