//! Access tokens in DynamoDB: looked up by prefix, listed per user through the index.

use super::{DynamoStore, data, json, s};
use crate::store::{Conflict, StoreError, StoreResult, StoredToken, TokenStore};
use async_trait::async_trait;
use std::collections::HashMap;

const TOKEN_SK: &str = "#TOKEN";

fn token_pk(prefix: &str) -> String {
    format!("TOKEN#{prefix}")
}

#[async_trait]
impl TokenStore for DynamoStore {
    async fn create_token(&self, token: &StoredToken) -> StoreResult<()> {
        let item = HashMap::from([
            ("pk".into(), s(token_pk(&token.prefix))),
            ("sk".into(), s(TOKEN_SK)),
            ("gsi1pk".into(), s(format!("TOKENS#{}", token.user))),
            ("gsi1sk".into(), s(token.prefix.as_str())),
            ("user".into(), s(token.user.as_str())),
            ("data".into(), json(token)),
        ]);
        let put = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await;
        match put {
            Ok(_) => Ok(()),
            Err(e) => Err(match e.as_service_error() {
                Some(service) if service.is_conditional_check_failed_exception() => {
                    StoreError::Conflict(Conflict::AlreadyExists)
                }
                _ => StoreError::unavailable(e),
            }),
        }
    }

    async fn get_token(&self, prefix: &str) -> StoreResult<Option<StoredToken>> {
        match self.get_item(token_pk(prefix), TOKEN_SK).await? {
            Some(item) => data(&item).map(Some),
            None => Ok(None),
        }
    }

    async fn list_tokens(&self, user: &str) -> StoreResult<Vec<StoredToken>> {
        self.query_index(format!("TOKENS#{user}"))
            .await?
            .iter()
            .map(data)
            .collect()
    }

    async fn delete_token(&self, user: &str, prefix: &str) -> StoreResult<bool> {
        let deleted = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key("pk", s(token_pk(prefix)))
            .key("sk", s(TOKEN_SK))
            .condition_expression("#user = :user")
            .expression_attribute_names("#user", "user")
            .expression_attribute_values(":user", s(user))
            .send()
            .await;
        match deleted {
            Ok(_) => Ok(true),
            Err(e) => match e.as_service_error() {
                Some(service) if service.is_conditional_check_failed_exception() => Ok(false),
                _ => Err(StoreError::unavailable(e)),
            },
        }
    }
}
