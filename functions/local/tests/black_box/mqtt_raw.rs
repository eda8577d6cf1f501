//! MQTT packets written and read by hand, for what a client library would not send (a
//! burst in one write, a forbidden topic) or would hide (the bytes of an answer).

use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub fn string(s: &str) -> Vec<u8> {
    let mut out = u16::try_from(s.len()).unwrap().to_be_bytes().to_vec();
    out.extend_from_slice(s.as_bytes());
    out
}

/// A packet: its first byte, remaining length and body.
pub fn packet(first: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![first];
    let mut length = body.len();
    loop {
        let digit = (length % 128) as u8;
        length /= 128;
        out.push(if length > 0 { digit | 0x80 } else { digit });
        if length == 0 {
            break;
        }
    }
    out.extend_from_slice(body);
    out
}

/// Reads one whole packet (a CONNACK): its first byte and body. Closing with unread
/// bytes would reset the connection, and a reset discards what the broker has not
/// read yet.
pub async fn read_packet(socket: &mut TcpStream) -> Vec<u8> {
    let mut first = [0; 1];
    socket.read_exact(&mut first).await.unwrap();
    let (mut length, mut shift) = (0usize, 0);
    loop {
        let mut digit = [0; 1];
        socket.read_exact(&mut digit).await.unwrap();
        length += usize::from(digit[0] & 0x7F) << shift;
        shift += 7;
        if digit[0] & 0x80 == 0 {
            break;
        }
    }
    let mut rest = vec![0; length];
    socket.read_exact(&mut rest).await.unwrap();
    [first.to_vec(), rest].concat()
}

/// A connection (MQTT `version` 4 or 5) as `(client id, user name, password)`, accepted.
pub async fn connect(
    addr: SocketAddr,
    version: u8,
    (client, user, password): (&str, &str, &str),
) -> TcpStream {
    let mut socket = TcpStream::connect(addr).await.unwrap();
    let mut connect = string("MQTT");
    connect.push(version);
    connect.push(0xC2); // user name, password, clean session
    connect.extend_from_slice(&60u16.to_be_bytes());
    if version == 5 {
        connect.push(0); // no properties
    }
    for s in [client, user, password] {
        connect.extend(string(s));
    }
    socket.write_all(&packet(0x10, &connect)).await.unwrap();
    let connack = read_packet(&mut socket).await;
    assert_eq!(connack[0], 0x20, "CONNACK: {connack:?}");
    // (the return code, or the MQTT 5 reason code, follows the flags)
    assert_eq!(connack[2], 0, "the client is accepted: {connack:?}");
    socket
}

/// A QoS 1 PUBLISH on `topic` with packet id `id`.
pub fn publish_qos1(version: u8, topic: &str, id: u16, payload: &[u8]) -> Vec<u8> {
    let mut body = string(topic);
    body.extend_from_slice(&id.to_be_bytes());
    if version == 5 {
        body.push(0); // no properties
    }
    body.extend_from_slice(payload);
    packet(0x32, &body)
}
