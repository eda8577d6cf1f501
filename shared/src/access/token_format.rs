//! Access tokens in Drogue Cloud's format: `drg_` + 6 alphanumerics (together the
//! prefix), `_`, 30 alphanumerics, then the base62 CRC-32 (IEEE) of all that.
//!
//! The checksum lets a malformed or mistyped token be refused before any lookup. Only a
//! SHA-256 hash of a token is ever stored; the prefix finds the stored entry.

use rand::Rng;
use rand::distr::Alphanumeric;
use sha2::{Digest, Sha256};

const PREFIX_LEN: usize = 10; // "drg_" + 6
const BODY_LEN: usize = PREFIX_LEN + 1 + 30;
const MAX_CRC_LEN: usize = 6; // u32::MAX in base62
const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// A freshly made token: shown to its user once, then only its hash is kept.
pub struct NewToken {
    pub prefix: String,
    pub token: String,
}

impl std::fmt::Debug for NewToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewToken")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// Makes a new random token.
pub fn generate() -> NewToken {
    let mut rng = rand::rng();
    let mut random = |n| -> String {
        (&mut rng)
            .sample_iter(Alphanumeric)
            .take(n)
            .map(char::from)
            .collect()
    };
    let prefix = format!("drg_{}", random(6));
    let body = format!("{prefix}_{}", random(30));
    let token = format!("{body}{}", base62(crc32fast::hash(body.as_bytes())));
    NewToken { prefix, token }
}

/// The prefix of a well-formed token whose checksum holds, else `None`.
pub fn prefix_of(token: &str) -> Option<&str> {
    if !(BODY_LEN + 1..=BODY_LEN + MAX_CRC_LEN).contains(&token.len()) || !token.is_ascii() {
        return None;
    }
    let (body, crc) = token.split_at(BODY_LEN);
    let well_formed = body.starts_with("drg_")
        && body.as_bytes()[PREFIX_LEN] == b'_'
        && body[4..PREFIX_LEN]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric())
        && body[PREFIX_LEN + 1..]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric());
    (well_formed && crc == base62(crc32fast::hash(body.as_bytes()))).then(|| &token[..PREFIX_LEN])
}

/// The hash under which a token is stored (hex SHA-256).
pub fn hash(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Whether `token` is the one stored as `stored_hash`, compared in constant time.
pub fn matches(token: &str, stored_hash: &str) -> bool {
    use subtle::ConstantTimeEq;
    hash(token).as_bytes().ct_eq(stored_hash.as_bytes()).into()
}

fn base62(mut n: u32) -> String {
    let mut digits = Vec::with_capacity(MAX_CRC_LEN);
    loop {
        digits.push(BASE62[(n % 62) as usize]);
        n /= 62;
        if n == 0 {
            break;
        }
    }
    digits.reverse();
    String::from_utf8(digits).expect("base62 digits are ASCII")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example token of Drogue Cloud's access token service.
    const KNOWN: &str = "drg_012345_01234567890123456789012345678920BetF";

    #[test]
    fn a_token_made_by_drogue_cloud_is_recognised() {
        assert_eq!(prefix_of(KNOWN), Some("drg_012345"));
    }

    #[test]
    fn generated_tokens_have_the_format_and_a_valid_checksum() {
        for _ in 0..100 {
            let new = generate();
            assert_eq!(
                prefix_of(&new.token),
                Some(new.prefix.as_str()),
                "{}",
                new.token
            );
            assert!(new.token.len() > BODY_LEN);
        }
    }

    #[test]
    fn a_changed_character_breaks_the_checksum() {
        let mut bad = KNOWN.to_owned();
        bad.replace_range(20..21, "X");
        assert_eq!(prefix_of(&bad), None);
        for bad in [
            "",
            "drg_",
            "abc_012345_01234567890123456789012345678920BetF",
            &format!("{KNOWN}0"),
        ] {
            assert_eq!(prefix_of(bad), None, "{bad}");
        }
    }

    #[test]
    fn stored_hashes_match_only_their_token() {
        let stored = hash(KNOWN);
        assert_eq!(stored.len(), 64);
        assert!(matches(KNOWN, &stored));
        assert!(!matches(&generate().token, &stored));
    }

    #[test]
    fn debug_output_hides_the_token() {
        let new = generate();
        assert!(!format!("{new:?}").contains(&new.token));
    }
}
