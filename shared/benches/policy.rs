//! The broker's policy checks on its hot path: a device's publish (`iot:Publish` on its
//! topic) and each delivery to an application (`iot:Receive` on `app/{app}`), against the
//! patterns the authorizer makes, and the subscription check of a device.
//!
//! `cargo bench -p drogue-shared --bench policy`

use criterion::{Criterion, criterion_group, criterion_main};
use drogue_shared::mqtt::Action;
use drogue_shared::mqtt::policy::Policy;
use std::hint::black_box;

/// A device's policy as the authorizer makes it, its name written as in the pattern.
fn device(app: &str, written: &str) -> Policy {
    let mut policy = Policy::default();
    policy
        .allow(Action::Connect, format!("{written}@{app}"))
        .allow(Action::Publish, format!("dt/{app}/{written}/*"))
        .allow(Action::Publish, format!("cmd/{app}/{written}/*/res/*"))
        .allow(Action::Subscribe, format!("cmd/{app}/{written}/*"))
        .allow(Action::Receive, format!("cmd/{app}/{written}/*"));
    policy
}

fn checks(c: &mut Criterion) {
    let plain = device("bench", "device42");
    c.bench_function("policy: a device's publish", |b| {
        b.iter(|| black_box(&plain).allows(Action::Publish, black_box("dt/bench/device42/temp")))
    });
    c.bench_function(
        "policy: a device's publish on another's topic (refused)",
        |b| {
            b.iter(|| {
                black_box(&plain).allows(Action::Publish, black_box("dt/bench/device43/temp"))
            })
        },
    );
    // a name with `$` (`meter$2`), as `literal` writes it
    let dollar = device("bench", "meter${$}2");
    c.bench_function("policy: a device's publish, a name with $", |b| {
        b.iter(|| black_box(&dollar).allows(Action::Publish, black_box("dt/bench/meter$2/temp")))
    });
    c.bench_function("policy: a device's subscription", |b| {
        b.iter(|| black_box(&plain).allows(Action::Subscribe, black_box("cmd/bench/device42/#")))
    });
    let mut application = Policy::default();
    application
        .allow(Action::Connect, "p0123/app")
        .deny(Action::Subscribe, "$share/*/*/app/*")
        .allow(Action::Subscribe, "app/bench")
        .allow(Action::Subscribe, "$share/*/app/bench")
        .allow(Action::Receive, "app/bench")
        .allow(Action::Publish, "command/bench/*");
    c.bench_function("policy: a delivery to an application", |b| {
        b.iter(|| black_box(&application).allows(Action::Receive, black_box("app/bench")))
    });
}

criterion_group!(benches, checks);
criterion_main!(benches);
