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
        Self {
            entries: quick_cache::sync::Cache::new(capacity),
            secret: rand::random(),
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
