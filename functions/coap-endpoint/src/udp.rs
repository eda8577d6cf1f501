//! The plain UDP transport (RFC 7252 over UDP, `coap://`): one socket; each datagram
//! goes to the [`CoapCore`] with no transport identity, answers go back on the socket.

use crate::exchange::{CoapCore, Outbound, PeerKey};
use async_trait::async_trait;
use std::future::Future;
use std::sync::Arc;
use tokio::net::UdpSocket;

/// The largest UDP payload (what one `recv_from` can bring).
const RECEIVE_BUFFER: usize = 65_536;

/// Sends on the socket the datagrams came in on.
pub struct UdpOutbound(pub Arc<UdpSocket>);

#[async_trait]
impl Outbound for UdpOutbound {
    async fn send(&self, peer: PeerKey, datagram: Vec<u8>) {
        if let Err(e) = self.0.send_to(&datagram, peer).await {
            tracing::debug!(%peer, error = %e, "a CoAP datagram cannot be sent");
        }
    }
}

/// Serves CoAP on `socket` until `shutdown` completes.
pub async fn serve(
    socket: UdpSocket,
    core: Arc<CoapCore>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let socket = Arc::new(socket);
    let out: Arc<dyn Outbound> = Arc::new(UdpOutbound(socket.clone()));
    let mut buffer = vec![0u8; RECEIVE_BUFFER];
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => return Ok(()),
            received = socket.recv_from(&mut buffer) => match received {
                Ok((length, peer)) => core.handle(peer, &buffer[..length], None, out.clone()),
                // ICMP errors of earlier sends surface here on some systems: not fatal
                Err(e) => tracing::debug!(error = %e, "CoAP receive"),
            },
        }
    }
}
