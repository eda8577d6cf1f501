//! What `drogue-local` prints at start with the default log level: a few lines saying
//! what listens where, none of the MQTT library's internals.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::AsyncReadExt;

/// What the binary printed (stdout, then stderr) in its first seconds, and the addresses
/// of its ready file; `rust_log` as `RUST_LOG` (`None`: unset).
async fn first_seconds(dir: &Path, rust_log: Option<&str>) -> (String, serde_json::Value) {
    let ready = dir.join("ready.json");
    let _ = std::fs::remove_file(&ready);
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_drogue-local"));
    command
        .arg("--data-dir")
        .arg(dir)
        .args(["--http-bind", "127.0.0.1:0", "--https-bind", "127.0.0.1:0"])
        .args(["--mqtt-bind", "127.0.0.1:0", "--mqtts-bind", "127.0.0.1:0"])
        .args(["--coap-bind", "127.0.0.1:0", "--coaps-bind", "127.0.0.1:0"])
        .arg("--ready-file")
        .arg(&ready)
        .env_remove("RUST_LOG")
        .env_remove("NO_COLOR")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(filter) = rust_log {
        command.env("RUST_LOG", filter);
    }
    let mut child = command.spawn().expect("drogue-local starts");
    let read = |mut pipe: Box<dyn tokio::io::AsyncRead + Unpin + Send>| {
        tokio::spawn(async move {
            let mut text = Vec::new();
            let _ = pipe.read_to_end(&mut text).await;
            String::from_utf8_lossy(&text).into_owned()
        })
    };
    let stdout = read(Box::new(child.stdout.take().unwrap()));
    let stderr = read(Box::new(child.stderr.take().unwrap()));
    let mut addresses = serde_json::Value::Null;
    for _ in 0..600 {
        if let Ok(text) = std::fs::read_to_string(&ready)
            && let Ok(parsed) = serde_json::from_str(&text)
        {
            addresses = parsed;
            break;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("drogue-local exited at start: {status}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        addresses.is_object(),
        "drogue-local did not start within 30 s"
    );
    // a client connecting and leaving: the broker's connection handling says nothing either
    let mqtt = addresses["mqtt"].as_str().unwrap();
    drop(tokio::net::TcpStream::connect(mqtt).await.unwrap());
    tokio::time::sleep(Duration::from_secs(2)).await;
    child.start_kill().unwrap();
    child.wait().await.unwrap();
    let output = format!("{}{}", stdout.await.unwrap(), stderr.await.unwrap());
    (output, addresses)
}

/// Messages of ntex (the MQTT library) at start and on connections.
const LIBRARY_INTERNALS: [&str; 7] = [
    "Resuming socket listener",
    "back-pressure",
    "Starting worker",
    "arbiter",
    "accept loop",
    "does not exist, using default",
    "Starting \"mqtt",
];

#[tokio::test]
async fn the_start_up_log_says_what_listens_where_and_nothing_more() {
    let dir = tempfile::tempdir().unwrap();
    for start in ["first", "second"] {
        let (output, addresses) = first_seconds(dir.path(), None).await;
        eprintln!("{start} start:\n{output}");
        let address = |name: &str| addresses[name].as_str().unwrap().to_owned();
        let data = dir.path().display().to_string();
        let token = dir.path().join("admin-token").display().to_string();
        for expected in [
            format!("HTTP   http://{} (", address("http")),
            format!("HTTPS  https://{} (", address("https")),
            format!("MQTT   mqtt://{} (", address("mqtt")),
            format!("MQTTS  mqtts://{} (", address("mqtts")),
            format!("CoAP   coap://{} (", address("coap")),
            format!("CoAPS  coaps://{} (", address("coaps")),
            format!("data   {data} (administrator token in {token})"),
            "drogue-local is ready".to_owned(),
        ] {
            let lines = output.lines().filter(|l| l.contains(&expected)).count();
            assert_eq!(lines, 1, "{start} start: {expected:?} once in\n{output}");
        }
        for internal in LIBRARY_INTERNALS {
            assert!(
                !output.lines().any(|l| l.contains(internal)),
                "{start} start: {internal:?} in\n{output}"
            );
        }
        let info = output.lines().filter(|l| l.contains(" INFO ")).count();
        assert!(info <= 10, "{start} start: {info} info lines in\n{output}");
        assert!(!output.contains('\u{1b}'), "no colour codes into a pipe");
    }
}

#[tokio::test]
async fn rust_log_overrides_the_default_filter() {
    let dir = tempfile::tempdir().unwrap();
    let (output, _) = first_seconds(dir.path(), Some("warn")).await;
    assert!(
        !output.lines().any(|l| l.contains(" INFO ")),
        "RUST_LOG=warn: no info lines in\n{output}"
    );
    let (output, _) = first_seconds(dir.path(), Some("info,ntex=info")).await;
    assert!(output.contains("drogue-local is ready"), "{output}");
    assert!(
        LIBRARY_INTERNALS
            .iter()
            .any(|internal| output.lines().any(|l| l.contains(internal))),
        "RUST_LOG=info,ntex=info lets the library's messages through:\n{output}"
    );
}
