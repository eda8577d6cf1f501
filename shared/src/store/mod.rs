//! Storage ports, one trait per capability, and their adapters: DynamoDB for AWS and an
//! embedded `redb` database for `drogue-local`. The conformance suite in the
//! integration tests runs against both.

pub mod dynamodb;
#[cfg(feature = "local")]
pub mod embedded;

use crate::model::command::{Command, CommandResponse};
use crate::model::{AppName, Application, Claim, Device, DeviceName, LabelSelector, Role};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Why a store could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The write lost against the current state: what it expected is not there.
    #[error("conflict: {0}")]
    Conflict(Conflict),
    /// The backend failed or could not be reached; nothing can be decided.
    #[error("storage unavailable")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// The kind of conflict a write ran into.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Conflict {
    #[error("the object already exists")]
    AlreadyExists,
    #[error("the object was changed or deleted meanwhile")]
    Changed,
    #[error("the {} is already used by another device", .0.describe())]
    ClaimTaken(Claim),
    #[error("the application does not exist or is being deleted")]
    ApplicationGone,
    /// The application holds as many devices as the limit of the write allows.
    #[error("the application holds as many devices as it may")]
    QuotaExceeded,
    /// The applications of the owner hold as many devices as the limit of the write
    /// allows (or, for a transfer of ownership, would hold more).
    #[error("the applications of the owner hold as many devices as the owner may")]
    OwnerQuotaExceeded,
}

/// What a device create is held to: the devices of its application, and those of all
/// the applications its application's owner owns.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeviceLimits {
    /// At most this many devices in the application.
    pub per_application: Option<u64>,
    /// At most this many devices in the applications of the application's owner.
    pub per_owner: Option<u64>,
}

impl StoreError {
    /// Wraps a backend error as "unavailable".
    pub fn unavailable(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::Unavailable(Box::new(e))
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// An application with what only the server knows about it: who owns it and who may
/// use it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredApplication {
    pub app: Application,
    /// The user who created the application (or took over its ownership).
    pub owner: String,
    /// Other users and their roles.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub members: BTreeMap<String, Role>,
    /// The user the owner offered the ownership to, until they accept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transfer_owner: Option<String>,
}

impl StoredApplication {
    /// Every user with a say in the application: the owner and the members. The
    /// listing index holds one entry per user.
    pub fn users(&self) -> Vec<&str> {
        let mut users: Vec<&str> = std::iter::once(self.owner.as_str())
            .chain(self.members.keys().map(String::as_str))
            .collect();
        users.sort_unstable();
        users.dedup();
        users
    }
}

/// An access token as stored: never the token itself, only its hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredToken {
    pub prefix: String,
    /// The user id the token acts as.
    pub user: String,
    /// The user's readable name when the token was made, also accepted as the Basic user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The user's roles when the token was made.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
    /// Hex SHA-256 of the whole token.
    pub hash: String,
    pub created: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// From when on the token is refused; `None` (and every token stored before tokens
    /// could expire): never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<DateTime<Utc>>,
}

/// Reading and writing applications.
///
/// Writes are conditional: `update` and `delete` succeed only while the stored
/// `resourceVersion` is the one of `previous`, so concurrent writers cannot overwrite
/// each other ([`Conflict::Changed`]).
#[async_trait]
pub trait ApplicationStore: Send + Sync {
    async fn get_application(&self, name: &AppName) -> StoreResult<Option<StoredApplication>>;
    /// Every application, ordered by name.
    async fn list_applications(&self) -> StoreResult<Vec<StoredApplication>>;
    /// The applications a user owns or is a member of, ordered by name.
    async fn list_applications_of(&self, user: &str) -> StoreResult<Vec<StoredApplication>>;
    async fn create_application(&self, app: &StoredApplication) -> StoreResult<()>;
    async fn update_application(
        &self,
        previous: &StoredApplication,
        next: &StoredApplication,
    ) -> StoreResult<()> {
        self.update_application_within(previous, next, None).await
    }
    /// Updates an application; when its owner changes, its devices move from the old
    /// owner's count to the new one's, and with a limit only while the new owner's
    /// applications then hold at most `owner_limit` devices
    /// ([`Conflict::OwnerQuotaExceeded`]).
    async fn update_application_within(
        &self,
        previous: &StoredApplication,
        next: &StoredApplication,
        owner_limit: Option<u64>,
    ) -> StoreResult<()>;
    /// Deletes the application and everything it holds (devices, their claims); its
    /// devices leave its owner's count.
    async fn delete_application(&self, previous: &StoredApplication) -> StoreResult<()>;
    /// The applications holding a claim (a trust anchor subject), ordered by name. The
    /// subject index is shared, not exclusive: any number of applications, of any
    /// owners, may hold the same trust anchor, and none learns of the others.
    async fn find_applications_by_claim(&self, claim: &Claim) -> StoreResult<Vec<AppName>>;
}

/// Reading and writing devices. Creating a device needs its application to exist and
/// not be in deletion; aliases and unique usernames are claimed in the same write.
#[async_trait]
pub trait DeviceStore: Send + Sync {
    async fn get_device(&self, app: &AppName, device: &DeviceName) -> StoreResult<Option<Device>>;
    /// An application and one of its devices, as device authentication looks them up:
    /// `None` without the application, else the application and the device if found.
    /// DynamoDB reads both in one request (a BatchGetItem, eventually consistent: half a
    /// read unit per item of up to 4 KB), and reads the application again, strongly
    /// consistent, when it did not find it; a device it did not find may have been
    /// created a moment ago, which [`find_device_by_claim`](Self::find_device_by_claim)
    /// (strongly consistent, and a device's own name is one of its claims) tells. Not for
    /// read-modify-write: what is found may be up to about a second old.
    async fn get_application_device(
        &self,
        app: &AppName,
        device: &DeviceName,
    ) -> StoreResult<Option<(StoredApplication, Option<Device>)>>;
    /// Every device of an application, ordered by name.
    async fn list_devices(&self, app: &AppName) -> StoreResult<Vec<Device>>;
    /// One page of an application's devices, ordered by name: of those whose labels
    /// match `selector`, `offset` are skipped and at most `limit` returned. The default
    /// lists every device and slices; the embedded store skips without decoding the
    /// devices it skips, and decodes only the labels of those the selector refuses.
    async fn list_devices_page(
        &self,
        app: &AppName,
        selector: &LabelSelector,
        offset: usize,
        limit: Option<usize>,
    ) -> StoreResult<Vec<Device>> {
        Ok(self
            .list_devices(app)
            .await?
            .into_iter()
            .filter(|d| selector.matches(&d.metadata.labels))
            .skip(offset)
            .take(limit.unwrap_or(usize::MAX))
            .collect())
    }
    /// The devices that name `gateway` in their `spec.gatewaySelector`, ordered by name.
    async fn devices_served_by(&self, app: &AppName, gateway: &str)
    -> StoreResult<Vec<DeviceName>>;
    /// The device holding a name (its own, an alias or a unique username), if any.
    async fn find_device_by_claim(
        &self,
        app: &AppName,
        claim: &Claim,
    ) -> StoreResult<Option<DeviceName>>;
    async fn create_device(&self, app: &AppName, device: &Device) -> StoreResult<()> {
        self.create_device_within(app, device, None).await
    }
    /// Creates a device unless its application holds `limit` devices already
    /// ([`Conflict::QuotaExceeded`]). The stores keep a count of devices per application
    /// with every create and delete, so the check reads one item, never the devices.
    async fn create_device_within(
        &self,
        app: &AppName,
        device: &Device,
        limit: Option<u64>,
    ) -> StoreResult<()> {
        let limits = DeviceLimits {
            per_application: limit,
            per_owner: None,
        };
        self.create_device_limited(app, device, limits).await
    }
    /// Creates a device unless its application holds `limits.per_application` devices
    /// already ([`Conflict::QuotaExceeded`]) or the applications of its application's
    /// owner hold `limits.per_owner` ([`Conflict::OwnerQuotaExceeded`]). Both counts are
    /// kept with every write (device create and delete, application delete, transfer of
    /// ownership), each check reads one item.
    async fn create_device_limited(
        &self,
        app: &AppName,
        device: &Device,
        limits: DeviceLimits,
    ) -> StoreResult<()>;
    /// The devices an application holds, as counted with the writes.
    async fn count_devices(&self, app: &AppName) -> StoreResult<u64>;
    /// The devices of all applications a user owns, as counted with the writes.
    async fn count_owned_devices(&self, user: &str) -> StoreResult<u64>;
    /// Replaces `previous` by `next`, releasing and taking claims as they changed.
    async fn update_device(
        &self,
        app: &AppName,
        previous: &Device,
        next: &Device,
    ) -> StoreResult<()>;
    async fn delete_device(&self, app: &AppName, previous: &Device) -> StoreResult<()>;
}

/// Access tokens of users.
#[async_trait]
pub trait TokenStore: Send + Sync {
    async fn create_token(&self, token: &StoredToken) -> StoreResult<()>;
    async fn get_token(&self, prefix: &str) -> StoreResult<Option<StoredToken>>;
    /// The tokens of one user, ordered by prefix.
    async fn list_tokens(&self, user: &str) -> StoreResult<Vec<StoredToken>>;
    /// Deletes a user's token; `false` if the user holds no token with that prefix.
    async fn delete_token(&self, user: &str, prefix: &str) -> StoreResult<bool>;
}

/// The names a stored device holds within its application: its own name, its aliases
/// and unique usernames. Stored specs were checked on write.
pub fn device_claims(device: &Device) -> Vec<Claim> {
    named_claims(device, crate::model::device_spec::claims(&device.spec))
}

/// A device's own name and the other names its spec gives it (`spec_claims`: none when
/// the spec could not be read), without repeats.
pub(crate) fn named_claims(
    device: &Device,
    spec_claims: Result<Vec<Claim>, crate::model::device_spec::SpecError>,
) -> Vec<Claim> {
    let mut claims = vec![Claim::Name(device.metadata.name.clone())];
    claims.extend(spec_claims.unwrap_or_default());
    crate::model::claims::without_repeats(claims)
}

/// The gateways a stored device names, without repeats.
pub fn device_gateways(device: &Device) -> Vec<String> {
    let mut gateways = crate::model::device_spec::gateways(&device.spec).unwrap_or_default();
    gateways.sort();
    gateways.dedup();
    gateways
}

/// The names a stored application is indexed by across all applications: the subjects
/// of its valid trust anchors (shared with any other application holding them).
pub fn application_claims(app: &Application) -> Vec<Claim> {
    let subjects = crate::model::trust_anchors::valid_subjects(&app.status);
    crate::model::claims::without_repeats(subjects.into_iter().map(Claim::TrustAnchor).collect())
}

/// Commands waiting for their devices, and responses waiting for their applications.
/// Expired entries are never returned, even before a store's own expiry removes them.
#[async_trait]
pub trait CommandStore: Send + Sync {
    /// Keeps a command: in its device's inbox until `expires`, and by its request id
    /// until it takes no more responses.
    async fn enqueue(&self, command: &Command) -> StoreResult<()>;
    /// Takes the oldest unexpired command from a device's inbox. A command is taken at
    /// most once, however many take at the same time.
    async fn take_command(
        &self,
        application: &str,
        device: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<Command>>;
    /// A command by its request id, while it takes responses.
    async fn get_command(&self, id: &str, now: DateTime<Utc>) -> StoreResult<Option<Command>>;
    /// Records the response to a command (kept until `expires`); `false` if it had one.
    async fn record_response(
        &self,
        response: &CommandResponse,
        expires: DateTime<Utc>,
    ) -> StoreResult<bool>;
    /// The response to a command, if one came and has not expired.
    async fn get_response(
        &self,
        id: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<CommandResponse>>;
}

/// Every port, as one handle that functions and the local runner share.
pub trait Store: ApplicationStore + DeviceStore + TokenStore + CommandStore {}
impl<T: ApplicationStore + DeviceStore + TokenStore + CommandStore> Store for T {}
