//! Commands that applications publish over MQTT: the IoT rule on `command/#` hands them
//! here, as the JSON its SQL selects ([`RuleMessage`]):
//!
//! ```sql
//! SELECT encode(*, 'base64') AS payload, topic() AS topic, clientid() AS clientId,
//!        get_mqtt_property('content_type') AS contentType FROM 'command/#'
//! ```

use drogue_shared::commands::CommandService;
use drogue_shared::mqtt::{IngestError, Ingested, RuleMessage, RuleOutcome, application_command};

/// Why a command rule message failed (a function error: retried, then the rule's error
/// action).
#[derive(Debug)]
pub enum CommandRuleError {
    /// The command store (or registry) could not be reached.
    DropOff(IngestError),
}

impl std::fmt::Display for CommandRuleError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::DropOff(e) => write!(f, "the command could not be dropped off: {e}"),
        }
    }
}

impl std::error::Error for CommandRuleError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::DropOff(e) => Some(e),
        }
    }
}

impl From<IngestError> for CommandRuleError {
    fn from(e: IngestError) -> Self {
        Self::DropOff(e)
    }
}

/// Handles one rule message: refused ones are logged and dropped, an unreachable store is
/// a function error (retried).
pub async fn handle(
    commands: CommandService,
    message: RuleMessage,
) -> Result<RuleOutcome, CommandRuleError> {
    let Some(payload) = message.payload() else {
        return Ok(RuleOutcome::NOT_BASE64);
    };
    let outcome = application_command(
        &commands,
        &message.topic,
        None,
        &payload,
        message.content_type(),
    )
    .await?;
    Ok(match outcome {
        Ingested::Accepted => RuleOutcome::Accepted,
        Ingested::Refused(reason) => {
            tracing::warn!(topic = %message.topic, %reason, "command refused");
            RuleOutcome::Refused {
                reason: reason.reason(),
            }
        }
    })
}
