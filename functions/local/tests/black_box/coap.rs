//! Devices publish over CoAP (plain UDP) with libcoap's `coap-client-notls` (Debian
//! package libcoap3-bin): option 4209 credentials, errors with their codes and JSON
//! payloads, block-wise uploads, non-confirmable requests, a command in the answer to a
//! request that waits (`ct`), and duplicates answered from the cache (driven by a raw
//! UDP socket with coap-lite).

use super::runner::{LocalRunner, Socket};
use base64::Engine;
use coap_lite::{CoapOption, MessageClass, MessageType, Packet, RequestType, ResponseType};
use drogue_tests::libcoap;
use futures_util::StreamExt;
use serde_json::{Value, json};
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

/// The answer `coap-client-notls -v 7` printed: the code (`2.04`), the type of the
/// message (`ACK`, `CON`, `NON`), the whole line, and the client's output.
struct Answer {
    code: String,
    kind: String,
    line: String,
    output: String,
}

/// Runs the plain client with these arguments; a run without a response fails the test.
async fn coap_client(args: &[&str]) -> Answer {
    let answer = libcoap::run(libcoap::PLAIN, 30, args).await;
    let Some(libcoap::Response { code, kind, line }) = answer.response else {
        panic!("no response in\n{}", answer.output)
    };
    Answer {
        code,
        kind,
        line,
        output: answer.output,
    }
}

/// How `coap-client -v 7` prints an unknown option's value.
fn escaped(text: &str) -> String {
    text.bytes().map(|b| format!("\\x{b:02X}")).collect()
}

fn url(server: &LocalRunner, path: &str) -> String {
    format!("coap://{}{path}", server.coap)
}

async fn setup(server: &LocalRunner) {
    let apps = "/api/registry/v1alpha1/apps";
    assert_eq!(
        server
            .post(apps, &json!({"metadata": {"name": "app1"}}))
            .await,
        201
    );
    let dev1 = json!({"metadata": {"name": "dev1"}, "spec": {"authentication": {"credentials": [{"pass": "secret"}]}}});
    assert_eq!(
        server.post(&format!("{apps}/app1/devices"), &dev1).await,
        201
    );
}

async fn next_event(socket: &mut Socket) -> Value {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(10), socket.next())
            .await
            .expect("an event within 10 s")
            .expect("the stream is open")
            .unwrap();
        if let Message::Text(text) = message {
            return serde_json::from_str(&text).unwrap();
        }
    }
}

/// No event within a short while (the stream's keep-alive pings may come).
async fn no_event(socket: &mut Socket) {
    let deadline = tokio::time::Instant::now() + Duration::from_millis(700);
    while let Ok(next) = tokio::time::timeout_at(deadline, socket.next()).await {
        assert!(
            matches!(next, Some(Ok(Message::Ping(_) | Message::Pong(_)))),
            "no further event: {next:?}"
        );
    }
}

fn diagnostic(answer: &Answer) -> Value {
    // `coap-client` prints an error's code and payload: `4.03 {"error":..}`
    let json = answer
        .output
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{} ", answer.code)))
        .unwrap_or_else(|| panic!("a diagnostic payload in\n{}", answer.output));
    serde_json::from_str(json).unwrap()
}

#[tokio::test]
async fn devices_publish_over_coap() {
    let dir = tempfile::tempdir().unwrap();
    let server = LocalRunner::start(dir.path()).await;
    setup(&server).await;
    let admin = server.admin_token();
    let mut events = server
        .websocket("/stream/app1", admin.split_once(':').unwrap())
        .await;

    // discovery announces the endpoint
    let (_, endpoints) = server.get("/.well-known/drogue-endpoints").await;
    assert_eq!(
        endpoints["coap"]["url"],
        format!("coap://localhost:{}", server.coap.port())
    );
    assert_eq!(
        endpoints["coaps"]["url"],
        format!("coaps://localhost:{}", server.coaps.port())
    );

    // a confirmable publish: 2.04 piggybacked on the ACK, and the event
    let auth = libcoap::basic_option("dev1@app1", "secret");
    let answer = coap_client(&[
        "-m",
        "post",
        "-O",
        &auth,
        "-t",
        "50",
        "-e",
        r#"{"temp":21.5}"#,
        &url(&server, "/v1/telemetry/room/1?data_schema=urn:t"),
    ])
    .await;
    assert_eq!(
        (answer.code.as_str(), answer.kind.as_str()),
        ("2.04", "ACK"),
        "{}",
        answer.output
    );
    let event = next_event(&mut events).await;
    assert_eq!(event["type"], "io.drogue.event.v1");
    assert_eq!(event["source"], "drogue://app1/dev1");
    assert_eq!(event["subject"], "telemetry");
    assert_eq!(event["application"], "app1");
    assert_eq!(event["device"], "dev1");
    assert_eq!(event["datacontenttype"], "application/json");
    assert_eq!(event["dataschema"], "urn:t");
    assert_eq!(event["data"], json!({"temp": 21.5}));

    // the application in the query, the device as the user
    let answer = coap_client(&[
        "-m",
        "post",
        "-O",
        &libcoap::basic_option("dev1", "secret"),
        "-e",
        "on",
        &url(&server, "/v1/state?application=app1"),
    ])
    .await;
    assert_eq!(answer.code, "2.04", "{}", answer.output);
    let event = next_event(&mut events).await;
    assert_eq!(event["subject"], "state");
    assert_eq!(event["device"], "dev1");

    // a non-confirmable publish: a non-confirmable answer
    let answer = coap_client(&[
        "-N",
        "-m",
        "post",
        "-O",
        &auth,
        "-e",
        "non",
        &url(&server, "/v1/non"),
    ])
    .await;
    assert_eq!(
        (answer.code.as_str(), answer.kind.as_str()),
        ("2.04", "NON"),
        "{}",
        answer.output
    );
    assert_eq!(next_event(&mut events).await["subject"], "non");

    // 4 KiB block-wise (Block1, 1024-byte blocks) arrives whole
    let payload: Vec<u8> = (0..4096u32).map(|i| (i % 251) as u8).collect();
    let file = dir.path().join("payload.bin");
    std::fs::write(&file, &payload).unwrap();
    let answer = coap_client(&[
        "-b",
        "1024",
        "-m",
        "post",
        "-O",
        &auth,
        "-t",
        "42",
        "-f",
        file.to_str().unwrap(),
        &url(&server, "/v1/blocks"),
    ])
    .await;
    assert_eq!(answer.code, "2.04", "{}", answer.output);
    assert!(
        answer.output.contains("Block1:0/M/1024") && answer.line.contains("Block1:3/_/1024"),
        "four blocks:\n{}",
        answer.output
    );
    let event = next_event(&mut events).await;
    assert_eq!(event["subject"], "blocks");
    assert_eq!(event["datacontenttype"], "application/octet-stream");
    let data = base64::engine::general_purpose::STANDARD
        .decode(event["data_base64"].as_str().unwrap())
        .unwrap();
    assert_eq!(data, payload);

    // a wrong password: 4.03 with a diagnostic payload, no event
    let answer = coap_client(&[
        "-m",
        "post",
        "-O",
        &libcoap::basic_option("dev1@app1", "wrong"),
        "-e",
        "x",
        &url(&server, "/v1/telemetry"),
    ])
    .await;
    assert_eq!(answer.code, "4.03", "{}", answer.output);
    assert!(
        answer.line.contains("Content-Format:application/json"),
        "{}",
        answer.line
    );
    assert_eq!(diagnostic(&answer)["error"], "AuthenticationError");
    // no credentials at all
    let answer = coap_client(&["-m", "post", "-e", "x", &url(&server, "/v1/telemetry")]).await;
    assert_eq!(answer.code, "4.03", "{}", answer.output);

    // JSON declared, not JSON: 4.00
    let answer = coap_client(&[
        "-m",
        "post",
        "-O",
        &auth,
        "-t",
        "50",
        "-e",
        "{not json",
        &url(&server, "/v1/telemetry"),
    ])
    .await;
    assert_eq!(answer.code, "4.00", "{}", answer.output);
    assert_eq!(diagnostic(&answer)["error"], "InvalidFormat");

    // over the limit (64 KiB, as over HTTP), block-wise: 4.13
    let file = dir.path().join("large.bin");
    std::fs::write(&file, vec![b'a'; 64 * 1024 + 1]).unwrap();
    let answer = coap_client(&[
        "-b",
        "1024",
        "-m",
        "post",
        "-O",
        &auth,
        "-f",
        file.to_str().unwrap(),
        &url(&server, "/v1/large"),
    ])
    .await;
    assert_eq!(answer.code, "4.13", "{}", answer.output);
    assert_eq!(diagnostic(&answer)["error"], "PayloadTooLarge");

    // unknown paths, other methods, bad queries
    let answer = coap_client(&["-m", "post", "-O", &auth, "-e", "x", &url(&server, "/v2/x")]).await;
    assert_eq!(answer.code, "4.04", "{}", answer.output);
    let answer = coap_client(&["-m", "get", "-O", &auth, &url(&server, "/v1/telemetry")]).await;
    assert_eq!(answer.code, "4.05", "{}", answer.output);
    let answer = coap_client(&[
        "-m",
        "post",
        "-O",
        &auth,
        "-e",
        "x",
        &url(&server, "/v1/telemetry?ct=soon"),
    ])
    .await;
    assert_eq!(answer.code, "4.00", "{}", answer.output);
    assert_eq!(diagnostic(&answer)["error"], "InvalidRequest");

    no_event(&mut events).await;
}

#[tokio::test]
async fn a_waiting_device_gets_a_command() {
    let dir = tempfile::tempdir().unwrap();
    let server = LocalRunner::start(dir.path()).await;
    setup(&server).await;
    let auth = libcoap::basic_option("dev1@app1", "secret");
    let target = url(&server, "/v1/telemetry?ct=15");
    let waiting = tokio::spawn(async move {
        coap_client(&["-m", "post", "-O", &auth, "-e", "waiting", &target]).await
    });
    // the command goes out once the device waits
    tokio::time::sleep(Duration::from_millis(1500)).await;
    send_command(
        &server,
        "set-temp",
        "application/json",
        br#"{"target":20}"#.to_vec(),
    )
    .await;
    let answer = tokio::time::timeout(Duration::from_secs(20), waiting)
        .await
        .expect("the device is answered")
        .unwrap();
    // an empty ACK at once, then the answer as a separate (confirmable) response
    let request_id = answer
        .output
        .lines()
        .find(|l| l.starts_with("v:1 t:CON c:POST "))
        .and_then(|l| l.split_whitespace().nth(3))
        .unwrap()
        .to_owned();
    assert!(
        answer
            .output
            .lines()
            .any(|l| l.starts_with(&format!("v:1 t:ACK c:0.00 {request_id} "))),
        "an empty ACK of {request_id}:\n{}",
        answer.output
    );
    assert_eq!(
        (answer.code.as_str(), answer.kind.as_str()),
        ("2.05", "CON"),
        "{}",
        answer.output
    );
    assert!(
        answer
            .line
            .contains(&format!("4210:{}", escaped("set-temp"))),
        "the command's name in option 4210: {}",
        answer.line
    );
    assert!(answer.line.contains("Content-Format:application/json"));
    assert!(answer.line.contains(r#"{"target":20}"#), "{}", answer.line);
    // the client acknowledged the separate response
    let id = answer.line.split_whitespace().nth(3).unwrap();
    assert!(
        answer
            .output
            .lines()
            .any(|l| l.starts_with(&format!("v:1 t:ACK c:0.00 {id} "))),
        "the client's ACK of {id}:\n{}",
        answer.output
    );

    // without a command within ct: 2.04
    let answer = coap_client(&[
        "-m",
        "post",
        "-O",
        &libcoap::basic_option("dev1@app1", "secret"),
        "-e",
        "x",
        &url(&server, "/v1/telemetry?ct=1"),
    ])
    .await;
    assert_eq!(answer.code, "2.04", "{}", answer.output);

    // a command larger than a block (1024 bytes) comes block-wise (Block2); here for a
    // NON request: libcoap 4.3's client does not take Block2 in a separate response to a
    // CON (docs/coap.md)
    let payload: String = (0..3000u32)
        .map(|i| char::from(b'0' + (i % 10) as u8))
        .collect();
    let file = dir.path().join("command.out");
    let (auth, target, out) = (
        libcoap::basic_option("dev1@app1", "secret"),
        url(&server, "/v1/telemetry?ct=15"),
        file.to_str().unwrap().to_owned(),
    );
    let waiting = tokio::spawn(async move {
        coap_client(&[
            "-N", "-o", &out, "-m", "post", "-O", &auth, "-e", "w", &target,
        ])
        .await
    });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    send_command(&server, "big", "text/plain", payload.clone().into_bytes()).await;
    let answer = tokio::time::timeout(Duration::from_secs(20), waiting)
        .await
        .expect("the device is answered")
        .unwrap();
    assert_eq!(answer.code, "2.05", "{}", answer.output);
    assert!(
        answer.output.contains("Block2:0/M/1024") && answer.output.contains("Size2:3000"),
        "{}",
        answer.output
    );
    assert!(answer.line.contains("Block2:2/_/1024"), "{}", answer.line);
    assert_eq!(std::fs::read_to_string(&file).unwrap(), payload);
}

/// Drops off a command for app1/dev1 through the command API.
async fn send_command(server: &LocalRunner, name: &str, content_type: &str, body: Vec<u8>) {
    let token = server.admin_token();
    let (user, token) = token.split_once(':').unwrap();
    let sent = reqwest::Client::new()
        .post(format!(
            "{}/api/command/v1alpha1/apps/app1/devices/dev1?command={name}",
            server.base
        ))
        .basic_auth(user, Some(token))
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(sent.status().as_u16(), 202);
}

/// A raw request: POST /v1/{channel} with these credentials and message id.
fn request(kind: MessageType, id: u16, channel: &str, payload: &[u8]) -> Vec<u8> {
    let mut packet = Packet::new();
    packet.header.set_type(kind);
    packet.header.code = MessageClass::Request(RequestType::Post);
    packet.header.message_id = id;
    packet.set_token(vec![7, 7]);
    packet.add_option(CoapOption::UriPath, b"v1".to_vec());
    packet.add_option(CoapOption::UriPath, channel.as_bytes().to_vec());
    let encoded = base64::engine::general_purpose::STANDARD.encode("dev1@app1:secret");
    packet.add_option(
        CoapOption::Unknown(4209),
        format!("Basic {encoded}").into_bytes(),
    );
    packet.payload = payload.to_vec();
    packet.to_bytes().unwrap()
}

async fn receive(socket: &tokio::net::UdpSocket) -> Vec<u8> {
    let mut buffer = vec![0; 2048];
    let n = tokio::time::timeout(Duration::from_secs(10), socket.recv(&mut buffer))
        .await
        .expect("an answer within 10 s")
        .unwrap();
    buffer.truncate(n);
    buffer
}

#[tokio::test]
async fn duplicates_are_answered_from_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let server = LocalRunner::start(dir.path()).await;
    setup(&server).await;
    let admin = server.admin_token();
    let mut events = server
        .websocket("/stream/app1", admin.split_once(':').unwrap())
        .await;
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket.connect(server.coap).await.unwrap();

    for (kind, id) in [
        (MessageType::Confirmable, 0x1234),
        (MessageType::NonConfirmable, 0x1235),
    ] {
        let datagram = request(kind, id, "dup", b"once");
        socket.send(&datagram).await.unwrap();
        let first = receive(&socket).await;
        let answer = Packet::from_bytes(&first).unwrap();
        assert_eq!(
            answer.header.code,
            MessageClass::Response(ResponseType::Changed)
        );
        assert_eq!(answer.get_token(), &[7, 7]);
        if kind == MessageType::Confirmable {
            assert_eq!(answer.header.get_type(), MessageType::Acknowledgement);
            assert_eq!(answer.header.message_id, id);
        } else {
            assert_eq!(answer.header.get_type(), MessageType::NonConfirmable);
        }
        // the same message again: the same answer, and no second event
        socket.send(&datagram).await.unwrap();
        let second = receive(&socket).await;
        assert_eq!(second, first, "the cached answer");
        let event = next_event(&mut events).await;
        assert_eq!(event["subject"], "dup");
        no_event(&mut events).await;
    }

    // a new message id is a new publish
    socket
        .send(&request(MessageType::Confirmable, 0x1236, "again", b"x"))
        .await
        .unwrap();
    let answer = Packet::from_bytes(&receive(&socket).await).unwrap();
    assert_eq!(
        answer.header.code,
        MessageClass::Response(ResponseType::Changed)
    );
    assert_eq!(next_event(&mut events).await["subject"], "again");

    // a CoAP ping (empty CON) is answered with a Reset; garbage in a CON with a Reset
    let mut ping = Packet::new();
    ping.header.set_type(MessageType::Confirmable);
    ping.header.code = MessageClass::Empty;
    ping.header.message_id = 0x2000;
    socket.send(&ping.to_bytes().unwrap()).await.unwrap();
    let pong = Packet::from_bytes(&receive(&socket).await).unwrap();
    assert_eq!(pong.header.get_type(), MessageType::Reset);
    assert_eq!(pong.header.message_id, 0x2000);
    socket.send(&[0x40, 0x02, 0x20, 0x01, 0xf0]).await.unwrap();
    let reset = Packet::from_bytes(&receive(&socket).await).unwrap();
    assert_eq!(reset.header.get_type(), MessageType::Reset);
    assert_eq!(reset.header.message_id, 0x2001);

    // a separate response is sent again until the client acknowledges it
    let mut waiting =
        Packet::from_bytes(&request(MessageType::Confirmable, 0x2100, "sep", b"s")).unwrap();
    waiting.add_option(CoapOption::UriQuery, b"ct=1".to_vec());
    socket.send(&waiting.to_bytes().unwrap()).await.unwrap();
    let ack = Packet::from_bytes(&receive(&socket).await).unwrap();
    assert_eq!(ack.header.get_type(), MessageType::Acknowledgement);
    assert_eq!(ack.header.code, MessageClass::Empty);
    assert_eq!(ack.header.message_id, 0x2100);
    let first = receive(&socket).await;
    let separate = Packet::from_bytes(&first).unwrap();
    assert_eq!(separate.header.get_type(), MessageType::Confirmable);
    assert_eq!(
        separate.header.code,
        MessageClass::Response(ResponseType::Changed)
    );
    assert_eq!(separate.get_token(), &[7, 7]);
    assert_eq!(
        receive(&socket).await,
        first,
        "sent again after ACK_TIMEOUT"
    );
    let mut acknowledgement = Packet::new();
    acknowledgement
        .header
        .set_type(MessageType::Acknowledgement);
    acknowledgement.header.code = MessageClass::Empty;
    acknowledgement.header.message_id = separate.header.message_id;
    socket
        .send(&acknowledgement.to_bytes().unwrap())
        .await
        .unwrap();
    // the next one would come 4 to 6 s later
    let mut buffer = vec![0; 2048];
    let more = tokio::time::timeout(Duration::from_millis(6500), socket.recv(&mut buffer)).await;
    assert!(more.is_err(), "nothing after the ACK: {more:?}");
}

/// A raw POST that waits `ct` seconds for a command.
fn waiting_request(id: u16) -> Vec<u8> {
    let mut packet =
        Packet::from_bytes(&request(MessageType::Confirmable, id, "wait", b"w")).unwrap();
    packet.add_option(CoapOption::UriQuery, b"ct=3".to_vec());
    packet.to_bytes().unwrap()
}

#[tokio::test]
async fn a_flooding_peer_does_not_starve_others() {
    let dir = tempfile::tempdir().unwrap();
    let server = LocalRunner::start(dir.path()).await;
    setup(&server).await;
    let flood = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    flood.connect(server.coap).await.unwrap();
    // 20 exchanges that each wait 3 s for a command: 8 are taken (an empty ACK each),
    // the others are refused with 4.29 and Max-Age
    for id in 0..20u16 {
        flood.send(&waiting_request(0x3000 + id)).await.unwrap();
    }
    let (mut taken, mut refused) = (0, 0);
    for _ in 0..20 {
        let answer = Packet::from_bytes(&receive(&flood).await).unwrap();
        match answer.header.code {
            MessageClass::Empty => taken += 1,
            MessageClass::Response(ResponseType::TooManyRequests) => {
                assert!(answer.get_first_option(CoapOption::MaxAge).is_some());
                let body: Value = serde_json::from_slice(&answer.payload).unwrap();
                assert_eq!(body["error"], "TooManyRequests");
                refused += 1;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!((taken, refused), (8, 12));
    // meanwhile another peer publishes at once
    let other = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    other.connect(server.coap).await.unwrap();
    other
        .send(&request(MessageType::Confirmable, 1, "other", b"x"))
        .await
        .unwrap();
    let answer = Packet::from_bytes(&receive(&other).await).unwrap();
    assert_eq!(
        answer.header.code,
        MessageClass::Response(ResponseType::Changed)
    );
}
