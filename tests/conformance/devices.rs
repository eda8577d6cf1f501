//! Devices: the application they need, uniqueness of names across kinds, claims moving
//! with updates, conditional writes, listing.

use super::fixtures::*;
use drogue_shared::model::Claim;
use drogue_shared::store::{Conflict, DeviceLimits, StoreError, StoredApplication};
use drogue_tests::TestStore;
use drogue_tests::suite::Case;
use serde_json::json;

pub const CASES: &[Case<TestStore>] = &[
    (
        "the gateway index follows the devices' gateway selectors",
        |s| Box::pin(gateway_index(s)),
    ),
    ("devices need an application that accepts them", |s| {
        Box::pin(needs_application(s))
    }),
    (
        "device names, aliases and unique usernames share one namespace",
        |s| Box::pin(namespace(s)),
    ),
    ("an update releases and takes claims", |s| {
        Box::pin(claims_move(s))
    }),
    (
        "device updates and deletes need the current revision",
        |s| Box::pin(revisions(s)),
    ),
    ("devices are listed by name, per application", |s| {
        Box::pin(listing(s))
    }),
    (
        "an application and one of its devices are read together",
        |s| Box::pin(application_device(s)),
    ),
    (
        "the device count follows the writes and holds the limit",
        |s| Box::pin(device_quota(s)),
    ),
    (
        "the owner's device count follows device writes, application deletes and transfers",
        |s| Box::pin(owner_quota(s)),
    ),
];

fn conflict(err: StoreError) -> Conflict {
    match err {
        StoreError::Conflict(c) => c,
        other => panic!("expected a conflict, got {other:?}"),
    }
}

async fn needs_application(t: TestStore) {
    let s = t.store;
    let err = s
        .create_device(&app_name("none"), &device("none", "d", json!({})))
        .await
        .unwrap_err();
    assert_eq!(conflict(err), Conflict::ApplicationGone);

    let mut deleting = app("deleting");
    deleting.app.metadata.deletion_timestamp = Some(chrono::Utc::now());
    deleting.app.metadata.finalizers = vec!["hold".into()];
    s.create_application(&deleting).await.unwrap();
    let err = s
        .create_device(&app_name("deleting"), &device("deleting", "d", json!({})))
        .await
        .unwrap_err();
    assert_eq!(conflict(err), Conflict::ApplicationGone);
    assert!(
        s.list_devices(&app_name("deleting"))
            .await
            .unwrap()
            .is_empty()
    );
}

async fn namespace(t: TestStore) {
    let s = t.store;
    let a = app_name("a");
    s.create_application(&app("a")).await.unwrap();
    let spec = json!({
        "alias": ["first-alias"],
        "authentication": {"credentials": [{"user": {"username": "user1", "password": {"sha512": "x"}, "unique": true}}]}
    });
    s.create_device(&a, &device("a", "first", spec))
        .await
        .unwrap();

    let err = s
        .create_device(&a, &device("a", "first", json!({})))
        .await
        .unwrap_err();
    assert_eq!(conflict(err), Conflict::AlreadyExists);
    for (name, spec) in [
        ("first-alias", json!({})),
        ("second", json!({"alias": ["first"]})),
        ("third", json!({"alias": ["user1"]})),
        (
            "fourth",
            json!({"credentials": {"credentials": [{"user": {"username": "first-alias", "password": "p", "unique": true}}]}}),
        ),
    ] {
        let err = s
            .create_device(&a, &device("a", name, spec))
            .await
            .unwrap_err();
        assert!(matches!(conflict(err), Conflict::ClaimTaken(_)), "{name}");
        assert!(
            s.get_device(&a, &device_name(name))
                .await
                .unwrap()
                .is_none(),
            "{name} was not written"
        );
    }
    for claim in [
        Claim::Alias("first-alias".into()),
        Claim::Username("user1".into()),
        Claim::Name("first".into()),
    ] {
        assert_eq!(
            s.find_device_by_claim(&a, &claim).await.unwrap(),
            Some(device_name("first")),
            "{claim:?}"
        );
    }
    // a username that is not unique claims nothing
    let shared = json!({"authentication": {"credentials": [{"user": {"username": "shared", "password": "p"}}]}});
    s.create_device(&a, &device("a", "x", shared.clone()))
        .await
        .unwrap();
    s.create_device(&a, &device("a", "y", shared))
        .await
        .unwrap();
    // claims are per application
    s.create_application(&app("b")).await.unwrap();
    s.create_device(
        &app_name("b"),
        &device("b", "other", json!({"alias": ["first-alias"]})),
    )
    .await
    .unwrap();
}

async fn claims_move(t: TestStore) {
    let s = t.store;
    let a = app_name("a");
    s.create_application(&app("a")).await.unwrap();
    let one = device("a", "one", json!({"alias": ["x", "y"]}));
    s.create_device(&a, &one).await.unwrap();
    let moved = revised(&one, json!({"alias": ["y", "z"]}));
    s.update_device(&a, &one, &moved).await.unwrap();

    assert_eq!(
        s.find_device_by_claim(&a, &Claim::Alias("x".into()))
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        s.find_device_by_claim(&a, &Claim::Alias("z".into()))
            .await
            .unwrap(),
        Some(device_name("one"))
    );
    s.create_device(&a, &device("a", "two", json!({"alias": ["x"]})))
        .await
        .unwrap();
    let err = s
        .create_device(&a, &device("a", "three", json!({"alias": ["y"]})))
        .await
        .unwrap_err();
    assert!(matches!(conflict(err), Conflict::ClaimTaken(_)));

    let taking = revised(&moved, json!({"alias": ["x"]}));
    let err = s.update_device(&a, &moved, &taking).await.unwrap_err();
    assert!(matches!(conflict(err), Conflict::ClaimTaken(_)));
    let kept = s
        .get_device(&a, &device_name("one"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        kept.spec["alias"],
        json!(["y", "z"]),
        "a failed update changes nothing"
    );
    assert_eq!(
        s.find_device_by_claim(&a, &Claim::Alias("y".into()))
            .await
            .unwrap(),
        Some(device_name("one"))
    );

    s.delete_device(&a, &kept).await.unwrap();
    s.create_device(
        &a,
        &device("a", "four", json!({"alias": ["y", "z", "one"]})),
    )
    .await
    .unwrap();
}

async fn revisions(t: TestStore) {
    let s = t.store;
    let a = app_name("a");
    s.create_application(&app("a")).await.unwrap();
    let first = device("a", "d", json!({"v": 1}));
    s.create_device(&a, &first).await.unwrap();
    let second = revised(&first, json!({"v": 2}));
    s.update_device(&a, &first, &second).await.unwrap();
    let err = s
        .update_device(&a, &first, &revised(&first, json!({"v": 3})))
        .await
        .unwrap_err();
    assert_eq!(conflict(err), Conflict::Changed);
    let err = s.delete_device(&a, &first).await.unwrap_err();
    assert_eq!(conflict(err), Conflict::Changed);
    assert_eq!(
        s.get_device(&a, &device_name("d"))
            .await
            .unwrap()
            .unwrap()
            .spec["v"],
        2
    );
    s.delete_device(&a, &second).await.unwrap();
    assert!(s.get_device(&a, &device_name("d")).await.unwrap().is_none());
    let err = s.delete_device(&a, &second).await.unwrap_err();
    assert_eq!(
        conflict(err),
        Conflict::Changed,
        "a deleted device cannot be deleted again"
    );
}

async fn application_device(t: TestStore) {
    let s = t.store;
    s.create_application(&app("a")).await.unwrap();
    s.create_application(&app("b")).await.unwrap();
    let d1 = device("a", "d1", json!({"alias": ["one"]}));
    s.create_device(&app_name("a"), &d1).await.unwrap();
    let (found, device) = s
        .get_application_device(&app_name("a"), &device_name("d1"))
        .await
        .unwrap()
        .expect("the application");
    // as the single reads give them
    let a = app_name("a");
    assert_eq!(Some(found), s.get_application(&a).await.unwrap());
    assert_eq!(device, s.get_device(&a, &device_name("d1")).await.unwrap());
    assert_eq!(device.map(|d| d.metadata.uid), Some(d1.metadata.uid));
    // no such device, a device of another application, an alias: the application alone
    for (a, d) in [("a", "d2"), ("b", "d1"), ("a", "one")] {
        let (found, device) = s
            .get_application_device(&app_name(a), &device_name(d))
            .await
            .unwrap()
            .expect("the application");
        assert_eq!(found.app.metadata.name, a);
        assert_eq!(device, None, "{a}/{d}");
    }
    assert_eq!(
        s.get_application_device(&app_name("none"), &device_name("d1"))
            .await
            .unwrap(),
        None
    );
}

async fn listing(t: TestStore) {
    let s = t.store;
    for a in ["a", "ab", "b"] {
        s.create_application(&app(a)).await.unwrap();
    }
    for (a, d) in [
        ("a", "zeta"),
        ("a", "alpha"),
        ("a", "Mu"),
        ("ab", "other"),
        ("b", "beta"),
    ] {
        s.create_device(&app_name(a), &device(a, d, json!({})))
            .await
            .unwrap();
    }
    let names: Vec<_> = s
        .list_devices(&app_name("a"))
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.metadata.name)
        .collect();
    assert_eq!(names, ["Mu", "alpha", "zeta"]);
    assert!(s.list_devices(&app_name("c")).await.unwrap().is_empty());
}

async fn gateway_index(t: TestStore) {
    let s = t.store;
    let a = app_name("a");
    s.create_application(&app("a")).await.unwrap();
    s.create_application(&app("b")).await.unwrap();
    let served = |gw: &'static str| {
        let (s, a) = (s.clone(), a.clone());
        async move {
            s.devices_served_by(&a, gw)
                .await
                .unwrap()
                .into_iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
        }
    };
    let d1 = device(
        "a",
        "d1",
        json!({"gatewaySelector": {"matchNames": ["gw1", "gw2"]}}),
    );
    s.create_device(&a, &d1).await.unwrap();
    s.create_device(
        &a,
        &device(
            "a",
            "d2",
            json!({"gatewaySelector": {"matchNames": ["gw1"]}}),
        ),
    )
    .await
    .unwrap();
    s.create_device(
        &app_name("b"),
        &device(
            "b",
            "d3",
            json!({"gatewaySelector": {"matchNames": ["gw1"]}}),
        ),
    )
    .await
    .unwrap();
    assert_eq!(served("gw1").await, ["d1", "d2"], "per application");
    assert_eq!(served("gw2").await, ["d1"]);
    assert!(served("gw").await.is_empty(), "gw is not a prefix of gw1");

    let moved = revised(&d1, json!({"gatewaySelector": {"matchNames": ["gw3"]}}));
    s.update_device(&a, &d1, &moved).await.unwrap();
    assert_eq!(served("gw1").await, ["d2"]);
    assert!(served("gw2").await.is_empty());
    assert_eq!(served("gw3").await, ["d1"]);
    s.delete_device(&a, &moved).await.unwrap();
    assert!(served("gw3").await.is_empty());

    let stored = s.get_application(&a).await.unwrap().unwrap();
    s.delete_application(&stored).await.unwrap();
    s.create_application(&app("a")).await.unwrap();
    assert!(
        served("gw1").await.is_empty(),
        "an application's delete takes its index along"
    );
}

async fn device_quota(t: TestStore) {
    let s = t.store;
    let (a, b) = (app_name("a"), app_name("b"));
    s.create_application(&app("a")).await.unwrap();
    s.create_application(&app("b")).await.unwrap();
    assert_eq!(s.count_devices(&a).await.unwrap(), 0);
    let d1 = device("a", "d1", json!({"alias": ["one"]}));
    s.create_device_within(&a, &d1, Some(2)).await.unwrap();
    let d2 = device("a", "d2", json!({}));
    s.create_device_within(&a, &d2, Some(2)).await.unwrap();
    let err = s
        .create_device_within(&a, &device("a", "d3", json!({"alias": ["three"]})), Some(2))
        .await
        .unwrap_err();
    assert_eq!(conflict(err), Conflict::QuotaExceeded);
    assert_eq!(s.count_devices(&a).await.unwrap(), 2);
    assert!(
        s.get_device(&a, &device_name("d3"))
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(
        s.find_device_by_claim(&a, &Claim::Alias("three".into()))
            .await
            .unwrap(),
        None,
        "a refused device claims nothing"
    );
    // the limit is the application's: another one is not held
    s.create_device_within(&b, &device("b", "d3", json!({})), Some(2))
        .await
        .unwrap();
    assert_eq!(s.count_devices(&b).await.unwrap(), 1);

    // writes that fail count nothing
    let err = s.create_device(&a, &d1).await.unwrap_err();
    assert_eq!(conflict(err), Conflict::AlreadyExists);
    let err = s
        .create_device(&a, &device("a", "d4", json!({"alias": ["one"]})))
        .await
        .unwrap_err();
    assert!(matches!(conflict(err), Conflict::ClaimTaken(_)));
    let err = s
        .delete_device(&a, &revised(&d1, json!({})))
        .await
        .unwrap_err();
    assert_eq!(conflict(err), Conflict::Changed);
    assert_eq!(s.count_devices(&a).await.unwrap(), 2);

    // without a limit the count goes on; a delete makes room
    s.create_device(&a, &device("a", "d5", json!({})))
        .await
        .unwrap();
    assert_eq!(s.count_devices(&a).await.unwrap(), 3);
    s.delete_device(&a, &d1).await.unwrap();
    s.delete_device(&a, &d2).await.unwrap();
    assert_eq!(s.count_devices(&a).await.unwrap(), 1);
    s.create_device_within(&a, &device("a", "d3", json!({})), Some(2))
        .await
        .unwrap();
    assert_eq!(s.count_devices(&a).await.unwrap(), 2);

    // an application made again under the name starts from nothing
    let stored = s.get_application(&a).await.unwrap().unwrap();
    s.delete_application(&stored).await.unwrap();
    s.create_application(&app("a")).await.unwrap();
    assert_eq!(s.count_devices(&a).await.unwrap(), 0);

    // the limit holds at the count, whatever it was set to before
    for i in 0..3 {
        let d = device("a", &format!("c{i}"), json!({}));
        s.create_device_within(&a, &d, Some(3)).await.unwrap();
    }
    let more = device("a", "late", json!({}));
    let err = s
        .create_device_within(&a, &more, Some(3))
        .await
        .unwrap_err();
    assert_eq!(conflict(err), Conflict::QuotaExceeded);
    s.create_device_within(&a, &more, Some(4)).await.unwrap();
    assert_eq!(s.list_devices(&a).await.unwrap().len(), 4);
    assert_eq!(s.count_devices(&a).await.unwrap(), 4);
}

/// The devices of all applications a user owns count against that user: created and
/// deleted devices, an application's delete and a transfer of ownership (refused when
/// the new owner would own more than the limit) keep the count right, each check one
/// item.
async fn owner_quota(t: TestStore) {
    let s = t.store;
    let owned = |owner: &str, name: &str| StoredApplication {
        owner: owner.into(),
        ..app(name)
    };
    let limits = |per_owner: u64| DeviceLimits {
        per_application: None,
        per_owner: Some(per_owner),
    };
    let (a, b, c) = (app_name("oa"), app_name("ob"), app_name("oc"));
    s.create_application(&owned("alice", "oa")).await.unwrap();
    s.create_application(&owned("alice", "ob")).await.unwrap();
    s.create_application(&owned("bob", "oc")).await.unwrap();
    assert_eq!(s.count_owned_devices("alice").await.unwrap(), 0);

    // alice's applications together hold at most 3
    let d1 = device("oa", "d1", json!({"alias": ["one"]}));
    s.create_device_limited(&a, &d1, limits(3)).await.unwrap();
    s.create_device_limited(&a, &device("oa", "d2", json!({})), limits(3))
        .await
        .unwrap();
    s.create_device_limited(&b, &device("ob", "d3", json!({})), limits(3))
        .await
        .unwrap();
    assert_eq!(s.count_owned_devices("alice").await.unwrap(), 3);
    let d4 = device("ob", "d4", json!({"alias": ["four"]}));
    let err = s
        .create_device_limited(&b, &d4, limits(3))
        .await
        .unwrap_err();
    assert_eq!(conflict(err), Conflict::OwnerQuotaExceeded);
    assert!(
        s.get_device(&b, &device_name("d4"))
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(
        s.find_device_by_claim(&b, &Claim::Alias("four".into()))
            .await
            .unwrap(),
        None,
        "a refused device claims nothing"
    );
    assert_eq!(s.count_owned_devices("alice").await.unwrap(), 3);
    assert_eq!(s.count_devices(&b).await.unwrap(), 1, "nor counts");

    // bob is not held by alice's devices; the application's limit holds alongside
    s.create_device_limited(&c, &device("oc", "e1", json!({})), limits(3))
        .await
        .unwrap();
    let both = DeviceLimits {
        per_application: Some(1),
        per_owner: Some(10),
    };
    let err = s
        .create_device_limited(&c, &device("oc", "e2", json!({})), both)
        .await
        .unwrap_err();
    assert_eq!(conflict(err), Conflict::QuotaExceeded);
    assert_eq!(s.count_owned_devices("bob").await.unwrap(), 1);
    assert_eq!(s.count_owned_devices("nobody").await.unwrap(), 0);

    // a failed delete counts nothing; a delete makes room
    let err = s
        .delete_device(&a, &revised(&d1, json!({})))
        .await
        .unwrap_err();
    assert_eq!(conflict(err), Conflict::Changed);
    assert_eq!(s.count_owned_devices("alice").await.unwrap(), 3);
    s.delete_device(&a, &d1).await.unwrap();
    assert_eq!(s.count_owned_devices("alice").await.unwrap(), 2);
    s.create_device_limited(&b, &d4, limits(3)).await.unwrap();
    assert_eq!(s.count_owned_devices("alice").await.unwrap(), 3);

    // a transfer moves the application's devices (d3, d4) to the new owner, refused
    // when the new owner would own more than the limit
    let transfer = |current: &StoredApplication, to: &str| {
        let mut next = current.clone();
        next.owner = to.into();
        next.app.metadata.resource_version = uuid::Uuid::new_v4().to_string();
        next
    };
    let current = s.get_application(&b).await.unwrap().unwrap();
    let to_bob = transfer(&current, "bob");
    let err = s
        .update_application_within(&current, &to_bob, Some(2))
        .await
        .unwrap_err();
    assert_eq!(conflict(err), Conflict::OwnerQuotaExceeded);
    assert_eq!(
        s.get_application(&b).await.unwrap().unwrap().owner,
        "alice",
        "nothing moved"
    );
    assert_eq!(s.count_owned_devices("alice").await.unwrap(), 3);
    assert_eq!(s.count_owned_devices("bob").await.unwrap(), 1);
    s.update_application_within(&current, &to_bob, Some(3))
        .await
        .unwrap();
    assert_eq!(s.count_owned_devices("alice").await.unwrap(), 1);
    assert_eq!(s.count_owned_devices("bob").await.unwrap(), 3);
    assert_eq!(s.count_devices(&b).await.unwrap(), 2);

    // from then on the application's devices count against its new owner
    let err = s
        .create_device_limited(&b, &device("ob", "d5", json!({})), limits(3))
        .await
        .unwrap_err();
    assert_eq!(conflict(err), Conflict::OwnerQuotaExceeded);
    s.create_device_limited(&a, &device("oa", "d5", json!({})), limits(3))
        .await
        .unwrap();
    s.create_device(&b, &device("ob", "d6", json!({})))
        .await
        .unwrap();
    assert_eq!(s.count_owned_devices("alice").await.unwrap(), 2);
    assert_eq!(s.count_owned_devices("bob").await.unwrap(), 4);
    let d3 = s.get_device(&b, &device_name("d3")).await.unwrap().unwrap();
    s.delete_device(&b, &d3).await.unwrap();
    assert_eq!(s.count_owned_devices("bob").await.unwrap(), 3);
    assert_eq!(s.count_owned_devices("alice").await.unwrap(), 2);

    // an update that keeps the owner moves nothing; a transfer without a limit is not
    // held
    let current = s.get_application(&a).await.unwrap().unwrap();
    let mut same = current.clone();
    same.app.metadata.resource_version = uuid::Uuid::new_v4().to_string();
    s.update_application_within(&current, &same, Some(0))
        .await
        .unwrap();
    assert_eq!(s.count_owned_devices("alice").await.unwrap(), 2);

    // an application's delete takes its devices off its owner's count
    let stored = s.get_application(&b).await.unwrap().unwrap();
    s.delete_application(&stored).await.unwrap();
    assert_eq!(s.count_owned_devices("bob").await.unwrap(), 1);
    assert_eq!(s.count_owned_devices("alice").await.unwrap(), 2);
    s.create_application(&owned("alice", "ob")).await.unwrap();
    assert_eq!(s.count_devices(&b).await.unwrap(), 0);
    assert_eq!(s.count_owned_devices("alice").await.unwrap(), 2);
    let current = s.get_application(&a).await.unwrap().unwrap();
    s.update_application_within(&current, &transfer(&current, "bob"), None)
        .await
        .unwrap();
    assert_eq!(s.count_owned_devices("alice").await.unwrap(), 0);
    assert_eq!(s.count_owned_devices("bob").await.unwrap(), 3);
}
