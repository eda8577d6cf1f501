//! Trust anchors registered with AWS IoT Core as CA certificates: the IoT certificate
//! id each one got, by the SHA-256 of its DER (IoT Core's own ids cannot be relied on
//! to be computable, and it has no lookup by certificate).

use super::{DynamoStore, attr, s};
use crate::store::{StoreError, StoreResult};
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
