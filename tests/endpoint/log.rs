//! The local event log: durable before `publish` returns, ordered, kept across a
//! reopen, pruned to its retention, and live for subscribers.

use chrono::Utc;
use cloudevents::{EventBuilder, EventBuilderV10};
use drogue_shared::events::EventSink;
use drogue_shared::events::log::EventLog;

fn event(app: &str, n: usize) -> cloudevents::Event {
    EventBuilderV10::new()
        .id(n.to_string())
        .ty("io.drogue.event.v1")
        .source(format!("drogue://{app}/d"))
        .subject("telemetry")
        .time(Utc::now())
        .extension("application", app)
        .data("application/json", serde_json::json!({"n": n}))
        .build()
        .unwrap()
}

fn numbers(log: &EventLog, app: &str) -> Vec<u64> {
    log.read(app, 0, usize::MAX)
        .unwrap()
        .iter()
        .map(|e| {
            serde_json::from_str::<serde_json::Value>(&e.json).unwrap()["data"]["n"]
                .as_u64()
                .unwrap()
        })
        .collect()
}

#[tokio::test]
async fn concurrent_publishes_are_all_kept_in_order_of_their_sequence() {
    let dir = tempfile::tempdir().unwrap();
    let log = EventLog::open(dir.path().join("e.redb"), 10_000).unwrap();
    let mut live = log.subscribe();
    let mut tasks = Vec::new();
    for n in 0..500 {
        let log = log.clone();
        tasks.push(tokio::spawn(
            async move { log.publish(&event("a", n)).await },
        ));
    }
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    let logged = log.read("a", 0, usize::MAX).unwrap();
    assert_eq!(logged.len(), 500);
    let sequences: Vec<u64> = logged.iter().map(|e| e.sequence).collect();
    assert_eq!(sequences, (1..=500).collect::<Vec<_>>());
    let mut seen = numbers(&log, "a");
    seen.sort();
    assert_eq!(seen, (0..500).collect::<Vec<_>>(), "every event, once");
    let mut live_count = 0;
    while let Ok(event) = live.try_recv() {
        assert_eq!(event.application, "a");
        live_count += 1;
    }
    assert_eq!(live_count, 500, "subscribers saw every event");
}

#[tokio::test]
async fn the_log_survives_a_reopen_and_keeps_its_retention() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("e.redb");
    {
        let log = EventLog::open(&path, 5).unwrap();
        for n in 0..8 {
            log.publish(&event("a", n)).await.unwrap();
        }
        log.publish(&event("b", 100)).await.unwrap();
        assert_eq!(
            numbers(&log, "a"),
            [3, 4, 5, 6, 7],
            "the last five are kept"
        );
    }
    // the writer thread still holds the file until its channel closes
    let mut reopened = None;
    for _ in 0..250 {
        match EventLog::open(&path, 5) {
            Ok(log) => {
                reopened = Some(log);
                break;
            }
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
        }
    }
    let log = reopened.expect("the log reopens once its writer stopped");
    assert_eq!(numbers(&log, "a"), [3, 4, 5, 6, 7]);
    assert_eq!(numbers(&log, "b"), [100]);
    log.publish(&event("a", 8)).await.unwrap();
    let logged = log.read("a", 0, usize::MAX).unwrap();
    assert_eq!(
        logged.last().unwrap().sequence,
        9,
        "sequences go on after a reopen"
    );
    assert_eq!(
        log.read("a", 7, 10).unwrap().len(),
        2,
        "reading after a sequence"
    );
}
