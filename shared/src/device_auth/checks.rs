//! Where slow password checks run: off the async runtime, on a bounded number of blocking
//! threads, one check at a time per device, with few waiting, so that a device under a
//! wrong-password attack (or with a costly hash) never delays another device.
//!
//! - A check that the verified-password cache answers never comes here.
//! - Checks of one device (by `uid`) run one after the other; a check of a password that
//!   finds more than [`MAX_WAITING_PER_DEVICE`] other passwords of the same device in line
//!   is refused, after [`BUSY_DELAY`] so that a flood of guesses slows itself down. A check
//!   of a password already in line joins it (up to [`MAX_IN_LINE_PER_DEVICE`] checks in
//!   all): the caches answer it once the first is done, so many requests of one device with
//!   the same password at once (a cold start, a gateway's connections) cost one hash and
//!   none of them is refused.
//! - At most `threads` checks run at once in the whole process (default: half the cores,
//!   at least one), on threads of their own that run at a lower priority ([`HASH_NICE`]
//!   on Linux), so the runtime's threads keep CPU for everything else: when both want the
//!   cores, a publish waits for no hash.
//! - Recent failures (same device version, identity and password) are remembered for
//!   [`FAILURE_TTL`]: repeating a wrong password costs no hash.

use std::collections::HashMap;
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// Other passwords of one device that may wait behind the running one.
pub const MAX_WAITING_PER_DEVICE: usize = 8;
/// Checks of one device in line at once, all passwords together.
pub const MAX_IN_LINE_PER_DEVICE: usize = 1024;
/// How long a check refused for a busy device waits before it answers.
pub const BUSY_DELAY: Duration = Duration::from_millis(250);
/// How long a failed (device, password) pair is remembered.
pub const FAILURE_TTL: Duration = Duration::from_secs(30);
/// Most remembered failures.
const FAILURE_CAPACITY: usize = 100_000;
/// The nice value of the password check threads (Linux; 0 is the default, 19 the lowest
/// priority): the scheduler gives such a thread about a tenth of a core's time when a
/// thread of the default priority wants it too.
pub const HASH_NICE: i32 = 10;

/// A password check handed to the pool's threads.
type Job = Box<dyn FnOnce() + Send>;

/// Why a check was not run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Busy {
    /// Too many checks of the same device are waiting.
    Device,
}

/// The checks of one device: one runs, the others wait.
#[derive(Default)]
struct DeviceEntry {
    lock: Arc<tokio::sync::Mutex<()>>,
    users: usize,
    /// The passwords in line (by the key of the verified cache), with their checks.
    keys: HashMap<[u8; 32], usize>,
}

/// The pool of password checks.
pub struct PasswordChecks {
    /// The pool's size: `None` for half the cores, counted at the first check (counting
    /// reads the cgroup's CPU quota, which a function's start need not wait for).
    size: Option<usize>,
    /// The pool's turns, made at the first check.
    threads: OnceLock<(Arc<Semaphore>, usize)>,
    /// The pool's queue, made with its threads at the first check (most processes of the
    /// project never check a password); the threads end when it is dropped.
    jobs: OnceLock<mpsc::Sender<Job>>,
    devices: Mutex<HashMap<String, DeviceEntry>>,
    failures: quick_cache::sync::Cache<[u8; 32], Instant>,
}

impl Default for PasswordChecks {
    /// Half the cores ([`default_threads`]), counted at the first check.
    fn default() -> Self {
        Self::with_size(None)
    }
}

/// Half the cores, at least one.
pub fn default_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get() / 2)
        .unwrap_or(1)
        .max(1)
}

impl PasswordChecks {
    /// At most `threads` checks at once.
    pub fn new(threads: usize) -> Self {
        Self::with_size(Some(threads.max(1)))
    }

    fn with_size(size: Option<usize>) -> Self {
        Self {
            size,
            threads: OnceLock::new(),
            jobs: OnceLock::new(),
            devices: Mutex::new(HashMap::new()),
            failures: quick_cache::sync::Cache::new(FAILURE_CAPACITY),
        }
    }

    /// Whether `key` failed within [`FAILURE_TTL`].
    pub(super) fn failed_recently(&self, key: &[u8; 32]) -> bool {
        self.failures
            .get(key)
            .is_some_and(|at| at.elapsed() < FAILURE_TTL)
    }

    pub(super) fn remember_failure(&self, key: [u8; 32]) {
        self.failures.insert(key, Instant::now());
    }

    /// Waits for the turn of device `uid` to check the password of `key`: the returned
    /// guard holds it.
    pub(super) async fn device_turn(
        &self,
        uid: &str,
        key: &[u8; 32],
    ) -> Result<DeviceTurn<'_>, Busy> {
        let lock = {
            let mut devices = self.devices.lock().expect("not poisoned");
            let entry = devices.entry(uid.to_owned()).or_default();
            // the running check's password and those waiting; a password in line is joined
            let joins = entry.keys.contains_key(key);
            if (!joins && entry.keys.len() > MAX_WAITING_PER_DEVICE)
                || entry.users >= MAX_IN_LINE_PER_DEVICE
            {
                return Err(Busy::Device);
            }
            entry.users += 1;
            *entry.keys.entry(*key).or_default() += 1;
            entry.lock.clone()
        };
        // counted until dropped, also when the wait is given up
        let ticket = Ticket {
            checks: self,
            uid: uid.to_owned(),
            key: *key,
        };
        let guard = lock.lock_owned().await;
        Ok(DeviceTurn {
            _guard: guard,
            _ticket: ticket,
        })
    }

    /// Runs `check` on one of the pool's threads, when one of them is free: its answer,
    /// or `None` when it could not run (no thread could be started, or it panicked).
    ///
    /// The pool's turn is held by the job itself, until the check is done: a caller that
    /// gives up waiting (a client that goes away) frees no turn while its hash still runs,
    /// so at most `size` checks are ever handed over and none waits in the queue.
    pub(crate) async fn run<F>(&self, check: F) -> Option<bool>
    where
        F: FnOnce() -> bool + Send + 'static,
    {
        let permit = self.threads().0.clone().acquire_owned().await.ok()?;
        let (done, result) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let answer = std::panic::catch_unwind(std::panic::AssertUnwindSafe(check)).ok();
            drop(permit);
            let _ = done.send(answer);
        });
        let sent = self.jobs().map(|jobs| jobs.send(job));
        if !matches!(sent, Some(Ok(()))) {
            tracing::error!("no password check thread is running");
            return None;
        }
        result.await.ok().flatten()
    }

    /// The pool's turns and its size, made the first time.
    fn threads(&self) -> &(Arc<Semaphore>, usize) {
        self.threads.get_or_init(|| {
            let size = self.size.unwrap_or_else(default_threads);
            (Arc::new(Semaphore::new(size)), size)
        })
    }

    /// The pool's queue, starting its threads the first time; `None` when no thread could
    /// be started (the next check tries again).
    fn jobs(&self) -> Option<&mpsc::Sender<Job>> {
        if let Some(jobs) = self.jobs.get() {
            return Some(jobs);
        }
        let (sender, receiver) = mpsc::channel::<Job>();
        let receiver = Arc::new(Mutex::new(receiver));
        let mut running = 0;
        for n in 0..self.threads().1 {
            let receiver = receiver.clone();
            let started = std::thread::Builder::new()
                .name(format!("password-check-{n}"))
                .spawn(move || {
                    lower_priority();
                    loop {
                        // the lock is held while waiting, by one idle thread at a time
                        let job = receiver.lock().expect("not poisoned").recv();
                        match job {
                            Ok(job) => job(),
                            Err(_) => break,
                        }
                    }
                });
            match started {
                Ok(_) => running += 1,
                Err(e) => tracing::error!(error = %e, "cannot start a password check thread"),
            }
        }
        if running == 0 {
            return None;
        }
        // when another caller made the pool meanwhile, this one's threads end with its
        // sender, dropped here
        Some(self.jobs.get_or_init(|| sender))
    }

    /// Devices with checks running or waiting (for tests and metrics).
    pub fn devices_in_check(&self) -> usize {
        self.devices.lock().expect("not poisoned").len()
    }
}

/// A device's turn; dropping it lets the next check of the device run.
pub(super) struct DeviceTurn<'a> {
    // dropped in this order: the lock first, then the count
    _guard: tokio::sync::OwnedMutexGuard<()>,
    _ticket: Ticket<'a>,
}

/// Lowers the calling thread's priority by [`HASH_NICE`] below the one it started with
/// (Linux keeps a nice value per thread; 19 is the lowest), so that the checks stay below
/// the threads that serve requests also in a process started with a nice value of its
/// own. Failing to is logged and harmless: the checks stay bounded in number.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: getpriority and setpriority read no memory of ours; gettid names the
        // calling thread.
        let tid = unsafe { libc::gettid() };
        let current = unsafe { libc::getpriority(libc::PRIO_PROCESS as _, tid as _) };
        let lowered = current.saturating_add(HASH_NICE).clamp(HASH_NICE, 19);
        let failed = unsafe { libc::setpriority(libc::PRIO_PROCESS as _, tid as _, lowered) };
        if failed != 0 {
            tracing::debug!(
                error = %std::io::Error::last_os_error(),
                "password check thread keeps its priority"
            );
        }
    }
}

/// One check of a device, running or waiting; the device is forgotten with its last.
struct Ticket<'a> {
    checks: &'a PasswordChecks,
    uid: String,
    key: [u8; 32],
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        let mut devices = self.checks.devices.lock().expect("not poisoned");
        if let Some(entry) = devices.get_mut(&self.uid) {
            entry.users -= 1;
            if let Some(n) = entry.keys.get_mut(&self.key) {
                *n -= 1;
                if *n == 0 {
                    entry.keys.remove(&self.key);
                }
            }
            if entry.users == 0 {
                devices.remove(&self.uid);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A key of the verified cache, for the tests: password `n`.
    fn key(n: u8) -> [u8; 32] {
        [n; 32]
    }

    #[tokio::test]
    async fn the_default_pool_counts_the_cores_at_its_first_check() {
        let checks = PasswordChecks::default();
        assert!(checks.threads.get().is_none(), "counted before a check");
        assert_eq!(checks.run(|| true).await, Some(true));
        assert_eq!(checks.threads.get().map(|t| t.1), Some(default_threads()));
        assert_eq!(PasswordChecks::new(0).threads().1, 1, "at least one thread");
    }

    #[tokio::test]
    async fn one_check_per_device_at_a_time_and_few_waiting() {
        let checks = Arc::new(PasswordChecks::new(4));
        let first = checks.device_turn("d1", &key(0)).await.unwrap();
        // another device is not held up
        drop(checks.device_turn("d2", &key(0)).await.unwrap());
        let mut waiting = Vec::new();
        for n in 1..=MAX_WAITING_PER_DEVICE as u8 {
            let checks = checks.clone();
            waiting.push(tokio::spawn(async move {
                checks.device_turn("d1", &key(n)).await.map(|_| ())
            }));
        }
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        // one more password is refused; one already in line may still join it
        assert_eq!(
            checks.device_turn("d1", &key(200)).await.err(),
            Some(Busy::Device)
        );
        let joining = {
            let checks = checks.clone();
            tokio::spawn(async move { checks.device_turn("d1", &key(3)).await.map(|_| ()) })
        };
        drop(first);
        for w in waiting {
            assert_eq!(w.await.unwrap(), Ok(()));
        }
        assert_eq!(joining.await.unwrap(), Ok(()));
        assert_eq!(checks.devices_in_check(), 0, "forgotten when idle");
    }

    #[tokio::test]
    async fn many_checks_of_one_password_all_wait_their_turn() {
        let checks = Arc::new(PasswordChecks::new(4));
        let first = checks.device_turn("d1", &key(1)).await.unwrap();
        let mut waiting = Vec::new();
        for _ in 0..4 * MAX_WAITING_PER_DEVICE {
            let checks = checks.clone();
            waiting.push(tokio::spawn(async move {
                checks.device_turn("d1", &key(1)).await.map(|_| ())
            }));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        // other passwords are still limited while they wait
        for n in 2..=(MAX_WAITING_PER_DEVICE as u8 + 1) {
            let checks = checks.clone();
            waiting.push(tokio::spawn(async move {
                checks.device_turn("d1", &key(n)).await.map(|_| ())
            }));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(
            checks.device_turn("d1", &key(100)).await.err(),
            Some(Busy::Device)
        );
        drop(first);
        for w in waiting {
            assert_eq!(w.await.unwrap(), Ok(()));
        }
        assert_eq!(checks.devices_in_check(), 0, "forgotten when idle");
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn checks_run_at_a_lower_priority() {
        let checks = PasswordChecks::new(1);
        let nice = Arc::new(std::sync::atomic::AtomicI32::new(i32::MIN));
        let seen = nice.clone();
        assert_eq!(
            checks
                .run(move || {
                    // SAFETY: getpriority reads no memory of ours
                    let n =
                        unsafe { libc::getpriority(libc::PRIO_PROCESS as _, libc::gettid() as _) };
                    seen.store(n, std::sync::atomic::Ordering::SeqCst);
                    true
                })
                .await,
            Some(true)
        );
        let n = nice.load(std::sync::atomic::Ordering::SeqCst);
        assert!(n >= HASH_NICE, "the check ran at nice {n}");
        // below the runtime's threads, whatever nice value the process started with (as
        // far as 19 allows), and the runtime's own thread not lowered
        // SAFETY: as above
        let ours = unsafe { libc::getpriority(libc::PRIO_PROCESS as _, libc::gettid() as _) };
        assert!(
            n == (ours + HASH_NICE).min(19),
            "the check ran at nice {n}, the runtime at {ours}"
        );
    }

    #[tokio::test]
    async fn a_caller_that_gives_up_keeps_the_turn_until_its_check_ends() {
        use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
        let checks = Arc::new(PasswordChecks::new(1));
        let ran = Arc::new(AtomicUsize::new(0));
        // a check that takes 200 ms, whose caller goes away after 20 ms
        let counted = ran.clone();
        let abandoned = tokio::time::timeout(
            Duration::from_millis(20),
            checks.run(move || {
                std::thread::sleep(Duration::from_millis(200));
                counted.fetch_add(1, SeqCst);
                true
            }),
        )
        .await;
        assert!(abandoned.is_err());
        // the next check waits for the abandoned one: the pool is never over its size
        let before = ran.clone();
        let next = checks.run(move || before.load(SeqCst) == 1).await;
        assert_eq!(
            next,
            Some(true),
            "the next check ran after the abandoned one"
        );
        // a check that panics is no answer, and the pool goes on
        assert_eq!(checks.run(|| panic!("a broken check")).await, None);
        assert_eq!(checks.run(|| false).await, Some(false));
    }

    #[tokio::test]
    async fn checks_run_off_the_runtime_and_bounded() {
        let checks = Arc::new(PasswordChecks::new(1));
        let running = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let most = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut all = Vec::new();
        for _ in 0..4 {
            let (checks, running, most) = (checks.clone(), running.clone(), most.clone());
            all.push(tokio::spawn(async move {
                checks
                    .run(move || {
                        use std::sync::atomic::Ordering::SeqCst;
                        let now = running.fetch_add(1, SeqCst) + 1;
                        most.fetch_max(now, SeqCst);
                        std::thread::sleep(Duration::from_millis(10));
                        running.fetch_sub(1, SeqCst);
                        true
                    })
                    .await
            }));
        }
        for a in all {
            assert_eq!(a.await.unwrap(), Some(true));
        }
        assert_eq!(most.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[test]
    fn failures_are_remembered_for_a_while() {
        let checks = PasswordChecks::new(1);
        assert!(!checks.failed_recently(&[1; 32]));
        checks.remember_failure([1; 32]);
        assert!(checks.failed_recently(&[1; 32]));
        assert!(!checks.failed_recently(&[2; 32]));
    }
}
