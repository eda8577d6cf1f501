//! What a deleted application's name leaves behind in the event log: `NAMES` (default
//! 100,000; 1,000 when run as a test) applications of different names publish one event
//! each and are all deleted (forgotten, and erased from the files by the writer, as the
//! housekeeping sweep does). No application has those names any more, so once their
//! events are erased the log forgets them for good: no entry in the index, only the
//! floor above which a later application of any of them numbers its events, and their
//! tombstones, counted for nothing, until their segments go. Printed: the heap in
//! use (glibc's counters) and the log's files before, with the events, after the
//! erasure, and after the log is opened again (its index rebuilt from the files), per
//! name.
//!
//! `cargo bench -p drogue-shared --bench log_names`

mod common;

use cloudevents::Event;
use drogue_shared::events::EventSink;
use drogue_shared::events::log::EventLog;
use std::time::{Duration, Instant};

fn event(app: &str, n: u64) -> Event {
    common::event(app, n, serde_json::json!({ "n": n }))
}

/// The bytes the allocator has handed out and not had back (glibc's `mallinfo2`).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn heap() -> u64 {
    // SAFETY: mallinfo2 only reads the allocator's counters
    let info = unsafe { libc::mallinfo2() };
    (info.uordblks + info.hblkhd) as u64
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn heap() -> u64 {
    0
}

/// The bytes of the files under `dir`.
fn on_disk(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|entry| {
                    let path = entry.path();
                    if path.is_dir() {
                        on_disk(&path)
                    } else {
                        entry.metadata().map(|m| m.len()).unwrap_or(0)
                    }
                })
                .sum()
        })
        .unwrap_or(0)
}

fn main() {
    // (`cargo test --bench` runs it small, as a test)
    let full = std::env::args().any(|a| a == "--bench");
    let names: u64 = std::env::var("NAMES")
        .ok()
        .map(|v| v.parse().expect("a number of names"))
        .unwrap_or(if full { 100_000 } else { 1_000 });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let log = EventLog::open(dir.path().join("events.redb"), 10_000).expect("the log");
        let (memory, disk) = (heap(), on_disk(dir.path()));
        let mut n = 0;
        while n < names {
            let mut batch = tokio::task::JoinSet::new();
            for _ in 0..512.min(names - n) {
                n += 1;
                let log = log.clone();
                batch.spawn(async move {
                    let app = format!("app-{n}");
                    log.publish(&event(&app, n)).await.expect("published")
                });
            }
            batch.join_all().await;
        }
        let (with_memory, with_disk) = (heap(), on_disk(dir.path()));
        let started = Instant::now();
        let apps: Vec<(String, String)> = (1..=names)
            .map(|n| (format!("app-{n}"), format!("uid-app-{n}")))
            .collect();
        let forgotten = log.forget_all(apps.iter().map(|(a, u)| (a.as_str(), u.as_str())));
        assert_eq!(forgotten, 0, "each name's one event is its newest: a tombstone");
        drop(apps);
        while !log.application_uids().is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let erased = started.elapsed();
        // then the names go, between groups
        let deadline = Instant::now() + Duration::from_secs(60);
        while log.names() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let names_gone = started.elapsed();
        assert_eq!(log.names(), 0, "every name forgotten");
        // (the maps the names grew are shrunk by the last step, just after)
        tokio::time::sleep(Duration::from_millis(200)).await;
        let (after_memory, after_disk) = (heap(), on_disk(dir.path()));
        drop(log);
        // (once the writer thread has let go of it)
        let mut again = None;
        for _ in 0..500 {
            match EventLog::open(dir.path().join("events.redb"), 10_000) {
                Ok(log) => {
                    again = Some(log);
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
        let log = again.expect("the log opens again");
        let reopened = heap();
        let per = |bytes: u64, base: u64| bytes.saturating_sub(base) as f64 / names as f64;
        let mb = |bytes: u64| bytes as f64 / 1e6;
        println!(
            "{names} names, one event each, deleted; erased in {erased:.1?}, the names forgotten after {names_gone:.1?}"
        );
        println!(
            "  heap in use: {:.1} MB before; with the events {:.1} MB ({:.0} bytes a name); after the erasure {:.1} MB ({:.0}); opened again {:.1} MB ({:.0})",
            mb(memory),
            mb(with_memory),
            per(with_memory, memory),
            mb(after_memory),
            per(after_memory, memory),
            mb(reopened),
            per(reopened, memory),
        );
        println!(
            "  files: {:.1} MB before; with the events {:.1} MB ({:.0} bytes a name); after the erasure {:.1} MB ({:.0}), up to 1 MiB of it zeros written ahead",
            mb(disk),
            mb(with_disk),
            per(with_disk, disk),
            mb(after_disk),
            per(after_disk, disk),
        );
        // a later application of a name starts above the forgotten names' numbers
        assert_eq!(log.names(), 0, "every name forgotten, after a restart too");
        log.publish(&event("app-1", 0)).await.expect("published");
        assert_eq!(log.last_sequence("app-1").expect("read"), 2);
    });
}
