//! The function binaries as Lambda runs them: an emulation of the Lambda Runtime API on a
//! loopback port, and the binaries started against it with the environment Lambda gives
//! (and AWS services pointed at moto).
//!
//! The Runtime API: a function polls `GET /2018-06-01/runtime/invocation/next` for an
//! event, and posts its answer to `.../invocation/{id}/response` (or `.../error`);
//! failures before the first poll go to `.../runtime/init/error`.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use serde_json::Value;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// What a function answered to an invocation.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    Response(Value),
    /// A function error (`errorType`, `errorMessage`).
    Error(Value),
}

impl Answer {
    /// The response; panics on a function error.
    pub fn response(self) -> Value {
        match self {
            Self::Response(v) => v,
            Self::Error(e) => panic!("the function failed: {e}"),
        }
    }
}

struct Pending {
    id: String,
    event: Value,
    reply: oneshot::Sender<Answer>,
}

struct Shared {
    function: String,
    queue: tokio::sync::Mutex<mpsc::UnboundedReceiver<Pending>>,
    waiting: Mutex<HashMap<String, oneshot::Sender<Answer>>>,
    first_poll: Mutex<Option<Instant>>,
    init_error: Mutex<Option<String>>,
}

/// An emulated Runtime API for one function.
pub struct RuntimeApi {
    addr: SocketAddr,
    queue: mpsc::UnboundedSender<Pending>,
    shared: Arc<Shared>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for RuntimeApi {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn next(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    shared
        .first_poll
        .lock()
        .unwrap()
        .get_or_insert_with(Instant::now);
    let Some(pending) = shared.queue.lock().await.recv().await else {
        return (StatusCode::GONE, HeaderMap::new(), Vec::new());
    };
    shared
        .waiting
        .lock()
        .unwrap()
        .insert(pending.id.clone(), pending.reply);
    let deadline = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        + Duration::from_secs(30);
    let mut headers = HeaderMap::new();
    let mut set = |name: &'static str, value: String| {
        headers.insert(name, HeaderValue::from_str(&value).unwrap());
    };
    set("lambda-runtime-aws-request-id", pending.id);
    set(
        "lambda-runtime-deadline-ms",
        deadline.as_millis().to_string(),
    );
    set(
        "lambda-runtime-invoked-function-arn",
        format!(
            "arn:aws:lambda:us-east-1:123456789012:function:{}",
            shared.function
        ),
    );
    set(
        "lambda-runtime-trace-id",
        "Root=1-00000000-000000000000000000000000;Sampled=0".into(),
    );
    set("content-type", "application/json".into());
    (
        StatusCode::OK,
        headers,
        serde_json::to_vec(&pending.event).unwrap(),
    )
}

fn answered(shared: &Shared, id: &str, answer: Answer) -> StatusCode {
    match shared.waiting.lock().unwrap().remove(id) {
        Some(reply) => {
            let _ = reply.send(answer);
            StatusCode::ACCEPTED
        }
        None => StatusCode::BAD_REQUEST,
    }
}

fn json_or_text(body: &[u8]) -> Value {
    serde_json::from_slice(body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into_owned()))
}

async fn response(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    body: Bytes,
) -> StatusCode {
    answered(&shared, &id, Answer::Response(json_or_text(&body)))
}

async fn error(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    body: Bytes,
) -> StatusCode {
    answered(&shared, &id, Answer::Error(json_or_text(&body)))
}

async fn init_error(State(shared): State<Arc<Shared>>, body: Bytes) -> StatusCode {
    *shared.init_error.lock().unwrap() = Some(String::from_utf8_lossy(&body).into_owned());
    StatusCode::ACCEPTED
}

impl RuntimeApi {
    /// Serves the Runtime API for a function named `function` on a free loopback port.
    pub async fn start(function: &str) -> Self {
        let (queue, rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            function: function.to_owned(),
            queue: tokio::sync::Mutex::new(rx),
            waiting: Mutex::default(),
            first_poll: Mutex::default(),
            init_error: Mutex::default(),
        });
        let router = Router::new()
            .route("/2018-06-01/runtime/invocation/next", get(next))
            .route(
                "/2018-06-01/runtime/invocation/{id}/response",
                post(response),
            )
            .route("/2018-06-01/runtime/invocation/{id}/error", post(error))
            .route("/2018-06-01/runtime/init/error", post(init_error))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            axum::serve(listener, router).await.unwrap();
        });
        Self {
            addr,
            queue,
            shared,
            server,
        }
    }

    /// `host:port`, as `AWS_LAMBDA_RUNTIME_API` takes it.
    pub fn address(&self) -> String {
        self.addr.to_string()
    }

    /// Invokes the function with `event`; its answer (within 30 s).
    pub async fn invoke(&self, event: Value) -> Answer {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Pending {
                id: uuid::Uuid::new_v4().to_string(),
                event,
                reply,
            })
            .unwrap();
        match tokio::time::timeout(Duration::from_secs(30), answer).await {
            Ok(Ok(answer)) => answer,
            _ => panic!(
                "no answer within 30 s (init error: {:?})",
                self.shared.init_error.lock().unwrap()
            ),
        }
    }

    /// When the function first asked for an event.
    pub fn first_poll(&self) -> Option<Instant> {
        *self.shared.first_poll.lock().unwrap()
    }

    /// What the function reported failing at start, if it did.
    pub fn init_error(&self) -> Option<String> {
        self.shared.init_error.lock().unwrap().clone()
    }
}

/// The workspace's binaries (built once per test process): name to path.
pub fn binaries() -> &'static HashMap<String, PathBuf> {
    static BINARIES: OnceLock<HashMap<String, PathBuf>> = OnceLock::new();
    BINARIES.get_or_init(|| build(&["--workspace", "--bins"]))
}

/// Builds with cargo; the executables it reports.
pub fn build(args: &[&str]) -> HashMap<String, PathBuf> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = std::process::Command::new(cargo)
        .arg("build")
        .args(args)
        .arg("--message-format=json-render-diagnostics")
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .stderr(std::process::Stdio::inherit())
        .output()
        .expect("cargo runs");
    assert!(output.status.success(), "the build failed");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|m| m["reason"] == "compiler-artifact")
        .filter_map(|m| {
            let path = m["executable"].as_str()?;
            Some((
                m["target"]["name"].as_str()?.to_owned(),
                PathBuf::from(path),
            ))
        })
        .collect()
}

/// The environment Lambda gives a function (without its own settings), with AWS
/// services at `endpoint`.
pub fn lambda_environment(
    api: &RuntimeApi,
    function: &str,
    endpoint: &str,
) -> Vec<(String, String)> {
    [
        ("AWS_LAMBDA_RUNTIME_API", api.address()),
        ("AWS_LAMBDA_FUNCTION_NAME", function.to_owned()),
        ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST".into()),
        ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256".into()),
        (
            "AWS_LAMBDA_LOG_GROUP_NAME",
            format!("/aws/lambda/{function}"),
        ),
        ("AWS_LAMBDA_LOG_STREAM_NAME", "2026/11/25/[$LATEST]0".into()),
        ("AWS_REGION", "us-east-1".into()),
        ("AWS_DEFAULT_REGION", "us-east-1".into()),
        ("AWS_ACCESS_KEY_ID", "test".into()),
        ("AWS_SECRET_ACCESS_KEY", "test".into()),
        ("AWS_ENDPOINT_URL", endpoint.to_owned()),
        ("RUST_LOG", "warn".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

/// A function process; killed when dropped.
pub struct FunctionProcess {
    pub child: tokio::process::Child,
    pub started: Instant,
}

/// Starts the binary `name` with `env` (and nothing of the test's environment but
/// `PATH` and `HOME`).
pub fn start_binary(name: &str, env: &[(String, String)]) -> FunctionProcess {
    let path = binaries()
        .get(name)
        .unwrap_or_else(|| panic!("no binary {name} in the workspace"));
    start_path(path, env)
}

/// Starts an executable with `env`.
pub fn start_path(path: &std::path::Path, env: &[(String, String)]) -> FunctionProcess {
    let mut command = tokio::process::Command::new(path);
    command.env_clear();
    for var in ["PATH", "HOME"] {
        if let Ok(value) = std::env::var(var) {
            command.env(var, value);
        }
    }
    command
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true);
    let started = Instant::now();
    FunctionProcess {
        child: command.spawn().expect("the binary starts"),
        started,
    }
}
