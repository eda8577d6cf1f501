//! How the embedded store's cost grows with the devices it holds: a store of
//! `STORE_SCALE_DEVICES` devices (default 1,000,000) in the shape of a busy
//! `drogue-local`: one application of `STORE_SCALE_BIG` devices (default 100,000; every
//! device labelled `rack=r0`..`r99`, one in a hundred also `fw=beta`), the others in
//! applications of 1,000. Every device has an alias and a hashed password, one in ten
//! names a gateway. Prints, one per line:
//!
//! - the time to fill it (through [`EmbeddedStore::create_devices_limited`]: 10,000
//!   devices per transaction, with the checks and indexes of a single create) and the
//!   file size;
//! - the time to open it again;
//! - a device lookup (`get_device`, random devices of every application);
//! - a list of a 1,000-device application;
//! - the big application: a selector (`fw=beta`, 1 %) and pages of 100 at offset 0 and
//!   deep in it, each through the store's paged list and the way the registry listed
//!   before it (every device decoded, then filtered and sliced).
//!
//! `STORE_SCALE_DIR`: keep the database there as `drogue.redb` (a `drogue-local` data
//! directory, for `tests/bench/store-scale.sh`), else in a temporary directory.
//!
//! `cargo bench -p drogue-shared --bench store_scale`

use drogue_shared::access::Principal;
use drogue_shared::access::authz::AccessControl;
use drogue_shared::model::device_spec::prepare_device_spec;
use drogue_shared::model::status::device_status;
use drogue_shared::model::{AppName, Device, DeviceName, LabelSelector, Metadata, ResourceInput};
use drogue_shared::registry::Registry;
use drogue_shared::store::embedded::EmbeddedStore;
use drogue_shared::store::{DeviceLimits, DeviceStore};
use serde_json::json;
use std::collections::BTreeMap;
use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

const PER_APP: usize = 1_000;
const PER_TRANSACTION: usize = 10_000;

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .map(|v| v.replace(['_', ','], "").parse().expect("a number"))
        .unwrap_or(default)
}

/// The password hash every device holds (SHA-512-crypt, as `drg set password` writes).
const HASH: &str = "$6$saltsalt$TVLlQcbpFVof5W3Yz4DTP6gRstiNuHwwTt6GLc1E5n0U0aDehy0S5knV8wiOQSpT0Y77vwPZN.Pq.H91p5hVO1";

/// Device `i` of `app`, as the registry makes it: the spec checked and prepared.
fn device(app: &str, i: usize, big: bool) -> Device {
    let mut spec = json!({
        "alias": [format!("{app}-alias-{i}")],
        "authentication": {"credentials": [{"pass": {"sha512": HASH}}]},
    });
    if i % 10 == 1 {
        spec["gatewaySelector"] = json!({"matchNames": [format!("device-{:07}", i - 1)]});
    }
    let mut labels = BTreeMap::new();
    if big {
        labels.insert("rack".to_owned(), format!("r{}", i % 100));
        if i.is_multiple_of(100) {
            labels.insert("fw".to_owned(), "beta".to_owned());
        }
    }
    let now = chrono::Utc::now();
    Device {
        metadata: Metadata {
            name: format!("device-{i:07}"),
            application: Some(app.to_owned()),
            uid: uuid::Uuid::new_v4().to_string(),
            creation_timestamp: now,
            generation: 0,
            resource_version: uuid::Uuid::new_v4().to_string(),
            deletion_timestamp: None,
            finalizers: Vec::new(),
            labels,
            annotations: BTreeMap::new(),
        },
        spec: prepare_device_spec(spec.as_object().unwrap().clone()).unwrap(),
        status: device_status(None, now),
    }
}

/// Median and 99th percentile of `runs` timings of `f`.
fn timed<T>(runs: usize, mut f: impl FnMut(usize) -> T) -> (Duration, Duration) {
    let mut times: Vec<Duration> = (0..runs)
        .map(|i| {
            let start = Instant::now();
            let value = black_box(f(i));
            let took = start.elapsed();
            drop(value);
            took
        })
        .collect();
    times.sort();
    (times[runs / 2], times[(runs * 99 / 100).min(runs - 1)])
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1000.0)
}

/// A small pseudo-random sequence (the same in every run).
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 33) as usize) % n
    }
}

fn fill(rt: &tokio::runtime::Runtime, path: &Path, devices: usize, big: usize) -> Vec<String> {
    let store = Arc::new(EmbeddedStore::open(path).unwrap());
    let registry = Registry::new(store.clone(), AccessControl::default());
    // the applications are made by an administrator (no quotas), as `drogue-local`'s
    // `admin` would
    let admin = Principal {
        user: "admin".into(),
        name: None,
        roles: vec![AccessControl::DEFAULT_ADMIN_ROLE.into()],
    };
    let mut apps = vec![("big".to_owned(), big)];
    let mut left = devices.saturating_sub(big);
    while left > 0 {
        let n = left.min(PER_APP);
        apps.push((format!("app{:04}", apps.len()), n));
        left -= n;
    }
    let start = Instant::now();
    rt.block_on(async {
        for (name, count) in &apps {
            let input: ResourceInput =
                serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
            registry.create_application(&admin, input).await.unwrap();
            let app = AppName::parse(name).unwrap();
            let mut i = 0;
            while i < *count {
                let batch: Vec<Device> = (i..(*count).min(i + PER_TRANSACTION))
                    .map(|d| device(name, d, name == "big"))
                    .collect();
                i += batch.len();
                store
                    .create_devices_limited(&app, batch, DeviceLimits::default())
                    .await
                    .unwrap()
                    .unwrap();
            }
        }
    });
    let took = start.elapsed();
    println!(
        "fill: {devices} devices in {} applications in {:.1} s ({:.0} devices/s, {PER_TRANSACTION} per transaction)",
        apps.len(),
        took.as_secs_f64(),
        devices as f64 / took.as_secs_f64()
    );
    apps.into_iter().map(|(name, _)| name).collect()
}

fn main() {
    let devices = env_number("STORE_SCALE_DEVICES", 1_000_000);
    let big = env_number("STORE_SCALE_BIG", 100_000).min(devices);
    let kept = std::env::var_os("STORE_SCALE_DIR").map(std::path::PathBuf::from);
    let temp = tempfile::tempdir().unwrap();
    let dir = kept.clone().unwrap_or_else(|| temp.path().to_owned());
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("drogue.redb");
    assert!(
        !path.exists(),
        "{} exists: the benchmark fills a new store",
        path.display()
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    println!("shape: {devices} devices: 'big' with {big}, the others in applications of {PER_APP}");

    let apps = fill(&rt, &path, devices, big);
    let size = std::fs::metadata(&path).unwrap().len();
    println!(
        "file: {:.1} MiB ({:.0} bytes per device)",
        size as f64 / 1048576.0,
        size as f64 / devices.max(1) as f64
    );

    // (the store was closed when `fill` dropped it: open it again)
    let (open, _) = timed(5, |_| EmbeddedStore::open(&path).unwrap());
    println!("open: {} (median of 5, warm page cache)", ms(open));
    let store = EmbeddedStore::open(&path).unwrap();

    let app_names: Vec<AppName> = apps.iter().map(|a| AppName::parse(a).unwrap()).collect();
    let sizes: Vec<usize> = app_names
        .iter()
        .map(|a| rt.block_on(store.count_devices(a)).unwrap() as usize)
        .collect();
    assert_eq!(sizes.iter().sum::<usize>(), devices, "every device counted");
    let mut rng = Lcg(42);
    let (median, p99) = timed(20_000, |_| {
        let a = rng.below(app_names.len());
        let d = DeviceName::parse(&format!("device-{:07}", rng.below(sizes[a]))).unwrap();
        rt.block_on(store.get_device(&app_names[a], &d))
            .unwrap()
            .expect("the device exists")
    });
    println!(
        "get_device: median {}, p99 {} (20,000 random devices)",
        ms(median),
        ms(p99)
    );

    if let Some(small) = sizes.iter().position(|&s| s == PER_APP) {
        let app = &app_names[small];
        let (median, _) = timed(20, |_| {
            let all = rt.block_on(store.list_devices(app)).unwrap();
            assert_eq!(all.len(), PER_APP);
        });
        println!("list {PER_APP} devices of {app}: median {}", ms(median));
    }

    if big == 0 {
        return;
    }
    let app = &app_names[0];
    let beta = LabelSelector::parse("fw=beta").unwrap();
    let everything = LabelSelector::default();
    let expected_beta = big.div_ceil(100);
    let (before, _) = timed(5, |_| {
        let all = rt.block_on(store.list_devices(app)).unwrap();
        let found = all
            .into_iter()
            .filter(|d| beta.matches(&d.metadata.labels))
            .count();
        assert_eq!(found, expected_beta);
    });
    let (after, _) = timed(5, |_| {
        let found = rt
            .block_on(store.list_devices_page(app, &beta, 0, None))
            .unwrap();
        assert_eq!(found.len(), expected_beta);
    });
    println!(
        "selector fw=beta in {big} devices ({expected_beta} match): decode all and filter {}, paged list {}",
        ms(before),
        ms(after)
    );
    let deep = big.saturating_sub(1_000);
    for offset in [0, deep] {
        let (before, _) = timed(5, |_| {
            let all = rt.block_on(store.list_devices(app)).unwrap();
            let page: Vec<Device> = all.into_iter().skip(offset).take(100).collect();
            assert_eq!(page.len(), 100.min(big - offset));
        });
        let (after, _) = timed(21, |_| {
            let page = rt
                .block_on(store.list_devices_page(app, &everything, offset, Some(100)))
                .unwrap();
            assert_eq!(page.len(), 100.min(big - offset));
            assert_eq!(page[0].metadata.name, format!("device-{offset:07}"));
        });
        println!(
            "page of 100 at offset {offset} of {big}: decode all and slice {}, paged list {}",
            ms(before),
            ms(after)
        );
    }
    if kept.is_some() {
        println!("kept: {}", path.display());
    }
}
