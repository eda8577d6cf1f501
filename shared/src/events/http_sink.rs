//! The event stream on Knative: events go to `$K_SINK` (the URL a SinkBinding injects,
//! usually a Knative Broker's) as binary-mode CloudEvents over HTTP, as Drogue Cloud 0.3.0
//! sent them: one `POST` per event, the attributes and extensions as `ce-` headers, the
//! data as the body and `datacontenttype` as `Content-Type`.
//!
//! A publish succeeds only on a 2xx answer; any other answer, a redirect, a connection
//! error or no answer within the timeout (10 s by default) is [`SinkError::Unavailable`].
//! `K_CE_OVERRIDES` (Knative's `{"extensions": {"name": "value"}}`) adds or replaces
//! extensions of every event; `K_CA_CERTS` (PEM) adds root certificates for an HTTPS sink.
//!
//! The headers are written here, following the CloudEvents HTTP protocol binding 1.0.2:
//! header values are percent-encoded (space, `"`, `%` and everything outside printable
//! ASCII, as UTF-8 bytes), so device names and channels of any characters pass.

use super::{EventSink, SinkError, StructuredEvent};
use async_trait::async_trait;
use chrono::SecondsFormat;
use cloudevents::event::{AttributeValue, ExtensionValue};
use cloudevents::{AttributesReader, Data, Event};
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use std::collections::BTreeMap;
use std::time::Duration;

/// How long a publish may take, connecting included, by default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// The variable holding the sink's URL (Knative's SinkBinding sets it).
pub const K_SINK: &str = "K_SINK";
/// The variable holding extensions to add to every event (Knative's SinkBinding).
pub const K_CE_OVERRIDES: &str = "K_CE_OVERRIDES";
/// The variable holding root certificates (PEM) for an HTTPS sink (Knative's SinkBinding).
pub const K_CA_CERTS: &str = "K_CA_CERTS";

/// Why an HTTP sink cannot be set up from its settings.
#[derive(Debug, thiserror::Error)]
pub enum HttpSinkConfigError {
    #[error("{K_SINK} must be an http or https URL, got {0:?}")]
    Url(String),
    #[error(
        "{K_CE_OVERRIDES} must be JSON of the form {{\"extensions\": {{\"name\": \"value\"}}}}: {0}"
    )]
    Overrides(String),
    #[error("{K_CA_CERTS} must hold PEM certificates: {0}")]
    Certificates(String),
    #[error("the HTTP client for {K_SINK} cannot be built: {0}")]
    Client(String),
}

/// What a publish to the sink failed with.
#[derive(Debug, thiserror::Error)]
enum PublishError {
    #[error("the sink {url} answered {status}")]
    Status {
        url: String,
        status: reqwest::StatusCode,
    },
    #[error("the sink {url} could not be reached: {source}")]
    Request {
        url: String,
        #[source]
        source: reqwest::Error,
    },
}

/// The settings of an HTTP sink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpSinkConfig {
    /// Where events are posted.
    pub url: reqwest::Url,
    /// Extensions added to (or replaced in) every event.
    pub overrides: BTreeMap<String, String>,
    /// Extra root certificates (PEM) for an HTTPS sink.
    pub ca_certs: Option<String>,
    /// The bound of one publish.
    pub timeout: Duration,
}

impl HttpSinkConfig {
    /// A sink at `url` without overrides, with the default timeout.
    pub fn new(url: &str) -> Result<Self, HttpSinkConfigError> {
        let parsed =
            reqwest::Url::parse(url).map_err(|_| HttpSinkConfigError::Url(url.to_owned()))?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
            return Err(HttpSinkConfigError::Url(url.to_owned()));
        }
        Ok(Self {
            url: parsed,
            overrides: BTreeMap::new(),
            ca_certs: None,
            timeout: DEFAULT_TIMEOUT,
        })
    }

    /// The settings from the values of `K_SINK`, `K_CE_OVERRIDES` and `K_CA_CERTS` (see
    /// [`super::destination::DestinationArgs`]).
    pub fn from_settings(
        url: &str,
        overrides: Option<&str>,
        ca_certs: Option<&str>,
    ) -> Result<Self, HttpSinkConfigError> {
        let mut config = Self::new(url.trim())?;
        if let Some(overrides) = overrides {
            config.overrides = parse_overrides(overrides)?;
        }
        config.ca_certs = ca_certs.map(str::to_owned);
        Ok(config)
    }
}

/// `K_CE_OVERRIDES`: `{"extensions": {"name": value}}`, the values strings, numbers or
/// booleans; the names as the CloudEvents spec wants them (lowercase ASCII letters and
/// digits).
pub fn parse_overrides(json: &str) -> Result<BTreeMap<String, String>, HttpSinkConfigError> {
    let invalid = |message: String| HttpSinkConfigError::Overrides(message);
    let value: serde_json::Value =
        serde_json::from_str(json).map_err(|e| invalid(e.to_string()))?;
    let Some(object) = value.as_object() else {
        return Err(invalid("not a JSON object".into()));
    };
    let Some(extensions) = object.get("extensions") else {
        return Ok(BTreeMap::new());
    };
    let Some(extensions) = extensions.as_object() else {
        return Err(invalid("\"extensions\" is not an object".into()));
    };
    let mut overrides = BTreeMap::new();
    for (name, value) in extensions {
        let valid_name = !name.is_empty()
            && name.len() <= 20
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        if !valid_name {
            return Err(invalid(format!(
                "the extension name {name:?} is not 1 to 20 lowercase letters and digits"
            )));
        }
        let value = match value {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Number(n) => n.to_string(),
            serde_json::Value::Bool(b) => b.to_string(),
            other => {
                return Err(invalid(format!(
                    "the extension {name:?} is {other}, not a string, number or boolean"
                )));
            }
        };
        overrides.insert(name.clone(), value);
    }
    Ok(overrides)
}

/// Posts events to an HTTP sink in binary mode.
#[derive(Clone, Debug)]
pub struct HttpSink {
    http: reqwest::Client,
    config: HttpSinkConfig,
}

impl HttpSink {
    pub fn new(config: HttpSinkConfig) -> Result<Self, HttpSinkConfigError> {
        let mut builder = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout)
            // a redirect is no acceptance: a POST must not turn into a GET elsewhere
            .redirect(reqwest::redirect::Policy::none());
        if let Some(pem) = &config.ca_certs {
            let certs = reqwest::Certificate::from_pem_bundle(pem.as_bytes())
                .map_err(|e| HttpSinkConfigError::Certificates(e.to_string()))?;
            if certs.is_empty() {
                return Err(HttpSinkConfigError::Certificates(
                    "no certificate found".into(),
                ));
            }
            builder = builder.tls_certs_merge(certs);
        }
        let http = builder
            .build()
            .map_err(|e| HttpSinkConfigError::Client(e.to_string()))?;
        Ok(Self { http, config })
    }

    /// Where events go.
    pub fn url(&self) -> &reqwest::Url {
        &self.config.url
    }

    /// The request of `event`: its headers and body.
    pub fn binary_message(&self, event: &Event) -> (HeaderMap, Vec<u8>) {
        binary_message(event, &self.config.overrides)
    }
}

/// `value` as a CloudEvents HTTP header value: UTF-8, with space, `"`, `%` and every byte
/// outside printable ASCII percent-encoded.
pub fn header_value(value: &str) -> HeaderValue {
    let mut encoded = String::with_capacity(value.len());
    for byte in value.bytes() {
        if (0x21..=0x7e).contains(&byte) && byte != b'"' && byte != b'%' {
            encoded.push(byte as char);
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    HeaderValue::from_str(&encoded).expect("printable ASCII is a valid header value")
}

/// The headers and body of `event` in binary mode, with `overrides` as extensions.
pub fn binary_message(event: &Event, overrides: &BTreeMap<String, String>) -> (HeaderMap, Vec<u8>) {
    let mut headers = HeaderMap::new();
    let mut put = |name: &str, value: String| {
        // names are CloudEvents attribute names (lowercase letters and digits)
        if let Ok(name) = HeaderName::from_bytes(format!("ce-{name}").as_bytes()) {
            headers.insert(name, header_value(&value));
        }
    };
    for (name, value) in event.iter_attributes() {
        let value = match value {
            // the content type is the request's Content-Type
            _ if name == "datacontenttype" => continue,
            AttributeValue::Time(time) => time.to_rfc3339_opts(SecondsFormat::AutoSi, true),
            other => other.to_string(),
        };
        put(name, value);
    }
    for (name, value) in event.iter_extensions() {
        if overrides.contains_key(name) {
            continue;
        }
        let value = match value {
            ExtensionValue::String(s) => s.clone(),
            other => other.to_string(),
        };
        put(name, value);
    }
    for (name, value) in overrides {
        put(name, value.clone());
    }
    let body = match event.data() {
        Some(Data::Json(json)) => serde_json::to_vec(json).expect("JSON serializes"),
        Some(Data::Binary(bytes)) => bytes.clone(),
        Some(Data::String(s)) => s.clone().into_bytes(),
        None => Vec::new(),
    };
    if let Some(content_type) = event.datacontenttype() {
        match HeaderValue::from_str(content_type) {
            Ok(value) => {
                headers.insert(CONTENT_TYPE, value);
            }
            Err(_) => {
                // a content type an HTTP header cannot carry (control characters)
                tracing::warn!(
                    id = event.id(),
                    content_type,
                    "the event's content type is no valid HTTP header value; sent as application/octet-stream"
                );
                headers.insert(
                    CONTENT_TYPE,
                    HeaderValue::from_static("application/octet-stream"),
                );
            }
        }
    }
    (headers, body)
}

#[async_trait]
impl EventSink for HttpSink {
    /// Binary mode needs the attributes apart: the event is read back from its JSON.
    async fn publish_structured(&self, event: StructuredEvent) -> Result<(), SinkError> {
        let event = event.to_event().map_err(SinkError::unavailable)?;
        self.publish(&event).await
    }

    async fn publish(&self, event: &Event) -> Result<(), SinkError> {
        let (headers, body) = self.binary_message(event);
        let url = self.config.url.to_string();
        let answer = self
            .http
            .post(self.config.url.clone())
            .headers(headers)
            .body(body)
            .send()
            .await
            .map_err(|source| {
                SinkError::unavailable(PublishError::Request {
                    url: url.clone(),
                    source,
                })
            })?;
        let status = answer.status();
        if !status.is_success() {
            return Err(SinkError::unavailable(PublishError::Status { url, status }));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cloudevents::{EventBuilder, EventBuilderV10};

    #[test]
    fn header_values_are_percent_encoded_as_the_binding_says() {
        assert_eq!(header_value("drogue://app/dev1"), "drogue://app/dev1");
        assert_eq!(header_value("a b\"c%d"), "a%20b%22c%25d");
        assert_eq!(header_value("zählerß"), "z%C3%A4hler%C3%9F");
        assert_eq!(header_value("line\nbreak"), "line%0Abreak");
    }

    #[test]
    fn overrides_take_knatives_form_and_refuse_what_cannot_be_an_extension() {
        let parsed =
            parse_overrides(r#"{"extensions": {"cluster": "eu-1", "tier": 2, "on": true}}"#)
                .unwrap();
        assert_eq!(parsed["cluster"], "eu-1");
        assert_eq!(parsed["tier"], "2");
        assert_eq!(parsed["on"], "true");
        assert!(parse_overrides("{}").unwrap().is_empty());
        for bad in [
            "nope",
            "[]",
            r#"{"extensions": []}"#,
            r#"{"extensions": {"Bad-Name": "x"}}"#,
            r#"{"extensions": {"nested": {"a": 1}}}"#,
        ] {
            let error = parse_overrides(bad).unwrap_err();
            assert!(error.to_string().contains(K_CE_OVERRIDES), "{bad}: {error}");
        }
    }

    #[test]
    fn only_http_urls_are_sinks() {
        assert!(HttpSinkConfig::new("http://broker-ingress.knative-eventing.svc/ns/b").is_ok());
        assert!(HttpSinkConfig::new("https://sink.example.com").is_ok());
        for bad in ["", "not a url", "ftp://x", "file:///tmp/x", "http://"] {
            assert!(HttpSinkConfig::new(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_message_carries_attributes_extensions_and_overrides() {
        let event = EventBuilderV10::new()
            .id("e-1")
            .ty("io.drogue.event.v1")
            .source("drogue://app/d%C3%BC")
            .subject("telemetry")
            .time(
                "2026-11-24T10:00:00Z"
                    .parse::<chrono::DateTime<chrono::Utc>>()
                    .unwrap(),
            )
            .extension("device", "dü")
            .extension("status", 200i64)
            .extension("instance", "drogue")
            .data("text/plain", b"hello".to_vec())
            .build()
            .unwrap();
        let overrides = BTreeMap::from([("instance".to_owned(), "eu".to_owned())]);
        let (headers, body) = binary_message(&event, &overrides);
        assert_eq!(headers["ce-specversion"], "1.0");
        assert_eq!(headers["ce-id"], "e-1");
        assert_eq!(headers["ce-time"], "2026-11-24T10:00:00Z");
        assert_eq!(headers["ce-device"], "d%C3%BC");
        assert_eq!(headers["ce-status"], "200");
        assert_eq!(headers["ce-instance"], "eu");
        assert_eq!(headers["content-type"], "text/plain");
        assert!(headers.get("ce-datacontenttype").is_none());
        assert_eq!(body, b"hello");
    }

    #[test]
    fn extra_root_certificates_are_taken_or_refused() {
        let cert = rcgen::generate_simple_self_signed(vec!["sink.example.com".into()]).unwrap();
        let mut config = HttpSinkConfig::new("https://sink.example.com").unwrap();
        config.ca_certs = Some(cert.cert.pem());
        assert!(HttpSink::new(config.clone()).is_ok());
        config.ca_certs = Some("no PEM here".into());
        let error = HttpSink::new(config).unwrap_err();
        assert!(error.to_string().contains(K_CA_CERTS), "{error}");
    }
}
