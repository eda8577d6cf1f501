//! The message an IoT topic rule hands to a function, as the JSON its SQL selects:
//!
//! ```sql
//! SELECT encode(*, 'base64') AS payload, topic() AS topic, clientid() AS clientId,
//!        get_mqtt_property('content_type') AS contentType, timestamp() AS timestamp
//! FROM '<filter>'
//! ```
//!
//! Used by the MQTT ingest (telemetry, command answers) and the command function
//! (commands applications publish).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// What became of a rule message or event, the function's answer:
/// `{"outcome": "accepted"}`, `{"outcome": "refused", "reason": ...}`,
/// `{"outcome": "ignored"[, "reason": ...]}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "lowercase")]
pub enum RuleOutcome {
    Accepted,
    Refused {
        reason: &'static str,
    },
    Ignored {
        #[serde(skip_serializing_if = "Option::is_none")]
        reason: Option<&'static str>,
    },
}

impl RuleOutcome {
    /// The refusal of a message without a base64 payload.
    pub const NOT_BASE64: Self = Self::Refused {
        reason: "the payload is not base64",
    };
}

/// One message, as the rule's SQL selects it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RuleMessage {
    pub topic: String,
    /// The sender's MQTT client id (the command rule does not select it).
    #[serde(default)]
    pub client_id: Option<String>,
    /// The payload, base64.
    pub payload: String,
    #[serde(default)]
    pub content_type: Option<String>,
    /// Milliseconds since the epoch, when IoT Core received it.
    #[serde(default)]
    pub timestamp: Option<i64>,
}

impl RuleMessage {
    /// The payload's bytes; `None` when it is not base64.
    pub fn payload(&self) -> Option<Vec<u8>> {
        STANDARD.decode(&self.payload).ok()
    }

    /// The content type, unless missing or empty (IoT Core selects an empty one for
    /// messages without).
    pub fn content_type(&self) -> Option<&str> {
        self.content_type.as_deref().filter(|c| !c.is_empty())
    }

    /// When IoT Core received it, else now.
    pub fn received(&self) -> DateTime<Utc> {
        self.timestamp
            .and_then(DateTime::<Utc>::from_timestamp_millis)
            .unwrap_or_else(Utc::now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rule_message_decodes_once() {
        let message: RuleMessage = serde_json::from_value(serde_json::json!({
            "topic": "dt/app/dev/temp", "clientId": "dev@app", "payload": "aGk=",
            "contentType": "", "timestamp": 1_700_000_000_000_i64
        }))
        .unwrap();
        assert_eq!(message.payload().unwrap(), b"hi");
        assert_eq!(message.content_type(), None);
        assert_eq!(message.received().timestamp_millis(), 1_700_000_000_000);
        let bad = RuleMessage {
            payload: "not base64!".into(),
            ..message
        };
        assert!(bad.payload().is_none());
        assert_eq!(
            serde_json::to_value(RuleOutcome::NOT_BASE64).unwrap(),
            serde_json::json!({"outcome": "refused", "reason": "the payload is not base64"})
        );
        assert_eq!(
            serde_json::to_value(RuleOutcome::Ignored { reason: None }).unwrap(),
            serde_json::json!({"outcome": "ignored"})
        );
    }
}
