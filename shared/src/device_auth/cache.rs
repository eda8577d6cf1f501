//! Successful password checks, remembered so that the slow hash (bcrypt, SHA-512-crypt)
//! runs at most once per device and password while nothing changes.
//!
//! Entries are keyed by a keyed SHA-256 of the application and device (names and
//! `uid`s), the device's `resourceVersion` and what was presented: any write to the
//! device (a new password, a removed credential) changes the `resourceVersion`, so old
//! entries are simply never found again. The cache holds hashes, never passwords, and is
//! bounded (least recently used entries go first).

use super::credentials::Presented;
use crate::model::{Application, Device};
use rand::TryRngCore;
use sha2::{Digest, Sha256};

/// A bounded set of verified (device, password) pairs.
pub struct VerifiedPasswords {
    entries: quick_cache::sync::Cache<[u8; 32], ()>,
    secret: [u8; 32],
    slow_checks: std::sync::atomic::AtomicU64,
}

impl VerifiedPasswords {
    pub const DEFAULT_CAPACITY: usize = 100_000;

    pub fn new(capacity: usize) -> Self {
        // from the operating system: `rand::random` would seed a thread's generator, and
        // its CPU feature detection (`cpuid`, slow in a virtual machine) is a function's
        // start too
        let mut secret = [0; 32];
        rand::rngs::OsRng
            .try_fill_bytes(&mut secret)
            .expect("the operating system's random number generator");
        Self {
            entries: quick_cache::sync::Cache::new(capacity),
            secret,
            slow_checks: Default::default(),
        }
    }

    pub(super) fn key(
        &self,
        app: &Application,
        device: &Device,
        presented: &Presented<'_>,
    ) -> [u8; 32] {
        let (kind, name) = presented.identity();
        let mut hash = Sha256::new();
        for part in [
            &self.secret[..],
            app.metadata.uid.as_bytes(),
            device.metadata.uid.as_bytes(),
            device.metadata.resource_version.as_bytes(),
            kind.as_bytes(),
            name.as_bytes(),
            presented.password().as_bytes(),
        ] {
            hash.update((part.len() as u64).to_le_bytes());
            hash.update(part);
        }
        hash.finalize().into()
    }

    pub(super) fn contains(&self, key: &[u8; 32]) -> bool {
        self.entries.get(key).is_some()
    }

    pub(super) fn insert(&self, key: [u8; 32]) {
        self.entries.insert(key, ());
    }

    /// Counts a check against the stored hashes (a cache miss).
    pub(super) fn count_slow_check(&self) {
        self.slow_checks
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// How many checks had to run the stored hashes so far.
    pub fn slow_checks(&self) -> u64 {
        self.slow_checks.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// How many verified pairs are remembered.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resource(name: &str) -> crate::model::Resource {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "uid": format!("{name}-uid"),
                "creationTimestamp": "2026-01-01T00:00:00Z", "generation": 1,
                "resourceVersion": "1"},
        }))
        .unwrap()
    }

    #[test]
    fn keys_are_keyed_by_a_secret_of_each_cache() {
        let (app, device) = (resource("app1"), resource("dev1"));
        let presented = Presented::Password {
            id: "dev1",
            password: "secret",
        };
        let (one, other) = (VerifiedPasswords::new(10), VerifiedPasswords::new(10));
        // the same pair: the same key within a cache, another in another cache
        assert_eq!(
            one.key(&app, &device, &presented),
            one.key(&app, &device, &presented)
        );
        assert_ne!(
            one.key(&app, &device, &presented),
            other.key(&app, &device, &presented)
        );
        assert_ne!(one.secret, [0; 32]);
        one.insert(one.key(&app, &device, &presented));
        assert!(one.contains(&one.key(&app, &device, &presented)));
        assert!(!one.contains(&other.key(&app, &device, &presented)));
    }
}
