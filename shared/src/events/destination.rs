//! Where a function binary writes its events, from its environment: to `$K_SINK` as
//! binary-mode CloudEvents over HTTP when it is set (Knative's SinkBinding, see
//! [`super::http_sink`]), else to the Kinesis stream `DROGUE_EVENT_STREAM` (AWS).

use super::EventSink;
use super::http_sink::{HttpSink, HttpSinkConfig, K_SINK};
use super::kinesis::{self, KinesisSink};
use std::fmt;
use std::sync::Arc;

/// The variable naming the Kinesis stream of events.
pub const DROGUE_EVENT_STREAM: &str = "DROGUE_EVENT_STREAM";

/// Where events go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// An HTTP sink (`K_SINK`): a Knative Broker, Channel or any CloudEvents receiver.
    Http(HttpSinkConfig),
    /// A Kinesis Data Stream, by name.
    Kinesis(String),
}

impl Destination {
    /// `K_SINK` (with `K_CE_OVERRIDES`, `K_CA_CERTS`) when set, else `DROGUE_EVENT_STREAM`;
    /// an error names what is missing or invalid.
    pub fn from_env() -> anyhow::Result<Self> {
        if let Some(config) = HttpSinkConfig::from_env()? {
            return Ok(Self::Http(config));
        }
        match std::env::var(DROGUE_EVENT_STREAM) {
            Ok(stream) if !stream.trim().is_empty() => Ok(Self::Kinesis(stream)),
            _ => anyhow::bail!(
                "{DROGUE_EVENT_STREAM} must be set (the Kinesis stream of events), or {K_SINK} (an HTTP sink for CloudEvents)"
            ),
        }
    }

    /// The sink, its clients built from the shared AWS configuration.
    pub fn sink(&self, aws: &aws_config::SdkConfig) -> anyhow::Result<Arc<dyn EventSink>> {
        let sink: Arc<dyn EventSink> = match self {
            Self::Http(config) => Arc::new(HttpSink::new(config.clone())?),
            Self::Kinesis(stream) => Arc::new(KinesisSink::new(kinesis::client(aws), stream)),
        };
        tracing::info!(destination = %self, "events go to the event stream");
        Ok(sink)
    }
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Http(config) => write!(f, "{} (binary-mode CloudEvents, {K_SINK})", config.url),
            Self::Kinesis(stream) => write!(f, "the Kinesis stream {stream}"),
        }
    }
}
