//! `drogue-loadgen coap`: CoAP clients (one UDP socket each, so one peer each) send
//! confirmable `POST /v1/{channel}` requests with the device's credentials in option
//! 4209, one at a time, for a while. Every answer is matched to its request by message id
//! and token: a rate counts only requests answered 2.04 (or, against the bare echo
//! server, echoed back), never requests merely sent.
//! With `--psk identity:key` the clients speak CoAP over DTLS 1.2 (OpenSSL, a pre-shared
//! key): one handshake per client before the clock starts, then the same requests without
//! option 4209 (the session names the device).
//! With `--by-id`, every request answered 2.04 is then looked up among an application's
//! events, by id (see `byid.rs`).
//! `drogue-loadgen bare-udp`: the baseline, a UDP server that sends every datagram back.

use base64::Engine;
use coap_lite::{CoapOption, MessageClass, MessageType, Packet, RequestType, ResponseType};
use openssl::ssl::{Ssl, SslContextBuilder, SslMethod, SslVerifyMode, SslVersion};
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;

/// What the clients counted.
#[derive(Default)]
pub struct Counts {
    sent: AtomicU64,
    /// 2.04 Changed (or the request itself, echoed)
    changed: AtomicU64,
    other: AtomicU64,
    /// The codes of the other answers, and how many of each.
    other_codes: std::sync::Mutex<std::collections::BTreeMap<String, u64>>,
    timeouts: AtomicU64,
}

fn request(
    message_id: u16,
    token: &[u8],
    path: &str,
    authorization: Option<&str>,
    payload: &[u8],
) -> Vec<u8> {
    let mut packet = Packet::new();
    packet.header.set_type(MessageType::Confirmable);
    packet.header.code = MessageClass::Request(RequestType::Post);
    packet.header.message_id = message_id;
    packet.set_token(token.to_vec());
    for segment in path.split('/').filter(|s| !s.is_empty()) {
        packet.add_option(CoapOption::UriPath, segment.as_bytes().to_vec());
    }
    packet.add_option(CoapOption::ContentFormat, vec![50]);
    if let Some(authorization) = authorization {
        packet.add_option(CoapOption::Unknown(4209), authorization.as_bytes().to_vec());
    }
    packet.payload = payload.to_vec();
    packet.to_bytes().expect("a CoAP request")
}

/// What every client sends, and where.
struct Load {
    target: SocketAddr,
    /// Option 4209's value; none over DTLS.
    authorization: Option<String>,
    path: String,
    payload: Vec<u8>,
    /// Whether each payload carries the client's index and the request's number.
    numbered: bool,
    deadline: Instant,
    echo: bool,
    counts: Counts,
}

impl Load {
    /// The payload of request `k` of client `n`.
    fn payload(&self, n: usize, k: u64) -> std::borrow::Cow<'_, [u8]> {
        if self.numbered {
            std::borrow::Cow::Owned(crate::byid::numbered(&self.payload, n, k).into_bytes())
        } else {
            std::borrow::Cow::Borrowed(&self.payload)
        }
    }
}

/// Client `n`'s requests until the deadline; the numbers of those answered 2.04 (when
/// numbered).
async fn client(load: Arc<Load>, n: usize) -> anyhow::Result<Vec<u64>> {
    let Load {
        target,
        ref authorization,
        ref path,
        deadline,
        echo,
        ref counts,
        ..
    } = *load;
    let socket = UdpSocket::bind("127.0.0.1:0").await?;
    socket.connect(target).await?;
    let mut buffer = vec![0u8; 2048];
    let mut message_id = (n as u16).wrapping_mul(7919);
    let token = (n as u32).to_be_bytes();
    let (mut k, mut acknowledged) = (0, Vec::new());
    while Instant::now() < deadline {
        message_id = message_id.wrapping_add(1);
        let payload = load.payload(n, k);
        let datagram = request(message_id, &token, path, authorization.as_deref(), &payload);
        socket.send(&datagram).await?;
        counts.sent.fetch_add(1, Ordering::Relaxed);
        // the answer to this request, ignoring stray datagrams
        let answered = tokio::time::timeout(Duration::from_secs(2), async {
            loop {
                let len = socket.recv(&mut buffer).await?;
                let Ok(packet) = Packet::from_bytes(&buffer[..len]) else {
                    continue;
                };
                if packet.header.message_id == message_id && packet.get_token() == token {
                    return Ok::<_, std::io::Error>(packet);
                }
            }
        })
        .await;
        match answered {
            Ok(Ok(packet)) => {
                if counts.answered(&packet, echo) && load.numbered {
                    acknowledged.push(k);
                }
            }
            Ok(Err(e)) => return Err(e.into()),
            Err(_) => {
                counts.timeouts.fetch_add(1, Ordering::Relaxed);
            }
        }
        k += 1;
    }
    Ok(acknowledged)
}

impl Counts {
    /// Counts the answer to a request; whether it is 2.04 (or the echo).
    fn answered(&self, packet: &Packet, echo: bool) -> bool {
        let changed = if echo {
            packet.header.code == MessageClass::Request(RequestType::Post)
        } else {
            packet.header.code == MessageClass::Response(ResponseType::Changed)
        };
        if changed {
            self.changed.fetch_add(1, Ordering::Relaxed);
        } else {
            self.other.fetch_add(1, Ordering::Relaxed);
            *self
                .other_codes
                .lock()
                .unwrap()
                .entry(packet.header.code.to_string())
                .or_default() += 1;
        }
        changed
    }
}

/// A connected UDP socket as OpenSSL's transport: one datagram per read or write.
#[derive(Debug)]
struct Datagrams(std::net::UdpSocket);

impl Read for Datagrams {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.recv(buf)
    }
}

impl Write for Datagrams {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.send(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Client `n` over DTLS with a pre-shared key: the handshake, then (once `start` is
/// reached) requests until the deadline, on its own thread; the numbers of those
/// answered 2.04 (when numbered).
fn dtls_client(
    load: &Load,
    n: usize,
    identity: &str,
    key: &[u8],
    start: &std::sync::Barrier,
    duration: Duration,
) -> anyhow::Result<Vec<u64>> {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0")?;
    socket.connect(load.target)?;
    socket.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut builder = SslContextBuilder::new(SslMethod::dtls())?;
    builder.set_min_proto_version(Some(SslVersion::DTLS1_2))?;
    builder.set_verify(SslVerifyMode::NONE);
    builder.set_cipher_list("PSK")?;
    let (psk_identity, psk) = (identity.as_bytes().to_vec(), key.to_vec());
    builder.set_psk_client_callback(move |_, _, identity_out, key_out| {
        if psk_identity.len() >= identity_out.len() || psk.len() > key_out.len() {
            return Err(openssl::error::ErrorStack::get());
        }
        identity_out[..psk_identity.len()].copy_from_slice(&psk_identity);
        identity_out[psk_identity.len()] = 0;
        key_out[..psk.len()].copy_from_slice(&psk);
        Ok(psk.len())
    });
    let context = builder.build();
    let mut ssl = Ssl::new(&context)?;
    ssl.set_mtu(1200)?;
    let handshake = ssl
        .connect(Datagrams(socket))
        .map_err(|e| anyhow::anyhow!("client {n}: the DTLS handshake failed: {e}"));
    // every client waits for the others' handshakes, also when its own failed
    start.wait();
    let mut stream = handshake?;
    let deadline = Instant::now() + duration;
    let mut buffer = vec![0u8; 2048];
    let mut message_id = (n as u16).wrapping_mul(7919);
    let token = (n as u32).to_be_bytes();
    let counts = &load.counts;
    let (mut k, mut acknowledged) = (0, Vec::new());
    while Instant::now() < deadline {
        message_id = message_id.wrapping_add(1);
        let datagram = request(message_id, &token, &load.path, None, &load.payload(n, k));
        k += 1;
        stream.write_all(&datagram)?;
        counts.sent.fetch_add(1, Ordering::Relaxed);
        // the answer to this request, ignoring stray records
        loop {
            match stream.read(&mut buffer) {
                Ok(len) => {
                    let Ok(packet) = Packet::from_bytes(&buffer[..len]) else {
                        continue;
                    };
                    if packet.header.message_id == message_id && packet.get_token() == token {
                        if counts.answered(&packet, false) && load.numbered {
                            acknowledged.push(k - 1);
                        }
                        break;
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    counts.timeouts.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(acknowledged)
}

/// Runs `clients` DTLS clients with the pre-shared key `identity:key` (identity
/// `device@application`) for `seconds` after their handshakes; prints the answered rate
/// and returns, per client, the numbers of its requests answered 2.04 (when
/// `numbered`).
pub fn run_dtls(
    target: SocketAddr,
    clients: usize,
    seconds: u64,
    psk: &str,
    channel: &str,
    payload: &str,
    numbered: bool,
) -> anyhow::Result<Vec<Vec<u64>>> {
    let (identity, key) = psk
        .split_once(':')
        .ok_or_else(|| anyhow::anyhow!("--psk takes identity:key"))?;
    let barrier = std::sync::Barrier::new(clients + 1);
    let load = Load {
        target,
        authorization: None,
        path: format!("/v1/{channel}"),
        payload: payload.as_bytes().to_vec(),
        numbered,
        // each client's clock starts after every handshake
        deadline: Instant::now(),
        echo: false,
        counts: Counts::default(),
    };
    let duration = Duration::from_secs(seconds);
    let (results, elapsed) = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..clients)
            .map(|n| {
                let (load, barrier) = (&load, &barrier);
                scope.spawn(move || {
                    dtls_client(load, n, identity, key.as_bytes(), barrier, duration)
                })
            })
            .collect();
        barrier.wait();
        let start = Instant::now();
        let results: Vec<anyhow::Result<Vec<u64>>> = threads
            .into_iter()
            .map(|t| t.join().expect("a client thread"))
            .collect();
        (results, start.elapsed())
    });
    let acknowledged = results.into_iter().collect::<anyhow::Result<Vec<_>>>()?;
    report(
        &load.counts,
        target,
        clients,
        elapsed,
        false,
        " over DTLS (PSK)",
    );
    Ok(acknowledged)
}

/// Prints what the clients counted.
fn report(
    counts: &Counts,
    target: SocketAddr,
    clients: usize,
    elapsed: Duration,
    echo: bool,
    transport: &str,
) {
    let elapsed = elapsed.as_secs_f64();
    let changed = counts.changed.load(Ordering::Relaxed);
    let rate = changed as f64 / elapsed;
    println!(
        "coap {target}{transport}: {changed} answered {} in {elapsed:.1} s: {rate:.0} req/s over {clients} clients \
         (sent {}, other answers {}{}, timeouts {})",
        if echo { "(echoed)" } else { "2.04" },
        counts.sent.load(Ordering::Relaxed),
        counts.other.load(Ordering::Relaxed),
        {
            let codes = counts.other_codes.lock().unwrap();
            if codes.is_empty() {
                String::new()
            } else {
                format!(" {codes:?}")
            }
        },
        counts.timeouts.load(Ordering::Relaxed),
    );
}

/// Runs `clients` clients for `seconds`; prints the answered rate and returns, per
/// client, the numbers of its requests answered 2.04 (when `numbered`).
#[allow(clippy::too_many_arguments)]
pub async fn run(
    target: SocketAddr,
    clients: usize,
    seconds: u64,
    device: &str,
    channel: &str,
    payload: &str,
    echo: bool,
    numbered: bool,
) -> anyhow::Result<Vec<Vec<u64>>> {
    let authorization = Some(format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(device)
    ));
    let start = Instant::now();
    let load = Arc::new(Load {
        target,
        authorization,
        path: format!("/v1/{channel}"),
        payload: payload.as_bytes().to_vec(),
        numbered,
        deadline: start + Duration::from_secs(seconds),
        echo,
        counts: Counts::default(),
    });
    let tasks: Vec<_> = (0..clients)
        .map(|n| tokio::spawn(client(load.clone(), n)))
        .collect();
    let mut acknowledged = Vec::new();
    for task in tasks {
        acknowledged.push(task.await??);
    }
    report(&load.counts, target, clients, start.elapsed(), echo, "");
    Ok(acknowledged)
}

/// Sends every datagram back to where it came from.
pub async fn bare_udp(bind: &str) -> anyhow::Result<()> {
    let socket = UdpSocket::bind(bind).await?;
    let mut buffer = vec![0u8; 65_536];
    loop {
        let (len, from) = socket.recv_from(&mut buffer).await?;
        socket.send_to(&buffer[..len], from).await?;
    }
}
