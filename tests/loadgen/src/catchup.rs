//! `drogue-loadgen catch-up`: how fast a resuming consumer catches up from the event log.
//! An application's MQTT 5 persistent session subscribes to `app/{app}` at QoS 1 and
//! disconnects; devices publish `count` events over HTTP; the session reconnects, and the
//! time from its CONNACK to the last of the missed events gives the catch-up rate.

use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::Packet;
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

pub struct CatchUp {
    /// `host:port` of the broker.
    pub broker: String,
    /// `host:port` of the HTTP endpoint.
    pub http: String,
    /// The application's `user:token`.
    pub subscriber: String,
    /// `device@app:password` of the publishing device.
    pub device: String,
    pub app: String,
    pub count: usize,
}

fn session(load: &CatchUp) -> anyhow::Result<MqttOptions> {
    let (user, token) = load
        .subscriber
        .split_once(':')
        .ok_or_else(|| anyhow::anyhow!("the subscriber is user:token"))?;
    let (host, port) = load
        .broker
        .rsplit_once(':')
        .ok_or_else(|| anyhow::anyhow!("the broker is host:port"))?;
    let mut options = MqttOptions::new(format!("{user}/catch-up"), host, port.parse()?);
    options.set_credentials(user, token);
    options.set_keep_alive(Duration::from_secs(30));
    options.set_clean_start(false);
    options.set_session_expiry_interval(Some(3600));
    Ok(options)
}

/// Publishes `count` events over `connections` keep-alive connections.
async fn publish(load: &CatchUp, connections: usize) -> anyhow::Result<()> {
    let (user, password) = load
        .device
        .rsplit_once(':')
        .ok_or_else(|| anyhow::anyhow!("the device is device@app:password"))?;
    let authorization = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    );
    let mut tasks = Vec::new();
    for c in 0..connections {
        let share = load.count / connections + usize::from(c < load.count % connections);
        let (http, authorization) = (load.http.clone(), authorization.clone());
        tasks.push(tokio::spawn(async move {
            let stream = TcpStream::connect(&http).await?;
            stream.set_nodelay(true)?;
            let (mut sender, conn) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
            tokio::spawn(conn);
            for i in 0..share {
                let request = Request::post(format!("http://{http}/v1/telemetry"))
                    .header("host", &http)
                    .header("authorization", &authorization)
                    .header("content-type", "application/json")
                    .body(Full::new(Bytes::from(format!("{{\"c\":{c},\"i\":{i}}}"))))?;
                let response = sender.send_request(request).await?;
                anyhow::ensure!(
                    response.status().as_u16() == 202,
                    "publish answered {}",
                    response.status()
                );
                response.into_body().collect().await?;
            }
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    Ok(())
}

pub async fn run(load: CatchUp) -> anyhow::Result<()> {
    // the session, subscribed, then away
    let (client, mut events) = AsyncClient::new(session(&load)?, 1000);
    client
        .subscribe(format!("app/{}", load.app), QoS::AtLeastOnce)
        .await?;
    loop {
        if let Event::Incoming(Packet::SubAck(_)) = events.poll().await? {
            break;
        }
    }
    client.disconnect().await?;
    while events.poll().await.is_ok() {}

    let started = Instant::now();
    publish(&load, 8).await?;
    let published = started.elapsed();
    println!(
        "published {} events in {:.2} s ({:.0}/s)",
        load.count,
        published.as_secs_f64(),
        load.count as f64 / published.as_secs_f64()
    );

    let (_client, mut events) = AsyncClient::new(session(&load)?, 10_000);
    let mut received = 0usize;
    let mut connected = None;
    while received < load.count {
        match tokio::time::timeout(Duration::from_secs(10), events.poll()).await {
            Ok(Ok(Event::Incoming(Packet::ConnAck(ack)))) => {
                anyhow::ensure!(ack.session_present, "the session was not kept");
                connected = Some(Instant::now());
            }
            Ok(Ok(Event::Incoming(Packet::Publish(p)))) => {
                // telemetry only (registry and connection events are not counted)
                if p.payload.windows(19).any(|w| w == b"io.drogue.event.v1\"") {
                    received += 1;
                }
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => anyhow::bail!("the connection failed: {e}"),
            Err(_) => anyhow::bail!("only {received} of {} events came back", load.count),
        }
    }
    let took = connected
        .map(|c| c.elapsed())
        .ok_or_else(|| anyhow::anyhow!("no CONNACK"))?;
    println!(
        "caught up {received} events in {:.2} s: {:.0} events/s from the log",
        took.as_secs_f64(),
        received as f64 / took.as_secs_f64()
    );
    Ok(())
}
