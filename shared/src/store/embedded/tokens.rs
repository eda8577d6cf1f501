//! Access tokens in the embedded store, by prefix, with the index of each user's tokens.

use super::{EmbeddedStore, TOKENS, USER_TOKENS, json, unavailable};
use crate::store::{Conflict, StoreResult, StoredToken, TokenStore};
use async_trait::async_trait;
use redb::{ReadableDatabase, ReadableTable};

#[async_trait]
impl TokenStore for EmbeddedStore {
    async fn create_token(&self, token: &StoredToken) -> StoreResult<()> {
        let token = token.clone();
        self.write(move |txn| {
            let mut tokens = txn.open_table(TOKENS)?;
            if tokens.get(token.prefix.as_str())?.is_some() {
                return Ok(Err(Conflict::AlreadyExists));
            }
            tokens.insert(token.prefix.as_str(), json(&token).as_slice())?;
            txn.open_table(USER_TOKENS)?
                .insert((token.user.as_str(), token.prefix.as_str()), ())?;
            Ok(Ok(()))
        })
        .await
    }

    async fn get_token(&self, prefix: &str) -> StoreResult<Option<StoredToken>> {
        let txn = self.db.begin_read().map_err(unavailable)?;
        let table = txn.open_table(TOKENS).map_err(unavailable)?;
        match table.get(prefix).map_err(unavailable)? {
            Some(value) => Self::read_json(value.value()).map(Some),
            None => Ok(None),
        }
    }

    async fn list_tokens(&self, user: &str) -> StoreResult<Vec<StoredToken>> {
        self.read_indexed(USER_TOKENS, TOKENS, user)
    }

    async fn delete_token(&self, user: &str, prefix: &str) -> StoreResult<bool> {
        let (user, prefix) = (user.to_owned(), prefix.to_owned());
        self.write(move |txn| {
            let mut tokens = txn.open_table(TOKENS)?;
            let owned = match tokens.get(prefix.as_str())? {
                Some(value) => serde_json::from_slice::<StoredToken>(value.value())
                    .is_ok_and(|t| t.user == user),
                None => false,
            };
            if owned {
                tokens.remove(prefix.as_str())?;
                txn.open_table(USER_TOKENS)?
                    .remove((user.as_str(), prefix.as_str()))?;
            }
            Ok(Ok(owned))
        })
        .await
    }
}
