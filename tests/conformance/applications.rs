//! Applications: uniqueness, conditional writes, the delete cascade, trust anchor claims.

use super::fixtures::*;
use drogue_shared::model::Claim;
use drogue_shared::store::{Conflict, StoreError};
use drogue_tests::TestStore;
use drogue_tests::suite::Case;
use serde_json::json;

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
        "trust anchor subjects are unique across applications",
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

async fn anchor_claims(t: TestStore) {
    let s = t.store;
    let claim = Claim::TrustAnchor("CN=Shared CA".into());
    s.create_application(&app_with_anchor("a", "CN=Shared CA"))
        .await
        .unwrap();
    assert_eq!(
        s.find_application_by_claim(&claim).await.unwrap(),
        Some(app_name("a"))
    );

    let err = s
        .create_application(&app_with_anchor("b", "CN=Shared CA"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Conflict(Conflict::ClaimTaken(_))),
        "{err:?}"
    );
    assert!(
        s.get_application(&app_name("b")).await.unwrap().is_none(),
        "nothing of b was written"
    );

    let a = s.get_application(&app_name("a")).await.unwrap().unwrap();
    s.delete_application(&a).await.unwrap();
    assert_eq!(s.find_application_by_claim(&claim).await.unwrap(), None);
    s.create_application(&app_with_anchor("b", "CN=Shared CA"))
        .await
        .unwrap();
    assert_eq!(
        s.find_application_by_claim(&claim).await.unwrap(),
        Some(app_name("b"))
    );
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
