//! `drogue-loadgen mqtt`: devices publish to an MQTT broker, one or more applications
//! subscribe; the messages per second that reach the subscribers, and those the devices
//! got out (acknowledged, at QoS 1).
//!
//! The devices connect first, `--connect-concurrency` at a time, each waiting for its
//! CONNACK: the connect phase's rate (connections per second, the broker's password check
//! of each device included) is reported, and every device must be accepted. With
//! `--rss-pid`, the broker's resident memory is sampled before the devices connect and
//! once all are: its memory per connection. Only then do the devices publish.
//!
//! Every message carries its device's index and its number (`"lg_d"`, `"lg_n"` in the
//! JSON payload, also inside a CloudEvent's `data`), so every subscriber counts messages
//! by id: at the end, after a drain, every message the broker acknowledged (QoS 1: the
//! first k of a device's messages when it got k PUBACKs, which come in order; QoS 0: every
//! message handed to the socket) is looked up among those each subscriber received. A
//! rate is never reported without the count of acknowledged messages that never arrived,
//! and `--require-all` makes any such loss, at any subscriber, an error.

use anyhow::Context;
use rumqttc::{AsyncClient, ConnectionError, Event, MqttOptions, Packet, QoS};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{Semaphore, mpsc, oneshot, watch};

// `drogue-loadgen mqtt`'s options (no doc comment: the subcommand's is its help)
#[derive(clap::Args)]
pub struct MqttLoad {
    /// `host:port` of the broker.
    pub broker: String,
    /// Devices, all connected at once: `dev{i}@{app}`, publishing on
    /// `dt/{app}/dev{i}/temp`.
    #[arg(long, default_value_t = 100)]
    pub devices: usize,
    /// Seconds of publishing that are measured (after 2 s of warm-up).
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// 0 or 1: the QoS of publishing and of the subscriptions.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=1))]
    pub qos: u8,
    /// The application: devices are `dev{i}@{app}` and publish on `dt/{app}/dev{i}/temp`.
    #[arg(long, default_value = "bench")]
    pub app: String,
    /// The devices' password (all the same); without: no login (a plain broker).
    #[arg(long)]
    pub device_password: Option<String>,
    /// The subscribers' `user:token`; without: no login.
    #[arg(long)]
    pub subscriber: Option<String>,
    /// What the subscribers subscribe to (`app/{app}`, or `dt/#` on a plain broker).
    #[arg(long, default_value = "app/bench")]
    pub filter: String,
    /// Subscribers, each its own connection (client id `{user}/bench-subscriber-{k}`)
    /// subscribing to `--filter`; every one counts what it received by id.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    pub subscribers: u64,
    /// Messages per second offered by all devices together (each device its share, the
    /// devices' sends spread evenly over the period); 0: as fast as the broker takes
    /// them (QoS 1 paces itself by acknowledgements, QoS 0 by TCP).
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// Devices connecting at a time in the connect phase (each until its CONNACK).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..))]
    pub connect_concurrency: u64,
    /// The broker's process id: its resident memory (`VmRSS` of `/proc/{pid}/status`) is
    /// printed before the devices connect, once all are connected (and per connection),
    /// and after publishing; with `--idle-seconds`, also the CPU time it used meanwhile.
    #[arg(long)]
    pub rss_pid: Option<u32>,
    /// Seconds to wait with every device connected before publishing, printing the CPU
    /// time `--rss-pid` used while nothing was published (keep-alives, session upkeep).
    #[arg(long, default_value_t = 0, requires = "rss_pid")]
    pub idle_seconds: u64,
    /// Fail (exit 1) when an acknowledged message never reached a subscriber.
    #[arg(long)]
    pub require_all: bool,
}

/// The messages a subscriber received, by device and number.
#[derive(Default)]
pub(crate) struct Received {
    /// Per device, a bit per message number.
    seen: Vec<Vec<u64>>,
    pub duplicates: u64,
    /// Messages of this run's devices (others are ignored: change events, strays).
    pub unique: u64,
}

impl Received {
    /// Records a message; whether it is the first with its id.
    pub fn record(&mut self, device: usize, n: u64) -> bool {
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
            false
        } else {
            bits[word] |= 1 << bit;
            self.unique += 1;
            true
        }
    }

    pub fn has(&self, device: usize, n: u64) -> bool {
        self.seen
            .get(device)
            .and_then(|bits| bits.get((n / 64) as usize))
            .is_some_and(|word| word & (1 << (n % 64)) != 0)
    }

    /// How many ids both hold.
    pub fn common(&self, other: &Received) -> u64 {
        self.seen
            .iter()
            .zip(&other.seen)
            .map(|(a, b)| {
                a.iter()
                    .zip(b)
                    .map(|(a, b)| u64::from((a & b).count_ones()))
                    .sum::<u64>()
            })
            .sum()
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
pub(crate) fn message_id(payload: &[u8]) -> Option<(usize, u64)> {
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

/// One application subscriber: what it received.
#[derive(Default)]
struct Subscriber {
    /// Messages of this run's devices received (duplicates included).
    received: AtomicU64,
    ids: Mutex<Received>,
}

/// Connects a subscriber and subscribes it to the filter; once the broker granted the
/// subscription, it counts what it receives until the process ends.
async fn subscribe(load: &MqttLoad, k: u64, qos: QoS) -> anyhow::Result<Arc<Subscriber>> {
    // an application's client id lies in its user's namespace: `{user}/{name}`
    let credentials = load.subscriber.as_deref().and_then(|s| s.split_once(':'));
    let client_id = match credentials {
        Some((user, _)) => format!("{user}/bench-subscriber-{k}"),
        None => format!("bench-subscriber-{k}"),
    };
    let mut options = options(&client_id, &load.broker)?;
    if let Some((user, token)) = credentials {
        options.set_credentials(user, token);
    }
    let (client, mut events) = AsyncClient::new(options, 1000);
    client.subscribe(&load.filter, qos).await?;
    let (subscribed_tx, subscribed) = oneshot::channel();
    let subscriber = Arc::new(Subscriber::default());
    let recorder = subscriber.clone();
    tokio::spawn(async move {
        // (the client lives as long as its event loop is polled)
        let _client = client;
        let mut subscribed_tx = Some(subscribed_tx);
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::Publish(publish))) => {
                    if let Some((device, n)) = message_id(&publish.payload) {
                        recorder.ids.lock().unwrap().record(device, n);
                        recorder.received.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Ok(Event::Incoming(Packet::SubAck(ack))) => {
                    if let Some(tx) = subscribed_tx.take() {
                        let _ = tx.send(Ok(ack.return_codes));
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    match subscribed_tx.take() {
                        Some(tx) => {
                            let _ = tx.send(Err(e));
                        }
                        None => eprintln!("subscriber {k}'s connection ended: {e}"),
                    }
                    break;
                }
            }
        }
    });
    let granted = tokio::time::timeout(Duration::from_secs(30), subscribed)
        .await
        .with_context(|| format!("subscriber {k}: no SUBACK within 30 s"))??
        .with_context(|| format!("subscriber {k} could not connect"))?;
    anyhow::ensure!(
        granted
            .iter()
            .all(|c| matches!(c, rumqttc::SubscribeReasonCode::Success(_))),
        "subscriber {k}'s subscription was refused: {granted:?}"
    );
    Ok(subscriber)
}

/// How a device's CONNECT ended.
enum Connected {
    Accepted,
    /// A CONNACK with a refusal.
    Refused(String),
    /// No CONNACK: the connection failed or timed out.
    Failed(String),
}

/// What the devices share.
struct Devices {
    broker: String,
    app: String,
    password: Option<String>,
    count: usize,
    qos1: bool,
    rate: u64,
    /// Connect permits: `--connect-concurrency`.
    gate: Semaphore,
    /// Each device's connect outcome.
    outcomes: mpsc::UnboundedSender<Connected>,
    /// Set once every device is connected: publish.
    go: watch::Receiver<bool>,
    stop: AtomicBool,
    /// Messages acknowledged (QoS 1) or sent (QoS 0), all devices together.
    sent: AtomicU64,
    /// The same, per device.
    acknowledged: Vec<AtomicU64>,
    /// Connections that ended after their CONNACK, and the first one's error.
    lost: AtomicU64,
    first_lost: Mutex<Option<String>>,
}

/// One device: connects (within the connect gate), waits for the go, then publishes
/// until the stop.
async fn device(devices: Arc<Devices>, i: usize) {
    let qos = if devices.qos1 {
        QoS::AtLeastOnce
    } else {
        QoS::AtMostOnce
    };
    let Ok(permit) = devices.gate.acquire().await else {
        return;
    };
    let id = format!("dev{i}@{}", devices.app);
    let mut options = match options(&id, &devices.broker) {
        Ok(options) => options,
        Err(e) => {
            let _ = devices.outcomes.send(Connected::Failed(e.to_string()));
            return;
        }
    };
    options.set_inflight(32);
    if let Some(password) = &devices.password {
        options.set_credentials(&id, password);
    }
    let (client, mut events) = AsyncClient::new(options, 64);
    let (connected_tx, connected) = oneshot::channel();
    let shared = devices.clone();
    tokio::spawn(async move {
        let mut connected_tx = Some(connected_tx);
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    if let Some(tx) = connected_tx.take() {
                        let _ = tx.send(Connected::Accepted);
                    }
                }
                Ok(Event::Incoming(Packet::PubAck(_))) if shared.qos1 => {
                    shared.sent.fetch_add(1, Ordering::Relaxed);
                    shared.acknowledged[i].fetch_add(1, Ordering::Relaxed);
                }
                Ok(Event::Outgoing(rumqttc::Outgoing::Publish(_))) if !shared.qos1 => {
                    shared.sent.fetch_add(1, Ordering::Relaxed);
                    shared.acknowledged[i].fetch_add(1, Ordering::Relaxed);
                }
                Ok(_) => {}
                Err(e) => {
                    match connected_tx.take() {
                        Some(tx) => {
                            let _ = tx.send(match e {
                                ConnectionError::ConnectionRefused(code) => {
                                    Connected::Refused(format!("{code:?}"))
                                }
                                e => Connected::Failed(e.to_string()),
                            });
                        }
                        None => {
                            if shared.lost.fetch_add(1, Ordering::Relaxed) == 0 {
                                *shared.first_lost.lock().unwrap() = Some(format!("{id}: {e}"));
                            }
                        }
                    }
                    break;
                }
            }
        }
    });
    let outcome = match tokio::time::timeout(Duration::from_secs(30), connected).await {
        Ok(Ok(outcome)) => outcome,
        Ok(Err(_)) => Connected::Failed("the client ended".into()),
        Err(_) => Connected::Failed("no CONNACK within 30 s".into()),
    };
    drop(permit);
    let accepted = matches!(outcome, Connected::Accepted);
    let _ = devices.outcomes.send(outcome);
    let mut go = devices.go.clone();
    if !accepted || go.wait_for(|go| *go).await.is_err() {
        return;
    }
    let topic = format!("dt/{}/dev{i}/temp", devices.app);
    // each device its share of the rate, the devices' sends spread over the period
    let mut pace = (devices.rate > 0).then(|| {
        let period = Duration::from_secs_f64(devices.count as f64 / devices.rate as f64);
        let offset = period.mul_f64(i as f64 / devices.count as f64);
        let mut interval = tokio::time::interval_at(tokio::time::Instant::now() + offset, period);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        interval
    });
    let mut n = 0u64;
    while !devices.stop.load(Ordering::Relaxed) {
        if let Some(pace) = pace.as_mut() {
            pace.tick().await;
        }
        let payload = format!("{{\"temp\":21.5,\"lg_d\":{i},\"lg_n\":{n}}}");
        if client.publish(&topic, qos, false, payload).await.is_err() {
            break;
        }
        n += 1;
    }
}

/// A process's resident memory, in KiB.
fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("process {pid}"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("no VmRSS for process {pid}"))
}

/// A process's CPU time (user and system), in seconds.
fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("process {pid}"))?;
    // after the command's `)`: state (field 3), ... utime (14), stime (15)
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .with_context(|| format!("/proc/{pid}/stat"))?
        .1
        .split_whitespace()
        .collect();
    let ticks = |at: usize| -> anyhow::Result<u64> {
        Ok(fields
            .get(at)
            .with_context(|| format!("/proc/{pid}/stat"))?
            .parse()?)
    };
    // (clock ticks: USER_HZ, 100 on Linux)
    Ok((ticks(11)? + ticks(12)?) as f64 / 100.0)
}

pub async fn run(load: MqttLoad) -> anyhow::Result<()> {
    let qos1 = load.qos >= 1;
    let qos = if qos1 {
        QoS::AtLeastOnce
    } else {
        QoS::AtMostOnce
    };

    // the applications
    let mut subscribers = Vec::new();
    for k in 0..load.subscribers {
        subscribers.push(subscribe(&load, k, qos).await?);
    }
    let rss_before = load.rss_pid.map(rss_kib).transpose()?;

    // the devices connect
    let (go_tx, go) = watch::channel(false);
    let (outcomes_tx, mut outcomes) = mpsc::unbounded_channel();
    let devices = Arc::new(Devices {
        broker: load.broker.clone(),
        app: load.app.clone(),
        password: load.device_password.clone(),
        count: load.devices,
        qos1,
        rate: load.rate,
        gate: Semaphore::new(load.connect_concurrency as usize),
        outcomes: outcomes_tx,
        go,
        stop: AtomicBool::new(false),
        sent: AtomicU64::new(0),
        acknowledged: (0..load.devices).map(|_| AtomicU64::new(0)).collect(),
        lost: AtomicU64::new(0),
        first_lost: Mutex::new(None),
    });
    let connecting = Instant::now();
    let tasks: Vec<_> = (0..load.devices)
        .map(|i| tokio::spawn(device(devices.clone(), i)))
        .collect();
    let (mut accepted, mut refused, mut failed) = (0usize, 0usize, 0usize);
    let mut first_error = None;
    for _ in 0..load.devices {
        match outcomes.recv().await.context("the devices ended")? {
            Connected::Accepted => accepted += 1,
            Connected::Refused(e) => {
                refused += 1;
                first_error.get_or_insert(format!("refused: {e}"));
            }
            Connected::Failed(e) => {
                failed += 1;
                first_error.get_or_insert(e);
            }
        }
    }
    let connect_time = connecting.elapsed().as_secs_f64();
    println!(
        "connect: {accepted} of {} devices connected in {connect_time:.2} s, {} at a time: {:.0} connections/s ({refused} refused, {failed} failed{})",
        load.devices,
        load.connect_concurrency,
        accepted as f64 / connect_time,
        first_error
            .as_deref()
            .map(|e| format!("; first: {e}"))
            .unwrap_or_default(),
    );
    anyhow::ensure!(
        accepted == load.devices,
        "{} of {} devices could not connect",
        load.devices - accepted,
        load.devices
    );
    if let (Some(pid), Some(before)) = (load.rss_pid, rss_before) {
        // (the connections' upkeep settles: connection events, session tasks)
        tokio::time::sleep(Duration::from_secs(2)).await;
        let after = rss_kib(pid)?;
        println!(
            "rss: {before} KiB before, {after} KiB with {accepted} devices connected: {:.1} KiB per connection",
            after.saturating_sub(before) as f64 / accepted.max(1) as f64
        );
        if load.idle_seconds > 0 {
            let (cpu0, t0) = (cpu_seconds(pid)?, Instant::now());
            tokio::time::sleep(Duration::from_secs(load.idle_seconds)).await;
            let cpu = cpu_seconds(pid)? - cpu0;
            println!(
                "idle: {:.1} % of a core over {} s with {accepted} devices connected and nothing published",
                100.0 * cpu / t0.elapsed().as_secs_f64(),
                load.idle_seconds,
            );
        }
    }

    // the devices publish: warm up, then count
    let received = || -> u64 {
        subscribers
            .iter()
            .map(|s| s.received.load(Ordering::Relaxed))
            .sum()
    };
    let _ = go_tx.send(true);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (r0, s0, started) = (
        received(),
        devices.sent.load(Ordering::Relaxed),
        Instant::now(),
    );
    tokio::time::sleep(Duration::from_secs(load.seconds)).await;
    let elapsed = started.elapsed().as_secs_f64();
    let (r1, s1) = (received(), devices.sent.load(Ordering::Relaxed));
    devices.stop.store(true, Ordering::Relaxed);
    let n = load.subscribers as f64;
    let delivered = (r1 - r0) as f64 / elapsed;
    let published = (s1 - s0) as f64 / elapsed;
    let offered = if load.rate > 0 {
        format!("offered {} msg/s, ", load.rate)
    } else {
        String::new()
    };
    let each = if load.subscribers > 1 {
        format!(
            " to {} subscribers, {:.0} msg/s each",
            load.subscribers,
            delivered / n
        )
    } else {
        String::new()
    };
    // QoS 1: acknowledged by the broker; QoS 0: handed to the socket
    println!(
        "qos {}, {} devices, {:.0} s: {offered}published {published:.0} msg/s, delivered {delivered:.0} msg/s{each} ({:.1} % of published)",
        u8::from(qos1),
        load.devices,
        elapsed,
        100.0 * delivered / n / published.max(1.0),
    );
    for task in tasks {
        task.abort();
    }

    // drain: wait until nothing more arrives for a second (at most 30 s), then look up
    // every acknowledged message among those each subscriber received
    let drained = Instant::now();
    let mut last = received();
    while drained.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = received();
        if now == last {
            break;
        }
        last = now;
    }
    if let Some(pid) = load.rss_pid {
        println!("rss: {} KiB after publishing", rss_kib(pid)?);
    }
    let counts: Vec<u64> = devices
        .acknowledged
        .iter()
        .map(|count| count.load(Ordering::Relaxed))
        .collect();
    let total_acknowledged: u64 = counts.iter().sum();
    let (mut unique, mut fewest, mut duplicates, mut lost, mut missing_some) =
        (0, u64::MAX, 0, 0, 0);
    for subscriber in &subscribers {
        let ids = subscriber.ids.lock().unwrap();
        let missing: u64 = counts
            .iter()
            .enumerate()
            .map(|(device, count)| ids.missing(device, *count))
            .sum();
        unique += ids.unique;
        fewest = fewest.min(ids.unique);
        duplicates += ids.duplicates;
        lost += missing;
        missing_some += u64::from(missing > 0);
    }
    let (what, subscribers_n) = (if qos1 { "acknowledged" } else { "sent" }, load.subscribers);
    println!(
        "by id: {total_acknowledged} {what}, {unique} received by {subscribers_n} subscriber(s) (fewest {fewest}, {duplicates} duplicates), {lost} {what} never received ({missing_some} of {subscribers_n} subscribers missed some)",
    );
    let dropped = devices.lost.load(Ordering::Relaxed);
    if dropped > 0 {
        println!(
            "{dropped} device connections ended while publishing; first: {}",
            devices.first_lost.lock().unwrap().as_deref().unwrap_or("?")
        );
    }
    anyhow::ensure!(
        !load.require_all || lost == 0,
        "{lost} acknowledged messages never reached a subscriber ({missing_some} of {subscribers_n} subscribers missed some)"
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
