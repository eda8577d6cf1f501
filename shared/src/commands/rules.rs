//! The rules of commands, each in one place: which names a command may have, which
//! devices take commands, which statuses an answer may carry. The answer's correlation
//! (which device may answer a command) is [`Command::is_for`](super::Command::is_for).
//! [`CommandService`](super::CommandService) applies them for HTTP and MQTT alike.

use super::{CommandError, MAX_TTL_SECONDS};
use crate::model::Device;

/// Characters a command name never holds: it is one level of the MQTT topics
/// `command/{app}/{device}/{command}` and `cmd/{app}/{device}/{command}`, where `/`
/// separates levels and `+`/`#` are wildcards of subscriptions.
pub const FORBIDDEN_NAME_CHARS: [char; 3] = ['/', '+', '#'];

/// A command's name: not empty, and usable as one MQTT topic level (no `/`, `+`, `#`).
pub fn check_name(name: &str) -> Result<(), CommandError> {
    if name.is_empty() || name.contains(FORBIDDEN_NAME_CHARS) {
        return Err(CommandError::InvalidName);
    }
    Ok(())
}

/// How long a command may wait for its device: 1 s to [`MAX_TTL_SECONDS`].
pub fn check_ttl(seconds: u64) -> Result<(), CommandError> {
    if seconds == 0 || seconds > MAX_TTL_SECONDS {
        return Err(CommandError::InvalidTtl);
    }
    Ok(())
}

/// Whether a device takes commands: not disabled, not being deleted.
pub fn takes_commands(device: &Device) -> bool {
    !device.is_disabled() && !device.is_deleting()
}

/// The status of a device's answer, as written in a request or a topic: 100 to 599.
pub fn response_status(text: &str) -> Result<u16, CommandError> {
    text.parse::<u16>()
        .ok()
        .filter(|s| valid_status(*s))
        .ok_or(CommandError::InvalidStatus)
}

/// Whether a status is one an answer may carry (100 to 599).
pub fn valid_status(status: u16) -> bool {
    (100..=599).contains(&status)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn device(spec: serde_json::Value) -> Device {
        serde_json::from_value(json!({
            "metadata": {"name": "d1", "application": "app1", "uid": "u1",
                         "creationTimestamp": "2024-01-01T00:00:00Z", "generation": 1,
                         "resourceVersion": "1"},
            "spec": spec,
        }))
        .unwrap()
    }

    #[test]
    fn names_are_one_topic_level() {
        for good in ["reboot", "set-temperature", "a.b", "ä", "with space"] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in ["", "a/b", "/", "+", "a+", "#", "x#", "cmd/+/#"] {
            assert!(
                matches!(check_name(bad), Err(CommandError::InvalidName)),
                "{bad}"
            );
        }
    }

    #[test]
    fn ttls_are_bounded() {
        assert!(matches!(check_ttl(0), Err(CommandError::InvalidTtl)));
        assert!(check_ttl(1).is_ok());
        assert!(check_ttl(MAX_TTL_SECONDS).is_ok());
        assert!(matches!(
            check_ttl(MAX_TTL_SECONDS + 1),
            Err(CommandError::InvalidTtl)
        ));
    }

    #[test]
    fn disabled_or_deleting_devices_take_no_commands() {
        assert!(takes_commands(&device(json!({}))));
        assert!(takes_commands(&device(
            json!({"core": {"disabled": false}})
        )));
        assert!(!takes_commands(&device(
            json!({"core": {"disabled": true}})
        )));
        // not a boolean: not disabled (the registry refuses such specs on write)
        assert!(takes_commands(&device(
            json!({"core": {"disabled": "yes"}})
        )));
        let mut deleting = device(json!({}));
        deleting.metadata.deletion_timestamp = Some(chrono::Utc::now());
        assert!(!takes_commands(&deleting));
    }

    #[test]
    fn statuses_are_100_to_599() {
        assert_eq!(response_status("200").unwrap(), 200);
        assert_eq!(response_status("100").unwrap(), 100);
        assert_eq!(response_status("599").unwrap(), 599);
        for bad in ["99", "600", "", "abc", "-1", "2000000"] {
            assert!(
                matches!(response_status(bad), Err(CommandError::InvalidStatus)),
                "{bad}"
            );
        }
    }
}
