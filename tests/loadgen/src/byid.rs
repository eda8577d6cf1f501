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

use crate::mqtt::{Received, message_id};
use anyhow::Context;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::Packet;
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use std::time::{Duration, Instant};

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
    options: MqttOptions,
}

impl Verifier {
    /// Subscribes a new session (`{user}/by-id-{pid}-{time}` on `broker`, `host:port`)
    /// to `filter` and leaves it, persistent, until [`Verifier::check`].
    pub async fn subscribe(broker: &str, subscriber: &str, filter: &str) -> anyhow::Result<Self> {
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
        client.disconnect().await?;
        while events.poll().await.is_ok() {}
        Ok(Self { options })
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
        let expected = wanted.unique;
        let (_client, mut events) = AsyncClient::new(self.options, 10_000);
        let mut received = Received::default();
        // acknowledged ones received (others, a request whose answer was lost, may come too)
        let mut found = 0;
        let started = Instant::now();
        while found < expected {
            match tokio::time::timeout(QUIET, events.poll()).await {
                Ok(Ok(Event::Incoming(Packet::ConnAck(ack)))) => {
                    anyhow::ensure!(ack.session_present, "the session was not kept");
                }
                Ok(Ok(Event::Incoming(Packet::Publish(p)))) => {
                    if let Some((connection, n)) = message_id(&p.payload) {
                        let new = received.record(connection, n);
                        found += u64::from(new && wanted.has(connection, n));
                    }
                }
                Ok(Ok(_)) => {}
                Ok(Err(e)) => anyhow::bail!("the checking session failed: {e}"),
                // nothing for a while: the rest are counted as missing
                Err(_) => break,
            }
        }
        let lost = expected - found;
        println!(
            "by id: {expected} acknowledged, {} received ({} duplicates), {lost} acknowledged never received (read back from the event log in {:.1} s)",
            received.unique,
            received.duplicates,
            started.elapsed().as_secs_f64()
        );
        anyhow::ensure!(
            lost == 0,
            "{lost} acknowledged requests never became events"
        );
        Ok(())
    }
}
