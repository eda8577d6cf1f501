//! Command & control: applications drop off commands for devices; devices take them
//! when they long-poll over HTTP (or get them at once over MQTT), and answer.
//!
//! Every command has a request id. It waits in its device's inbox until it is taken
//! (once, by the device or one of its gateways) or expires. Responses are kept by
//! request id, so that a drop-off can wait for its answer.

pub mod external;
mod publisher;
mod rules;
mod service;

pub use publisher::{
    CommandPublisher, IotDataPublisher, LocalCommandBus, PublishError, PublishedCommand,
    iot_data_client, topic,
};
pub use rules::{
    FORBIDDEN_NAME_CHARS, check_name, check_ttl, response_status, takes_commands, valid_status,
};
pub use service::{Answer, CommandError, CommandPorts, CommandService, DropOff, Signals};

pub use crate::model::command::{Command, CommandResponse, RESPONSE_GRACE_SECONDS};

/// Default time a command waits for its device.
pub const DEFAULT_TTL_SECONDS: u64 = 300;
/// Longest time a command may wait for its device.
pub const MAX_TTL_SECONDS: u64 = 86_400;
/// The largest command payload.
pub const MAX_PAYLOAD: usize = 64 * 1024;
