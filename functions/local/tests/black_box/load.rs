//! The load generators' short runs (the long ones are `tests/bench/*.sh`, figures in
//! BENCHMARKS.md): `drogue-loadgen` against the real `drogue-local` for a second each,
//! counting by message id. Every MQTT message the broker acknowledged reaches the
//! application's subscriber (`--require-all` fails otherwise); every HTTP telemetry
//! request answered 202, and every CoAP request, plain and over DTLS, answered 2.04, is
//! among the events an application reads back after the run (`--by-id`), or receives
//! during it (`--live`). At a small
//! scale, many device connections and many subscribers of one application: every
//! connection accepted, every subscriber receiving every acknowledged message.

use super::runner::LocalRunner;
use futures_util::StreamExt;
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
    // (the event log keeps every event of the HTTP run, read back by id after it)
    let server = LocalRunner::start_with(
        dir.path(),
        &["--publish-rate", "0", "--event-retention", "1000000"],
    )
    .await;
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

    // every request the endpoints acknowledge is read back as an event, by id
    let by_id = [
        "--by-id",
        &mqtt,
        "--subscriber",
        &admin,
        "--filter",
        "app/bench",
    ];
    let read_back = async |args: &[&str]| {
        let output = loadgen(&[args, &by_id[..]].concat()).await;
        assert!(count_before(&output, "acknowledged,") > 0, "{output}");
        assert_eq!(count_before(&output, "acknowledged never"), 0, "{output}");
        output
    };

    // HTTP telemetry: every request answered 202
    let url = format!("{}/v1/telemetry", server.base);
    let http = [
        "run",
        &url,
        "--connections",
        "4",
        "--seconds",
        "1",
        "--basic",
        "device1@bench:secret1",
        "--body",
        r#"{"temp":21.5}"#,
    ];
    read_back(&http).await;
    // the same with the application's session connected through the run
    let output = read_back(&[&http[..], &["--live"]].concat()).await;
    assert!(
        count_before(&output, "events received by the application during the run") > 0,
        "{output}"
    );

    // CoAP, plain and over DTLS: every request answered 2.04
    let coap = server.coap.to_string();
    // one client first, so that the password is checked (slowly, once) before the load
    loadgen(&["coap", &coap, "--seconds", "1", "--clients", "1"]).await;
    let output = read_back(&["coap", &coap, "--seconds", "1", "--clients", "4"]).await;
    assert!(count_before(&output, "answered 2.04") > 0, "{output}");
    assert!(output.contains("other answers 0, timeouts 0)"), "{output}");
    let coaps = server.coaps.to_string();
    let output = read_back(&[
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

/// A SHA-512-crypt hash of "secret" at the default 5,000 rounds (what a plain password
/// is stored as): devices are made without hashing each one, and every CONNECT still
/// checks the password at full cost.
const SECRET_HASH: &str = "$6$benchsalt$q9MuV9hhfkGoXDS1AtvptzAA/r/DjSa7mIywLZFUe.UNsSK1b2j0LHSWWb4kMOM/W0qWeW4vyTY5T17yMWHcE1";

/// The short version of `tests/bench/mqtt-scale.sh`: 500 devices hold a connection each
/// (every password checked), 10 applications subscribe to the same application, and
/// every subscriber receives every message the broker acknowledged, by id. Counts only:
/// no timing is asserted.
#[tokio::test]
async fn many_connections_and_subscribers_lose_nothing() {
    const DEVICES: usize = 500;
    let dir = tempfile::tempdir().unwrap();
    let server = LocalRunner::start_with(dir.path(), &["--publish-rate", "0"]).await;
    assert_eq!(
        server
            .post(APPS, &json!({"metadata": {"name": "bench"}}))
            .await,
        201
    );
    let created: Vec<u16> = futures_util::stream::iter(0..DEVICES)
        .map(|i| {
            let device = json!({"metadata": {"name": format!("dev{i}")}, "spec": {"authentication": {
                "credentials": [{"pass": {"sha512": SECRET_HASH}}]
            }}});
            let server = &server;
            async move { server.post(&format!("{APPS}/bench/devices"), &device).await }
        })
        .buffer_unordered(8)
        .collect()
        .await;
    assert!(created.iter().all(|status| *status == 201), "{created:?}");
    let checks = server.metric("drogue_device_password_checks_total").await;

    let mqtt = server.mqtt.to_string();
    let admin = server.admin_token();
    let pid = server.pid().to_string();
    let devices = DEVICES.to_string();
    let output = loadgen(&[
        "mqtt",
        &mqtt,
        "--devices",
        &devices,
        "--subscribers",
        "10",
        "--seconds",
        "2",
        "--qos",
        "1",
        "--rate",
        "1000",
        "--device-password",
        "secret",
        "--subscriber",
        &admin,
        "--filter",
        "app/bench",
        "--rss-pid",
        &pid,
        "--require-all",
    ])
    .await;
    // every connection accepted, every password checked once (the verified-password
    // cache answers the sessions' rechecks)
    assert!(
        output.contains(&format!(
            "connect: {DEVICES} of {DEVICES} devices connected"
        )),
        "{output}"
    );
    assert!(output.contains("(0 refused, 0 failed"), "{output}");
    assert!(output.contains("KiB per connection"), "{output}");
    assert_eq!(
        server.metric("drogue_device_password_checks_total").await - checks,
        DEVICES as u64
    );
    // every subscriber received every acknowledged message
    let acknowledged = count_before(&output, "acknowledged,");
    assert!(acknowledged > 0, "{output}");
    assert_eq!(count_before(&output, "acknowledged never"), 0, "{output}");
    assert!(
        output.contains("(0 of 10 subscribers missed some)"),
        "{output}"
    );
    assert!(
        count_before(&output, "received by 10") >= 10 * acknowledged,
        "{output}"
    );
    assert_eq!(server.metric("drogue_mqtt_dropped_total").await, 0);
}
