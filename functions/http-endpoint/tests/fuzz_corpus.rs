//! The bounded version of the fuzzing, run with every test run: each fuzz target's body
//! (`fuzz/src/lib.rs`) over every input of its seeds (`fuzz/seeds/<target>/`), its corpus
//! (`fuzz/corpus/<target>/`) and the inputs of crashes found and fixed
//! (`fuzz/regressions/<target>/`). A panic is a failed
//! property or a crash; the test names the input. `tests/fuzz/run.sh` fuzzes for long.

#[allow(dead_code)]
#[path = "../../../fuzz/src/lib.rs"]
mod targets;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

/// Every input of a target: its seeds, corpus and regressions, in name order.
fn inputs(target: &str) -> Vec<PathBuf> {
    let mut inputs = Vec::new();
    for dir in ["seeds", "corpus", "regressions"] {
        let Ok(entries) = std::fs::read_dir(fuzz_dir().join(dir).join(target)) else {
            continue;
        };
        inputs.extend(entries.map(|e| e.expect("a directory entry").path()));
    }
    inputs.sort();
    inputs
}

fn replay<T>(target: &str, run: impl Fn(&[u8]) -> T) {
    let inputs = inputs(target);
    assert!(!inputs.is_empty(), "no corpus for {target}");
    let mut failed = Vec::new();
    for input in &inputs {
        let data = std::fs::read(input).expect("a readable input");
        if catch_unwind(AssertUnwindSafe(|| drop(run(&data)))).is_err() {
            failed.push(input.display().to_string());
        }
    }
    assert!(
        failed.is_empty(),
        "{target}: {} of {} inputs fail: {failed:#?}",
        failed.len(),
        inputs.len()
    );
}

#[test]
fn topic_filter() {
    replay("topic_filter", targets::topic_filter);
}

#[test]
fn label_selector() {
    replay("label_selector", targets::label_selector);
}

#[test]
fn basic_auth() {
    replay("basic_auth", targets::basic_auth);
}

#[test]
fn device_spec() {
    replay("device_spec", targets::device_spec);
}

#[test]
fn application_spec() {
    replay("application_spec", targets::application_spec);
}

#[test]
fn mqtt_connect() {
    let cloud = targets::Cloud::new();
    replay("mqtt_connect", |data| targets::mqtt_connect(&cloud, data));
}

#[test]
fn mqtt_publish() {
    let cloud = targets::Cloud::new();
    replay("mqtt_publish", |data| targets::mqtt_publish(&cloud, data));
}

#[test]
fn http_endpoint() {
    let cloud = targets::Cloud::new();
    replay("http_endpoint", |data| targets::http_endpoint(&cloud, data));
}

/// The seeds reach the targets' interesting paths: the properties above are not
/// vacuous (a client connects, a message is accepted, a publish succeeds).
#[test]
fn seeds_reach_the_accepting_paths() {
    let cloud = targets::Cloud::new();
    let seed = |target: &str, name: &str| {
        std::fs::read(fuzz_dir().join("seeds").join(target).join(name)).expect("a seed")
    };
    for (name, connects) in [
        ("seed-device", true),
        ("seed-alias", true),
        ("seed-username", true),
        ("seed-gateway", true),
        ("seed-other", true),
        ("seed-app", true),
        ("seed-cross", false),
        ("seed-wrong", false),
        ("seed-app-bad", false),
        ("seed-cert", false),
    ] {
        let data = seed("mqtt_connect", name);
        assert_eq!(targets::mqtt_connect(&cloud, &data), connects, "{name}");
    }
    for (name, accepted) in [
        ("seed-telemetry", true),
        ("seed-suffix", true),
        ("seed-gateway", true),
        ("seed-foreign", false),
        ("seed-command", false),
        ("seed-alias", false),
    ] {
        let data = seed("mqtt_publish", name);
        assert_eq!(targets::mqtt_publish(&cloud, &data), accepted, "{name}");
    }
    for (name, status) in [
        ("seed-telemetry", 202),
        ("seed-app-query", 202),
        ("seed-username", 202),
        ("seed-scoped", 202),
        ("seed-other", 202),
        ("seed-bearer", 403),
        ("seed-cross", 403),
        ("seed-gateway", 406),
    ] {
        let data = seed("http_endpoint", name);
        assert_eq!(
            targets::http_endpoint(&cloud, &data),
            Some(status),
            "{name}"
        );
    }
}
