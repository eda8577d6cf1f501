//! The segment files of the event log: recovery from a torn or corrupt tail, retention
//! across segments, deletion and compaction of segments, sequence numbers across a
//! reopen, and the migration from the previous format (redb tables).

use super::*;
use crate::events::to_json;
use cloudevents::{Event, EventBuilder, EventBuilderV10};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Small segments: a handful of records each.
const SMALL: u64 = 1000;

fn event(app: &str, n: u32) -> Event {
    EventBuilderV10::new()
        .id(format!("{app}-{n}"))
        .ty("t")
        .source("drogue://test")
        .subject("telemetry")
        .extension("application", app)
        .extension("applicationuid", format!("uid-{app}"))
        .data("application/json", serde_json::json!({"n": n}))
        .build()
        .unwrap()
}

fn id_of(e: &LoggedEvent) -> String {
    serde_json::from_str::<serde_json::Value>(&e.json).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// (sequence, id) of everything an application keeps.
fn kept(log: &EventLog, app: &str) -> Vec<(u64, String)> {
    log.read(app, 0, usize::MAX)
        .unwrap()
        .iter()
        .map(|e| (e.sequence, id_of(e)))
        .collect()
}

fn expected(app: &str, range: std::ops::RangeInclusive<u32>) -> Vec<(u64, String)> {
    range
        .map(|n| (u64::from(n), format!("{app}-{n}")))
        .collect()
}

fn options(retention: u64, segment_size: u64) -> LogOptions {
    LogOptions {
        retention,
        segment_size,
        ..LogOptions::default()
    }
}

/// Opens the log once the previous writer thread has let go of it.
async fn reopen(path: &Path, options: LogOptions) -> EventLog {
    for _ in 0..250 {
        match EventLog::open_with(path, options) {
            Ok(log) => return log,
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    panic!("the log does not reopen");
}

/// Closes a log and waits until its writer thread has ended (it holds the state file,
/// and with it the lock, until then).
async fn close(log: EventLog, path: &Path) {
    drop(log);
    for _ in 0..250 {
        if Database::create(path).is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the log's writer does not end");
}

/// A closed log in a new directory holding events 1 to `count` of application `a`: the
/// directory (removed when dropped) and the log's state file.
async fn written(opts: LogOptions, count: u32) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.redb");
    let log = EventLog::open_with(&path, opts).unwrap();
    for n in 1..=count {
        log.publish(&event("a", n)).await.unwrap();
    }
    close(log, &path).await;
    (dir, path)
}

/// The segment files, oldest first: (id, path, size). A file the log's background work
/// removes between the listing and its size (compaction, retention) is left out.
fn segment_files(path: &Path) -> Vec<(u64, PathBuf, u64)> {
    let mut files: Vec<_> = std::fs::read_dir(segments_dir(path))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .filter_map(|p| {
            let id = p.file_stem().unwrap().to_str().unwrap().parse().unwrap();
            let size = std::fs::metadata(&p).ok()?.len();
            Some((id, p, size))
        })
        .collect();
    files.sort();
    files
}

/// The frames of a segment file, up to the zeros written ahead: (offset, length).
fn frames(file: &Path) -> Vec<(usize, usize)> {
    let bytes = std::fs::read(file).unwrap();
    let mut found = Vec::new();
    let mut at = 8;
    while at + 8 <= bytes.len() {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        if len == 0 {
            break;
        }
        found.push((at, 8 + len));
        at += 8 + len;
    }
    found
}

/// Where the records of a segment file end.
fn records_end(file: &Path) -> usize {
    frames(file).last().map_or(8, |(offset, len)| offset + len)
}

fn flip_byte(file: &Path, at: usize) {
    let mut bytes = std::fs::read(file).unwrap();
    bytes[at] ^= 0x5a;
    std::fs::write(file, bytes).unwrap();
}

/// Waits (up to 5 s) until the writer's housekeeping made `condition` true.
async fn eventually(mut condition: impl FnMut() -> bool) -> bool {
    for _ in 0..250 {
        if condition() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

#[tokio::test]
async fn events_go_to_segment_files_beside_the_state_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.redb");
    let log = EventLog::open(&path, 100).unwrap();
    log.publish(&event("a", 1)).await.unwrap();
    let segments = segment_files(&path);
    assert_eq!(segments.len(), 1);
    assert_eq!(
        segments[0].1,
        dir.path().join("events.segments/00000000000000000001.seg")
    );
    let logged = &log.read("a", 0, 10).unwrap()[0];
    assert_eq!(logged.application_uid.as_deref(), Some("uid-a"));
    assert_eq!(logged.subject.as_deref(), Some("telemetry"));
    assert_eq!(frames(&segments[0].1).len(), 1);
}

#[tokio::test]
async fn a_torn_tail_is_truncated_and_the_rest_is_read() {
    let (_dir, path) = written(options(100, DEFAULT_SEGMENT_SIZE), 5).await;
    let (_, segment, _) = segment_files(&path).pop().unwrap();

    // the last record cut short, as by a crash in the middle of its write
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&segment)
        .unwrap();
    file.set_len(records_end(&segment) as u64 - 10).unwrap();
    drop(file);
    let log = reopen(&path, options(100, DEFAULT_SEGMENT_SIZE)).await;
    assert_eq!(kept(&log, "a"), expected("a", 1..=4));
    let (_, offset_5) = (frames(&segment)[3].0, frames(&segment)[3]);
    assert_eq!(
        std::fs::metadata(&segment).unwrap().len() as usize,
        offset_5.0 + offset_5.1,
        "the torn record is gone from the file"
    );
    // the log goes on after the last whole record
    log.publish(&event("a", 5)).await.unwrap();
    assert_eq!(kept(&log, "a"), expected("a", 1..=5));
    close(log, &path).await;

    // bytes that are no record at all (a length, then nothing) where the records end,
    // in the zeros written ahead of them
    let good = records_end(&segment) as u64;
    let mut bytes = std::fs::read(&segment).unwrap();
    assert!(bytes.len() > good as usize + 7, "zeros are written ahead");
    bytes[good as usize..good as usize + 7].copy_from_slice(&[200, 0, 0, 0, 1, 2, 3]);
    std::fs::write(&segment, bytes).unwrap();
    let log = reopen(&path, options(100, DEFAULT_SEGMENT_SIZE)).await;
    assert_eq!(kept(&log, "a"), expected("a", 1..=5));
    assert_eq!(std::fs::metadata(&segment).unwrap().len(), good);
    log.publish(&event("a", 6)).await.unwrap();
    close(log, &path).await;
    let log = reopen(&path, options(100, DEFAULT_SEGMENT_SIZE)).await;
    assert_eq!(kept(&log, "a"), expected("a", 1..=6));
}

#[tokio::test]
async fn zeros_are_written_ahead_of_the_head_and_read_as_its_end() {
    let (_dir, path) = written(options(100, DEFAULT_SEGMENT_SIZE), 3).await;
    let (_, head, size) = segment_files(&path).pop().unwrap();
    let end = records_end(&head) as u64;
    assert_eq!(frames(&head).len(), 3);
    let (first_offset, first_len) = frames(&head)[0];
    assert_eq!(
        size,
        (first_offset + first_len) as u64 + segments::PREALLOCATE,
        "the first group wrote the zeros ahead, the next ones went into them"
    );

    // at a reopen the zeros are no damage: kept, and the next group goes right after the
    // records, into them
    let log = reopen(&path, options(100, DEFAULT_SEGMENT_SIZE)).await;
    assert_eq!(kept(&log, "a"), expected("a", 1..=3));
    assert_eq!(std::fs::metadata(&head).unwrap().len(), size);
    log.publish(&event("a", 4)).await.unwrap();
    assert_eq!(frames(&head).len(), 4);
    assert_eq!(frames(&head)[3].0 as u64, end);
    assert_eq!(
        std::fs::metadata(&head).unwrap().len(),
        size,
        "a group within the zeros does not grow the file"
    );
    close(log, &path).await;
    let log = reopen(&path, options(100, DEFAULT_SEGMENT_SIZE)).await;
    assert_eq!(kept(&log, "a"), expected("a", 1..=4));
    close(log, &path).await;

    // small segments: zeros never go past the segment size, and a sealed segment lets go
    // of them
    let opts = options(100, SMALL);
    let (_dir, path) = written(opts, 20).await;
    let segments = segment_files(&path);
    assert!(segments.len() >= 3, "small segments: {segments:?}");
    for (_, file, size) in &segments[..segments.len() - 1] {
        assert_eq!(*size as usize, records_end(file), "sealed: {file:?}");
    }
    let (_, head, size) = segments.last().unwrap();
    assert!(*size <= SMALL.max(records_end(head) as u64));
    // zeros behind a sealed segment's records (a crash before they were let go of) are
    // read as its end too, and let go of at the start
    let (_, first, first_size) = &segments[0];
    std::fs::OpenOptions::new()
        .write(true)
        .open(first)
        .unwrap()
        .set_len(first_size + 500)
        .unwrap();
    let log = reopen(&path, opts).await;
    assert_eq!(kept(&log, "a"), expected("a", 1..=20));
    assert_eq!(std::fs::metadata(first).unwrap().len(), *first_size);
}

#[tokio::test]
async fn a_corrupt_record_stops_the_reading_of_its_segment_there() {
    let opts = options(100, SMALL);
    let (_dir, path) = written(opts, 20).await;
    let segments = segment_files(&path);
    assert!(segments.len() >= 3, "small segments: {segments:?}");

    // a byte of the second record of the first segment changes: that segment is read up
    // to it, the next segments are read whole
    let first = &segments[0].1;
    let in_first = frames(first).len() as u32;
    let (offset, len) = frames(first)[1];
    flip_byte(first, offset + len - 3);
    let log = reopen(&path, opts).await;
    let mut want = expected("a", 1..=1);
    want.extend(expected("a", in_first + 1..=20));
    assert_eq!(
        kept(&log, "a"),
        want,
        "the records after the damage are skipped"
    );
    assert_eq!(log.last_sequence("a").unwrap(), 20);
    assert_eq!(
        std::fs::metadata(first).unwrap().len(),
        segments[0].2,
        "a sealed segment is left as it is"
    );
    // a reader that resumes across the gap gets what is left, in order
    let after: Vec<u64> = log
        .read("a", 1, 3)
        .unwrap()
        .iter()
        .map(|e| e.sequence)
        .collect();
    assert_eq!(
        after,
        (in_first + 1..=in_first + 3)
            .map(u64::from)
            .collect::<Vec<_>>()
    );
    close(log, &path).await;

    // in the middle of the last segment: the log is cut there
    let (_, last, _) = segment_files(&path).pop().unwrap();
    let records = frames(&last);
    assert!(records.len() >= 2);
    let (offset, _) = records[records.len() - 2];
    flip_byte(&last, offset + 12);
    let log = reopen(&path, opts).await;
    let cut: u32 = 20 - 2;
    assert_eq!(
        kept(&log, "a").last().unwrap(),
        &(u64::from(cut), format!("a-{cut}"))
    );
    assert_eq!(std::fs::metadata(&last).unwrap().len() as usize, offset);
    // the sequence numbers of the records cut (acknowledged, and perhaps seen by a
    // consumer) are not given again, even after another restart with nothing
    // published between (their bytes are gone): a consumer at 20 misses nothing new
    close(log, &path).await;
    let log = reopen(&path, opts).await;
    log.publish(&event("a", 99)).await.unwrap();
    assert_eq!(log.last_sequence("a").unwrap(), 21);
    let next: Vec<(u64, String)> = log
        .read("a", 20, 10)
        .unwrap()
        .iter()
        .map(|e| (e.sequence, id_of(e)))
        .collect();
    assert_eq!(next, [(21, "a-99".to_owned())]);
}

#[tokio::test]
async fn a_segment_that_cannot_be_read_stops_its_readers_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.redb");
    let log = EventLog::open_with(&path, options(100, SMALL)).unwrap();
    for n in 1..=20 {
        log.publish(&event("a", n)).await.unwrap();
    }
    let segments = segment_files(&path);
    assert!(segments.len() >= 3, "small segments: {segments:?}");
    let in_first = frames(&segments[0].1).len() as u32;

    // the second segment cannot be read (as on a disk error): a reader gets what comes
    // before it, and an error rather than what comes after it
    let second = &segments[1].1;
    let kept_bytes = std::fs::read(second).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(second)
        .unwrap()
        .set_len(4)
        .unwrap();
    let mut follower = log.follow("a", None, 0);
    let read = follower.next(100).await.unwrap();
    assert_eq!(
        read.iter().map(|e| e.sequence).collect::<Vec<_>>(),
        (1..=u64::from(in_first)).collect::<Vec<_>>()
    );
    assert!(follower.next(100).await.is_err());
    assert!(log.read("a", u64::from(in_first), 100).is_err());
    assert_eq!(follower.position(), u64::from(in_first));

    // once it can be read again, the follower goes on where it stopped: nothing missed
    std::fs::write(second, &kept_bytes).unwrap();
    let rest = follower.next(100).await.unwrap();
    assert_eq!(
        rest.iter().map(|e| e.sequence).collect::<Vec<_>>(),
        (u64::from(in_first) + 1..=20).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn retention_spans_segments_and_dead_segments_are_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.redb");
    let opts = options(3, SMALL);
    let log = EventLog::open_with(&path, opts).unwrap();
    for n in 1..=60 {
        log.publish(&event("a", n)).await.unwrap();
        log.publish(&event("b", n)).await.unwrap();
    }
    assert_eq!(kept(&log, "a"), expected("a", 58..=60));
    assert_eq!(kept(&log, "b"), expected("b", 58..=60));
    // 120 records of about 250 bytes were written; six are kept
    assert!(
        eventually(|| segment_files(&path).len() <= 3).await,
        "dead segments are deleted: {:?}",
        segment_files(&path)
    );
    let ids: Vec<u64> = segment_files(&path).iter().map(|s| s.0).collect();
    assert!(ids[0] > 20, "the old ones went: {ids:?}");
    close(log, &path).await;
    let log = reopen(&path, opts).await;
    assert_eq!(kept(&log, "a"), expected("a", 58..=60));
    assert_eq!(kept(&log, "b"), expected("b", 58..=60));
}

#[tokio::test]
async fn a_roll_over_that_failed_is_done_again_at_the_next_publish() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.redb");
    let log = EventLog::open_with(&path, options(100, SMALL)).unwrap();
    let mut n = 1;
    log.publish(&event("a", n)).await.unwrap();
    // the next segment's file is made, and its directory's sync fails: the publish
    // that needs it fails (the ones that fit the head before it go on)
    let failing = segments_dir(&path);
    segments::FAILING_SYNCS
        .lock()
        .unwrap()
        .push(failing.clone());
    loop {
        n += 1;
        assert!(n < 20, "a publish should have needed a new segment");
        if log.publish(&event("a", n)).await.is_err() {
            break;
        }
    }
    segments::FAILING_SYNCS
        .lock()
        .unwrap()
        .retain(|dir| *dir != failing);
    // once the disk is well again, the roll-over is done and publishes go on
    log.publish(&event("a", n)).await.unwrap();
    log.publish(&event("a", n + 1)).await.unwrap();
    assert_eq!(kept(&log, "a"), expected("a", 1..=n + 1));
    assert_eq!(segment_files(&path).len(), 2);
    close(log, &path).await;
    let log = reopen(&path, options(100, SMALL)).await;
    assert_eq!(kept(&log, "a"), expected("a", 1..=n + 1));
}

#[tokio::test]
async fn sequences_go_on_after_a_reopen_when_old_events_are_trimmed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.redb");
    let opts = options(2, SMALL);
    let log = EventLog::open_with(&path, opts).unwrap();
    for n in 1..=25 {
        log.publish(&event("a", n)).await.unwrap();
    }
    assert_eq!(log.segments.kept("a"), Some((24, 25)));
    close(log, &path).await;
    let log = reopen(&path, opts).await;
    assert_eq!(log.last_sequence("a").unwrap(), 25);
    log.publish(&event("a", 26)).await.unwrap();
    assert_eq!(kept(&log, "a"), expected("a", 25..=26));
    // a smaller retention applies at once
    close(log, &path).await;
    let log = reopen(&path, options(1, SMALL)).await;
    assert_eq!(kept(&log, "a"), expected("a", 26..=26));
    assert_eq!(log.last_sequence("a").unwrap(), 26);
}

#[tokio::test]
async fn an_idle_applications_records_are_compacted_with_their_sequence_numbers() {
    const IDLE: u32 = 12;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.redb");
    let opts = options(5, SMALL);
    let log = EventLog::open_with(&path, opts).unwrap();
    // twelve idle applications, one event each, in twelve different segments
    let first_segment = segment_files(&path)[0].1.clone();
    for k in 0..IDLE {
        let idle = format!("idle{k}");
        log.publish(&event(&idle, 1)).await.unwrap();
        for n in 1..=5 {
            log.publish(&event("busy", k * 5 + n)).await.unwrap();
        }
        if k == 0 {
            assert!(
                frames(&first_segment).len() > 1,
                "idle0 shares the first segment"
            );
        }
    }
    for n in IDLE * 5 + 1..=200 {
        log.publish(&event("busy", n)).await.unwrap();
    }
    let settled = eventually(|| {
        let files = segment_files(&path);
        !first_segment.exists() && files.len() < IDLE as usize
    })
    .await;
    assert!(
        settled,
        "the pinned segments are compacted: {:?}",
        segment_files(&path)
    );
    for k in 0..IDLE {
        let idle = format!("idle{k}");
        assert_eq!(kept(&log, &idle), expected(&idle, 1..=1));
    }
    assert_eq!(kept(&log, "busy"), expected("busy", 196..=200));
    close(log, &path).await;

    let log = reopen(&path, opts).await;
    for k in 0..IDLE {
        let idle = format!("idle{k}");
        assert_eq!(kept(&log, &idle), expected(&idle, 1..=1));
        assert_eq!(
            log.read(&idle, 0, 1).unwrap()[0].application_uid.as_deref(),
            Some(format!("uid-{idle}").as_str())
        );
    }
    log.publish(&event("idle0", 2)).await.unwrap();
    assert_eq!(kept(&log, "idle0"), expected("idle0", 1..=2));
    assert_eq!(kept(&log, "busy"), expected("busy", 196..=200));
}

#[tokio::test]
async fn the_events_of_the_previous_format_are_moved_to_segments() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.redb");
    {
        // as the previous version left it: events, counters and state in redb tables
        let db = Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut events = txn.open_table(EVENTS).unwrap();
            let mut sequences = txn.open_table(SEQUENCES).unwrap();
            let mut state = txn.open_table(STATE).unwrap();
            for n in 3..=7u32 {
                events
                    .insert(("a", u64::from(n)), to_json(&event("a", n)).as_str())
                    .unwrap();
            }
            events
                .insert(("b", 1), to_json(&event("b", 1)).as_str())
                .unwrap();
            sequences.insert("a", 7).unwrap();
            sequences.insert("b", 1).unwrap();
            state.insert("ws/uid-a/g1", "5").unwrap();
        }
        txn.commit().unwrap();
    }
    let log = EventLog::open(&path, 100).unwrap();
    assert_eq!(kept(&log, "a"), expected("a", 3..=7));
    assert_eq!(kept(&log, "b"), expected("b", 1..=1));
    let moved = &log.read("a", 6, 1).unwrap()[0];
    assert_eq!(moved.sequence, 7);
    assert_eq!(moved.application_uid.as_deref(), Some("uid-a"));
    assert_eq!(moved.subject.as_deref(), Some("telemetry"));
    assert_eq!(log.last_sequence("a").unwrap(), 7);
    assert_eq!(log.state("ws/uid-a/g1").unwrap().as_deref(), Some("5"));
    log.publish(&event("a", 8)).await.unwrap();
    assert_eq!(kept(&log, "a"), expected("a", 3..=8));
    close(log, &path).await;

    // the old tables are gone, so a reopen moves nothing twice
    {
        let db = Database::create(&path).unwrap();
        let txn = db.begin_read().unwrap();
        let tables: Vec<String> = txn
            .list_tables()
            .unwrap()
            .map(|t| redb::TableHandle::name(&t).to_owned())
            .collect();
        assert_eq!(tables, ["state"]);
    }
    let log = reopen(&path, options(100, DEFAULT_SEGMENT_SIZE)).await;
    assert_eq!(kept(&log, "a"), expected("a", 3..=8));
    assert_eq!(kept(&log, "b"), expected("b", 1..=1));
}

#[tokio::test]
async fn a_migration_cut_short_is_finished_without_duplicates() {
    let (_dir, path) = written(options(100, DEFAULT_SEGMENT_SIZE), 3).await;
    {
        // the segments hold 1..=3 and the old table still lists 2..=5: as after a crash
        // between writing the segments and dropping the tables
        let db = Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut events = txn.open_table(EVENTS).unwrap();
            for n in 2..=5u32 {
                events
                    .insert(("a", u64::from(n)), to_json(&event("a", n)).as_str())
                    .unwrap();
            }
        }
        txn.commit().unwrap();
    }
    let log = reopen(&path, options(100, DEFAULT_SEGMENT_SIZE)).await;
    assert_eq!(kept(&log, "a"), expected("a", 1..=5));
}

/// An event of application `app` whose `uid` is `uid`.
fn event_of(app: &str, uid: &str, n: u32) -> Event {
    let mut event = event(app, n);
    event.set_extension("applicationuid", uid.to_owned());
    event
}

/// Whether any segment file holds `bytes`.
fn on_disk(path: &Path, bytes: &[u8]) -> bool {
    segment_files(path).iter().any(|(_, file, _)| {
        std::fs::read(file)
            .map(|data| data.windows(bytes.len()).any(|w| w == bytes))
            .unwrap_or(false)
    })
}

#[tokio::test]
async fn a_deleted_applications_events_are_erased_from_disk_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.redb");
    let log = EventLog::open_with(&path, options(1000, SMALL)).unwrap();
    // the application "a" (uid-a), then another of the name (uid-b), then a late event of
    // the first, the name's newest
    for n in 1..=30 {
        log.publish(&event_of("a", "uid-a", n)).await.unwrap();
    }
    for n in 31..=35 {
        log.publish(&event_of("a", "uid-b", n)).await.unwrap();
    }
    log.publish(&event_of("a", "uid-a", 36)).await.unwrap();
    log.publish(&event_of("c", "uid-c", 1)).await.unwrap();
    let mut uids = log.application_uids();
    uids.sort();
    let pair = |a: &str, u: &str| (a.to_owned(), u.to_owned());
    assert_eq!(
        uids,
        [pair("a", "uid-a"), pair("a", "uid-b"), pair("c", "uid-c")]
    );
    assert!(on_disk(&path, b"uid-a") && on_disk(&path, b"uid-b"));

    // the name's newest (36) is not counted: it stays, as a tombstone
    assert_eq!(log.forget("a", "uid-a"), 30);
    assert_eq!(kept(&log, "a"), expected("a", 31..=35), "none of uid-a's");
    assert_eq!(log.forget("a", "uid-b"), 5);
    assert_eq!(log.forget("a", "uid-b"), 0, "once");
    assert_eq!(kept(&log, "a"), []);
    assert_eq!(log.forget("a", "uid-a"), 0);
    assert_eq!(log.forget("nobody", "uid-x"), 0);
    assert_eq!(kept(&log, "c"), expected("c", 1..=1), "another's are kept");

    // erased from disk without waiting for another event, the name's newest included
    assert!(
        eventually(|| !on_disk(&path, b"uid-a") && !on_disk(&path, b"uid-b")).await,
        "still on disk: {:?}",
        segment_files(&path)
    );
    assert_eq!(log.application_uids(), [pair("c", "uid-c")]);
    assert!(on_disk(&path, b"uid-c"));
    assert_eq!(kept(&log, "c"), expected("c", 1..=1));
    // nothing of "a" is left to read: the name is forgotten for good
    assert!(eventually(|| log.names() == 1).await, "{}", log.names());
    assert_eq!(log.last_sequence("a").unwrap(), 0);
    close(log, &path).await;

    // the floor keeps the name's numbers from going back through a restart
    let log = reopen(&path, options(1000, SMALL)).await;
    assert_eq!(log.last_sequence("a").unwrap(), 0);
    assert_eq!(kept(&log, "a"), []);
    assert_eq!(log.names(), 1);
    assert_eq!(log.application_uids(), [pair("c", "uid-c")]);
    log.publish(&event_of("a", "uid-d", 37)).await.unwrap();
    assert_eq!(kept(&log, "a"), expected("a", 37..=37));
    assert_eq!(kept(&log, "c"), expected("c", 1..=1));
    close(log, &path).await;
    let log = reopen(&path, options(1000, SMALL)).await;
    assert_eq!(kept(&log, "a"), expected("a", 37..=37));
    log.publish(&event_of("a", "uid-d", 38)).await.unwrap();
    assert_eq!(kept(&log, "a"), expected("a", 37..=38));
    assert_eq!(kept(&log, "c"), expected("c", 1..=1));
}

#[tokio::test]
async fn an_application_stays_listed_until_the_deletion_of_its_segments_is_durable() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.redb");
    let log = EventLog::open_with(&path, options(1000, SMALL)).unwrap();
    for n in 1..=12 {
        log.publish(&event_of("a", "uid-a", n)).await.unwrap();
    }
    for n in 1..=12 {
        log.publish(&event_of("c", "uid-c", n)).await.unwrap();
    }
    // the segments' directory cannot be synced: the files holding uid-a's records go,
    // but a crash could bring them back, so the application is still listed
    let failing = segments_dir(&path);
    segments::FAILING_SYNCS
        .lock()
        .unwrap()
        .push(failing.clone());
    assert_eq!(log.forget("a", "uid-a"), 11);
    let gone = eventually(|| !on_disk(&path, b"uid-a")).await;
    let listed = log.application_uids();
    segments::FAILING_SYNCS
        .lock()
        .unwrap()
        .retain(|dir| *dir != failing);
    assert!(gone, "still on disk: {:?}", segment_files(&path));
    let pair = |a: &str, u: &str| (a.to_owned(), u.to_owned());
    assert!(listed.contains(&pair("a", "uid-a")), "{listed:?}");

    // once the directory syncs, the deletion is retried after the next group and done
    log.publish(&event_of("c", "uid-c", 13)).await.unwrap();
    assert!(
        eventually(|| log.application_uids() == [pair("c", "uid-c")]).await,
        "{:?}",
        log.application_uids()
    );
    assert_eq!(kept(&log, "c"), expected("c", 1..=13));
    assert_eq!(kept(&log, "a"), []);
}

#[tokio::test]
async fn records_forgotten_while_their_segment_is_copied_are_erased_too() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.redb");
    let log = EventLog::open_with(&path, options(1000, SMALL)).unwrap();
    for n in 1..=10 {
        for (app, uid) in [("a", "uid-a"), ("b", "uid-b"), ("c", "uid-c")] {
            log.publish(&event_of(app, uid, n)).await.unwrap();
        }
    }
    // b's erasure copies a's records, and a is forgotten in the middle of a copy
    let racing = log.clone();
    segments::WHILE_COPYING.lock().unwrap().push((
        segments_dir(&path),
        Box::new(move || {
            assert_eq!(racing.forget("a", "uid-a"), 9);
        }),
    ));
    assert_eq!(log.forget("b", "uid-b"), 9);
    assert!(
        eventually(|| !on_disk(&path, b"uid-a") && !on_disk(&path, b"uid-b")).await,
        "still on disk: {:?}",
        segment_files(&path)
    );
    assert!(segments::WHILE_COPYING.lock().unwrap().is_empty(), "raced");
    assert_eq!(kept(&log, "a"), []);
    assert_eq!(kept(&log, "c"), expected("c", 1..=10));
    close(log, &path).await;
    let log = reopen(&path, options(1000, SMALL)).await;
    assert_eq!(kept(&log, "a"), []);
    assert_eq!(kept(&log, "b"), []);
    assert_eq!(kept(&log, "c"), expected("c", 1..=10));
}

#[tokio::test]
async fn groups_are_committed_between_the_steps_of_a_segments_rewrite() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.redb");
    let log = EventLog::open_with(&path, options(1000, 8 << 20)).unwrap();
    // a segment of 6.4 MB: a's and b's events of 16 kB in turn
    let large = |app: &str, n: u32| {
        let mut event = event(app, n);
        event.set_data(
            "application/json",
            serde_json::json!({"n": n, "pad": "x".repeat(16 << 10)}),
        );
        event
    };
    for n in 1..=200 {
        log.publish(&large("a", n)).await.unwrap();
        log.publish(&large("b", n)).await.unwrap();
    }
    // a's erasure copies b's 3.2 MB to a new head, in steps; while the first step is
    // copying, an event of "x" is queued
    let during = log.clone();
    let hook = move || {
        let (queued, waiting) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap();
            let event = crate::events::StructuredEvent::from(&event("x", 1));
            runtime
                .block_on(during.publish_in_order(event, &move || queued.send(()).unwrap()))
                .unwrap();
        });
        waiting.recv().unwrap();
    };
    segments::WHILE_COPYING
        .lock()
        .unwrap()
        .push((segments_dir(&path), Box::new(hook)));
    assert_eq!(log.forget("a", "uid-a"), 199);
    assert!(
        eventually(|| !on_disk(&path, b"uid-a")).await,
        "still on disk: {:?}",
        segment_files(&path)
    );
    assert!(
        segments::WHILE_COPYING.lock().unwrap().is_empty(),
        "not copied"
    );
    assert_eq!(kept(&log, "x"), expected("x", 1..=1));
    assert_eq!(kept(&log, "b"), expected("b", 1..=200));
    // the event went in after the first step's copies and before the last step's
    let files = segment_files(&path);
    assert_eq!(files.len(), 1, "{files:?}");
    let head = std::fs::read(&files[0].1).unwrap();
    let at = |id: &str| {
        let needle = format!("\"id\":\"{id}\"");
        head.windows(needle.len())
            .position(|w| w == needle.as_bytes())
            .unwrap_or_else(|| panic!("{id} not in the head"))
    };
    assert!(at("b-1") < at("x-1"), "{} {}", at("b-1"), at("x-1"));
    assert!(at("x-1") < at("b-200"), "{} {}", at("x-1"), at("b-200"));
    close(log, &path).await;
    let log = reopen(&path, options(1000, 8 << 20)).await;
    assert_eq!(kept(&log, "b"), expected("b", 1..=200));
    assert_eq!(kept(&log, "x"), expected("x", 1..=1));
    assert_eq!(kept(&log, "a"), []);
}

#[tokio::test]
async fn an_erasure_cut_short_by_a_crash_is_done_again() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.redb");
    let log = EventLog::open_with(&path, options(1000, SMALL)).unwrap();
    for n in 1..=10 {
        log.publish(&event_of("a", "uid-a", n)).await.unwrap();
        log.publish(&event_of("c", "uid-c", n)).await.unwrap();
    }
    // the files before the erasure: a crash between a rewrite's copies and the old
    // segment's deletion leaves the old one beside the copies
    let before: Vec<(PathBuf, Vec<u8>)> = segment_files(&path)
        .into_iter()
        .map(|(_, file, _)| {
            let data = std::fs::read(&file).unwrap();
            (file, data)
        })
        .collect();
    assert_eq!(log.forget("a", "uid-a"), 9);
    // publishes while the segments are rewritten are neither lost nor erased
    for n in 11..=20 {
        log.publish(&event_of("c", "uid-c", n)).await.unwrap();
    }
    assert!(eventually(|| !on_disk(&path, b"uid-a")).await);
    assert_eq!(kept(&log, "c"), expected("c", 1..=20));
    close(log, &path).await;
    for (file, data) in before {
        if !file.exists() {
            std::fs::write(file, data).unwrap();
        }
    }

    // the copies count, the tombstone too; what came back is listed, and erased again
    let log = reopen(&path, options(1000, SMALL)).await;
    assert_eq!(kept(&log, "c"), expected("c", 1..=20));
    assert_eq!(kept(&log, "a"), expected("a", 1..=9));
    assert_eq!(log.last_sequence("a").unwrap(), 10);
    assert!(
        log.application_uids()
            .contains(&("a".to_owned(), "uid-a".to_owned()))
    );
    assert_eq!(log.forget("a", "uid-a"), 9);
    assert!(eventually(|| !on_disk(&path, b"uid-a")).await);
    assert_eq!(kept(&log, "a"), []);
    close(log, &path).await;
    let log = reopen(&path, options(1000, SMALL)).await;
    assert_eq!(kept(&log, "c"), expected("c", 1..=20));
    assert_eq!(kept(&log, "a"), []);
    assert_eq!(log.names(), 1);
    // above the floor: the highest number given when "a" was forgotten, c's 20
    log.publish(&event_of("a", "uid-d", 11)).await.unwrap();
    assert_eq!(kept(&log, "a"), [(21, "a-11".to_owned())]);
}

#[tokio::test]
async fn what_retention_dropped_of_a_deleted_application_is_erased_too() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.redb");
    let log = EventLog::open_with(&path, options(5, SMALL)).unwrap();
    // c's one event pins the first segment, where a's first events stay on disk after
    // retention dropped them from the index
    log.publish(&event_of("c", "uid-c", 1)).await.unwrap();
    for n in 1..=20 {
        log.publish(&event_of("a", "uid-a", n)).await.unwrap();
    }
    assert_eq!(kept(&log, "a"), expected("a", 16..=20));
    assert!(on_disk(&path, br#""a-1""#), "{:?}", segment_files(&path));
    let pair = |a: &str, u: &str| (a.to_owned(), u.to_owned());
    let mut uids = log.application_uids();
    uids.sort();
    assert_eq!(uids, [pair("a", "uid-a"), pair("c", "uid-c")]);
    assert_eq!(log.forget("a", "uid-a"), 4);
    assert!(
        eventually(|| !on_disk(&path, b"uid-a")).await,
        "still on disk: {:?}",
        segment_files(&path)
    );
    assert_eq!(log.application_uids(), [pair("c", "uid-c")]);
    assert_eq!(kept(&log, "c"), expected("c", 1..=1));
    close(log, &path).await;
    let log = reopen(&path, options(5, SMALL)).await;
    assert_eq!(kept(&log, "c"), expected("c", 1..=1));
    assert_eq!(log.names(), 1);
    log.publish(&event_of("a", "uid-d", 21)).await.unwrap();
    assert_eq!(kept(&log, "a"), expected("a", 21..=21));
}

#[tokio::test]
async fn a_name_no_application_has_is_forgotten_for_good() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.redb");
    let log = EventLog::open_with(&path, options(1000, SMALL)).unwrap();
    // applications made and deleted under new names, each two events (as the registry's
    // change events of its making and its deletion)
    let names: Vec<String> = (1..=200).map(|n| format!("gone-{n}")).collect();
    for name in &names {
        for n in 1..=2 {
            log.publish(&event_of(name, &format!("uid-{name}"), n))
                .await
                .unwrap();
        }
    }
    for n in 1..=5 {
        log.publish(&event_of("c", "uid-c", n)).await.unwrap();
    }
    // a consumer of a later application of "gone-1" that started at the name's newest
    // event, before the name was forgotten
    let mut follower = log.follow("gone-1", Some("uid-later"), 2);
    assert_eq!(log.names(), 201);

    let uids: Vec<String> = names.iter().map(|name| format!("uid-{name}")).collect();
    let removed = log.forget_all(
        names
            .iter()
            .map(String::as_str)
            .zip(uids.iter().map(String::as_str)),
    );
    assert_eq!(removed, 200, "the newest of each are not counted");
    // once their events are erased from the files, the index forgets the names (only
    // the tombstones of their newest are left, counted for nothing: they go with
    // their segments)
    assert!(
        eventually(|| !on_disk(&path, b"uid-gone-1") && !on_disk(&path, b"uid-gone-200")).await
    );
    assert!(eventually(|| log.names() == 1).await, "{}", log.names());
    assert_eq!(log.last_sequence("gone-1").unwrap(), 0);
    assert_eq!(kept(&log, "c"), expected("c", 1..=5));

    // a later application of a forgotten name starts above every number given before
    // (c's 5, not the name's own 2): the consumer that started at the old newest gets
    // its first event
    log.publish(&event_of("gone-1", "uid-later", 1))
        .await
        .unwrap();
    let got = tokio::time::timeout(Duration::from_secs(5), follower.next(10))
        .await
        .expect("the event, not a wait")
        .unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].sequence, 6, "above the floor: 5");
    drop(follower);
    close(log, &path).await;

    // through a restart: the names stay forgotten (tombstones left in the files are
    // dropped at open) and the floor stays
    let log = reopen(&path, options(1000, SMALL)).await;
    assert_eq!(log.names(), 2);
    assert_eq!(kept(&log, "gone-1").len(), 1);
    log.publish(&event_of("gone-2", "uid-later-2", 1))
        .await
        .unwrap();
    assert_eq!(log.read("gone-2", 0, 10).unwrap()[0].sequence, 6);
}

#[tokio::test]
async fn a_name_keeps_its_numbers_while_another_application_of_it_has_events() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.redb");
    let log = EventLog::open_with(&path, options(1000, SMALL)).unwrap();
    for n in 1..=3 {
        log.publish(&event_of("a", "uid-a", n)).await.unwrap();
    }
    for n in 4..=5 {
        log.publish(&event_of("a", "uid-b", n)).await.unwrap();
    }
    // uid-a's late event is the name's newest: its tombstone stays while uid-b's are
    // there to read
    log.publish(&event_of("a", "uid-a", 6)).await.unwrap();
    assert_eq!(log.forget("a", "uid-a"), 3);
    assert!(eventually(|| !on_disk(&path, b"uid-a")).await);
    assert_eq!(log.names(), 1);
    assert_eq!(kept(&log, "a"), expected("a", 4..=5));
    assert_eq!(log.last_sequence("a").unwrap(), 6);
}
