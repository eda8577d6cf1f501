//! Resources made directly, as the registry would store them.

use chrono::Utc;
use drogue_shared::model::{AppName, Application, Device, DeviceName, Metadata, Resource};
use drogue_shared::store::StoredApplication;
use serde_json::{Map, Value};

fn metadata(name: &str, application: Option<&str>) -> Metadata {
    Metadata {
        name: name.into(),
        application: application.map(Into::into),
        uid: uuid::Uuid::new_v4().to_string(),
        creation_timestamp: Utc::now(),
        generation: 0,
        resource_version: uuid::Uuid::new_v4().to_string(),
        deletion_timestamp: None,
        finalizers: vec![],
        labels: Default::default(),
        annotations: Default::default(),
    }
}

fn object(value: Value) -> Map<String, Value> {
    value.as_object().cloned().unwrap_or_default()
}

pub fn app(name: &str) -> StoredApplication {
    app_with_status(name, Value::Null)
}

/// An application whose status reports a valid trust anchor with this subject.
pub fn app_with_anchor(name: &str, subject: &str) -> StoredApplication {
    let status = serde_json::json!({"trustAnchors": {"anchors": [{"valid": {
        "subject": subject, "certificate": "", "notBefore": "2020-01-01T00:00:00Z", "notAfter": "2030-01-01T00:00:00Z"
    }}]}});
    app_with_status(name, status)
}

fn app_with_status(name: &str, status: Value) -> StoredApplication {
    StoredApplication {
        app: Application {
            metadata: metadata(name, None),
            spec: Map::new(),
            status: object(status),
        },
        owner: "owner".into(),
        members: Default::default(),
        transfer_owner: None,
    }
}

pub fn device(app: &str, name: &str, spec: Value) -> Device {
    Device {
        metadata: metadata(name, Some(app)),
        spec: object(spec),
        status: Map::new(),
    }
}

/// The next revision of a resource, with another spec.
pub fn revised(current: &Resource, spec: Value) -> Resource {
    let mut next = current.clone();
    next.metadata.resource_version = uuid::Uuid::new_v4().to_string();
    next.spec = object(spec);
    next
}

pub fn app_name(name: &str) -> AppName {
    AppName::parse(name).unwrap()
}

pub fn device_name(name: &str) -> DeviceName {
    DeviceName::parse(name).unwrap()
}
