//! How a function binary runs: under the Lambda runtime when `AWS_LAMBDA_RUNTIME_API` is
//! set, else as a plain HTTP server on `$PORT` (Knative and other container platforms).

pub mod tls;

use axum::Router;
use std::future::Future;
use tokio::net::TcpListener;

/// Sets up `tracing`: JSON lines under Lambda (CloudWatch), text otherwise; the level
/// comes from `RUST_LOG` (default `info`).
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false);
    let _ = if on_lambda() {
        builder.json().without_time().try_init()
    } else {
        builder.try_init()
    };
}

/// Whether the Lambda runtime started this process.
pub fn on_lambda() -> bool {
    std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_some()
}

/// Runs `router` under the Lambda runtime, or on `0.0.0.0:$PORT` (default 8080).
pub async fn run(router: Router) -> anyhow::Result<()> {
    if on_lambda() {
        return lambda_http::run(router)
            .await
            .map_err(|e| anyhow::anyhow!(e));
    }
    let port: u16 = match std::env::var("PORT") {
        Ok(port) => port
            .parse()
            .map_err(|_| anyhow::anyhow!("PORT must be a port number, got {port:?}"))?,
        Err(_) => 8080,
    };
    let listener = TcpListener::bind(("0.0.0.0", port)).await?;
    tracing::info!(address = %listener.local_addr()?, "serving HTTP");
    serve(listener, router, shutdown_signal()).await
}

/// Serves `router` on `listener` until `shutdown` completes, then drains open requests.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await?;
    Ok(())
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
