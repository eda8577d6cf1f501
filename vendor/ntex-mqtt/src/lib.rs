//! MQTT Client/Server framework
#![deny(rust_2018_idioms, unreachable_pub, missing_debug_implementations, clippy::pedantic)]
#![allow(
    clippy::cast_possible_truncation,
    clippy::missing_fields_in_debug,
    clippy::must_use_candidate,
    clippy::missing_errors_doc,
    clippy::struct_field_names
)]

mod topic;
#[macro_use]
mod utils;

pub mod control;
pub mod error;
pub mod v3;
pub mod v5;

mod config;
mod inflight;
mod io;
mod payload;
mod server;
mod service;
mod session;
mod types;
mod version;

pub use self::config::MqttServiceConfig;
pub use self::control::{Control, Reason};
pub use self::error::{HandshakeError, MqttError, ProtocolError};
pub use self::inflight::SizedRequest;
pub use self::payload::Payload;
pub use self::server::MqttServer;
pub use self::session::Session;
pub use self::topic::{TopicFilter, TopicFilterError, TopicFilterLevel};
pub use self::types::QoS;

// http://www.iana.org/assignments/service-names-port-numbers/service-names-port-numbers.xhtml
pub const TCP_PORT: u16 = 1883;
pub const TLS_PORT: u16 = 8883;
