//! How a function binary runs: under the Lambda runtime when `AWS_LAMBDA_RUNTIME_API` is
//! set, else as a plain HTTP server on `$PORT` (Knative and other container platforms).
//! Event-triggered functions on `$PORT` require a shared token ([`internal`]).
//!
//! What every function binary's runtime reads (`PORT`, the shared token, the TLS roots of
//! the AWS SDK) is [`Runtime`], a clap [`clap::Args`] group that [`Function`] puts beside
//! the function's own configuration.

pub mod aws;
pub mod internal;
pub mod tls;

pub use internal::{InternalArgs, InternalAuth};

use axum::Router;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::future::Future;
use tokio::net::TcpListener;

/// The log filter without `RUST_LOG`: `info`, with the internals of the MQTT library
/// (ntex and its crates: `ntex_server`, `ntex_rt`, `ntex_io`, `ntex_mqtt`, ...) at `warn`.
pub const DEFAULT_LOG_FILTER: &str = "info,ntex=warn";

/// Sets up `tracing`: JSON lines under Lambda (CloudWatch), text otherwise (coloured only
/// on a terminal); the filter is `RUST_LOG` when set, else [`DEFAULT_LOG_FILTER`].
pub fn init_tracing() {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_LOG_FILTER));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stdout().is_terminal())
        .with_target(false);
    let _ = if on_lambda() {
        // with a timestamp: Lambda's log-level filtering takes JSON lines without one as INFO
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

/// What every function binary's runtime reads: the port it serves on off Lambda, the
/// shared token of event-triggered functions, and the roots the AWS SDK trusts.
#[derive(Debug, Clone, Default, PartialEq, Eq, clap::Args)]
pub struct Runtime {
    /// The port the function serves HTTP on when not under the Lambda runtime.
    #[arg(long = "port", env = "PORT", value_name = "PORT", default_value_t = DEFAULT_PORT)]
    pub port: u16,
    #[command(flatten)]
    pub internal: InternalArgs,
    #[command(flatten)]
    pub aws: aws::AwsArgs,
}

/// The port served on without `PORT`.
pub const DEFAULT_PORT: u16 = 8080;

impl Runtime {
    /// The AWS SDK configuration, with the roots [`aws::AwsArgs`] chooses.
    pub async fn aws_config(&self) -> aws_config::SdkConfig {
        aws::config(self.aws.roots()).await
    }
}

/// A function binary's whole configuration: the function's own (`C`) and its
/// [`Runtime`]'s, parsed once in `main` with [`Function::parse`].
#[derive(Debug, Clone, clap::Parser)]
#[command(about = None, long_about = None)]
pub struct Function<C: clap::Args> {
    #[command(flatten)]
    pub config: C,
    #[command(flatten)]
    pub runtime: Runtime,
}

impl<C: clap::Args> Function<C> {
    /// From the process's arguments and environment (see [`crate::config::parse`]); an
    /// error names the flag and the variable.
    pub fn parse() -> anyhow::Result<Self> {
        crate::config::parse()
    }
}

/// Runs a function binary's `main` to its end on a tokio runtime made for where it runs.
/// Under the Lambda runtime, a function handles one invocation at a time: its runtime is
/// the calling thread alone (no worker threads to start before the first poll, a
/// measurable share of a cold start, see BENCHMARKS.md); elsewhere it serves concurrent
/// requests on a multi-threaded runtime, one worker per core.
pub fn block_on<F: Future>(main: F) -> F::Output {
    let mut builder = if on_lambda() {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    builder
        .enable_all()
        .build()
        .expect("a tokio runtime (its I/O driver and timer)")
        .block_on(main)
}

/// Whether the Lambda runtime started this process.
pub fn on_lambda() -> bool {
    std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_some()
}

/// Runs `router` under the Lambda runtime, or on `0.0.0.0:$PORT` (default 8080).
pub async fn run(runtime: &Runtime, router: Router) -> anyhow::Result<()> {
    if on_lambda() {
        return lambda_http::run(router)
            .await
            .map_err(|e| anyhow::anyhow!(e));
    }
    let listener = TcpListener::bind(("0.0.0.0", runtime.port)).await?;
    tracing::info!(address = %listener.local_addr()?, "serving HTTP");
    serve(listener, router, shutdown_signal()).await
}

/// What an event function knows about its invocation.
#[derive(Debug, Clone, Default)]
pub struct EventContext {
    /// The invoked function's ARN, under Lambda (`arn:<partition>:lambda:<region>:<account>:function:<name>`).
    pub function_arn: Option<String>,
}

impl EventContext {
    /// (partition, region, account) from the function's ARN, or wildcards.
    pub fn arn_parts(&self) -> (String, String, String) {
        let parts: Vec<&str> = self
            .function_arn
            .as_deref()
            .unwrap_or_default()
            .split(':')
            .collect();
        match parts.as_slice() {
            ["arn", partition, "lambda", region, account, ..] => (
                partition.to_string(),
                region.to_string(),
                account.to_string(),
            ),
            _ => ("aws".into(), "*".into(), "*".into()),
        }
    }
}

/// Runs a function that takes JSON events (IoT authorizer requests, IoT rule messages,
/// stream records): under the Lambda runtime, or on `$PORT` as `POST /` with the event as
/// body (for Knative and tests). The handler takes its event typed (`E`) and answers a
/// typed outcome (`R`), serialized as the function's answer.
///
/// An event that is not an `E` is logged and is a function error, as is a handler's `Err`:
/// the caller (IoT Core, the event source) treats the event as failed (retries it, or
/// hands it to its error action or dead-letter queue); on `$PORT` it is a 500 with a JSON
/// error body.
///
/// On `$PORT` every request must carry `Authorization: Bearer <DROGUE_INTERNAL_TOKEN>`
/// (see [`internal`]); without a token configured this fails before serving unless
/// `DROGUE_INTERNAL_INSECURE=true`. Under Lambda, IAM guards the invocation instead.
pub async fn run_events<E, R, Err, F, Fut>(runtime: &Runtime, handler: F) -> anyhow::Result<()>
where
    E: DeserializeOwned + Send + 'static,
    R: Serialize + Send + 'static,
    Err: std::error::Error + Send + Sync + 'static,
    F: Fn(E, EventContext) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<R, Err>> + Send + 'static,
{
    if on_lambda() {
        let service = lambda_runtime::service_fn(
            move |event: lambda_runtime::LambdaEvent<serde_json::Value>| {
                let handler = handler.clone();
                async move {
                    let context = EventContext {
                        function_arn: Some(event.context.invoked_function_arn.clone()),
                    };
                    handle_event(&handler, event.payload, context)
                        .await
                        .map_err(|e| -> lambda_runtime::Error { e.into() })
                }
            },
        );
        return lambda_runtime::run(service)
            .await
            .map_err(|e| anyhow::anyhow!(e));
    }
    let auth = runtime.internal.auth()?;
    run(runtime, auth.protect(event_router(handler))).await
}

/// Why an event function failed an event.
#[derive(Debug, thiserror::Error)]
pub enum EventError<Err: std::error::Error + 'static> {
    /// The event is not of the type the function takes.
    #[error("the event is not the function's event type: {0}")]
    BadEvent(#[source] serde_json::Error),
    /// The handler failed.
    #[error(transparent)]
    Handler(Err),
    /// The handler's answer does not serialize.
    #[error("the answer does not serialize: {0}")]
    Answer(#[source] serde_json::Error),
}

/// Deserializes `event` as the handler's event type, runs the handler and serializes its
/// answer; a bad event is logged.
pub async fn handle_event<E, R, Err, F, Fut>(
    handler: &F,
    event: serde_json::Value,
    context: EventContext,
) -> Result<serde_json::Value, EventError<Err>>
where
    E: DeserializeOwned,
    R: Serialize,
    Err: std::error::Error + 'static,
    F: Fn(E, EventContext) -> Fut,
    Fut: Future<Output = Result<R, Err>>,
{
    let event: E = serde_json::from_value(event).map_err(|e| {
        tracing::error!(error = %e, "an event the function does not take");
        EventError::BadEvent(e)
    })?;
    let answer = handler(event, context).await.map_err(EventError::Handler)?;
    serde_json::to_value(answer).map_err(EventError::Answer)
}

/// `POST /` with a JSON event, answered by `handler` (the `$PORT` form of an event function).
/// Unauthenticated: [`run_events`] serves it behind [`InternalAuth::protect`].
pub fn event_router<E, R, Err, F, Fut>(handler: F) -> Router
where
    E: DeserializeOwned + Send + 'static,
    R: Serialize + Send + 'static,
    Err: std::error::Error + Send + Sync + 'static,
    F: Fn(E, EventContext) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<R, Err>> + Send + 'static,
{
    use axum::http::StatusCode;
    use axum::response::IntoResponse;
    let route = axum::routing::post(
        move |crate::http::JsonBody(event): crate::http::JsonBody<serde_json::Value>| {
            let handler = handler.clone();
            async move {
                match handle_event(&handler, event, EventContext::default()).await {
                    Ok(answer) => axum::Json(answer).into_response(),
                    Err(e) => {
                        tracing::error!(error = %e, "the event failed");
                        let body = serde_json::json!({"error": "FunctionError", "message": "the event could not be handled"});
                        (StatusCode::INTERNAL_SERVER_ERROR, axum::Json(body)).into_response()
                    }
                }
            }
        },
    );
    Router::new().route("/", route)
}

/// How long a client may take to send a request's line and headers before its connection
/// is closed; a kept-alive connection may idle as long between requests.
pub const HEADER_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Serves `router` on `listener` until `shutdown` completes, then drains open requests.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    serve_with(listener, router, shutdown, HEADER_READ_TIMEOUT).await
}

/// [`serve`] with another header read timeout.
pub async fn serve_with(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
    header_read_timeout: std::time::Duration,
) -> anyhow::Result<()> {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let builder = http_builder(header_read_timeout);
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // out of file descriptors and the like: wait rather than spin
                    tracing::warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = tcp.set_nodelay(true);
        let connection = builder
            .serve_connection_with_upgrades(
                hyper_util::rt::TokioIo::new(tcp),
                hyper_service(router.clone()),
            )
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(%peer, error = %e, "HTTP connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// The connection builder of the HTTP(S) listeners: HTTP/1.1 (and HTTP/2 with prior
/// knowledge) with a header read timeout.
pub(crate) fn http_builder(
    header_read_timeout: std::time::Duration,
) -> hyper_util::server::conn::auto::Builder<hyper_util::rt::TokioExecutor> {
    let mut builder =
        hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
    builder
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(header_read_timeout);
    builder
}

/// A router as a hyper service.
pub(crate) fn hyper_service(
    router: Router,
) -> hyper_util::service::TowerToHyperService<
    impl tower::Service<
        hyper::Request<hyper::body::Incoming>,
        Response = axum::response::Response,
        Error = std::convert::Infallible,
        Future = impl Send,
    > + Clone
    + Send,
> {
    use tower::ServiceExt;
    hyper_util::service::TowerToHyperService::new(router.map_request(
        |request: hyper::Request<hyper::body::Incoming>| request.map(axum::body::Body::new),
    ))
}

/// Completes on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = interrupt => {},
        _ = terminate => {},
    }
    tracing::info!("shutting down");
}

#[cfg(test)]
mod event_tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    struct Ping {
        n: u32,
    }

    #[derive(Debug, Serialize)]
    struct Pong {
        n: u32,
    }

    #[derive(Debug)]
    struct TooBig;

    impl std::fmt::Display for TooBig {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("too big")
        }
    }

    impl std::error::Error for TooBig {}

    async fn pong(ping: Ping, _: EventContext) -> Result<Pong, TooBig> {
        if ping.n > 9 {
            return Err(TooBig);
        }
        Ok(Pong { n: ping.n + 1 })
    }

    #[tokio::test]
    async fn events_are_typed_in_and_out_and_bad_ones_are_function_errors() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, event_router(pong), async {
            let _ = stopped.await;
        }));
        let client = reqwest::Client::new();
        let post = |body: serde_json::Value| client.post(&url).json(&body).send();

        let answer = post(serde_json::json!({"n": 1})).await.unwrap();
        assert_eq!(answer.status(), 200);
        let answer: serde_json::Value = answer.json().await.unwrap();
        assert_eq!(answer, serde_json::json!({"n": 2}));

        for failing in [
            serde_json::json!({"n": "one"}),
            serde_json::json!(["not", "a", "ping"]),
            serde_json::json!({"n": 10}),
        ] {
            let answer = post(failing.clone()).await.unwrap();
            assert_eq!(answer.status(), 500, "{failing}");
            let body: serde_json::Value = answer.json().await.unwrap();
            assert_eq!(body["error"], "FunctionError", "{failing}");
        }

        let bad = handle_event(&pong, serde_json::json!({}), EventContext::default()).await;
        assert!(matches!(bad, Err(EventError::BadEvent(_))));
        let failed =
            handle_event(&pong, serde_json::json!({"n": 10}), EventContext::default()).await;
        assert!(matches!(failed, Err(EventError::Handler(TooBig))));

        stop.send(()).unwrap();
        server.await.unwrap().unwrap();
    }
}
