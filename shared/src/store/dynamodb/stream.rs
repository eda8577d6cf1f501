//! The table's items as its DynamoDB stream shows them: a consumer deserializes the
//! attributes it needs from an image ([`StreamImage`], e.g. with `serde_dynamo`) and learns
//! which item it is ([`TableItem`]), without knowing the table's keys.

use super::applications::{APP_PK_PREFIX, APP_SK};
use super::devices::DEVICE_SK_PREFIX;
use super::iot::{ACTIVATED_CERTIFICATE_PREFIX, ActivatedCertificate};
use crate::model::Device;
use crate::store::StoredApplication;
use serde::Deserialize;

/// A table item, as far as stream consumers care.
#[derive(Debug)]
pub enum TableItem {
    Application(Box<StoredApplication>),
    Device {
        application: String,
        device: Box<Device>,
    },
    ActivatedCertificate(ActivatedCertificate),
    /// Claims, counts, tokens, commands, registered CAs, connections, ...
    Other,
}

/// The attributes of a table item a stream consumer reads from an image (its keys and its
/// stored JSON); every other attribute is ignored.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct StreamImage {
    pk: String,
    sk: String,
    #[serde(default)]
    data: Option<String>,
}

impl StreamImage {
    /// The item's stored JSON (`data`) as it was written, if it has one.
    pub fn data(&self) -> Option<&str> {
        self.data.as_deref()
    }

    pub fn into_data(self) -> Option<String> {
        self.data
    }

    /// Which item the image is of; an error if the stored JSON of an application, a device
    /// or an activated certificate is not one.
    pub fn item(&self) -> Result<TableItem, serde_json::Error> {
        item_of(&self.pk, &self.sk, self.data())
    }
}

/// Which item the keys `pk`, `sk` and the stored JSON `data` are of.
pub fn item_of(pk: &str, sk: &str, data: Option<&str>) -> Result<TableItem, serde_json::Error> {
    let application = pk.strip_prefix(APP_PK_PREFIX);
    Ok(match (application, sk, data) {
        (Some(_), APP_SK, Some(data)) => TableItem::Application(serde_json::from_str(data)?),
        (Some(app), sk, Some(data)) if sk.starts_with(DEVICE_SK_PREFIX) => TableItem::Device {
            application: app.to_owned(),
            device: serde_json::from_str(data)?,
        },
        (Some(_), sk, Some(data)) if sk.starts_with(ACTIVATED_CERTIFICATE_PREFIX) => {
            TableItem::ActivatedCertificate(serde_json::from_str(data)?)
        }
        _ => TableItem::Other,
    })
}

#[cfg(test)]
mod tests {
    use super::super::applications::app_pk;
    use super::super::devices::device_sk;
    use super::super::iot::activated_sk;
    use super::*;
    use crate::model::{Application, Metadata};
    use serde_json::json;

    fn metadata(name: &str) -> Metadata {
        serde_json::from_value(json!({
            "name": name,
            "uid": format!("uid-{name}"),
            "creationTimestamp": "2026-12-01T10:00:00Z",
            "generation": 1,
            "resourceVersion": "rv1",
        }))
        .unwrap()
    }

    #[test]
    fn applications_devices_and_certificates_are_told_apart() {
        let stored = StoredApplication {
            app: Application {
                metadata: metadata("app1"),
                spec: Default::default(),
                status: Default::default(),
            },
            owner: "alice".into(),
            members: Default::default(),
            transfer_owner: None,
        };
        let data = serde_json::to_string(&stored).unwrap();
        let item = item_of(&app_pk("app1"), APP_SK, Some(&data)).unwrap();
        assert!(matches!(item, TableItem::Application(a) if *a == stored));

        let device = Device {
            metadata: metadata("dev1"),
            spec: Default::default(),
            status: Default::default(),
        };
        let data = serde_json::to_string(&device).unwrap();
        let item = item_of(&app_pk("app1"), &device_sk("dev1"), Some(&data)).unwrap();
        assert!(
            matches!(item, TableItem::Device { application, device: d } if application == "app1" && *d == device)
        );

        let cert = ActivatedCertificate {
            application: "app1".into(),
            device: "dev1".into(),
            device_uid: "u1".into(),
            certificate_id: "c1".into(),
            certificate_arn: "arn:c1".into(),
            fingerprint: "ab".into(),
            policies: vec![],
            covers: vec![],
            names: Some(vec!["dev1".into()]),
        };
        let data = serde_json::to_string(&cert).unwrap();
        let item = item_of(&app_pk("app1"), &activated_sk("dev1", "c1"), Some(&data)).unwrap();
        assert!(matches!(item, TableItem::ActivatedCertificate(c) if c == cert));
    }

    #[test]
    fn other_items_and_bad_json() {
        // an application's sort key outside an application's partition
        assert!(matches!(
            item_of("TOKEN#abc", APP_SK, Some("{}")).unwrap(),
            TableItem::Other
        ));
        // no stored JSON
        assert!(matches!(
            item_of(&app_pk("app1"), APP_SK, None).unwrap(),
            TableItem::Other
        ));
        assert!(item_of(&app_pk("app1"), &device_sk("dev1"), Some("not json")).is_err());
    }

    #[test]
    fn an_image_carries_its_data() {
        let image: StreamImage =
            serde_json::from_value(json!({"pk": app_pk("a"), "sk": "x", "rv": "1"})).unwrap();
        assert_eq!(image.data(), None);
        assert!(matches!(image.item().unwrap(), TableItem::Other));
    }
}
