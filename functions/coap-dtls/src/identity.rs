//! Who is at the other end of a session.

use std::fmt;

/// A PSK identity in Drogue Cloud's CoAP/DTLS convention, `device@application`: split at
/// the first `@`, so a device name has none and an application name may (as Drogue
/// Cloud 0.11's `endpoint-common::psk::Identity` did).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct PskIdentity {
    device: String,
    application: String,
}

impl PskIdentity {
    /// Parses the identity a client sent; `None` unless it is UTF-8 `device@application`
    /// with both parts non-empty.
    pub fn parse(identity: &[u8]) -> Option<Self> {
        let identity = std::str::from_utf8(identity).ok()?;
        let (device, application) = identity.split_once('@')?;
        if device.is_empty() || application.is_empty() {
            return None;
        }
        Some(Self {
            device: device.to_string(),
            application: application.to_string(),
        })
    }

    pub fn device(&self) -> &str {
        &self.device
    }

    pub fn application(&self) -> &str {
        &self.application
    }
}

impl fmt::Display for PskIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.device, self.application)
    }
}

impl fmt::Debug for PskIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PskIdentity({self})")
    }
}

/// What the DTLS handshake established about the peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerIdentity {
    /// The peer proved it holds the key that [`crate::PskLookup`] returned for this
    /// identity: the device is authenticated.
    Psk(PskIdentity),
    /// The peer sent this certificate chain (DER, end entity first) and proved it holds
    /// the end entity's key. The chain is NOT verified: the caller checks it against the
    /// application's trust anchors (`drogue_shared::device_auth`), as for the HTTP
    /// endpoint's client certificates.
    Certificate(Vec<Vec<u8>>),
    /// A certificate handshake in which the client sent no certificate: the CoAP layer
    /// may still authenticate the device per request (e.g. credentials in an option).
    Anonymous,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_device_at_application() {
        let id = PskIdentity::parse(b"dev-1@my@app").unwrap();
        assert_eq!(id.device(), "dev-1");
        assert_eq!(id.application(), "my@app");
        assert_eq!(id.to_string(), "dev-1@my@app");
        assert_eq!(PskIdentity::parse(b"dev-1"), None);
        assert_eq!(PskIdentity::parse(b"@app"), None);
        assert_eq!(PskIdentity::parse(b"dev@"), None);
        assert_eq!(PskIdentity::parse(b"d\xffv@app"), None);
    }
}
