//! Device authentication, one implementation for HTTP and MQTT: passwords (plain,
//! bcrypt, SHA-512-crypt, with a cache of successful checks), usernames, X.509 client
//! certificates against the application's trust anchors, and gateways acting for
//! other devices (`as`).
//!
//! The result is a value: [`DeviceAuthentication::Allow`] or `Deny { reason }`. `Err`
//! means the store could not be asked, so nothing was decided (the endpoints answer 503).

mod cache;
mod checks;
mod credentials;
mod lookup_cache;
pub mod presented;
mod x509;

pub use cache::VerifiedPasswords;
pub use checks::{FAILURE_TTL, MAX_WAITING_PER_DEVICE, PasswordChecks};
pub use lookup_cache::{
    DEFAULT_FUNCTION_LOOKUP_CAPACITY, LookupCache, MAX_LOOKUP_CAPACITY, MAX_LOOKUP_TTL,
};
pub use x509::{AMBIGUOUS, Clock, MAX_CANDIDATES, may_use_certificate, valid_until, verify_chain};

use crate::model::device_spec::{self, Credential};
use crate::model::{AppName, Application, Claim, Device, DeviceName};
use crate::registry::{AppChanges, Changes};
use crate::store::{ApplicationStore, DeviceStore, Store, StoreError};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

/// What a device presents.
pub enum DeviceCredential {
    /// A password for the device `device`: `device@app:password`, or `device:password`
    /// with the application named apart.
    Password { device: String, password: String },
    /// A username and password; `device` names the device when given apart, else the
    /// username does.
    UsernamePassword {
        username: String,
        password: String,
        device: Option<String>,
    },
    /// A client certificate chain (DER, end entity first), already checked for
    /// possession of the key by the TLS layer.
    Certificate { chain: Vec<Vec<u8>> },
}

impl std::fmt::Debug for DeviceCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Password { device, .. } => write!(f, "Password({device}, redacted)"),
            Self::UsernamePassword {
                username, device, ..
            } => {
                write!(f, "UsernamePassword({username}, {device:?}, redacted)")
            }
            Self::Certificate { chain } => write!(f, "Certificate({} certificates)", chain.len()),
        }
    }
}

/// An authentication request.
#[derive(Debug)]
pub struct DeviceAuthRequest {
    /// The application, when named apart from the credential (`?application=`, or the
    /// `@app` of a username); certificates name it by their issuer.
    pub application: Option<String>,
    pub credential: DeviceCredential,
    /// The device the authenticated one acts for, as a gateway (`as=`).
    pub r#as: Option<String>,
}

/// An authenticated device.
///
/// The application and the devices are as authentication keeps them: without their
/// `status`, and the devices without the spec's credential sections (`authentication`,
/// `credentials`), whose credentials are in [`credentials`](Self::credentials), parsed.
#[derive(Debug, Clone)]
pub struct Authenticated {
    pub application: Arc<Application>,
    /// The device that authenticated (the sender).
    pub sender: Arc<Device>,
    /// The sender's credentials.
    pub credentials: Arc<[Credential]>,
    /// The device the data is for: `as`, or the sender itself.
    pub device: Arc<Device>,
}

impl Authenticated {
    /// The names the sender holds within its application: its own name, its aliases and
    /// unique usernames, as [`device_claims`](crate::store::device_claims) gives them for
    /// the stored device (which reads the credentials from the spec, where the sender
    /// has none).
    pub fn sender_claims(&self) -> Vec<Claim> {
        crate::store::named_claims(
            &self.sender,
            device_spec::claims_with(&self.sender.spec, &self.credentials),
        )
    }
}

/// An application and one of its devices, as looked up and kept.
#[derive(Debug, Clone)]
struct Found {
    application: Arc<Application>,
    device: Arc<Device>,
    /// The device's credentials, read from its spec once, at the lookup.
    credentials: Arc<[Credential]>,
}

/// Whether two reads of a resource are of the same version of it.
fn same_version(a: &Application, b: &Application) -> bool {
    a.metadata.uid == b.metadata.uid && a.metadata.resource_version == b.metadata.resource_version
}

/// An application and one of its devices as authentication keeps them (remembered, and
/// held by every live connection): without their `status`, the registry's readiness
/// conditions and trust anchor evaluation, which nothing after authentication reads and
/// which would take about half their room; and the device's credentials parsed, out of
/// its spec. Their JSON (a password's hash in a spec of nothing else is four nested
/// objects of one key, each a B-tree node of about 630 bytes) took about 2.5 KB per
/// device, where a parsed password takes about 200 bytes.
fn found(mut application: Application, mut device: Device) -> Found {
    application.status = serde_json::Map::new();
    device.status = serde_json::Map::new();
    let credentials = device_spec::take_credentials(&mut device.spec).into();
    Found {
        application: Arc::new(application),
        device: Arc::new(device),
        credentials,
    }
}

/// The key of a remembered lookup, borrowed: hashes and compares as the stored
/// `(application, id)` pair.
#[derive(Hash)]
struct LookupKey<'a>(&'a str, &'a str);

impl quick_cache::Equivalent<(String, String)> for LookupKey<'_> {
    fn equivalent(&self, key: &(String, String)) -> bool {
        self.0 == key.0 && self.1 == key.1
    }
}

/// A remembered lookup.
#[derive(Clone)]
struct Lookup {
    at: Instant,
    /// The application's write count, and its value before the store was read.
    changes: AppChanges,
    seen: u64,
    found: Found,
}

/// The outcome of device authentication.
#[derive(Debug, Clone)]
pub enum DeviceAuthentication {
    Allow(Box<Authenticated>),
    Deny { reason: &'static str },
}

fn deny(reason: &'static str) -> Result<DeviceAuthentication, StoreError> {
    Ok(DeviceAuthentication::Deny { reason })
}

/// Authenticates devices against the registry.
///
/// Lookups of (application, device) are remembered for `lookup_ttl` (5 s by default),
/// so a busy device costs no registry reads: a change in the registry reaches device
/// authentication within that time, and at once when the registry runs in the same
/// process and shares its [`Changes`]. A lookup that is not remembered reads the
/// application and the device together ([`DeviceStore::get_application_device`]: one
/// DynamoDB request); only a device named by an alias or unique username costs more.
#[derive(Clone)]
pub struct DeviceAuthenticator {
    applications: Arc<dyn ApplicationStore>,
    devices: Arc<dyn DeviceStore>,
    verified: Arc<VerifiedPasswords>,
    checks: Arc<PasswordChecks>,
    clock: Arc<dyn Clock>,
    lookups: Arc<quick_cache::sync::Cache<(String, String), Lookup>>,
    /// The application objects kept, by name, for the devices looked up apart to share.
    kept_applications: Arc<quick_cache::sync::Cache<String, Weak<Application>>>,
    lookup_ttl: Duration,
    changes: Changes,
    /// Lookups that read the store (not remembered, or stale).
    lookup_reads: Arc<std::sync::atomic::AtomicU64>,
}

/// The storage ports device authentication uses: applications and devices.
#[derive(Clone)]
pub struct AuthPorts {
    pub applications: Arc<dyn ApplicationStore>,
    pub devices: Arc<dyn DeviceStore>,
}

impl From<Arc<dyn Store>> for AuthPorts {
    fn from(store: Arc<dyn Store>) -> Self {
        Self {
            applications: store.clone(),
            devices: store,
        }
    }
}

impl<S: ApplicationStore + DeviceStore + 'static> From<Arc<S>> for AuthPorts {
    fn from(store: Arc<S>) -> Self {
        Self {
            applications: store.clone(),
            devices: store,
        }
    }
}

/// How long a lookup is remembered by default.
pub const DEFAULT_LOOKUP_TTL: Duration = Duration::from_secs(5);
/// Most lookups remembered by default.
pub const DEFAULT_LOOKUP_CAPACITY: usize = 100_000;

impl DeviceAuthenticator {
    /// An authenticator over the application and device ports (a whole store gives both).
    pub fn new(ports: impl Into<AuthPorts>) -> Self {
        Self::with_clock(ports, Arc::new(x509::SystemClock))
    }

    /// With an injected clock, for certificate validity.
    pub fn with_clock(ports: impl Into<AuthPorts>, clock: Arc<dyn Clock>) -> Self {
        let AuthPorts {
            applications,
            devices,
        } = ports.into();
        Self {
            applications,
            devices,
            verified: Arc::new(VerifiedPasswords::new(VerifiedPasswords::DEFAULT_CAPACITY)),
            checks: Arc::new(PasswordChecks::default()),
            clock,
            lookups: Arc::new(quick_cache::sync::Cache::new(DEFAULT_LOOKUP_CAPACITY)),
            kept_applications: Arc::new(quick_cache::sync::Cache::new(DEFAULT_LOOKUP_CAPACITY)),
            lookup_ttl: DEFAULT_LOOKUP_TTL,
            changes: Changes::default(),
            lookup_reads: Arc::default(),
        }
    }

    /// Remembers lookups for `ttl` (zero: never).
    pub fn with_lookup_ttl(mut self, ttl: Duration) -> Self {
        self.lookup_ttl = ttl;
        self
    }

    /// Remembers at most `capacity` lookups (at least one; the least recently used go
    /// first). Forgets what was remembered.
    pub fn with_lookup_capacity(mut self, capacity: usize) -> Self {
        self.lookups = Arc::new(quick_cache::sync::Cache::new(capacity.max(1)));
        self.kept_applications = Arc::new(quick_cache::sync::Cache::new(capacity.max(1)));
        self
    }

    /// Runs at most `threads` slow password checks at once (default: half the cores).
    pub fn with_password_check_threads(mut self, threads: usize) -> Self {
        self.checks = Arc::new(PasswordChecks::new(threads));
        self
    }

    /// Forgets an application's lookups when its count in the registry's `changes`
    /// moves on.
    pub fn with_changes(mut self, changes: Changes) -> Self {
        self.changes = changes;
        self
    }

    /// How many lookups read the store so far: those not remembered, expired, or made
    /// stale by a write to their application (for tests and metrics).
    pub fn lookup_reads(&self) -> u64 {
        self.lookup_reads.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The cache of successful password checks (for tests and metrics).
    pub fn verified_passwords(&self) -> &VerifiedPasswords {
        &self.verified
    }

    pub async fn authenticate(
        &self,
        request: DeviceAuthRequest,
    ) -> Result<DeviceAuthentication, StoreError> {
        let found = match &request.credential {
            DeviceCredential::Certificate { chain } => {
                match x509::authenticate(self, request.application.as_deref(), chain).await? {
                    Ok(found) => found,
                    Err(reason) => return deny(reason),
                }
            }
            DeviceCredential::Password { device, password } => {
                let Some(app) = request.application.as_deref() else {
                    return deny("no application given");
                };
                let Some(found) = self.lookup(app, device).await? else {
                    return deny("unknown application or device");
                };
                let presented = credentials::Presented::Password {
                    id: device,
                    password,
                };
                if let Some(reason) = self
                    .check_password(&found, presented, "wrong password")
                    .await
                {
                    return deny(reason);
                }
                found
            }
            DeviceCredential::UsernamePassword {
                username,
                password,
                device,
            } => {
                let Some(app) = request.application.as_deref() else {
                    return deny("no application given");
                };
                let id = device.as_deref().unwrap_or(username);
                let Some(found) = self.lookup(app, id).await? else {
                    return deny("unknown application or device");
                };
                let presented = credentials::Presented::UsernamePassword { username, password };
                if let Some(reason) = self
                    .check_password(&found, presented, "wrong username or password")
                    .await
                {
                    return deny(reason);
                }
                found
            }
        };
        self.act_as(found, request.r#as.as_deref()).await
    }

    /// The applications that accept a client certificate chain (DER, end entity first)
    /// that names no application: those holding its issuer whose anchors it verifies
    /// against and with a usable device that may use it (see `x509.rs`); the denial when
    /// none does. Authenticating it without an application succeeds only when there is
    /// exactly one; IoT Core's just-in-time validation grants each its own policy.
    pub async fn certificate_applications(
        &self,
        chain: &[Vec<u8>],
    ) -> Result<Result<Vec<String>, &'static str>, StoreError> {
        x509::accepting_applications(self, chain).await
    }

    /// A device that was authenticated elsewhere (by the MQTT broker, at CONNECT),
    /// sending `sender` (name, alias or unique username) and acting for `target`: the
    /// same checks as [`authenticate`](Self::authenticate) but the credential's.
    pub async fn resolve(
        &self,
        application: &str,
        sender: &str,
        target: Option<&str>,
    ) -> Result<DeviceAuthentication, StoreError> {
        let Some(found) = self.lookup(application, sender).await? else {
            return deny("unknown application or device");
        };
        self.act_as(found, target).await
    }

    /// The checks after the credential: usable objects, and the gateway relation for `as`.
    async fn act_as(
        &self,
        found: Found,
        target: Option<&str>,
    ) -> Result<DeviceAuthentication, StoreError> {
        let Found {
            application,
            device: sender,
            credentials,
        } = found;
        if let Some(reason) = unusable(&application).or_else(|| unusable(&sender)) {
            return deny(reason);
        }
        let device = match target {
            None => sender.clone(),
            Some(target) if target == sender.metadata.name => sender.clone(),
            Some(target) => {
                let Some(Found { device, .. }) =
                    self.lookup(&application.metadata.name, target).await?
                else {
                    return deny("unknown device to act for");
                };
                let gateways = device_spec::gateways(&device.spec).unwrap_or_default();
                if !gateways.contains(&sender.metadata.name) {
                    return deny("not a gateway of the device");
                }
                if let Some(reason) = unusable(&device) {
                    return deny(reason);
                }
                device
            }
        };
        Ok(DeviceAuthentication::Allow(Box::new(Authenticated {
            application,
            sender,
            credentials,
            device,
        })))
    }

    /// The application and the device named `id` (its name, an alias or a unique
    /// username), remembered for a while.
    async fn lookup(&self, app: &str, id: &str) -> Result<Option<Found>, StoreError> {
        if let Some(found) = self.remembered(app, id) {
            return Ok(Some(found));
        }
        // the store's reads in a future of their own, allocated on a miss only: the
        // hit, once per message, keeps its callers' futures small
        Box::pin(self.look_up_stored(app, id)).await
    }

    /// A lookup remembered and still current: its application written to since by no
    /// one (no allocation: the key is borrowed).
    fn remembered(&self, app: &str, id: &str) -> Option<Found> {
        if self.lookup_ttl.is_zero() {
            return None;
        }
        self.lookups
            .get(&LookupKey(app, id))
            .filter(|hit| hit.changes.current() == hit.seen && hit.at.elapsed() < self.lookup_ttl)
            .map(|hit| hit.found)
    }

    /// The application and the device read from the store, remembered when lookups are.
    async fn look_up_stored(&self, app: &str, id: &str) -> Result<Option<Found>, StoreError> {
        let Ok(name) = AppName::parse(app) else {
            return Ok(None);
        };
        self.lookup_reads
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // the application's count as the store is read (or later)
        let changes = self.changes.of(app);
        let seen = changes.current();
        let (application, device) = match DeviceName::parse(id) {
            // the application and the device by name in one read; a device it missed
            // (an alias, or created a moment ago) is found by its claim
            Ok(device) => match self.devices.get_application_device(&name, &device).await? {
                None => return Ok(None),
                Some((application, Some(device))) => (application, Some(device)),
                Some((application, None)) => (application, self.find_by_claim(&name, id).await?),
            },
            Err(_) => match self.applications.get_application(&name).await? {
                None => return Ok(None),
                Some(application) => (application, self.find_by_claim(&name, id).await?),
            },
        };
        let Some(device) = device else {
            return Ok(None);
        };
        // unchanged since the lookup remembered before (expired, or of an older change
        // count): its objects again, which every live connection of the device holds,
        // rather than a second copy of each (and its credentials not parsed again)
        let found = match self.lookups.peek(&LookupKey(app, id)) {
            Some(before)
                if same_version(&before.found.application, &application.app)
                    && same_version(&before.found.device, &device) =>
            {
                before.found
            }
            _ => {
                let mut found = found(application.app, device);
                self.share_application(app, &mut found.application);
                found
            }
        };
        if !self.lookup_ttl.is_zero() {
            let lookup = Lookup {
                at: Instant::now(),
                changes,
                seen,
                found: found.clone(),
            };
            self.lookups.insert((app.to_owned(), id.to_owned()), lookup);
        }
        Ok(Some(found))
    }

    /// The application object that an earlier lookup of another of its devices keeps, if
    /// it is of the same version, instead of `application`; else `application` becomes
    /// the one kept. Each lookup reads the application anew, and every device of an
    /// application would otherwise hold a copy of it for as long as it is connected.
    fn share_application(&self, app: &str, application: &mut Arc<Application>) {
        if let Some(kept) = self
            .kept_applications
            .get(app)
            .and_then(|kept| kept.upgrade())
            && same_version(&kept, application)
        {
            *application = kept;
        } else {
            self.kept_applications
                .insert(app.to_owned(), Arc::downgrade(application));
        }
    }

    /// A device by name, else by alias or unique username.
    pub(crate) async fn find_device(
        &self,
        app: &AppName,
        id: &str,
    ) -> Result<Option<Device>, StoreError> {
        if let Ok(name) = DeviceName::parse(id)
            && let Some(device) = self.devices.get_device(app, &name).await?
        {
            return Ok(Some(device));
        }
        self.find_by_claim(app, id).await
    }

    /// A device by alias or unique username.
    async fn find_by_claim(&self, app: &AppName, id: &str) -> Result<Option<Device>, StoreError> {
        match self
            .devices
            .find_device_by_claim(app, &Claim::Alias(id.to_owned()))
            .await?
        {
            Some(name) => self.devices.get_device(app, &name).await,
            None => Ok(None),
        }
    }

    /// Checks a presented password: `None` when it matches, else why not. A match
    /// remembered for this version of the device answers at once; otherwise the stored
    /// hashes are computed on the bounded pool, one check per device at a time.
    async fn check_password(
        &self,
        found: &Found,
        presented: credentials::Presented<'_>,
        wrong: &'static str,
    ) -> Option<&'static str> {
        let device = &found.device;
        let key = self.verified.key(&found.application, device, &presented);
        if self.verified.contains(&key) {
            return None;
        }
        if self.checks.failed_recently(&key) {
            return Some(wrong);
        }
        let Ok(_turn) = self.checks.device_turn(&device.metadata.uid, &key).await else {
            // answered late, so that a flood of guesses slows itself down
            tokio::time::sleep(checks::BUSY_DELAY).await;
            return Some("too many password checks of this device at once");
        };
        // the check this one waited for may have settled it
        if self.verified.contains(&key) {
            return None;
        }
        if self.checks.failed_recently(&key) {
            return Some(wrong);
        }
        self.verified.count_slow_check();
        let stored = found.credentials.clone();
        let name = device.metadata.name.clone();
        let owned = credentials::OwnedPresented::from(&presented);
        let ok = self
            .checks
            .run(move || credentials::matches(&stored, &name, &owned.as_presented()))
            .await;
        match ok {
            Some(true) => {
                self.verified.insert(key);
                None
            }
            Some(false) => {
                self.checks.remember_failure(key);
                Some(wrong)
            }
            // not remembered: the password was not judged
            None => Some("the password could not be checked"),
        }
    }

    /// The pool of slow password checks (for tests and metrics).
    pub fn password_checks(&self) -> &PasswordChecks {
        &self.checks
    }
}

/// Why an application or device cannot be used: disabled or being deleted.
fn unusable(resource: &crate::model::Resource) -> Option<&'static str> {
    if resource.is_deleting() {
        return Some("being deleted");
    }
    resource.is_disabled().then_some("disabled")
}

/// Whether credentials hold any of the given kind, for callers that pick a method.
pub fn has_certificate_credential(credentials: &[Credential]) -> bool {
    credentials
        .iter()
        .any(|c| matches!(c, Credential::Certificate(_)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authentication_keeps_no_status_and_the_credentials_parsed() {
        let resource = |name: &str| -> Device {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": name, "uid": format!("{name}-uid"),
                    "creationTimestamp": "2026-01-01T00:00:00Z", "generation": 1,
                    "resourceVersion": "1"},
                "spec": {
                    "authentication": {"credentials": [{"pass": "secret"}]},
                    "credentials": {"credentials": [
                        {"user": {"username": "u1", "password": "other"}}]},
                    "gatewaySelector": {"matchNames": ["gw1"]},
                    "ttn": {"payload": "raw"},
                },
                "status": crate::model::status::device_status(None, chrono::Utc::now()),
            }))
            .unwrap()
        };
        let found = found(resource("app1"), resource("dev1"));
        let (application, device) = (&found.application, &found.device);
        assert!(application.status.is_empty() && device.status.is_empty());
        // the credentials of both sections, as the spec gave them, and out of it
        assert_eq!(
            &found.credentials[..],
            device_spec::credentials(&resource("dev1").spec).unwrap()
        );
        assert_eq!(found.credentials.len(), 2);
        assert!(!device.spec.contains_key("authentication"));
        assert!(!device.spec.contains_key("credentials"));
        // the rest as stored
        assert_eq!(device.metadata, resource("dev1").metadata);
        let mut rest = resource("dev1").spec;
        rest.remove("authentication");
        rest.remove("credentials");
        assert_eq!(device.spec, rest);
        assert_eq!(device_spec::gateways(&device.spec).unwrap(), ["gw1"]);
        assert_eq!(application.metadata.uid, "app1-uid");
    }

    #[test]
    fn an_unreadable_credential_section_leaves_no_credentials() {
        let mut spec = serde_json::json!({
            "authentication": {"credentials": [{"pass": 42}]},
            "ttn": {"payload": "raw"},
        })
        .as_object()
        .unwrap()
        .clone();
        assert!(device_spec::take_credentials(&mut spec).is_empty());
        assert_eq!(spec.keys().collect::<Vec<_>>(), ["ttn"]);
    }

    #[test]
    fn a_borrowed_key_finds_what_the_owned_pair_remembers() {
        let cache = quick_cache::sync::Cache::<(String, String), u32>::new(8);
        cache.insert(("app1".to_owned(), "device1".to_owned()), 1);
        cache.insert(("app1".to_owned(), "device2".to_owned()), 2);
        assert_eq!(cache.get(&LookupKey("app1", "device1")), Some(1));
        assert_eq!(cache.get(&LookupKey("app1", "device2")), Some(2));
        // the pair's boundary counts: ("app1d", "evice1") is another key
        assert_eq!(cache.get(&LookupKey("app1d", "evice1")), None);
        assert_eq!(cache.get(&LookupKey("app2", "device1")), None);
    }
}
