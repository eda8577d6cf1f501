//! Applications: uniqueness, conditional writes, the delete cascade, the shared trust
//! anchor subject index.

use super::fixtures::*;
use drogue_shared::model::Claim;
use drogue_shared::store::{Conflict, Store, StoreError, StoredApplication};
use drogue_tests::TestStore;
use drogue_tests::suite::Case;
use serde_json::json;
use std::sync::Arc;

pub const CASES: &[Case<TestStore>] = &[
    (
        "each user's applications are listed through the membership index",
        |s| Box::pin(per_user_listing(s)),
    ),
    ("applications are created, read and listed by name", |s| {
        Box::pin(create_read_list(s))
    }),
    ("a second application of the same name conflicts", |s| {
        Box::pin(duplicate(s))
    }),
    ("updates and deletes need the current revision", |s| {
        Box::pin(revisions(s))
    }),
    (
        "deleting an application deletes its devices and only them",
        |s| Box::pin(cascade(s)),
    ),
    ("deleting a large application removes every device", |s| {
        Box::pin(large_cascade(s))
    }),
    (
        "applications of different owners may hold the same trust anchor subject",
        |s| Box::pin(anchor_claims(s)),
    ),
];

async fn create_read_list(t: TestStore) {
    let s = t.store;
    for name in ["charlie", "alpha", "bravo"] {
        s.create_application(&app(name)).await.unwrap();
    }
    let got = s
        .get_application(&app_name("alpha"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.app.metadata.name, "alpha");
    assert_eq!(got.owner, "owner");
    assert!(
        s.get_application(&app_name("delta"))
            .await
            .unwrap()
            .is_none()
    );
    let names: Vec<_> = s
        .list_applications()
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.app.metadata.name)
        .collect();
    assert_eq!(names, ["alpha", "bravo", "charlie"]);
}

async fn duplicate(t: TestStore) {
    let s = t.store;
    s.create_application(&app("a")).await.unwrap();
    let err = s.create_application(&app("a")).await.unwrap_err();
    assert!(
        matches!(err, StoreError::Conflict(Conflict::AlreadyExists)),
        "{err:?}"
    );
}

async fn revisions(t: TestStore) {
    let s = t.store;
    let first = app("a");
    s.create_application(&first).await.unwrap();
    let mut second = first.clone();
    second.app = revised(&first.app, json!({"v": 2}));
    s.update_application(&first, &second).await.unwrap();

    let mut stale = first.clone();
    stale.app = revised(&first.app, json!({"v": 3}));
    let err = s.update_application(&first, &stale).await.unwrap_err();
    assert!(
        matches!(err, StoreError::Conflict(Conflict::Changed)),
        "{err:?}"
    );
    let err = s.delete_application(&first).await.unwrap_err();
    assert!(
        matches!(err, StoreError::Conflict(Conflict::Changed)),
        "{err:?}"
    );

    let stored = s.get_application(&app_name("a")).await.unwrap().unwrap();
    assert_eq!(stored.app.spec["v"], 2, "the stale writes changed nothing");
    s.delete_application(&second).await.unwrap();
    assert!(s.get_application(&app_name("a")).await.unwrap().is_none());
}

async fn cascade(t: TestStore) {
    let s = t.store;
    for a in ["one", "two"] {
        s.create_application(&app(a)).await.unwrap();
        for d in ["d1", "d2"] {
            let spec = json!({"alias": [format!("{d}-alias")]});
            s.create_device(&app_name(a), &device(a, d, spec))
                .await
                .unwrap();
        }
    }
    let one = s.get_application(&app_name("one")).await.unwrap().unwrap();
    s.delete_application(&one).await.unwrap();

    assert!(s.list_devices(&app_name("one")).await.unwrap().is_empty());
    let alias = Claim::Alias("d1-alias".into());
    assert_eq!(
        s.find_device_by_claim(&app_name("one"), &alias)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        s.list_devices(&app_name("two")).await.unwrap().len(),
        2,
        "the other application keeps its devices"
    );
    assert_eq!(
        s.find_device_by_claim(&app_name("two"), &alias)
            .await
            .unwrap(),
        Some(device_name("d1"))
    );

    // the name is free again, with no leftovers
    s.create_application(&app("one")).await.unwrap();
    assert!(s.list_devices(&app_name("one")).await.unwrap().is_empty());
    s.create_device(
        &app_name("one"),
        &device("one", "other", json!({"alias": ["d1-alias"]})),
    )
    .await
    .unwrap();
}

async fn large_cascade(t: TestStore) {
    let s = t.store;
    s.create_application(&app("big")).await.unwrap();
    for i in 0..60 {
        let name = format!("device-{i:03}");
        s.create_device(
            &app_name("big"),
            &device("big", &name, json!({"alias": [format!("a{i}")]})),
        )
        .await
        .unwrap();
    }
    assert_eq!(s.list_devices(&app_name("big")).await.unwrap().len(), 60);
    let big = s.get_application(&app_name("big")).await.unwrap().unwrap();
    s.delete_application(&big).await.unwrap();
    s.create_application(&app("big")).await.unwrap();
    assert!(s.list_devices(&app_name("big")).await.unwrap().is_empty());
    let claim = Claim::Alias("a42".into());
    assert_eq!(
        s.find_device_by_claim(&app_name("big"), &claim)
            .await
            .unwrap(),
        None
    );
}

/// The application with the trust anchor subjects of `anchors` (a new revision).
fn with_anchors(current: &StoredApplication, anchors: &[&str]) -> StoredApplication {
    let mut next = current.clone();
    next.app.metadata.resource_version = uuid::Uuid::new_v4().to_string();
    let anchors: Vec<_> = anchors
        .iter()
        .map(|subject| json!({"valid": {
            "subject": subject, "certificate": "", "notBefore": "2020-01-01T00:00:00Z", "notAfter": "2030-01-01T00:00:00Z"
        }}))
        .collect();
    next.app.status = json!({"trustAnchors": {"anchors": anchors}})
        .as_object()
        .cloned()
        .unwrap();
    next
}

/// The applications holding the subject `CN=Shared CA`.
async fn holders(s: &Arc<dyn Store>) -> Vec<String> {
    s.find_applications_by_claim(&Claim::TrustAnchor("CN=Shared CA".into()))
        .await
        .unwrap()
        .iter()
        .map(|a| a.as_str().to_owned())
        .collect()
}

async fn anchor_claims(t: TestStore) {
    let s = t.store;
    assert!(holders(&s).await.is_empty());
    s.create_application(&app_with_anchor("a", "CN=Shared CA"))
        .await
        .unwrap();
    assert_eq!(holders(&s).await, ["a"]);

    // a stranger's application with the same subject: created, both listed
    let mut strangers = app_with_anchor("b", "CN=Shared CA");
    strangers.owner = "stranger".into();
    s.create_application(&strangers).await.unwrap();
    assert_eq!(holders(&s).await, ["a", "b"]);
    assert!(s.get_application(&app_name("b")).await.unwrap().is_some());

    // an update that keeps the subject keeps both; one that drops it removes only its own
    let b = s.get_application(&app_name("b")).await.unwrap().unwrap();
    let b2 = with_anchors(&b, &["CN=Shared CA", "CN=Other CA"]);
    s.update_application(&b, &b2).await.unwrap();
    assert_eq!(holders(&s).await, ["a", "b"]);
    let b3 = with_anchors(&b2, &["CN=Other CA"]);
    s.update_application(&b2, &b3).await.unwrap();
    assert_eq!(holders(&s).await, ["a"]);
    assert_eq!(
        s.find_applications_by_claim(&Claim::TrustAnchor("CN=Other CA".into()))
            .await
            .unwrap(),
        [app_name("b")]
    );
    // and takes it again
    let b4 = with_anchors(&b3, &["CN=Shared CA"]);
    s.update_application(&b3, &b4).await.unwrap();
    assert_eq!(holders(&s).await, ["a", "b"]);
    assert!(
        s.find_applications_by_claim(&Claim::TrustAnchor("CN=Other CA".into()))
            .await
            .unwrap()
            .is_empty()
    );
    // a stale update changes nothing in the index
    let stale = with_anchors(&b3, &[]);
    assert!(matches!(
        s.update_application(&b3, &stale).await.unwrap_err(),
        StoreError::Conflict(Conflict::Changed)
    ));
    assert_eq!(holders(&s).await, ["a", "b"]);

    // deleting one application removes only its entry
    let a = s.get_application(&app_name("a")).await.unwrap().unwrap();
    s.delete_application(&a).await.unwrap();
    assert_eq!(holders(&s).await, ["b"]);
    s.create_application(&app_with_anchor("a", "CN=Shared CA"))
        .await
        .unwrap();
    assert_eq!(holders(&s).await, ["a", "b"]);
    let b = s.get_application(&app_name("b")).await.unwrap().unwrap();
    s.delete_application(&b).await.unwrap();
    assert_eq!(holders(&s).await, ["a"]);
}

fn names(apps: Vec<drogue_shared::store::StoredApplication>) -> Vec<String> {
    apps.into_iter().map(|a| a.app.metadata.name).collect()
}

async fn per_user_listing(t: TestStore) {
    use drogue_shared::access::Role;
    let s = t.store;
    let mut shared = app("shared");
    shared.owner = "alice".into();
    shared.members.insert("bob".into(), Role::Reader);
    s.create_application(&shared).await.unwrap();
    let mut own = app("bobs");
    own.owner = "bob".into();
    s.create_application(&own).await.unwrap();

    assert_eq!(
        names(s.list_applications_of("alice").await.unwrap()),
        ["shared"]
    );
    assert_eq!(
        names(s.list_applications_of("bob").await.unwrap()),
        ["bobs", "shared"]
    );
    assert!(s.list_applications_of("carol").await.unwrap().is_empty());

    // bob leaves, carol joins, the ownership moves to dave
    let mut next = shared.clone();
    next.app = revised(&shared.app, json!({}));
    next.members.clear();
    next.members.insert("carol".into(), Role::Admin);
    next.owner = "dave".into();
    s.update_application(&shared, &next).await.unwrap();
    assert_eq!(
        names(s.list_applications_of("bob").await.unwrap()),
        ["bobs"]
    );
    assert!(s.list_applications_of("alice").await.unwrap().is_empty());
    assert_eq!(
        names(s.list_applications_of("carol").await.unwrap()),
        ["shared"]
    );
    let listed = s.list_applications_of("dave").await.unwrap();
    assert_eq!(listed[0].members.get("carol"), Some(&Role::Admin));
    assert_eq!(listed[0].owner, "dave");

    s.delete_application(&next).await.unwrap();
    assert!(s.list_applications_of("carol").await.unwrap().is_empty());
    assert!(s.list_applications_of("dave").await.unwrap().is_empty());
    assert_eq!(
        names(s.list_applications_of("bob").await.unwrap()),
        ["bobs"]
    );
}
