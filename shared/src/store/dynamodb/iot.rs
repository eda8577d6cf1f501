//! Trust anchors registered with AWS IoT Core as CA certificates: the IoT certificate
//! id each one got and the applications holding it, by the SHA-256 of its DER (IoT Core's own ids cannot be relied on
//! to be computable, and it has no lookup by certificate). And the device certificates
//! activated on IoT Core, in their application's partition, so that they can be revoked
//! when their device goes or changes.

use super::applications::app_pk;
use super::devices::device_sk;
use super::{DynamoStore, attr, data, json, s};
use crate::store::{Conflict, StoreError, StoreResult};
use aws_sdk_dynamodb::types::{AttributeValue, ConditionCheck, ReturnValue, TransactWriteItem};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

const IOT_CA_SK: &str = "#IOTCA";

fn iot_ca_pk(fingerprint: &str) -> String {
    format!("IOTCA#{fingerprint}")
}

/// A trust anchor as registered with IoT Core.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisteredCa {
    /// Hex SHA-256 of the certificate's DER.
    pub fingerprint: String,
    /// IoT Core's id of the CA certificate, once it is registered.
    pub certificate_id: Option<String>,
    /// The applications holding it as a trust anchor, ordered by name.
    pub applications: Vec<String>,
    /// Being deregistered: its last holder dropped it.
    pub deleting: bool,
}

impl RegisteredCa {
    fn from_item(fingerprint: &str, item: &super::Item) -> Self {
        let mut applications: Vec<String> = match item.get("apps") {
            Some(AttributeValue::Ss(apps)) => apps.clone(),
            _ => Vec::new(),
        };
        // an item of earlier versions names its one holder in `app`
        if let Some(app) = attr(item, "app") {
            applications.push(app.to_owned());
        }
        applications.sort();
        applications.dedup();
        Self {
            fingerprint: fingerprint.to_owned(),
            certificate_id: attr(item, "ca").map(str::to_owned),
            applications,
            deleting: item.contains_key("deleting"),
        }
    }
}

/// Whether a write failed on its condition.
fn conditional<E: aws_sdk_dynamodb::error::ProvideErrorMetadata>(
    e: &aws_sdk_dynamodb::error::SdkError<E>,
) -> bool {
    e.as_service_error()
        .and_then(|s| s.code())
        .is_some_and(|code| code == "ConditionalCheckFailedException")
}

/// The registration of a trust anchor with IoT Core is shared by every application
/// holding it (of any owners): the `IOTCA#` item keeps the set of holders (`apps`),
/// changed with atomic `ADD`/`DELETE` updates, so that the CA certificate is registered
/// once and deregistered only when its last holder drops it. A holder that drops it
/// last marks it `deleting` (conditional on no holder left); a holder that comes while
/// it is `deleting` fails (its stream record is retried) until the deregistration ends:
/// the item is deleted if still nobody holds it, else cleared of its IoT id, so that the
/// new holder registers it again.
impl DynamoStore {
    pub async fn registered_ca(&self, fingerprint: &str) -> StoreResult<Option<RegisteredCa>> {
        let Some(item) = self.get_item(iot_ca_pk(fingerprint), IOT_CA_SK).await? else {
            return Ok(None);
        };
        Ok(Some(RegisteredCa::from_item(fingerprint, &item)))
    }

    /// Moves the one holder an item of earlier versions names (`app`) into `apps`.
    async fn migrate_ca_holder(&self, fingerprint: &str) -> StoreResult<()> {
        let Some(item) = self.get_item(iot_ca_pk(fingerprint), IOT_CA_SK).await? else {
            return Ok(());
        };
        let Some(app) = attr(&item, "app") else {
            return Ok(());
        };
        let moved = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(iot_ca_pk(fingerprint)))
            .key("sk", s(IOT_CA_SK))
            .update_expression("ADD apps :apps REMOVE app")
            .condition_expression("app = :app")
            .expression_attribute_values(":apps", AttributeValue::Ss(vec![app.to_owned()]))
            .expression_attribute_values(":app", s(app))
            .send()
            .await;
        match moved {
            Ok(_) => Ok(()),
            Err(e) if conditional(&e) => Ok(()),
            Err(e) => Err(StoreError::unavailable(e)),
        }
    }

    /// Adds `app` to the holders of a trust anchor; the registration as it is then.
    pub async fn hold_ca(&self, fingerprint: &str, app: &str) -> StoreResult<RegisteredCa> {
        self.migrate_ca_holder(fingerprint).await?;
        let out = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(iot_ca_pk(fingerprint)))
            .key("sk", s(IOT_CA_SK))
            .update_expression("ADD apps :app")
            .expression_attribute_values(":app", AttributeValue::Ss(vec![app.to_owned()]))
            .return_values(ReturnValue::AllNew)
            .send()
            .await
            .map_err(StoreError::unavailable)?;
        Ok(RegisteredCa::from_item(
            fingerprint,
            &out.attributes.unwrap_or_default(),
        ))
    }

    /// Records IoT Core's id of a registered trust anchor, unless it is being
    /// deregistered meanwhile ([`Conflict::Changed`]).
    pub async fn set_registered_ca_id(
        &self,
        fingerprint: &str,
        certificate_id: &str,
    ) -> StoreResult<()> {
        let set = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(iot_ca_pk(fingerprint)))
            .key("sk", s(IOT_CA_SK))
            .update_expression("SET ca = :ca")
            .condition_expression("attribute_exists(pk) AND attribute_not_exists(deleting)")
            .expression_attribute_values(":ca", s(certificate_id))
            .send()
            .await;
        match set {
            Ok(_) => Ok(()),
            Err(e) if conditional(&e) => Err(StoreError::Conflict(Conflict::Changed)),
            Err(e) => Err(StoreError::unavailable(e)),
        }
    }

    /// Removes `app` from the holders of a trust anchor. When it was the last, the
    /// registration is marked `deleting` and returned: the caller deregisters it from
    /// IoT Core, then calls [`Self::deregistered_ca`]. `None` while others hold it (or
    /// it is not known).
    pub async fn release_ca(
        &self,
        fingerprint: &str,
        app: &str,
    ) -> StoreResult<Option<RegisteredCa>> {
        self.migrate_ca_holder(fingerprint).await?;
        let released = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(iot_ca_pk(fingerprint)))
            .key("sk", s(IOT_CA_SK))
            .update_expression("DELETE apps :app")
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_values(":app", AttributeValue::Ss(vec![app.to_owned()]))
            .return_values(ReturnValue::AllNew)
            .send()
            .await;
        let item = match released {
            Ok(out) => out.attributes.unwrap_or_default(),
            Err(e) if conditional(&e) => return Ok(None),
            Err(e) => return Err(StoreError::unavailable(e)),
        };
        if item.contains_key("deleting") {
            // marked by an earlier attempt that did not finish (IoT Core failed, or the
            // function ended): the caller finishes it, also when another application
            // holds the anchor meanwhile (its record is refused while the mark stands,
            // retried, and registers the anchor again once the mark is gone)
            return Ok(Some(RegisteredCa::from_item(fingerprint, &item)));
        }
        if item.contains_key("apps") {
            return Ok(None);
        }
        let marked = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(iot_ca_pk(fingerprint)))
            .key("sk", s(IOT_CA_SK))
            .update_expression("SET deleting = :true")
            .condition_expression("attribute_exists(pk) AND attribute_not_exists(apps)")
            .expression_attribute_values(":true", AttributeValue::Bool(true))
            .return_values(ReturnValue::AllNew)
            .send()
            .await;
        match marked {
            Ok(out) => Ok(Some(RegisteredCa::from_item(
                fingerprint,
                &out.attributes.unwrap_or_default(),
            ))),
            // another application took it meanwhile
            Err(e) if conditional(&e) => Ok(None),
            Err(e) => Err(StoreError::unavailable(e)),
        }
    }

    /// Ends a deregistration: the item goes when still nobody holds the trust anchor;
    /// when an application took it meanwhile, it is cleared of its IoT id and its mark
    /// (that application's retried record registers it again).
    pub async fn deregistered_ca(&self, fingerprint: &str) -> StoreResult<()> {
        let deleted = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key("pk", s(iot_ca_pk(fingerprint)))
            .key("sk", s(IOT_CA_SK))
            .condition_expression("attribute_not_exists(apps)")
            .send()
            .await;
        match deleted {
            Ok(_) => Ok(()),
            Err(e) if conditional(&e) => {
                self.client
                    .update_item()
                    .table_name(&self.table)
                    .key("pk", s(iot_ca_pk(fingerprint)))
                    .key("sk", s(IOT_CA_SK))
                    .update_expression("REMOVE deleting, ca")
                    .send()
                    .await
                    .map_err(StoreError::unavailable)?;
                Ok(())
            }
            Err(e) => Err(StoreError::unavailable(e)),
        }
    }
}

/// The sort key prefix of activated device certificates (`IOTCERT#{device}#{certificate id}`).
pub const ACTIVATED_CERTIFICATE_PREFIX: &str = "IOTCERT#";

pub(super) fn activated_sk(device: &str, certificate_id: &str) -> String {
    format!("{ACTIVATED_CERTIFICATE_PREFIX}{device}#{certificate_id}")
}

/// A device certificate activated on IoT Core, with what was granted to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ActivatedCertificate {
    pub application: String,
    pub device: String,
    /// The `uid` of the device it was validated for.
    pub device_uid: String,
    /// IoT Core's id and ARN of the certificate.
    pub certificate_id: String,
    pub certificate_arn: String,
    /// Hex SHA-256 of the certificate's DER.
    pub fingerprint: String,
    /// The IoT policies made for it (and attached to it).
    #[serde(default)]
    pub policies: Vec<String>,
    /// The devices its policy covers as their gateway (besides its own device).
    #[serde(default)]
    pub covers: Vec<String>,
    /// The names its device held when it was validated (its name, aliases and unique
    /// usernames): its policy lets it connect under each (`{name}@{app}`). `None` in a
    /// record written before they were kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub names: Option<Vec<String>>,
}

impl DynamoStore {
    /// Records an activated certificate, provided its device is still at the resource
    /// version `device_rv` it was validated at ([`Conflict::Changed`] otherwise).
    pub async fn put_activated_certificate(
        &self,
        cert: &ActivatedCertificate,
        device_rv: &str,
    ) -> StoreResult<()> {
        let pk = app_pk(&cert.application);
        let unchanged = ConditionCheck::builder()
            .table_name(&self.table)
            .key("pk", s(pk.as_str()))
            .key("sk", s(device_sk(&cert.device)))
            .condition_expression("rv = :rv")
            .expression_attribute_values(":rv", s(device_rv))
            .build()
            .map_err(super::build)?;
        let item = HashMap::from([
            ("pk".into(), s(pk)),
            (
                "sk".into(),
                s(activated_sk(&cert.device, &cert.certificate_id)),
            ),
            ("data".into(), json(cert)),
        ]);
        self.transact(vec![
            (
                TransactWriteItem::builder()
                    .condition_check(unchanged)
                    .build(),
                Some(Conflict::Changed),
            ),
            (self.put(item, None)?, None),
        ])
        .await
    }

    /// The activated certificates of a device (of every device without one) of an
    /// application.
    pub async fn activated_certificates(
        &self,
        app: &str,
        device: Option<&str>,
    ) -> StoreResult<Vec<ActivatedCertificate>> {
        let prefix = match device {
            Some(device) => format!("{ACTIVATED_CERTIFICATE_PREFIX}{device}#"),
            None => ACTIVATED_CERTIFICATE_PREFIX.to_owned(),
        };
        let mut certs = self
            .query_prefix(app_pk(app), &prefix)
            .await?
            .iter()
            .map(data::<ActivatedCertificate>)
            .collect::<StoreResult<Vec<_>>>()?;
        certs.retain(|c| device.is_none_or(|d| c.device == d));
        Ok(certs)
    }

    pub async fn delete_activated_certificate(
        &self,
        cert: &ActivatedCertificate,
    ) -> StoreResult<()> {
        self.client
            .delete_item()
            .table_name(&self.table)
            .key("pk", s(app_pk(&cert.application)))
            .key("sk", s(activated_sk(&cert.device, &cert.certificate_id)))
            .send()
            .await
            .map_err(StoreError::unavailable)?;
        Ok(())
    }
}
