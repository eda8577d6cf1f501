//! The load generators' short runs (the long ones are `tests/bench/*.sh`, figures in
//! BENCHMARKS.md): `drogue-loadgen` against the real `drogue-local` for a second each,
//! counting by message id. Every MQTT message the broker acknowledged reaches the
//! application's subscriber (`--require-all` fails otherwise), and every CoAP request,
//! plain and over DTLS, is answered 2.04.

use super::runner::LocalRunner;
use serde_json::json;

const APPS: &str = "/api/registry/v1alpha1/apps";

/// Runs `drogue-loadgen` with these arguments; its output, after it succeeded.
async fn loadgen(args: &[&str]) -> String {
    let binary = drogue_tests::lambda::binaries()
        .get("drogue-loadgen")
        .expect("the workspace builds drogue-loadgen");
    let output = tokio::process::Command::new(binary)
        .args(args)
        .kill_on_drop(true)
        .output()
        .await
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "drogue-loadgen {args:?}:\n{text}");
    text
}

/// The number before `what` in a load generator's line (`123 answered`).
fn count_before(output: &str, what: &str) -> u64 {
    let at = output
        .find(what)
        .unwrap_or_else(|| panic!("{what:?} in {output}"));
    output[..at]
        .split_whitespace()
        .last()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("a number before {what:?} in {output}"))
}

#[tokio::test]
async fn load_generators_lose_nothing_on_a_short_run() {
    let dir = tempfile::tempdir().unwrap();
    let server = LocalRunner::start_with(dir.path(), &["--publish-rate", "0"]).await;
    assert_eq!(
        server
            .post(APPS, &json!({"metadata": {"name": "bench"}}))
            .await,
        201
    );
    // dev0..dev3 for MQTT; device1 with a password and a pre-shared key ("key1")
    for name in ["dev0", "dev1", "dev2", "dev3", "device1"] {
        let device = json!({"metadata": {"name": name}, "spec": {"authentication": {"credentials": [
            {"pass": "secret1"}, {"psk": {"key": "a2V5MQ=="}}
        ]}}});
        assert_eq!(
            server.post(&format!("{APPS}/bench/devices"), &device).await,
            201
        );
    }
    let admin = server.admin_token();

    // MQTT at QoS 1: every acknowledged message delivered
    let mqtt = server.mqtt.to_string();
    let output = loadgen(&[
        "mqtt",
        &mqtt,
        "--devices",
        "4",
        "--seconds",
        "1",
        "--qos",
        "1",
        "--device-password",
        "secret1",
        "--subscriber",
        &admin,
        "--filter",
        "app/bench",
        "--require-all",
    ])
    .await;
    assert!(count_before(&output, "acknowledged,") > 0, "{output}");
    assert_eq!(count_before(&output, "acknowledged never"), 0, "{output}");

    // CoAP, plain and over DTLS: every request answered 2.04
    let coap = server.coap.to_string();
    // one client first, so that the password is checked (slowly, once) before the load
    loadgen(&["coap", &coap, "--seconds", "1", "--clients", "1"]).await;
    let output = loadgen(&["coap", &coap, "--seconds", "1", "--clients", "4"]).await;
    assert!(count_before(&output, "answered 2.04") > 0, "{output}");
    assert!(output.contains("other answers 0, timeouts 0)"), "{output}");
    let coaps = server.coaps.to_string();
    let output = loadgen(&[
        "coap",
        &coaps,
        "--seconds",
        "1",
        "--clients",
        "2",
        "--psk",
        "device1@bench:key1",
    ])
    .await;
    assert!(count_before(&output, "answered 2.04") > 0, "{output}");
    assert!(output.contains("other answers 0"), "{output}");
}
