//! Waiting for commands and responses, woken by in-process signals or by polling.

use super::store::{command, device};
use chrono::Utc;
use drogue_shared::commands::{CommandResponse, CommandService, Signals};
use drogue_tests::TestStore;
use drogue_tests::suite::Case;
use std::time::{Duration, Instant};

pub const CASES: &[Case<TestStore>] = &[
    (
        "a waiting device gets a command dropped off meanwhile",
        |s| Box::pin(woken(s)),
    ),
    (
        "without signals, waiters find commands by looking again",
        |s| Box::pin(polled(s)),
    ),
    (
        "a waiting drop-off gets the response, or nothing in time",
        |s| Box::pin(responses(s)),
    ),
    (
        "commands of an earlier device of the same name are never delivered",
        |s| Box::pin(earlier_device(s)),
    ),
];

async fn earlier_device(t: TestStore) {
    let service = CommandService::new(t.store.clone()).with_signals(Signals::default());
    let mut stale = command("d1", "for-the-old-d1", 2000, 3600);
    stale.device_uid = "uid-of-an-earlier-d1".into();
    let fresh = command("d1", "for-d1", 1000, 3600);
    service.drop_off(&stale).await.unwrap();
    service.drop_off(&fresh).await.unwrap();
    let got = service
        .wait_for_command("app1", &device("d1"), Duration::ZERO)
        .await
        .unwrap()
        .expect("the command for this d1");
    assert_eq!(got.id, fresh.id, "the earlier device's command is skipped");
    assert!(
        service
            .wait_for_command("app1", &device("d1"), Duration::ZERO)
            .await
            .unwrap()
            .is_none(),
        "and dropped"
    );
    assert!(stale.is_for("app1", &{
        let mut old = device("d1");
        old.metadata.uid = "uid-of-an-earlier-d1".into();
        old
    }));
    assert!(!stale.is_for("app1", &device("d1")));
    assert!(!fresh.is_for("app2", &device("d1")));
}

async fn woken(t: TestStore) {
    let service = CommandService::new(t.store.clone()).with_signals(Signals::default());
    let waiter = {
        let service = service.clone();
        tokio::spawn(async move {
            service
                .wait_for_command("app1", &device("d1"), Duration::from_secs(10))
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    let c = command("d1", "wake", 0, 60);
    service
        .drop_off(&command("d2", "not-for-d1", 0, 60))
        .await
        .unwrap();
    service.drop_off(&c).await.unwrap();
    let got = waiter.await.unwrap().unwrap().expect("the command");
    assert_eq!(got.id, c.id);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "woken, not timed out"
    );
    let none = service
        .wait_for_command("app1", &device("d1"), Duration::from_millis(200))
        .await
        .unwrap();
    assert!(none.is_none(), "taken once");
    assert_eq!(
        service
            .wait_for_command("app1", &device("d2"), Duration::ZERO)
            .await
            .unwrap()
            .unwrap()
            .name,
        "not-for-d1"
    );
}

async fn polled(t: TestStore) {
    let service = CommandService::new(t.store.clone());
    let waiter = {
        let service = service.clone();
        tokio::spawn(async move {
            service
                .wait_for_command("app1", &device("d1"), Duration::from_secs(5))
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let c = command("d1", "poll", 0, 60);
    t.store.enqueue(&c).await.unwrap();
    assert_eq!(waiter.await.unwrap().unwrap().unwrap().id, c.id);
    let started = Instant::now();
    assert!(
        service
            .wait_for_command("app1", &device("d1"), Duration::from_millis(600))
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        started.elapsed() >= Duration::from_millis(600),
        "waited the whole timeout"
    );
}

async fn responses(t: TestStore) {
    let service = CommandService::new(t.store.clone()).with_signals(Signals::default());
    let c = command("d1", "ask", 0, 60);
    service.drop_off(&c).await.unwrap();
    let waiter = {
        let (service, id) = (service.clone(), c.id.clone());
        tokio::spawn(async move {
            service
                .wait_for_response(&id, Duration::from_secs(10))
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let answer = CommandResponse {
        id: c.id.clone(),
        status: 201,
        responder: "d1".into(),
        content_type: Some("text/plain".into()),
        payload: b"ok".to_vec(),
        received: Utc::now(),
    };
    assert!(service.respond(&c, &answer).await.unwrap());
    assert_eq!(waiter.await.unwrap().unwrap(), Some(answer));
    let unanswered = command("d1", "silent", 0, 60);
    service.drop_off(&unanswered).await.unwrap();
    let none = service
        .wait_for_response(&unanswered.id, Duration::from_millis(300))
        .await
        .unwrap();
    assert!(none.is_none());
}
