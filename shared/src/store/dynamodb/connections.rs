//! The WebSocket connections of applications' stream consumers on AWS (API Gateway
//! WebSocket API), kept for the event fan-out.
//!
//! | item | `pk` | `sk` | more |
//! |---|---|---|---|
//! | a connection, by application | `WSAPP#{app}` | `{connection id}` | `appuid`, `user`, `roles`, `token`, `credexp`, `channel` (the last four optional), `connected`, `expires` |
//! | the same connection, by id | `WSCONN#{connection id}` | `#WSCONN` | `app`, `expires` |
//!
//! Both are written and deleted together (a transaction). The fan-out reads an
//! application's connections with one Query; `$disconnect` finds the application by the
//! connection id with one GetItem. Every item carries the table's TTL attribute
//! (`expires`): API Gateway ends a connection after two hours at most, so an item that
//! outlived a missed `$disconnect` goes away by itself; expired items are skipped here until
//! DynamoDB removes them.
//!
//! What the fan-out needs to check a connection's access again is kept with it, and no
//! secret: the user id, the roles its credentials carried, the prefix of the access token
//! it authenticated with (the token's id in the store, never the token), and when its
//! credentials expire (a bearer token's `exp`, an access token's expiry). Items written
//! before these were kept read as a connection without roles, token or expiry.

use super::{DynamoStore, Item, TTL_ATTRIBUTE, attr, s};
use crate::store::{StoreError, StoreResult};
use aws_sdk_dynamodb::types::{AttributeValue, Select};
use chrono::{DateTime, Utc};
use std::collections::HashMap;

const BY_ID_SK: &str = "#WSCONN";

fn app_pk(app: &str) -> String {
    format!("WSAPP#{app}")
}

fn id_pk(connection: &str) -> String {
    format!("WSCONN#{connection}")
}

/// A stream consumer's WebSocket connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamConnection {
    /// API Gateway's connection id.
    pub id: String,
    /// The application it follows.
    pub application: String,
    /// The application's `uid` when the connection was accepted: events of another
    /// application made later under the same name do not reach it.
    pub application_uid: String,
    /// The user it authenticated as.
    pub user: String,
    /// The roles its credentials carried when it connected.
    pub roles: Vec<String>,
    /// The prefix of the access token it authenticated with (`None`: a bearer token).
    pub token: Option<String>,
    /// When its credentials expire, if they do.
    pub credentials_expire: Option<DateTime<Utc>>,
    /// Only events of this channel (`subject`), if set.
    pub channel: Option<String>,
    pub connected: DateTime<Utc>,
    /// When the item expires (API Gateway's longest connection).
    pub expires: DateTime<Utc>,
}

impl StreamConnection {
    /// Whether the connection wants an event of `application_uid` on `subject`.
    pub fn wants(&self, application_uid: Option<&str>, subject: Option<&str>) -> bool {
        application_uid.is_none_or(|uid| uid == self.application_uid)
            && self
                .channel
                .as_deref()
                .is_none_or(|channel| subject == Some(channel))
    }
}

fn number(time: DateTime<Utc>) -> AttributeValue {
    AttributeValue::N(time.timestamp().to_string())
}

fn time_of(item: &Item, name: &str) -> Option<DateTime<Utc>> {
    match item.get(name) {
        Some(AttributeValue::N(n)) => DateTime::from_timestamp(n.parse().ok()?, 0),
        _ => None,
    }
}

fn roles_of(item: &Item) -> Vec<String> {
    match item.get("roles") {
        Some(AttributeValue::L(roles)) => roles
            .iter()
            .filter_map(|r| r.as_s().ok().cloned())
            .collect(),
        _ => Vec::new(),
    }
}

impl DynamoStore {
    /// Keeps a connection (both items, in one transaction).
    pub async fn put_stream_connection(&self, connection: &StreamConnection) -> StoreResult<()> {
        let mut by_app = HashMap::from([
            ("pk".into(), s(app_pk(&connection.application))),
            ("sk".into(), s(connection.id.as_str())),
            ("appuid".into(), s(connection.application_uid.as_str())),
            ("user".into(), s(connection.user.as_str())),
            ("connected".into(), number(connection.connected)),
            (TTL_ATTRIBUTE.into(), number(connection.expires)),
        ]);
        if let Some(channel) = &connection.channel {
            by_app.insert("channel".into(), s(channel.as_str()));
        }
        if !connection.roles.is_empty() {
            let roles = connection.roles.iter().map(|r| s(r.as_str())).collect();
            by_app.insert("roles".into(), AttributeValue::L(roles));
        }
        if let Some(prefix) = &connection.token {
            by_app.insert("token".into(), s(prefix.as_str()));
        }
        if let Some(expires) = connection.credentials_expire {
            by_app.insert("credexp".into(), number(expires));
        }
        let by_id = HashMap::from([
            ("pk".into(), s(id_pk(&connection.id))),
            ("sk".into(), s(BY_ID_SK)),
            ("app".into(), s(connection.application.as_str())),
            (TTL_ATTRIBUTE.into(), number(connection.expires)),
        ]);
        self.transact(vec![
            (self.put(by_app, None)?, None),
            (self.put(by_id, None)?, None),
        ])
        .await
    }

    /// The application a connection follows, if it is kept.
    pub async fn stream_connection_application(
        &self,
        connection: &str,
    ) -> StoreResult<Option<String>> {
        let item = self.get_item(id_pk(connection), BY_ID_SK).await?;
        Ok(item.and_then(|item| attr(&item, "app").map(str::to_owned)))
    }

    /// Forgets a connection of `application` (nothing happens if it is not kept).
    pub async fn delete_stream_connection(
        &self,
        application: &str,
        connection: &str,
    ) -> StoreResult<()> {
        self.transact(vec![
            (self.delete(app_pk(application), connection, None)?, None),
            (self.delete(id_pk(connection), BY_ID_SK, None)?, None),
        ])
        .await
    }

    /// Forgets a connection by its id alone (`$disconnect`); whether it was kept.
    pub async fn forget_stream_connection(&self, connection: &str) -> StoreResult<bool> {
        match self.stream_connection_application(connection).await? {
            Some(app) => {
                self.delete_stream_connection(&app, connection).await?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// The unexpired connections of an application (one Query, paged), in id order.
    pub async fn stream_connections(
        &self,
        application: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<StreamConnection>> {
        let items = self.query_prefix(app_pk(application), "").await?;
        let mut connections = Vec::with_capacity(items.len());
        for item in items {
            let (Some(id), Some(uid), Some(user), Some(connected), Some(expires)) = (
                attr(&item, "sk"),
                attr(&item, "appuid"),
                attr(&item, "user"),
                time_of(&item, "connected"),
                time_of(&item, TTL_ATTRIBUTE),
            ) else {
                return Err(StoreError::unavailable(std::io::Error::other(
                    "an incomplete WSAPP item",
                )));
            };
            if expires <= now {
                continue;
            }
            connections.push(StreamConnection {
                id: id.to_owned(),
                application: application.to_owned(),
                application_uid: uid.to_owned(),
                user: user.to_owned(),
                roles: roles_of(&item),
                token: attr(&item, "token").map(str::to_owned),
                credentials_expire: time_of(&item, "credexp"),
                channel: attr(&item, "channel").map(str::to_owned),
                connected,
                expires,
            });
        }
        Ok(connections)
    }

    /// How many connections of an application are kept (expired ones included until
    /// DynamoDB removes them); a count-only Query.
    pub async fn count_stream_connections(&self, application: &str) -> StoreResult<usize> {
        let pages = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk")
            .expression_attribute_values(":pk", s(app_pk(application)))
            .select(Select::Count)
            .into_paginator()
            .send();
        let counts: Vec<_> = pages
            .collect::<Result<Vec<_>, _>>()
            .await
            .map_err(StoreError::unavailable)?;
        Ok(counts.iter().map(|page| page.count().max(0) as usize).sum())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connection(channel: Option<&str>) -> StreamConnection {
        StreamConnection {
            id: "c1".into(),
            application: "app1".into(),
            application_uid: "uid-1".into(),
            user: "alice".into(),
            roles: vec![],
            token: None,
            credentials_expire: None,
            channel: channel.map(str::to_owned),
            connected: Utc::now(),
            expires: Utc::now(),
        }
    }

    #[test]
    fn a_connection_wants_its_application_and_channel_only() {
        let all = connection(None);
        assert!(all.wants(Some("uid-1"), Some("telemetry")));
        assert!(all.wants(Some("uid-1"), None));
        assert!(!all.wants(Some("uid-2"), Some("telemetry")), "another uid");
        let one = connection(Some("telemetry"));
        assert!(one.wants(Some("uid-1"), Some("telemetry")));
        assert!(!one.wants(Some("uid-1"), Some("state")));
        assert!(!one.wants(Some("uid-1"), None));
    }
}
