//! MQTT, the same on AWS IoT Core and on the local broker: the topic scheme, who may
//! connect and the policy that confines them.

pub mod authorizer;
pub mod filter;
pub mod ingest;
pub mod policy;
pub mod rule;
pub mod topics;

pub use authorizer::{
    Authorized, ConnectDecision, MqttAuthError, MqttAuthorizer, MqttConnect, MqttIdentity,
};
pub use filter::{FilterError, TopicFilter};
pub use ingest::{DeviceMessage, IngestError, Ingested, MqttIngest, Refusal, application_command};
pub use policy::{Action, Policy};
pub use rule::{RuleMessage, RuleOutcome};
