//! Names of applications and devices, parsed once at the edge.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error(
        "application names must be lowercase DNS labels (1-63 characters of a-z, 0-9 and '-', starting and ending with a letter or digit): {0:?}"
    )]
    InvalidApplication(String),
    #[error("device names must be 1-{max} characters without control characters, '/', '+', '#', '*' or '?': {name:?}", max = DeviceName::MAX_LEN)]
    InvalidDevice { name: String },
}

/// The name of an application: a lowercase RFC 1123 DNS label.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct AppName(String);

impl AppName {
    /// Longest application name accepted, as for a DNS label.
    pub const MAX_LEN: usize = 63;

    /// Parses an application name.
    pub fn parse(name: &str) -> Result<Self, NameError> {
        let bytes = name.as_bytes();
        let valid = !bytes.is_empty()
            && bytes.len() <= Self::MAX_LEN
            && bytes
                .iter()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
            && bytes[0] != b'-'
            && bytes[bytes.len() - 1] != b'-';
        if valid {
            Ok(Self(name.to_owned()))
        } else {
            Err(NameError::InvalidApplication(name.to_owned()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The name of a device, unique within its application.
///
/// Device names become MQTT topic levels (`dt/{app}/{device}/...`) and parts of IoT
/// policy resources, so the MQTT level separator and wildcards and the IoT policy
/// wildcards (`*`, `?`) are refused, as are control characters.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct DeviceName(String);

impl DeviceName {
    /// Longest device name accepted, in bytes.
    pub const MAX_LEN: usize = 256;

    /// Parses a device name.
    pub fn parse(name: &str) -> Result<Self, NameError> {
        let valid = !name.is_empty()
            && name.len() <= Self::MAX_LEN
            && !name
                .chars()
                .any(|c| c.is_control() || matches!(c, '/' | '+' | '#' | '*' | '?'));
        if valid {
            Ok(Self(name.to_owned()))
        } else {
            Err(NameError::InvalidDevice {
                name: name.to_owned(),
            })
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

macro_rules! string_conversions {
    ($ty:ident) => {
        impl TryFrom<String> for $ty {
            type Error = NameError;
            fn try_from(value: String) -> Result<Self, Self::Error> {
                Self::parse(&value)
            }
        }
        impl From<$ty> for String {
            fn from(value: $ty) -> Self {
                value.0
            }
        }
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl AsRef<str> for $ty {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

string_conversions!(AppName);
string_conversions!(DeviceName);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn application_names_are_dns_labels() {
        for ok in ["a", "app1", "my-app", "0", &"a".repeat(63)] {
            assert!(AppName::parse(ok).is_ok(), "{ok} should be accepted");
        }
        for bad in [
            "",
            "App",
            "-app",
            "app-",
            "my_app",
            "a.b",
            "ä",
            &"a".repeat(64),
        ] {
            assert!(AppName::parse(bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn device_names_refuse_topic_separators_and_control_characters() {
        for ok in ["device1", "Device 1", "urn:dev:1", "a@b", "änderung"] {
            assert!(DeviceName::parse(ok).is_ok(), "{ok} should be accepted");
        }
        for bad in [
            "",
            "a/b",
            "a+b",
            "a#",
            "a*",
            "a?",
            "line\nbreak",
            &"d".repeat(257),
        ] {
            assert!(DeviceName::parse(bad).is_err(), "{bad:?} should be refused");
        }
    }
}
