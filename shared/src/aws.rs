//! AWS client settings, in one place: the timeouts of every AWS call, and the clients of
//! the services the core calls, each built from the shared configuration
//! ([`crate::runtime::aws::config`]) with those timeouts. Functions that call more services
//! (IoT Core's control plane, API Gateway's management API) build their clients with
//! [`timeouts`] too.

use aws_config::SdkConfig;
use aws_sdk_dynamodb::config::timeout::TimeoutConfig;
use std::time::Duration;

/// Timeouts of every AWS call: an unreachable table or service must give a quick 503, not
/// a hang (API Gateway gives up after 30 s).
pub fn timeouts() -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(1))
        .operation_attempt_timeout(Duration::from_secs(2))
        .operation_timeout(Duration::from_secs(5))
        .build()
}

/// A DynamoDB client, with [`timeouts`].
pub fn dynamodb_client(config: &SdkConfig) -> aws_sdk_dynamodb::Client {
    let config = aws_sdk_dynamodb::config::Builder::from(config)
        .timeout_config(timeouts())
        .build();
    aws_sdk_dynamodb::Client::from_conf(config)
}

/// A Kinesis client, with [`timeouts`].
pub fn kinesis_client(config: &SdkConfig) -> aws_sdk_kinesis::Client {
    let config = aws_sdk_kinesis::config::Builder::from(config)
        .timeout_config(timeouts())
        .build();
    aws_sdk_kinesis::Client::from_conf(config)
}

/// An IoT data plane client, with [`timeouts`]. `endpoint` is the account's IoT data
/// endpoint (`iot:Data-ATS`), if given.
pub fn iot_data_client(config: &SdkConfig, endpoint: Option<&str>) -> aws_sdk_iotdataplane::Client {
    let mut builder =
        aws_sdk_iotdataplane::config::Builder::from(config).timeout_config(timeouts());
    if let Some(endpoint) = endpoint {
        builder = builder.endpoint_url(endpoint);
    }
    aws_sdk_iotdataplane::Client::from_conf(builder.build())
}
