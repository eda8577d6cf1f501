//! The command store: inboxes, expiry, responses.

use chrono::{Duration, Utc};
use drogue_shared::commands::{Command, CommandResponse};
use drogue_tests::TestStore;
use drogue_tests::suite::Case;
use std::collections::HashSet;

pub const CASES: &[Case<TestStore>] = &[
    ("commands are taken oldest first, once, per device", |s| {
        Box::pin(order(s))
    }),
    ("concurrent takers never take the same command", |s| {
        Box::pin(concurrent(s))
    }),
    ("expired commands are never taken", |s| Box::pin(expired(s))),
    ("a command takes one response, until it expires", |s| {
        Box::pin(responses(s))
    }),
];

/// A device of `app1` named `name`, with the `uid` [`command`] gives its commands.
pub fn device(name: &str) -> drogue_shared::model::Device {
    serde_json::from_value(serde_json::json!({
        "metadata": {
            "name": name,
            "application": "app1",
            "uid": format!("uid-of-{name}"),
            "creationTimestamp": Utc::now(),
            "generation": 0,
            "resourceVersion": "rv"
        }
    }))
    .expect("a device")
}

pub fn command(device: &str, name: &str, created_ago_ms: i64, ttl_s: i64) -> Command {
    let created = Utc::now() - Duration::milliseconds(created_ago_ms);
    Command {
        id: uuid::Uuid::new_v4().to_string(),
        application: "app1".into(),
        application_uid: String::new(),
        device: device.into(),
        device_uid: format!("uid-of-{device}"),
        name: name.into(),
        content_type: Some("application/json".into()),
        payload: format!("{{\"name\":\"{name}\"}}").into_bytes(),
        created,
        expires: created + Duration::seconds(ttl_s),
    }
}

async fn order(t: TestStore) {
    let s = t.store;
    let (first, second, third) = (
        command("d1", "one", 3000, 60),
        command("d1", "two", 2000, 60),
        command("d1", "three", 1000, 60),
    );
    for c in [&second, &third, &first] {
        s.enqueue(c).await.unwrap();
    }
    s.enqueue(&command("d2", "other", 4000, 60)).await.unwrap();
    let now = Utc::now();
    let mut taken = Vec::new();
    while let Some(c) = s.take_command("app1", "d1", now).await.unwrap() {
        taken.push(c.name.clone());
        if taken.len() == 1 {
            assert_eq!(c, first, "stored as given");
        }
    }
    assert_eq!(taken, ["one", "two", "three"]);
    assert!(s.take_command("app1", "d1", now).await.unwrap().is_none());
    assert_eq!(
        s.take_command("app1", "d2", now)
            .await
            .unwrap()
            .unwrap()
            .name,
        "other"
    );
    assert!(
        s.take_command("app2", "d2", now).await.unwrap().is_none(),
        "another application's inbox is another"
    );
}

async fn concurrent(t: TestStore) {
    let s = t.store;
    let mut ids = HashSet::new();
    for i in 0..20 {
        let c = command("busy", &format!("c{i}"), 10_000 - i * 10, 60);
        ids.insert(c.id.clone());
        s.enqueue(&c).await.unwrap();
    }
    let mut takers = Vec::new();
    for _ in 0..6 {
        let s = s.clone();
        takers.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            while let Some(c) = s.take_command("app1", "busy", Utc::now()).await.unwrap() {
                mine.push(c.id);
            }
            mine
        }));
    }
    let mut taken = Vec::new();
    for taker in takers {
        taken.extend(taker.await.unwrap());
    }
    assert_eq!(
        taken.len(),
        20,
        "each command was taken exactly once: {taken:?}"
    );
    assert_eq!(taken.into_iter().collect::<HashSet<_>>(), ids);
}

async fn expired(t: TestStore) {
    let s = t.store;
    let old = command("d1", "old", 10_000, 5);
    let fresh = command("d1", "fresh", 1_000, 60);
    s.enqueue(&old).await.unwrap();
    s.enqueue(&fresh).await.unwrap();
    let now = Utc::now();
    assert_eq!(
        s.take_command("app1", "d1", now)
            .await
            .unwrap()
            .unwrap()
            .name,
        "fresh"
    );
    assert!(
        s.take_command("app1", "d1", now).await.unwrap().is_none(),
        "the expired one is skipped"
    );
    // a command is no longer taken once its time is over, even if still stored
    let soon = command("d1", "soon", 0, 2);
    s.enqueue(&soon).await.unwrap();
    let later = Utc::now() + Duration::seconds(3);
    assert!(s.take_command("app1", "d1", later).await.unwrap().is_none());
}

async fn responses(t: TestStore) {
    let s = t.store;
    let c = command("d1", "get", 0, 60);
    s.enqueue(&c).await.unwrap();
    let now = Utc::now();
    assert_eq!(s.get_command(&c.id, now).await.unwrap(), Some(c.clone()));
    assert!(s.get_command("no-such-id", now).await.unwrap().is_none());
    assert!(s.get_response(&c.id, now).await.unwrap().is_none());
    let answer = CommandResponse {
        id: c.id.clone(),
        status: 200,
        responder: "d1".into(),
        content_type: None,
        payload: b"done".to_vec(),
        received: now,
    };
    assert!(
        s.record_response(&answer, c.responses_until())
            .await
            .unwrap()
    );
    let second = CommandResponse {
        status: 500,
        ..answer.clone()
    };
    assert!(
        !s.record_response(&second, c.responses_until())
            .await
            .unwrap(),
        "only the first counts"
    );
    assert_eq!(s.get_response(&c.id, now).await.unwrap(), Some(answer));
    // after the command stops taking responses, both are gone
    let after = c.responses_until() + Duration::seconds(1);
    assert!(s.get_command(&c.id, after).await.unwrap().is_none());
    assert!(s.get_response(&c.id, after).await.unwrap().is_none());
}
