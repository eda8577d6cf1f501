//! `drogue-loadgen run`: requests over N keep-alive HTTP/1.1 connections for a while,
//! then the throughput and latency percentiles; with `--by-id`, every acknowledged
//! request is then looked up among an application's events (see `byid.rs`).
//! `drogue-loadgen mqtt`: MQTT devices connect, then publish to subscribed applications
//! (see `mqtt.rs`).
//! `drogue-loadgen catch-up`: a resuming consumer's catch-up rate (see `catchup.rs`).
//! `drogue-loadgen coap`: CoAP clients publishing (see `coap.rs`); `bare-udp` its baseline.
//! `drogue-loadgen bare-server`: the baseline, a bare `hyper` server answering a fixed
//! status with an empty body.

mod byid;
mod catchup;
mod coap;
mod mqtt;

use anyhow::Context;
use base64::Engine;
use bytes::Bytes;
use clap::{Parser, Subcommand};
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};

#[derive(Parser)]
#[command(about)]
struct Cli {
    #[command(subcommand)]
    command: Mode,
}

#[derive(Subcommand)]
enum Mode {
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
        /// Number each request: the body (a JSON object) also carries the connection's
        /// index and the request's number (`"lg_d"`, `"lg_n"`).
        #[arg(long, requires = "body")]
        numbered: bool,
        /// `host:port` of the MQTT broker where an application receives the events of
        /// the requests: an MQTT 5 persistent session subscribes to `--filter` before the
        /// run and reads back after it every event it missed; every acknowledged request
        /// must be among them, by id. Implies `--numbered`.
        #[arg(long, requires_all = ["body", "subscriber"])]
        by_id: Option<String>,
        /// The application's `user:token` (with `--by-id`).
        #[arg(long)]
        subscriber: Option<String>,
        /// What the application subscribes to (with `--by-id`).
        #[arg(long, default_value = "app/bench")]
        filter: String,
        /// With `--by-id`: the application's session stays connected through the run
        /// and receives the events as they come; the events it received by the run's
        /// end are reported as a rate.
        #[arg(long, requires = "by_id")]
        live: bool,
    },
    /// Measure the time from a command's drop-off to its arrival at a device that
    /// long-polls over HTTP.
    CommandLatency {
        /// The base URL of the API and the device endpoint.
        base: String,
        /// `user:token` of someone who may send commands.
        #[arg(long)]
        token: String,
        /// `device@app:password` of the polling device.
        #[arg(long)]
        device: String,
        #[arg(long, default_value_t = 1000)]
        count: usize,
    },
    /// MQTT devices connect (the connect rate; with `--rss-pid`, the broker's memory per
    /// connection), then publish telemetry; one or more applications subscribe. Messages
    /// per second delivered to them, every acknowledged one looked up by id.
    Mqtt(mqtt::MqttLoad),
    /// A persistent MQTT session misses `count` events and catches up: events per second
    /// from the log.
    CatchUp {
        /// `host:port` of the broker.
        broker: String,
        /// `host:port` of the HTTP endpoint.
        http: String,
        /// The application's `user:token`.
        #[arg(long)]
        subscriber: String,
        /// `device@app:password` of the publishing device.
        #[arg(long)]
        device: String,
        #[arg(long, default_value = "bench")]
        app: String,
        #[arg(long, default_value_t = 10_000)]
        count: usize,
    },
    /// CoAP clients (one peer each) publish with confirmable POSTs, one at a time: the
    /// rate of 2.04 answers (with `--echo`, of requests echoed back by `bare-udp`).
    Coap {
        /// `host:port` of the CoAP endpoint (UDP).
        target: SocketAddr,
        #[arg(long, default_value_t = 16)]
        clients: usize,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// `device@app:password`, sent in option 4209.
        #[arg(long, default_value = "device1@bench:secret1")]
        device: String,
        #[arg(long, default_value = "telemetry")]
        channel: String,
        #[arg(long, default_value = "{\"temp\":21.5}")]
        payload: String,
        /// The target is `bare-udp`: count echoed requests.
        #[arg(long)]
        echo: bool,
        /// CoAP over DTLS with this pre-shared key: `device@app:key` (the device's
        /// `psk` credential); `--device` is then not sent.
        #[arg(long, conflicts_with = "echo")]
        psk: Option<String>,
        /// `host:port` of the MQTT broker where an application receives the events: as
        /// `run --by-id`, every request answered 2.04 must be among them, by id (the
        /// payload, a JSON object, then carries the client's index and the request's
        /// number).
        #[arg(long, requires = "subscriber", conflicts_with = "echo")]
        by_id: Option<String>,
        /// The application's `user:token` (with `--by-id`).
        #[arg(long)]
        subscriber: Option<String>,
        /// What the application subscribes to (with `--by-id`).
        #[arg(long, default_value = "app/bench")]
        filter: String,
    },
    /// Send every UDP datagram back to its sender.
    BareUdp {
        #[arg(long, default_value = "127.0.0.1:15683")]
        bind: String,
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
    /// Whether each body carries the connection's index and the request's number.
    numbered: bool,
}

impl Load {
    /// The body of request `n` of connection `index`.
    fn body(&self, index: usize, n: u64) -> Bytes {
        match &self.body {
            Some(body) if self.numbered => Bytes::from(byid::numbered(body, index, n)),
            Some(body) => body.clone(),
            None => Bytes::new(),
        }
    }
}

fn main() -> anyhow::Result<()> {
    let rt = tokio::runtime::Runtime::new()?;
    match Cli::parse().command {
        Mode::Run {
            url,
            connections,
            seconds,
            basic,
            body,
            numbered,
            by_id,
            subscriber,
            filter,
            live,
        } => {
            if let Some(body) = &body {
                anyhow::ensure!(
                    !(numbered || by_id.is_some()) || body.trim_start().starts_with('{'),
                    "--numbered and --by-id take a JSON object as --body"
                );
            }
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
                numbered: numbered || by_id.is_some(),
            };
            rt.block_on(async move {
                let verifier = match (&by_id, &subscriber) {
                    (Some(broker), Some(subscriber)) => {
                        Some(byid::Verifier::subscribe(broker, subscriber, &filter, live).await?)
                    }
                    _ => None,
                };
                let acknowledged = run(std::sync::Arc::new(load), connections, seconds).await?;
                if let Some(received) = verifier.as_ref().and_then(byid::Verifier::received_live) {
                    println!(
                        "live: {received} events received by the application during the run, {:.0}/s",
                        received as f64 / seconds as f64
                    );
                }
                match verifier {
                    Some(verifier) => verifier.check(&acknowledged).await,
                    None => Ok(()),
                }
            })
        }
        Mode::CommandLatency {
            base,
            token,
            device,
            count,
        } => rt.block_on(command_latency(base, token, device, count)),
        Mode::Mqtt(load) => rt.block_on(mqtt::run(load)),
        Mode::CatchUp {
            broker,
            http,
            subscriber,
            device,
            app,
            count,
        } => rt.block_on(catchup::run(catchup::CatchUp {
            broker,
            http,
            subscriber,
            device,
            app,
            count,
        })),
        Mode::Coap {
            target,
            clients,
            seconds,
            device,
            channel,
            payload,
            echo,
            psk,
            by_id,
            subscriber,
            filter,
        } => {
            let numbered = by_id.is_some();
            anyhow::ensure!(
                !numbered || payload.trim_start().starts_with('{'),
                "--by-id takes a JSON object as --payload"
            );
            let verifier = match (&by_id, &subscriber) {
                (Some(broker), Some(subscriber)) => Some(rt.block_on(
                    byid::Verifier::subscribe(broker, subscriber, &filter, false),
                )?),
                _ => None,
            };
            let acknowledged = match psk {
                Some(psk) => {
                    coap::run_dtls(target, clients, seconds, &psk, &channel, &payload, numbered)?
                }
                None => rt.block_on(coap::run(
                    target, clients, seconds, &device, &channel, &payload, echo, numbered,
                ))?,
            };
            match verifier {
                Some(verifier) => rt.block_on(verifier.check(&acknowledged)),
                None => Ok(()),
            }
        }
        Mode::BareUdp { bind } => rt.block_on(coap::bare_udp(&bind)),
        Mode::BareServer { bind, accepted } => {
            let status = if accepted {
                StatusCode::ACCEPTED
            } else {
                StatusCode::OK
            };
            rt.block_on(bare_server(bind, status))
        }
    }
}

/// One connection's requests until the deadline: latencies, failures and the numbers of
/// the acknowledged requests.
async fn connection(
    load: std::sync::Arc<Load>,
    index: usize,
    deadline: Instant,
) -> anyhow::Result<(Vec<Duration>, u64, Vec<u64>)> {
    let authorization = (!load.authorizations.is_empty())
        .then(|| load.authorizations[index % load.authorizations.len()].clone());
    let stream = TcpStream::connect(&load.authority).await?;
    stream.set_nodelay(true)?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let (mut latencies, mut failures, mut acknowledged) = (Vec::new(), 0u64, Vec::new());
    let mut n = 0;
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
        let payload = Full::new(load.body(index, n));
        let response = sender.send_request(request.body(payload)?).await?;
        let ok = response.status().is_success();
        response.into_body().collect().await?;
        latencies.push(started.elapsed());
        failures += u64::from(!ok);
        if ok && load.numbered {
            acknowledged.push(n);
        }
        n += 1;
    }
    Ok((latencies, failures, acknowledged))
}

/// The run; per connection, the numbers of its acknowledged requests (when numbered).
async fn run(
    load: std::sync::Arc<Load>,
    connections: usize,
    seconds: u64,
) -> anyhow::Result<Vec<Vec<u64>>> {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let workers: Vec<_> = (0..connections)
        .map(|i| tokio::spawn(connection(load.clone(), i, deadline)))
        .collect();
    let (mut all, mut failures, mut acknowledged) = (Vec::new(), 0, Vec::new());
    for worker in workers {
        let (latencies, failed, numbers) = worker.await??;
        all.extend(latencies);
        failures += failed;
        acknowledged.push(numbers);
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
    Ok(acknowledged)
}

/// One HTTP/1.1 keep-alive connection.
struct Connection {
    authority: String,
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
}

impl Connection {
    async fn open(base: &Uri) -> anyhow::Result<Self> {
        let authority = base
            .authority()
            .context("the URL needs a host")?
            .to_string();
        let stream = TcpStream::connect(&authority).await?;
        stream.set_nodelay(true)?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        Ok(Self { authority, sender })
    }

    async fn post(
        &mut self,
        path: &str,
        basic: &str,
        body: &'static str,
    ) -> anyhow::Result<(StatusCode, hyper::HeaderMap)> {
        let request = Request::post(path)
            .header("host", &self.authority)
            .header(
                "authorization",
                format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(basic)
                ),
            )
            .body(Full::new(Bytes::from_static(body.as_bytes())))?;
        let response = self.sender.send_request(request).await?;
        let (parts, body) = response.into_parts();
        body.collect().await?;
        Ok((parts.status, parts.headers))
    }
}

async fn command_latency(
    base: String,
    token: String,
    device: String,
    count: usize,
) -> anyhow::Result<()> {
    let base: Uri = base.parse()?;
    let (name, app) = device
        .split_once(':')
        .and_then(|(id, _)| id.split_once('@'))
        .context("--device takes device@app:password")?;
    let drop_off_path = format!("/api/command/v1alpha1/apps/{app}/devices/{name}?command=bench");
    let (arrived, mut arrivals) = tokio::sync::mpsc::unbounded_channel();
    let poller = {
        let (base, device) = (base.clone(), device.clone());
        tokio::spawn(async move {
            let mut connection = Connection::open(&base).await?;
            loop {
                let (status, headers) = connection
                    .post("/v1/telemetry?ct=10", &device, "{}")
                    .await?;
                if status == StatusCode::OK {
                    let request = headers
                        .get("request")
                        .and_then(|r| r.to_str().ok())
                        .unwrap_or_default()
                        .to_owned();
                    if arrived.send((Instant::now(), request)).is_err() {
                        return anyhow::Ok(());
                    }
                }
            }
        })
    };
    let mut dropper = Connection::open(&base).await?;
    let mut latencies = Vec::with_capacity(count);
    for _ in 0..count {
        // let the device's next poll start waiting
        tokio::time::sleep(Duration::from_millis(3)).await;
        let sent = Instant::now();
        let (status, headers) = dropper.post(&drop_off_path, &token, "{\"n\":1}").await?;
        anyhow::ensure!(status == StatusCode::ACCEPTED, "drop-off answered {status}");
        let request = headers
            .get("request")
            .and_then(|r| r.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let (at, delivered) = tokio::time::timeout(Duration::from_secs(15), arrivals.recv())
            .await?
            .context("the poller stopped")?;
        anyhow::ensure!(
            delivered == request,
            "delivered {delivered}, expected {request}"
        );
        latencies.push(at.saturating_duration_since(sent));
    }
    poller.abort();
    latencies.sort();
    let pct = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
    println!(
        "drop-off to device over an HTTP long poll, {count} commands: p50 {:?} p99 {:?} max {:?}",
        pct(0.50),
        pct(0.99),
        latencies[latencies.len() - 1],
    );
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
