//! The registry's rules for applications and devices, over the storage ports:
//! metadata semantics, optimistic locking, finalizers and the checks of a spec.
//! The HTTP layer only parses requests and maps [`RegistryError`] to responses.

mod applications;
mod devices;
mod lifecycle;
mod members;

pub use members::{MAX_MEMBERS, MemberEntry, Members, TransferOwnership};

use crate::access::authz::AccessControl;
use crate::access::{Permission, Principal};
use crate::events::{Change, ChangedIn, EventSink, registry_change};
use crate::model::{AppName, DeviceName, LabelSelector, Resource};
use crate::store::{
    ApplicationStore, Conflict, DeviceStore, Store, StoreError, StoredApplication, TokenStore,
};
use std::sync::Arc;

/// The storage ports the registry uses: applications, devices and users' access tokens.
#[derive(Clone)]
pub struct RegistryPorts {
    pub applications: Arc<dyn ApplicationStore>,
    pub devices: Arc<dyn DeviceStore>,
    pub tokens: Arc<dyn TokenStore>,
}

impl From<Arc<dyn Store>> for RegistryPorts {
    fn from(store: Arc<dyn Store>) -> Self {
        Self {
            applications: store.clone(),
            devices: store.clone(),
            tokens: store,
        }
    }
}

impl<S: ApplicationStore + DeviceStore + TokenStore + 'static> From<Arc<S>> for RegistryPorts {
    fn from(store: Arc<S>) -> Self {
        Self {
            applications: store.clone(),
            devices: store.clone(),
            tokens: store,
        }
    }
}

/// The registry service: every operation is made by a principal and checked against
/// the application's owner and members.
#[derive(Clone)]
pub struct Registry {
    applications: Arc<dyn ApplicationStore>,
    devices: Arc<dyn DeviceStore>,
    tokens: Arc<dyn TokenStore>,
    authz: AccessControl,
    changes: Changes,
    quotas: Quotas,
    /// The writes each user may make (by user id), unless unlimited.
    writes: Option<crate::rate_limit::PublishLimiter>,
    /// Where registry change events go (`drogue-local`); on AWS the table's DynamoDB
    /// stream makes them instead.
    announcements: Option<Announcements>,
}

/// The sink of registry change events and the `instance` they carry.
#[derive(Clone)]
struct Announcements {
    sink: Arc<dyn EventSink>,
    instance: String,
}

/// What one user may hold. Administrators are not limited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quotas {
    /// Applications a user may own; 0 for no limit.
    pub applications_per_user: usize,
    /// Devices an application may hold; 0 for no limit.
    pub devices_per_application: usize,
    /// Devices all the applications a user owns may hold together (whoever created
    /// them: a member's devices count against the owner); 0 for no limit.
    pub devices_per_user: usize,
}

impl Quotas {
    pub const DEFAULT_APPLICATIONS_PER_USER: usize = 100;
    pub const DEFAULT_DEVICES_PER_APPLICATION: usize = 10_000;
    pub const DEFAULT_DEVICES_PER_USER: usize = 10_000;
}

impl Default for Quotas {
    fn default() -> Self {
        Self {
            applications_per_user: Self::DEFAULT_APPLICATIONS_PER_USER,
            devices_per_application: Self::DEFAULT_DEVICES_PER_APPLICATION,
            devices_per_user: Self::DEFAULT_DEVICES_PER_USER,
        }
    }
}

/// Counts the registry's writes by application, so that caches in the same process
/// (device authentication) can tell their entries are stale, and what depends on the
/// registry alone (a device's MQTT session) can wait for a change: a write to an
/// application or one of its devices moves that application's count only, so one
/// tenant's writes never make another's lookups stale nor wake another's sessions.
///
/// An application's count exists while someone holds it ([`Changes::of`]); one that no
/// one holds has nothing to tell, and starts again at 0 when it is asked for next.
#[derive(Debug, Clone, Default)]
pub struct Changes(Arc<ChangeCounts>);

#[derive(Debug, Default)]
struct ChangeCounts {
    /// By application name, while held; the dead ones are swept as the map grows.
    apps: std::sync::Mutex<AppCounts>,
}

#[derive(Debug, Default)]
struct AppCounts {
    counts: std::collections::HashMap<String, std::sync::Weak<ChangeCount>>,
    /// The size at which dead entries are swept next.
    sweep_at: usize,
}

impl AppCounts {
    /// Fewest entries before a sweep.
    const SWEEP_AT_LEAST: usize = 1024;
}

/// The write count of one application (see [`Changes::of`]).
#[derive(Debug, Clone)]
pub struct AppChanges(Arc<ChangeCount>);

#[derive(Debug, Default)]
struct ChangeCount {
    count: std::sync::atomic::AtomicU64,
    waiters: tokio::sync::Notify,
}

impl Changes {
    /// Counts a write to the application `app` (or to one of its devices).
    pub fn bump(&self, app: &str) {
        // the write is in the store already: a count made for a lookup after this
        // check is read with it, one made before (held) is moved on here
        let held = self
            .apps()
            .counts
            .get(app)
            .and_then(std::sync::Weak::upgrade);
        if let Some(held) = held {
            AppChanges(held).bump();
        }
    }

    /// The write count of the application `app`: read it before reading the
    /// application from the store, and what was read is current while the count stays.
    pub fn of(&self, app: &str) -> AppChanges {
        let mut apps = self.apps();
        if let Some(held) = apps.counts.get(app).and_then(std::sync::Weak::upgrade) {
            return AppChanges(held);
        }
        if apps.counts.len() >= apps.sweep_at {
            apps.counts.retain(|_, count| count.strong_count() > 0);
            apps.sweep_at = (apps.counts.len() * 2).max(AppCounts::SWEEP_AT_LEAST);
        }
        let count = Arc::new(ChangeCount::default());
        apps.counts.insert(app.to_owned(), Arc::downgrade(&count));
        AppChanges(count)
    }

    fn apps(&self) -> std::sync::MutexGuard<'_, AppCounts> {
        // a panic elsewhere while holding it leaves the map whole
        self.0.apps.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Applications whose counts are held now (for tests).
    #[cfg(test)]
    fn held(&self) -> usize {
        self.apps()
            .counts
            .values()
            .filter(|count| count.strong_count() > 0)
            .count()
    }
}

impl AppChanges {
    fn bump(&self) {
        self.0
            .count
            .fetch_add(1, std::sync::atomic::Ordering::Release);
        self.0.waiters.notify_waiters();
    }

    pub fn current(&self) -> u64 {
        self.0.count.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Completes once the count is other than `seen` (at once if it is already).
    pub async fn changed_since(&self, seen: u64) {
        loop {
            let notified = self.0.waiters.notified();
            tokio::pin!(notified);
            // registered before the count is read: a bump in between still wakes it
            notified.as_mut().enable();
            if self.current() != seen {
                return;
            }
            notified.await;
        }
    }
}

/// Why a registry operation did not happen.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The object does not exist (or the caller may not know it does).
    #[error("{0}")]
    NotFound(String),
    /// A device was written for an application that does not exist.
    #[error("the application {0:?} does not exist")]
    ReferenceNotFound(String),
    /// A name is taken, or a precondition or concurrent write did not hold.
    #[error("{0}")]
    Conflict(String),
    /// The request is malformed.
    #[error("{0}")]
    InvalidRequest(String),
    /// The caller may see the object but not do this to it.
    #[error("{0}")]
    Forbidden(String),
    /// The caller holds as much as its quota allows.
    #[error("{0}")]
    QuotaExceeded(String),
    /// The caller writes faster than its rate allows; it may again after this long.
    #[error("{0}")]
    TooManyRequests(String, std::time::Duration),
    /// The store could not be reached; nothing was decided.
    #[error("the registry's store is unavailable")]
    Unavailable(#[source] StoreError),
}

pub type RegistryResult<T> = Result<T, RegistryError>;

/// How to page and filter a list.
#[derive(Debug, Clone, Default)]
pub struct ListOptions {
    pub selector: LabelSelector,
    pub limit: Option<usize>,
    pub offset: Option<usize>,
}

impl ListOptions {
    /// Keeps what matches the selector, then skips `offset` and takes `limit`.
    fn apply(&self, items: impl IntoIterator<Item = Resource>) -> Vec<Resource> {
        items
            .into_iter()
            .filter(|r| self.selector.matches(&r.metadata.labels))
            .skip(self.offset.unwrap_or(0))
            .take(self.limit.unwrap_or(usize::MAX))
            .collect()
    }
}

impl Registry {
    /// A registry over its storage ports (a whole store gives them all).
    pub fn new(ports: impl Into<RegistryPorts>, authz: AccessControl) -> Self {
        let RegistryPorts {
            applications,
            devices,
            tokens,
        } = ports.into();
        Self {
            applications,
            devices,
            tokens,
            authz,
            changes: Changes::default(),
            quotas: Quotas::default(),
            writes: None,
            announcements: None,
        }
    }

    /// Sends an `io.drogue.registry.v1` event to `sink` for every change of an
    /// application or a device.
    pub fn with_change_events(mut self, sink: Arc<dyn EventSink>, instance: &str) -> Self {
        self.announcements = Some(Announcements {
            sink,
            instance: instance.to_owned(),
        });
        self
    }

    /// Counts a write and announces it: `app` is the application that changed or holds
    /// the device that did. The change is made already: an event that cannot be
    /// written is logged, never turned into an error of the request.
    async fn changed(&self, app: &Resource, device: Option<&Resource>, change: Change) {
        self.changes.bump(&app.metadata.name);
        let Some(announcements) = &self.announcements else {
            return;
        };
        let application = ChangedIn {
            name: &app.metadata.name,
            uid: Some(&app.metadata.uid),
        };
        let resource = device.unwrap_or(app);
        let event = registry_change(
            &announcements.instance,
            &application,
            device,
            resource,
            change,
            chrono::Utc::now(),
        );
        if let Err(e) = announcements.sink.publish(&event).await {
            tracing::warn!(application = %app.metadata.name, device = ?device.map(|d| &d.metadata.name),
                change = change.as_str(), error = %e, "a registry change event was not written");
        }
    }

    /// Limits what each user may hold.
    pub fn with_quotas(mut self, quotas: Quotas) -> Self {
        self.quotas = quotas;
        self
    }

    /// Limits how fast each user writes (administrators are not limited): each write of
    /// an application, a device, members or ownership takes one token of the user's
    /// bucket, and one over it is refused ([`RegistryError::TooManyRequests`], 429 with
    /// `Retry-After`) before anything is read. The buckets are this process's.
    pub fn with_write_rate(mut self, limit: crate::rate_limit::RateLimit) -> Self {
        self.writes = limit
            .enabled()
            .then(|| crate::rate_limit::PublishLimiter::new(limit));
        self
    }

    /// Takes one write of `principal` from its rate (for the registry's writes, and
    /// for those of users' access tokens, which the registry's HTTP API makes).
    pub fn admit_write(&self, principal: &Principal) -> RegistryResult<()> {
        let Some(writes) = &self.writes else {
            return Ok(());
        };
        if self.authz.is_admin(principal) {
            return Ok(());
        }
        writes.check(&principal.user).map_err(|wait| {
            RegistryError::TooManyRequests(
                format!(
                    "too many registry writes: a user may make {} a second (and {} at once)",
                    writes.limit().per_second,
                    writes.limit().burst
                ),
                wait,
            )
        })
    }

    /// Counts this registry's writes on `changes` (shared with caches of this process).
    pub fn with_changes(mut self, changes: Changes) -> Self {
        self.changes = changes;
        self
    }

    /// The devices of `app` that name `gateway` in their gateway selector: what an
    /// authenticated gateway may act for (its MQTT policy). No user's access is checked:
    /// the caller has authenticated the gateway device itself.
    pub async fn devices_served_by(
        &self,
        app: &AppName,
        gateway: &str,
    ) -> Result<Vec<DeviceName>, StoreError> {
        self.devices.devices_served_by(app, gateway).await
    }

    /// The access tokens of users: the port callers authenticate with (it holds no
    /// application or device, so nothing the registry's access checks guard).
    pub fn tokens(&self) -> &dyn TokenStore {
        self.tokens.as_ref()
    }

    pub fn authorizer(&self) -> &AccessControl {
        &self.authz
    }

    /// The application, if `principal` holds `permission` on it. Without read access
    /// the application does not exist for the caller (404); with read access but not
    /// `permission`, 403.
    pub async fn application_for(
        &self,
        principal: &Principal,
        name: &AppName,
        permission: Permission,
    ) -> RegistryResult<StoredApplication> {
        let found = self
            .applications
            .get_application(name)
            .await
            .map_err(unavailable)?;
        match found {
            Some(app) if self.authz.permits(principal, &app, permission) => Ok(app),
            Some(app) if self.authz.permits(principal, &app, Permission::Read) => {
                Err(RegistryError::Forbidden(format!(
                    "not allowed to {} the application '{name}'",
                    match permission {
                        Permission::Read => "read",
                        Permission::Write => "change",
                        Permission::Admin => "administer",
                        Permission::Owner => "transfer",
                    }
                )))
            }
            _ => Err(not_found(name)),
        }
    }
}

fn not_found(name: &AppName) -> RegistryError {
    RegistryError::NotFound(format!("the application '{name}' does not exist"))
}

/// Maps a store failure; `what` names the object for conflict messages.
fn store_error(what: impl FnOnce() -> String) -> impl FnOnce(StoreError) -> RegistryError {
    move |e| match e {
        StoreError::Conflict(Conflict::AlreadyExists) => {
            RegistryError::Conflict(format!("{} already exists", what()))
        }
        StoreError::Conflict(Conflict::Changed) => RegistryError::Conflict(format!(
            "{} was modified or deleted meanwhile; read it again and retry",
            what()
        )),
        StoreError::Conflict(conflict @ Conflict::ClaimTaken(_)) => {
            RegistryError::Conflict(conflict.to_string())
        }
        StoreError::Conflict(Conflict::ApplicationGone) => RegistryError::ReferenceNotFound(what()),
        StoreError::Conflict(Conflict::QuotaExceeded) => RegistryError::QuotaExceeded(format!(
            "no room for {}: the application holds as many devices as it may",
            what()
        )),
        StoreError::Conflict(Conflict::OwnerQuotaExceeded) => {
            RegistryError::QuotaExceeded(format!(
                "no room for {}: the applications of its owner hold as many devices as the owner may",
                what()
            ))
        }
        e @ StoreError::Unavailable(_) => RegistryError::Unavailable(e),
    }
}

fn unavailable(e: StoreError) -> RegistryError {
    RegistryError::Unavailable(e)
}

#[cfg(test)]
mod tests {
    use super::Changes;
    use std::time::Duration;

    #[tokio::test]
    async fn a_wait_for_a_change_ends_with_the_next_write_to_its_application() {
        let changes = Changes::default();
        let app1 = changes.of("app1");
        let seen = app1.current();
        let waiting = tokio::spawn({
            let app1 = app1.clone();
            async move { app1.changed_since(seen).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "nothing changed yet");
        // another application's writes, one of a name that is a prefix of it
        changes.bump("app2");
        changes.bump("app");
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "another application's writes");
        assert_eq!(app1.current(), seen);
        changes.bump("app1");
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("the write ends the wait")
            .unwrap();
        // a count already past what was seen: no wait at all
        tokio::time::timeout(Duration::from_millis(50), app1.changed_since(seen))
            .await
            .expect("already changed");
        // every holder of the application's count sees the same one
        assert_eq!(changes.of("app1").current(), app1.current());
    }

    #[test]
    fn counts_no_one_holds_are_swept() {
        let changes = Changes::default();
        let kept = changes.of("kept");
        changes.bump("kept");
        for i in 0..5000 {
            let _ = changes.of(&format!("app{i}"));
        }
        assert_eq!(changes.held(), 1);
        assert!(changes.apps().counts.len() <= 2 * super::AppCounts::SWEEP_AT_LEAST);
        assert_eq!(changes.of("kept").current(), 1);
        drop(kept);
        // one asked for again after no one held it starts afresh: no lookup held the
        // old one, so none can take the new one's 0 for its own
        assert_eq!(changes.of("kept").current(), 0);
    }
}
