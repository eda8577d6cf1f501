//! Just-in-time validation of device certificates. When a device first connects to IoT
//! Core with a certificate issued by a registered trust anchor, IoT Core registers the
//! certificate as `PENDING_ACTIVATION`, refuses the connection and publishes on
//! `$aws/events/certificates/registered/{caCertificateId}`; a topic rule
//! (`SELECT * FROM '$aws/events/certificates/registered/#'`) hands that here.
//!
//! The certificate gets the same checks as over HTTP and at the local broker (chain to
//! an application's trust anchor, validity, a device of that application that may
//! use certificates). Several applications, of any owners, may hold the same trust
//! anchor: every application holding the issuer where the checks pass accepts the
//! certificate, and each gets its own grant: its device's least-privilege policy is
//! created (as one or more IoT policies named `{prefix}-cert-{certificateId}-{tag}-{n}`,
//! see [`CertificateValidator::policy_name`]), attached, and the certificate recorded
//! for that application's device ([`ActivatedCertificate`], in the application's
//! partition, so that it loses that policy when the device goes or changes, see
//! [`crate::revocation`]). A policy allows only client ids `{device}@{app}` of its
//! application, so the client id names the application at CONNECT. If at least one
//! application accepts it, the certificate is activated: the device's next connection
//! succeeds. Otherwise the certificate is revoked. A registry
//! that cannot be reached is a function error, so that Lambda retries; the certificate
//! stays pending meanwhile. So is a device that changed while its certificate was
//! validated: the retry validates it again against the device as it is now.

use crate::error::{Chain, IotError};
use aws_sdk_iot::types::CertificateStatus;
use drogue_shared::access::authz::AccessControl;
use drogue_shared::aws::Lazy;
use drogue_shared::device_auth::{
    AMBIGUOUS, DeviceAuthRequest, DeviceAuthentication, DeviceAuthenticator, DeviceCredential,
};
use drogue_shared::model::{AppName, NameError};
use drogue_shared::mqtt::authorizer::certificate_client_names;
use drogue_shared::mqtt::{MqttAuthError, MqttAuthorizer};
use drogue_shared::registry::Registry;
use drogue_shared::store::dynamodb::{ActivatedCertificate, DynamoStore};
use drogue_shared::store::{Conflict, DeviceStore, StoreError};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// The refusal of a certificate whose device has no name a certificate's policy can hold
/// (see [`certificate_client_names`]).
pub const NO_CLIENT_ID: &str = "the device has no name a certificate's policy can let it connect under (none without '*', '?' or control characters, nor short enough for a client id)";

/// The longest policy name prefix (IoT policy names have at most 128 characters).
pub const MAX_PREFIX: usize = 40;

/// The most policies IoT Core attaches to one certificate (a fixed service quota).
pub const MAX_POLICIES_PER_CERTIFICATE: usize = 10;

/// Why an application that accepts a certificate got no grant.
pub const TOO_MANY_POLICIES: &str = "the certificate holds as many policies as IoT Core allows (10); applications that took the anchor later get none";

/// Why a device's certificate got no grant when its own policy alone would take more
/// documents than a certificate holds (its names as client ids, its topics).
pub const TOO_MANY_DOCUMENTS: &str = "the device's policy takes more than the 10 policies IoT Core attaches to a certificate (too many long names)";

/// A certificate accepted by an application: its device, and the policy documents to grant.
struct Grant {
    app: String,
    authenticated: drogue_shared::device_auth::Authenticated,
    /// The names its policy lets the device connect under (recorded with the grant).
    names: Vec<String>,
    documents: Vec<String>,
}

/// What became of a registered certificate, the function's answer:
/// `{"outcome": "unchanged", "status"}`, `{"outcome": "pending" | "revoked", "reason"}`,
/// or `{"outcome": "activated", "activations": [...]}` (with the only activation's
/// fields beside, when there is one).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "lowercase")]
pub enum Validation {
    Unchanged {
        status: Option<String>,
    },
    Pending {
        reason: &'static str,
    },
    Revoked {
        reason: String,
    },
    Activated {
        activations: Vec<Activation>,
        #[serde(flatten)]
        only: Option<Activation>,
    },
}

/// An application's policies, granted a certificate for its device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Activation {
    pub application: String,
    pub device: String,
    pub policies: Vec<String>,
}

/// Why a certificate could not be judged (a function error: the rule retries the event,
/// the certificate stays pending meanwhile). Its message names every cause.
#[derive(Debug, thiserror::Error)]
pub enum ValidationError {
    /// An IoT Core call (describe, activate, revoke) failed.
    #[error("an IoT Core call failed: {}", Chain(.0))]
    IotCore(#[source] IotError),
    /// The registry could not be read.
    #[error("the registry is unavailable: {}", Chain(.0))]
    Registry(#[source] JudgeError),
    /// Creating or attaching an application's policies, or recording the certificate,
    /// failed.
    #[error("cannot grant the certificate: {}", Chain(.0))]
    Grant(#[source] GrantError),
}

/// Why the registry could not judge a certificate.
#[derive(Debug, thiserror::Error)]
pub enum JudgeError {
    /// The store could not be read (the applications holding the issuer, the device).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The device's policy could not be made.
    #[error(transparent)]
    Policy(#[from] MqttAuthError),
}

/// Why a certificate accepted by an application got no grant.
#[derive(Debug, thiserror::Error)]
pub enum GrantError {
    /// Creating or attaching a policy failed.
    #[error(transparent)]
    IotCore(#[from] IotError),
    /// The application's name is not one.
    #[error(transparent)]
    Name(#[from] NameError),
    /// The devices a gateway serves could not be read.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The device changed while its certificate was validated (the retry validates it
    /// again).
    #[error("the device {device} of {app} changed while its certificate {id} was validated")]
    DeviceChanged {
        device: String,
        app: String,
        id: String,
    },
    /// The certificate could not be recorded for the device.
    #[error("cannot record the certificate")]
    Record(#[source] StoreError),
}

/// Why a policy prefix is refused.
#[derive(Debug, thiserror::Error)]
#[error("the policy prefix must be 1 to {MAX_PREFIX} of [A-Za-z0-9+=,.@_-]")]
pub struct InvalidPrefix;

/// IoT Core's event for a certificate it registered.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CertificateRegistered {
    pub certificate_id: String,
    pub ca_certificate_id: String,
    #[serde(default)]
    pub certificate_status: Option<String>,
    pub aws_account_id: String,
}

/// Where policies apply: the partition and region of the function (and the account of
/// the event).
#[derive(Debug, Clone)]
pub struct Location {
    pub partition: String,
    pub region: String,
}

/// Validates certificates; cheap to clone.
#[derive(Clone)]
pub struct CertificateValidator {
    iot: Lazy<aws_sdk_iot::Client>,
    authorizer: MqttAuthorizer,
    devices: DeviceAuthenticator,
    store: DynamoStore,
    prefix: String,
}

impl CertificateValidator {
    pub fn new(
        iot: impl Into<Lazy<aws_sdk_iot::Client>>,
        store: DynamoStore,
        prefix: &str,
    ) -> Result<Self, InvalidPrefix> {
        let valid = !prefix.is_empty()
            && prefix.len() <= MAX_PREFIX
            && prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "+=,.@-_".contains(c));
        if !valid {
            return Err(InvalidPrefix);
        }
        let shared = Arc::new(store.clone());
        let devices = DeviceAuthenticator::new(shared.clone());
        let registry = Registry::new(shared, AccessControl::default());
        Ok(Self {
            iot: iot.into(),
            authorizer: MqttAuthorizer::new(devices.clone(), registry, None).for_iot_core(),
            devices,
            store,
            prefix: prefix.to_owned(),
        })
    }

    /// The names of the policies a certificate gets for an application:
    /// `{prefix}-cert-{certificateId}-{tag}-{n}`, `tag` the first 14 hex digits of the
    /// SHA-256 of the application's name (at most 40 + 6 + 64 + 1 + 14 + 1 + 2 characters
    /// of the 128 IoT Core allows). A certificate that several applications accept gets
    /// each one's policies under names of its own: a stranger's application name whose
    /// tag is another's would share (and, at a retried validation, replace) its policies,
    /// and 56 bits take far too many hashes to find one (8 hex digits, as before, took
    /// seconds).
    pub fn policy_name(&self, certificate_id: &str, app: &str, n: usize) -> String {
        format!("{}{n}", self.policy_prefix(certificate_id, app))
    }

    /// What the names of an application's policies on a certificate start with.
    fn policy_prefix(&self, certificate_id: &str, app: &str) -> String {
        let tag = &crate::anchors::fingerprint(app.as_bytes())[..14];
        format!("{}-cert-{certificate_id}-{tag}-", self.prefix)
    }

    /// Makes `document` the default version of the policy `name`, an earlier attempt's,
    /// unless it is that already; the policy keeps no other version.
    async fn replace_policy(&self, name: &str, document: &str) -> Result<(), IotError> {
        let failed = |e: Box<dyn std::error::Error + Send + Sync>| IotError::ReplacePolicy {
            policy: name.to_owned(),
            source: e,
        };
        let current = self
            .iot
            .get_policy()
            .policy_name(name)
            .send()
            .await
            .map_err(|e| failed(Box::new(e)))?;
        let parsed = |text: &str| serde_json::from_str::<serde_json::Value>(text).ok();
        if current.policy_document.as_deref().and_then(parsed) == parsed(document) {
            return Ok(());
        }
        let versions = self
            .iot
            .list_policy_versions()
            .policy_name(name)
            .send()
            .await
            .map_err(|e| failed(Box::new(e)))?;
        let mut superseded = None;
        for version in versions.policy_versions() {
            let Some(id) = version.version_id() else {
                continue;
            };
            if version.is_default_version() {
                superseded = Some(id.to_owned());
                continue;
            }
            self.delete_policy_version(name, id)
                .await
                .map_err(|e| failed(Box::new(e)))?;
        }
        self.iot
            .create_policy_version()
            .policy_name(name)
            .policy_document(document)
            .set_as_default(true)
            .send()
            .await
            .map_err(|e| failed(Box::new(e)))?;
        // (a policy with versions besides its default cannot be deleted, as revocation
        // does: the superseded one goes too)
        if let Some(id) = superseded {
            self.delete_policy_version(name, &id)
                .await
                .map_err(|e| failed(Box::new(e)))?;
        }
        tracing::info!(policy = %name, "a retried validation replaced the policy an earlier attempt made");
        Ok(())
    }

    async fn delete_policy_version(
        &self,
        name: &str,
        id: &str,
    ) -> Result<
        (),
        aws_sdk_iot::error::SdkError<
            aws_sdk_iot::operation::delete_policy_version::DeletePolicyVersionError,
        >,
    > {
        self.iot
            .delete_policy_version()
            .policy_name(name)
            .policy_version_id(id)
            .send()
            .await
            .map(|_| ())
    }

    /// Detaches and deletes this validator's policies on the certificate but `kept`: an
    /// earlier attempt of the event (retried because a device changed) may have attached
    /// policies for an application that refuses the certificate now, or more documents
    /// than a device needs now. Left attached, they would grant what no record holds, and
    /// keep the certificate active after its grants are taken back (they would pass for
    /// another application's).
    async fn drop_leftover_policies(
        &self,
        id: &str,
        arn: &str,
        kept: &[String],
    ) -> Result<(), IotError> {
        let prefix = format!("{}-cert-{id}-", self.prefix);
        let attached = self
            .iot
            .list_attached_policies()
            .target(arn)
            .page_size(100)
            .send()
            .await
            .map_err(|e| IotError::ListAttachedPolicies {
                id: id.to_owned(),
                source: Box::new(e),
            })?;
        for policy in attached.policies().iter().filter_map(|p| p.policy_name()) {
            if !policy.starts_with(&prefix) || kept.iter().any(|k| k == policy) {
                continue;
            }
            self.iot
                .detach_policy()
                .policy_name(policy)
                .target(arn)
                .send()
                .await
                .map_err(|e| IotError::DetachPolicy {
                    policy: policy.to_owned(),
                    id: id.to_owned(),
                    source: Box::new(e),
                })?;
            if let Err(e) = self.iot.delete_policy().policy_name(policy).send().await {
                // (detached, it grants nothing; IoT Core may refuse its deletion for a while)
                tracing::warn!(policy = %policy, error = %e, "a leftover policy was detached but not deleted");
            }
        }
        Ok(())
    }

    /// Judges a registered certificate: activated with the policies of the applications
    /// that accept it, revoked, or left as it is.
    pub async fn handle(
        &self,
        event: CertificateRegistered,
        location: &Location,
    ) -> Result<Validation, ValidationError> {
        let id = &event.certificate_id;
        let described = self
            .iot
            .describe_certificate()
            .certificate_id(id)
            .send()
            .await
            .map_err(|e| IotError::DescribeCertificate {
                id: id.clone(),
                source: Box::new(e),
            })
            .map_err(ValidationError::IotCore)?;
        let description = described
            .certificate_description
            .ok_or(ValidationError::IotCore(IotError::NoDescription))?;
        let status = description.status.clone();
        if status != Some(CertificateStatus::PendingActivation) {
            // decided already (a retried event), or changed by hand since
            tracing::info!(certificate = %id, ?status, "the certificate is not pending; left as it is");
            return Ok(Validation::Unchanged {
                status: status.map(|s| s.as_str().to_owned()),
            });
        }
        let arn = description
            .certificate_arn
            .ok_or(ValidationError::IotCore(IotError::NoArn))?;
        let pem = description.certificate_pem.unwrap_or_default();
        let Ok(der) = CertificateDer::from_pem_slice(pem.as_bytes()) else {
            return self.revoke(id, "the certificate cannot be read").await;
        };
        let chain = vec![der.to_vec()];
        let apps = match self
            .devices
            .certificate_applications(&chain)
            .await
            .map_err(|e| ValidationError::Registry(e.into()))?
        {
            Ok(apps) => apps,
            Err(AMBIGUOUS) => {
                // too many applications hold the issuer to try them all: strangers may
                // upload a public CA anywhere, so this never revokes (which would be for
                // good); the certificate stays pending and is judged again at the
                // device's next connection
                tracing::warn!(certificate = %id, "too many applications hold the issuer; left pending");
                return Ok(Validation::Pending { reason: AMBIGUOUS });
            }
            Err(reason) => return self.revoke(id, reason).await,
        };
        let mut accepted = Vec::new();
        let mut refused = "no application accepts the certificate";
        for app in &apps {
            match self
                .judge(&event, location, &chain, app)
                .await
                .map_err(ValidationError::Registry)?
            {
                Ok(grant) => accepted.push(grant),
                Err(reason) => refused = reason,
            }
        }
        // IoT Core attaches at most MAX_POLICIES_PER_CERTIFICATE policies to a
        // certificate: the applications that took the anchor first get theirs (a stranger
        // who uploads the same CA later cannot crowd out its owner)
        accepted.sort_by(|a, b| {
            let created = |g: &Grant| g.authenticated.application.metadata.creation_timestamp;
            created(a).cmp(&created(b)).then_with(|| a.app.cmp(&b.app))
        });
        let mut chosen = Vec::new();
        let mut room = MAX_POLICIES_PER_CERTIFICATE;
        for grant in accepted {
            if grant.documents.len() > room {
                tracing::warn!(certificate = %id, application = %grant.app, "no room left for this application's policies on the certificate");
                refused = TOO_MANY_POLICIES;
                continue;
            }
            room -= grant.documents.len();
            chosen.push(grant);
        }
        // what an earlier attempt of this event attached and this one does not grant
        // goes first (an application that refuses now, or needs fewer documents)
        let kept: Vec<String> = chosen
            .iter()
            .flat_map(|g| (0..g.documents.len()).map(|n| self.policy_name(id, &g.app, n)))
            .collect();
        self.drop_leftover_policies(id, &arn, &kept)
            .await
            .map_err(ValidationError::IotCore)?;
        let mut activations = Vec::new();
        for grant in chosen {
            activations.push(
                self.grant(&event, &arn, &chain, grant)
                    .await
                    .map_err(ValidationError::Grant)?,
            );
        }
        if activations.is_empty() {
            return self.revoke(id, refused).await;
        }
        self.iot
            .update_certificate()
            .certificate_id(id)
            .new_status(CertificateStatus::Active)
            .send()
            .await
            .map_err(|e| IotError::Activate {
                id: id.clone(),
                source: Box::new(e),
            })
            .map_err(ValidationError::IotCore)?;
        tracing::info!(certificate = %id, grants = activations.len(), "certificate activated");
        let only = match activations.as_slice() {
            [only] => Some(only.clone()),
            _ => None,
        };
        Ok(Validation::Activated { activations, only })
    }

    /// Judges a certificate for `app` (given, as the client id `{device}@{app}` gives it
    /// at CONNECT): the device it authenticates and the IoT policy documents of that
    /// device's least-privilege policy; why not, when the device is not usable after all.
    async fn judge(
        &self,
        event: &CertificateRegistered,
        location: &Location,
        chain: &[Vec<u8>],
        app: &str,
    ) -> Result<Result<Grant, &'static str>, JudgeError> {
        let request = DeviceAuthRequest {
            application: Some(app.to_owned()),
            credential: DeviceCredential::Certificate {
                chain: chain.to_vec(),
            },
            r#as: None,
        };
        let authenticated = match self.devices.authenticate(request).await? {
            DeviceAuthentication::Allow(a) => *a,
            DeviceAuthentication::Deny { reason } => return Ok(Err(reason)),
        };
        let device = &authenticated.sender.metadata.name;
        let names = certificate_client_names(&authenticated);
        if names.is_empty() {
            return Ok(Err(NO_CLIENT_ID));
        }
        let client_ids: Vec<String> = names.iter().map(|name| format!("{name}@{app}")).collect();
        let policy = self
            .authorizer
            .device_policy(app, device, &client_ids)
            .await?;
        let documents =
            policy.to_iot_documents(&location.partition, &location.region, &event.aws_account_id);
        if documents.len() > MAX_POLICIES_PER_CERTIFICATE {
            return Ok(Err(TOO_MANY_DOCUMENTS));
        }
        Ok(Ok(Grant {
            app: app.to_owned(),
            authenticated,
            names,
            documents,
        }))
    }

    /// Grants a certificate an application's policies (created, attached) and records it
    /// for that application's device.
    async fn grant(
        &self,
        event: &CertificateRegistered,
        arn: &str,
        chain: &[Vec<u8>],
        grant: Grant,
    ) -> Result<Activation, GrantError> {
        let id = &event.certificate_id;
        let Grant {
            app,
            authenticated,
            names,
            documents,
        } = grant;
        let app = app.as_str();
        let device = &authenticated.sender.metadata.name;
        let mut policies = Vec::with_capacity(documents.len());
        for (n, document) in documents.iter().enumerate() {
            let name = self.policy_name(id, app, n);
            let created = self
                .iot
                .create_policy()
                .policy_name(&name)
                .policy_document(document)
                .send()
                .await;
            if let Err(e) = created {
                // a retried event finds its policies made already, perhaps for what the
                // device held before it changed (which is why the event was retried)
                if !e
                    .as_service_error()
                    .is_some_and(|s| s.is_resource_already_exists_exception())
                {
                    return Err(IotError::CreatePolicy {
                        policy: name,
                        source: Box::new(e),
                    }
                    .into());
                }
                self.replace_policy(&name, document).await?;
            }
            self.iot
                .attach_policy()
                .policy_name(&name)
                .target(arn)
                .send()
                .await
                .map_err(|e| IotError::AttachPolicy {
                    policy: name.clone(),
                    source: Box::new(e),
                })?;
            policies.push(name);
        }
        let covers = self
            .store
            .devices_served_by(&AppName::parse(app)?, device)
            .await?
            .into_iter()
            .map(|d| d.as_str().to_owned())
            .collect();
        let record = ActivatedCertificate {
            application: app.to_owned(),
            device: device.clone(),
            device_uid: authenticated.sender.metadata.uid.clone(),
            certificate_id: id.clone(),
            certificate_arn: arn.to_owned(),
            fingerprint: crate::anchors::fingerprint(&chain[0]),
            policies: policies.clone(),
            covers,
            names: Some(names),
        };
        let device_rv = &authenticated.sender.metadata.resource_version;
        match self
            .store
            .put_activated_certificate(&record, device_rv)
            .await
        {
            Ok(()) => {}
            Err(StoreError::Conflict(Conflict::Changed)) => {
                return Err(GrantError::DeviceChanged {
                    device: device.clone(),
                    app: app.to_owned(),
                    id: id.clone(),
                });
            }
            Err(e) => return Err(GrantError::Record(e)),
        }
        tracing::info!(certificate = %id, application = %app, device = %device, ?policies, "certificate granted an application's policy");
        Ok(Activation {
            application: app.to_owned(),
            device: device.clone(),
            policies,
        })
    }

    async fn revoke(&self, id: &str, reason: &str) -> Result<Validation, ValidationError> {
        self.iot
            .update_certificate()
            .certificate_id(id)
            .new_status(CertificateStatus::Revoked)
            .send()
            .await
            .map_err(|e| IotError::Revoke {
                id: id.to_owned(),
                source: Box::new(e),
            })
            .map_err(ValidationError::IotCore)?;
        tracing::warn!(certificate = %id, reason, "certificate revoked");
        Ok(Validation::Revoked {
            reason: reason.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_iot::error::SdkError;

    fn unavailable() -> StoreError {
        StoreError::Unavailable(Box::new(std::io::Error::other("connection refused")))
    }

    /// The function's error message (its answer under Lambda) names every cause, as it
    /// did when the causes were `anyhow` errors written `{:#}`.
    #[test]
    fn errors_name_every_cause() {
        let timeout = || SdkError::timeout_error(std::io::Error::other("too slow"));
        let described = ValidationError::IotCore(IotError::DescribeCertificate {
            id: "c1".into(),
            source: Box::new(timeout()),
        });
        let before = anyhow::Error::new(timeout()).context("cannot describe the certificate c1");
        assert_eq!(
            described.to_string(),
            format!("an IoT Core call failed: {before:#}")
        );
        assert_eq!(
            described.to_string(),
            "an IoT Core call failed: cannot describe the certificate c1: request has timed out: too slow"
        );
        let registry = ValidationError::Registry(unavailable().into());
        assert_eq!(
            registry.to_string(),
            format!(
                "the registry is unavailable: {:#}",
                anyhow::Error::new(unavailable())
            )
        );
        let policy = ValidationError::Registry(MqttAuthError::from(unavailable()).into());
        assert_eq!(
            policy.to_string(),
            "the registry is unavailable: the registry is unavailable: storage unavailable: connection refused"
        );
        let record = ValidationError::Grant(GrantError::Record(unavailable()));
        assert_eq!(
            record.to_string(),
            format!(
                "cannot grant the certificate: {:#}",
                anyhow::Error::new(unavailable()).context("cannot record the certificate")
            )
        );
        let changed = ValidationError::Grant(GrantError::DeviceChanged {
            device: "d".into(),
            app: "a".into(),
            id: "c1".into(),
        });
        assert_eq!(
            changed.to_string(),
            "cannot grant the certificate: the device d of a changed while its certificate c1 was validated"
        );
        assert!(matches!(
            std::error::Error::source(&record).and_then(|e| e.downcast_ref::<GrantError>()),
            Some(GrantError::Record(StoreError::Unavailable(_)))
        ));
    }
}
