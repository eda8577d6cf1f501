//! MQTT on AWS: the custom authorizer's decisions and policy documents, the ingest of rule
//! messages into the stream, and commands from the `command/#` rule; with the payloads in
//! `events/`, over DynamoDB and Kinesis (moto) or the embedded store.

mod authorizer;
mod fixture;
mod ingest;
