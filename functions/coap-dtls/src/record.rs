//! Just enough of the DTLS 1.2 record and handshake framing (RFC 6347 §4.1, §4.2.2) to
//! route datagrams before OpenSSL sees them: is this a ClientHello, and which PSK identity
//! does a ClientKeyExchange carry. Nothing here decides about security: OpenSSL still
//! processes (and authenticates) every byte.

const RECORD_HEADER: usize = 13;
const HANDSHAKE_HEADER: usize = 12;
const CONTENT_HANDSHAKE: u8 = 22;
const CLIENT_HELLO: u8 = 1;
const CLIENT_KEY_EXCHANGE: u8 = 16;

/// The unencrypted (epoch 0) handshake records of a datagram: (msg_type, fragment offset,
/// fragment body) for each handshake message fragment.
fn epoch0_handshake_fragments(datagram: &[u8]) -> impl Iterator<Item = (u8, usize, &[u8])> {
    let mut rest = datagram;
    let mut records = std::iter::from_fn(move || {
        if rest.len() < RECORD_HEADER {
            return None;
        }
        let content_type = rest[0];
        let epoch = u16::from_be_bytes([rest[3], rest[4]]);
        let len = u16::from_be_bytes([rest[11], rest[12]]) as usize;
        let body = rest.get(RECORD_HEADER..RECORD_HEADER + len)?;
        rest = &rest[RECORD_HEADER + len..];
        Some((content_type, epoch, body))
    });
    let mut current: &[u8] = &[];
    std::iter::from_fn(move || {
        loop {
            if current.len() >= HANDSHAKE_HEADER {
                let msg_type = current[0];
                let offset = u32::from_be_bytes([0, current[6], current[7], current[8]]) as usize;
                let frag_len =
                    u32::from_be_bytes([0, current[9], current[10], current[11]]) as usize;
                let Some(body) = current.get(HANDSHAKE_HEADER..HANDSHAKE_HEADER + frag_len) else {
                    current = &[];
                    continue;
                };
                current = &current[HANDSHAKE_HEADER + frag_len..];
                return Some((msg_type, offset, body));
            }
            let (content_type, epoch, body) = records.next()?;
            current = if content_type == CONTENT_HANDSHAKE && epoch == 0 {
                body
            } else {
                &[]
            };
        }
    })
}

/// Whether a datagram starts with an unencrypted ClientHello: the only datagram that may
/// open a session.
pub(crate) fn is_client_hello(datagram: &[u8]) -> bool {
    datagram.len() >= RECORD_HEADER + HANDSHAKE_HEADER
        && datagram[0] == CONTENT_HANDSHAKE
        && datagram[3] == 0
        && datagram[4] == 0
        && datagram[RECORD_HEADER] == CLIENT_HELLO
}

/// The PSK identity of a ClientKeyExchange in this datagram, if it has one: for every PSK
/// key exchange (PSK, DHE_PSK, ECDHE_PSK, RSA_PSK; RFC 4279 §2, RFC 5489 §2) the message
/// starts with `opaque psk_identity<0..2^16-1>`.
pub(crate) fn psk_identity(datagram: &[u8]) -> Option<&[u8]> {
    epoch0_handshake_fragments(datagram).find_map(|(msg_type, offset, body)| {
        if msg_type != CLIENT_KEY_EXCHANGE || offset != 0 || body.len() < 2 {
            return None;
        }
        let len = u16::from_be_bytes([body[0], body[1]]) as usize;
        body.get(2..2 + len)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(content_type: u8, epoch: u16, body: &[u8]) -> Vec<u8> {
        let mut r = vec![content_type, 0xfe, 0xfd];
        r.extend_from_slice(&epoch.to_be_bytes());
        r.extend_from_slice(&[0; 6]);
        r.extend_from_slice(&(body.len() as u16).to_be_bytes());
        r.extend_from_slice(body);
        r
    }

    fn handshake(msg_type: u8, body: &[u8]) -> Vec<u8> {
        let len = (body.len() as u32).to_be_bytes();
        let mut h = vec![msg_type, len[1], len[2], len[3], 0, 2, 0, 0, 0];
        h.extend_from_slice(&len[1..]);
        h.extend_from_slice(body);
        h
    }

    #[test]
    fn finds_the_psk_identity_after_other_records() {
        let mut cke = vec![0, 9];
        cke.extend_from_slice(b"dev@app-1");
        let mut datagram = record(22, 0, &handshake(11, &[0, 0, 0]));
        datagram.extend(record(22, 0, &handshake(16, &cke)));
        datagram.extend(record(20, 0, &[1]));
        assert_eq!(psk_identity(&datagram), Some(&b"dev@app-1"[..]));
    }

    #[test]
    fn ignores_encrypted_truncated_and_other_messages() {
        let mut cke = vec![0, 9];
        cke.extend_from_slice(b"dev@app-1");
        assert_eq!(psk_identity(&record(22, 1, &handshake(16, &cke))), None);
        let whole = record(22, 0, &handshake(16, &cke));
        assert_eq!(psk_identity(&whole[..whole.len() - 1]), None);
        assert_eq!(psk_identity(&record(22, 0, &handshake(15, &cke))), None);
        // an ECDHE ClientKeyExchange: a 65-byte point does not fit as a 16-bit length
        let mut ecdhe = vec![65, 4];
        ecdhe.extend_from_slice(&[7; 64]);
        assert_eq!(psk_identity(&record(22, 0, &handshake(16, &ecdhe))), None);
        assert_eq!(psk_identity(&[]), None);
    }

    #[test]
    fn recognises_a_client_hello() {
        assert!(is_client_hello(&record(
            22,
            0,
            &handshake(1, &[0xfe, 0xfd])
        )));
        assert!(!is_client_hello(&record(
            22,
            1,
            &handshake(1, &[0xfe, 0xfd])
        )));
        assert!(!is_client_hello(&record(
            23,
            0,
            &handshake(1, &[0xfe, 0xfd])
        )));
        assert!(!is_client_hello(&[22, 0xfe]));
    }
}
