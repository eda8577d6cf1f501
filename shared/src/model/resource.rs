//! Applications and devices as the management API shows them: metadata, a free-form
//! `spec` (with a few sections this project understands) and a server-owned `status`.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// Metadata of applications and devices, as Drogue Cloud 0.11 defines it.
///
/// `application` is present on devices only. No other keys are written: `drg`
/// refuses metadata it does not know.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Metadata {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub application: Option<String>,
    pub uid: String,
    #[serde(serialize_with = "rfc3339")]
    pub creation_timestamp: DateTime<Utc>,
    pub generation: u64,
    pub resource_version: String,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "rfc3339_opt"
    )]
    pub deletion_timestamp: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub finalizers: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// An application or a device: metadata, spec and status.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Resource {
    pub metadata: Metadata,
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub spec: Map<String, Value>,
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub status: Map<String, Value>,
}

/// An application of the registry.
pub type Application = Resource;
/// A device of the registry.
pub type Device = Resource;

impl Resource {
    pub fn name(&self) -> &str {
        &self.metadata.name
    }

    /// Whether a delete was asked for while finalizers still hold the resource.
    pub fn is_deleting(&self) -> bool {
        self.metadata.deletion_timestamp.is_some()
    }

    /// Whether the resource is switched off (`spec.core.disabled: true`): the one rule
    /// for "disabled", used by device authentication, command drop-offs and revocation.
    pub fn is_disabled(&self) -> bool {
        self.spec
            .get("core")
            .and_then(|core| core.get("disabled"))
            .and_then(|d| d.as_bool())
            .unwrap_or(false)
    }
}

/// Metadata as a client sends it: only what a client may set, the rest is ignored.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MetadataInput {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub application: Option<String>,
    #[serde(default)]
    pub uid: Option<String>,
    #[serde(default)]
    pub resource_version: Option<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub finalizers: Vec<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub annotations: BTreeMap<String, String>,
}

/// A resource as a client sends it in a POST or PUT; a client-sent `status` is ignored.
#[derive(Debug, Clone, Deserialize)]
pub struct ResourceInput {
    pub metadata: MetadataInput,
    #[serde(default, deserialize_with = "null_as_default")]
    pub spec: Map<String, Value>,
}

/// Preconditions of a DELETE, sent as `{"preconditions":{"uid":..,"resourceVersion":..}}`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct DeleteOptions {
    #[serde(default, deserialize_with = "null_as_default")]
    pub preconditions: Preconditions,
}

/// Expected `uid` and `resourceVersion`; an empty or missing value is not checked.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Preconditions {
    #[serde(default)]
    pub uid: Option<String>,
    #[serde(default)]
    pub resource_version: Option<String>,
}

impl Preconditions {
    /// Whether the preconditions hold for the current metadata.
    pub fn hold_for(&self, current: &Metadata) -> bool {
        let matches = |expected: &Option<String>, actual: &str| {
            expected
                .as_deref()
                .is_none_or(|e| e.is_empty() || e == actual)
        };
        matches(&self.uid, &current.uid)
            && matches(&self.resource_version, &current.resource_version)
    }
}

impl From<&MetadataInput> for Preconditions {
    fn from(input: &MetadataInput) -> Self {
        Self {
            uid: input.uid.clone(),
            resource_version: input.resource_version.clone(),
        }
    }
}

fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

fn rfc3339<S: Serializer>(time: &DateTime<Utc>, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&time.to_rfc3339_opts(SecondsFormat::Millis, true))
}

fn rfc3339_opt<S: Serializer>(
    time: &Option<DateTime<Utc>>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match time {
        Some(time) => rfc3339(time, serializer),
        None => serializer.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn metadata() -> Metadata {
        Metadata {
            name: "app".into(),
            application: None,
            uid: "u1".into(),
            creation_timestamp: Utc::now(),
            generation: 0,
            resource_version: "r1".into(),
            deletion_timestamp: None,
            finalizers: vec![],
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
        }
    }

    #[test]
    fn empty_preconditions_always_hold() {
        let m = metadata();
        let none: DeleteOptions = serde_json::from_value(json!({})).unwrap();
        assert!(none.preconditions.hold_for(&m));
        let empty: DeleteOptions =
            serde_json::from_value(json!({"preconditions":{"uid":"","resourceVersion":""}}))
                .unwrap();
        assert!(empty.preconditions.hold_for(&m));
    }

    #[test]
    fn mismatching_preconditions_fail() {
        let m = metadata();
        let rv: Preconditions = serde_json::from_value(json!({"resourceVersion":"r0"})).unwrap();
        assert!(!rv.hold_for(&m));
        let uid: Preconditions =
            serde_json::from_value(json!({"uid":"u0","resourceVersion":"r1"})).unwrap();
        assert!(!uid.hold_for(&m));
        let both: Preconditions =
            serde_json::from_value(json!({"uid":"u1","resourceVersion":"r1"})).unwrap();
        assert!(both.hold_for(&m));
    }

    #[test]
    fn metadata_serializes_only_known_keys() {
        let value = serde_json::to_value(metadata()).unwrap();
        let keys: Vec<_> = value.as_object().unwrap().keys().cloned().collect();
        assert_eq!(
            keys,
            [
                "creationTimestamp",
                "generation",
                "name",
                "resourceVersion",
                "uid"
            ]
        );
    }

    #[test]
    fn null_collections_in_input_are_empty() {
        let input: ResourceInput =
            serde_json::from_value(json!({"metadata":{"name":"a","labels":null},"spec":null}))
                .unwrap();
        assert!(input.metadata.labels.is_empty());
        assert!(input.spec.is_empty());
    }
}
