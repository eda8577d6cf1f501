//! `drogue-loadgen mqtt`: devices publish to an MQTT broker as fast as it takes their
//! messages, one application subscribes; the messages per second that reach the
//! subscriber, and those the devices got out (acknowledged, at QoS 1).

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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
    tokio::spawn(async move {
        let mut subscribed_tx = Some(subscribed_tx);
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::Publish(_))) => {
                    counter.fetch_add(1, Ordering::Relaxed);
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

    // the devices
    let mut devices = Vec::new();
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
                    }
                    Ok(Event::Outgoing(rumqttc::Outgoing::Publish(_))) if !qos1 => {
                        acked.fetch_add(1, Ordering::Relaxed);
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
                let payload = format!("{{\"temp\":21.5,\"n\":{n}}}");
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
    Ok(())
}
