//! Who connects over MQTT, and the policy that confines them: the same decision for AWS
//! IoT Core's custom authorizer and for the local broker.
//!
//! - **Devices** connect with a client certificate, with username `device@app` and the
//!   device's password, or with a username of the device and client id `device@app`. The
//!   client id must always be `{device}@{app}` (the device's name, an alias or a unique
//!   username), so that every message can be traced to its device.
//! - **Applications** connect with username `<user>` and an access token (or an OIDC
//!   token) as the password, and a client id `{user id}/{name}` in a namespace of the
//!   user's own (see [`application_client_id`]): no application can take a device's client
//!   id, nor another user's, so no client can take over another principal's session.
//!
//! A device may publish telemetry on `dt/{app}/{device}/...` and answers on
//! `cmd/{app}/{device}/+/res/...`, and subscribe to and receive `cmd/{app}/{device}/...`;
//! a gateway the same for each device that names it. An application may subscribe to
//! and receive `app/{app}` (also shared, `$share/{group}/app/{app}`) and publish commands
//! on `command/{app}/...`, for each application it may read.

use super::policy::{Action, Policy, literal};
use crate::access::oidc::OidcVerifier;
use crate::access::{self, Authentication, Permission, Principal};
use crate::device_auth::{
    Authenticated, DeviceAuthRequest, DeviceAuthentication, DeviceAuthenticator, DeviceCredential,
};
use crate::model::{AppName, Application, Device};
use crate::registry::Registry;
use crate::store::StoreError;
use sha2::{Digest, Sha256};
use std::sync::Arc;

/// A gateway serving more devices than this gets application-wide topic rights; the
/// ingest still checks each message's gateway relation.
const MAX_ENUMERATED_DEVICES: usize = 50;

/// The most policy documents a policy may take on IoT Core: a custom authorizer's answer
/// carries at most 10, and a certificate holds at most 10 policies. A gateway whose
/// served devices' names would need more gets application-wide topic rights too; an
/// application client whose user may read more applications than fit gets the first
/// ones ([`application_policy_within`]).
pub const MAX_IOT_DOCUMENTS: usize = 10;

/// What a client presents in its CONNECT (and TLS handshake).
#[derive(Clone)]
pub struct MqttConnect {
    pub client_id: String,
    pub username: Option<String>,
    pub password: Option<Vec<u8>>,
    /// The client certificate chain (DER, end entity first), over TLS.
    pub certificates: Option<Vec<Vec<u8>>>,
}

impl std::fmt::Debug for MqttConnect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MqttConnect")
            .field("client_id", &self.client_id)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "redacted"))
            .field("certificates", &self.certificates.as_ref().map(Vec::len))
            .finish()
    }
}

/// Who an authorized client is.
#[derive(Debug, Clone)]
pub enum MqttIdentity {
    Device {
        application: Arc<Application>,
        device: Arc<Device>,
    },
    Application {
        principal: Principal,
    },
}

/// An authorized client.
#[derive(Debug, Clone)]
pub struct Authorized {
    pub identity: MqttIdentity,
    pub policy: Policy,
    /// `[a-zA-Z0-9]{1,128}`, as IoT Core wants it.
    pub principal_id: String,
}

#[derive(Debug, Clone)]
pub enum ConnectDecision {
    Allow(Box<Authorized>),
    Deny { reason: &'static str },
}

/// Why nothing could be decided (a backend was unreachable).
#[derive(Debug, thiserror::Error)]
pub enum MqttAuthError {
    #[error("the registry is unavailable")]
    Store(#[from] StoreError),
    #[error("the OIDC issuer is unavailable")]
    Oidc(#[from] crate::access::oidc::OidcUnavailable),
    #[error("the registry is unavailable")]
    Registry(#[from] crate::registry::RegistryError),
}

/// Decides CONNECTs.
#[derive(Clone)]
pub struct MqttAuthorizer {
    devices: DeviceAuthenticator,
    registry: Registry,
    oidc: Option<Arc<OidcVerifier>>,
    /// The most IoT Core policy documents a device's or an application client's policy
    /// may take, for the authorizer and validator of IoT Core
    /// ([`MqttAuthorizer::for_iot_core`]); the local broker has no such bound.
    max_documents: Option<usize>,
}

fn deny(reason: &'static str) -> Result<ConnectDecision, MqttAuthError> {
    Ok(ConnectDecision::Deny { reason })
}

/// A principal id from a name: `p` and hex of its SHA-256.
fn principal_id(kind: &str, name: &str) -> String {
    let digest = Sha256::digest(format!("{kind}/{name}").as_bytes());
    let hex: String = digest.iter().take(20).map(|b| format!("{b:02x}")).collect();
    format!("{kind}{hex}")
}

/// Characters an application's client id name may not hold: the MQTT level separator,
/// `@` (which device client ids end with), MQTT and IoT policy wildcards.
const CLIENT_NAME_FORBIDDEN: [char; 6] = ['/', '@', '+', '#', '*', '?'];

/// IoT Core's longest client id.
pub const MAX_CLIENT_ID_LEN: usize = 128;

/// Whether `client_id` lies in the namespace of `user`'s application clients:
/// `{user}/{name}`, where `name` is 1 or more characters without `/`, `@`, `+`, `#`, `*`,
/// `?` or control characters, and the whole at most 128 bytes (IoT Core's limit).
///
/// The user is everything before the last `/`, so two users' namespaces never meet; and
/// every device client id ends with `@{application}` (a DNS label, no `/`), which an
/// application client id cannot, so no application client can take a device's session.
pub fn application_client_id(user: &str, client_id: &str) -> Result<(), &'static str> {
    let Some((owner, name)) = client_id.rsplit_once('/') else {
        return Err("an application's client id must be <user id>/<name>");
    };
    if owner != user {
        return Err("an application's client id must start with the user's own id");
    }
    if name.is_empty()
        || name
            .chars()
            .any(|c| c.is_control() || CLIENT_NAME_FORBIDDEN.contains(&c))
    {
        return Err(
            "the name in an application's client id must not be empty nor hold '/', '@', '+', '#', '*' or '?'",
        );
    }
    if client_id.len() > MAX_CLIENT_ID_LEN
        || user
            .chars()
            .any(|c| c.is_control() || matches!(c, '+' | '#' | '*' | '?'))
    {
        return Err("this user cannot connect over MQTT: its id makes no valid client id");
    }
    Ok(())
}

/// The names a device authenticated by a certificate may connect under on IoT Core
/// (`{name}@{app}`), fixed in the certificate's policy when it is validated: its name,
/// aliases and unique usernames, but for those that make no client id (longer than
/// [`MAX_CLIENT_ID_LEN`] with the application, or holding control characters) and those
/// holding a wildcard (`*`, `?`; aliases and usernames may). Each stands in the policy
/// as itself alone ([`literal`]: a `$` as `${$}`, so `${iot:ClientId}` is no variable).
/// The wildcards are left out even so: were `${*}` ever read as a wildcard, an alias
/// `line-*` would let the certificate connect as another device's `line-7@{app}`, while
/// a `${$}` read otherwise would only fail to match. (A password login is decided for
/// its own client id at each connection.)
pub fn certificate_client_names(authenticated: &Authenticated) -> Vec<String> {
    let app = &authenticated.application.metadata.name;
    authenticated
        .sender_claims()
        .iter()
        .map(|claim| claim.key())
        .filter(|name| {
            !name.contains(['*', '?'])
                && !name.chars().any(char::is_control)
                && name.len() + 1 + app.len() <= MAX_CLIENT_ID_LEN
        })
        .map(str::to_owned)
        .collect()
}

/// Whose topics a device's policy covers.
#[derive(Debug, Clone, Copy)]
pub enum Covered<'a> {
    /// These devices' (by name): the device's own and those it serves as a gateway.
    Devices(&'a [String]),
    /// Every device's of the application.
    All,
}

/// A device's policy: connecting with one of `client_ids`, the topics of the `covered`
/// devices in `app`. Client ids and device names stand in it as themselves alone
/// ([`literal`]).
pub fn device_topics_policy(app: &str, covered: Covered<'_>, client_ids: &[String]) -> Policy {
    let mut policy = Policy::default();
    for client_id in client_ids {
        policy.allow(Action::Connect, literal(client_id));
    }
    let devices: Vec<std::borrow::Cow<'_, str>> = match covered {
        Covered::Devices(names) => names.iter().map(|name| literal(name)).collect(),
        Covered::All => vec!["*".into()],
    };
    for d in devices {
        policy
            .allow(Action::Publish, format!("dt/{app}/{d}/*"))
            .allow(Action::Publish, format!("cmd/{app}/{d}/*/res/*"))
            .allow(Action::Subscribe, format!("cmd/{app}/{d}/*"))
            .allow(Action::Receive, format!("cmd/{app}/{d}/*"));
    }
    policy
}

/// The IoT Core policy documents a policy takes in any partition and region: counted with
/// the longest partition and region names and a 12-digit account.
fn documents_anywhere(policy: &Policy) -> usize {
    policy
        .to_iot_documents("aws-us-gov", "ap-southeast-5", "000000000000")
        .len()
}

/// A device's policy over its own topics and those of the devices it `serves`; over every
/// device's of the application when it serves more than [`MAX_ENUMERATED_DEVICES`], or
/// when the served devices' names are what would take it beyond `max_documents` IoT Core
/// policy documents (counted with the longest partition and region names, so in any of
/// them) and the application-wide policy fits. A policy too large by the device's own
/// names is returned as it is, for the caller to refuse.
pub fn gateway_policy(
    app: &str,
    device: &str,
    serves: &[String],
    client_ids: &[String],
    max_documents: Option<usize>,
) -> Policy {
    if serves.len() <= MAX_ENUMERATED_DEVICES {
        let devices: Vec<String> = std::iter::once(device.to_owned())
            .chain(serves.iter().cloned())
            .collect();
        let listed = device_topics_policy(app, Covered::Devices(&devices), client_ids);
        let Some(most) = max_documents.filter(|_| !serves.is_empty()) else {
            return listed;
        };
        let fits = |policy: &Policy| documents_anywhere(policy) <= most;
        // (the device alone is looked at only when the list overflows)
        if fits(&listed)
            || !fits(&device_topics_policy(
                app,
                Covered::Devices(&devices[..1]),
                client_ids,
            ))
        {
            return listed;
        }
    }
    device_topics_policy(app, Covered::All, client_ids)
}

/// An application client's policy: connecting with `client_id`, the events of `apps`
/// (`*` for all) and sending their devices commands.
///
/// IoT's `*` spans levels, so `$share/*/app/{app}` would admit
/// `$share/g/dt/{other app}/{device}/app/{app}`; the denial of `$share/*/*/app/*` takes
/// back every shared filter with more than one level between `$share/` and `/app/`,
/// and no `$share/{group}/app/{app}` (group and application one level each).
pub fn application_policy(client_id: &str, apps: &[String]) -> Policy {
    let mut policy = Policy::default();
    policy
        .allow(Action::Connect, literal(client_id))
        .deny(Action::Subscribe, "$share/*/*/app/*");
    for app in apps {
        policy
            .allow(Action::Subscribe, format!("app/{app}"))
            .allow(Action::Subscribe, format!("$share/*/app/{app}"))
            .allow(Action::Receive, format!("app/{app}"))
            .allow(Action::Publish, format!("command/{app}/*"));
    }
    policy
}

/// An application client's policy within `max_documents` IoT Core policy documents
/// (counted with the longest partition and region names, so in any of them): the
/// applications `apps` in their order (the user's own first, then those of which the
/// user is a member, each by name) as long as the policy holds them, and how many it
/// holds. Without a bound, all of them.
///
/// A custom authorizer's answer carries at most 10 documents, the topics of about 30 to
/// 61 applications by the length of their names (and of the client id); IoT Core refuses
/// a connection whose answer has more. A user who may read more connects with the first
/// ones rather than not at all.
pub fn application_policy_within(
    client_id: &str,
    apps: &[String],
    max_documents: Option<usize>,
) -> (Policy, usize) {
    let fits = |count: usize| {
        max_documents.is_none_or(|most| {
            documents_anywhere(&application_policy(client_id, &apps[..count])) <= most
        })
    };
    // more than ever fit (61 at the shortest names): a user who is a member of thousands
    // of applications costs a few small policies, not one of thousands
    const MORE_THAN_FIT: usize = 64;
    let mut high = apps.len();
    if high > MORE_THAN_FIT && !fits(MORE_THAN_FIT) {
        high = MORE_THAN_FIT;
    } else if fits(high) {
        return (application_policy(client_id, apps), apps.len());
    }
    // the most that fit: `low` fits (none at least: a client id is at most 128 bytes),
    // `high` does not
    let mut low = 0;
    while high - low > 1 {
        let middle = low + (high - low) / 2;
        if fits(middle) {
            low = middle;
        } else {
            high = middle;
        }
    }
    (application_policy(client_id, &apps[..low]), low)
}

/// Whether a password is a token of a user rather than a device's password.
fn is_user_token(password: &str) -> bool {
    if crate::access::token_format::prefix_of(password).is_some() {
        return true;
    }
    jsonwebtoken::decode_header(password).is_ok()
}

impl MqttAuthorizer {
    pub fn new(
        devices: DeviceAuthenticator,
        registry: Registry,
        oidc: Option<Arc<OidcVerifier>>,
    ) -> Self {
        Self {
            devices,
            registry,
            oidc,
            max_documents: None,
        }
    }

    /// For policies IoT Core takes: a gateway whose served devices' names would take more
    /// than [`MAX_IOT_DOCUMENTS`] gets the application's topics (see [`gateway_policy`]),
    /// an application client the first applications that fit in them (see
    /// [`application_policy_within`]).
    pub fn for_iot_core(mut self) -> Self {
        self.max_documents = Some(MAX_IOT_DOCUMENTS);
        self
    }

    pub async fn connect(&self, connect: &MqttConnect) -> Result<ConnectDecision, MqttAuthError> {
        if let Some(chain) = connect.certificates.as_ref().filter(|c| !c.is_empty()) {
            let credential = DeviceCredential::Certificate {
                chain: chain.clone(),
            };
            // the client id must be `{device}@{app}` of the authenticated device anyway:
            // its application is the hint that picks one of the applications trusting
            // the certificate's issuer (several may), else the username's
            let hint = connect
                .client_id
                .rsplit_once('@')
                .or_else(|| connect.username.as_deref()?.rsplit_once('@'))
                .map(|(_, app)| app.to_owned());
            return self.device(connect, hint, credential).await;
        }
        let password = match &connect.password {
            Some(bytes) => match String::from_utf8(bytes.clone()) {
                Ok(password) => password,
                Err(_) => return deny("the password is not UTF-8"),
            },
            None => return deny("no password"),
        };
        let username = connect.username.clone().unwrap_or_default();
        if is_user_token(&password) {
            return self.application(connect, &username, &password).await;
        }
        match username.rsplit_once('@') {
            Some((device, app)) => {
                let credential = DeviceCredential::Password {
                    device: device.to_owned(),
                    password,
                };
                self.device(connect, Some(app.to_owned()), credential).await
            }
            None => {
                let Some((device, app)) = connect.client_id.rsplit_once('@') else {
                    return deny("the client id must be <device>@<application>");
                };
                let credential = DeviceCredential::UsernamePassword {
                    username,
                    password,
                    device: Some(device.to_owned()),
                };
                self.device(connect, Some(app.to_owned()), credential).await
            }
        }
    }

    async fn device(
        &self,
        connect: &MqttConnect,
        application: Option<String>,
        credential: DeviceCredential,
    ) -> Result<ConnectDecision, MqttAuthError> {
        let request = DeviceAuthRequest {
            application,
            credential,
            r#as: None,
        };
        let authenticated = match self.devices.authenticate(request).await? {
            DeviceAuthentication::Allow(a) => a,
            DeviceAuthentication::Deny { reason } => return deny(reason),
        };
        let (app, device) = (
            &authenticated.application.metadata.name,
            &authenticated.sender,
        );
        // the client id names the device: its name, an alias or a unique username
        let names_device = connect.client_id.rsplit_once('@').is_some_and(|(id, a)| {
            a == app
                && authenticated
                    .sender_claims()
                    .iter()
                    .any(|claim| claim.key() == id)
        });
        if !names_device {
            return deny(
                "the client id must be <device>@<application> of the authenticated device",
            );
        }
        let mut policy = self
            .device_policy(
                app,
                &device.metadata.name,
                std::slice::from_ref(&connect.client_id),
            )
            .await?;
        policy.decided_for(
            app.as_str(),
            authenticated.application.metadata.uid.as_str(),
        );
        policy.decided_for_device(
            app.as_str(),
            device.metadata.name.as_str(),
            device.metadata.uid.as_str(),
        );
        Ok(ConnectDecision::Allow(Box::new(Authorized {
            principal_id: principal_id("d", &format!("{app}/{}", device.metadata.name)),
            identity: MqttIdentity::Device {
                application: authenticated.application.clone(),
                device: authenticated.sender.clone(),
            },
            policy,
        })))
    }

    /// A device certificate (DER, end entity first) checked as at CONNECT, without a
    /// client id yet: the device and the policy it gets, which allows every client id
    /// that names it (`{name|alias|unique username}@{app}`, see
    /// [`certificate_client_names`]). For the just-in-time
    /// validation of certificates IoT Core registered.
    pub async fn certificate_policy(
        &self,
        chain: Vec<Vec<u8>>,
    ) -> Result<Result<(Authenticated, Policy), &'static str>, MqttAuthError> {
        let request = DeviceAuthRequest {
            application: None,
            credential: DeviceCredential::Certificate { chain },
            r#as: None,
        };
        let authenticated = match self.devices.authenticate(request).await? {
            DeviceAuthentication::Allow(a) => *a,
            DeviceAuthentication::Deny { reason } => return Ok(Err(reason)),
        };
        let app = authenticated.application.metadata.name.clone();
        let client_ids: Vec<String> = certificate_client_names(&authenticated)
            .iter()
            .map(|name| format!("{name}@{app}"))
            .collect();
        let mut policy = self
            .device_policy(&app, &authenticated.sender.metadata.name, &client_ids)
            .await?;
        policy.decided_for(&app, authenticated.application.metadata.uid.as_str());
        policy.decided_for_device(
            app,
            authenticated.sender.metadata.name.as_str(),
            authenticated.sender.metadata.uid.as_str(),
        );
        Ok(Ok((authenticated, policy)))
    }

    /// A device's policy: connecting with one of `client_ids`, its own topics and those
    /// of the devices it serves as a gateway.
    pub async fn device_policy(
        &self,
        app: &str,
        device: &str,
        client_ids: &[String],
    ) -> Result<Policy, MqttAuthError> {
        let app_name = AppName::parse(app).expect("stored names are valid");
        let served = self.registry.devices_served_by(&app_name, device).await?;
        let served: Vec<String> = served.iter().map(|d| d.to_string()).collect();
        Ok(gateway_policy(
            app,
            device,
            &served,
            client_ids,
            self.max_documents,
        ))
    }

    async fn application(
        &self,
        connect: &MqttConnect,
        username: &str,
        password: &str,
    ) -> Result<ConnectDecision, MqttAuthError> {
        let decision = if crate::access::token_format::prefix_of(password).is_some() {
            access::authenticate(self.registry.tokens(), username, password).await?
        } else {
            match &self.oidc {
                Some(verifier) => verifier.verify(password).await?,
                None => Authentication::Deny {
                    reason: "no OIDC issuer is configured",
                },
            }
        };
        let principal = match decision {
            Authentication::Allow(principal) => principal,
            Authentication::Deny { reason } => return deny(reason),
        };
        if let Err(reason) = application_client_id(&principal.user, &connect.client_id) {
            return deny(reason);
        }
        // (an administrator's is for every application, whatever its uid)
        let apps: Vec<(String, Option<String>)> = if self.registry.authorizer().is_admin(&principal)
        {
            vec![("*".into(), None)]
        } else {
            let mut readable = self.registry.readable_applications(&principal).await?;
            // the user's own first, each part by name: on IoT Core, where the policy holds
            // only so many, no stranger who makes the user a member of applications named
            // to sort first can push the user's own out of it
            readable.sort_by_key(|(_, owned)| !owned);
            readable
                .into_iter()
                .map(|(a, _)| (a.metadata.name, Some(a.metadata.uid)))
                .collect()
        };
        let names: Vec<String> = apps.iter().map(|(name, _)| name.clone()).collect();
        let (mut policy, held) =
            application_policy_within(&connect.client_id, &names, self.max_documents);
        if held < names.len() {
            tracing::warn!(
                user = %principal.user,
                client = %connect.client_id,
                readable = names.len(),
                held,
                first_left_out = %names[held],
                "the user may read more applications than an IoT Core policy holds: this connection gets the user's own first, then the others, each by name"
            );
        }
        for (name, uid) in apps.into_iter().take(held) {
            if let Some(uid) = uid {
                policy.decided_for(name, uid);
            }
        }
        Ok(ConnectDecision::Allow(Box::new(Authorized {
            principal_id: principal_id("u", &principal.user),
            identity: MqttIdentity::Application { principal },
            policy,
        })))
    }

    /// Whether a user may still read an application (for commands over MQTT).
    pub async fn may_command(
        &self,
        principal: &Principal,
        app: &AppName,
    ) -> Result<bool, MqttAuthError> {
        match self
            .registry
            .application_for(principal, app, Permission::Read)
            .await
        {
            Ok(_) => Ok(true),
            Err(crate::registry::RegistryError::Unavailable(e)) => Err(e.into()),
            Err(_) => Ok(false),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{
        Action, Covered, MAX_IOT_DOCUMENTS, Policy, application_client_id, application_policy,
        application_policy_within, device_topics_policy, documents_anywhere, gateway_policy,
    };

    #[test]
    fn an_application_client_gets_the_first_applications_an_iot_policy_holds() {
        let client = "user-1/integration";
        let apps: Vec<String> = (0..300).map(|i| format!("an-application-{i:04}")).collect();
        let iot = Some(MAX_IOT_DOCUMENTS);
        let (policy, held) = application_policy_within(client, &apps, iot);
        assert!((30..300).contains(&held), "{held}");
        assert!(documents_anywhere(&policy) <= MAX_IOT_DOCUMENTS);
        assert!(policy.to_iot_documents("aws", "eu-west-1", "1").len() <= MAX_IOT_DOCUMENTS);
        // the most that fit: one more would not
        assert!(
            documents_anywhere(&application_policy(client, &apps[..=held])) > MAX_IOT_DOCUMENTS
        );
        // the first ones, in their order, and nothing of the rest
        for app in &apps[..held] {
            assert!(
                policy.allows(Action::Receive, &format!("app/{app}")),
                "{app}"
            );
            assert!(policy.allows(Action::Subscribe, &format!("$share/g/app/{app}")));
            assert!(policy.allows(Action::Publish, &format!("command/{app}/dev/go")));
        }
        for app in &apps[held..] {
            assert!(
                !policy.allows(Action::Receive, &format!("app/{app}")),
                "{app}"
            );
            assert!(!policy.allows(Action::Subscribe, &format!("app/{app}")));
            assert!(!policy.allows(Action::Publish, &format!("command/{app}/dev/go")));
        }
        assert!(policy.allows(Action::Connect, client));
        // what fits is all of it; without a bound (the local broker) all of them
        let (few, n) = application_policy_within(client, &apps[..5], iot);
        assert_eq!(n, 5);
        assert!(few.allows(Action::Receive, "app/an-application-0004"));
        let (local, n) = application_policy_within(client, &apps, None);
        assert_eq!(n, 300);
        assert!(local.allows(Action::Receive, "app/an-application-0299"));
        assert_eq!(application_policy_within(client, &[], iot).1, 0);
    }

    #[test]
    fn a_device_name_with_a_dollar_is_its_own_topics_alone() {
        let policy = device_topics_policy(
            "app1",
            Covered::Devices(&["a$b".to_owned(), "${iot:ClientId}".to_owned()]),
            &["a$b@app1".to_owned()],
        );
        assert!(policy.allows(Action::Connect, "a$b@app1"));
        assert!(!policy.allows(Action::Connect, "a$c@app1"));
        assert!(policy.allows(Action::Subscribe, "cmd/app1/a$b/#"));
        assert!(!policy.allows(Action::Subscribe, "cmd/app1/a$c/#"));
        assert!(policy.allows(Action::Publish, "dt/app1/${iot:ClientId}/t"));
        assert!(!policy.allows(Action::Publish, "dt/app1/a$b@app1/t"));
        assert!(policy.allows(Action::Receive, "cmd/app1/a$b/reboot"));
    }

    #[test]
    fn a_gateway_whose_devices_take_too_many_documents_gets_the_applications_topics() {
        let documents = |policy: &Policy| policy.to_iot_documents("aws", "eu-west-1", "1").len();
        let served: Vec<String> = (0..3).map(|i| format!("sensor-{i}")).collect();
        let iot = Some(MAX_IOT_DOCUMENTS);
        let listed = gateway_policy("app1", "gw", &served, &["gw@app1".to_owned()], iot);
        assert!(listed.allows(Action::Publish, "dt/app1/sensor-2/t"));
        assert!(!listed.allows(Action::Publish, "dt/app1/sensor-3/t"));
        // 50 devices of 200-character names: 29 documents listed
        let long: Vec<String> = (0..50).map(|i| format!("{i:0>200}")).collect();
        let all = gateway_policy("app1", "gw", &long, &["gw@app1".to_owned()], iot);
        assert!(all.allows(Action::Publish, "dt/app1/sensor-3/t"));
        assert!(!all.allows(Action::Publish, "dt/app2/sensor-3/t"));
        // the local broker, with no bound on documents, lists them
        let local = gateway_policy("app1", "gw", &long, &["gw@app1".to_owned()], None);
        assert!(documents(&local) > MAX_IOT_DOCUMENTS);
        assert!(local.allows(Action::Publish, &format!("dt/app1/{}/t", long[49])));
        assert!(!local.allows(Action::Publish, "dt/app1/sensor-3/t"));
        // at the bound: listed while the list fits in 10 documents (at the longest
        // partition and region), the application's topics from the first that does not
        let mut widened = Vec::new();
        for n in 1..=50 {
            let gw = vec!["gw".to_owned()];
            let devices: Vec<String> = gw.iter().chain(&long[..n]).cloned().collect();
            let listed = documents_anywhere(&device_topics_policy(
                "app1",
                Covered::Devices(&devices),
                &gw,
            ));
            let policy = gateway_policy("app1", "gw", &long[..n], &gw, iot);
            let wide = policy.allows(Action::Publish, "dt/app1/sensor-3/t");
            assert_eq!(
                wide,
                listed > MAX_IOT_DOCUMENTS,
                "{n} devices, {listed} documents"
            );
            widened.push(wide);
        }
        assert!(widened.contains(&false) && widened.contains(&true));
        // a gateway whose own names are what take the room keeps its devices' topics
        // alone: the caller refuses it rather than widen it
        let ids: Vec<String> = (0..32)
            .map(|i| format!("{}{i:0>3}@app1", "$".repeat(120)))
            .collect();
        let own = gateway_policy("app1", "gw", &served, &ids, iot);
        assert!(documents(&own) > MAX_IOT_DOCUMENTS);
        assert!(!own.allows(Action::Publish, "dt/app1/sensor-3/t"));
        assert!(own.allows(Action::Publish, "dt/app1/sensor-2/t"));
        // a device serving none keeps its own topics, however many documents they take
        let alone = gateway_policy("app1", &"$".repeat(256), &[], &ids, iot);
        assert!(documents(&alone) > MAX_IOT_DOCUMENTS);
        assert!(!alone.allows(Action::Publish, "dt/app1/sensor-3/t"));
        assert!(alone.allows(Action::Publish, &format!("dt/app1/{}/t", "$".repeat(256))));
    }
    use crate::mqtt::filter::TopicFilter;
    use crate::mqtt::topics::filter_matches;

    const LEVELS: [&str; 18] = [
        "app", "app1", "app2", "+", "#", "cmd", "dt", "command", "dev1", "dev2", "*", "", "$share",
        "g", "app1*", "?", "app10", "x",
    ];

    /// Topics a filter surely matches: each `+` one level, `#` nothing (its parent
    /// level) or two levels. Whatever is allowed must keep all of them the client's own.
    fn witnesses(filter: &str) -> Vec<String> {
        let Ok(parsed) = TopicFilter::parse(filter) else {
            return Vec::new();
        };
        let levels: Vec<&str> = parsed
            .levels()
            .map(|l| if l == "+" { "zz" } else { l })
            .collect();
        let mut topics = Vec::new();
        if levels.last() == Some(&"#") {
            let parent = &levels[..levels.len() - 1];
            if !parent.is_empty() {
                topics.push(parent.join("/"));
            }
            topics.push([parent, &["zz", "zz"]].concat().join("/"));
        } else {
            topics.push(levels.join("/"));
        }
        for topic in &topics {
            assert!(parsed.matches(topic), "{filter} must match {topic}");
        }
        topics
    }

    /// A client under test: who, its policy, and which topics are its own.
    type Client = (&'static str, Policy, fn(&str) -> bool);

    /// The clients under test.
    fn clients() -> Vec<Client> {
        vec![
            (
                "application of app1",
                application_policy("alice/c", &["app1".to_owned()]),
                |t| t == "app/app1",
            ),
            (
                "administrator",
                application_policy("admin/c", &["*".to_owned()]),
                |t| t == "app" || t.starts_with("app/"),
            ),
            (
                "dev1 of app1",
                device_topics_policy(
                    "app1",
                    Covered::Devices(&["dev1".to_owned()]),
                    &["dev1@app1".to_owned()],
                ),
                |t| t == "cmd/app1/dev1" || t.starts_with("cmd/app1/dev1/"),
            ),
            (
                "a gateway of all of app1",
                device_topics_policy("app1", Covered::All, &["gw@app1".to_owned()]),
                |t| t.starts_with("cmd/app1/"),
            ),
        ]
    }

    /// Checks one filter against every client; counts what each may subscribe to.
    fn check(filter: &str, clients: &[Client], allowed: &mut [usize]) {
        const FOREIGN: [&str; 9] = [
            "app/app2",
            "app/app10",
            "cmd/app2/dev1/reboot",
            "dt/app2/dev1/temp",
            "command/app2/dev1/reboot",
            "dt/app2/dev1/app/app1",
            "dt/app1/dev1/app/app1",
            "cmd/app2/dev1/app/app1",
            "cmd/app10/dev1/reboot",
        ];
        for ((who, policy, own), count) in clients.iter().zip(allowed.iter_mut()) {
            if !policy.allows(Action::Subscribe, filter) {
                continue;
            }
            *count += 1;
            for topic in FOREIGN.iter().copied().chain(["cmd/app1/dev2/reboot"]) {
                assert!(
                    own(topic) || !filter_matches(filter, topic),
                    "{who} may subscribe to {filter}, which reaches {topic}"
                );
            }
            for topic in witnesses(filter) {
                assert!(
                    own(&topic),
                    "{who} may subscribe to {filter}, which reaches {topic}"
                );
            }
        }
    }

    /// Every topic filter of up to four levels over an alphabet of levels, wildcards,
    /// shared-subscription prefixes and policy wildcards: none that a client of `app1`
    /// may subscribe to matches a topic of `app2` (nor, for a device, of another device),
    /// as the local broker routes by these filters and IoT Core by the same policies.
    #[test]
    fn no_allowed_filter_reaches_another_applications_topics() {
        let clients = clients();
        let mut filters: Vec<String> = LEVELS.iter().map(|l| l.to_string()).collect();
        let mut last = filters.clone();
        for _ in 1..4 {
            last = last
                .iter()
                .flat_map(|f| LEVELS.iter().map(move |l| format!("{f}/{l}")))
                .collect();
            filters.extend(last.iter().cloned());
        }
        assert!(filters.len() > 100_000, "{}", filters.len());
        let mut allowed = vec![0; clients.len()];
        for filter in &filters {
            check(filter, &clients, &mut allowed);
        }
        // the property is not vacuous: the own topics are allowed
        assert!(allowed.iter().all(|n| *n >= 1), "{allowed:?}");
        let (application, device) = (&clients[0].1, &clients[2].1);
        assert!(application.allows(Action::Subscribe, "$share/g/app/app1"));
        assert!(application.allows(Action::Subscribe, "app/app1"));
        assert!(device.allows(Action::Subscribe, "cmd/app1/dev1/#"));
        assert!(device.allows(Action::Subscribe, "cmd/app1/dev1/+"));
    }

    /// Deeper filters, up to ten levels: every shared filter `$share/{group}/.../app/...`
    /// with up to three levels between the group and `app` (seven levels, as
    /// `$share/g/dt/app2/dev1/app/app1`), and 150,000 more drawn at random (a fixed seed)
    /// from the alphabet, plain, shared, and below the clients' own prefixes. None that a
    /// client may subscribe to reaches a topic not its own.
    #[test]
    fn no_deep_or_shared_filter_reaches_another_applications_topics() {
        let clients = clients();
        let mut allowed = vec![0; clients.len()];
        let mut middles: Vec<String> = vec![String::new()];
        let mut last = middles.clone();
        for _ in 0..3 {
            last = last
                .iter()
                .flat_map(|m| LEVELS.iter().map(move |l| format!("{m}{l}/")))
                .collect();
            middles.extend(last.iter().cloned());
        }
        let mut exhaustive = 0;
        for group in ["g", "app", "*", "app1"] {
            for middle in &middles {
                for end in ["app/app1", "app/+", "app/#", "app1", "#"] {
                    check(
                        &format!("$share/{group}/{middle}{end}"),
                        &clients,
                        &mut allowed,
                    );
                    exhaustive += 1;
                }
            }
        }
        assert!(exhaustive > 100_000, "{exhaustive}");

        // xorshift64*, so that the test is the same every run
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move |n: usize| {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            (state.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 33) as usize % n
        };
        let prefixes = [
            "",
            "$share/g/",
            "$share/app/",
            "app/",
            "app/app1/",
            "cmd/app1/",
            "cmd/app1/dev1/",
            "$share/g/app/",
            "$share/g/cmd/app1/dev1/",
            "dt/app1/dev1/",
        ];
        for _ in 0..150_000 {
            let mut filter = prefixes[next(prefixes.len())].to_owned();
            let count = 1 + next(8);
            let levels: Vec<&str> = (0..count).map(|_| LEVELS[next(LEVELS.len())]).collect();
            filter.push_str(&levels.join("/"));
            check(&filter, &clients, &mut allowed);
        }
        assert!(allowed.iter().all(|n| *n >= 10), "{allowed:?}");
        let application = &clients[0].1;
        for refused in [
            "$share/g/dt/app2/dev1/app/app1",
            "$share/g/x/app/app1",
            "$share/g/app/app/app1",
            "$share/g/app/app1/#",
            "$share/g/app/+",
            "$share/g/#",
            "$share/+/app/app1",
            "app/app1/#",
        ] {
            assert!(!application.allows(Action::Subscribe, refused), "{refused}");
        }
        let admin = &clients[1].1;
        assert!(admin.allows(Action::Subscribe, "$share/g/app/+"));
        assert!(!admin.allows(Action::Subscribe, "$share/g/dt/app2/dev1/app/app1"));
        assert!(!admin.allows(Action::Subscribe, "$share/g/dt/app2/dev1/app/+"));
    }

    #[test]
    fn application_client_ids_live_in_the_users_namespace() {
        assert!(application_client_id("alice", "alice/consumer-1").is_ok());
        assert!(
            application_client_id("a/b", "a/b/c").is_ok(),
            "the last '/' ends the user"
        );
        let oidc_sub = "5f0c2a1e-7c1b-4a8e-9d3e-0b6c1d2e3f40";
        assert!(application_client_id(oidc_sub, &format!("{oidc_sub}/app")).is_ok());
        for (user, client_id) in [
            ("alice", "consumer"),
            ("alice", "bob/consumer"),
            ("a", "a/b/c"),
            ("alice", "alice/"),
            ("alice", "alice/dev1@app1"),
            ("alice", "alice/x*"),
            ("alice", "alice/#"),
            ("alice", "alice/+"),
            ("alice", "alice/a?"),
            ("alice", "dev1@app1"),
            ("alice", "alice/\u{0}"),
            ("al*", "al*/x"),
        ] {
            assert!(
                application_client_id(user, client_id).is_err(),
                "{user} with {client_id}"
            );
        }
        let long = format!("alice/{}", "x".repeat(123));
        assert!(application_client_id("alice", &long).is_err());
        assert!(application_client_id("alice", &long[..128]).is_ok());
    }

    /// A device's client id is `{claim}@{app}` with an application name that is a DNS
    /// label; no application client id, whatever the user, has that form.
    #[test]
    fn no_application_client_id_names_a_device() {
        let claims = ["dev1", "a/b", "alice/x", "x@y", "alice", "d/e@f"];
        let users = ["alice", "alice/x", "dev1@app1", "x@y", "a", "d/e"];
        let names = ["app1", "x", "dev1@app1", "c", "e@f"];
        for claim in claims {
            let device_client = format!("{claim}@app1");
            for user in users {
                assert!(
                    application_client_id(user, &device_client).is_err(),
                    "{user} may not take {device_client}"
                );
                for name in names {
                    let client = format!("{user}/{name}");
                    if application_client_id(user, &client).is_ok() {
                        let (_, app) = client.rsplit_once('@').unwrap_or(("", ""));
                        assert!(
                            crate::model::AppName::parse(app).is_err(),
                            "{client} would name a device of {app}"
                        );
                    }
                }
            }
        }
    }
}
