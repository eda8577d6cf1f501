//! Whether a WebSocket connection may still receive its application's events. The
//! fan-out decides it before it posts an event to a connection, as `$connect` decided it:
//!
//! - the connection's credentials have not expired (a bearer token's `exp`, an access
//!   token's expiry, as kept with the connection);
//! - an access token it authenticated with still exists, for the same user, and has not
//!   expired (its roles are the token's);
//! - its application exists with the `uid` it connected to, and the user (with those
//!   roles) may read it: the owner, a member with a role, or an administrator
//!   ([`AccessControl::permits`], the registry's rule).
//!
//! The application and tokens are read through [`Lookups`], which keeps what it read for
//! at most [`RECHECK_PERIOD`] (the lookup-cache period of `drogue-local`'s streams): access
//! that ended is noticed by the first delivery after at most that long.

use crate::fanout::Subscribers;
use chrono::{DateTime, Utc};
use drogue_shared::access::authz::AccessControl;
use drogue_shared::access::{Permission, Principal};
use drogue_shared::store::dynamodb::StreamConnection;
use drogue_shared::store::{StoreResult, StoredApplication, StoredToken};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long what was read about an application or a token is relied on.
pub const RECHECK_PERIOD: Duration = Duration::from_secs(5);

/// The decision on one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Granted,
    /// Access ended, and why.
    Ended(&'static str),
}

/// Decides whether `connection` may still receive events, given its application as
/// stored (`None`: there is none) and, for a connection made with an access token, that
/// token as stored (`None`: deleted).
pub fn decide(
    connection: &StreamConnection,
    application: Option<&StoredApplication>,
    token: Option<&StoredToken>,
    authz: &AccessControl,
    now: DateTime<Utc>,
) -> Access {
    if connection.credentials_expire.is_some_and(|e| e <= now) {
        return Access::Ended("its credentials expired");
    }
    let principal = match &connection.token {
        Some(prefix) => match token {
            Some(t) if &t.prefix == prefix && t.user == connection.user => {
                if t.expires.is_some_and(|e| e <= now) {
                    return Access::Ended("its access token expired");
                }
                Principal {
                    user: t.user.clone(),
                    name: t.name.clone(),
                    roles: t.roles.clone(),
                }
            }
            _ => return Access::Ended("its access token was deleted"),
        },
        None => Principal {
            user: connection.user.clone(),
            name: None,
            roles: connection.roles.clone(),
        },
    };
    let Some(app) = application.filter(|a| a.app.metadata.uid == connection.application_uid) else {
        return Access::Ended("its application was deleted");
    };
    if !authz.permits(&principal, app, Permission::Read) {
        return Access::Ended("its user may no longer read the application");
    }
    Access::Granted
}

type Cached<T> = Mutex<HashMap<String, (Instant, Option<Arc<T>>)>>;

/// Applications and tokens as read from the store, each relied on for at most a period;
/// kept across invocations (per function instance).
pub struct Lookups {
    period: Duration,
    applications: Cached<StoredApplication>,
    tokens: Cached<StoredToken>,
}

impl Default for Lookups {
    fn default() -> Self {
        Self::new(RECHECK_PERIOD)
    }
}

impl Lookups {
    pub fn new(period: Duration) -> Self {
        Self {
            period,
            applications: Mutex::default(),
            tokens: Mutex::default(),
        }
    }

    /// The application `name` as stored (`None`: there is none).
    pub async fn application(
        &self,
        store: &dyn Subscribers,
        name: &str,
    ) -> StoreResult<Option<Arc<StoredApplication>>> {
        if let Some(found) = self.cached(&self.applications, name) {
            return Ok(found);
        }
        let found = store.application(name).await?.map(Arc::new);
        self.keep(&self.applications, name, found.clone());
        Ok(found)
    }

    /// The access token with this prefix as stored (`None`: there is none).
    pub async fn token(
        &self,
        store: &dyn Subscribers,
        prefix: &str,
    ) -> StoreResult<Option<Arc<StoredToken>>> {
        if let Some(found) = self.cached(&self.tokens, prefix) {
            return Ok(found);
        }
        let found = store.token(prefix).await?.map(Arc::new);
        self.keep(&self.tokens, prefix, found.clone());
        Ok(found)
    }

    fn cached<T>(&self, map: &Cached<T>, key: &str) -> Option<Option<Arc<T>>> {
        let map = map.lock().expect("not poisoned");
        map.get(key)
            .filter(|(read, _)| read.elapsed() < self.period)
            .map(|(_, found)| found.clone())
    }

    fn keep<T>(&self, map: &Cached<T>, key: &str, found: Option<Arc<T>>) {
        let mut map = map.lock().expect("not poisoned");
        map.retain(|_, (read, _)| read.elapsed() < self.period);
        map.insert(key.to_owned(), (Instant::now(), found));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use drogue_shared::access::Role;
    use drogue_shared::model::{Application, Metadata};
    use std::collections::BTreeMap;

    fn app(uid: &str, owner: &str, members: &[(&str, Role)]) -> StoredApplication {
        StoredApplication {
            app: Application {
                metadata: Metadata {
                    name: "app-a".into(),
                    application: None,
                    uid: uid.into(),
                    creation_timestamp: Utc::now(),
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

    fn connection(user: &str, token: Option<&str>) -> StreamConnection {
        StreamConnection {
            id: format!("{user}-1"),
            application: "app-a".into(),
            application_uid: "uid-1".into(),
            user: user.into(),
            roles: vec![],
            token: token.map(str::to_owned),
            credentials_expire: None,
            channel: None,
            connected: Utc::now(),
            expires: Utc::now() + chrono::Duration::hours(2),
        }
    }

    fn token(prefix: &str, user: &str, expires: Option<DateTime<Utc>>) -> StoredToken {
        StoredToken {
            prefix: prefix.into(),
            user: user.into(),
            name: None,
            roles: vec![],
            hash: String::new(),
            created: Utc::now(),
            description: None,
            expires,
        }
    }

    const READ_LOST: Access = Access::Ended("its user may no longer read the application");

    #[test]
    fn owners_members_and_administrators_keep_access_others_lose_it() {
        let authz = AccessControl::default();
        let now = Utc::now();
        let stored = app("uid-1", "olga", &[("rita", Role::Reader)]);
        for (user, expected) in [
            ("olga", Access::Granted),
            ("rita", Access::Granted),
            ("mallory", READ_LOST),
        ] {
            let c = connection(user, None);
            assert_eq!(
                decide(&c, Some(&stored), None, &authz, now),
                expected,
                "{user}"
            );
        }
        // a bearer token's roles, as kept with the connection
        let mut admin = connection("root", None);
        assert_eq!(decide(&admin, Some(&stored), None, &authz, now), READ_LOST);
        admin.roles = vec![AccessControl::DEFAULT_ADMIN_ROLE.into()];
        assert_eq!(
            decide(&admin, Some(&stored), None, &authz, now),
            Access::Granted
        );
        // a removed member
        let removed = app("uid-1", "olga", &[]);
        let rita = connection("rita", None);
        assert_eq!(decide(&rita, Some(&removed), None, &authz, now), READ_LOST);
    }

    #[test]
    fn a_deleted_or_remade_application_ends_access() {
        let authz = AccessControl::default();
        let olga = connection("olga", None);
        let gone = Access::Ended("its application was deleted");
        assert_eq!(decide(&olga, None, None, &authz, Utc::now()), gone);
        let remade = app("uid-2", "olga", &[]);
        assert_eq!(decide(&olga, Some(&remade), None, &authz, Utc::now()), gone);
    }

    #[test]
    fn access_tokens_must_still_exist_for_the_user_and_not_be_expired() {
        let authz = AccessControl::default();
        let now = Utc::now();
        let stored = app("uid-1", "olga", &[]);
        let olga = connection("olga", Some("drg_aaaaaa"));
        let deleted = Access::Ended("its access token was deleted");
        assert_eq!(decide(&olga, Some(&stored), None, &authz, now), deleted);
        let valid = token(
            "drg_aaaaaa",
            "olga",
            Some(now + chrono::Duration::minutes(1)),
        );
        assert_eq!(
            decide(&olga, Some(&stored), Some(&valid), &authz, now),
            Access::Granted
        );
        let others = token("drg_aaaaaa", "mallory", None);
        assert_eq!(
            decide(&olga, Some(&stored), Some(&others), &authz, now),
            deleted
        );
        let expired = token("drg_aaaaaa", "olga", Some(now));
        assert_eq!(
            decide(&olga, Some(&stored), Some(&expired), &authz, now),
            Access::Ended("its access token expired")
        );
        // the token's roles count, not those kept with the connection
        let mut root = connection("root", Some("drg_rooooo"));
        root.roles = vec![AccessControl::DEFAULT_ADMIN_ROLE.into()];
        let plain = token("drg_rooooo", "root", None);
        assert_eq!(
            decide(&root, Some(&stored), Some(&plain), &authz, now),
            READ_LOST
        );
        let admin = StoredToken {
            roles: vec![AccessControl::DEFAULT_ADMIN_ROLE.into()],
            ..plain
        };
        assert_eq!(
            decide(&root, Some(&stored), Some(&admin), &authz, now),
            Access::Granted
        );
    }

    #[test]
    fn expired_credentials_end_access() {
        let authz = AccessControl::default();
        let now = Utc::now();
        let stored = app("uid-1", "olga", &[]);
        let mut olga = connection("olga", None);
        olga.credentials_expire = Some(now + chrono::Duration::seconds(1));
        assert_eq!(
            decide(&olga, Some(&stored), None, &authz, now),
            Access::Granted
        );
        olga.credentials_expire = Some(now);
        assert_eq!(
            decide(&olga, Some(&stored), None, &authz, now),
            Access::Ended("its credentials expired")
        );
    }
}
