//! The server: one UDP socket, one task that demultiplexes datagrams by peer address, one
//! task per DTLS session.

use std::collections::{HashMap, VecDeque};
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use foreign_types::ForeignTypeRef;
use openssl::error::ErrorStack;
use openssl::ex_data::Index;
use openssl::pkey::PKey;
use openssl::sign::Signer;
use openssl::ssl::{
    ErrorCode, Ssl, SslContext, SslContextBuilder, SslMethod, SslOptions, SslRef, SslStream,
    SslVerifyMode, SslVersion,
};
use openssl::x509::X509;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::{Instant, sleep_until, timeout_at};

use crate::identity::{PeerIdentity, PskIdentity};
use crate::record;

/// The largest datagram read from the socket: a full DTLS record (2^14 bytes of plaintext
/// plus expansion) fits.
const MAX_DATAGRAM: usize = 18 * 1024;

/// Where the server finds the pre-shared key of a PSK identity. It is called from the
/// session's own task while the handshake waits, so it may do I/O (a registry lookup)
/// without blocking the runtime or other peers.
#[async_trait]
pub trait PskLookup: Send + Sync + 'static {
    /// The key of this identity, or `None` when the device or application is unknown or
    /// has no PSK credential (the handshake then fails with `unknown_psk_identity`).
    async fn psk(&self, identity: &PskIdentity) -> Option<Vec<u8>>;
}

/// The server's own certificate chain (PEM, end entity first) and private key (PEM).
#[derive(Clone)]
pub struct ServerCertificate {
    pub chain_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
}

/// What the server accepts and how much it holds.
#[derive(Clone)]
pub struct DtlsConfig {
    /// The server's certificate; without one only PSK handshakes are possible.
    pub certificate: Option<ServerCertificate>,
    /// PSK handshakes, with the lookup of keys; `None` disables PSK.
    pub psk: Option<Arc<dyn PskLookup>>,
    /// Ask clients for a certificate in certificate handshakes and accept any chain (the
    /// caller verifies it).
    pub client_certificates: bool,
    /// Sessions (in handshake or established) held at once; ClientHellos from new peers
    /// beyond it are dropped.
    pub max_sessions: usize,
    /// A handshake not finished in this time is abandoned.
    pub handshake_timeout: Duration,
    /// A session with no datagram either way for this long is closed (close_notify).
    pub idle_timeout: Duration,
    /// The longest a PSK lookup may take (within the handshake timeout).
    pub psk_lookup_timeout: Duration,
    /// Datagrams queued per session and direction; more are dropped (UDP semantics,
    /// CoAP retransmits).
    pub queue: usize,
    /// The path MTU the server fragments its handshake flights for.
    pub mtu: u32,
}

impl Default for DtlsConfig {
    fn default() -> Self {
        Self {
            certificate: None,
            psk: None,
            client_certificates: false,
            max_sessions: 1024,
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            psk_lookup_timeout: Duration::from_secs(5),
            queue: 16,
            mtu: 1200,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DtlsError {
    #[error("TLS configuration: {0}")]
    Tls(#[from] ErrorStack),
    #[error("server certificate: {0}")]
    Certificate(&'static str),
    #[error("socket: {0}")]
    Io(#[from] io::Error),
}

/// The session was closed (by the peer, an error, the idle timeout, or the server).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("DTLS session closed")]
pub struct SessionClosed;

/// An established DTLS session with one peer.
pub struct DtlsSession {
    peer: SocketAddr,
    identity: PeerIdentity,
    inbound: mpsc::Receiver<Bytes>,
    sender: DtlsSender,
}

impl DtlsSession {
    /// The peer's address: the key of this session.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// What the handshake established about the peer.
    pub fn identity(&self) -> &PeerIdentity {
        &self.identity
    }

    /// The next decrypted datagram from the peer; `None` once the session is closed.
    pub async fn recv(&mut self) -> Option<Bytes> {
        self.inbound.recv().await
    }

    /// Encrypts and sends one datagram to the peer.
    pub async fn send(&self, datagram: impl Into<Bytes>) -> Result<(), SessionClosed> {
        self.sender.send(datagram).await
    }

    /// A handle that sends to this peer from elsewhere (e.g. a command delivery).
    pub fn sender(&self) -> DtlsSender {
        self.sender.clone()
    }

    /// The parts: peer, identity, inbound datagrams and the sender. The session closes
    /// (close_notify) when every sender is dropped.
    pub fn into_parts(self) -> (SocketAddr, PeerIdentity, mpsc::Receiver<Bytes>, DtlsSender) {
        (self.peer, self.identity, self.inbound, self.sender)
    }
}

/// Sends datagrams into one session.
#[derive(Clone)]
pub struct DtlsSender {
    peer: SocketAddr,
    outbound: mpsc::Sender<Bytes>,
}

impl DtlsSender {
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// Queues one datagram for encryption; waits while the session's queue is full.
    pub async fn send(&self, datagram: impl Into<Bytes>) -> Result<(), SessionClosed> {
        self.outbound
            .send(datagram.into())
            .await
            .map_err(|_| SessionClosed)
    }

    pub fn is_closed(&self) -> bool {
        self.outbound.is_closed()
    }
}

/// A DTLS 1.2 server on one UDP socket.
pub struct DtlsServer {
    local_addr: SocketAddr,
    accepted: tokio::sync::Mutex<mpsc::Receiver<DtlsSession>>,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl DtlsServer {
    /// Starts serving `socket` (must be called within a Tokio runtime). Dropping the
    /// server stops it and every session.
    pub fn new(socket: UdpSocket, config: DtlsConfig) -> Result<Self, DtlsError> {
        let local_addr = socket.local_addr()?;
        let psk_index = Ssl::new_ex_index::<Arc<Mutex<PskSlot>>>()?;
        let peer_index = Ssl::new_ex_index::<PeerCell>()?;
        let context = context(&config, psk_index, peer_index)?;
        let shared = Arc::new(Shared {
            socket: Arc::new(socket),
            config,
            peers: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            psk_index,
            peer_index,
        });
        let listener = listener(&context, &shared)?;
        let (accepted_tx, accepted) = mpsc::channel(shared.config.max_sessions.max(1));
        let task = tokio::spawn(demux(shared.clone(), context, listener, accepted_tx));
        Ok(Self {
            local_addr,
            accepted: tokio::sync::Mutex::new(accepted),
            shared,
            task,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The next established session; `None` if the server stopped.
    pub async fn accept(&self) -> Option<DtlsSession> {
        self.accepted.lock().await.recv().await
    }

    /// Sessions held now, in handshake or established.
    pub fn session_count(&self) -> usize {
        self.shared.peers.lock().expect("peers lock").len()
    }
}

impl Drop for DtlsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Shared {
    socket: Arc<UdpSocket>,
    config: DtlsConfig,
    peers: Mutex<HashMap<SocketAddr, PeerHandle>>,
    next_id: AtomicU64,
    psk_index: Index<Ssl, Arc<Mutex<PskSlot>>>,
    peer_index: Index<Ssl, PeerCell>,
}

/// The peer of an OpenSSL object, for the cookie callbacks.
type PeerCell = Arc<Mutex<Option<SocketAddr>>>;

struct PeerHandle {
    id: u64,
    inbox: mpsc::Sender<Bytes>,
    established: Arc<AtomicBool>,
}

/// The PSK state of one handshake, shared between its task and OpenSSL's callback.
#[derive(Default)]
struct PskSlot {
    /// The identity last seen in a ClientKeyExchange and the key the lookup gave for it.
    looked_up: Option<(Vec<u8>, Option<Vec<u8>>)>,
    /// Set by the callback when it handed OpenSSL a key for this identity.
    accepted: Option<PskIdentity>,
}

/// The datagram "socket" under one OpenSSL object: datagrams in, datagrams out, one per
/// read or write call, never blocking.
#[derive(Default)]
struct DgramIo {
    inbox: VecDeque<Bytes>,
    outbox: Vec<Vec<u8>>,
}

impl Read for DgramIo {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.inbox.pop_front() {
            Some(datagram) => {
                let n = datagram.len().min(buf.len());
                buf[..n].copy_from_slice(&datagram[..n]);
                Ok(n)
            }
            None => Err(io::ErrorKind::WouldBlock.into()),
        }
    }
}

impl Write for DgramIo {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.outbox.push(buf.to_vec());
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

// Not in openssl-sys: DTLSv1_listen (libssl ≥ 1.1.0) and the BIO_ADDR it fills.
unsafe extern "C" {
    fn DTLSv1_listen(ssl: *mut openssl_sys::SSL, client: *mut libc::c_void) -> libc::c_int;
    fn BIO_ADDR_new() -> *mut libc::c_void;
    fn BIO_ADDR_free(addr: *mut libc::c_void);
}

// DTLSv1_get_timeout / DTLSv1_handle_timeout are macros over SSL_ctrl.
const DTLS_CTRL_GET_TIMEOUT: libc::c_int = 73;
const DTLS_CTRL_HANDLE_TIMEOUT: libc::c_int = 74;

fn dtls_timeout(ssl: &SslRef) -> Option<Duration> {
    let mut tv = libc::timeval {
        tv_sec: 0,
        tv_usec: 0,
    };
    // SAFETY: a valid SSL and a timeval for OpenSSL to fill.
    let running = unsafe {
        openssl_sys::SSL_ctrl(
            ssl.as_ptr(),
            DTLS_CTRL_GET_TIMEOUT,
            0,
            (&mut tv as *mut libc::timeval).cast(),
        )
    };
    (running == 1).then(|| {
        Duration::from_secs(tv.tv_sec.max(0) as u64)
            + Duration::from_micros(tv.tv_usec.max(0) as u64)
    })
}

fn dtls_handle_timeout(ssl: &SslRef) {
    // SAFETY: a valid SSL; retransmits the last flight through its BIO.
    unsafe {
        openssl_sys::SSL_ctrl(
            ssl.as_ptr(),
            DTLS_CTRL_HANDLE_TIMEOUT,
            0,
            std::ptr::null_mut(),
        );
    }
}

/// The cookie of a peer address: HMAC-SHA256 under a secret of this process.
fn cookie(secret: &PKey<openssl::pkey::Private>, peer: &SocketAddr) -> Option<Vec<u8>> {
    let mut signer = Signer::new(openssl::hash::MessageDigest::sha256(), secret).ok()?;
    match peer {
        SocketAddr::V4(a) => signer.update(&a.ip().octets()).ok()?,
        SocketAddr::V6(a) => signer.update(&a.ip().octets()).ok()?,
    }
    signer.update(&peer.port().to_be_bytes()).ok()?;
    signer.sign_to_vec().ok()
}

fn context(
    config: &DtlsConfig,
    psk_index: Index<Ssl, Arc<Mutex<PskSlot>>>,
    peer_index: Index<Ssl, PeerCell>,
) -> Result<SslContext, DtlsError> {
    let mut builder = SslContextBuilder::new(SslMethod::dtls())?;
    builder.set_min_proto_version(Some(SslVersion::DTLS1_2))?;
    builder.set_max_proto_version(Some(SslVersion::DTLS1_2))?;
    builder.set_options(SslOptions::COOKIE_EXCHANGE | SslOptions::NO_RENEGOTIATION);
    // OpenSSL's defaults plus the suites RFC 7252 §9.1.3 makes mandatory for CoAP, which
    // constrained stacks (tinydtls) often offer alone.
    builder.set_cipher_list("DEFAULT:PSK-AES128-CCM8:ECDHE-ECDSA-AES128-CCM8:PSK")?;

    let mut secret = [0u8; 32];
    openssl::rand::rand_bytes(&mut secret)?;
    let secret = PKey::hmac(&secret)?;
    let generate_secret = secret.clone();
    builder.set_cookie_generate_cb(move |ssl, out| {
        let peer = ssl
            .ex_data(peer_index)
            .and_then(|cell| *cell.lock().expect("peer cell"))
            .ok_or_else(ErrorStack::get)?;
        let cookie = cookie(&generate_secret, &peer).ok_or_else(ErrorStack::get)?;
        let n = cookie.len().min(out.len());
        out[..n].copy_from_slice(&cookie[..n]);
        Ok(n)
    });
    builder.set_cookie_verify_cb(move |ssl, presented| {
        ssl.ex_data(peer_index)
            .and_then(|cell| *cell.lock().expect("peer cell"))
            .and_then(|peer| cookie(&secret, &peer))
            .is_some_and(|expected| {
                expected.len() == presented.len() && openssl::memcmp::eq(&expected, presented)
            })
    });

    if let Some(certificate) = &config.certificate {
        let mut chain = X509::stack_from_pem(&certificate.chain_pem)?.into_iter();
        let leaf = chain
            .next()
            .ok_or(DtlsError::Certificate("no certificate in the PEM chain"))?;
        builder.set_certificate(&leaf)?;
        for intermediate in chain {
            builder.add_extra_chain_cert(intermediate)?;
        }
        builder.set_private_key(&*PKey::private_key_from_pem(&certificate.key_pem)?)?;
        builder.check_private_key()?;
    }

    if config.client_certificates {
        // Any chain: the caller verifies it against the application's trust anchors.
        builder.set_verify_callback(SslVerifyMode::PEER, |_, _| true);
    }

    if config.psk.is_some() {
        builder.set_psk_server_callback(move |ssl, identity, out| {
            let (Some(identity), Some(slot)) = (identity, ssl.ex_data(psk_index).cloned()) else {
                return Ok(0);
            };
            let mut slot = slot.lock().expect("psk slot");
            let key = match &slot.looked_up {
                Some((looked_up, Some(key)))
                    if looked_up == identity && !key.is_empty() && key.len() <= out.len() =>
                {
                    key.clone()
                }
                _ => return Ok(0),
            };
            out[..key.len()].copy_from_slice(&key);
            slot.accepted = PskIdentity::parse(identity);
            Ok(key.len())
        });
    }
    Ok(builder.build())
}

/// An OpenSSL object with its datagram queues and the state its callbacks read.
struct Tls {
    stream: SslStream<DgramIo>,
    peer: PeerCell,
    psk: Arc<Mutex<PskSlot>>,
}

/// A fresh OpenSSL object for the stateless cookie exchange of new peers.
fn listener(context: &SslContext, shared: &Shared) -> Result<Tls, DtlsError> {
    let mut ssl = Ssl::new(context)?;
    ssl.set_mtu(shared.config.mtu)?;
    let peer = PeerCell::default();
    let psk = Arc::new(Mutex::new(PskSlot::default()));
    ssl.set_ex_data(shared.peer_index, peer.clone());
    ssl.set_ex_data(shared.psk_index, psk.clone());
    Ok(Tls {
        stream: SslStream::new(ssl, DgramIo::default())?,
        peer,
        psk,
    })
}

enum Listened {
    /// A ClientHello with a valid cookie: the listener now holds its handshake.
    Accepted,
    /// Answered (HelloVerifyRequest) or dropped; nothing kept.
    Stateless,
    /// The listener is unusable; make a new one.
    Broken,
}

/// Runs OpenSSL's stateless `DTLSv1_listen` on one datagram: a ClientHello without a
/// valid cookie gets a HelloVerifyRequest (left in the outbox) and leaves no state.
fn listen(tls: &mut Tls, peer: SocketAddr, datagram: Bytes) -> Listened {
    *tls.peer.lock().expect("peer cell") = Some(peer);
    let listener = &mut tls.stream;
    listener.get_mut().inbox.push_back(datagram);
    // SAFETY: a valid SSL with its BIO set; BIO_ADDR allocated and freed here.
    let ret = unsafe {
        let addr = BIO_ADDR_new();
        if addr.is_null() {
            listener.get_mut().inbox.clear();
            return Listened::Broken;
        }
        let ret = DTLSv1_listen(listener.ssl().as_ptr(), addr);
        BIO_ADDR_free(addr);
        ret
    };
    listener.get_mut().inbox.clear();
    match ret {
        1 => Listened::Accepted,
        0 => {
            let _ = ErrorStack::get();
            Listened::Stateless
        }
        _ => {
            let errors = ErrorStack::get();
            tracing::debug!(%peer, %errors, "DTLS listen failed");
            Listened::Broken
        }
    }
}

async fn send_outbox(shared: &Shared, io: &mut DgramIo, peer: SocketAddr) {
    for datagram in std::mem::take(&mut io.outbox) {
        if let Err(error) = shared.socket.send_to(&datagram, peer).await {
            tracing::debug!(%peer, %error, "DTLS send failed");
        }
    }
}

async fn demux(
    shared: Arc<Shared>,
    context: SslContext,
    mut listener: Tls,
    accepted: mpsc::Sender<DtlsSession>,
) {
    let mut sessions = JoinSet::new();
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let (n, peer) = tokio::select! {
            received = shared.socket.recv_from(&mut buf) => match received {
                Ok(received) => received,
                Err(error) => {
                    tracing::debug!(%error, "DTLS socket receive failed");
                    continue;
                }
            },
            Some(_) = sessions.join_next(), if !sessions.is_empty() => continue,
        };
        let datagram = Bytes::copy_from_slice(&buf[..n]);
        let hello = record::is_client_hello(&datagram);
        {
            let peers = shared.peers.lock().expect("peers lock");
            match peers.get(&peer) {
                // A ClientHello to an established session may be the peer starting over
                // (RFC 6347 §4.2.8): it replaces the session once its cookie is valid.
                Some(handle) if !(hello && handle.established.load(Ordering::Acquire)) => {
                    if handle.inbox.try_send(datagram).is_err() {
                        tracing::trace!(%peer, "DTLS session queue full: datagram dropped");
                    }
                    continue;
                }
                Some(_) => {}
                None if !hello => continue,
                None if peers.len() >= shared.config.max_sessions => {
                    tracing::debug!(%peer, "DTLS session limit reached: ClientHello dropped");
                    continue;
                }
                None => {}
            }
        }
        match listen(&mut listener, peer, datagram) {
            Listened::Stateless => {
                send_outbox(&shared, listener.stream.get_mut(), peer).await;
            }
            Listened::Broken => {
                listener.stream.get_mut().outbox.clear();
                match self::listener(&context, &shared) {
                    Ok(fresh) => listener = fresh,
                    Err(error) => {
                        tracing::error!(%error, "DTLS listener could not be renewed");
                        return;
                    }
                }
            }
            Listened::Accepted => {
                let fresh = match self::listener(&context, &shared) {
                    Ok(fresh) => fresh,
                    Err(error) => {
                        tracing::error!(%error, "DTLS listener could not be renewed");
                        return;
                    }
                };
                let stream = std::mem::replace(&mut listener, fresh);
                let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
                let (inbox_tx, inbox) = mpsc::channel(shared.config.queue.max(1));
                let established = Arc::new(AtomicBool::new(false));
                shared.peers.lock().expect("peers lock").insert(
                    peer,
                    PeerHandle {
                        id,
                        inbox: inbox_tx,
                        established: established.clone(),
                    },
                );
                let shared = shared.clone();
                let accepted = accepted.clone();
                sessions.spawn(async move {
                    run_session(&shared, stream, peer, inbox, established, accepted).await;
                    let mut peers = shared.peers.lock().expect("peers lock");
                    if peers.get(&peer).is_some_and(|handle| handle.id == id) {
                        peers.remove(&peer);
                    }
                });
            }
        }
    }
}

/// Looks up the key of a PSK identity seen in a ClientKeyExchange, once per identity.
async fn resolve_psk(
    shared: &Shared,
    lookup: &dyn PskLookup,
    slot: &Mutex<PskSlot>,
    identity: &[u8],
    deadline: Instant,
) {
    let known =
        matches!(&slot.lock().expect("psk slot").looked_up, Some((seen, _)) if seen == identity);
    if known {
        return;
    }
    let key = match PskIdentity::parse(identity) {
        Some(parsed) => {
            let until = deadline.min(Instant::now() + shared.config.psk_lookup_timeout);
            match timeout_at(until, lookup.psk(&parsed)).await {
                Ok(key) => key,
                Err(_) => {
                    tracing::debug!(identity = %parsed, "PSK lookup timed out");
                    None
                }
            }
        }
        None => None,
    };
    slot.lock().expect("psk slot").looked_up = Some((identity.to_vec(), key));
}

async fn run_session(
    shared: &Shared,
    tls: Tls,
    peer: SocketAddr,
    mut inbox: mpsc::Receiver<Bytes>,
    established: Arc<AtomicBool>,
    accepted: mpsc::Sender<DtlsSession>,
) {
    let Tls {
        mut stream,
        psk: slot,
        ..
    } = tls;
    let deadline = Instant::now() + shared.config.handshake_timeout;

    loop {
        let result = stream.accept();
        send_outbox(shared, stream.get_mut(), peer).await;
        match result {
            Ok(()) => break,
            Err(error) if matches!(error.code(), ErrorCode::WANT_READ | ErrorCode::WANT_WRITE) => {}
            Err(error) => {
                tracing::debug!(%peer, %error, "DTLS handshake failed");
                return;
            }
        }
        let wake = dtls_timeout(stream.ssl())
            .map(|t| (Instant::now() + t).min(deadline))
            .unwrap_or(deadline);
        tokio::select! {
            datagram = inbox.recv() => {
                let Some(datagram) = datagram else { return };
                if let (Some(lookup), Some(identity)) = (&shared.config.psk, record::psk_identity(&datagram)) {
                    resolve_psk(shared, lookup.as_ref(), &slot, identity, deadline).await;
                }
                stream.get_mut().inbox.push_back(datagram);
            }
            _ = sleep_until(wake) => {
                if Instant::now() >= deadline {
                    tracing::debug!(%peer, "DTLS handshake timed out");
                    return;
                }
                dtls_handle_timeout(stream.ssl());
            }
        }
    }

    let identity = match slot.lock().expect("psk slot").accepted.take() {
        Some(psk) => PeerIdentity::Psk(psk),
        None => match stream.ssl().peer_certificate() {
            Some(leaf) => {
                let mut chain = Vec::new();
                if let Ok(der) = leaf.to_der() {
                    chain.push(der);
                }
                // On a server, OpenSSL's peer chain leaves out the end entity.
                for cert in stream.ssl().peer_cert_chain().into_iter().flatten() {
                    if let Ok(der) = cert.to_der()
                        && chain.first() != Some(&der)
                    {
                        chain.push(der);
                    }
                }
                PeerIdentity::Certificate(chain)
            }
            None => PeerIdentity::Anonymous,
        },
    };
    established.store(true, Ordering::Release);
    tracing::debug!(%peer, ?identity, "DTLS session established");

    let (inbound_tx, inbound) = mpsc::channel(shared.config.queue.max(1));
    let (outbound, mut outbound_rx) = mpsc::channel(shared.config.queue.max(1));
    let session = DtlsSession {
        peer,
        identity,
        inbound,
        sender: DtlsSender { peer, outbound },
    };
    if !matches!(
        timeout_at(deadline, accepted.send(session)).await,
        Ok(Ok(()))
    ) {
        tracing::debug!(%peer, "DTLS session not taken in time: closed");
        let _ = stream.shutdown();
        send_outbox(shared, stream.get_mut(), peer).await;
        return;
    }

    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut idle = Instant::now() + shared.config.idle_timeout;
    loop {
        tokio::select! {
            datagram = inbox.recv() => {
                // None: the server stopped, or the peer started a new session.
                let Some(datagram) = datagram else { return };
                idle = Instant::now() + shared.config.idle_timeout;
                stream.get_mut().inbox.push_back(datagram);
                let mut open = true;
                loop {
                    match stream.ssl_read(&mut buf) {
                        Ok(n) => {
                            if inbound_tx.try_send(Bytes::copy_from_slice(&buf[..n])).is_err() {
                                tracing::trace!(%peer, "DTLS inbound queue full: datagram dropped");
                            }
                        }
                        Err(error) if error.code() == ErrorCode::WANT_READ => break,
                        Err(error) if error.code() == ErrorCode::ZERO_RETURN => {
                            tracing::debug!(%peer, "DTLS session closed by the peer");
                            open = false;
                            break;
                        }
                        Err(error) => {
                            tracing::debug!(%peer, %error, "DTLS session failed");
                            open = false;
                            break;
                        }
                    }
                }
                send_outbox(shared, stream.get_mut(), peer).await;
                if !open {
                    return;
                }
            }
            datagram = outbound_rx.recv() => {
                let Some(datagram) = datagram else {
                    let _ = stream.shutdown();
                    send_outbox(shared, stream.get_mut(), peer).await;
                    return;
                };
                idle = Instant::now() + shared.config.idle_timeout;
                let result = stream.ssl_write(&datagram);
                send_outbox(shared, stream.get_mut(), peer).await;
                if let Err(error) = result {
                    tracing::debug!(%peer, %error, "DTLS send failed: session closed");
                    return;
                }
            }
            _ = sleep_until(idle) => {
                tracing::debug!(%peer, "DTLS session idle: closed");
                let _ = stream.shutdown();
                send_outbox(shared, stream.get_mut(), peer).await;
                return;
            }
        }
    }
}
