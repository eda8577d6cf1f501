//! `drogue-loadgen run --by-id BROKER` and `coap --by-id BROKER`: every HTTP or CoAP
//! request the endpoint acknowledged (2xx, 2.04) is looked up, by id, among the events an
//! application receives afterwards.
//!
//! Before the load, an application's MQTT 5 persistent session subscribes to `--filter`
//! at QoS 1 and disconnects, so the run itself pays nothing for delivery; each request's
//! JSON body carries its connection's index and its number (`"lg_d"`, `"lg_n"`, as the
//! MQTT load's messages do). After the load the session reconnects and receives what it
//! missed from the event log until every acknowledged request's event came or nothing
//! came for a while; then "by id: A acknowledged, R received (D duplicates), L
//! acknowledged never received", and any such loss is an error.
//!
//! With `--live` the session stays connected through the run instead and receives the
//! events as they come ("live: E events received during the run, R/s"); the check after
//! the run is the same.

use crate::mqtt::{Received, message_id};
use anyhow::Context;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::Packet;
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// `body` (a JSON object) with the connection's index and the request's number first.
pub fn numbered(body: &[u8], index: usize, n: u64) -> String {
    let rest = body.strip_prefix(b"{").unwrap_or(body);
    let rest = std::str::from_utf8(rest).unwrap_or("}").trim_start();
    let separator = if rest.starts_with('}') { "" } else { "," };
    format!(r#"{{"lg_d":{index},"lg_n":{n}{separator}{rest}"#)
}

/// How long the check waits for the next event before it counts the rest as missing.
const QUIET: Duration = Duration::from_secs(10);

/// The application's session that checks a run.
pub struct Verifier {
    session: Session,
}

enum Session {
    /// Left, persistent, until the check.
    Away(Box<MqttOptions>),
    /// Connected through the run, receiving.
    Live {
        /// New events of this run received so far.
        received: Arc<AtomicU64>,
        /// The acknowledged numbers, once the run is over.
        wanted: oneshot::Sender<Received>,
        receiver: tokio::task::JoinHandle<anyhow::Result<Outcome>>,
    },
}

/// What the checking session received of the acknowledged requests.
struct Outcome {
    expected: u64,
    found: u64,
    received: Received,
    /// Since the run ended.
    took: Duration,
}

impl Verifier {
    /// Subscribes a new session (`{user}/by-id-{pid}-{time}` on `broker`, `host:port`)
    /// to `filter`; without `live` it leaves it, persistent, until [`Verifier::check`],
    /// with `live` it stays and receives the events as they come.
    pub async fn subscribe(
        broker: &str,
        subscriber: &str,
        filter: &str,
        live: bool,
    ) -> anyhow::Result<Self> {
        let (user, token) = subscriber
            .split_once(':')
            .context("--subscriber takes user:token")?;
        let (host, port) = broker
            .rsplit_once(':')
            .context("--by-id takes the broker's host:port")?;
        // a session of its own for each run: nothing a session of an earlier run left
        // undelivered (with the same numbers) can count for this one
        let since_epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        let client_id = format!("{user}/by-id-{}-{since_epoch}", std::process::id());
        let mut options = MqttOptions::new(client_id, host, port.parse()?);
        options.set_credentials(user, token);
        options.set_keep_alive(Duration::from_secs(30));
        options.set_clean_start(false);
        options.set_session_expiry_interval(Some(600));
        let (client, mut events) = AsyncClient::new(options.clone(), 100);
        client.subscribe(filter, QoS::AtLeastOnce).await?;
        loop {
            let event = tokio::time::timeout(Duration::from_secs(10), events.poll())
                .await
                .context("no SUBACK within 10 s")??;
            if let Event::Incoming(Packet::SubAck(ack)) = event {
                anyhow::ensure!(
                    ack.return_codes.iter().all(|code| matches!(
                        code,
                        rumqttc::v5::mqttbytes::v5::SubscribeReasonCode::Success(_)
                    )),
                    "the subscription to {filter} was refused: {:?}",
                    ack.return_codes
                );
                break;
            }
        }
        if live {
            let received = Arc::new(AtomicU64::new(0));
            let (wanted, wanted_later) = oneshot::channel();
            let receiver =
                tokio::spawn(receive_live(client, events, received.clone(), wanted_later));
            return Ok(Self {
                session: Session::Live {
                    received,
                    wanted,
                    receiver,
                },
            });
        }
        client.disconnect().await?;
        while events.poll().await.is_ok() {}
        Ok(Self {
            session: Session::Away(Box::new(options)),
        })
    }

    /// How many events of this run a live session received so far.
    pub fn received_live(&self) -> Option<u64> {
        match &self.session {
            Session::Live { received, .. } => Some(received.load(Ordering::Relaxed)),
            Session::Away(_) => None,
        }
    }

    /// Receives what the session missed; `acknowledged[c]` holds the numbers of
    /// connection (or client) `c`'s acknowledged requests. Fails when one of them never
    /// came.
    pub async fn check(self, acknowledged: &[Vec<u64>]) -> anyhow::Result<()> {
        let mut wanted = Received::default();
        for (connection, numbers) in acknowledged.iter().enumerate() {
            for n in numbers {
                wanted.record(connection, *n);
            }
        }
        let (outcome, how) = match self.session {
            Session::Away(options) => {
                let (_client, events) = AsyncClient::new(*options, 10_000);
                let outcome = receive_missed(events, wanted).await?;
                (outcome, "read back from the event log")
            }
            Session::Live {
                wanted: to_receiver,
                receiver,
                ..
            } => {
                let _ = to_receiver.send(wanted);
                (receiver.await??, "the last received")
            }
        };
        let Outcome {
            expected,
            found,
            received,
            took,
        } = outcome;
        let lost = expected - found;
        println!(
            "by id: {expected} acknowledged, {} received ({} duplicates), {lost} acknowledged never received ({how} {:.1} s after the run)",
            received.unique,
            received.duplicates,
            took.as_secs_f64()
        );
        anyhow::ensure!(
            lost == 0,
            "{lost} acknowledged requests never became events"
        );
        Ok(())
    }
}

/// A new id among `received`, from one event of the checking session. A returning
/// session's CONNACK must say its session was kept.
fn new_id(
    received: &mut Received,
    event: Result<Event, rumqttc::v5::ConnectionError>,
) -> anyhow::Result<Option<(usize, u64)>> {
    match event {
        Ok(Event::Incoming(Packet::ConnAck(ack))) => {
            anyhow::ensure!(ack.session_present, "the session was not kept");
            Ok(None)
        }
        Ok(Event::Incoming(Packet::Publish(p))) => {
            Ok(message_id(&p.payload).filter(|&(connection, n)| received.record(connection, n)))
        }
        Ok(_) => Ok(None),
        Err(e) => anyhow::bail!("the checking session failed: {e}"),
    }
}

/// Goes on receiving, after what came before (`received`), until every wanted event
/// came or nothing came for [`QUIET`]; `on_new` is told of each new id.
async fn receive_rest(
    events: &mut rumqttc::v5::EventLoop,
    wanted: Received,
    mut received: Received,
    on_new: impl Fn(),
) -> anyhow::Result<Outcome> {
    let started = Instant::now();
    // acknowledged ones received (others, a request whose answer was lost, may come too)
    let mut found = received.common(&wanted);
    while found < wanted.unique {
        // nothing for a while: the rest are counted as missing
        let Ok(event) = tokio::time::timeout(QUIET, events.poll()).await else {
            break;
        };
        if let Some((connection, n)) = new_id(&mut received, event)? {
            on_new();
            found += u64::from(wanted.has(connection, n));
        }
    }
    Ok(Outcome {
        expected: wanted.unique,
        found,
        received,
        took: started.elapsed(),
    })
}

/// A returning session: what it missed.
async fn receive_missed(
    mut events: rumqttc::v5::EventLoop,
    wanted: Received,
) -> anyhow::Result<Outcome> {
    receive_rest(&mut events, wanted, Received::default(), || {}).await
}

/// A live session: records what comes during the run, then, given the acknowledged
/// numbers, goes on as a returning session does.
async fn receive_live(
    _client: AsyncClient,
    mut events: rumqttc::v5::EventLoop,
    count: Arc<AtomicU64>,
    mut wanted: oneshot::Receiver<Received>,
) -> anyhow::Result<Outcome> {
    let mut received = Received::default();
    let on_new = || {
        count.fetch_add(1, Ordering::Relaxed);
    };
    let wanted = loop {
        tokio::select! {
            wanted = &mut wanted => break wanted?,
            event = events.poll() => {
                if new_id(&mut received, event)?.is_some() {
                    on_new();
                }
            }
        }
    };
    receive_rest(&mut events, wanted, received, on_new).await
}
