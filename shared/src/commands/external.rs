//! Commands for devices that another system reaches, as Drogue Cloud 0.11 sends them: a
//! device (or the first enabled gateway that serves it) whose `spec.commands` holds an
//! external endpoint gets its commands pushed there over HTTP instead of MQTT or the inbox:
//!
//! ```json
//! {"commands": [{"external": {"type": "ttnv3", "url": "https://eu1.cloud.thethings.network/api/v3/as/applications/my-app/devices",
//!   "headers": {"Authorization": "Bearer NNSXS..."}}}]}
//! ```
//!
//! | `type` | request |
//! |---|---|
//! | `ttnv3` | `POST {url}/{device}/down/replace` with `{"downlinks": [{"f_port": p, "frm_payload": base64}]}`: a command `port:<p>` sends its payload raw on port `p`, any other sends `{"command": name, "command_payload": base64(payload)}` on port 1 |
//! | `ttn`, `ttnv2` | `POST {url}` with `{"dev_id": device, "port": p, "confirmed": false, "payload_raw": base64}` (the same port rule) |
//! | none | `{method or POST} {url}` with `{"application", "device", "command", "payload": base64}` |
//!
//! with the endpoint's `headers`. Tenants choose these URLs, so the cloud never becomes
//! their way into its own network: only `http` and `https` URLs, no redirects, a 5 s
//! timeout, and addresses that are loopback, private, link-local (the cloud's metadata
//! service), unspecified, multicast or otherwise not global are refused (IP literals and
//! every address a name resolves to; the connection goes to the checked addresses only),
//! unless the operator allows them ([`ExternalSender::allowing_private_addresses`], for
//! a test bed).

use super::Command;
use crate::model::{Device, device_spec};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

/// How long an external endpoint may take to answer.
pub const TIMEOUT: Duration = Duration::from_secs(5);

pub use crate::model::device_spec::ExternalEndpoint;

/// The external endpoint a device's spec names (its first `spec.commands` entry), if
/// any; `Err` when `spec.commands` is there but not such a list.
pub fn endpoint_of(device: &Device) -> Result<Option<ExternalEndpoint>, String> {
    device_spec::command_endpoints(&device.spec)
        .map(|endpoints| endpoints.into_iter().next())
        .map_err(|e| e.0)
}

/// Why an external endpoint did not take a command.
#[derive(Debug, thiserror::Error)]
pub enum ExternalError {
    #[error("the external command endpoint is not usable: {0}")]
    Invalid(String),
    #[error("the external command endpoint's address is not allowed: {0}")]
    Forbidden(String),
    #[error("the external command endpoint could not be reached: {0}")]
    Unreachable(String),
    #[error("the external command endpoint answered {0}")]
    Refused(u16),
}

/// Sends commands to external endpoints; cheap to clone.
#[derive(Clone)]
pub struct ExternalSender {
    client: reqwest::Client,
    allow_private: bool,
}

impl std::fmt::Debug for ExternalSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExternalSender")
            .field("allow_private", &self.allow_private)
            .finish_non_exhaustive()
    }
}

impl Default for ExternalSender {
    fn default() -> Self {
        Self::new(false)
    }
}

impl ExternalSender {
    fn new(allow_private: bool) -> Self {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(TIMEOUT)
            .dns_resolver(Arc::new(GlobalOnly { allow_private }))
            .build()
            .expect("an HTTP client with rustls");
        Self {
            client,
            allow_private,
        }
    }

    /// A sender that also reaches loopback and private addresses (a test bed, a local
    /// stand-in for TTN); never for a cloud where tenants are strangers.
    pub fn allowing_private_addresses() -> Self {
        Self::new(true)
    }

    /// Pushes `command` to `endpoint`.
    pub async fn send(
        &self,
        endpoint: &ExternalEndpoint,
        command: &Command,
    ) -> Result<(), ExternalError> {
        let (method, url, body) = request(endpoint, command)?;
        if let Some(host) = url.host_str() {
            let literal = host.trim_start_matches('[').trim_end_matches(']');
            if let Ok(ip) = literal.parse::<IpAddr>()
                && !self.allow_private
                && !is_global(ip)
            {
                return Err(ExternalError::Forbidden(ip.to_string()));
            }
        }
        let mut request = self.client.request(method, url).json(&body);
        for (name, value) in &endpoint.headers {
            request = request.header(name.as_str(), value.as_str());
        }
        let response = request.send().await.map_err(|e| {
            if is_forbidden(&e) {
                ExternalError::Forbidden(e.to_string())
            } else {
                ExternalError::Unreachable(e.to_string())
            }
        })?;
        match response.status() {
            status if status.is_success() => Ok(()),
            status => Err(ExternalError::Refused(status.as_u16())),
        }
    }
}

/// The method, URL and JSON body of the request for a command, by the endpoint's type.
fn request(
    endpoint: &ExternalEndpoint,
    command: &Command,
) -> Result<(reqwest::Method, reqwest::Url, Value), ExternalError> {
    let mut url = reqwest::Url::parse(&endpoint.url)
        .map_err(|e| ExternalError::Invalid(format!("the URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(ExternalError::Invalid(
            "the URL must be http or https".into(),
        ));
    }
    let method = match endpoint.method.as_str() {
        "" => reqwest::Method::POST,
        other => reqwest::Method::from_bytes(other.as_bytes())
            .map_err(|_| ExternalError::Invalid(format!("the method {other}")))?,
    };
    let payload = STANDARD.encode(&command.payload);
    // `port:<p>` sends the payload raw on port p; any other command as JSON on port 1
    let downlink = || -> Result<(u8, String), ExternalError> {
        match command.name.strip_prefix("port:") {
            Some(port) => port
                .parse::<u8>()
                .map(|p| (p, payload.clone()))
                .map_err(|_| ExternalError::Invalid(format!("the port of {}", command.name))),
            None => Ok((
                1,
                STANDARD.encode(
                    json!({"command": command.name, "command_payload": payload}).to_string(),
                ),
            )),
        }
    };
    let body = match endpoint.r#type.as_deref() {
        None => json!({
            "application": command.application,
            "device": command.device,
            "command": command.name,
            "payload": payload,
        }),
        Some("ttnv3") => {
            url.path_segments_mut()
                .map_err(|_| ExternalError::Invalid("the URL cannot take a path".into()))?
                .pop_if_empty()
                .extend([command.device.as_str(), "down", "replace"]);
            let (port, frame) = downlink()?;
            json!({"downlinks": [{"f_port": port, "frm_payload": frame}]})
        }
        Some("ttn" | "ttnv2") => {
            let (port, frame) = downlink()?;
            json!({"dev_id": command.device, "port": port, "confirmed": false, "payload_raw": frame})
        }
        Some(other) => return Err(ExternalError::Invalid(format!("the type {other}"))),
    };
    Ok((method, url, body))
}

/// Whether an address is one the public internet routes (not loopback, private,
/// link-local, shared, documentation, benchmarking, unspecified, multicast, ...).
pub fn is_global(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || a == 0
                || (a == 100 && (64..128).contains(&b))
                || (a == 192 && b == 0)
                || (a == 198 && (18..20).contains(&b))
                || a >= 240)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_global(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
                || first == 0x2001 && v6.segments()[1] == 0x0db8
                || first == 0x0064 && v6.segments()[1] == 0xff9b)
        }
    }
}

/// The resolver of the external client: a name's global addresses only, so that the
/// connection goes to an address that was checked (no second lookup to rebind).
struct GlobalOnly {
    allow_private: bool,
}

#[derive(Debug, thiserror::Error)]
#[error("{0} resolves to no global address")]
struct NotGlobal(String);

impl reqwest::dns::Resolve for GlobalOnly {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allow_private = self.allow_private;
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|a| allow_private || is_global(a.ip()))
                .collect();
            if found.is_empty() {
                return Err(Box::new(NotGlobal(host)) as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(found.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// Whether a request failed because the resolver refused the name's addresses.
fn is_forbidden(error: &reqwest::Error) -> bool {
    let mut source: Option<&dyn std::error::Error> = Some(error);
    while let Some(e) = source {
        if e.is::<NotGlobal>() {
            return true;
        }
        source = e.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::Json;
    use axum::extract::{Path, State};
    use axum::http::HeaderMap;
    use axum::routing::post;
    use chrono::Utc;
    use std::collections::BTreeMap;
    use tokio::sync::mpsc;

    fn device(spec: Value) -> Device {
        serde_json::from_value(json!({
            "metadata": {"name": "dev1", "application": "app1", "uid": "u1",
                "creationTimestamp": "2026-01-01T00:00:00Z", "generation": 0, "resourceVersion": "r"},
            "spec": spec
        }))
        .unwrap()
    }

    fn command(name: &str, payload: &[u8]) -> Command {
        Command::new(
            "app1",
            &device(json!({})),
            name,
            None,
            payload.to_vec(),
            60,
            Utc::now(),
        )
    }

    #[test]
    fn the_first_external_target_of_the_spec_counts() {
        assert_eq!(endpoint_of(&device(json!({}))), Ok(None));
        let spec = json!({"commands": [{"external": {"type": "ttnv3", "url": "https://ttn.example/api", "headers": {"Authorization": "Bearer k"}}}]});
        let endpoint = endpoint_of(&device(spec)).unwrap().unwrap();
        assert_eq!(endpoint.r#type.as_deref(), Some("ttnv3"));
        assert_eq!(endpoint.headers["Authorization"], "Bearer k");
        assert!(endpoint_of(&device(json!({"commands": {"external": 1}}))).is_err());
    }

    #[test]
    fn requests_follow_the_type() {
        let ttn3 = ExternalEndpoint {
            r#type: Some("ttnv3".into()),
            url: "https://eu1.cloud.thethings.network/api/v3/as/applications/a/devices".into(),
            method: String::new(),
            headers: BTreeMap::new(),
        };
        let (method, url, body) = request(&ttn3, &command("port:7", b"\x01\x02")).unwrap();
        assert_eq!(method, reqwest::Method::POST);
        assert_eq!(
            url.as_str(),
            "https://eu1.cloud.thethings.network/api/v3/as/applications/a/devices/dev1/down/replace"
        );
        assert_eq!(
            body,
            json!({"downlinks": [{"f_port": 7, "frm_payload": "AQI="}]})
        );
        let (_, _, body) = request(&ttn3, &command("led", b"on")).unwrap();
        let frame = STANDARD
            .decode(body["downlinks"][0]["frm_payload"].as_str().unwrap())
            .unwrap();
        assert_eq!(
            serde_json::from_slice::<Value>(&frame).unwrap(),
            json!({"command": "led", "command_payload": "b24="})
        );
        assert!(request(&ttn3, &command("port:300", b"")).is_err());

        let plain = ExternalEndpoint {
            r#type: None,
            url: "http://example.com/hook".into(),
            method: "PUT".into(),
            headers: BTreeMap::new(),
        };
        let (method, url, body) = request(&plain, &command("reboot", b"now")).unwrap();
        assert_eq!(
            (method, url.as_str()),
            (reqwest::Method::PUT, "http://example.com/hook")
        );
        assert_eq!(
            body,
            json!({"application": "app1", "device": "dev1", "command": "reboot", "payload": "bm93"})
        );
        let file = ExternalEndpoint {
            url: "file:///etc/passwd".into(),
            ..plain.clone()
        };
        assert!(matches!(
            request(&file, &command("x", b"")),
            Err(ExternalError::Invalid(_))
        ));
    }

    #[test]
    fn only_global_addresses_are_global() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::",
            "255.255.255.255",
        ] {
            assert!(!is_global(private.parse().unwrap()), "{private}");
        }
        for global in ["8.8.8.8", "52.94.0.1", "2a00:1450:4001::1"] {
            assert!(is_global(global.parse().unwrap()), "{global}");
        }
    }

    #[tokio::test]
    async fn commands_reach_a_ttn_stand_in_and_private_addresses_are_refused() {
        let (seen, mut received) = mpsc::unbounded_channel();
        let app = axum::Router::new()
            .route(
                "/api/v3/as/applications/a/devices/{device}/down/replace",
                post(
                    |State(seen): State<mpsc::UnboundedSender<(String, String, Value)>>,
                     Path(device): Path<String>,
                     headers: HeaderMap,
                     Json(body): Json<Value>| async move {
                        let key = headers["authorization"].to_str().unwrap().to_owned();
                        seen.send((device, key, body)).unwrap();
                        "{}"
                    },
                ),
            )
            .with_state(seen);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let endpoint = ExternalEndpoint {
            r#type: Some("ttnv3".into()),
            url: format!("http://{addr}/api/v3/as/applications/a/devices"),
            method: String::new(),
            headers: BTreeMap::from([("Authorization".into(), "Bearer NNSXS.key".into())]),
        };

        // a cloud's sender refuses the loopback address, by literal and by name
        let err = ExternalSender::default()
            .send(&endpoint, &command("port:2", b"\x05"))
            .await
            .unwrap_err();
        assert!(matches!(err, ExternalError::Forbidden(_)), "{err}");
        let by_name = ExternalEndpoint {
            url: format!(
                "http://localhost:{}/api/v3/as/applications/a/devices",
                addr.port()
            ),
            ..endpoint.clone()
        };
        let err = ExternalSender::default()
            .send(&by_name, &command("port:2", b"\x05"))
            .await
            .unwrap_err();
        assert!(matches!(err, ExternalError::Forbidden(_)), "{err}");
        assert!(received.try_recv().is_err(), "nothing was sent");

        // a test bed's reaches it, with the path, key and body TTN expects
        ExternalSender::allowing_private_addresses()
            .send(&endpoint, &command("port:2", b"\x05"))
            .await
            .unwrap();
        let (device, key, body) = received.recv().await.unwrap();
        assert_eq!(device, "dev1");
        assert_eq!(key, "Bearer NNSXS.key");
        assert_eq!(
            body,
            json!({"downlinks": [{"f_port": 2, "frm_payload": "BQ=="}]})
        );

        // a refusal is an error
        let wrong = ExternalEndpoint {
            url: format!("http://{addr}/nowhere"),
            ..endpoint
        };
        let err = ExternalSender::allowing_private_addresses()
            .send(&wrong, &command("x", b""))
            .await
            .unwrap_err();
        assert!(matches!(err, ExternalError::Refused(404)), "{err}");
    }
}
