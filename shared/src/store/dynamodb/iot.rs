//! Trust anchors registered with AWS IoT Core as CA certificates: the IoT certificate
//! id each one got, by the SHA-256 of its DER (IoT Core's own ids cannot be relied on
//! to be computable, and it has no lookup by certificate). And the device certificates
//! activated on IoT Core, in their application's partition, so that they can be revoked
//! when their device goes or changes.

use super::applications::app_pk;
use super::devices::device_sk;
use super::{DynamoStore, attr, data, json, s};
use crate::store::{Conflict, StoreError, StoreResult};
use aws_sdk_dynamodb::types::{ConditionCheck, TransactWriteItem};
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
    /// IoT Core's id of the CA certificate.
    pub certificate_id: String,
    /// The application whose trust anchor it is.
    pub application: String,
}

impl DynamoStore {
    pub async fn registered_ca(&self, fingerprint: &str) -> StoreResult<Option<RegisteredCa>> {
        let Some(item) = self.get_item(iot_ca_pk(fingerprint), IOT_CA_SK).await? else {
            return Ok(None);
        };
        let field = |name| {
            attr(&item, name).map(str::to_owned).ok_or_else(|| {
                StoreError::unavailable(std::io::Error::other("an incomplete IOTCA item"))
            })
        };
        Ok(Some(RegisteredCa {
            fingerprint: fingerprint.to_owned(),
            certificate_id: field("ca")?,
            application: field("app")?,
        }))
    }

    pub async fn put_registered_ca(&self, ca: &RegisteredCa) -> StoreResult<()> {
        let item = HashMap::from([
            ("pk".into(), s(iot_ca_pk(&ca.fingerprint))),
            ("sk".into(), s(IOT_CA_SK)),
            ("ca".into(), s(ca.certificate_id.as_str())),
            ("app".into(), s(ca.application.as_str())),
        ]);
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .send()
            .await
            .map_err(StoreError::unavailable)?;
        Ok(())
    }

    pub async fn delete_registered_ca(&self, fingerprint: &str) -> StoreResult<()> {
        self.client
            .delete_item()
            .table_name(&self.table)
            .key("pk", s(iot_ca_pk(fingerprint)))
            .key("sk", s(IOT_CA_SK))
            .send()
            .await
            .map_err(StoreError::unavailable)?;
        Ok(())
    }
}

/// The sort key prefix of activated device certificates (`IOTCERT#{device}#{certificate id}`).
pub const ACTIVATED_CERTIFICATE_PREFIX: &str = "IOTCERT#";

fn activated_sk(device: &str, certificate_id: &str) -> String {
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
