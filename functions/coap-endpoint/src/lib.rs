//! The device CoAP endpoint (RFC 7252), compatible with Drogue Cloud 0.11's: `POST
//! coap://host/v1/{channel}[/{suffix}]` with the URI query `application`, `device`,
//! `as`, `data_schema` and `ct`, the credentials in option 4209 (`Basic
//! base64(user:password)`, read as the HTTP endpoint reads its `Authorization` header);
//! 2.04 once the event stream took the event, or 2.05 with the command's name in option
//! 4210 and its payload when a command arrives within `ct` seconds. Errors carry a JSON
//! diagnostic payload. See `docs/coap.md` for the whole behaviour.
//!
//! # The transport seam
//!
//! The message layer ([`CoapCore`]) knows nothing of sockets. A transport hands it each
//! datagram it receives, with
//!
//! - the peer's key ([`PeerKey`], its address: duplicate detection, Block1 uploads and
//!   the limits are per peer),
//! - the datagram's bytes (for DTLS: the decrypted record's payload),
//! - what the transport established about the peer ([`TransportIdentity`]: a client
//!   certificate chain in DER, or a device it authenticated by its pre-shared key), or
//!   `None` for plain UDP,
//!
//! and an [`Outbound`] through which the core sends datagrams back to that peer (for
//! DTLS: encrypts them on the peer's session). [`CoapCore::handle`] never blocks: a
//! publish runs in a task of its own. The plain UDP loop ([`udp::serve`]) is one
//! transport; the DTLS one ([`dtls::serve`], `coaps://`) feeds a core of the same kind
//! (one per transport: peers are keyed by address, which plain UDP does not authenticate).

mod backend;
pub mod dtls;
mod error;
mod exchange;
pub mod request;
pub mod udp;

pub use backend::Backend;
pub use error::CoapError;
pub use exchange::{CoapCore, Limits, Outbound, PeerKey, TransportIdentity};

use clap::Parser;
use coap_lite::CoapOption;
use drogue_shared::config::{Instance, Table};
use drogue_shared::events::destination::Destination;
use drogue_shared::rate_limit::PublishRate;

/// The largest payload accepted (as the HTTP endpoint, and Drogue Cloud).
pub const MAX_PAYLOAD: usize = 64 * 1024;
/// The longest wait for a command after a publish (`ct`), as the HTTP endpoint's.
pub const MAX_COMMAND_TIMEOUT_SECONDS: u64 = 25;

/// Option 4209: the credentials (Drogue IoT RFC 0007).
pub const AUTH_OPTION: CoapOption = CoapOption::Unknown(4209);
/// Option 4210: the name of the command in a response.
pub const HEADER_COMMAND: CoapOption = CoapOption::Unknown(4210);

/// What the function reads from its flags and environment (see `drogue_shared::config`).
#[derive(Debug, Clone, Parser)]
#[command(
    name = "coap-endpoint",
    about = "The device CoAP endpoint of the serverless Drogue Cloud (UDP, and DTLS with a certificate)"
)]
pub struct Config {
    #[command(flatten)]
    pub table: Table,
    /// Where events go: `K_SINK` (HTTP, binary-mode CloudEvents) when set, else the
    /// Kinesis stream `DROGUE_EVENT_STREAM`.
    #[command(flatten)]
    pub events: Destination,
    #[command(flatten)]
    pub instance: Instance,
    #[command(flatten)]
    pub publish_rate: PublishRate,
    /// The UDP address to serve CoAP on.
    #[arg(
        long = "coap-bind",
        env = "DROGUE_COAP_BIND",
        value_name = "DROGUE_COAP_BIND",
        default_value = "[::]:5683"
    )]
    pub bind: std::net::SocketAddr,
    /// The UDP address to serve CoAP over DTLS (`coaps://`) on; only with
    /// `--coaps-certificate` and `--coaps-key`, else DTLS is off.
    #[arg(
        long = "coaps-bind",
        env = "DROGUE_COAPS_BIND",
        value_name = "DROGUE_COAPS_BIND",
        default_value = "[::]:5684"
    )]
    pub coaps_bind: std::net::SocketAddr,
    /// The DTLS server's certificate chain (PEM, end entity first). With it (and the
    /// key) DTLS is on: PSK handshakes with the devices' `psk` credentials, and
    /// certificate handshakes that ask for (but do not require) a client certificate.
    #[arg(
        long = "coaps-certificate",
        env = "DROGUE_COAPS_CERTIFICATE",
        requires = "coaps_key"
    )]
    pub coaps_certificate: Option<std::path::PathBuf>,
    /// The DTLS server's private key (PEM).
    #[arg(
        long = "coaps-key",
        env = "DROGUE_COAPS_KEY",
        requires = "coaps_certificate"
    )]
    pub coaps_key: Option<std::path::PathBuf>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use drogue_shared::config::try_parse_flags;

    #[test]
    fn the_limits_are_the_http_endpoints() {
        assert_eq!(MAX_PAYLOAD, drogue_http_endpoint::MAX_PAYLOAD);
        assert_eq!(
            MAX_COMMAND_TIMEOUT_SECONDS,
            drogue_http_endpoint::MAX_COMMAND_TIMEOUT_SECONDS
        );
    }

    #[test]
    fn a_configuration() {
        let config =
            try_parse_flags::<Config>(&["--table", "drogue", "--event-stream", "events"]).unwrap();
        assert_eq!(config.table.as_str(), "drogue");
        assert_eq!(config.bind.port(), 5683);
        assert_eq!(config.coaps_bind.port(), 5684);
        assert!(config.coaps_certificate.is_none());
        let error = try_parse_flags::<Config>(&[
            "--table",
            "drogue",
            "--event-stream",
            "events",
            "--coaps-certificate",
            "cert.pem",
        ])
        .unwrap_err()
        .to_string();
        assert!(error.contains("coaps-key"), "{error}");
        let config = try_parse_flags::<Config>(&[
            "--table",
            "drogue",
            "--sink",
            "http://broker.local/",
            "--coap-bind",
            "127.0.0.1:15683",
        ])
        .unwrap();
        assert_eq!(config.bind.to_string(), "127.0.0.1:15683");
        let error = try_parse_flags::<Config>(&[
            "--table",
            "drogue",
            "--event-stream",
            "events",
            "--coap-bind",
            "nowhere",
        ])
        .unwrap_err()
        .to_string();
        assert!(error.contains("DROGUE_COAP_BIND"), "{error}");
    }
}
