//! What an update or a delete does to an object's metadata, shared by applications and
//! devices: preconditions, `generation`, `resourceVersion`, finalizers.

use super::{RegistryError, RegistryResult};
use crate::model::{Metadata, MetadataInput, Preconditions, Resource};
use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

/// What an update comes to.
pub(super) enum UpdatePlan {
    /// Nothing the client may change has changed: nothing is written.
    Unchanged,
    /// The object was waiting for its finalizers, and the last one was removed.
    Remove,
    /// Write the object with this metadata.
    Write(Metadata),
}

/// What a delete comes to.
pub(super) enum DeletePlan {
    /// No finalizers: remove the object now.
    Remove,
    /// Finalizers hold the object: mark it deleted and keep it until they are removed.
    MarkDeleted(Metadata),
}

/// Fresh metadata for a new object; client-sent server fields are ignored.
pub(super) fn new_metadata(
    name: String,
    application: Option<String>,
    input: MetadataInput,
    now: DateTime<Utc>,
) -> Metadata {
    Metadata {
        name,
        application,
        uid: uuid::Uuid::new_v4().to_string(),
        creation_timestamp: now,
        generation: 0,
        resource_version: uuid::Uuid::new_v4().to_string(),
        deletion_timestamp: None,
        finalizers: input.finalizers,
        labels: input.labels,
        annotations: input.annotations,
    }
}

/// Decides an update of `current` by a client's metadata and the (prepared) next spec.
pub(super) fn plan_update(
    current: &Resource,
    input: &MetadataInput,
    spec: &Map<String, Value>,
) -> RegistryResult<UpdatePlan> {
    check_preconditions(&Preconditions::from(input), &current.metadata)?;
    if current.is_deleting() && input.finalizers.is_empty() {
        return Ok(UpdatePlan::Remove);
    }
    let spec_changed = *spec != current.spec;
    let meta = &current.metadata;
    let meta_changed = input.labels != meta.labels
        || input.annotations != meta.annotations
        || input.finalizers != meta.finalizers;
    if !spec_changed && !meta_changed {
        return Ok(UpdatePlan::Unchanged);
    }
    Ok(UpdatePlan::Write(Metadata {
        generation: meta.generation + u64::from(spec_changed),
        resource_version: uuid::Uuid::new_v4().to_string(),
        labels: input.labels.clone(),
        annotations: input.annotations.clone(),
        finalizers: input.finalizers.clone(),
        ..meta.clone()
    }))
}

/// Decides a delete of `current`.
pub(super) fn plan_delete(
    current: &Resource,
    preconditions: &Preconditions,
    now: DateTime<Utc>,
) -> RegistryResult<DeletePlan> {
    check_preconditions(preconditions, &current.metadata)?;
    if current.metadata.finalizers.is_empty() {
        return Ok(DeletePlan::Remove);
    }
    Ok(DeletePlan::MarkDeleted(Metadata {
        deletion_timestamp: Some(now),
        resource_version: uuid::Uuid::new_v4().to_string(),
        ..current.metadata.clone()
    }))
}

fn check_preconditions(preconditions: &Preconditions, current: &Metadata) -> RegistryResult<()> {
    if preconditions.hold_for(current) {
        Ok(())
    } else {
        Err(RegistryError::Conflict(format!(
            "the preconditions do not hold: '{}' is at uid {} and resourceVersion {}",
            current.name, current.uid, current.resource_version
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn resource(finalizers: &[&str], deleting: bool) -> Resource {
        let input = MetadataInput {
            finalizers: finalizers.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        };
        let mut metadata = new_metadata("x".into(), None, input, Utc::now());
        metadata.deletion_timestamp = deleting.then(Utc::now);
        Resource {
            metadata,
            spec: json!({"a": 1}).as_object().unwrap().clone(),
            status: Map::new(),
        }
    }

    fn input_for(r: &Resource) -> MetadataInput {
        MetadataInput {
            name: Some(r.metadata.name.clone()),
            uid: Some(r.metadata.uid.clone()),
            resource_version: Some(r.metadata.resource_version.clone()),
            finalizers: r.metadata.finalizers.clone(),
            labels: r.metadata.labels.clone(),
            annotations: r.metadata.annotations.clone(),
            ..Default::default()
        }
    }

    #[test]
    fn generation_advances_only_when_the_spec_changes() {
        let current = resource(&[], false);
        let mut input = input_for(&current);
        input.labels.insert("k".into(), "v".into());
        let UpdatePlan::Write(meta) = plan_update(&current, &input, &current.spec).unwrap() else {
            panic!("a label change is written");
        };
        assert_eq!(meta.generation, 0);
        assert_ne!(meta.resource_version, current.metadata.resource_version);
        assert_eq!(meta.uid, current.metadata.uid);

        let spec = json!({"a": 2}).as_object().unwrap().clone();
        let UpdatePlan::Write(meta) = plan_update(&current, &input_for(&current), &spec).unwrap()
        else {
            panic!("a spec change is written");
        };
        assert_eq!(meta.generation, 1);
    }

    #[test]
    fn an_unchanged_object_is_not_written() {
        let current = resource(&[], false);
        assert!(matches!(
            plan_update(&current, &input_for(&current), &current.spec).unwrap(),
            UpdatePlan::Unchanged
        ));
    }

    #[test]
    fn a_stale_resource_version_or_uid_conflicts() {
        let current = resource(&[], false);
        let mut input = input_for(&current);
        input.resource_version = Some("stale".into());
        assert!(matches!(
            plan_update(&current, &input, &current.spec),
            Err(RegistryError::Conflict(_))
        ));
        let preconditions = Preconditions {
            uid: Some("other".into()),
            resource_version: None,
        };
        assert!(plan_delete(&current, &preconditions, Utc::now()).is_err());
    }

    #[test]
    fn finalizers_defer_a_delete_until_they_are_removed() {
        let current = resource(&["keep"], false);
        let DeletePlan::MarkDeleted(meta) =
            plan_delete(&current, &Preconditions::default(), Utc::now()).unwrap()
        else {
            panic!("finalizers defer the delete");
        };
        assert!(meta.deletion_timestamp.is_some());

        let deleting = resource(&["keep"], true);
        let mut input = input_for(&deleting);
        input.finalizers.clear();
        assert!(matches!(
            plan_update(&deleting, &input, &deleting.spec).unwrap(),
            UpdatePlan::Remove
        ));
        assert!(matches!(
            plan_delete(&resource(&[], false), &Preconditions::default(), Utc::now()).unwrap(),
            DeletePlan::Remove
        ));
    }
}
