//! The publish rate limit per device: a token bucket per device `uid`, shared by every
//! way a device publishes in one process (HTTP and the local MQTT broker).
//!
//! A bucket holds up to `burst` tokens and gains `per_second` of them each second; each
//! publish takes one, and a publish that finds no token is refused (and takes none). A bucket idle long enough to be full again is the same as no
//! bucket, so such buckets are dropped: memory follows the devices publishing now, and is
//! bounded by [`MAX_BUCKETS`] in all. The buckets are split into shards, each behind its
//! own lock, so devices do not wait for each other.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Buckets kept at most (about 100 bytes each). Beyond, a device without a bucket is
/// let through unlimited until buckets fall idle.
pub const MAX_BUCKETS: usize = 100_000;
const SHARDS: usize = 16;

/// How fast one device may publish.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    /// Publishes per second, sustained; 0 for no limit.
    pub per_second: f64,
    /// Publishes a device may send at once after being idle (at least 1).
    pub burst: u32,
}

impl RateLimit {
    pub const DEFAULT_PER_SECOND: f64 = 100.0;
    pub const DEFAULT_BURST: u32 = 200;

    /// No limit.
    pub const UNLIMITED: Self = Self {
        per_second: 0.0,
        burst: 0,
    };

    /// Whether there is a limit at all.
    pub fn enabled(&self) -> bool {
        self.per_second > 0.0
    }
}

/// How fast one application may drop off commands (the command API and MQTT command
/// publishes together).
pub const DEFAULT_COMMAND_RATE: RateLimit = RateLimit {
    per_second: 50.0,
    burst: 100,
};

/// The value parser of rates: a number of events per second, at least 0 (0 for no limit).
pub fn per_second(value: &str) -> Result<f64, String> {
    value
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|r| r.is_finite() && *r >= 0.0)
        .ok_or_else(|| "must be a number >= 0 (per second, 0 for no limit)".to_owned())
}

/// `DROGUE_PUBLISH_RATE` and `DROGUE_PUBLISH_BURST`: how fast one device may publish.
#[derive(Debug, Clone, Copy, PartialEq, clap::Args)]
pub struct PublishRate {
    /// Publishes per second one device may send, over HTTP and MQTT together (HTTP: 429
    /// beyond; MQTT 5 QoS 1: PUBACK quota exceeded; otherwise the publish waits); 0 for no
    /// limit.
    #[arg(long = "publish-rate", env = "DROGUE_PUBLISH_RATE", value_name = "DROGUE_PUBLISH_RATE", default_value_t = RateLimit::DEFAULT_PER_SECOND, value_parser = per_second)]
    pub publish_rate: f64,
    /// Publishes one device may send at once after a pause (the rate limit's burst).
    #[arg(long = "publish-burst", env = "DROGUE_PUBLISH_BURST", value_name = "DROGUE_PUBLISH_BURST", default_value_t = RateLimit::DEFAULT_BURST)]
    pub publish_burst: u32,
}

impl PublishRate {
    pub fn limit(&self) -> RateLimit {
        RateLimit {
            per_second: self.publish_rate,
            burst: self.publish_burst,
        }
    }
}

/// `DROGUE_COMMAND_RATE` and `DROGUE_COMMAND_BURST`: how fast one application may drop
/// off commands.
#[derive(Debug, Clone, Copy, PartialEq, clap::Args)]
pub struct CommandRate {
    /// Commands per second one application may drop off, through the command API and
    /// MQTT command publishes together (API: 429 beyond; MQTT 5 QoS 1: PUBACK quota
    /// exceeded; otherwise the publish waits); 0 for no limit.
    #[arg(long = "command-rate", env = "DROGUE_COMMAND_RATE", value_name = "DROGUE_COMMAND_RATE", default_value_t = DEFAULT_COMMAND_RATE.per_second, value_parser = per_second)]
    pub command_rate: f64,
    /// Commands one application may drop off at once after a pause.
    #[arg(long = "command-burst", env = "DROGUE_COMMAND_BURST", value_name = "DROGUE_COMMAND_BURST", default_value_t = DEFAULT_COMMAND_RATE.burst)]
    pub command_burst: u32,
}

impl CommandRate {
    pub fn limit(&self) -> RateLimit {
        RateLimit {
            per_second: self.command_rate,
            burst: self.command_burst,
        }
    }
}

impl Default for RateLimit {
    fn default() -> Self {
        Self {
            per_second: Self::DEFAULT_PER_SECOND,
            burst: Self::DEFAULT_BURST,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// When the bucket is full again if nothing more is published.
    full_at: Instant,
}

#[derive(Default)]
struct Shard {
    buckets: HashMap<String, Bucket>,
    /// Takes since the shard was last swept of full buckets.
    since_sweep: usize,
}

/// The buckets of one process; cheap to clone (clones share the buckets).
#[derive(Clone)]
pub struct PublishLimiter {
    limit: RateLimit,
    shards: Arc<[Mutex<Shard>]>,
    hasher: std::collections::hash_map::RandomState,
    max_per_shard: usize,
}

impl std::fmt::Debug for PublishLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PublishLimiter")
            .field("limit", &self.limit)
            .finish_non_exhaustive()
    }
}

impl Default for PublishLimiter {
    fn default() -> Self {
        Self::new(RateLimit::default())
    }
}

impl PublishLimiter {
    pub fn new(limit: RateLimit) -> Self {
        Self::with_capacity(limit, MAX_BUCKETS)
    }

    fn with_capacity(limit: RateLimit, max_buckets: usize) -> Self {
        Self {
            limit,
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            hasher: Default::default(),
            max_per_shard: max_buckets.div_ceil(SHARDS).max(1),
        }
    }

    pub fn limit(&self) -> RateLimit {
        self.limit
    }

    /// Takes a token for a publish of `device` (its `uid`) now; `Err` with the time
    /// until a token is there when the device publishes too fast.
    pub fn check(&self, device: &str) -> Result<(), Duration> {
        self.check_at(device, Instant::now())
    }

    /// [`Self::check`] at a given time (for tests: times must not go backwards much).
    ///
    /// A bucket is kept as the time at which it would be full again (the generic cell
    /// rate algorithm): each publish moves it on by one interval; a publish that would
    /// move it further ahead of now than the burst allows is refused.
    pub fn check_at(&self, device: &str, now: Instant) -> Result<(), Duration> {
        if !self.limit.enabled() {
            return Ok(());
        }
        let (interval, tolerance) = (self.interval(), self.tolerance());
        let mut shard = self.shards[self.shard(device)]
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let shard = &mut *shard;
        shard.since_sweep += 1;
        if shard.since_sweep >= self.max_per_shard.min(1024) {
            self.sweep(shard, now);
        }
        let full_at = match shard.buckets.get(device).map(|b| b.full_at) {
            Some(full_at) => full_at.max(now),
            None if shard.buckets.len() >= self.max_per_shard && !self.sweep(shard, now) => {
                // full of devices publishing now: this one goes unlimited for now
                return Ok(());
            }
            None => now,
        };
        let ahead = full_at - now;
        if ahead > tolerance {
            return Err(ahead - tolerance);
        }
        shard.buckets.insert(
            device.to_owned(),
            Bucket {
                full_at: full_at + interval,
            },
        );
        Ok(())
    }

    /// The time one publish takes back.
    fn interval(&self) -> Duration {
        Duration::from_secs_f64(1.0 / self.limit.per_second)
    }

    /// How far ahead of now a bucket may be and still take a publish.
    fn tolerance(&self) -> Duration {
        self.interval() * (self.limit.burst.max(1) - 1)
    }

    /// Drops the buckets that are full by `now`; whether there is room now.
    fn sweep(&self, shard: &mut Shard, now: Instant) -> bool {
        shard.since_sweep = 0;
        shard.buckets.retain(|_, b| b.full_at > now);
        shard.buckets.len() < self.max_per_shard
    }

    /// Buckets held now (for tests and metrics).
    pub fn buckets(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).buckets.len())
            .sum()
    }

    fn shard(&self, device: &str) -> usize {
        (self.hasher.hash_one(device) as usize) % SHARDS
    }
}

/// Seconds to announce in `Retry-After`: the wait, rounded up, at least 1.
pub fn retry_after_seconds(wait: Duration) -> u64 {
    wait.as_secs() + u64::from(wait.subsec_nanos() > 0).max(u64::from(wait.is_zero()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: RateLimit = RateLimit {
        per_second: 10.0,
        burst: 5,
    };

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_burst_passes_then_the_rate_holds() {
        let limiter = PublishLimiter::new(LIMIT);
        let t0 = Instant::now();
        for i in 0..5 {
            assert_eq!(limiter.check_at("d1", t0), Ok(()), "burst publish {i}");
        }
        let wait = limiter.check_at("d1", t0).unwrap_err();
        assert_eq!(wait, ms(100), "one token comes every 100 ms");
        assert!(limiter.check_at("d1", t0 + ms(99)).is_err());
        assert_eq!(limiter.check_at("d1", t0 + ms(100)), Ok(()));
        assert!(limiter.check_at("d1", t0 + ms(100)).is_err());
        // over a second of steady sending, 10 pass
        let passed = (1..=100)
            .filter(|i| limiter.check_at("d1", t0 + ms(100 + i * 10)).is_ok())
            .count();
        assert_eq!(passed, 10);
    }

    #[test]
    fn a_refused_publish_costs_no_token() {
        let limiter = PublishLimiter::new(LIMIT);
        let t0 = Instant::now();
        for _ in 0..5 {
            limiter.check_at("d1", t0).unwrap();
        }
        for _ in 0..1000 {
            assert!(limiter.check_at("d1", t0 + ms(50)).is_err());
        }
        assert_eq!(limiter.check_at("d1", t0 + ms(100)), Ok(()));
    }

    #[test]
    fn devices_have_their_own_buckets() {
        let limiter = PublishLimiter::new(LIMIT);
        let t0 = Instant::now();
        while limiter.check_at("noisy", t0).is_ok() {}
        for _ in 0..5 {
            assert_eq!(limiter.check_at("quiet", t0), Ok(()));
        }
    }

    #[test]
    fn an_idle_bucket_fills_up_to_the_burst_and_no_more() {
        let limiter = PublishLimiter::new(LIMIT);
        let t0 = Instant::now();
        while limiter.check_at("d1", t0).is_ok() {}
        let later = t0 + Duration::from_secs(60);
        let passed = (0..20)
            .filter(|_| limiter.check_at("d1", later).is_ok())
            .count();
        assert_eq!(passed, 5);
    }

    #[test]
    fn idle_buckets_are_dropped_and_memory_is_bounded() {
        let limiter = PublishLimiter::with_capacity(LIMIT, 160);
        let t0 = Instant::now();
        for i in 0..1000 {
            for _ in 0..3 {
                let _ = limiter.check_at(&format!("d{i}"), t0);
            }
        }
        assert!(limiter.buckets() <= 160, "{} buckets", limiter.buckets());
        // meanwhile a new device of a full shard goes unlimited
        let t1 = t0 + ms(100);
        let unlimited = (0..10)
            .filter(|_| limiter.check_at("fresh", t1).is_ok())
            .count();
        assert_eq!(unlimited, 10);
        // once the old ones are full again (300 ms), they make room for a new one
        let later = t0 + ms(600);
        let passed = (0..10)
            .filter(|_| limiter.check_at("fresh", later).is_ok())
            .count();
        assert_eq!(passed, 5, "the new device has a bucket of its own");
        assert!(limiter.buckets() <= 160, "{} buckets", limiter.buckets());
        // a device that was dropped while full lost nothing: it has its burst
        let passed = (0..10)
            .filter(|_| limiter.check_at("d7", later).is_ok())
            .count();
        assert_eq!(passed, 5);
    }

    #[test]
    fn zero_is_no_limit() {
        let limiter = PublishLimiter::new(RateLimit::UNLIMITED);
        let t0 = Instant::now();
        assert!((0..10_000).all(|_| limiter.check_at("d1", t0).is_ok()));
        assert_eq!(limiter.buckets(), 0);
    }

    #[test]
    fn rate_limits_are_options_with_defaults() {
        #[derive(clap::Parser)]
        struct Config {
            #[command(flatten)]
            publish: PublishRate,
            #[command(flatten)]
            command: CommandRate,
        }
        let parse = crate::config::try_parse_flags::<Config>;
        let config = parse(&[]).unwrap();
        assert_eq!(config.publish.limit(), RateLimit::default());
        assert_eq!(config.command.limit(), DEFAULT_COMMAND_RATE);
        let config = parse(&[
            "--publish-rate=0",
            "--publish-burst=5",
            "--command-rate=2.5",
        ])
        .unwrap();
        assert!(!config.publish.limit().enabled());
        assert_eq!(config.publish.limit().burst, 5);
        assert_eq!(config.command.limit().per_second, 2.5);
        for (arg, variable) in [
            ("--publish-rate=-1", "DROGUE_PUBLISH_RATE"),
            ("--publish-rate=inf", "DROGUE_PUBLISH_RATE"),
            ("--publish-burst=x", "DROGUE_PUBLISH_BURST"),
            ("--command-rate=", "DROGUE_COMMAND_RATE"),
            ("--command-burst=-2", "DROGUE_COMMAND_BURST"),
        ] {
            let error = parse(&[arg]).err().unwrap().to_string();
            assert!(error.contains(variable), "{arg}: {error}");
        }
    }

    #[test]
    fn retry_after_rounds_up() {
        assert_eq!(retry_after_seconds(ms(0)), 1);
        assert_eq!(retry_after_seconds(ms(10)), 1);
        assert_eq!(retry_after_seconds(ms(1000)), 1);
        assert_eq!(retry_after_seconds(ms(1001)), 2);
    }
}
