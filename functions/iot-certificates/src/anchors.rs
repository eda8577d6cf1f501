//! The registry's trust anchors, registered with IoT Core as CA certificates: a reaction
//! to the table's DynamoDB stream ([`crate::stream`]). When an application gains a
//! trust anchor, it is registered (`SNI_ONLY`, so the same CA may be registered in
//! other accounts too; active; with auto-registration, so device certificates it issued
//! are registered at their first connection and validated just in time).
//!
//! Several applications, of any owners, may hold the same trust anchor; IoT Core takes a
//! CA certificate once. So it is registered when its first holder gains it and
//! deactivated and deleted only when its last holder loses it (or is deleted). IoT
//! Core's id of each registered CA and the set of applications holding it are kept in
//! the table (`IOTCA#{sha256}` items, changed with atomic set updates and conditional
//! writes: see `DynamoStore::hold_ca`). Handling a record twice changes nothing.

use crate::error::{IotError, gone};
use crate::stream::{Change, Item};
use aws_sdk_iot::types::{CaCertificateStatus, CertificateMode};
use drogue_shared::aws::Lazy;
use drogue_shared::model::trust_anchors::anchor_certificates;
use drogue_shared::store::StoreError;
use drogue_shared::store::dynamodb::DynamoStore;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// Trust anchors (DER) by fingerprint.
type Anchors = BTreeMap<String, Vec<u8>>;

/// The name and trust anchors of an application item image (none for a deleting
/// application); `None` for other items.
fn anchors(image: Option<&Item>) -> Option<(String, Anchors)> {
    let Some(Item::Application(stored)) = image else {
        return None;
    };
    let name = stored.app.metadata.name.clone();
    if stored.app.is_deleting() {
        return Some((name, BTreeMap::new()));
    }
    let anchors = anchor_certificates(&stored.app.spec)
        .into_iter()
        .map(|der| (fingerprint(&der), der))
        .collect();
    Some((name, anchors))
}

/// Hex SHA-256 of a certificate's DER.
pub fn fingerprint(der: &[u8]) -> String {
    Sha256::digest(der)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Why a record's trust anchors could not be followed (the record is retried).
#[derive(Debug, thiserror::Error)]
pub enum AnchorError {
    /// An IoT Core call failed.
    #[error(transparent)]
    IotCore(#[from] IotError),
    /// The table's record of the registered CA certificates could not be read or changed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The last holder of the trust anchor dropped it and it is being deregistered.
    #[error("the trust anchor {fingerprint} is being removed from IoT Core; retried later")]
    BeingRemoved { fingerprint: String },
    /// IoT Core's id of a registered trust anchor could not be recorded.
    #[error("cannot record the trust anchor {fingerprint}")]
    Record {
        fingerprint: String,
        #[source]
        source: StoreError,
    },
}

/// Keeps IoT Core's CA certificates in step with the registry; cheap to clone.
#[derive(Clone)]
pub struct TrustAnchorSync {
    iot: Lazy<aws_sdk_iot::Client>,
    store: DynamoStore,
}

impl TrustAnchorSync {
    /// Through `iot` (a client, or one built on first use) and `store`.
    pub fn new(iot: impl Into<Lazy<aws_sdk_iot::Client>>, store: DynamoStore) -> Self {
        Self {
            iot: iot.into(),
            store,
        }
    }

    /// Follows one stream record: the IoT ids of the CA certificates the application
    /// gained (registered, or held when another application registered them) and
    /// deregistered.
    pub async fn record(
        &self,
        change: &Change<'_>,
    ) -> Result<(Vec<String>, Vec<String>), AnchorError> {
        let (mut registered, mut deregistered) = (Vec::new(), Vec::new());
        let old = anchors(change.old_item());
        let new = anchors(change.new_item());
        let Some(app) = new.as_ref().or(old.as_ref()).map(|(name, _)| name.clone()) else {
            return Ok((registered, deregistered));
        };
        let old = old.map(|(_, a)| a).unwrap_or_default();
        let new = new.map(|(_, a)| a).unwrap_or_default();
        // every anchor the application holds now (adding a holder is idempotent, so a
        // record handled again, or one that failed half-way, ends in the same state)
        for (fingerprint, der) in &new {
            let id = self.register(&app, fingerprint, der).await?;
            if !old.contains_key(fingerprint) {
                registered.push(id);
            }
        }
        for fingerprint in old.keys().filter(|f| !new.contains_key(*f)) {
            if let Some(id) = self.deregister(&app, fingerprint).await? {
                deregistered.push(id);
            }
        }
        Ok((registered, deregistered))
    }

    /// Makes `app` a holder of a trust anchor and registers it unless it is already;
    /// its IoT Core id.
    async fn register(
        &self,
        app: &str,
        fingerprint: &str,
        der: &[u8],
    ) -> Result<String, AnchorError> {
        let held = self.store.hold_ca(fingerprint, app).await?;
        if held.deleting {
            return Err(AnchorError::BeingRemoved {
                fingerprint: fingerprint.to_owned(),
            });
        }
        if let Some(id) = held.certificate_id {
            return Ok(id);
        }
        let pem = pem::encode_config(
            &pem::Pem::new("CERTIFICATE", der.to_vec()),
            pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
        );
        let registered = self
            .iot
            .register_ca_certificate()
            .ca_certificate(pem)
            .certificate_mode(CertificateMode::SniOnly)
            .set_as_active(true)
            .allow_auto_registration(true)
            .send()
            .await;
        let id = match registered {
            Ok(out) => out.certificate_id.ok_or(IotError::NoCertificateId)?,
            // registered before the id was written (a retried record, or another holder
            // at the same time): IoT Core's id of a certificate is the SHA-256 of its DER
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_resource_already_exists_exception()) =>
            {
                fingerprint.to_owned()
            }
            Err(e) => return Err(IotError::RegisterCa(Box::new(e)).into()),
        };
        self.store
            .set_registered_ca_id(fingerprint, &id)
            .await
            .map_err(|source| AnchorError::Record {
                fingerprint: fingerprint.to_owned(),
                source,
            })?;
        tracing::info!(application = app, certificate = %id, "trust anchor registered with IoT Core");
        Ok(id)
    }

    /// Removes `app` from the holders of a trust anchor; when it was the last, deactivates
    /// and deletes the CA certificate: its IoT Core id, if it was.
    async fn deregister(
        &self,
        app: &str,
        fingerprint: &str,
    ) -> Result<Option<String>, AnchorError> {
        let Some(released) = self.store.release_ca(fingerprint, app).await? else {
            return Ok(None);
        };
        let Some(id) = released.certificate_id.as_deref() else {
            self.store.deregistered_ca(fingerprint).await?;
            return Ok(None);
        };
        let deactivated = self
            .iot
            .update_ca_certificate()
            .certificate_id(id)
            .new_status(CaCertificateStatus::Inactive)
            .send()
            .await;
        if let Err(e) = deactivated
            && !gone(&e)
        {
            return Err(IotError::DeactivateCa {
                id: id.to_owned(),
                source: Box::new(e),
            }
            .into());
        }
        let deleted = self
            .iot
            .delete_ca_certificate()
            .certificate_id(id)
            .send()
            .await;
        if let Err(e) = deleted
            && !gone(&e)
        {
            return Err(IotError::DeleteCa {
                id: id.to_owned(),
                source: Box::new(e),
            }
            .into());
        }
        self.store.deregistered_ca(fingerprint).await?;
        tracing::info!(application = %app, certificate = %id, "trust anchor removed from IoT Core: its last application dropped it");
        Ok(Some(id.to_owned()))
    }
}
