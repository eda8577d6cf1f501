//! The paged list and the bulk create of the embedded store, at a scale CI can afford
//! (2,000 devices): the same code paths the scale benchmark (`benches/store_scale.rs`)
//! measures with a million.

use super::EmbeddedStore;
use crate::access::Principal;
use crate::access::authz::AccessControl;
use crate::model::device_spec::prepare_device_spec;
use crate::model::status::device_status;
use crate::model::{AppName, Claim, Device, DeviceName, LabelSelector, Metadata, ResourceInput};
use crate::registry::Registry;
use crate::store::{Conflict, DeviceLimits, DeviceStore};
use chrono::Utc;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;

/// A device as the registry makes it (its spec checked and prepared).
fn device(app: &str, name: &str, labels: &[(&str, &str)], spec: Value) -> Device {
    let now = Utc::now();
    let spec = prepare_device_spec(spec.as_object().cloned().unwrap_or_default()).unwrap();
    Device {
        metadata: Metadata {
            name: name.to_owned(),
            application: Some(app.to_owned()),
            uid: uuid::Uuid::new_v4().to_string(),
            creation_timestamp: now,
            generation: 0,
            resource_version: uuid::Uuid::new_v4().to_string(),
            deletion_timestamp: None,
            finalizers: Vec::new(),
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<BTreeMap<_, _>>(),
            annotations: BTreeMap::new(),
        },
        spec,
        status: device_status(None, now),
    }
}

async fn store_with_apps(apps: &[&str]) -> (tempfile::TempDir, Arc<EmbeddedStore>) {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(EmbeddedStore::open(dir.path().join("scale.redb")).unwrap());
    let registry = Registry::new(store.clone(), AccessControl::default());
    for app in apps {
        let input: ResourceInput =
            serde_json::from_value(json!({"metadata": {"name": app}})).unwrap();
        registry
            .create_application(&Principal::user("alice"), input)
            .await
            .unwrap();
    }
    (dir, store)
}

fn app(name: &str) -> AppName {
    AppName::parse(name).unwrap()
}

fn names(devices: &[Device]) -> Vec<String> {
    devices.iter().map(|d| d.metadata.name.clone()).collect()
}

fn selector(text: &str) -> LabelSelector {
    LabelSelector::parse(text).unwrap()
}

/// A password as `drg set password` stores it (hashing 2,000 plain ones would be slow).
const HASH: &str = "$6$saltsalt$TVLlQcbpFVof5W3Yz4DTP6gRstiNuHwwTt6GLc1E5n0U0aDehy0S5knV8wiOQSpT0Y77vwPZN.Pq.H91p5hVO1";

/// Device `i` of the big application: every one in a rack, every 50th on beta firmware.
fn big_device(i: usize) -> Device {
    let rack = format!("r{}", i % 10);
    let mut labels = vec![("rack", rack.as_str())];
    if i.is_multiple_of(50) {
        labels.push(("fw", "beta"));
    }
    device(
        "big",
        &format!("device-{i:05}"),
        &labels,
        json!({"alias": [format!("alias-{i}")], "authentication": {"credentials": [{"pass": {"sha512": HASH}}]}}),
    )
}

#[tokio::test]
async fn pages_and_selectors_return_every_device_once_in_order() {
    let (_dir, store) = store_with_apps(&["big", "other"]).await;
    for batch in 0..4 {
        let devices = (batch * 500..(batch + 1) * 500).map(big_device).collect();
        store
            .create_devices_limited(&app("big"), devices, DeviceLimits::default())
            .await
            .unwrap()
            .unwrap();
    }
    // another application's labelled devices never show up in "big"'s lists
    let others = (0..300)
        .map(|i| {
            device(
                "other",
                &format!("device-{i:05}"),
                &[("fw", "beta")],
                json!({}),
            )
        })
        .collect();
    store
        .create_devices_limited(&app("other"), others, DeviceLimits::default())
        .await
        .unwrap()
        .unwrap();
    let big = app("big");
    assert_eq!(store.count_devices(&big).await.unwrap(), 2000);
    assert_eq!(store.count_owned_devices("alice").await.unwrap(), 2300);

    let all = store.list_devices(&big).await.unwrap();
    assert_eq!(all.len(), 2000);
    let everything = LabelSelector::default();
    let whole = store
        .list_devices_page(&big, &everything, 0, None)
        .await
        .unwrap();
    assert_eq!(whole, all, "no limit, no offset: the whole list");

    // pages of 97: every device once, in byte order, each page as the whole list holds it
    let mut walked = Vec::new();
    let mut pages = 0;
    loop {
        let page = store
            .list_devices_page(&big, &everything, walked.len(), Some(97))
            .await
            .unwrap();
        assert!(page.len() <= 97);
        if page.is_empty() {
            break;
        }
        assert_eq!(page[..], all[walked.len()..walked.len() + page.len()]);
        walked.extend(page);
        pages += 1;
    }
    assert_eq!(pages, 2000usize.div_ceil(97));
    let walked = names(&walked);
    let expected: Vec<String> = (0..2000).map(|i| format!("device-{i:05}")).collect();
    assert_eq!(walked, expected);

    // a selector: exactly the labelled devices of this application
    let beta = store
        .list_devices_page(&big, &selector("fw=beta"), 0, None)
        .await
        .unwrap();
    let expected: Vec<String> = (0..2000)
        .step_by(50)
        .map(|i| format!("device-{i:05}"))
        .collect();
    assert_eq!(names(&beta), expected);
    assert!(
        beta.iter()
            .all(|d| d.metadata.application.as_deref() == Some("big"))
    );
    assert_eq!(beta[3].spec["alias"], json!(["alias-150"]), "whole devices");

    // a selector with paging: the pages of the filtered list
    let racks = selector("rack in (r1,r2),!fw");
    let filtered: Vec<Device> = all
        .iter()
        .filter(|d| racks.matches(&d.metadata.labels))
        .cloned()
        .collect();
    assert_eq!(filtered.len(), 400);
    let mut walked = Vec::new();
    loop {
        let page = store
            .list_devices_page(&big, &racks, walked.len(), Some(33))
            .await
            .unwrap();
        if page.is_empty() {
            break;
        }
        walked.extend(page);
    }
    assert_eq!(walked, filtered);

    // the edges
    for (offset, limit) in [(2000, None), (5000, Some(10)), (0, Some(0))] {
        let page = store
            .list_devices_page(&big, &everything, offset, limit)
            .await
            .unwrap();
        assert!(page.is_empty(), "offset {offset}, limit {limit:?}");
    }
    let last = store
        .list_devices_page(&big, &everything, 1999, Some(10))
        .await
        .unwrap();
    assert_eq!(names(&last), ["device-01999"]);
    let nothing = store
        .list_devices_page(&big, &selector("fw=gamma"), 0, None)
        .await
        .unwrap();
    assert!(nothing.is_empty());
    let missing = store
        .list_devices_page(&app("nowhere"), &everything, 0, None)
        .await
        .unwrap();
    assert!(missing.is_empty());
}

/// What a single create answers for `device`, on a copy of the state the bulk create
/// starts from; the bulk answer must be the same conflict.
#[tokio::test]
async fn the_bulk_create_refuses_what_the_single_create_refuses_and_writes_nothing() {
    let (_dir, store) = store_with_apps(&["app1", "app2"]).await;
    let app1 = app("app1");
    let taken = device(
        "app1",
        "taken",
        &[],
        json!({"alias": ["taken-alias"], "authentication": {"credentials": [
            {"user": {"username": "taken-user", "password": "p", "unique": true}}]}}),
    );
    store.create_device(&app1, &taken).await.unwrap();
    let free = |name: &str| device("app1", name, &[], json!({}));
    let with_alias = |name: &str, alias: &str| device("app1", name, &[], json!({"alias": [alias]}));
    let limited = |per_application, per_owner| DeviceLimits {
        per_application,
        per_owner,
    };
    let unlimited = DeviceLimits::default();
    let cases = [
        Case::new(
            "a taken name",
            vec![free("new1"), free("taken")],
            unlimited,
            1,
            Conflict::AlreadyExists,
        ),
        Case::new(
            "a name twice in the batch",
            vec![free("new1"), free("new2"), free("new1")],
            unlimited,
            2,
            Conflict::AlreadyExists,
        ),
        Case::new(
            "another device's alias",
            vec![free("new1"), with_alias("new2", "taken-alias")],
            unlimited,
            1,
            Conflict::ClaimTaken(Claim::Alias("taken-alias".into())),
        ),
        Case::new(
            "another device's name as an alias",
            vec![with_alias("new1", "taken")],
            unlimited,
            0,
            Conflict::ClaimTaken(Claim::Alias("taken".into())),
        ),
        Case::new(
            "another device's unique username as an alias",
            vec![with_alias("new1", "taken-user")],
            unlimited,
            0,
            Conflict::ClaimTaken(Claim::Alias("taken-user".into())),
        ),
        Case::new(
            "an alias taken earlier in the batch",
            vec![with_alias("new1", "shared"), with_alias("new2", "shared")],
            unlimited,
            1,
            Conflict::ClaimTaken(Claim::Alias("shared".into())),
        ),
        Case::new(
            "the application's quota",
            vec![free("new1"), free("new2"), free("new3")],
            limited(Some(3), None),
            2,
            Conflict::QuotaExceeded,
        ),
        Case::new(
            "the owner's quota",
            vec![free("new1"), free("new2")],
            limited(None, Some(2)),
            1,
            Conflict::OwnerQuotaExceeded,
        ),
    ];
    for case in cases {
        let Case {
            what,
            devices,
            limits,
            position,
            conflict,
        } = case;
        // the single create of the failing device, after the ones before it, in a store
        // of its own: the same conflict
        let (_single_dir, single) = store_with_apps(&["app1"]).await;
        single.create_device(&app1, &taken).await.unwrap();
        for earlier in &devices[..position] {
            single
                .create_device_limited(&app1, earlier, limits)
                .await
                .unwrap();
        }
        let alone = single
            .create_device_limited(&app1, &devices[position], limits)
            .await;
        assert!(
            matches!(&alone, Err(crate::store::StoreError::Conflict(c)) if *c == conflict),
            "{what}: the single create answered {alone:?}"
        );

        let bulk = store
            .create_devices_limited(&app1, devices.clone(), limits)
            .await
            .unwrap();
        assert_eq!(bulk, Err((position, conflict)), "{what}");
        // nothing of the batch was written: not the devices before the failing one, nor
        // their claims, nor the counts
        assert_eq!(
            names(&store.list_devices(&app1).await.unwrap()),
            ["taken"],
            "{what}"
        );
        assert_eq!(store.count_devices(&app1).await.unwrap(), 1, "{what}");
        assert_eq!(
            store.count_owned_devices("alice").await.unwrap(),
            1,
            "{what}"
        );
        for device in &devices[..position] {
            let claim = Claim::Name(device.metadata.name.clone());
            assert_eq!(
                store.find_device_by_claim(&app1, &claim).await.unwrap(),
                None,
                "{what}"
            );
        }
    }
    // no application, or another one's name in the devices: refused as the single create
    let gone = store
        .create_devices_limited(&app("nowhere"), vec![free("new1")], unlimited)
        .await
        .unwrap();
    assert_eq!(gone, Err((0, Conflict::ApplicationGone)));

    // a good batch: the indexes and counts of single creates
    let gateway = device("app1", "gw", &[], json!({}));
    let served = |name: &str| {
        device(
            "app1",
            name,
            &[],
            json!({"gatewaySelector": {"matchNames": ["gw"]}}),
        )
    };
    store
        .create_devices_limited(
            &app1,
            vec![
                gateway,
                served("d1"),
                served("d2"),
                with_alias("d3", "third"),
            ],
            limited(Some(5), Some(5)),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(store.count_devices(&app1).await.unwrap(), 5);
    assert_eq!(store.count_owned_devices("alice").await.unwrap(), 5);
    let by_gateway: Vec<String> = store
        .devices_served_by(&app1, "gw")
        .await
        .unwrap()
        .iter()
        .map(DeviceName::to_string)
        .collect();
    assert_eq!(by_gateway, ["d1", "d2"]);
    assert_eq!(
        store
            .find_device_by_claim(&app1, &Claim::Alias("third".into()))
            .await
            .unwrap()
            .map(|d| d.to_string()),
        Some("d3".to_owned())
    );
    // the counts go on from there: the application's quota of 5 is reached
    let full = store
        .create_device_limited(&app1, &free("d4"), limited(Some(5), None))
        .await;
    assert!(matches!(
        full,
        Err(crate::store::StoreError::Conflict(Conflict::QuotaExceeded))
    ));
    // the other application holds none of it
    assert!(store.list_devices(&app("app2")).await.unwrap().is_empty());
}

/// A batch the bulk create refuses: which of its devices, and why.
struct Case {
    what: &'static str,
    devices: Vec<Device>,
    limits: DeviceLimits,
    position: usize,
    conflict: Conflict,
}

impl Case {
    fn new(
        what: &'static str,
        devices: Vec<Device>,
        limits: DeviceLimits,
        position: usize,
        conflict: Conflict,
    ) -> Self {
        Self {
            what,
            devices,
            limits,
            position,
            conflict,
        }
    }
}
