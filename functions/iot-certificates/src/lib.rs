//! X.509 devices on AWS IoT Core, and what follows the table's DynamoDB stream
//! ([`stream`]): the registry's trust anchors registered as CA certificates
//! ([`anchors`]), device certificates validated just in time when IoT Core registered
//! them at their first connection ([`validator`]) and revoked when their device goes or
//! changes ([`revocation`]), and registry change events ([`changes`]).

pub mod anchors;
pub mod changes;
pub mod error;
pub mod revocation;
pub mod stream;
pub mod validator;

use clap::Parser;
use drogue_shared::config::{Instance, Table, non_empty};
use drogue_shared::events::destination::Destination;

/// What the certificate validator reads from its flags and environment (see
/// `drogue_shared::config`).
#[derive(Debug, Clone, Parser)]
#[command(
    name = "cert-validator",
    about = "Validates device certificates IoT Core registered"
)]
pub struct ValidatorConfig {
    #[command(flatten)]
    pub table: Table,
    /// The prefix of the IoT policies the validator attaches to device certificates.
    #[arg(long, env = "DROGUE_IOT_POLICY_PREFIX", value_name = "DROGUE_IOT_POLICY_PREFIX", default_value = "drogue", value_parser = non_empty)]
    pub iot_policy_prefix: String,
}

/// What the consumer of the table's stream (`trust-anchor-sync`) reads from its flags and
/// environment.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "trust-anchor-sync",
    about = "Follows the registry table's DynamoDB stream"
)]
pub struct StreamConfig {
    #[command(flatten)]
    pub table: Table,
    /// Where registry change events go: `K_SINK` when set, else the Kinesis stream
    /// `DROGUE_EVENT_STREAM`.
    #[command(flatten)]
    pub events: Destination,
    #[command(flatten)]
    pub instance: Instance,
}

#[cfg(test)]
mod tests {
    use super::*;
    use drogue_shared::config::{assert_refused, try_parse_flags};

    #[test]
    fn good_configurations() {
        let config = try_parse_flags::<ValidatorConfig>(&["--table", "drogue"]).unwrap();
        assert_eq!(
            (config.table.as_str(), config.iot_policy_prefix.as_str()),
            ("drogue", "drogue")
        );
        let config = try_parse_flags::<ValidatorConfig>(&[
            "--table",
            "drogue",
            "--iot-policy-prefix",
            "stage",
        ])
        .unwrap();
        assert_eq!(config.iot_policy_prefix, "stage");
        let config = try_parse_flags::<StreamConfig>(&[
            "--table",
            "drogue",
            "--event-stream",
            "events",
            "--instance",
            "mine",
        ])
        .unwrap();
        assert_eq!(config.events, Destination::Kinesis("events".into()));
        assert_eq!(config.instance.as_str(), "mine");
    }

    #[test]
    fn missing_or_empty_values_are_refused() {
        assert_refused::<ValidatorConfig>(&[], &["DROGUE_TABLE"]);
        assert_refused::<ValidatorConfig>(&["--table", ""], &["DROGUE_TABLE", "empty"]);
        assert_refused::<ValidatorConfig>(
            &["--table", "t", "--iot-policy-prefix", ""],
            &["DROGUE_IOT_POLICY_PREFIX"],
        );
        assert_refused::<StreamConfig>(&["--table", "t"], &["DROGUE_EVENT_STREAM"]);
    }

    #[test]
    fn bad_numbers_are_refused() {
        assert_refused::<drogue_shared::runtime::Function<ValidatorConfig>>(
            &["--table", "t", "--port=-1"],
            &["PORT"],
        );
    }
}
