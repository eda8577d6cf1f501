//! AWS client settings, in one place: the timeouts of every AWS call, and the clients of
//! the services the core calls, each built from the shared configuration
//! ([`crate::runtime::aws::config`]) with those timeouts. The clients of services only one
//! function calls are here too, behind cargo features that only that function enables:
//! IoT Core's control plane (`iot-control`, the cert-validator and trust-anchor-sync) and
//! API Gateway's management API (`apigateway-management`, the fan-out).

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

/// An IoT control plane client (CA and device certificates, policies), with [`timeouts`].
#[cfg(feature = "iot-control")]
pub fn iot_client(config: &SdkConfig) -> aws_sdk_iot::Client {
    let config = aws_sdk_iot::config::Builder::from(config)
        .timeout_config(timeouts())
        .build();
    aws_sdk_iot::Client::from_conf(config)
}

/// An API Gateway management API client for a WebSocket API's callback URL
/// (`https://{api}.execute-api.{region}.amazonaws.com/{stage}`), with [`timeouts`].
#[cfg(feature = "apigateway-management")]
pub fn connections_client(
    config: &SdkConfig,
    callback_url: &str,
) -> aws_sdk_apigatewaymanagement::Client {
    let config = aws_sdk_apigatewaymanagement::config::Builder::from(config)
        .endpoint_url(callback_url)
        .timeout_config(timeouts())
        .build();
    aws_sdk_apigatewaymanagement::Client::from_conf(config)
}
