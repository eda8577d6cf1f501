//! `drogue-loadgen mqtt`: devices publish to an MQTT broker as fast as it takes their
//! messages, one application subscribes; the messages per second that reach the
//! subscriber, and those the devices got out (acknowledged, at QoS 1).
//!
//! Every message carries its device's index and its number (`"lg_d"`, `"lg_n"` in the
//! JSON payload, also inside a CloudEvent's `data`), so the subscriber counts messages by
//! id: at the end, after a drain, every message the broker acknowledged (QoS 1: the
//! first k of a device's messages when it got k PUBACKs, which come in order; QoS 0: every
//! message handed to the socket) is looked up among those received. A rate is never
//! reported without the count of acknowledged messages that never arrived, and
//! `--require-all` makes any such loss an error.

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub struct MqttLoad {
    /// `host:port`.
    pub broker: String,
    pub devices: usize,
    pub seconds: u64,
    pub qos1: bool,
    /// Devices are `dev{i}@{app}`, publishing on `dt/{app}/dev{i}/temp`.
    pub app: String,
    /// The devices' password (all the same); none: no login.
    pub device_password: Option<String>,
    /// The subscriber's `user:token`; none: no login.
    pub subscriber: Option<String>,
    /// What the subscriber subscribes to (`app/{app}`, or `dt/#` on a plain broker).
    pub filter: String,
    /// Messages per second offered by all devices together; 0: as fast as the broker
    /// takes them (QoS 1 paces itself by acknowledgements, QoS 0 by TCP).
    pub rate: u64,
    /// Fail when an acknowledged message never reached the subscriber.
    pub require_all: bool,
}

/// The messages the subscriber received, by device and number.
#[derive(Default)]
struct Received {
    /// Per device, a bit per message number.
    seen: Vec<Vec<u64>>,
    duplicates: u64,
    /// Messages of this run's devices (others are ignored: change events, strays).
    unique: u64,
}

impl Received {
    fn record(&mut self, device: usize, n: u64) {
        if self.seen.len() <= device {
            self.seen.resize_with(device + 1, Vec::new);
        }
        let bits = &mut self.seen[device];
        let (word, bit) = ((n / 64) as usize, n % 64);
        if bits.len() <= word {
            bits.resize(word + 1, 0);
        }
        if bits[word] & (1 << bit) != 0 {
            self.duplicates += 1;
        } else {
            bits[word] |= 1 << bit;
            self.unique += 1;
        }
    }

    fn has(&self, device: usize, n: u64) -> bool {
        self.seen
            .get(device)
            .and_then(|bits| bits.get((n / 64) as usize))
            .is_some_and(|word| word & (1 << (n % 64)) != 0)
    }

    /// Of a device's messages `0..count`, those never received.
    fn missing(&self, device: usize, count: u64) -> u64 {
        (0..count).filter(|n| !self.has(device, *n)).count() as u64
    }
}

/// The unsigned number after `"key":` in a payload.
fn number_after(payload: &[u8], key: &[u8]) -> Option<u64> {
    let at = payload.windows(key.len()).position(|w| w == key)? + key.len();
    let digits = payload[at..]
        .iter()
        .skip_while(|b| **b == b' ')
        .take_while(|b| b.is_ascii_digit());
    let mut value: Option<u64> = None;
    for digit in digits {
        value = Some(value.unwrap_or(0).checked_mul(10)? + u64::from(digit - b'0'));
    }
    value
}

/// The (device, number) a payload carries, if it is one of the load's messages.
fn message_id(payload: &[u8]) -> Option<(usize, u64)> {
    Some((
        number_after(payload, b"\"lg_d\":")? as usize,
        number_after(payload, b"\"lg_n\":")?,
    ))
}

fn options(id: &str, broker: &str) -> anyhow::Result<MqttOptions> {
    let (host, port) = broker
        .rsplit_once(':')
        .ok_or_else(|| anyhow::anyhow!("the broker is host:port"))?;
    let mut options = MqttOptions::new(id, host, port.parse()?);
    options.set_keep_alive(Duration::from_secs(30));
    options.set_max_packet_size(256 * 1024, 256 * 1024);
    Ok(options)
}

pub async fn run(load: MqttLoad) -> anyhow::Result<()> {
    let qos = if load.qos1 {
        QoS::AtLeastOnce
    } else {
        QoS::AtMostOnce
    };
    let received = Arc::new(AtomicU64::new(0));
    let sent = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));

    // the application
    // an application's client id lies in its user's namespace: `{user}/{name}`
    let credentials = load.subscriber.as_deref().and_then(|s| s.split_once(':'));
    let client_id = match credentials {
        Some((user, _)) => format!("{user}/bench-subscriber"),
        None => "bench-subscriber".to_owned(),
    };
    let mut sub = options(&client_id, &load.broker)?;
    if let Some((user, token)) = credentials {
        sub.set_credentials(user, token);
    }
    let (subscriber, mut events) = AsyncClient::new(sub, 1000);
    subscriber.subscribe(&load.filter, qos).await?;
    let (subscribed_tx, subscribed) = tokio::sync::oneshot::channel();
    let counter = received.clone();
    let ids = Arc::new(Mutex::new(Received::default()));
    let recorder = ids.clone();
    tokio::spawn(async move {
        let mut subscribed_tx = Some(subscribed_tx);
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::Publish(publish))) => {
                    if let Some((device, n)) = message_id(&publish.payload) {
                        recorder.lock().unwrap().record(device, n);
                        counter.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Ok(Event::Incoming(Packet::SubAck(ack))) => {
                    if let Some(tx) = subscribed_tx.take() {
                        let _ = tx.send(ack.return_codes);
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    eprintln!("the subscriber's connection ended: {e}");
                    break;
                }
            }
        }
    });
    let granted = tokio::time::timeout(Duration::from_secs(10), subscribed).await??;
    anyhow::ensure!(
        granted
            .iter()
            .all(|c| matches!(c, rumqttc::SubscribeReasonCode::Success(_))),
        "the subscription was refused: {granted:?}"
    );

    // the devices, and how many messages each got acknowledged
    let mut devices = Vec::new();
    let acknowledged: Arc<Vec<AtomicU64>> =
        Arc::new((0..load.devices).map(|_| AtomicU64::new(0)).collect());
    for i in 0..load.devices {
        let id = format!("dev{i}@{}", load.app);
        let mut device = options(&id, &load.broker)?;
        device.set_inflight(32);
        if let Some(password) = &load.device_password {
            device.set_credentials(&id, password);
        }
        let (client, mut events) = AsyncClient::new(device, 64);
        let (connected_tx, connected) = tokio::sync::oneshot::channel();
        let acked = sent.clone();
        let mine = acknowledged.clone();
        let qos1 = load.qos1;
        tokio::spawn(async move {
            let mut connected_tx = Some(connected_tx);
            loop {
                match events.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        if let Some(tx) = connected_tx.take() {
                            let _ = tx.send(());
                        }
                    }
                    Ok(Event::Incoming(Packet::PubAck(_))) if qos1 => {
                        acked.fetch_add(1, Ordering::Relaxed);
                        mine[i].fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(Event::Outgoing(rumqttc::Outgoing::Publish(_))) if !qos1 => {
                        acked.fetch_add(1, Ordering::Relaxed);
                        mine[i].fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(_) => {}
                    Err(e) => {
                        eprintln!("a device's connection ended: {e}");
                        break;
                    }
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(10), connected).await??;
        let topic = format!("dt/{}/dev{i}/temp", load.app);
        let stop = stop.clone();
        let mut pace = (load.rate > 0).then(|| {
            let period = Duration::from_secs_f64(load.devices as f64 / load.rate as f64);
            let mut interval = tokio::time::interval(period);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            interval
        });
        devices.push(tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                if let Some(pace) = pace.as_mut() {
                    pace.tick().await;
                }
                let payload = format!("{{\"temp\":21.5,\"lg_d\":{i},\"lg_n\":{n}}}");
                if client.publish(&topic, qos, false, payload).await.is_err() {
                    break;
                }
                n += 1;
            }
        }));
    }

    // warm up, then count
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (r0, s0, started) = (
        received.load(Ordering::Relaxed),
        sent.load(Ordering::Relaxed),
        Instant::now(),
    );
    tokio::time::sleep(Duration::from_secs(load.seconds)).await;
    let elapsed = started.elapsed().as_secs_f64();
    let (r1, s1) = (
        received.load(Ordering::Relaxed),
        sent.load(Ordering::Relaxed),
    );
    stop.store(true, Ordering::Relaxed);
    let delivered = (r1 - r0) as f64 / elapsed;
    let published = (s1 - s0) as f64 / elapsed;
    let offered = if load.rate > 0 {
        format!("offered {} msg/s, ", load.rate)
    } else {
        String::new()
    };
    // QoS 1: acknowledged by the broker; QoS 0: handed to the socket
    println!(
        "qos {}, {} devices, {:.0} s: {offered}published {published:.0} msg/s, delivered {delivered:.0} msg/s ({:.1} % of published)",
        u8::from(load.qos1),
        load.devices,
        elapsed,
        100.0 * delivered / published.max(1.0),
    );
    for device in devices {
        device.abort();
    }

    // drain: wait until nothing more arrives for a second (at most 30 s), then look up
    // every acknowledged message among those received
    let drained = Instant::now();
    let mut last = received.load(Ordering::Relaxed);
    while drained.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = received.load(Ordering::Relaxed);
        if now == last {
            break;
        }
        last = now;
    }
    let ids = ids.lock().unwrap();
    let mut total_acknowledged = 0;
    let mut lost = 0;
    for (device, count) in acknowledged.iter().enumerate() {
        let count = count.load(Ordering::Relaxed);
        total_acknowledged += count;
        lost += ids.missing(device, count);
    }
    println!(
        "by id: {total_acknowledged} {}, {} received ({} duplicates), {lost} {} never received",
        if load.qos1 { "acknowledged" } else { "sent" },
        ids.unique,
        ids.duplicates,
        if load.qos1 { "acknowledged" } else { "sent" },
    );
    anyhow::ensure!(
        !load.require_all || lost == 0,
        "{lost} acknowledged messages never reached the subscriber"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_read_from_payloads_and_cloudevents() {
        assert_eq!(
            message_id(br#"{"temp":21.5,"lg_d":3,"lg_n":1234}"#),
            Some((3, 1234))
        );
        let event =
            br#"{"specversion":"1.0","device":"dev3","data":{"temp":21.5,"lg_d": 3,"lg_n":7}}"#;
        assert_eq!(message_id(event), Some((3, 7)));
        assert_eq!(message_id(br#"{"device":"dev3","n":7}"#), None);
        assert_eq!(
            message_id(br#"{"lg_d":3,"lg_n":99999999999999999999999}"#),
            None
        );
    }

    #[test]
    fn acknowledged_messages_not_received_are_missing() {
        let mut received = Received::default();
        for n in [0, 1, 3, 64, 65] {
            received.record(2, n);
        }
        received.record(2, 1);
        assert_eq!((received.unique, received.duplicates), (5, 1));
        assert_eq!(received.missing(2, 4), 1, "2 of 0..4");
        assert_eq!(received.missing(2, 66), 66 - 5);
        assert_eq!(received.missing(0, 3), 3, "a device never heard of");
    }
}
