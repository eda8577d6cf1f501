//! The transport-independent message layer: datagrams in from a peer, datagrams out
//! to it through an [`Outbound`]. It keeps, per peer, the recent exchanges (duplicate
//! detection), the Block1 upload under way, the exchanges in progress, and the separate
//! responses waiting for their acknowledgement; all of it bounded (see [`Limits`]).

use crate::backend::Backend;
use crate::error::CoapError;
use crate::request::{self, PublishRequest};
use crate::{HEADER_COMMAND, MAX_PAYLOAD};
use async_trait::async_trait;
use coap_lite::block_handler::BlockValue;
use coap_lite::{CoapOption, MessageClass, MessageType, Packet, ResponseType};
use drogue_shared::device_auth::Authenticated;
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// The largest block of an answer (Block2, SZX 6).
const BLOCK_SIZE: usize = 1024;

/// Who a datagram is from: the UDP source address (a DTLS session is per address too).
pub type PeerKey = SocketAddr;

/// What the transport established about the peer, besides its address.
pub enum TransportIdentity {
    /// A client certificate chain (DER, end entity first) whose key the peer proved to
    /// hold in the DTLS handshake; authenticated as an HTTPS client certificate (option
    /// 4209 must then be absent; `application` may name the application).
    Certificates(Vec<Vec<u8>>),
    /// A device the transport authenticated itself (a DTLS pre-shared key it verified
    /// against the registry); taken as is. Option 4209 and `as` must then be absent.
    PreSharedKey(Box<Authenticated>),
}

/// Where the core's datagrams go: the transport that brought the peer's datagrams.
#[async_trait]
pub trait Outbound: Send + Sync + 'static {
    /// Sends one datagram to `peer`; failures are the transport's to log (CoAP's
    /// retransmission covers losses of confirmable messages).
    async fn send(&self, peer: PeerKey, datagram: Vec<u8>);
}

/// The bounds of the message layer.
#[derive(Debug, Clone)]
pub struct Limits {
    /// The largest request datagram taken whole; a larger one is answered 4.13 with a
    /// Block1 option asking for blocks of 1024 bytes.
    pub max_datagram: usize,
    /// Peers remembered at once; beyond, the least recently seen idle peer is forgotten.
    pub max_peers: usize,
    /// Exchanges of one peer in progress at once (publishes, command waits, separate
    /// responses awaiting their ACK); beyond, 4.29 with Max-Age 1.
    pub max_in_flight_per_peer: usize,
    /// Exchanges in progress at once over all peers; beyond, 5.03 with Max-Age 1.
    pub max_in_flight: usize,
    /// Answered exchanges of one peer remembered for duplicate detection.
    pub max_exchanges_per_peer: usize,
    /// How long an answered exchange is remembered (RFC 7252's EXCHANGE_LIFETIME).
    pub exchange_lifetime: Duration,
    /// How long a Block1 upload may pause between blocks.
    pub upload_lifetime: Duration,
    /// RFC 7252's ACK_TIMEOUT and MAX_RETRANSMIT, for separate responses.
    pub ack_timeout: Duration,
    pub max_retransmit: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_datagram: 8 * 1024,
            max_peers: 1024,
            max_in_flight_per_peer: 8,
            max_in_flight: 1024,
            max_exchanges_per_peer: 32,
            exchange_lifetime: Duration::from_secs(247),
            upload_lifetime: Duration::from_secs(60),
            ack_timeout: Duration::from_secs(2),
            max_retransmit: 4,
        }
    }
}

struct Exchange {
    id: u16,
    at: Instant,
    /// The answer, once there is one (a duplicate gets it again; without one, a
    /// duplicate is dropped: the exchange is in progress).
    answer: Option<Arc<Vec<u8>>>,
}

struct Upload {
    key: String,
    at: Instant,
    data: Vec<u8>,
}

/// An answer too large for one datagram, served block by block (Block2).
struct Blocks {
    key: String,
    at: Instant,
    code: MessageClass,
    /// The options every block repeats (Content-Format, 4210).
    options: Vec<(CoapOption, Vec<u8>)>,
    payload: Vec<u8>,
}

struct Peer {
    seen: Instant,
    in_flight: usize,
    exchanges: VecDeque<Exchange>,
    upload: Option<Upload>,
    blocks: Option<Blocks>,
    confirmations: HashMap<u16, oneshot::Sender<()>>,
}

impl Peer {
    fn new(now: Instant) -> Self {
        Self {
            seen: now,
            in_flight: 0,
            exchanges: VecDeque::new(),
            upload: None,
            blocks: None,
            confirmations: HashMap::new(),
        }
    }

    fn idle(&self) -> bool {
        self.in_flight == 0 && self.confirmations.is_empty()
    }

    fn expire(&mut self, now: Instant, limits: &Limits) {
        while self.exchanges.front().is_some_and(|e| {
            e.answer.is_some() && now.duration_since(e.at) > limits.exchange_lifetime
        }) {
            self.exchanges.pop_front();
        }
        if self
            .upload
            .as_ref()
            .is_some_and(|u| now.duration_since(u.at) > limits.upload_lifetime)
        {
            self.upload = None;
        }
        if self
            .blocks
            .as_ref()
            .is_some_and(|b| now.duration_since(b.at) > limits.upload_lifetime)
        {
            self.blocks = None;
        }
    }

    fn remember(&mut self, id: u16, now: Instant, answer: Option<Arc<Vec<u8>>>, max: usize) {
        if self.exchanges.len() >= max {
            // forget the oldest answered one (those in progress are at most
            // max_in_flight_per_peer, fewer than max)
            if let Some(i) = self.exchanges.iter().position(|e| e.answer.is_some()) {
                self.exchanges.remove(i);
            }
        }
        self.exchanges.push_back(Exchange {
            id,
            at: now,
            answer,
        });
    }
}

/// The CoAP endpoint over any datagram transport.
pub struct CoapCore {
    backend: Backend,
    limits: Limits,
    peers: Mutex<HashMap<PeerKey, Peer>>,
    in_flight: AtomicUsize,
    next_id: AtomicU16,
}

/// What to do with a request, decided under the lock.
enum Decision {
    /// Send these bytes (a cached or immediate answer).
    Send(Arc<Vec<u8>>),
    /// Nothing (a duplicate in progress).
    Drop,
    /// Publish, with the whole payload and the Block1 option for the answer.
    Publish(Box<PublishRequest>, Vec<u8>, Option<BlockValue>),
}

/// Gives back an exchange's slots when it ends, however it ends.
struct Slot {
    core: Arc<CoapCore>,
    peer: PeerKey,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.core.in_flight.fetch_sub(1, Ordering::Relaxed);
        if let Some(peer) = self.core.lock().get_mut(&self.peer) {
            peer.in_flight = peer.in_flight.saturating_sub(1);
        }
    }
}

impl CoapCore {
    pub fn new(backend: Backend, limits: Limits) -> Arc<Self> {
        Arc::new(Self {
            backend,
            limits,
            peers: Mutex::new(HashMap::new()),
            in_flight: AtomicUsize::new(0),
            next_id: AtomicU16::new(rand::random()),
        })
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<PeerKey, Peer>> {
        self.peers.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn message_id(&self) -> u16 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Takes one datagram from `peer`. Never blocks: a publish runs in a task of its
    /// own; answers go out through `out`.
    pub fn handle(
        self: &Arc<Self>,
        peer: PeerKey,
        datagram: &[u8],
        identity: Option<TransportIdentity>,
        out: Arc<dyn Outbound>,
    ) {
        let packet = match Packet::from_bytes(datagram) {
            Ok(packet) => packet,
            Err(_) => {
                // a confirmable message that cannot be read is rejected with a Reset
                // (RFC 7252 4.2); anything else is ignored
                if let Some(reset) = reset_for_unreadable(datagram) {
                    send(out, peer, reset);
                }
                return;
            }
        };
        let id = packet.header.message_id;
        match (packet.header.get_type(), packet.header.code) {
            (MessageType::Acknowledgement | MessageType::Reset, MessageClass::Empty) => {
                if let Some(peer) = self.lock().get_mut(&peer)
                    && let Some(confirmed) = peer.confirmations.remove(&id)
                {
                    let _ = confirmed.send(());
                }
                return;
            }
            (MessageType::Confirmable, MessageClass::Empty) => {
                // CoAP ping
                send(out, peer, empty(MessageType::Reset, id));
                return;
            }
            (MessageType::Confirmable | MessageType::NonConfirmable, MessageClass::Request(_)) => {}
            (MessageType::Confirmable, _) => {
                send(out, peer, empty(MessageType::Reset, id));
                return;
            }
            _ => return,
        }
        let decision = self.decide(peer, &packet, datagram.len());
        match decision {
            Decision::Drop => {}
            Decision::Send(bytes) => send(out, peer, bytes.to_vec()),
            Decision::Publish(request, payload, block1) => {
                let slot = Slot {
                    core: self.clone(),
                    peer,
                };
                let core = self.clone();
                tokio::spawn(async move {
                    core.exchange(slot, packet, request, payload, block1, identity, out)
                        .await;
                });
            }
        }
    }

    fn decide(&self, key: PeerKey, packet: &Packet, length: usize) -> Decision {
        let now = Instant::now();
        let limits = &self.limits;
        let id = packet.header.message_id;
        let mut peers = self.lock();
        if !peers.contains_key(&key) && peers.len() >= limits.max_peers {
            let oldest = peers
                .iter()
                .filter(|(_, p)| p.idle())
                .min_by_key(|(_, p)| p.seen)
                .map(|(k, _)| *k);
            match oldest {
                Some(oldest) => {
                    peers.remove(&oldest);
                }
                None => {
                    return Decision::Send(Arc::new(
                        self.error_answer(packet, &CoapError::Unavailable("too many peers".into())),
                    ));
                }
            }
        }
        let peer = peers.entry(key).or_insert_with(|| Peer::new(now));
        peer.seen = now;
        peer.expire(now, limits);
        if let Some(exchange) = peer.exchanges.iter().find(|e| e.id == id) {
            return match &exchange.answer {
                Some(answer) => Decision::Send(answer.clone()),
                None => Decision::Drop,
            };
        }
        let answer = |peer: &mut Peer, bytes: Vec<u8>| {
            let bytes = Arc::new(bytes);
            peer.remember(id, now, Some(bytes.clone()), limits.max_exchanges_per_peer);
            Decision::Send(bytes)
        };
        let request = match request::parse(packet) {
            Ok(request) => request,
            Err(e) => return answer(peer, self.error_answer(packet, &e)),
        };
        // Block2: a later block of an answer sent in blocks, from the cache
        if let Some(value) = packet.get_first_option(CoapOption::Block2) {
            let block = match BlockValue::try_from(value.clone()) {
                Ok(block) if block.size_exponent <= 6 => block,
                _ => {
                    let e = CoapError::InvalidRequest("The Block2 option cannot be read".into());
                    return answer(peer, self.error_answer(packet, &e));
                }
            };
            if block.num > 0 {
                let bytes = match &peer.blocks {
                    Some(blocks) if blocks.key == upload_key(packet) => {
                        self.block(packet, blocks, &block)
                    }
                    _ => None,
                };
                let bytes = bytes.unwrap_or_else(|| {
                    self.error_answer(
                        packet,
                        &CoapError::InvalidRequest(
                            "No answer to continue (Block2 beyond it, or forgotten)".into(),
                        ),
                    )
                });
                return answer(peer, bytes);
            }
        }
        if length > limits.max_datagram {
            let mut response = self.response(
                packet,
                &CoapError::PayloadTooLarge(limits.max_datagram).response_type(),
            );
            error_payload(
                &mut response,
                &CoapError::PayloadTooLarge(limits.max_datagram),
            );
            if let Ok(block) = BlockValue::new(0, false, 1024) {
                response.add_option_as(CoapOption::Block1, block);
            }
            return answer(peer, to_bytes(&response));
        }
        // Block1 (RFC 7959): gather the payload; the last block publishes it
        let mut payload = packet.payload.clone();
        let block1 = match packet.get_first_option(CoapOption::Block1) {
            None => None,
            Some(value) => match BlockValue::try_from(value.clone()) {
                Err(_) => {
                    let e = CoapError::InvalidRequest("The Block1 option cannot be read".into());
                    return answer(peer, self.error_answer(packet, &e));
                }
                Ok(block) => {
                    let size = block.size();
                    let upload_key = upload_key(packet);
                    if block.size_exponent > 6 || (block.more && packet.payload.len() != size) {
                        let e = CoapError::InvalidRequest(
                            "A block must be of the size its Block1 option says (16 to 1024 bytes)"
                                .into(),
                        );
                        return answer(peer, self.error_answer(packet, &e));
                    }
                    let announced = packet
                        .get_first_option(CoapOption::Size1)
                        .and_then(|v| request::uint(v));
                    if block.num == 0 && announced.is_some_and(|n| n as usize > MAX_PAYLOAD) {
                        // the client announced the whole size (Size1): refuse at once
                        return answer(peer, self.too_large(packet));
                    }
                    if block.num == 0 {
                        peer.upload = Some(Upload {
                            key: upload_key.clone(),
                            at: now,
                            data: Vec::new(),
                        });
                    }
                    let offset = usize::from(block.num) * size;
                    let upload = match &mut peer.upload {
                        Some(u) if u.key == upload_key && u.data.len() == offset => u,
                        _ => {
                            return answer(peer, self.error_answer(packet, &CoapError::Incomplete));
                        }
                    };
                    if offset + packet.payload.len() > MAX_PAYLOAD {
                        peer.upload = None;
                        return answer(peer, self.too_large(packet));
                    }
                    upload.data.extend_from_slice(&packet.payload);
                    upload.at = now;
                    if block.more {
                        let mut response = self.response(packet, &ResponseType::Continue);
                        response.add_option_as(CoapOption::Block1, block);
                        return answer(peer, to_bytes(&response));
                    }
                    payload = peer.upload.take().map(|u| u.data).unwrap_or_default();
                    Some(block)
                }
            },
        };
        if peer.in_flight >= limits.max_in_flight_per_peer {
            // not remembered: a retransmission may find a free slot
            return Decision::Send(Arc::new(
                self.error_answer(packet, &CoapError::TooManyRequests(Duration::from_secs(1))),
            ));
        }
        if self.in_flight.load(Ordering::Relaxed) >= limits.max_in_flight {
            return Decision::Send(Arc::new(self.error_answer(
                packet,
                &CoapError::Unavailable("too many exchanges in progress".into()),
            )));
        }
        peer.in_flight += 1;
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        peer.remember(id, now, None, limits.max_exchanges_per_peer);
        Decision::Publish(Box::new(request), payload, block1)
    }

    /// Records the answer of an exchange, for duplicates.
    fn answered(&self, key: PeerKey, id: u16, bytes: &[u8]) {
        if let Some(peer) = self.lock().get_mut(&key)
            && let Some(exchange) = peer.exchanges.iter_mut().find(|e| e.id == id)
        {
            exchange.answer = Some(Arc::new(bytes.to_vec()));
            exchange.at = Instant::now();
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn exchange(
        self: Arc<Self>,
        slot: Slot,
        packet: Packet,
        request: Box<PublishRequest>,
        payload: Vec<u8>,
        block1: Option<BlockValue>,
        identity: Option<TransportIdentity>,
        out: Arc<dyn Outbound>,
    ) {
        let key = slot.peer;
        let id = packet.header.message_id;
        let confirmable = packet.header.get_type() == MessageType::Confirmable;
        let wait = request.command_timeout;
        let published = self.backend.publish(&request, identity, &payload).await;
        let authenticated = match published {
            Err(e) => {
                let bytes = self.error_answer(&packet, &e);
                self.answered(key, id, &bytes);
                out.send(key, bytes).await;
                return;
            }
            Ok(_) if wait == 0 => {
                let mut response = self.response(&packet, &ResponseType::Changed);
                if let Some(block) = block1 {
                    response.add_option_as(CoapOption::Block1, block);
                }
                let bytes = to_bytes(&response);
                self.answered(key, id, &bytes);
                out.send(key, bytes).await;
                return;
            }
            Ok(authenticated) => authenticated,
        };
        // a command wait: acknowledge a confirmable request at once, answer apart
        if confirmable {
            let ack = empty(MessageType::Acknowledgement, id);
            self.answered(key, id, &ack);
            out.send(key, ack).await;
        }
        let command = self
            .backend
            .wait_for_command(&authenticated, Duration::from_secs(wait))
            .await;
        let mut response = match command {
            Err(e) => {
                let mut r = self.response(&packet, &e.response_type());
                error_payload(&mut r, &e);
                r
            }
            Ok(None) => self.response(&packet, &ResponseType::Changed),
            Ok(Some(command)) => {
                tracing::debug!(request = %command.id, command = %command.name, device = %command.device, "command delivered over CoAP");
                let mut r = self.response(&packet, &ResponseType::Content);
                r.add_option(HEADER_COMMAND, command.name.clone().into_bytes());
                if let Some(format) = command
                    .content_type
                    .as_deref()
                    .and_then(request::content_format)
                {
                    r.set_option(
                        CoapOption::ContentFormat,
                        [uint_bytes(format)].into_iter().collect(),
                    );
                }
                r.payload = command.payload.to_vec();
                r
            }
        };
        self.first_block(key, &packet, &mut response);
        if let Some(block) = block1 {
            response.add_option_as(CoapOption::Block1, block);
        }
        if !confirmable {
            let bytes = to_bytes(&response);
            self.answered(key, id, &bytes);
            out.send(key, bytes).await;
            return;
        }
        // a separate response: confirmable, retransmitted until acknowledged
        let separate_id = self.message_id();
        response.header.set_type(MessageType::Confirmable);
        response.header.message_id = separate_id;
        let bytes = to_bytes(&response);
        let (confirm, mut confirmed) = oneshot::channel();
        if let Some(peer) = self.lock().get_mut(&key) {
            peer.confirmations.insert(separate_id, confirm);
        }
        let factor = 1.0 + rand::random::<f64>() * 0.5;
        let mut timeout = self.limits.ack_timeout.mul_f64(factor);
        for _ in 0..=self.limits.max_retransmit {
            out.send(key, bytes.clone()).await;
            match tokio::time::timeout(timeout, &mut confirmed).await {
                Ok(_) => break,
                Err(_) => timeout *= 2,
            }
        }
        if let Some(peer) = self.lock().get_mut(&key) {
            peer.confirmations.remove(&separate_id);
        }
        drop(slot);
    }

    /// Block2 (RFC 7959): an answer whose payload is larger than a block (1024 bytes, or
    /// the smaller size the request's Block2 option asks for) goes out as its first
    /// block, with Size2; the peer's later requests for the other blocks are served
    /// from its cache (one answer per peer).
    fn first_block(&self, key: PeerKey, request: &Packet, response: &mut Packet) {
        let size = request
            .get_first_option(CoapOption::Block2)
            .and_then(|v| BlockValue::try_from(v.clone()).ok())
            .filter(|b| b.size_exponent <= 6)
            .map_or(BLOCK_SIZE, |b| b.size());
        if response.payload.len() <= size {
            return;
        }
        let payload = std::mem::take(&mut response.payload);
        let options = [CoapOption::ContentFormat, HEADER_COMMAND]
            .into_iter()
            .filter_map(|o| response.get_first_option(o).map(|v| (o, v.clone())))
            .collect();
        response.payload = payload[..size].to_vec();
        if let Ok(block) = BlockValue::new(0, true, size) {
            response.add_option_as(CoapOption::Block2, block);
        }
        response.add_option(CoapOption::Size2, uint_bytes(payload.len() as u32));
        if let Some(peer) = self.lock().get_mut(&key) {
            peer.blocks = Some(Blocks {
                key: upload_key(request),
                at: Instant::now(),
                code: response.header.code,
                options,
                payload,
            });
        }
    }

    /// A later block of a cached answer, if it has that block.
    fn block(&self, request: &Packet, blocks: &Blocks, block: &BlockValue) -> Option<Vec<u8>> {
        let size = block.size();
        let start = usize::from(block.num) * size;
        if start >= blocks.payload.len() {
            return None;
        }
        let end = (start + size).min(blocks.payload.len());
        let mut response = Packet::new();
        response.header = self.response(request, &ResponseType::Content).header;
        response.header.code = blocks.code;
        response.set_token(request.get_token().to_vec());
        for (option, value) in &blocks.options {
            response.add_option(*option, value.clone());
        }
        response.payload = blocks.payload[start..end].to_vec();
        let more = end < blocks.payload.len();
        response.add_option_as(
            CoapOption::Block2,
            BlockValue::new(usize::from(block.num), more, size).ok()?,
        );
        Some(to_bytes(&response))
    }

    /// A response to `request`: piggybacked on the ACK of a confirmable request, else
    /// non-confirmable with a message id of its own; the request's token.
    fn response(&self, request: &Packet, code: &ResponseType) -> Packet {
        let mut response = Packet::new();
        match request.header.get_type() {
            MessageType::Confirmable => {
                response.header.set_type(MessageType::Acknowledgement);
                response.header.message_id = request.header.message_id;
            }
            _ => {
                response.header.set_type(MessageType::NonConfirmable);
                response.header.message_id = self.message_id();
            }
        }
        response.header.code = MessageClass::Response(*code);
        response.set_token(request.get_token().to_vec());
        response
    }

    /// 4.13 for a payload over [`MAX_PAYLOAD`], with the limit in Size1.
    fn too_large(&self, request: &Packet) -> Vec<u8> {
        let e = CoapError::PayloadTooLarge(MAX_PAYLOAD);
        let mut response = self.response(request, &e.response_type());
        error_payload(&mut response, &e);
        response.add_option(CoapOption::Size1, uint_bytes(MAX_PAYLOAD as u32));
        to_bytes(&response)
    }

    fn error_answer(&self, request: &Packet, error: &CoapError) -> Vec<u8> {
        let mut response = self.response(request, &error.response_type());
        error_payload(&mut response, error);
        to_bytes(&response)
    }
}

/// The key of a Block1 upload: the request's path and query (every block repeats them).
fn upload_key(packet: &Packet) -> String {
    let mut key = String::new();
    for option in [CoapOption::UriPath, CoapOption::UriQuery] {
        for value in packet.get_option(option).into_iter().flatten() {
            key.push_str(&String::from_utf8_lossy(value));
            key.push('\u{0}');
        }
    }
    key
}

fn error_payload(response: &mut Packet, error: &CoapError) {
    response.set_option(
        CoapOption::ContentFormat,
        [uint_bytes(50)].into_iter().collect(),
    );
    if let Some(age) = error.max_age() {
        response.set_option(CoapOption::MaxAge, [uint_bytes(age)].into_iter().collect());
    }
    response.payload = error.payload();
}

/// An unsigned option value in as few bytes as it takes.
fn uint_bytes(n: u32) -> Vec<u8> {
    let bytes = n.to_be_bytes();
    let skip = bytes.iter().take_while(|b| **b == 0).count();
    bytes[skip..].to_vec()
}

fn empty(kind: MessageType, id: u16) -> Vec<u8> {
    let mut packet = Packet::new();
    packet.header.set_type(kind);
    packet.header.code = MessageClass::Empty;
    packet.header.message_id = id;
    to_bytes(&packet)
}

/// A Reset for a datagram that cannot be read, if it is a confirmable CoAP 1 message
/// with a message id (4 bytes of header).
fn reset_for_unreadable(datagram: &[u8]) -> Option<Vec<u8>> {
    let header = datagram.get(..4)?;
    let (version, kind) = (header[0] >> 6, (header[0] >> 4) & 0x3);
    (version == 1 && kind == 0).then(|| {
        empty(
            MessageType::Reset,
            u16::from_be_bytes([header[2], header[3]]),
        )
    })
}

fn to_bytes(packet: &Packet) -> Vec<u8> {
    packet.to_bytes_unlimited().unwrap_or_else(|e| {
        tracing::error!(error = ?e, "a CoAP message cannot be written");
        Vec::new()
    })
}

fn send(out: Arc<dyn Outbound>, peer: PeerKey, bytes: Vec<u8>) {
    tokio::spawn(async move { out.send(peer, bytes).await });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsigned_options_are_short() {
        assert_eq!(uint_bytes(0), Vec::<u8>::new());
        assert_eq!(uint_bytes(50), vec![50]);
        assert_eq!(uint_bytes(65536), vec![1, 0, 0]);
    }

    #[test]
    fn unreadable_confirmables_are_reset() {
        // CON, token length 0, code 0.02, id 0x1234, then an option delta of 15
        let reset = reset_for_unreadable(&[0x40, 0x02, 0x12, 0x34, 0xf0]).unwrap();
        let packet = Packet::from_bytes(&reset).unwrap();
        assert_eq!(packet.header.get_type(), MessageType::Reset);
        assert_eq!(packet.header.message_id, 0x1234);
        assert_eq!(reset_for_unreadable(&[0x50, 0x02, 0x12, 0x34]), None, "NON");
        assert_eq!(reset_for_unreadable(&[0x40, 0x02]), None, "too short");
    }

    #[test]
    fn peers_remember_a_bounded_number_of_exchanges() {
        let limits = Limits::default();
        let now = Instant::now();
        let mut peer = Peer::new(now);
        for id in 0..100u16 {
            peer.remember(
                id,
                now,
                Some(Arc::new(vec![])),
                limits.max_exchanges_per_peer,
            );
        }
        assert_eq!(peer.exchanges.len(), limits.max_exchanges_per_peer);
        assert_eq!(peer.exchanges.front().unwrap().id, 100 - 32);
        peer.expire(now + limits.exchange_lifetime * 2, &limits);
        assert!(peer.exchanges.is_empty());
    }
}
