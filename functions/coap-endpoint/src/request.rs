//! What a CoAP request asks for: the path (`/v1/{channel}[/{suffix}]`), the URI query
//! (`application`, `device`, `as`, `data_schema`, `ct`), the credentials (option 4209)
//! and the content format. Pure functions over a parsed [`Packet`].

use crate::error::CoapError;
use crate::{AUTH_OPTION, MAX_COMMAND_TIMEOUT_SECONDS};
use coap_lite::{CoapOption, MessageClass, Packet, RequestType};
use drogue_shared::device_auth::presented::Names;

/// A publish, read from a request.
#[derive(Debug, Default, PartialEq)]
pub struct PublishRequest {
    pub channel: String,
    pub suffix: Option<String>,
    pub names: NamesEq,
    pub data_schema: Option<String>,
    /// Seconds to wait for a command (`ct`, `commandTimeout`), capped at
    /// [`MAX_COMMAND_TIMEOUT_SECONDS`]; 0 for none.
    pub command_timeout: u64,
    /// The value of option 4209 (`Basic base64(user:password)`), if any.
    pub authorization: Option<String>,
    /// The MIME type of the content format (option 12), if any.
    pub content_type: Option<&'static str>,
}

/// [`Names`] with equality, for tests.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct NamesEq {
    pub application: Option<String>,
    pub device: Option<String>,
    pub r#as: Option<String>,
}

impl From<NamesEq> for Names {
    fn from(n: NamesEq) -> Self {
        Names {
            application: n.application,
            device: n.device,
            r#as: n.r#as,
        }
    }
}

/// Reads a request: 4.04 for a path other than `/v1/{channel}[/...]`, 4.05 for a
/// method other than POST, 4.00 for a query or option that cannot be read, 4.03 for a
/// credential option that is not text.
pub fn parse(packet: &Packet) -> Result<PublishRequest, CoapError> {
    let path: Vec<String> = options_text(packet, CoapOption::UriPath)
        .map_err(|_| CoapError::NotFound("The path is not UTF-8".into()))?;
    let (channel, suffix) = match path.as_slice() {
        [v1, channel, rest @ ..] if v1 == "v1" && !channel.is_empty() => {
            (channel.clone(), (!rest.is_empty()).then(|| rest.join("/")))
        }
        _ => {
            return Err(CoapError::NotFound(format!(
                "No such resource: /{}",
                path.join("/")
            )));
        }
    };
    if packet.header.code != MessageClass::Request(RequestType::Post) {
        return Err(CoapError::MethodNotAllowed);
    }
    let mut request = PublishRequest {
        channel,
        suffix,
        ..Default::default()
    };
    let query = options_text(packet, CoapOption::UriQuery)
        .map_err(|_| CoapError::InvalidRequest("The URI query is not UTF-8".into()))?;
    for item in query {
        let (key, value) = item.split_once('=').unwrap_or((item.as_str(), ""));
        match key {
            "application" => request.names.application = Some(value.to_owned()),
            "device" => request.names.device = Some(value.to_owned()),
            "as" => request.names.r#as = Some(value.to_owned()),
            "data_schema" => request.data_schema = Some(value.to_owned()),
            "ct" | "commandTimeout" => {
                let seconds: u64 = value.parse().map_err(|_| {
                    CoapError::InvalidRequest(format!("{key} must be a number of seconds"))
                })?;
                request.command_timeout = seconds.min(MAX_COMMAND_TIMEOUT_SECONDS);
            }
            // other parameters are ignored, as by the HTTP endpoint
            _ => {}
        }
    }
    request.authorization = match packet.get_first_option(AUTH_OPTION) {
        Some(value) => {
            Some(String::from_utf8(value.clone()).map_err(|_| CoapError::AuthenticationFailed)?)
        }
        None => None,
    };
    request.content_type = match packet.get_first_option(CoapOption::ContentFormat) {
        Some(value) => content_type(uint(value).ok_or_else(|| {
            CoapError::InvalidRequest("The content format is not a number".into())
        })?),
        None => None,
    };
    Ok(request)
}

/// The values of a repeatable text option.
fn options_text(packet: &Packet, option: CoapOption) -> Result<Vec<String>, ()> {
    packet
        .get_option(option)
        .map(|values| {
            values
                .iter()
                .map(|v| String::from_utf8(v.clone()).map_err(|_| ()))
                .collect()
        })
        .unwrap_or(Ok(Vec::new()))
}

/// An unsigned option value (network byte order, at most 4 bytes).
pub fn uint(value: &[u8]) -> Option<u32> {
    (value.len() <= 4).then(|| value.iter().fold(0u32, |n, b| (n << 8) | u32::from(*b)))
}

/// The MIME type of a CoAP content format (the registered formats devices send; others
/// are published without a content type, as an HTTP request without one).
pub fn content_type(format: u32) -> Option<&'static str> {
    Some(match format {
        0 => "text/plain; charset=utf-8",
        40 => "application/link-format",
        41 => "application/xml",
        42 => "application/octet-stream",
        47 => "application/exi",
        50 => "application/json",
        60 => "application/cbor",
        110 => "application/senml+json",
        112 => "application/senml+cbor",
        _ => return None,
    })
}

/// The CoAP content format of a MIME type (for commands), if it has one.
pub fn content_format(content_type: &str) -> Option<u32> {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    Some(match essence.as_str() {
        "text/plain" => 0,
        "application/link-format" => 40,
        "application/xml" => 41,
        "application/octet-stream" => 42,
        "application/exi" => 47,
        "application/json" => 50,
        "application/cbor" => 60,
        "application/senml+json" => 110,
        "application/senml+cbor" => 112,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use coap_lite::{CoapRequest, RequestType as Method};
    use std::net::SocketAddr;

    fn request(method: Method, path: &str, query: &[&str]) -> Packet {
        let mut r: CoapRequest<SocketAddr> = CoapRequest::new();
        r.set_method(method);
        r.set_path(path);
        for q in query {
            r.message
                .add_option(CoapOption::UriQuery, q.as_bytes().to_vec());
        }
        r.message
    }

    #[test]
    fn a_publish_is_read() {
        let mut p = request(
            Method::Post,
            "/v1/telemetry/a/b",
            &[
                "application=app",
                "device=dev",
                "as=other",
                "data_schema=urn:x",
                "ct=5",
                "other=1",
            ],
        );
        p.add_option(AUTH_OPTION, b"Basic abc".to_vec());
        p.add_option(CoapOption::ContentFormat, vec![50]);
        let r = parse(&p).unwrap();
        assert_eq!(r.channel, "telemetry");
        assert_eq!(r.suffix.as_deref(), Some("a/b"));
        assert_eq!(r.names.application.as_deref(), Some("app"));
        assert_eq!(r.names.device.as_deref(), Some("dev"));
        assert_eq!(r.names.r#as.as_deref(), Some("other"));
        assert_eq!(r.data_schema.as_deref(), Some("urn:x"));
        assert_eq!(r.command_timeout, 5);
        assert_eq!(r.authorization.as_deref(), Some("Basic abc"));
        assert_eq!(r.content_type, Some("application/json"));

        let r = parse(&request(Method::Post, "/v1/state", &[])).unwrap();
        assert_eq!((r.channel.as_str(), r.suffix), ("state", None));
        assert_eq!(r.command_timeout, 0);
        assert_eq!(r.authorization, None);
    }

    #[test]
    fn the_command_wait_is_capped() {
        let r = parse(&request(Method::Post, "/v1/t", &["ct=3600"])).unwrap();
        assert_eq!(r.command_timeout, MAX_COMMAND_TIMEOUT_SECONDS);
        let r = parse(&request(Method::Post, "/v1/t", &["commandTimeout=2"])).unwrap();
        assert_eq!(r.command_timeout, 2);
    }

    #[test]
    fn bad_requests_have_their_codes() {
        for (method, path, query, code) in [
            (Method::Post, "/v2/t", Vec::<&str>::new(), "4.04"),
            (Method::Post, "/v1", vec![], "4.04"),
            (Method::Post, "/", vec![], "4.04"),
            (Method::Get, "/v1/t", vec![], "4.05"),
            (Method::Put, "/v1/t", vec![], "4.05"),
            (Method::Get, "/other", vec![], "4.04"),
            (Method::Post, "/v1/t", vec!["ct=soon"], "4.00"),
            (Method::Post, "/v1/t", vec!["ct=-1"], "4.00"),
        ] {
            let error = parse(&request(method, path, &query)).unwrap_err();
            assert_eq!(error.code_text(), code, "{path} {query:?}");
        }
        let mut p = request(Method::Post, "/v1/t", &[]);
        p.add_option(AUTH_OPTION, vec![0xff, 0xfe]);
        assert_eq!(parse(&p).unwrap_err().code_text(), "4.03");
        let mut p = request(Method::Post, "/v1/t", &[]);
        p.add_option(CoapOption::ContentFormat, vec![1, 2, 3, 4, 5]);
        assert_eq!(parse(&p).unwrap_err().code_text(), "4.00");
    }

    #[test]
    fn content_formats_map_both_ways() {
        assert_eq!(content_type(50), Some("application/json"));
        assert_eq!(content_type(0), Some("text/plain; charset=utf-8"));
        assert_eq!(content_type(9999), None);
        assert_eq!(content_format("application/json; charset=utf-8"), Some(50));
        assert_eq!(content_format("Text/Plain"), Some(0));
        assert_eq!(content_format("image/png"), None);
        assert_eq!(uint(&[]), Some(0));
        assert_eq!(uint(&[1, 0]), Some(256));
        assert_eq!(uint(&[1, 2, 3, 4, 5]), None);
    }
}
