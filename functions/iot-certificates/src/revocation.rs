//! Revocation of device certificates activated on IoT Core: a reaction to the table's
//! DynamoDB stream ([`crate::stream`]).
//!
//! The certificate validator records every grant of a certificate it activates, one per
//! application that accepted it ([`ActivatedCertificate`], `IOTCERT#{device}#{certificate
//! id}` in the application's partition). A grant is taken back (that application's
//! policies detached and deleted, its record deleted) when the certificate no longer
//! authenticates that application's device; the certificate itself is revoked (status
//! `REVOKED`) only when no policy is left attached to it, that is when no other
//! application's grant remains:
//!
//! - the device is deleted, being deleted, disabled (`spec.core.disabled`), or made again
//!   under its name (another `uid`);
//! - the device's credentials no longer let it use the certificate: it holds `cert`
//!   credentials and this certificate is not among them, or it holds credentials but no
//!   `cert` one (see `drogue_shared::device_auth`);
//! - the device lost a name (an alias or a unique username) it held when the certificate
//!   was validated: the certificate's policy lets its holder connect under that name
//!   (`{name}@{app}`), which another device may take next; a record written before the
//!   names were kept is taken to hold them all;
//! - the application is deleted, being deleted or disabled (every certificate of it);
//! - the application dropped a trust anchor and the certificate no longer chains to one
//!   of the trust anchors it still holds (checked at the time of the change);
//! - for a gateway's certificate: a device its policy covers is deleted or no longer
//!   names the gateway in its `gatewaySelector`;
//! - its record is removed (deleting an application removes every item of its
//!   partition, records included).
//!
//! Revoking is for good: re-enabling a device does not bring its certificates back; its
//! next connection with a new certificate is validated just in time again. Handling a
//! record twice changes nothing.

use crate::anchors::fingerprint;
use crate::error::{IotError, gone};
use crate::stream::{Change, Item};
use aws_sdk_iot::types::CertificateStatus;
use drogue_shared::device_auth::{may_use_certificate, verify_chain};
use drogue_shared::model::device_spec;
use drogue_shared::model::trust_anchors::anchor_certificates;
use drogue_shared::model::{Device, Resource};
use drogue_shared::store::device_claims;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use std::time::SystemTime;

use drogue_shared::aws::Lazy;
use drogue_shared::store::StoreError;
use drogue_shared::store::dynamodb::{ActivatedCertificate, DynamoStore};

/// Why a record's certificates could not be revoked (the record is retried).
#[derive(Debug, thiserror::Error)]
pub enum RevocationError {
    /// An IoT Core call failed.
    #[error(transparent)]
    IotCore(#[from] IotError),
    /// The records of activated certificates could not be read or deleted.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Revokes certificates whose device changed; cheap to clone.
#[derive(Clone)]
pub struct Revocation {
    iot: Lazy<aws_sdk_iot::Client>,
    store: DynamoStore,
}

/// Whether an application or a device is disabled (`spec.core.disabled`).
fn disabled(resource: &Resource) -> bool {
    resource.is_disabled()
}

/// Why `cert` no longer authenticates `device` (its current state, `None` when it is
/// gone); `None` when it still does.
pub fn no_longer_authenticates(
    device: Option<&Device>,
    cert: &ActivatedCertificate,
) -> Option<&'static str> {
    let Some(device) = device else {
        return Some("the device was deleted");
    };
    if device.metadata.uid != cert.device_uid {
        return Some("the device was made again");
    }
    if device.is_deleting() {
        return Some("the device is being deleted");
    }
    if disabled(device) {
        return Some("the device is disabled");
    }
    let credentials = device_spec::credentials(&device.spec).unwrap_or_default();
    may_use_certificate(&credentials, |der| fingerprint(der) == cert.fingerprint).err()
}

/// The application an image is.
fn application(item: Option<&Item>) -> Option<&Resource> {
    match item {
        Some(Item::Application(stored)) => Some(&stored.app),
        _ => None,
    }
}

/// The application and device an image is.
fn device(item: Option<&Item>) -> Option<(&str, &Device)> {
    match item {
        Some(Item::Device {
            application,
            device,
        }) => Some((application.as_str(), device.as_ref())),
        _ => None,
    }
}

impl Revocation {
    /// The policies attached to a certificate (none when it is gone).
    async fn attached(&self, cert: &ActivatedCertificate) -> Result<Vec<String>, IotError> {
        let attached = self
            .iot
            .list_attached_policies()
            .target(&cert.certificate_arn)
            .page_size(100)
            .send()
            .await;
        match attached {
            Ok(out) => Ok(out
                .policies
                .unwrap_or_default()
                .into_iter()
                .filter_map(|p| p.policy_name)
                .collect()),
            Err(e) if gone(&e) => Ok(Vec::new()),
            Err(e) => Err(IotError::ListAttachedPolicies {
                id: cert.certificate_id.clone(),
                source: Box::new(e),
            }),
        }
    }

    /// Through `iot` (a client, or one built on first use) and `store`.
    pub fn new(iot: impl Into<Lazy<aws_sdk_iot::Client>>, store: DynamoStore) -> Self {
        Self {
            iot: iot.into(),
            store,
        }
    }

    /// Follows one stream record: the ids of the certificates revoked.
    pub async fn record(&self, change: &Change<'_>) -> Result<Vec<String>, RevocationError> {
        let (old, new) = (change.old_item(), change.new_item());
        if let (Some(Item::ActivatedCertificate(cert)), None) = (old, new) {
            // a record removed (its device's or its application's doing): its
            // certificate goes with it
            let revoked = self.revoke(cert, "its record was removed").await?;
            return Ok(revoked
                .then(|| cert.certificate_id.clone())
                .into_iter()
                .collect());
        }
        if let Some(app) = application(new).or(application(old)) {
            let reason = match application(new) {
                Some(now) if now.is_deleting() => "the application is being deleted",
                Some(now) if disabled(now) => "the application is disabled",
                Some(now) => return self.anchors_dropped(application(old), now).await,
                None => "the application was deleted",
            };
            let mut revoked = Vec::new();
            for cert in self.store.activated_certificates(app.name(), None).await? {
                if self.revoke(&cert, reason).await? {
                    revoked.push(cert.certificate_id);
                }
            }
            return Ok(revoked);
        }
        let (old, new) = (device(old), device(new));
        let Some((app, current)) = new.or(old) else {
            return Ok(Vec::new());
        };
        self.device(
            app,
            current.name(),
            old.map(|(_, d)| d),
            new.map(|(_, d)| d),
        )
        .await
    }

    /// An application that dropped trust anchors (from `old` to `now`): its grants of the
    /// certificates that no longer chain to one of its anchors are taken back.
    async fn anchors_dropped(
        &self,
        old: Option<&Resource>,
        now: &Resource,
    ) -> Result<Vec<String>, RevocationError> {
        let before = old
            .map(|o| anchor_certificates(&o.spec))
            .unwrap_or_default();
        let after = anchor_certificates(&now.spec);
        if before.iter().all(|anchor| after.contains(anchor)) {
            return Ok(Vec::new());
        }
        let mut revoked = Vec::new();
        for cert in self.store.activated_certificates(now.name(), None).await? {
            let Some(der) = self.certificate_der(&cert).await? else {
                continue;
            };
            if verify_chain(&[der], &after, SystemTime::now()).is_err()
                && self
                    .revoke(
                        &cert,
                        "the application dropped the trust anchor it chained to",
                    )
                    .await?
            {
                revoked.push(cert.certificate_id);
            }
        }
        Ok(revoked)
    }

    /// The DER of a certificate as IoT Core holds it; `None` when it is gone.
    async fn certificate_der(
        &self,
        cert: &ActivatedCertificate,
    ) -> Result<Option<Vec<u8>>, IotError> {
        let id = &cert.certificate_id;
        let described = self
            .iot
            .describe_certificate()
            .certificate_id(id)
            .send()
            .await;
        let pem = match described {
            Ok(out) => out
                .certificate_description
                .and_then(|d| d.certificate_pem)
                .unwrap_or_default(),
            Err(e) if gone(&e) => return Ok(None),
            Err(e) => {
                return Err(IotError::DescribeCertificate {
                    id: id.clone(),
                    source: Box::new(e),
                });
            }
        };
        Ok(CertificateDer::from_pem_slice(pem.as_bytes())
            .ok()
            .map(|der| der.to_vec()))
    }

    /// A device changed from `old` to `new` (`None`: absent).
    async fn device(
        &self,
        app: &str,
        name: &str,
        old: Option<&Device>,
        new: Option<&Device>,
    ) -> Result<Vec<String>, RevocationError> {
        let mut revoked = Vec::new();
        // the names it lost (an alias or a unique username removed): a certificate
        // validated while it held one lets its holder connect under it (`{name}@{app}`),
        // and so, once another device takes the name, as that device
        let lost: Vec<String> = match (old, new) {
            (Some(old), Some(new)) if old.metadata.uid == new.metadata.uid => {
                let now = device_claims(new);
                device_claims(old)
                    .iter()
                    .map(|claim| claim.key())
                    .filter(|name| !now.iter().any(|claim| claim.key() == *name))
                    .map(str::to_owned)
                    .collect()
            }
            _ => Vec::new(),
        };
        // its own certificates
        for cert in self.store.activated_certificates(app, Some(name)).await? {
            let reason = no_longer_authenticates(new, &cert).or_else(|| {
                // (a record without the names is taken to hold them all)
                let held = |lost: &String| cert.names.as_ref().is_none_or(|n| n.contains(lost));
                lost.iter().any(held).then_some(
                    "the device no longer holds a name its certificate's policy lets it connect as",
                )
            });
            if let Some(reason) = reason
                && self.revoke(&cert, reason).await?
            {
                revoked.push(cert.certificate_id);
            }
        }
        // the certificates of the gateways it left (or all of them, when it is gone or
        // another device now)
        let gateways = |device: Option<&Device>| {
            device
                .map(|d| device_spec::gateways(&d.spec).unwrap_or_default())
                .unwrap_or_default()
        };
        let before = gateways(old);
        let same = matches!((old, new), (Some(o), Some(n)) if o.metadata.uid == n.metadata.uid);
        let after = if same { gateways(new) } else { Vec::new() };
        for gateway in before.iter().filter(|g| !after.contains(g)) {
            for cert in self
                .store
                .activated_certificates(app, Some(gateway))
                .await?
            {
                if cert.covers.iter().any(|d| d == name)
                    && self
                        .revoke(&cert, "a device its policy covers left the gateway")
                        .await?
                {
                    revoked.push(cert.certificate_id);
                }
            }
        }
        Ok(revoked)
    }

    /// Takes a certificate's grant of one application back: that application's policies
    /// detached and deleted, its record deleted. When no policy is left attached (no
    /// other application's grant), the certificate is revoked too: status `REVOKED`
    /// (IoT Core disconnects devices that use a certificate leaving `ACTIVE`). Whether
    /// anything changed.
    pub async fn revoke(
        &self,
        cert: &ActivatedCertificate,
        reason: &str,
    ) -> Result<bool, RevocationError> {
        let id = &cert.certificate_id;
        let mut changed = false;
        let attached = self.attached(cert).await?;
        for policy in attached.iter().filter(|p| cert.policies.contains(p)) {
            let detached = self
                .iot
                .detach_policy()
                .policy_name(policy)
                .target(&cert.certificate_arn)
                .send()
                .await;
            match detached {
                Ok(_) => changed = true,
                Err(e) if gone(&e) => {}
                Err(e) => {
                    return Err(IotError::DetachPolicy {
                        policy: policy.clone(),
                        id: id.clone(),
                        source: Box::new(e),
                    }
                    .into());
                }
            }
        }
        for policy in &cert.policies {
            let deleted = self.iot.delete_policy().policy_name(policy).send().await;
            match deleted {
                Ok(_) => changed = true,
                Err(e) if gone(&e) => {}
                // IoT Core may take minutes before a detached policy can be deleted; it
                // grants nothing any more, so it is left (and logged)
                Err(e)
                    if e.as_service_error()
                        .is_some_and(|s| s.is_delete_conflict_exception()) =>
                {
                    tracing::warn!(policy = %policy, certificate = %id, "a detached policy cannot be deleted yet; left in place");
                }
                Err(e) => {
                    return Err(IotError::DeletePolicy {
                        policy: policy.clone(),
                        source: Box::new(e),
                    }
                    .into());
                }
            }
        }
        // another application's grant keeps the certificate active
        let others = self.attached(cert).await?;
        let others: Vec<&String> = others
            .iter()
            .filter(|p| !cert.policies.contains(p))
            .collect();
        if others.is_empty() {
            let described = self
                .iot
                .describe_certificate()
                .certificate_id(id)
                .send()
                .await;
            let status = match described {
                Ok(out) => out.certificate_description.and_then(|d| d.status),
                Err(e) if gone(&e) => None,
                Err(e) => {
                    return Err(IotError::DescribeCertificate {
                        id: id.clone(),
                        source: Box::new(e),
                    }
                    .into());
                }
            };
            if let Some(status) = status
                && status != CertificateStatus::Revoked
            {
                self.iot
                    .update_certificate()
                    .certificate_id(id)
                    .new_status(CertificateStatus::Revoked)
                    .send()
                    .await
                    .map_err(|e| IotError::Revoke {
                        id: id.clone(),
                        source: Box::new(e),
                    })?;
                changed = true;
            }
        } else {
            tracing::info!(certificate = %id, application = %cert.application, remaining = ?others, "the certificate keeps other applications' policies; left active");
        }
        self.store.delete_activated_certificate(cert).await?;
        if changed {
            tracing::info!(
                certificate = %id,
                application = %cert.application,
                device = %cert.device,
                reason,
                "the application's grant of the certificate taken back"
            );
        }
        Ok(changed)
    }
}
