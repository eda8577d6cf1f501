//! What a segment's rewrite costs the publishes queued behind it: a log with one sealed
//! segment of `REWRITE_MB` MB (default 60; 2 when run as a test) holding the events of
//! two applications in turn, 600-byte events; one of them is deleted (forgotten), so the
//! writer rewrites the segment without its records: the other's half is copied to the
//! head and the segment is deleted. Meanwhile 8 publishers of a third application
//! publish one event after another (each waits for its event to be durable). Printed,
//! for the rewrite in steps of [`REWRITE_STEP`] between groups (as the log does) and in
//! one step (a whole segment at once, as it did before): how long the rewrite took, and
//! the latency of the publishes acknowledged before it started and of those waiting at
//! some time while it ran (median, 99th percentile, most). `REWRITE_STEPS_KIB` (e.g.
//! "1024 256") compares other step sizes instead of [`REWRITE_STEP`].
//!
//! `cargo bench -p drogue-shared --bench log_rewrite`

mod common;

use cloudevents::Event;
use drogue_shared::events::EventSink;
use drogue_shared::events::log::{EventLog, LogOptions, REWRITE_STEP};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const SEGMENT: u64 = 64 << 20;
const EVENT: usize = 600;

fn event(app: &str, n: u64) -> Event {
    common::event(
        app,
        n,
        serde_json::json!({"n": n, "pad": "x".repeat(EVENT - 300)}),
    )
}

/// Latencies as (when it was published, how long it took to be acknowledged).
type Latencies = Arc<Mutex<Vec<(Instant, Duration)>>>;

fn summary(mut of: Vec<Duration>) -> String {
    if of.is_empty() {
        return "none".into();
    }
    of.sort();
    let at = |q: f64| of[((of.len() - 1) as f64 * q) as usize];
    format!(
        "{} publishes, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        of.len(),
        at(0.5).as_secs_f64() * 1e3,
        at(0.99).as_secs_f64() * 1e3,
        of[of.len() - 1].as_secs_f64() * 1e3,
    )
}

async fn run(label: &str, step: usize, megabytes: u64) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let log = EventLog::open_with(
        dir.path().join("events.redb"),
        LogOptions {
            retention: 10_000_000,
            segment_size: SEGMENT,
            rewrite_step: step,
        },
    )
    .expect("the log");
    // the segment: "gone" and "kept" in turn, 512 publishes at a time
    let events = megabytes * 1_000_000 / EVENT as u64;
    let mut n = 0;
    while n < events {
        let mut batch = tokio::task::JoinSet::new();
        for _ in 0..512 {
            n += 1;
            let (log, app) = (log.clone(), if n % 2 == 0 { "gone" } else { "kept" });
            batch.spawn(async move { log.publish(&event(app, n)).await.expect("published") });
        }
        batch.join_all().await;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let latencies: Latencies = Arc::default();
    let mut publishers = tokio::task::JoinSet::new();
    for p in 0..8u64 {
        let (log, stop, latencies) = (log.clone(), stop.clone(), latencies.clone());
        publishers.spawn(async move {
            let mut n = p << 32;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let start = Instant::now();
                log.publish(&event("live", n)).await.expect("published");
                latencies
                    .lock()
                    .expect("not poisoned")
                    .push((start, start.elapsed()));
            }
        });
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = Instant::now();
    let forgotten = log.forget("gone", "uid-gone");
    let listed = |log: &EventLog| {
        log.application_uids()
            .iter()
            .any(|(_, uid)| uid == "uid-gone")
    };
    while listed(&log) {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let ended = Instant::now();
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::Relaxed);
    publishers.join_all().await;
    let latencies = latencies.lock().expect("not poisoned");
    // before: acknowledged before the rewrite started; during: waiting at some time
    // while it ran
    let before = latencies
        .iter()
        .filter(|(at, took)| *at + *took < started)
        .map(|(_, took)| *took)
        .collect();
    let during = latencies
        .iter()
        .filter(|(at, took)| *at <= ended && *at + *took >= started)
        .map(|(_, took)| *took)
        .collect();
    println!(
        "{label}: {forgotten} of {n} events erased from a {megabytes} MB segment in {:.0} ms",
        (ended - started).as_secs_f64() * 1e3
    );
    println!("  before: {}", summary(before));
    println!("  during: {}", summary(during));
}

fn main() {
    // (`cargo test --bench` runs it small, as a test)
    let full = std::env::args().any(|a| a == "--bench");
    let megabytes = std::env::var("REWRITE_MB")
        .ok()
        .map(|v| v.parse().expect("a number of MB"))
        .unwrap_or(if full { 60 } else { 2 });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    // REWRITE_STEPS_KIB: other step sizes to compare (KiB, separated by spaces)
    let steps: Vec<usize> = std::env::var("REWRITE_STEPS_KIB")
        .ok()
        .map(|v| {
            v.split_whitespace()
                .map(|kib| kib.parse::<usize>().expect("a number of KiB") << 10)
                .collect()
        })
        .unwrap_or_else(|| vec![REWRITE_STEP]);
    runtime.block_on(async {
        for step in steps {
            run(&format!("in steps of {} KiB", step >> 10), step, megabytes).await;
        }
        run("in one step", usize::MAX, megabytes).await;
    });
}
