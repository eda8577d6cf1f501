//! `drogue-loadgen coap`: CoAP clients (one UDP socket each, so one peer each) send
//! confirmable `POST /v1/{channel}` requests with the device's credentials in option
//! 4209, one at a time, for a while. Every answer is matched to its request by message id
//! and token: a rate counts only requests answered 2.04 (or, against the bare echo
//! server, echoed back), never requests merely sent.
//! `drogue-loadgen bare-udp`: the baseline, a UDP server that sends every datagram back.

use base64::Engine;
use coap_lite::{CoapOption, MessageClass, MessageType, Packet, RequestType, ResponseType};
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
    timeouts: AtomicU64,
}

fn request(
    message_id: u16,
    token: &[u8],
    path: &str,
    authorization: &str,
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
    packet.add_option(CoapOption::Unknown(4209), authorization.as_bytes().to_vec());
    packet.payload = payload.to_vec();
    packet.to_bytes().expect("a CoAP request")
}

/// What every client sends, and where.
struct Load {
    target: SocketAddr,
    authorization: String,
    path: String,
    payload: Vec<u8>,
    deadline: Instant,
    echo: bool,
    counts: Counts,
}

/// Client `n`'s requests until the deadline.
async fn client(load: Arc<Load>, n: usize) -> anyhow::Result<()> {
    let Load {
        target,
        ref authorization,
        ref path,
        ref payload,
        deadline,
        echo,
        ref counts,
    } = *load;
    let socket = UdpSocket::bind("127.0.0.1:0").await?;
    socket.connect(target).await?;
    let mut buffer = vec![0u8; 2048];
    let mut message_id = (n as u16).wrapping_mul(7919);
    let token = (n as u32).to_be_bytes();
    while Instant::now() < deadline {
        message_id = message_id.wrapping_add(1);
        let datagram = request(message_id, &token, path, authorization, payload);
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
                let changed = if echo {
                    packet.header.code == MessageClass::Request(RequestType::Post)
                } else {
                    packet.header.code == MessageClass::Response(ResponseType::Changed)
                };
                if changed {
                    counts.changed.fetch_add(1, Ordering::Relaxed);
                } else {
                    counts.other.fetch_add(1, Ordering::Relaxed);
                }
            }
            Ok(Err(e)) => return Err(e.into()),
            Err(_) => {
                counts.timeouts.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    Ok(())
}

/// Runs `clients` clients for `seconds`; prints and returns the answered rate.
pub async fn run(
    target: SocketAddr,
    clients: usize,
    seconds: u64,
    device: &str,
    channel: &str,
    payload: &str,
    echo: bool,
) -> anyhow::Result<f64> {
    let authorization = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(device)
    );
    let start = Instant::now();
    let load = Arc::new(Load {
        target,
        authorization,
        path: format!("/v1/{channel}"),
        payload: payload.as_bytes().to_vec(),
        deadline: start + Duration::from_secs(seconds),
        echo,
        counts: Counts::default(),
    });
    let tasks: Vec<_> = (0..clients)
        .map(|n| tokio::spawn(client(load.clone(), n)))
        .collect();
    for task in tasks {
        task.await??;
    }
    let counts = &load.counts;
    let elapsed = start.elapsed().as_secs_f64();
    let changed = counts.changed.load(Ordering::Relaxed);
    let rate = changed as f64 / elapsed;
    println!(
        "coap {target}: {changed} answered {} in {elapsed:.1} s: {rate:.0} req/s over {clients} clients \
         (sent {}, other answers {}, timeouts {})",
        if echo { "(echoed)" } else { "2.04" },
        counts.sent.load(Ordering::Relaxed),
        counts.other.load(Ordering::Relaxed),
        counts.timeouts.load(Ordering::Relaxed),
    );
    Ok(rate)
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
