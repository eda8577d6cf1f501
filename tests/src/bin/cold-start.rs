//! Cold starts of the function binaries under the emulated Lambda Runtime API (see
//! `drogue_tests::lambda`), against a hello-world `lambda_runtime` function built in the
//! same run: for each, the time from process start to its first `/next` request (its
//! initialisation) and to its first answered invocation (an `events/` payload, with
//! DynamoDB, Kinesis and IoT Core in moto), over repeated starts. Run by
//! `tests/bench/cold-start.sh`, which builds the release binaries and starts moto.
//!
//!   cold-start <dir with the release binaries> [runs]

#[path = "../../mqtt/fixture.rs"]
#[allow(dead_code)]
mod fixture;

use drogue_tests::backend::{fresh_dynamo_table, fresh_kinesis_stream, kinesis_client, moto_url};
use drogue_tests::lambda::{Answer, RuntimeApi, lambda_environment, start_path};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

struct Case {
    name: &'static str,
    binary: &'static str,
    event: &'static str,
    settings: Vec<(String, String)>,
}

struct Sample {
    init: Duration,
    answered: Duration,
    failed: bool,
}

async fn run_once(binary: &Path, case: &Case) -> Sample {
    let api = RuntimeApi::start(case.name).await;
    let mut env = lambda_environment(&api, case.name, &moto_url());
    env.extend(case.settings.iter().cloned());
    let event = if case.event.is_empty() {
        serde_json::json!({"hello": "world"})
    } else {
        drogue_tests::events::event(case.event)
    };
    if case.binary != "hello-lambda" && !env.iter().any(|(k, _)| k == "DROGUE_TLS_ROOTS") {
        env.push(amazon_roots());
    }
    let process = start_path(binary, &env);
    // the event is queued at once, as on a cold invocation
    let answer = api.invoke(event).await;
    let answered = process.started.elapsed();
    let init = api
        .first_poll()
        .expect("the function polled")
        .duration_since(process.started);
    Sample {
        init,
        answered,
        failed: matches!(answer, Answer::Error(_)),
    }
}

/// What a function on Lambda, talking to AWS's endpoints, trusts.
fn amazon_roots() -> (String, String) {
    ("DROGUE_TLS_ROOTS".to_owned(), "amazon".to_owned())
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(args.next().expect("the directory of the release binaries"));
    let runs: usize = args
        .next()
        .map_or(20, |n| n.parse().expect("a number of runs"));

    let store = fresh_dynamo_table().await;
    fixture::populate(Arc::new(store.clone())).await;
    let stream = fresh_kinesis_stream(&kinesis_client(&moto_url())).await;
    let table = ("DROGUE_TABLE".to_owned(), store.table().to_owned());
    let events = ("DROGUE_EVENT_STREAM".to_owned(), stream);
    let mqtt = ("DROGUE_COMMAND_SOURCE".to_owned(), "mqtt".to_owned());
    // on Lambda the functions trust Amazon's roots only (drogue_shared::runtime::aws),
    // unless AWS_ENDPOINT_URL is set, as it is here for moto: run_once says so explicitly
    let system = ("DROGUE_TLS_ROOTS".to_owned(), "system".to_owned());
    let cases = [
        Case {
            name: "hello-lambda",
            binary: "hello-lambda",
            event: "",
            settings: vec![],
        },
        Case {
            name: "registry",
            binary: "registry",
            event: "registry-list-apps.json",
            settings: vec![table.clone()],
        },
        Case {
            name: "http-endpoint",
            binary: "http-endpoint",
            event: "http-telemetry-basic.json",
            settings: vec![table.clone(), events.clone()],
        },
        Case {
            name: "command",
            binary: "command",
            event: "command-drop-off.json",
            settings: vec![table.clone()],
        },
        Case {
            name: "mqtt-command",
            binary: "command",
            event: "mqtt-command.json",
            settings: vec![table.clone(), mqtt],
        },
        Case {
            name: "mqtt-authorizer",
            binary: "mqtt-authorizer",
            event: "mqtt-authorizer-device.json",
            settings: vec![table.clone()],
        },
        Case {
            name: "mqtt-ingest",
            binary: "mqtt-ingest",
            event: "mqtt-ingest-telemetry.json",
            settings: vec![table.clone(), events.clone()],
        },
        Case {
            name: "trust-anchor-sync",
            binary: "trust-anchor-sync",
            event: "trust-anchor-sync.json",
            settings: vec![table.clone(), events.clone()],
        },
        Case {
            name: "cert-validator",
            binary: "cert-validator",
            event: "iot-certificate-registered.json",
            settings: vec![table.clone()],
        },
        Case {
            name: "fan-out",
            binary: "fan-out",
            event: "kinesis-events.json",
            settings: vec![table.clone()],
        },
        Case {
            name: "stream",
            binary: "stream",
            event: "websocket-connect.json",
            settings: vec![table.clone()],
        },
        // what loading the system's root store would cost
        Case {
            name: "registry, system roots",
            binary: "registry",
            event: "registry-list-apps.json",
            settings: vec![table.clone(), system.clone()],
        },
        Case {
            name: "http-endpoint, system roots",
            binary: "http-endpoint",
            event: "http-telemetry-basic.json",
            settings: vec![table, events, system],
        },
    ];

    println!(
        "| function | init p50 (ms) | init p90 | init / hello | answered p50 (ms) | answered p90 | answered / hello | binary (MB) |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let mut hello: Option<(Duration, Duration)> = None;
    for case in &cases {
        let binary = dir.join(case.binary);
        let size = std::fs::metadata(&binary)
            .unwrap_or_else(|e| panic!("{}: {e}", binary.display()))
            .len();
        // one start to warm the page cache, not counted
        run_once(&binary, case).await;
        let mut inits = Vec::with_capacity(runs);
        let mut answers = Vec::with_capacity(runs);
        let mut failed = 0;
        for _ in 0..runs {
            let sample = run_once(&binary, case).await;
            inits.push(sample.init);
            answers.push(sample.answered);
            failed += usize::from(sample.failed);
        }
        inits.sort();
        answers.sort();
        let (init, answered) = (percentile(&inits, 0.5), percentile(&answers, 0.5));
        let (hello_init, hello_answered) = *hello.get_or_insert((init, answered));
        println!(
            "| {}{} | {:.1} | {:.1} | {:.2} | {:.1} | {:.1} | {:.2} | {:.1} |",
            case.name,
            if failed > 0 { " (function error)" } else { "" },
            ms(init),
            ms(percentile(&inits, 0.9)),
            init.as_secs_f64() / hello_init.as_secs_f64(),
            ms(answered),
            ms(percentile(&answers, 0.9)),
            answered.as_secs_f64() / hello_answered.as_secs_f64(),
            size as f64 / 1e6,
        );
    }
}
