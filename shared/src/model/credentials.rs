//! Device credentials as the registry stores them.
//!
//! A device lists its credentials in `spec.authentication.credentials` (or the legacy
//! `spec.credentials.credentials`). Plain passwords are hashed with SHA-512-crypt before
//! anything is stored; bcrypt and SHA-512-crypt hashes are stored as given, up to a cost
//! ([`MAX_BCRYPT_COST`], [`MAX_SHA512_ROUNDS`]): a tenant cannot make each check of its
//! device's password cost more than a bounded time of everyone's CPU. A stored hash above
//! the bound (written before it existed) never verifies, and is never computed.

use serde::{Deserialize, Serialize};
use sha_crypt::{PasswordHasher, PasswordVerifier, ShaCrypt};

/// One credential entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub enum Credential {
    /// A password for the device itself: `{"pass": ...}`.
    #[serde(rename = "pass")]
    Password(Password),
    /// A username and password, optionally unique across the application: `{"user": {...}}`.
    #[serde(rename = "user")]
    UsernamePassword {
        username: String,
        password: Password,
        #[serde(default)]
        unique: bool,
    },
    /// A client certificate, given as its PEM text or as base64 of it: `{"cert": "..."}`.
    #[serde(rename = "cert")]
    Certificate(String),
    /// A pre-shared key, `{"psk": {"key": "<base64>", "validity": {...}}}`, kept as given.
    #[serde(rename = "psk")]
    PreSharedKey(serde_json::Map<String, serde_json::Value>),
}

/// A password: plain (on input only), or a bcrypt or SHA-512-crypt hash.
///
/// A bare string, as in `{"pass": "secret"}`, is a plain password.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Password {
    Bare(String),
    Typed(TypedPassword),
}

/// A password in object form: `{"plain": ..}`, `{"bcrypt": ..}` or `{"sha512": ..}`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub enum TypedPassword {
    Plain(String),
    Bcrypt(String),
    Sha512(String),
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Bare(_) | Self::Typed(TypedPassword::Plain(_)) => {
                f.write_str("Password(plain, redacted)")
            }
            Self::Typed(TypedPassword::Bcrypt(_)) => f.write_str("Password(bcrypt)"),
            Self::Typed(TypedPassword::Sha512(_)) => f.write_str("Password(sha512)"),
        }
    }
}

impl std::fmt::Debug for TypedPassword {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&Password::Typed(self.clone()), f)
    }
}

/// The highest bcrypt cost accepted (as Eclipse Hono's default `max-bcrypt-cost-factor`):
/// about 90 ms per check on one core of the development machine.
pub const MAX_BCRYPT_COST: u32 = 10;
/// The most SHA-512-crypt rounds accepted (the default, 5,000, takes about 4.3 ms per check
/// on one core of the development machine; this about 45 ms).
pub const MAX_SHA512_ROUNDS: u32 = 50_000;

/// The rounds of a SHA-512-crypt hash (`$6$rounds=N$...`, 5,000 without the parameter).
fn sha512_rounds(hash: &str) -> Option<u32> {
    let rest = hash.strip_prefix("$6$")?;
    match rest.strip_prefix("rounds=") {
        Some(rounds) => rounds.split('$').next()?.parse().ok(),
        None => Some(5_000),
    }
}

/// Whether a stored hash may be computed: its cost is within the bounds.
fn within_cost(password: &TypedPassword) -> bool {
    match password {
        TypedPassword::Plain(_) => true,
        TypedPassword::Bcrypt(hash) => hash
            .parse::<bcrypt::HashParts>()
            .is_ok_and(|parts| parts.get_cost() <= MAX_BCRYPT_COST),
        TypedPassword::Sha512(hash) => {
            sha512_rounds(hash).is_some_and(|rounds| rounds <= MAX_SHA512_ROUNDS)
        }
    }
}

/// Why a password could not be accepted or hashed.
#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    #[error("passwords must not be empty")]
    Empty,
    #[error("not a valid bcrypt hash")]
    InvalidBcrypt,
    #[error("not a valid SHA-512-crypt hash (expected the $6$ format)")]
    InvalidSha512,
    #[error("bcrypt cost {0} is above the highest allowed, {MAX_BCRYPT_COST}")]
    BcryptCost(u32),
    #[error("SHA-512-crypt rounds {0} are above the most allowed, {MAX_SHA512_ROUNDS}")]
    Sha512Rounds(u32),
    #[error("hashing the password failed: {0}")]
    Hashing(String),
}

impl Password {
    /// The password as it may be stored: plain text is hashed, hashes are checked.
    pub fn into_stored(self) -> Result<Self, PasswordError> {
        match self {
            Self::Bare(plain) | Self::Typed(TypedPassword::Plain(plain)) => {
                if plain.is_empty() {
                    return Err(PasswordError::Empty);
                }
                let hash = ShaCrypt::SHA512
                    .hash_password(plain.as_bytes())
                    .map_err(|e| PasswordError::Hashing(e.to_string()))?;
                Ok(Self::Typed(TypedPassword::Sha512(hash.to_string())))
            }
            Self::Typed(TypedPassword::Bcrypt(hash)) => {
                let parts = hash
                    .parse::<bcrypt::HashParts>()
                    .map_err(|_| PasswordError::InvalidBcrypt)?;
                if parts.get_cost() > MAX_BCRYPT_COST {
                    return Err(PasswordError::BcryptCost(parts.get_cost()));
                }
                Ok(Self::Typed(TypedPassword::Bcrypt(hash)))
            }
            Self::Typed(TypedPassword::Sha512(hash)) => {
                if !hash.starts_with("$6$") || sha_crypt::PasswordHashRef::new(&hash).is_err() {
                    return Err(PasswordError::InvalidSha512);
                }
                let rounds = sha512_rounds(&hash).ok_or(PasswordError::InvalidSha512)?;
                if rounds > MAX_SHA512_ROUNDS {
                    return Err(PasswordError::Sha512Rounds(rounds));
                }
                Ok(Self::Typed(TypedPassword::Sha512(hash)))
            }
        }
    }

    /// Whether `candidate` is this password. Plain text is compared in constant time; a
    /// hash above the cost bounds is never computed and never matches.
    ///
    /// This is CPU work of up to tens of milliseconds: call it off the async runtime.
    pub fn verify(&self, candidate: &str) -> bool {
        if let Self::Typed(typed) = self
            && !within_cost(typed)
        {
            tracing::warn!("a stored password hash is above the cost bounds and never verifies");
            return false;
        }
        match self {
            Self::Bare(plain) | Self::Typed(TypedPassword::Plain(plain)) => {
                use subtle::ConstantTimeEq;
                plain.as_bytes().ct_eq(candidate.as_bytes()).into()
            }
            Self::Typed(TypedPassword::Bcrypt(hash)) => {
                bcrypt::verify(candidate, hash).unwrap_or(false)
            }
            Self::Typed(TypedPassword::Sha512(hash)) => ShaCrypt::SHA512
                .verify_password(candidate.as_bytes(), hash.as_str())
                .is_ok(),
        }
    }

    /// Whether this password is held as plain text.
    pub fn is_plain(&self) -> bool {
        matches!(self, Self::Bare(_) | Self::Typed(TypedPassword::Plain(_)))
    }
}

impl Credential {
    /// The credential as it may be stored: every password hashed.
    pub fn into_stored(self) -> Result<Self, PasswordError> {
        Ok(match self {
            Self::Password(p) => Self::Password(p.into_stored()?),
            Self::UsernamePassword {
                username,
                password,
                unique,
            } => Self::UsernamePassword {
                username,
                password: password.into_stored()?,
                unique,
            },
            other @ (Self::Certificate(_) | Self::PreSharedKey(_)) => other,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(value: serde_json::Value) -> Credential {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn every_input_form_parses() {
        assert_eq!(
            parse(json!({"pass": "x"})),
            Credential::Password(Password::Bare("x".into()))
        );
        assert_eq!(
            parse(json!({"pass": {"plain": "x"}})),
            Credential::Password(Password::Typed(TypedPassword::Plain("x".into())))
        );
        assert!(matches!(
            parse(json!({"user": {"username": "u", "password": "p", "unique": true}})),
            Credential::UsernamePassword { unique: true, .. }
        ));
        assert!(matches!(
            parse(json!({"cert": "PEM"})),
            Credential::Certificate(_)
        ));
        assert!(matches!(
            parse(json!({"psk": {"key": "bXlwc2s="}})),
            Credential::PreSharedKey(_)
        ));
        assert!(serde_json::from_value::<Credential>(json!({"token": "x"})).is_err());
        assert!(serde_json::from_value::<Credential>(json!({"pass": {"md5": "x"}})).is_err());
    }

    #[test]
    fn plain_passwords_are_stored_as_sha512_crypt_and_still_verify() {
        let stored = Credential::Password(Password::Bare("s3cret".into()))
            .into_stored()
            .unwrap();
        let Credential::Password(Password::Typed(TypedPassword::Sha512(hash))) = &stored else {
            panic!("expected a sha512 hash, got {stored:?}");
        };
        assert!(hash.starts_with("$6$"));
        assert!(!hash.contains("s3cret"));
        let Credential::Password(password) = stored else {
            unreachable!()
        };
        assert!(password.verify("s3cret"));
        assert!(!password.verify("s3cret "));
    }

    #[test]
    fn given_hashes_are_kept_and_verified() {
        let bcrypt_hash = bcrypt::hash("pw", 4).unwrap();
        let stored = Password::Typed(TypedPassword::Bcrypt(bcrypt_hash.clone()))
            .into_stored()
            .unwrap();
        assert_eq!(stored, Password::Typed(TypedPassword::Bcrypt(bcrypt_hash)));
        assert!(stored.verify("pw"));
        assert!(!stored.verify("other"));

        // from `openssl passwd -6 -salt saltsalt secret`
        let sha = "$6$saltsalt$TVLlQcbpFVof5W3Yz4DTP6gRstiNuHwwTt6GLc1E5n0U0aDehy0S5knV8wiOQSpT0Y77vwPZN.Pq.H91p5hVO1";
        let stored = Password::Typed(TypedPassword::Sha512(sha.into()))
            .into_stored()
            .unwrap();
        assert!(stored.verify("secret"));
        assert!(!stored.verify("Secret"));
    }

    #[test]
    fn malformed_hashes_and_empty_passwords_are_refused() {
        assert!(
            Password::Typed(TypedPassword::Bcrypt("nope".into()))
                .into_stored()
                .is_err()
        );
        assert!(
            Password::Typed(TypedPassword::Sha512("$1$md5".into()))
                .into_stored()
                .is_err()
        );
        assert!(Password::Bare(String::new()).into_stored().is_err());
    }

    #[test]
    fn hash_costs_are_bounded() {
        let at_bound = bcrypt::hash("pw", MAX_BCRYPT_COST).unwrap();
        assert!(
            Password::Typed(TypedPassword::Bcrypt(at_bound))
                .into_stored()
                .is_ok()
        );
        // a hash in the cost-17 format (about 8 s per check, were it computed)
        let costly = bcrypt::hash("pw", 4).unwrap().replacen("$04$", "$17$", 1);
        let refused = Password::Typed(TypedPassword::Bcrypt(costly.clone())).into_stored();
        assert!(
            matches!(refused, Err(PasswordError::BcryptCost(17))),
            "{refused:?}"
        );
        let started = std::time::Instant::now();
        assert!(!Password::Typed(TypedPassword::Bcrypt(costly)).verify("pw"));
        assert!(
            started.elapsed() < std::time::Duration::from_millis(50),
            "never computed"
        );

        let sha = "$6$rounds=60000$saltsalt$TVLlQcbpFVof5W3Yz4DTP6gRstiNuHwwTt6GLc1E5n0U0aDehy0S5knV8wiOQSpT0Y77vwPZN.Pq.H91p5hVO1";
        let refused = Password::Typed(TypedPassword::Sha512(sha.into())).into_stored();
        assert!(
            matches!(refused, Err(PasswordError::Sha512Rounds(60_000))),
            "{refused:?}"
        );
        assert!(!Password::Typed(TypedPassword::Sha512(sha.into())).verify("secret"));
        assert_eq!(sha512_rounds("$6$saltsalt$abc"), Some(5_000));
        assert_eq!(sha512_rounds("$6$rounds=1000$salt$abc"), Some(1_000));
    }

    #[test]
    fn debug_output_never_shows_a_password() {
        let text = format!(
            "{:?}",
            parse(json!({"user": {"username": "u", "password": "hunter2"}}))
        );
        assert!(!text.contains("hunter2"), "{text}");
    }
}
