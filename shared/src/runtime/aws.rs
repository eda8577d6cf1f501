//! The AWS SDK configuration of a function binary.
//!
//! Everything comes from the environment as `aws_config` reads it (region, credentials,
//! `AWS_ENDPOINT_URL`), with one change on Lambda: the HTTPS client trusts only the root
//! certificates of Amazon Trust Services, which issue the certificates of every AWS
//! service endpoint, instead of loading and parsing the system's whole root store (144
//! certificates, about 2.5 ms of a 6 ms cold start, see BENCHMARKS.md). Anywhere else, with
//! an `AWS_ENDPOINT_URL` or `AWS_ENDPOINT_URL_<SERVICE>` set (another service, another CA),
//! with an HTTPS proxy set (which the SDK's default client honours), or with
//! `DROGUE_TLS_ROOTS=system`, the SDK's default client and the system's roots are used.
//! `DROGUE_TLS_ROOTS=amazon` asks for Amazon's roots anywhere. (`DROGUE_TLS_ROOTS` is an
//! option of [`AwsArgs`]; the SDK's own variables are read as the SDK reads them.)
//!
//! Either HTTPS client connects on first use: the SDK's own client builds its TLS
//! configuration (the crypto provider, the root certificates) each time a service client
//! is built from it, which put two or three of them before a function's first
//! `/invocation/next`; [`OnFirstRequest`] defers that to the first request, when it is
//! built once and kept. So a function's start reads its configuration and builds its
//! clients without touching the network or the TLS stack (see docs/deploy.md).

use aws_config::{BehaviorVersion, SdkConfig};
use aws_smithy_http_client::tls::{self, TlsContext, TrustStore, rustls_provider::CryptoMode};
use aws_smithy_runtime_api::client::connector_metadata::ConnectorMetadata;
use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnectorSettings, SharedHttpClient, SharedHttpConnector,
};
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;

/// Amazon Root CA 1 to 4 and Starfield Services Root Certificate Authority G2 (which
/// cross-signs them), as the Debian `ca-certificates` package ships them.
pub const AMAZON_ROOTS: &str = include_str!("amazon-roots.pem");

/// Which root certificates the HTTPS client trusts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Roots {
    /// Amazon Trust Services' only.
    Amazon,
    /// The system's store.
    System,
}

/// `DROGUE_TLS_ROOTS`: which roots the SDK's HTTPS client trusts.
#[derive(Debug, Clone, Default, PartialEq, Eq, clap::Args)]
pub struct AwsArgs {
    /// The root certificates the AWS SDK's HTTPS client trusts: `amazon` (Amazon Trust
    /// Services' only) or `system`; unset, Amazon's on Lambda when no custom endpoint or
    /// proxy is configured, else the system's.
    #[arg(
        long = "tls-roots",
        env = "DROGUE_TLS_ROOTS",
        value_name = "DROGUE_TLS_ROOTS",
        value_enum
    )]
    pub tls_roots: Option<Roots>,
}

impl AwsArgs {
    /// The choice for this setting and this process's environment (see the module
    /// documentation): the SDK's endpoint and proxy variables are looked at as the SDK
    /// reads them.
    pub fn roots(&self) -> Roots {
        let elsewhere = std::env::vars_os().any(|(name, value)| {
            let name = name.to_string_lossy();
            !value.is_empty()
                && (name.starts_with("AWS_ENDPOINT_URL")
                    || ["HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"]
                        .contains(&name.as_ref()))
        });
        Roots::choose(super::on_lambda(), elsewhere, self.tls_roots)
    }
}

impl Roots {
    /// `elsewhere`: a custom endpoint or a proxy is configured.
    fn choose(on_lambda: bool, elsewhere: bool, setting: Option<Self>) -> Self {
        match setting {
            Some(roots) => roots,
            _ if on_lambda && !elsewhere => Self::Amazon,
            _ => Self::System,
        }
    }
}

/// The SDK configuration from the environment, with the HTTPS client for `roots`, which
/// connects on first use ([`OnFirstRequest`]).
///
/// With the region and the credentials in the environment, as Lambda gives them, the
/// configuration takes them from there at once: the SDK's default chains would find them
/// there first too, but building those chains (an STS client for web identity tokens,
/// an instance metadata client for the region) was about a tenth of a function's start
/// (see BENCHMARKS.md). Without them, the default chains look further, as the SDK does.
pub async fn config(roots: Roots) -> SdkConfig {
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .http_client(OnFirstRequest(https_client(roots)));
    let from_env = FromEnvironment::read(|name| std::env::var(name).ok());
    if let Some(region) = from_env.region {
        loader = loader.region(aws_config::Region::new(region));
    }
    if from_env.credentials {
        loader = loader.credentials_provider(
            aws_config::environment::EnvironmentVariableCredentialsProvider::new(),
        );
    }
    loader.load().await
}

/// What of the SDK's configuration the environment settles on its own: the region
/// (`AWS_REGION`, else `AWS_DEFAULT_REGION`, as the SDK's region chain reads them first)
/// and whether there are credentials (`AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY`,
/// which the SDK's credentials chain would take first).
#[derive(Debug, PartialEq, Eq)]
struct FromEnvironment {
    region: Option<String>,
    credentials: bool,
}

impl FromEnvironment {
    fn read(var: impl Fn(&str) -> Option<String>) -> Self {
        let set = |name: &str| var(name).filter(|value| !value.trim().is_empty());
        Self {
            region: set("AWS_REGION").or_else(|| set("AWS_DEFAULT_REGION")),
            credentials: set("AWS_ACCESS_KEY_ID").is_some()
                && set("AWS_SECRET_ACCESS_KEY").is_some(),
        }
    }
}

/// The HTTPS client for `roots`, as it is (building its TLS configuration whenever a
/// service client is built from it).
pub fn https_client(roots: Roots) -> SharedHttpClient {
    match roots {
        Roots::System => system_https_client(),
        Roots::Amazon => amazon_https_client(),
    }
}

/// An HTTP client that builds its connector (its TLS configuration: crypto provider, root
/// certificates) when the first request needs it, and keeps it (the wrapped client
/// caches its connectors), instead of once more at every service client's construction:
/// the SDK's client does that in `validate_base_client_config`, so that a missing root
/// store shows at start, which it only logs anyway.
#[derive(Debug, Clone)]
pub struct OnFirstRequest(pub SharedHttpClient);

impl HttpClient for OnFirstRequest {
    fn http_connector(
        &self,
        settings: &HttpConnectorSettings,
        components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        self.0.http_connector(settings, components)
    }

    fn connector_metadata(&self) -> Option<ConnectorMetadata> {
        self.0.connector_metadata()
    }
}

/// The SDK's default HTTPS client (`aws-smithy-runtime`'s, which it does not export): rustls
/// with aws-lc, the system's roots, and the proxy of the environment (`HTTPS_PROXY`,
/// `NO_PROXY`, ...), as for this behaviour version.
fn system_https_client() -> SharedHttpClient {
    use aws_smithy_http_client::{ConnectorBuilder, proxy::ProxyConfig};
    aws_smithy_http_client::Builder::new().build_with_connector_fn(|settings, components| {
        let mut builder =
            ConnectorBuilder::default().tls_provider(tls::Provider::Rustls(CryptoMode::AwsLc));
        builder.set_connector_settings(settings.cloned());
        if let Some(components) = components {
            builder.set_sleep_impl(components.sleep_impl());
        }
        builder.set_proxy_config(Some(ProxyConfig::from_env()));
        builder.build()
    })
}

fn amazon_https_client() -> SharedHttpClient {
    // building a context cannot fail; the PEM is parsed with the connector (and checked
    // by the tests below)
    let context = TlsContext::builder()
        .with_trust_store(TrustStore::empty().with_pem_certificate(AMAZON_ROOTS.as_bytes()))
        .build()
        .expect("a TLS context");
    aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(CryptoMode::AwsLc))
        .tls_context(context)
        .build_https()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_environment_settles_region_and_credentials_when_it_has_them() {
        let read = |vars: &[(&str, &str)]| {
            let vars: Vec<(String, String)> = vars
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            FromEnvironment::read(move |name| {
                vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
            })
        };
        // as on Lambda
        assert_eq!(
            read(&[
                ("AWS_REGION", "eu-west-1"),
                ("AWS_DEFAULT_REGION", "eu-west-1"),
                ("AWS_ACCESS_KEY_ID", "AKIA"),
                ("AWS_SECRET_ACCESS_KEY", "secret"),
                ("AWS_SESSION_TOKEN", "token"),
            ]),
            FromEnvironment {
                region: Some("eu-west-1".into()),
                credentials: true
            }
        );
        assert_eq!(
            read(&[("AWS_DEFAULT_REGION", "us-east-2"), ("AWS_REGION", " ")]).region,
            Some("us-east-2".into())
        );
        // a key without its secret, or nothing: the SDK's chains decide
        assert_eq!(
            read(&[("AWS_ACCESS_KEY_ID", "AKIA"), ("AWS_SECRET_ACCESS_KEY", "")]),
            FromEnvironment {
                region: None,
                credentials: false
            }
        );
        assert!(!read(&[("AWS_PROFILE", "dev")]).credentials);
    }

    #[test]
    fn lambda_talking_to_aws_trusts_amazon_roots_only() {
        assert_eq!(Roots::choose(true, false, None), Roots::Amazon);
        assert_eq!(Roots::choose(true, true, None), Roots::System);
        assert_eq!(Roots::choose(false, false, None), Roots::System);
        assert_eq!(
            Roots::choose(true, false, Some(Roots::System)),
            Roots::System
        );
        assert_eq!(
            Roots::choose(false, true, Some(Roots::Amazon)),
            Roots::Amazon
        );
    }

    #[test]
    fn the_roots_are_a_choice() {
        #[derive(clap::Parser)]
        struct Config {
            #[command(flatten)]
            aws: AwsArgs,
        }
        let parse = crate::config::try_parse_flags::<Config>;
        assert_eq!(parse(&[]).unwrap().aws.tls_roots, None);
        assert_eq!(
            parse(&["--tls-roots", "system"]).unwrap().aws.tls_roots,
            Some(Roots::System)
        );
        let error = parse(&["--tls-roots", "mine"]).err().unwrap().to_string();
        assert!(error.contains("DROGUE_TLS_ROOTS"), "{error}");
    }

    #[test]
    fn the_amazon_roots_are_five_valid_ca_certificates() {
        use rustls_pki_types::CertificateDer;
        use rustls_pki_types::pem::PemObject;
        let certs: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(AMAZON_ROOTS.as_bytes())
                .collect::<Result<_, _>>()
                .unwrap();
        assert_eq!(certs.len(), 5);
        let mut store = rustls::RootCertStore::empty();
        let (valid, invalid) = store.add_parsable_certificates(certs);
        assert_eq!((valid, invalid), (5, 0));
        for cert in AMAZON_ROOTS.split("-----END CERTIFICATE-----").take(5) {
            let der = CertificateDer::from_pem_slice(
                format!("{cert}-----END CERTIFICATE-----").trim().as_bytes(),
            )
            .unwrap();
            let (_, parsed) = x509_parser::parse_x509_certificate(&der).unwrap();
            assert!(parsed.is_ca(), "{}", parsed.subject());
            assert!(
                parsed.subject().to_string().contains("Amazon")
                    || parsed.subject().to_string().contains("Starfield Services"),
                "{}",
                parsed.subject()
            );
        }
    }
}
