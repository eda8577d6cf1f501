//! X.509 devices on AWS IoT Core, and what follows the table's DynamoDB stream
//! ([`stream`]): the registry's trust anchors registered as CA certificates
//! ([`anchors`]), device certificates validated just in time when IoT Core registered
//! them at their first connection ([`validator`]) and revoked when their device goes or
//! changes ([`revocation`]), and registry change events ([`changes`]).

pub mod anchors;
pub mod changes;
pub mod revocation;
pub mod stream;
pub mod validator;

use drogue_shared::store::dynamodb;

/// An IoT control plane client from the shared AWS configuration, with the store's
/// timeouts.
pub fn iot_client(config: &aws_config::SdkConfig) -> aws_sdk_iot::Client {
    let config = aws_sdk_iot::config::Builder::from(config)
        .timeout_config(dynamodb::timeouts())
        .build();
    aws_sdk_iot::Client::from_conf(config)
}

/// The environment variable naming the table.
pub fn table_from_env() -> anyhow::Result<String> {
    std::env::var("DROGUE_TABLE").map_err(|_| anyhow::anyhow!("DROGUE_TABLE must be set"))
}
