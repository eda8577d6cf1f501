//! Just-in-time validation of device certificates. When a device first connects to IoT
//! Core with a certificate issued by a registered trust anchor, IoT Core registers the
//! certificate as `PENDING_ACTIVATION`, refuses the connection and publishes on
//! `$aws/events/certificates/registered/{caCertificateId}`; a topic rule
//! (`SELECT * FROM '$aws/events/certificates/registered/#'`) hands that here.
//!
//! The certificate gets the same checks as over HTTP and at the local broker (chain to
//! the application's trust anchor, validity, a device of that application that may
//! use certificates). If they pass, the device's least-privilege policy is created
//! (as one or more IoT policies named `{prefix}-cert-{certificateId}-{n}`), attached,
//! the certificate recorded for its device ([`ActivatedCertificate`], so that it is
//! revoked when the device goes or changes, see [`crate::revocation`]) and activated: the
//! device's next connection succeeds. Otherwise the certificate is revoked. A registry
//! that cannot be reached is a function error, so that Lambda retries; the certificate
//! stays pending meanwhile. So is a device that changed while its certificate was
//! validated: the retry validates it again against the device as it is now.

use anyhow::Context;
use aws_sdk_iot::types::CertificateStatus;
use drogue_shared::access::authz::Authorizer;
use drogue_shared::device_auth::DeviceAuthenticator;
use drogue_shared::model::AppName;
use drogue_shared::mqtt::MqttAuthorizer;
use drogue_shared::registry::Registry;
use drogue_shared::store::dynamodb::{ActivatedCertificate, DynamoStore};
use drogue_shared::store::{Conflict, DeviceStore, StoreError};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;

/// The longest policy name prefix (IoT policy names have at most 128 characters).
pub const MAX_PREFIX: usize = 40;

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
    iot: aws_sdk_iot::Client,
    authorizer: MqttAuthorizer,
    store: DynamoStore,
    prefix: String,
}

impl CertificateValidator {
    pub fn new(iot: aws_sdk_iot::Client, store: DynamoStore, prefix: &str) -> anyhow::Result<Self> {
        anyhow::ensure!(
            !prefix.is_empty()
                && prefix.len() <= MAX_PREFIX
                && prefix
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "+=,.@-_".contains(c)),
            "the policy prefix must be 1 to {MAX_PREFIX} of [A-Za-z0-9+=,.@_-]"
        );
        let shared = Arc::new(store.clone());
        let devices = DeviceAuthenticator::new(shared.clone());
        let registry = Registry::new(shared, Authorizer::default());
        Ok(Self {
            iot,
            authorizer: MqttAuthorizer::new(devices, registry, None),
            store,
            prefix: prefix.to_owned(),
        })
    }

    /// The names of the policies of a certificate.
    pub fn policy_name(&self, certificate_id: &str, n: usize) -> String {
        format!("{}-cert-{certificate_id}-{n}", self.prefix)
    }

    pub async fn handle(&self, event: Value, location: &Location) -> anyhow::Result<Value> {
        let event: CertificateRegistered =
            serde_json::from_value(event).context("not a certificate registration event")?;
        let id = &event.certificate_id;
        let described = self
            .iot
            .describe_certificate()
            .certificate_id(id)
            .send()
            .await
            .with_context(|| format!("cannot describe the certificate {id}"))?;
        let description = described
            .certificate_description
            .context("IoT Core described no certificate")?;
        let status = description.status.clone();
        if status != Some(CertificateStatus::PendingActivation) {
            // decided already (a retried event), or changed by hand since
            tracing::info!(certificate = %id, ?status, "the certificate is not pending; left as it is");
            return Ok(
                json!({"outcome": "unchanged", "status": status.map(|s| s.as_str().to_owned())}),
            );
        }
        let arn = description
            .certificate_arn
            .context("a certificate without an ARN")?;
        let pem = description.certificate_pem.unwrap_or_default();
        let Ok(der) = CertificateDer::from_pem_slice(pem.as_bytes()) else {
            return self.revoke(id, "the certificate cannot be read").await;
        };
        let (authenticated, policy) = match self
            .authorizer
            .certificate_policy(vec![der.to_vec()])
            .await?
        {
            Ok(allowed) => allowed,
            Err(reason) => return self.revoke(id, reason).await,
        };
        let documents =
            policy.to_iot_documents(&location.partition, &location.region, &event.aws_account_id);
        let mut policies = Vec::with_capacity(documents.len());
        for (n, document) in documents.iter().enumerate() {
            let name = self.policy_name(id, n);
            let created = self
                .iot
                .create_policy()
                .policy_name(&name)
                .policy_document(document)
                .send()
                .await;
            if let Err(e) = created {
                // a retried event finds its policies made already
                if !e
                    .as_service_error()
                    .is_some_and(|s| s.is_resource_already_exists_exception())
                {
                    return Err(
                        anyhow::Error::new(e).context(format!("cannot create the policy {name}"))
                    );
                }
            }
            self.iot
                .attach_policy()
                .policy_name(&name)
                .target(&arn)
                .send()
                .await
                .with_context(|| format!("cannot attach the policy {name}"))?;
            policies.push(name);
        }
        let (app, device) = (
            &authenticated.application.metadata.name,
            &authenticated.sender.metadata.name,
        );
        let covers = self
            .store
            .devices_served_by(&AppName::parse(app)?, device)
            .await?
            .into_iter()
            .map(|d| d.as_str().to_owned())
            .collect();
        let record = ActivatedCertificate {
            application: app.clone(),
            device: device.clone(),
            device_uid: authenticated.sender.metadata.uid.clone(),
            certificate_id: id.clone(),
            certificate_arn: arn.clone(),
            fingerprint: crate::anchors::fingerprint(&der),
            policies: policies.clone(),
            covers,
        };
        let device_rv = &authenticated.sender.metadata.resource_version;
        match self
            .store
            .put_activated_certificate(&record, device_rv)
            .await
        {
            Ok(()) => {}
            Err(StoreError::Conflict(Conflict::Changed)) => anyhow::bail!(
                "the device {device} of {app} changed while its certificate {id} was validated"
            ),
            Err(e) => return Err(anyhow::Error::new(e).context("cannot record the certificate")),
        }
        self.iot
            .update_certificate()
            .certificate_id(id)
            .new_status(CertificateStatus::Active)
            .send()
            .await
            .with_context(|| format!("cannot activate the certificate {id}"))?;
        tracing::info!(certificate = %id, application = %app, device = %device, ?policies, "certificate activated");
        Ok(json!({
            "outcome": "activated",
            "application": app,
            "device": device,
            "policies": policies,
        }))
    }

    async fn revoke(&self, id: &str, reason: &str) -> anyhow::Result<Value> {
        self.iot
            .update_certificate()
            .certificate_id(id)
            .new_status(CertificateStatus::Revoked)
            .send()
            .await
            .with_context(|| format!("cannot revoke the certificate {id}"))?;
        tracing::warn!(certificate = %id, reason, "certificate revoked");
        Ok(json!({"outcome": "revoked", "reason": reason}))
    }
}
