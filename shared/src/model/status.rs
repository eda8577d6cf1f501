//! The server-owned `status` of applications and devices: readiness conditions and the
//! evaluation of trust anchors. A client-sent status is never stored.

use super::trust_anchors::{self, TrustAnchorError};
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Map, Value, json};

/// The conditions every resource reports: resources are ready as soon as they are
/// stored. `KafkaReady` is kept for tools written against Drogue Cloud.
const CONDITIONS: [&str; 2] = ["KafkaReady", "Ready"];

/// The status of an application with this spec.
pub fn application_status(
    spec: &Map<String, Value>,
    previous: Option<&Map<String, Value>>,
    now: DateTime<Utc>,
) -> Result<Map<String, Value>, TrustAnchorError> {
    let mut status = device_status(previous, now);
    if let Some(anchors) = trust_anchors::evaluate(spec)? {
        status.insert("trustAnchors".into(), json!({ "anchors": anchors }));
    }
    Ok(status)
}

/// The status of a device (also the base of an application's).
pub fn device_status(
    previous: Option<&Map<String, Value>>,
    now: DateTime<Utc>,
) -> Map<String, Value> {
    let conditions: Vec<Value> = CONDITIONS
        .iter()
        .map(|kind| {
            let since = previous
                .and_then(|p| p.get("conditions"))
                .and_then(Value::as_array)
                .and_then(|all| {
                    all.iter()
                        .find(|c| c["type"] == *kind && c["status"] == "True")
                })
                .and_then(|c| c["lastTransitionTime"].as_str().map(str::to_owned))
                .unwrap_or_else(|| now.to_rfc3339_opts(SecondsFormat::Secs, true));
            json!({"lastTransitionTime": since, "status": "True", "type": kind})
        })
        .collect();
    let mut status = Map::new();
    status.insert("conditions".into(), Value::Array(conditions));
    status
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_resources_are_ready_and_keep_their_transition_time() {
        let first = Utc::now() - chrono::Duration::hours(1);
        let status = device_status(None, first);
        let conditions = status["conditions"].as_array().unwrap();
        assert_eq!(conditions.len(), 2);
        assert_eq!(conditions[0]["type"], "KafkaReady");
        assert_eq!(conditions[1]["type"], "Ready");
        assert!(conditions.iter().all(|c| c["status"] == "True"));

        let later = device_status(Some(&status), Utc::now());
        assert_eq!(
            later, status,
            "an unchanged condition keeps its lastTransitionTime"
        );
    }

    #[test]
    fn applications_report_their_trust_anchors() {
        let spec = json!({"trustAnchors": {"anchors": [{"certificate": "!"}]}});
        let status = application_status(spec.as_object().unwrap(), None, Utc::now()).unwrap();
        assert!(status["trustAnchors"]["anchors"][0]["invalid"].is_object());
        let none = application_status(&Map::new(), None, Utc::now()).unwrap();
        assert!(!none.contains_key("trustAnchors"));
    }
}
