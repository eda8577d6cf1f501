//! A DTLS 1.2 server transport for the CoAP endpoint (`coaps`, UDP port 5684 by
//! convention).
//!
//! [`DtlsServer`] owns one [`tokio::net::UdpSocket`], demultiplexes datagrams by peer
//! address into DTLS sessions, runs each handshake in a task of its own and yields
//! established [`DtlsSession`]s: the peer address, the [`PeerIdentity`] the handshake
//! proved, and `recv()`/`send()` of plaintext datagrams (one CoAP message each).
//!
//! Authentication:
//! - **PSK** (RFC 4279): the identity is Drogue Cloud's `device@application`
//!   ([`PskIdentity`]); the key comes from an async [`PskLookup`].
//! - **X.509 client certificates**: in certificate handshakes the server asks for a client
//!   certificate and accepts any chain; the session carries it (DER, end entity first) for
//!   the caller to verify against the application's trust anchors. A client may also send
//!   none ([`PeerIdentity::Anonymous`]).
//!
//! # Library: OpenSSL
//! The DTLS stack is OpenSSL (libssl 3, through the maintained `openssl` 0.10 bindings),
//! as Drogue Cloud 0.11's CoAP endpoint used, and the stack libcoap's `coap-client-openssl`
//! itself runs on: PSK, certificates, cookie exchange (HelloVerifyRequest),
//! retransmission timers and the CCM_8 suites of RFC 7252 are all OpenSSL's well-trodden
//! code. `webrtc-dtls` (pure Rust) was not chosen: it is built for WebRTC (certificate
//! fingerprints, SRTP), and its PSK and client-certificate paths see little use against
//! CoAP clients. Drogue 0.11's glue (`tokio-dtls-stream-sink`) is unmaintained, so the
//! small glue is here: each session's OpenSSL object reads and writes datagrams through an
//! in-memory queue, driven by the session's task.
//!
//! # Bounds
//! - A ClientHello from an unknown peer goes through OpenSSL's stateless `DTLSv1_listen`:
//!   without a valid cookie (HMAC of the peer address under a per-process secret) it is
//!   answered with a HelloVerifyRequest and nothing is kept, so spoofed or repeated
//!   ClientHellos cost no session. Only a ClientHello that echoes its cookie opens a
//!   session; other datagrams from unknown peers are dropped.
//! - At most [`DtlsConfig::max_sessions`] sessions (handshaking or established); a
//!   handshake has [`DtlsConfig::handshake_timeout`], an established session is closed
//!   after [`DtlsConfig::idle_timeout`] without traffic. Each session queues at most
//!   [`DtlsConfig::queue`] datagrams per direction; more inbound ones are dropped (UDP
//!   semantics: CoAP retransmits), so one flooding peer only fills its own queue.
//!
//! # Async PSK lookup
//! OpenSSL asks for the key in a synchronous callback. Rather than block a runtime thread
//! in it (`block_in_place`), the session task peeks at each handshake datagram before
//! OpenSSL sees it: the client's ClientKeyExchange carries the PSK identity in clear
//! (RFC 4279 §2). The task awaits [`PskLookup::psk`] for that identity (bounded by
//! [`DtlsConfig::psk_lookup_timeout`]), then feeds the datagram to OpenSSL, whose callback
//! only reads the answer. Lookups of different peers run concurrently; nothing blocks.

mod identity;
mod record;
mod server;

pub use identity::{PeerIdentity, PskIdentity};
pub use server::{
    DtlsConfig, DtlsError, DtlsSender, DtlsServer, DtlsSession, PskLookup, ServerCertificate,
    SessionClosed,
};
