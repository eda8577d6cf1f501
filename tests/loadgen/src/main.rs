//! `drogue-loadgen run`: requests over N keep-alive HTTP/1.1 connections for a while,
//! then the throughput and latency percentiles.
//! `drogue-loadgen bare-server`: the baseline, a bare `hyper` server answering a fixed
//! status with an empty body.

use anyhow::Context;
use base64::Engine;
use bytes::Bytes;
use clap::{Parser, Subcommand};
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};

#[derive(Parser)]
#[command(about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Load a URL with requests: GET, or POST with `--body`.
    Run {
        url: Uri,
        #[arg(long, default_value_t = 16)]
        connections: usize,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// `user:password` for Basic authentication; repeat it to spread the connections
        /// over several users (connection i uses the i-th, round robin).
        #[arg(long)]
        basic: Vec<String>,
        /// POST this body (as `application/json`) instead of GETting.
        #[arg(long)]
        body: Option<String>,
    },
    /// Answer every request with 200 (or 202 with `--accepted`) and an empty body.
    BareServer {
        #[arg(long, default_value = "127.0.0.1:18081")]
        bind: String,
        #[arg(long)]
        accepted: bool,
    },
}

/// What one load run sends.
struct Load {
    url: Uri,
    authority: String,
    authorizations: Vec<String>,
    body: Option<Bytes>,
}

fn main() -> anyhow::Result<()> {
    let rt = tokio::runtime::Runtime::new()?;
    match Cli::parse().command {
        Command::Run {
            url,
            connections,
            seconds,
            basic,
            body,
        } => {
            let load = Load {
                authority: url.authority().context("the URL needs a host")?.to_string(),
                url,
                authorizations: basic
                    .iter()
                    .map(|b| {
                        format!(
                            "Basic {}",
                            base64::engine::general_purpose::STANDARD.encode(b)
                        )
                    })
                    .collect(),
                body: body.map(Bytes::from),
            };
            rt.block_on(run(std::sync::Arc::new(load), connections, seconds))
        }
        Command::BareServer { bind, accepted } => {
            let status = if accepted {
                StatusCode::ACCEPTED
            } else {
                StatusCode::OK
            };
            rt.block_on(bare_server(bind, status))
        }
    }
}

/// One connection's requests until the deadline: latencies and failures.
async fn connection(
    load: std::sync::Arc<Load>,
    index: usize,
    deadline: Instant,
) -> anyhow::Result<(Vec<Duration>, u64)> {
    let authorization = (!load.authorizations.is_empty())
        .then(|| load.authorizations[index % load.authorizations.len()].clone());
    let stream = TcpStream::connect(&load.authority).await?;
    stream.set_nodelay(true)?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let (mut latencies, mut failures) = (Vec::new(), 0u64);
    while Instant::now() < deadline {
        let mut request = match &load.body {
            Some(_) => Request::post(load.url.clone()).header("content-type", "application/json"),
            None => Request::get(load.url.clone()),
        }
        .header("host", &load.authority);
        if let Some(auth) = &authorization {
            request = request.header("authorization", auth);
        }
        let started = Instant::now();
        let payload = Full::new(load.body.clone().unwrap_or_default());
        let response = sender.send_request(request.body(payload)?).await?;
        let ok = response.status().is_success();
        response.into_body().collect().await?;
        latencies.push(started.elapsed());
        failures += u64::from(!ok);
    }
    Ok((latencies, failures))
}

async fn run(load: std::sync::Arc<Load>, connections: usize, seconds: u64) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let workers: Vec<_> = (0..connections)
        .map(|i| tokio::spawn(connection(load.clone(), i, deadline)))
        .collect();
    let (mut all, mut failures) = (Vec::new(), 0);
    for worker in workers {
        let (latencies, failed) = worker.await??;
        all.extend(latencies);
        failures += failed;
    }
    anyhow::ensure!(!all.is_empty(), "no request was answered");
    all.sort();
    let pct = |p: f64| all[((all.len() as f64 * p) as usize).min(all.len() - 1)];
    println!(
        "{}: {} requests in {seconds} s over {connections} connections: {:.0} req/s; latency p50 {:?} p99 {:?}; {failures} not 2xx",
        load.url,
        all.len(),
        all.len() as f64 / seconds as f64,
        pct(0.50),
        pct(0.99),
    );
    anyhow::ensure!(failures == 0, "{failures} requests failed");
    Ok(())
}

async fn bare_server(bind: String, status: StatusCode) -> anyhow::Result<()> {
    let listener = TcpListener::bind(&bind).await?;
    println!("bare server on {}", listener.local_addr()?);
    loop {
        let (stream, _) = listener.accept().await?;
        stream.set_nodelay(true)?;
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |_request| async move {
                let mut response = Response::new(Full::new(Bytes::new()));
                *response.status_mut() = status;
                Ok::<_, Infallible>(response)
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
