//! Commands and their responses as they are kept: what the command & control service
//! ([`crate::commands`]) drops off and devices answer, and what the command store keeps.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// How long after its expiry a command still takes a response.
pub const RESPONSE_GRACE_SECONDS: i64 = 300;

/// A command on its way to a device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    /// The request id (a UUID).
    pub id: String,
    pub application: String,
    /// The `uid` of that application, when the one sending it was authorized for it:
    /// a client whose access was decided for another application of the same name
    /// does not receive it. Empty when not known (commands kept before it was recorded,
    /// or dropped off by IoT Core's rule).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub application_uid: String,
    /// The device the command is for.
    pub device: String,
    /// The `uid` of that device when the command was dropped off: only this very device
    /// takes it or answers it, never a later device of the same name (in an application
    /// deleted and made again). Empty for commands kept before it was recorded.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub device_uid: String,
    /// The command's name.
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    #[serde(with = "base64_bytes")]
    pub payload: Vec<u8>,
    pub created: DateTime<Utc>,
    /// When it leaves the inbox untaken.
    pub expires: DateTime<Utc>,
}

impl Command {
    /// A new command for `device` of `application`, waiting up to `ttl_seconds`.
    pub fn new(
        application: &str,
        device: &super::Device,
        name: impl Into<String>,
        content_type: Option<String>,
        payload: Vec<u8>,
        ttl_seconds: u64,
        now: DateTime<Utc>,
    ) -> Self {
        Self {
            id: uuid::Uuid::new_v4().to_string(),
            application: application.to_owned(),
            application_uid: String::new(),
            device: device.metadata.name.clone(),
            device_uid: device.metadata.uid.clone(),
            name: name.into(),
            content_type,
            payload,
            created: now,
            expires: now + chrono::Duration::seconds(ttl_seconds as i64),
        }
    }

    /// Whether the command is for this very device (by name and `uid`).
    pub fn is_for(&self, application: &str, device: &super::Device) -> bool {
        self.application == application
            && self.device == device.metadata.name
            && (self.device_uid.is_empty() || self.device_uid == device.metadata.uid)
    }

    pub fn is_expired(&self, now: DateTime<Utc>) -> bool {
        self.expires <= now
    }

    /// Until when its response is taken.
    pub fn responses_until(&self) -> DateTime<Utc> {
        self.expires + chrono::Duration::seconds(RESPONSE_GRACE_SECONDS)
    }
}

/// A device's answer to a command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandResponse {
    /// The request id of the command.
    pub id: String,
    /// The device's status code.
    pub status: u16,
    /// The device that answered (the command's device, or one of its gateways).
    pub responder: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    #[serde(with = "base64_bytes")]
    pub payload: Vec<u8>,
    pub received: DateTime<Utc>,
}

mod base64_bytes {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        STANDARD.decode(text).map_err(serde::de::Error::custom)
    }
}
