//! The DTLS server against libcoap's real `coap-client-openssl` (Debian `libcoap3-bin`),
//! with a tiny CoAP responder (coap-lite) on the sessions: it answers every request with
//! 2.04 Changed and the session's identity as payload.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use coap_lite::{CoapRequest, CoapResponse, Packet, ResponseType};
use drogue_coap_dtls::{
    DtlsConfig, DtlsServer, PeerIdentity, PskIdentity, PskLookup, ServerCertificate,
};
use tokio::net::UdpSocket;
use tokio::time::timeout;

const CLIENT: &str = "coap-client-openssl";

/// The client binary; a missing one fails the test (CI installs libcoap3-bin).
fn client() -> PathBuf {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .map(|dir| dir.join(CLIENT))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!("{CLIENT} not found on PATH: install Debian's libcoap3-bin (apt-get install libcoap3-bin)")
        })
}

/// Keys by (application, device); each lookup takes a little while, like a store read.
struct Keys(HashMap<(String, String), Vec<u8>>);

#[async_trait]
impl PskLookup for Keys {
    async fn psk(&self, identity: &PskIdentity) -> Option<Vec<u8>> {
        tokio::time::sleep(Duration::from_millis(20)).await;
        self.0
            .get(&(
                identity.application().to_string(),
                identity.device().to_string(),
            ))
            .cloned()
    }
}

#[derive(Default)]
struct Seen {
    sessions: AtomicUsize,
    requests: Mutex<Vec<(SocketAddr, PeerIdentity, Vec<u8>)>>,
}

fn describe(identity: &PeerIdentity) -> String {
    match identity {
        PeerIdentity::Psk(id) => format!("psk:{id}"),
        PeerIdentity::Certificate(chain) => format!("certificate:{}", chain.len()),
        PeerIdentity::Anonymous => "anonymous".into(),
    }
}

/// Starts the server on 127.0.0.1:0 and the responder on its sessions.
async fn start(config: DtlsConfig) -> (Arc<DtlsServer>, Arc<Seen>) {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let server = Arc::new(DtlsServer::new(socket, config).unwrap());
    let seen = Arc::new(Seen::default());
    let (accepting, recording) = (server.clone(), seen.clone());
    tokio::spawn(async move {
        while let Some(mut session) = accepting.accept().await {
            recording.sessions.fetch_add(1, Ordering::SeqCst);
            let seen = recording.clone();
            tokio::spawn(async move {
                while let Some(datagram) = session.recv().await {
                    seen.requests.lock().unwrap().push((
                        session.peer(),
                        session.identity().clone(),
                        datagram.to_vec(),
                    ));
                    let Ok(packet) = Packet::from_bytes(&datagram) else {
                        continue;
                    };
                    let request = CoapRequest::from_packet(packet, session.peer());
                    if let Some(mut response) = CoapResponse::new(&request.message) {
                        response.set_status(ResponseType::Changed);
                        response.message.payload = describe(session.identity()).into_bytes();
                        let bytes = response.message.to_bytes().unwrap();
                        if session.send(bytes).await.is_err() {
                            break;
                        }
                    }
                }
            });
        }
    });
    (server, seen)
}

fn psk_config() -> DtlsConfig {
    let mut keys = HashMap::new();
    keys.insert(
        ("app1".to_string(), "device1".to_string()),
        b"secret-key-1".to_vec(),
    );
    DtlsConfig {
        psk: Some(Arc::new(Keys(keys))),
        handshake_timeout: Duration::from_secs(5),
        ..DtlsConfig::default()
    }
}

struct Run {
    success: bool,
    stdout: String,
    stderr: String,
}

async fn coap_client(args: &[&str], server: SocketAddr) -> Run {
    let uri = format!("coaps://{server}/v1/telemetry");
    let mut command = tokio::process::Command::new(client());
    command
        .args(["-m", "post", "-e", "hello", "-B", "4"])
        .args(args)
        .arg(&uri)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let output = timeout(Duration::from_secs(20), command.output())
        .await
        .expect("coap-client-openssl did not finish in 20 s")
        .expect("coap-client-openssl runs");
    eprintln!(
        "client {args:?}: status {:?}\nstdout: {}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    Run {
        success: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

#[tokio::test]
async fn psk_with_the_right_key_reaches_the_responder_with_its_identity() {
    let (server, seen) = start(psk_config()).await;
    let run = coap_client(
        &["-u", "device1@app1", "-k", "secret-key-1"],
        server.local_addr(),
    )
    .await;
    assert!(
        run.stdout.contains("psk:device1@app1"),
        "response payload: {:?}, stderr: {}",
        run.stdout,
        run.stderr
    );
    assert!(run.success, "stderr: {}", run.stderr);
    let requests = seen.requests.lock().unwrap();
    assert!(!requests.is_empty());
    let (_, identity, datagram) = &requests[0];
    assert_eq!(
        identity,
        &PeerIdentity::Psk(PskIdentity::parse(b"device1@app1").unwrap())
    );
    let request = Packet::from_bytes(datagram).expect("a CoAP message in clear");
    assert_eq!(request.payload, b"hello");
}

#[tokio::test]
async fn psk_with_a_wrong_key_or_an_unknown_identity_fails_the_handshake() {
    let (server, seen) = start(DtlsConfig {
        handshake_timeout: Duration::from_secs(2),
        ..psk_config()
    })
    .await;
    for (identity, key) in [
        ("device1@app1", "not-the-key"),
        ("device2@app1", "secret-key-1"),
        ("device1", "secret-key-1"),
    ] {
        let run = coap_client(&["-u", identity, "-k", key], server.local_addr()).await;
        assert!(
            !run.stdout.contains("psk:"),
            "{identity}: got a response: {:?}",
            run.stdout
        );
    }
    assert!(
        seen.requests.lock().unwrap().is_empty(),
        "no datagram may reach the responder"
    );
    // A Finished under a wrong key fails its MAC, and DTLS drops such records silently
    // (RFC 6347 §4.1.2.7): that handshake ends at the handshake timeout.
    timeout(Duration::from_secs(5), async {
        while server.session_count() > 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the failed handshakes are gone after the handshake timeout");
    assert_eq!(
        seen.sessions.load(Ordering::SeqCst),
        0,
        "no session accepted"
    );
}

struct Pki {
    _dir: tempfile::TempDir,
    server: ServerCertificate,
    server_ca: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
    client_leaf: PathBuf,
    client_ca: PathBuf,
    client_leaf_der: Vec<u8>,
    client_ca_der: Vec<u8>,
}

fn write(dir: &Path, name: &str, contents: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path
}

fn pki() -> Pki {
    let dir = tempfile::tempdir().unwrap();
    let server_key = rcgen::KeyPair::generate().unwrap();
    let server_cert = rcgen::CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])
        .unwrap()
        .self_signed(&server_key)
        .unwrap();

    let mut ca_params = rcgen::CertificateParams::new(Vec::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "app1 trust anchor");
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let mut leaf_params = rcgen::CertificateParams::new(Vec::new()).unwrap();
    leaf_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "device1");
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf = leaf_params.signed_by(&leaf_key, &issuer).unwrap();

    Pki {
        server_ca: write(dir.path(), "server.pem", &server_cert.pem()),
        client_cert: write(
            dir.path(),
            "client.pem",
            &format!("{}{}", leaf.pem(), ca_cert.pem()),
        ),
        client_key: write(dir.path(), "client.key", &leaf_key.serialize_pem()),
        client_leaf: write(dir.path(), "leaf.pem", &leaf.pem()),
        client_ca: write(dir.path(), "ca.pem", &ca_cert.pem()),
        client_leaf_der: leaf.der().to_vec(),
        client_ca_der: ca_cert.der().to_vec(),
        server: ServerCertificate {
            chain_pem: server_cert.pem().into_bytes(),
            key_pem: server_key.serialize_pem().into_bytes(),
        },
        _dir: dir,
    }
}

#[tokio::test]
async fn a_client_certificate_chain_reaches_the_responder() {
    let pki = pki();
    let (server, seen) = start(DtlsConfig {
        certificate: Some(pki.server.clone()),
        client_certificates: true,
        ..psk_config()
    })
    .await;
    let run = coap_client(
        &[
            "-c",
            pki.client_cert.to_str().unwrap(),
            "-j",
            pki.client_key.to_str().unwrap(),
            "-R",
            pki.server_ca.to_str().unwrap(),
        ],
        server.local_addr(),
    )
    .await;
    assert!(
        run.stdout.contains("certificate:"),
        "response payload: {:?}, stderr: {}",
        run.stdout,
        run.stderr
    );
    let identity = seen
        .requests
        .lock()
        .unwrap()
        .first()
        .expect("a request")
        .1
        .clone();
    let PeerIdentity::Certificate(chain) = identity else {
        panic!("not a certificate identity: {identity:?}");
    };
    assert_eq!(chain[0], pki.client_leaf_der, "the end entity comes first");

    // PSK still works on the same server
    let run = coap_client(
        &["-u", "device1@app1", "-k", "secret-key-1"],
        server.local_addr(),
    )
    .await;
    assert!(run.stdout.contains("psk:device1@app1"), "{}", run.stderr);
}

/// A DTLS 1.2 ClientHello offering PSK suites, with `cookie`.
fn client_hello(cookie: &[u8], message_seq: u16, record_seq: u8) -> Vec<u8> {
    let mut body = vec![0xfe, 0xfd];
    body.extend([7u8; 32]);
    body.push(0);
    body.push(cookie.len() as u8);
    body.extend(cookie);
    body.extend([0, 4, 0x00, 0xa8, 0xc0, 0xa8]);
    body.extend([1, 0]);
    let len = (body.len() as u32).to_be_bytes();
    let mut handshake = vec![1, len[1], len[2], len[3]];
    handshake.extend(message_seq.to_be_bytes());
    handshake.extend([0, 0, 0, len[1], len[2], len[3]]);
    handshake.extend(body);
    let mut record = vec![22, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, record_seq];
    record.extend((handshake.len() as u16).to_be_bytes());
    record.extend(handshake);
    record
}

async fn receive(socket: &UdpSocket) -> Vec<u8> {
    let mut buf = vec![0u8; 4096];
    let n = timeout(Duration::from_secs(5), socket.recv(&mut buf))
        .await
        .expect("an answer from the server")
        .unwrap();
    buf.truncate(n);
    buf
}

#[tokio::test]
async fn hello_floods_cost_no_session_and_a_stalled_handshake_does_not_block_others() {
    let (server, seen) = start(DtlsConfig {
        max_sessions: 2,
        ..psk_config()
    })
    .await;
    let stalled = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    stalled.connect(server.local_addr()).await.unwrap();

    // A flood of cookieless ClientHellos: each answered statelessly (HelloVerifyRequest).
    for seq in 0..50u8 {
        stalled.send(&client_hello(&[], 0, seq)).await.unwrap();
    }
    let mut cookie = Vec::new();
    for _ in 0..50 {
        let hvr = receive(&stalled).await;
        assert_eq!((hvr[0], hvr[13]), (22, 3), "a HelloVerifyRequest");
        let len = hvr[13 + 12 + 2] as usize;
        cookie = hvr[13 + 12 + 3..13 + 12 + 3 + len].to_vec();
    }
    assert_eq!(server.session_count(), 0, "cookieless hellos keep no state");

    // A wrong cookie is not enough either.
    stalled.send(&client_hello(&[0; 32], 1, 50)).await.unwrap();
    let hvr = receive(&stalled).await;
    assert_eq!(hvr[13], 3, "answered with a new HelloVerifyRequest");
    assert_eq!(server.session_count(), 0);

    // The echoed cookie opens a session: the server answers with its ServerHello, and
    // this client then stalls.
    stalled.send(&client_hello(&cookie, 1, 51)).await.unwrap();
    let flight = receive(&stalled).await;
    assert_eq!((flight[0], flight[13]), (22, 2), "a ServerHello");
    assert_eq!(server.session_count(), 1);

    // Meanwhile a real client is served.
    let run = coap_client(
        &["-u", "device1@app1", "-k", "secret-key-1"],
        server.local_addr(),
    )
    .await;
    assert!(
        run.stdout.contains("psk:device1@app1"),
        "response payload: {:?}, stderr: {}",
        run.stdout,
        run.stderr
    );
    assert_eq!(seen.requests.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn a_stalled_handshake_is_dropped_after_the_handshake_timeout() {
    let (server, _seen) = start(DtlsConfig {
        handshake_timeout: Duration::from_millis(500),
        ..psk_config()
    })
    .await;
    let stalled = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    stalled.connect(server.local_addr()).await.unwrap();
    stalled.send(&client_hello(&[], 0, 0)).await.unwrap();
    let hvr = receive(&stalled).await;
    let len = hvr[13 + 12 + 2] as usize;
    let cookie = hvr[13 + 12 + 3..13 + 12 + 3 + len].to_vec();
    stalled.send(&client_hello(&cookie, 1, 1)).await.unwrap();
    let _server_hello = receive(&stalled).await;
    assert_eq!(server.session_count(), 1);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(server.session_count(), 0, "the half-open session is gone");
}

/// libcoap sends only the end entity of its `-c` file; OpenSSL's own client sends a chain
/// (`-cert_chain`), which must reach the responder whole, end entity first.
#[tokio::test]
async fn a_whole_client_chain_reaches_the_responder() {
    let pki = pki();
    let (server, seen) = start(DtlsConfig {
        certificate: Some(pki.server.clone()),
        client_certificates: true,
        ..DtlsConfig::default()
    })
    .await;
    let mut child = tokio::process::Command::new("openssl")
        .args(["s_client", "-dtls1_2", "-quiet", "-connect"])
        .arg(server.local_addr().to_string())
        .arg("-cert")
        .arg(&pki.client_leaf)
        .arg("-key")
        .arg(&pki.client_key)
        .arg("-cert_chain")
        .arg(&pki.client_ca)
        .arg("-CAfile")
        .arg(&pki.server_ca)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("the openssl command (Debian package openssl) runs");
    let mut stdin = child.stdin.take().unwrap();
    let waited = timeout(Duration::from_secs(10), async {
        loop {
            use tokio::io::AsyncWriteExt;
            // s_client sends each line as one record once the handshake is done
            let _ = stdin.write_all(b"hello\n").await;
            if let Some(request) = seen.requests.lock().unwrap().first() {
                return request.clone();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    let _ = child.kill().await;
    let (_, identity, datagram) = waited.expect("a datagram from openssl s_client within 10 s");
    assert!(datagram.starts_with(b"hello\n"), "{datagram:?}");
    assert_eq!(
        identity,
        PeerIdentity::Certificate(vec![pki.client_leaf_der.clone(), pki.client_ca_der.clone()])
    );
}

/// A blocking DTLS datagram "stream" over a connected std UDP socket, for OpenSSL's client.
#[derive(Debug)]
struct UdpIo(std::net::UdpSocket);

impl std::io::Read for UdpIo {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.recv(buf)
    }
}

impl std::io::Write for UdpIo {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.send(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A PSK handshake with OpenSSL's client from `socket` (blocking: run it off the runtime).
fn psk_client(
    socket: &std::net::UdpSocket,
    identity: &'static str,
    key: &'static [u8],
) -> openssl::ssl::SslStream<UdpIo> {
    use openssl::ssl::{SslContext, SslMethod, SslVerifyMode};
    let mut context = SslContext::builder(SslMethod::dtls()).unwrap();
    context.set_cipher_list("PSK").unwrap();
    context.set_verify(SslVerifyMode::NONE);
    context.set_psk_client_callback(move |_, _hint, identity_out, key_out| {
        identity_out[..identity.len()].copy_from_slice(identity.as_bytes());
        identity_out[identity.len()] = 0;
        key_out[..key.len()].copy_from_slice(key);
        Ok(key.len())
    });
    let ssl = openssl::ssl::Ssl::new(&context.build()).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    ssl.connect(UdpIo(socket.try_clone().unwrap()))
        .expect("the PSK handshake")
}

fn coap_post(stream: &mut openssl::ssl::SslStream<UdpIo>, message_id: u16) -> String {
    let mut request: CoapRequest<SocketAddr> = CoapRequest::new();
    request.set_method(coap_lite::RequestType::Post);
    request.set_path("v1/telemetry");
    request.message.header.message_id = message_id;
    request.message.payload = b"hi".to_vec();
    stream
        .ssl_write(&request.message.to_bytes().unwrap())
        .unwrap();
    let mut buf = [0u8; 2048];
    let n = stream.ssl_read(&mut buf).expect("a response");
    String::from_utf8_lossy(&Packet::from_bytes(&buf[..n]).unwrap().payload).into_owned()
}

#[tokio::test]
async fn an_idle_session_is_closed_with_close_notify() {
    let (server, seen) = start(DtlsConfig {
        idle_timeout: Duration::from_millis(700),
        ..psk_config()
    })
    .await;
    let address = server.local_addr();
    let closed = tokio::task::spawn_blocking(move || {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.connect(address).unwrap();
        let mut stream = psk_client(&socket, "device1@app1", b"secret-key-1");
        assert_eq!(coap_post(&mut stream, 1), "psk:device1@app1");
        let started = std::time::Instant::now();
        let mut buf = [0u8; 2048];
        let error = stream.ssl_read(&mut buf).expect_err("no more data");
        (error.code(), started.elapsed())
    })
    .await
    .unwrap();
    assert_eq!(
        closed.0,
        openssl::ssl::ErrorCode::ZERO_RETURN,
        "a close_notify"
    );
    assert!(
        closed.1 < Duration::from_secs(3),
        "closed after {:?}",
        closed.1
    );
    timeout(Duration::from_secs(2), async {
        while server.session_count() > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the closed session is gone");
    assert_eq!(seen.sessions.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_client_restarting_from_the_same_port_replaces_its_session() {
    let (server, seen) = start(psk_config()).await;
    let address = server.local_addr();
    let answers = tokio::task::spawn_blocking(move || {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.connect(address).unwrap();
        let mut first = psk_client(&socket, "device1@app1", b"secret-key-1");
        let a = coap_post(&mut first, 1);
        // The client "reboots": a new handshake from the same address and port, without
        // closing the first session.
        std::mem::forget(first);
        let mut second = psk_client(&socket, "device1@app1", b"secret-key-1");
        let b = coap_post(&mut second, 2);
        (a, b)
    })
    .await
    .unwrap();
    assert_eq!(answers.0, "psk:device1@app1");
    assert_eq!(answers.1, "psk:device1@app1");
    assert_eq!(seen.sessions.load(Ordering::SeqCst), 2);
    assert_eq!(
        server.session_count(),
        1,
        "the new session replaced the old one"
    );
}
