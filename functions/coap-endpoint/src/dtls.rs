//! The DTLS transport (`coaps://`, RFC 7252 §9 over DTLS 1.2, [`drogue_coap_dtls`]): each
//! established session's datagrams go to the same [`CoapCore`] as plain UDP's, with what
//! the handshake proved about the peer:
//!
//! - a client certificate chain → [`TransportIdentity::Certificates`] (verified by device
//!   authentication against the application's trust anchors, per request);
//! - a PSK identity `device@application` → the device, looked up by [`RegistryPsk`]
//!   (the same lookup that gave the handshake its key) → [`TransportIdentity::PreSharedKey`];
//! - no certificate → no identity (the request carries its credentials in option 4209).
//!
//! Answers go back encrypted on the peer's session ([`SessionOutbound`]).

use crate::exchange::{CoapCore, Outbound, PeerKey, TransportIdentity};
use async_trait::async_trait;
use base64::Engine;
use drogue_coap_dtls::{DtlsSender, DtlsServer, DtlsSession, PeerIdentity, PskIdentity, PskLookup};
use drogue_shared::device_auth::{Authenticated, DeviceAuthentication, DeviceAuthenticator};
use drogue_shared::model::device_spec::Credential;
use std::future::Future;
use std::sync::Arc;

/// Sends into one DTLS session.
pub struct SessionOutbound(pub DtlsSender);

#[async_trait]
impl Outbound for SessionOutbound {
    async fn send(&self, peer: PeerKey, datagram: Vec<u8>) {
        if self.0.send(datagram).await.is_err() {
            tracing::debug!(%peer, "a CoAP datagram cannot be sent: the DTLS session is closed");
        }
    }
}

/// PSK keys from the registry, through device authentication's lookup: the identity's
/// application and device (name or alias) must exist and be usable (not disabled, not
/// being deleted), and the device must hold a `psk` credential whose validity (if given)
/// covers now. Anything else, or a registry that cannot be asked, is no key: the
/// handshake fails.
#[derive(Clone)]
pub struct RegistryPsk {
    pub auth: DeviceAuthenticator,
}

impl RegistryPsk {
    /// The device behind `identity` and its key, or `None`.
    pub async fn device(&self, identity: &PskIdentity) -> Option<(Authenticated, Vec<u8>)> {
        let authenticated = match self
            .auth
            .resolve(identity.application(), identity.device(), None)
            .await
        {
            Ok(DeviceAuthentication::Allow(authenticated)) => *authenticated,
            Ok(DeviceAuthentication::Deny { reason }) => {
                tracing::info!(%identity, reason, "DTLS PSK identity refused");
                return None;
            }
            Err(e) => {
                tracing::warn!(%identity, error = %e, "DTLS PSK lookup failed");
                return None;
            }
        };
        let now = chrono::Utc::now();
        let key = authenticated
            .credentials
            .iter()
            .find_map(|credential| match credential {
                Credential::PreSharedKey(psk) => usable_key(psk, now),
                _ => None,
            });
        if key.is_none() {
            tracing::info!(%identity, "DTLS PSK identity refused: no valid psk credential");
        }
        Some((authenticated, key?))
    }
}

/// The decoded key of a `psk` credential, if it is valid at `now`: `validity` may give
/// `notBefore` and `notAfter` (RFC 3339); an unreadable one makes the key unusable.
fn usable_key(
    psk: &serde_json::Map<String, serde_json::Value>,
    now: chrono::DateTime<chrono::Utc>,
) -> Option<Vec<u8>> {
    let key = base64::engine::general_purpose::STANDARD
        .decode(psk.get("key")?.as_str()?)
        .ok()
        .filter(|k| !k.is_empty())?;
    match psk.get("validity") {
        None | Some(serde_json::Value::Null) => {}
        Some(serde_json::Value::Object(validity)) => {
            let bound = |name: &str| match validity.get(name) {
                None | Some(serde_json::Value::Null) => Some(None),
                Some(value) => chrono::DateTime::parse_from_rfc3339(value.as_str()?)
                    .ok()
                    .map(|t| Some(t.with_timezone(&chrono::Utc))),
            };
            let (not_before, not_after) = (bound("notBefore")?, bound("notAfter")?);
            if not_before.is_some_and(|t| now < t) || not_after.is_some_and(|t| now > t) {
                return None;
            }
        }
        Some(_) => return None,
    }
    Some(key)
}

#[async_trait]
impl PskLookup for RegistryPsk {
    async fn psk(&self, identity: &PskIdentity) -> Option<Vec<u8>> {
        self.device(identity).await.map(|(_, key)| key)
    }
}

/// Serves CoAP on `server`'s sessions until `shutdown` completes. `psk` must be the
/// lookup the server was configured with: a PSK session's device is looked up again with
/// it for the identity the handshake proved (and refused if it no longer qualifies).
pub async fn serve(
    server: DtlsServer,
    core: Arc<CoapCore>,
    psk: Option<RegistryPsk>,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => return,
            session = server.accept() => match session {
                Some(session) => {
                    tokio::spawn(serve_session(session, core.clone(), psk.clone()));
                }
                None => return,
            },
        }
    }
}

async fn serve_session(session: DtlsSession, core: Arc<CoapCore>, psk: Option<RegistryPsk>) {
    let (peer, identity, mut inbound, sender) = session.into_parts();
    // the key the handshake was made with, for a PSK session
    let handshake_key = match (&identity, &psk) {
        (PeerIdentity::Psk(identity), Some(psk)) => match psk.device(identity).await {
            Some((_, key)) => Some(key),
            // dropping the session closes it
            None => return,
        },
        (PeerIdentity::Psk(_), None) => return,
        _ => None,
    };
    let out: Arc<dyn Outbound> = Arc::new(SessionOutbound(sender));
    while let Some(datagram) = inbound.recv().await {
        let transport = match (&identity, &psk) {
            // each request is the device of the proved identity, as long as it still
            // qualifies with the same key (a lookup remembered for a few seconds, at once
            // invalidated by registry changes in the same process): a device disabled or
            // rekeyed during the session loses it
            (PeerIdentity::Psk(identity), Some(psk)) => match psk.device(identity).await {
                Some((authenticated, key)) if Some(&key) == handshake_key.as_ref() => {
                    Some(TransportIdentity::PreSharedKey(Box::new(authenticated)))
                }
                _ => {
                    tracing::info!(%peer, %identity, "DTLS PSK session closed: the device no longer qualifies");
                    return;
                }
            },
            (PeerIdentity::Certificate(chain), _) => {
                Some(TransportIdentity::Certificates(chain.clone()))
            }
            _ => None,
        };
        core.handle(peer, &datagram, transport, out.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(value: serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
        value.as_object().unwrap().clone()
    }

    #[test]
    fn a_psk_key_and_its_validity() {
        let now = chrono::Utc::now();
        assert_eq!(
            usable_key(&map(json!({"key": "c2VjcmV0"})), now),
            Some(b"secret".to_vec())
        );
        assert_eq!(usable_key(&map(json!({"key": "not base64!"})), now), None);
        assert_eq!(usable_key(&map(json!({"key": ""})), now), None);
        assert_eq!(usable_key(&map(json!({})), now), None);
        let valid = json!({"key": "c2VjcmV0", "validity": {
            "notBefore": "2020-01-01T00:00:00Z", "notAfter": "2999-01-01T00:00:00Z"}});
        assert!(usable_key(&map(valid), now).is_some());
        let expired = json!({"key": "c2VjcmV0", "validity": {"notAfter": "2020-01-01T00:00:00Z"}});
        assert_eq!(usable_key(&map(expired), now), None);
        let early = json!({"key": "c2VjcmV0", "validity": {"notBefore": "2999-01-01T00:00:00Z"}});
        assert_eq!(usable_key(&map(early), now), None);
        let garbled = json!({"key": "c2VjcmV0", "validity": {"notAfter": "tomorrow"}});
        assert_eq!(usable_key(&map(garbled), now), None);
    }
}
