//! What a function binary does before its first `/invocation/next` (its cold start's
//! *init*): it reads its configuration and readies its clients, and nothing of it touches
//! the network; the SDK's HTTPS client connects (and builds its TLS configuration) when
//! the first event needs AWS (`drogue_shared::runtime::aws::OnFirstRequest`). It starts
//! no thread either: under Lambda, one invocation at a time, its runtime is its main
//! thread (`drogue_shared::runtime::block_on`). A configuration error still stops the
//! process at start, before it asks for an event.

use drogue_tests::events::event;
use drogue_tests::lambda::{RuntimeApi, binaries, lambda_environment, start_path};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;

/// A Lambda function binary: its settings (beside the table, all it needs to start)
/// and an event that takes it to AWS.
type Case = (
    &'static str,
    &'static [(&'static str, &'static str)],
    &'static str,
);

/// Every Lambda function binary.
const FUNCTIONS: [Case; 10] = [
    ("registry", &[], "registry-list-apps.json"),
    (
        "http-endpoint",
        &[("DROGUE_EVENT_STREAM", "events")],
        "http-telemetry-basic.json",
    ),
    ("command", &[], "command-drop-off.json"),
    (
        "command",
        &[("DROGUE_COMMAND_SOURCE", "mqtt")],
        "mqtt-command.json",
    ),
    ("mqtt-authorizer", &[], "mqtt-authorizer-device.json"),
    (
        "mqtt-ingest",
        &[("DROGUE_EVENT_STREAM", "events")],
        "mqtt-ingest-telemetry.json",
    ),
    ("cert-validator", &[], "iot-certificate-registered.json"),
    (
        "trust-anchor-sync",
        &[("DROGUE_EVENT_STREAM", "events")],
        "trust-anchor-sync.json",
    ),
    ("fan-out", &[], "kinesis-events.json"),
    ("stream", &[], "websocket-connect.json"),
];

/// A TCP endpoint that accepts connections, counts them, and never answers: an AWS that
/// is not reachable in any useful way, and that shows whether anyone tried.
struct Blackhole {
    url: String,
    connections: Arc<AtomicUsize>,
    server: tokio::task::JoinHandle<()>,
}

impl Blackhole {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let connections = Arc::new(AtomicUsize::new(0));
        let counted = connections.clone();
        let server = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
                held.push(socket);
            }
        });
        Self {
            url,
            connections,
            server,
        }
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

impl Drop for Blackhole {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// The threads of a running process (`/proc/{pid}/task`).
fn threads(process: &tokio::process::Child) -> usize {
    let pid = process.id().expect("the function is running");
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .expect("the process's threads")
        .count()
}

/// Waits (up to `within`) until `done` holds.
async fn wait_for(within: Duration, done: impl Fn() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < within {
        if done() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    done()
}

#[tokio::test]
async fn init_touches_no_network_and_the_first_event_does() {
    for (i, (binary, settings, fixture)) in FUNCTIONS.into_iter().enumerate() {
        let aws = Blackhole::start().await;
        let api = RuntimeApi::start(binary).await;
        let mut env = lambda_environment(&api, binary, &aws.url);
        // the instance metadata service (credentials, region) would be asked here too
        env.push(("AWS_EC2_METADATA_SERVICE_ENDPOINT".into(), aws.url.clone()));
        // both HTTPS clients: Amazon's roots, as on Lambda, and the system's
        let roots = if i % 2 == 0 { "amazon" } else { "system" };
        env.push(("DROGUE_TLS_ROOTS".into(), roots.into()));
        env.push(("DROGUE_TABLE".into(), "drogue".into()));
        env.extend(settings.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let path = binaries()
            .get(binary)
            .unwrap_or_else(|| panic!("no binary {binary}"));
        let process = start_path(path, &env);

        assert!(
            wait_for(Duration::from_secs(20), || api.first_poll().is_some()).await,
            "{binary} ({fixture}): no first /invocation/next; init error: {:?}",
            api.init_error()
        );
        // a moment past the first poll, for anything started in the background
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(
            aws.connections(),
            0,
            "{binary} ({fixture}): connected to AWS before its first event"
        );
        assert_eq!(
            threads(&process.child),
            1,
            "{binary} ({fixture}): started threads before its first event"
        );

        // the same endpoint is the one the function uses: its first event goes there
        let invoked = api.invoke(event(fixture));
        let connected = wait_for(Duration::from_secs(20), || aws.connections() > 0);
        tokio::select! {
            answer = invoked => panic!("{binary} ({fixture}) answered without AWS: {answer:?}"),
            connected = connected => assert!(connected, "{binary} ({fixture}): never reached AWS"),
        }
    }
}

/// Starts `binary` with `env`, its standard error kept; its exit status and standard
/// error, or `None` if it was still running after `within`.
async fn run_to_exit(
    binary: &str,
    env: &[(String, String)],
    within: Duration,
) -> Option<(std::process::ExitStatus, String)> {
    let path = binaries()
        .get(binary)
        .unwrap_or_else(|| panic!("no binary {binary}"));
    let mut command = tokio::process::Command::new(path);
    command.env_clear();
    for var in ["PATH", "HOME"] {
        if let Ok(value) = std::env::var(var) {
            command.env(var, value);
        }
    }
    let child = command
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the binary starts");
    let output = tokio::time::timeout(within, child.wait_with_output())
        .await
        .ok()?
        .unwrap();
    Some((
        output.status,
        String::from_utf8_lossy(&output.stderr).into_owned(),
    ))
}

#[tokio::test]
async fn a_misconfigured_function_fails_at_start() {
    let aws = Blackhole::start().await;
    for (binary, settings, expected) in [
        // a required setting missing
        ("registry", &[][..], "DROGUE_TABLE"),
        (
            "http-endpoint",
            &[("DROGUE_TABLE", "drogue")][..],
            "DROGUE_EVENT_STREAM",
        ),
        // a value checked by what the function builds, not by its parser
        (
            "cert-validator",
            &[
                ("DROGUE_TABLE", "drogue"),
                ("DROGUE_IOT_POLICY_PREFIX", "not a prefix"),
            ][..],
            "prefix",
        ),
    ] {
        let api = RuntimeApi::start(binary).await;
        let mut env = lambda_environment(&api, binary, &aws.url);
        env.extend(settings.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let (status, stderr) = run_to_exit(binary, &env, Duration::from_secs(20))
            .await
            .unwrap_or_else(|| panic!("{binary}: still running, not failed at start"));
        assert!(!status.success(), "{binary}: {status}");
        assert!(
            stderr.contains(expected),
            "{binary}: the error does not name {expected}: {stderr}"
        );
        assert_eq!(api.first_poll(), None, "{binary} asked for an event");
    }
    assert_eq!(aws.connections(), 0);
}

/// The short version of `tests/bench/first-poll-time.py` (BENCHMARKS.md, cold starts):
/// two functions, a few starts each, every start reaching its first poll.
#[test]
fn the_first_poll_benchmark_runs() {
    let binaries = binaries();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/bench/first-poll-time.py");
    let output = std::process::Command::new("python3")
        .arg(script)
        .arg("3")
        .arg(&binaries["hello-lambda"])
        .arg(format!(
            "{}:DROGUE_TABLE=other",
            binaries["http-endpoint"].display()
        ))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    for line in lines {
        assert!(
            line.contains(": p50 ") && line.ends_with("(3 starts)"),
            "{line}"
        );
    }
}
