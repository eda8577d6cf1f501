//! The event fan-out on AWS and the WebSocket API it serves.
//!
//! - [`fanout`]: the target of the Kinesis event stream. Each event (a structured JSON
//!   CloudEvent) is published to the MQTT topic `app/{app}` on IoT Core and posted to every
//!   WebSocket connection that follows its application and may still read it ([`access`]:
//!   checked before each delivery; a connection whose access ended is closed). Failed records are reported as
//!   batch item failures, so that Lambda retries from the first of them.
//! - [`stream`]: the WebSocket API's `$connect`, `$disconnect` and `$default` routes:
//!   authenticates an application's stream consumer as `drogue-local`'s `/stream/{app}`
//!   does, and keeps its connection in the table.
//!
//! Both binaries are AWS-only (no Knative Service): they serve a Kinesis event source
//! mapping and API Gateway's WebSocket API, and deliver through IoT Core and API Gateway.
//! `drogue-local` delivers events to its own WebSocket stream and MQTT broker.

pub mod access;
pub mod fanout;
pub mod stream;

/// The content type of the published events (structured mode CloudEvents).
pub const CONTENT_TYPE: &str = "application/cloudevents+json; charset=utf-8";

/// The MQTT topic an application's events are published on.
pub fn topic(app: &str) -> String {
    format!("app/{app}")
}
