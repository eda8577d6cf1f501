//! `drogue-loadgen run`: GET requests over N keep-alive HTTP/1.1 connections for a while,
//! then the throughput and latency percentiles.
//! `drogue-loadgen bare-server`: the baseline, a bare `hyper` server answering a fixed 200.

use anyhow::Context;
use base64::Engine;
use bytes::Bytes;
use clap::{Parser, Subcommand};
use http_body_util::{BodyExt, Empty, Full};
use hyper::{Request, Response, Uri};
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
    /// Load a URL with GET requests.
    Run {
        url: Uri,
        #[arg(long, default_value_t = 16)]
        connections: usize,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// `user:password` for Basic authentication.
        #[arg(long)]
        basic: Option<String>,
    },
    /// Answer every request with a fixed 200.
    BareServer {
        #[arg(long, default_value = "127.0.0.1:18081")]
        bind: String,
    },
}

fn main() -> anyhow::Result<()> {
    let rt = tokio::runtime::Runtime::new()?;
    match Cli::parse().command {
        Command::Run {
            url,
            connections,
            seconds,
            basic,
        } => rt.block_on(run(url, connections, seconds, basic)),
        Command::BareServer { bind } => rt.block_on(bare_server(bind)),
    }
}

async fn run(
    url: Uri,
    connections: usize,
    seconds: u64,
    basic: Option<String>,
) -> anyhow::Result<()> {
    let authority = url.authority().context("the URL needs a host")?.to_string();
    let auth = basic.map(|b| {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(b)
        )
    });
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut workers = Vec::new();
    for _ in 0..connections {
        let (url, authority, auth) = (url.clone(), authority.clone(), auth.clone());
        workers.push(tokio::spawn(async move {
            let stream = TcpStream::connect(&authority).await?;
            stream.set_nodelay(true)?;
            let (mut sender, conn) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
            tokio::spawn(conn);
            let mut latencies = Vec::new();
            let mut failures = 0u64;
            while Instant::now() < deadline {
                let mut request = Request::get(url.clone()).header("host", &authority);
                if let Some(auth) = &auth {
                    request = request.header("authorization", auth);
                }
                let started = Instant::now();
                let response = sender
                    .send_request(request.body(Empty::<Bytes>::new())?)
                    .await?;
                let ok = response.status().is_success();
                response.into_body().collect().await?;
                latencies.push(started.elapsed());
                failures += u64::from(!ok);
            }
            anyhow::Ok((latencies, failures))
        }));
    }
    let (mut all, mut failures) = (Vec::new(), 0);
    for worker in workers {
        let (latencies, failed) = worker.await??;
        all.extend(latencies);
        failures += failed;
    }
    all.sort();
    let pct = |p: f64| all[((all.len() as f64 * p) as usize).min(all.len() - 1)];
    println!(
        "{url}: {} requests in {seconds} s over {connections} connections: {:.0} req/s; latency p50 {:?} p99 {:?}; {failures} not 2xx",
        all.len(),
        all.len() as f64 / seconds as f64,
        pct(0.50),
        pct(0.99),
    );
    anyhow::ensure!(failures == 0, "{failures} requests failed");
    Ok(())
}

async fn bare_server(bind: String) -> anyhow::Result<()> {
    let listener = TcpListener::bind(&bind).await?;
    println!("bare server on {}", listener.local_addr()?);
    loop {
        let (stream, _) = listener.accept().await?;
        stream.set_nodelay(true)?;
        tokio::spawn(async move {
            let service = hyper::service::service_fn(|_req| async {
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
