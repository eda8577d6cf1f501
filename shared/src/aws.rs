//! AWS client settings, in one place: the timeouts of every AWS call, and the clients of
//! the services the core calls, each built from the shared configuration
//! ([`crate::runtime::aws::config`]) with those timeouts. The clients of services only one
//! function calls are here too, behind cargo features that only that function enables:
//! IoT Core's control plane (`iot-control`, the cert-validator and trust-anchor-sync) and
//! API Gateway's management API (`apigateway-management`, the fan-out).
//!
//! Each client is built on its first use ([`Lazy`]): building one (its runtime plugins,
//! its endpoint resolver, which parses the SDK's table of partitions and regions) was a
//! few per cent of a function's cold start (see BENCHMARKS.md), paid before the function
//! polled for its first event even when that event needs no such client.

use aws_config::SdkConfig;
use aws_sdk_dynamodb::config::timeout::TimeoutConfig;
use std::fmt;
use std::ops::Deref;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

/// The building of a [`Lazy`] client.
type Build<C> = Box<dyn FnOnce() -> C + Send>;

/// A service client built when it is first used, then shared by every clone (clients
/// are cheap to clone; this is too). A client given ready-made ([`From`]) is used as is.
pub struct Lazy<C>(Arc<LazyLock<C, Build<C>>>);

impl<C> Lazy<C> {
    /// The client `build` makes, on first use.
    pub fn new(build: impl FnOnce() -> C + Send + 'static) -> Self {
        Self(Arc::new(LazyLock::new(Box::new(build))))
    }
}

impl<C> Clone for Lazy<C> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<C> Deref for Lazy<C> {
    type Target = C;

    fn deref(&self) -> &C {
        &self.0
    }
}

impl<C: Send + 'static> From<C> for Lazy<C> {
    fn from(client: C) -> Self {
        Self::new(move || client)
    }
}

impl<C> fmt::Debug for Lazy<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Lazy<{}>", std::any::type_name::<C>())
    }
}

/// Timeouts of every AWS call: an unreachable table or service must give a quick 503, not
/// a hang (API Gateway gives up after 30 s).
pub fn timeouts() -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(1))
        .operation_attempt_timeout(Duration::from_secs(2))
        .operation_timeout(Duration::from_secs(5))
        .build()
}

/// The `Client` of the SDK crate `$sdk` from `$config`, with [`timeouts`], built on first
/// use; `|builder| ...` changes its configuration's builder (`&mut`) before that.
macro_rules! lazy_client {
    ($sdk:ident, $config:expr $(, |$builder:ident| $more:expr)?) => {{
        let config = $config.clone();
        Lazy::new(move || {
            #[allow(unused_mut)]
            let mut builder = $sdk::config::Builder::from(&config).timeout_config(timeouts());
            $(
                let $builder = &mut builder;
                $more;
            )?
            $sdk::Client::from_conf(builder.build())
        })
    }};
}

/// A DynamoDB client, with [`timeouts`], built on first use.
pub fn dynamodb_client(config: &SdkConfig) -> Lazy<aws_sdk_dynamodb::Client> {
    lazy_client!(aws_sdk_dynamodb, config)
}

/// A Kinesis client, with [`timeouts`], built on first use.
pub fn kinesis_client(config: &SdkConfig) -> Lazy<aws_sdk_kinesis::Client> {
    lazy_client!(aws_sdk_kinesis, config)
}

/// An IoT data plane client, with [`timeouts`], built on first use. `endpoint` is the
/// account's IoT data endpoint (`iot:Data-ATS`), if given.
pub fn iot_data_client(
    config: &SdkConfig,
    endpoint: Option<&str>,
) -> Lazy<aws_sdk_iotdataplane::Client> {
    let endpoint = endpoint.map(str::to_owned);
    lazy_client!(aws_sdk_iotdataplane, config, |builder| {
        // without one, the endpoint of the shared configuration (AWS_ENDPOINT_URL) stays
        if endpoint.is_some() {
            builder.set_endpoint_url(endpoint);
        }
    })
}

/// An IoT control plane client (CA and device certificates, policies), with [`timeouts`],
/// built on first use.
#[cfg(feature = "iot-control")]
pub fn iot_client(config: &SdkConfig) -> Lazy<aws_sdk_iot::Client> {
    lazy_client!(aws_sdk_iot, config)
}

/// An API Gateway management API client for a WebSocket API's callback URL
/// (`https://{api}.execute-api.{region}.amazonaws.com/{stage}`), with [`timeouts`], built
/// on first use.
#[cfg(feature = "apigateway-management")]
pub fn connections_client(
    config: &SdkConfig,
    callback_url: &str,
) -> Lazy<aws_sdk_apigatewaymanagement::Client> {
    let callback_url = callback_url.to_owned();
    lazy_client!(aws_sdk_apigatewaymanagement, config, |builder| builder
        .set_endpoint_url(Some(callback_url)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn a_lazy_client_is_built_once_at_its_first_use_and_shared_by_its_clones() {
        let builds = Arc::new(AtomicUsize::new(0));
        let counted = builds.clone();
        let client = Lazy::new(move || {
            counted.fetch_add(1, Ordering::SeqCst);
            String::from("client")
        });
        let clone = client.clone();
        assert_eq!(
            builds.load(Ordering::SeqCst),
            0,
            "built before its first use"
        );
        assert_eq!(clone.as_str(), "client");
        assert_eq!(client.len(), 6);
        assert_eq!(
            builds.load(Ordering::SeqCst),
            1,
            "built once for both clones"
        );
        let ready: Lazy<String> = String::from("given").into();
        assert_eq!(&*ready, "given");
    }

    #[test]
    fn service_clients_carry_the_timeouts_and_the_shared_configuration() {
        let config = SdkConfig::builder()
            .behavior_version(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new("eu-west-1"))
            .build();
        let dynamodb = dynamodb_client(&config);
        let timeouts = dynamodb.config().timeout_config().cloned();
        assert_eq!(timeouts, Some(super::timeouts()));
        let kinesis = kinesis_client(&config);
        assert_eq!(
            kinesis.config().region().map(|r| r.as_ref()),
            Some("eu-west-1")
        );
        let iot_data = iot_data_client(&config, Some("https://iot.example.com"));
        assert_eq!(
            iot_data.config().timeout_config().cloned(),
            Some(super::timeouts())
        );
    }
}
