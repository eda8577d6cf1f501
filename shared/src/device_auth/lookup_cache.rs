//! The knobs of the lookup cache of the functions that authenticate devices on every
//! message (`http-endpoint`, `mqtt-ingest`): how long an (application, device) lookup
//! is remembered, and how many are.
//!
//! A remembered lookup costs no DynamoDB read; a change in the registry (a new password,
//! a disabled or deleted device) reaches a warm function within the TTL (see
//! docs/devices.md and docs/deploy.md). `DROGUE_DEVICE_CACHE_TTL=0` turns the cache off:
//! every message then reads the registry once (one BatchGetItem of the application and
//! the device).

use super::{DEFAULT_LOOKUP_TTL, DeviceAuthenticator};
use std::time::Duration;

/// The longest TTL accepted: a change must reach the functions within an hour at most.
pub const MAX_LOOKUP_TTL: Duration = Duration::from_secs(3600);
/// Lookups a function remembers by default (each holds an application and a device, a
/// few KB at most: tens of MB of a 256 MB Lambda at worst).
pub const DEFAULT_FUNCTION_LOOKUP_CAPACITY: usize = 10_000;
/// The most lookups a function may be told to remember.
pub const MAX_LOOKUP_CAPACITY: usize = 1_000_000;

/// `DROGUE_DEVICE_CACHE_TTL` and `DROGUE_DEVICE_CACHE_SIZE`.
#[derive(Debug, Clone, Copy, PartialEq, clap::Args)]
pub struct LookupCache {
    /// Seconds an (application, device) lookup is remembered, so that a device's further
    /// messages cost no registry read; a registry change reaches the function within
    /// this time. 0 turns the cache off (one read per message). At most 3600.
    #[arg(long = "device-cache-ttl", env = "DROGUE_DEVICE_CACHE_TTL", value_name = "DROGUE_DEVICE_CACHE_TTL", default_value = "5", value_parser = ttl)]
    pub device_cache_ttl: Duration,
    /// Lookups remembered at most (the least recently used go first), 1 to 1,000,000.
    #[arg(long = "device-cache-size", env = "DROGUE_DEVICE_CACHE_SIZE", value_name = "DROGUE_DEVICE_CACHE_SIZE", default_value_t = DEFAULT_FUNCTION_LOOKUP_CAPACITY, value_parser = capacity)]
    pub device_cache_size: usize,
}

impl Default for LookupCache {
    fn default() -> Self {
        Self {
            device_cache_ttl: DEFAULT_LOOKUP_TTL,
            device_cache_size: DEFAULT_FUNCTION_LOOKUP_CAPACITY,
        }
    }
}

impl LookupCache {
    /// The authenticator with these settings.
    pub fn apply(&self, auth: DeviceAuthenticator) -> DeviceAuthenticator {
        auth.with_lookup_ttl(self.device_cache_ttl)
            .with_lookup_capacity(self.device_cache_size)
    }
}

/// A number of seconds, 0 to 3600 (fractions allowed).
fn ttl(value: &str) -> Result<Duration, String> {
    value
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s >= 0.0 && *s <= MAX_LOOKUP_TTL.as_secs_f64())
        .map(Duration::from_secs_f64)
        .ok_or_else(|| "must be a number of seconds from 0 (no cache) to 3600".to_owned())
}

fn capacity(value: &str) -> Result<usize, String> {
    value
        .trim()
        .parse::<usize>()
        .ok()
        .filter(|n| (1..=MAX_LOOKUP_CAPACITY).contains(n))
        .ok_or_else(|| "must be a whole number from 1 to 1000000".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, clap::Parser)]
    struct Config {
        #[command(flatten)]
        cache: LookupCache,
    }

    #[test]
    fn defaults_values_and_refusals() {
        let parse = crate::config::try_parse_flags::<Config>;
        assert_eq!(parse(&[]).unwrap().cache, LookupCache::default());
        let config = parse(&["--device-cache-ttl=0", "--device-cache-size=5"]).unwrap();
        assert_eq!(config.cache.device_cache_ttl, Duration::ZERO);
        assert_eq!(config.cache.device_cache_size, 5);
        let config = parse(&["--device-cache-ttl", "0.5"]).unwrap();
        assert_eq!(config.cache.device_cache_ttl, Duration::from_millis(500));
        for (arg, variable) in [
            ("--device-cache-ttl=-1", "DROGUE_DEVICE_CACHE_TTL"),
            ("--device-cache-ttl=3601", "DROGUE_DEVICE_CACHE_TTL"),
            ("--device-cache-ttl=soon", "DROGUE_DEVICE_CACHE_TTL"),
            ("--device-cache-ttl=inf", "DROGUE_DEVICE_CACHE_TTL"),
            ("--device-cache-size=0", "DROGUE_DEVICE_CACHE_SIZE"),
            ("--device-cache-size=1000001", "DROGUE_DEVICE_CACHE_SIZE"),
            ("--device-cache-size=many", "DROGUE_DEVICE_CACHE_SIZE"),
        ] {
            crate::config::assert_refused::<Config>(&[arg], &[variable]);
        }
    }
}
