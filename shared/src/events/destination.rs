//! Where a function binary writes its events, from its configuration: to `$K_SINK` as
//! binary-mode CloudEvents over HTTP when it is set (Knative's SinkBinding, see
//! [`super::http_sink`]), else to the Kinesis stream `DROGUE_EVENT_STREAM` (AWS).
//!
//! [`Destination`] is a clap [`Args`] group (the options of [`DestinationArgs`]), which
//! the functions that write events flatten into their configuration.

use super::EventSink;
use super::http_sink::{HttpSink, HttpSinkConfig, K_CA_CERTS, K_CE_OVERRIDES, K_SINK};
use super::kinesis::{self, KinesisSink};
use crate::config::non_empty;
use clap::{ArgMatches, Args, Command, FromArgMatches};
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

/// The options of an event destination, as flags and variables.
#[derive(Debug, Clone, Default, PartialEq, Eq, Args)]
pub struct DestinationArgs {
    /// An HTTP sink for events (binary-mode CloudEvents), as Knative's SinkBinding sets
    /// it; when set, DROGUE_EVENT_STREAM is not used.
    #[arg(long = "sink", env = K_SINK, value_name = K_SINK, value_parser = non_empty)]
    pub sink: Option<String>,
    /// Extensions to add to every event (with K_SINK), as Knative's SinkBinding sets them:
    /// `{"extensions": {"name": "value"}}`.
    #[arg(long = "ce-overrides", env = K_CE_OVERRIDES, value_name = K_CE_OVERRIDES, value_parser = non_empty)]
    pub ce_overrides: Option<String>,
    /// Root certificates (PEM) for an HTTPS K_SINK.
    #[arg(long = "ca-certs", env = K_CA_CERTS, value_name = K_CA_CERTS, value_parser = non_empty)]
    pub ca_certs: Option<String>,
    /// The Kinesis stream of events (required without K_SINK).
    #[arg(long = "event-stream", env = DROGUE_EVENT_STREAM, value_name = DROGUE_EVENT_STREAM, value_parser = non_empty)]
    pub event_stream: Option<String>,
}

impl TryFrom<&DestinationArgs> for Destination {
    type Error = anyhow::Error;

    /// `K_SINK` (with `K_CE_OVERRIDES`, `K_CA_CERTS`) when set, else
    /// `DROGUE_EVENT_STREAM`; an error names what is missing or invalid.
    fn try_from(args: &DestinationArgs) -> anyhow::Result<Self> {
        if let Some(url) = &args.sink {
            return Ok(Self::Http(HttpSinkConfig::from_settings(
                url,
                args.ce_overrides.as_deref(),
                args.ca_certs.as_deref(),
            )?));
        }
        match &args.event_stream {
            Some(stream) => Ok(Self::Kinesis(stream.clone())),
            None => anyhow::bail!(
                "{DROGUE_EVENT_STREAM} must be set (the Kinesis stream of events), or {K_SINK} (an HTTP sink for CloudEvents)"
            ),
        }
    }
}

/// Flattened into a configuration, a destination reads [`DestinationArgs`]'s options and
/// is checked as it is parsed.
impl Args for Destination {
    fn group_id() -> Option<clap::Id> {
        DestinationArgs::group_id()
    }

    fn augment_args(command: Command) -> Command {
        DestinationArgs::augment_args(command)
    }

    fn augment_args_for_update(command: Command) -> Command {
        DestinationArgs::augment_args_for_update(command)
    }
}

impl FromArgMatches for Destination {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        let args = DestinationArgs::from_arg_matches(matches)?;
        Self::try_from(&args).map_err(|e| {
            let kind = if args.sink.is_none() {
                clap::error::ErrorKind::MissingRequiredArgument
            } else {
                clap::error::ErrorKind::ValueValidation
            };
            clap::Error::raw(kind, format!("{e}\n"))
        })
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(matches)?;
        Ok(())
    }
}

impl Destination {
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Config {
        #[command(flatten)]
        events: Destination,
    }

    fn parse(args: &[&str]) -> anyhow::Result<Destination> {
        crate::config::try_parse_flags::<Config>(args).map(|c| c.events)
    }

    #[test]
    fn a_sink_wins_over_a_stream() {
        assert_eq!(
            parse(&["--event-stream", "events"]).unwrap(),
            Destination::Kinesis("events".into())
        );
        let Destination::Http(sink) = parse(&[
            "--event-stream",
            "events",
            "--sink",
            "http://broker.local/default",
            "--ce-overrides",
            r#"{"extensions": {"cluster": "a"}}"#,
        ])
        .unwrap() else {
            panic!("not the sink");
        };
        assert_eq!(sink.url.as_str(), "http://broker.local/default");
        assert_eq!(sink.overrides["cluster"], "a");
    }

    #[test]
    fn missing_empty_or_bad_destinations_are_refused() {
        let error = parse(&[]).unwrap_err().to_string();
        assert!(
            error.contains(DROGUE_EVENT_STREAM) && error.contains(K_SINK),
            "{error}"
        );
        let error = parse(&["--event-stream", ""]).unwrap_err().to_string();
        assert!(
            error.contains(DROGUE_EVENT_STREAM) && error.contains("empty"),
            "{error}"
        );
        let error = parse(&["--sink", "ftp://x"]).unwrap_err().to_string();
        assert!(error.contains(K_SINK), "{error}");
        let error = parse(&["--sink", "http://x", "--ce-overrides", "[]"])
            .unwrap_err()
            .to_string();
        assert!(error.contains(K_CE_OVERRIDES), "{error}");
    }
}
