//! Commands that applications publish over MQTT: the IoT rule on `command/#` hands them
//! here, as the JSON its SQL selects:
//!
//! ```sql
//! SELECT encode(*, 'base64') AS payload, topic() AS topic, clientid() AS clientId,
//!        get_mqtt_property('content_type') AS contentType FROM 'command/#'
//! ```

use base64::Engine;
use drogue_shared::commands::CommandService;
use drogue_shared::mqtt::{Ingested, application_command};
use serde::Deserialize;
use serde_json::{Value, json};

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RuleMessage {
    topic: String,
    payload: String,
    #[serde(default)]
    content_type: Option<String>,
}

/// Handles one rule message: refused ones are logged and dropped, an unreachable store is
/// a function error (retried).
pub async fn handle(commands: CommandService, event: Value) -> anyhow::Result<Value> {
    let message: RuleMessage = serde_json::from_value(event)?;
    let Ok(payload) = base64::engine::general_purpose::STANDARD.decode(&message.payload) else {
        return Ok(json!({"outcome": "refused", "reason": "the payload is not base64"}));
    };
    let content_type = message.content_type.as_deref().filter(|c| !c.is_empty());
    let outcome = application_command(&commands, &message.topic, &payload, content_type).await?;
    Ok(match outcome {
        Ingested::Accepted => json!({"outcome": "accepted"}),
        Ingested::Refused(reason) => {
            tracing::warn!(topic = %message.topic, %reason, "command refused");
            json!({"outcome": "refused", "reason": reason})
        }
    })
}
