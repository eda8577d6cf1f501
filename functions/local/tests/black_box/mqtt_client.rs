//! MQTT 3.1.1 and 5 test clients (rumqttc) behind one small interface: connect with a
//! password or a client certificate, publish, subscribe, and read what arrives.

use std::net::SocketAddr;
use std::time::Duration;
use tokio::sync::mpsc;

/// How long a test waits for something that should arrive.
const WAIT: Duration = Duration::from_secs(10);

/// What a client received.
#[derive(Debug, Clone, PartialEq)]
pub enum In {
    Publish(Received),
    /// A PUBACK's reason (`Success` on MQTT 3.1.1).
    PubAck(String),
    /// Per filter: `Success` when granted, the reason (`NotAuthorized`, ...; `Failure`
    /// on MQTT 3.1.1) when not.
    SubAck(Vec<String>),
    /// The connection ended.
    Closed(String),
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Received {
    pub topic: String,
    pub payload: Vec<u8>,
    pub content_type: Option<String>,
    pub correlation_data: Option<Vec<u8>>,
    pub user_properties: Vec<(String, String)>,
}

impl Received {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.payload).expect("a JSON payload")
    }

    pub fn property(&self, name: &str) -> Option<&str> {
        self.user_properties
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// How to connect.
#[derive(Clone, Default)]
pub struct Options {
    pub v5: bool,
    pub client_id: String,
    pub username: Option<String>,
    pub password: Option<String>,
    /// Over TLS: the server's certificate (PEM) and the client's certificate and key.
    pub tls: Option<(String, Option<(String, String)>)>,
    /// A last will: topic and payload.
    pub will: Option<(String, String)>,
    /// A persistent session: MQTT 3.1.1 clean session off; MQTT 5 clean start off and
    /// this session expiry interval (seconds).
    pub session: Option<u32>,
}

impl Options {
    pub fn v3(client_id: &str) -> Self {
        Self {
            client_id: client_id.into(),
            ..Default::default()
        }
    }

    pub fn v5(client_id: &str) -> Self {
        Self {
            v5: true,
            client_id: client_id.into(),
            ..Default::default()
        }
    }

    /// Asks for a persistent session, kept `expiry` seconds (MQTT 5).
    pub fn persistent(mut self, expiry: u32) -> Self {
        self.session = Some(expiry);
        self
    }

    pub fn login(mut self, username: &str, password: &str) -> Self {
        self.username = Some(username.into());
        self.password = Some(password.into());
        self
    }
}

enum Handle {
    V3(rumqttc::AsyncClient),
    V5(rumqttc::v5::AsyncClient),
}

pub struct Client {
    /// The CONNACK's session present flag.
    pub session_present: bool,
    handle: Handle,
    received: mpsc::UnboundedReceiver<In>,
    task: tokio::task::JoinHandle<()>,
}

fn transport(tls: &Option<(String, Option<(String, String)>)>) -> Option<rumqttc::Transport> {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    tls.as_ref().map(|(ca, identity)| {
        rumqttc::Transport::tls_with_config(rumqttc::TlsConfiguration::Simple {
            ca: ca.clone().into_bytes(),
            alpn: None,
            client_auth: identity
                .as_ref()
                .map(|(cert, key)| (cert.clone().into_bytes(), key.clone().into_bytes())),
        })
    })
}

/// Connects; the refusal (as rumqttc reports it) if the broker says no.
pub async fn connect(addr: SocketAddr, options: Options) -> Result<Client, String> {
    let (tx, received) = mpsc::unbounded_channel();
    let host = "localhost".to_owned();
    if options.v5 {
        use rumqttc::v5::mqttbytes::v5::{LastWill, Packet};
        use rumqttc::v5::{AsyncClient, Event, MqttOptions, mqttbytes::QoS};
        let mut mqtt = MqttOptions::new(&options.client_id, host, addr.port());
        mqtt.set_keep_alive(Duration::from_secs(30));
        if let (Some(u), Some(p)) = (&options.username, &options.password) {
            mqtt.set_credentials(u, p);
        }
        if let Some(t) = transport(&options.tls) {
            mqtt.set_transport(t);
        }
        if let Some((topic, payload)) = &options.will {
            mqtt.set_last_will(LastWill::new(
                topic,
                payload.as_bytes(),
                QoS::AtLeastOnce,
                false,
                None,
            ));
        }
        if let Some(expiry) = options.session {
            mqtt.set_clean_start(false);
            mqtt.set_session_expiry_interval(Some(expiry));
        }
        let (client, mut events) = AsyncClient::new(mqtt, 1000);
        let session_present = match tokio::time::timeout(WAIT, events.poll()).await {
            Ok(Ok(Event::Incoming(Packet::ConnAck(ack)))) => ack.session_present,
            Ok(Ok(other)) => return Err(format!("{other:?}")),
            Ok(Err(e)) => return Err(format!("{e:?}")),
            Err(_) => return Err("no CONNACK".into()),
        };
        let translate = |event| {
            Some(match event {
                Event::Incoming(Packet::Publish(p)) => {
                    let props = p.properties.unwrap_or_default();
                    In::Publish(Received {
                        topic: String::from_utf8_lossy(&p.topic).into_owned(),
                        payload: p.payload.to_vec(),
                        content_type: props.content_type,
                        correlation_data: props.correlation_data.map(|c| c.to_vec()),
                        user_properties: props.user_properties,
                    })
                }
                Event::Incoming(Packet::PubAck(a)) => In::PubAck(format!("{:?}", a.reason)),
                Event::Incoming(Packet::SubAck(s)) => In::SubAck(
                    s.return_codes
                        .iter()
                        .map(|c| match c {
                            rumqttc::v5::mqttbytes::v5::SubscribeReasonCode::Success(_) => {
                                "Success".to_owned()
                            }
                            refused => format!("{refused:?}"),
                        })
                        .collect(),
                ),
                Event::Incoming(Packet::Disconnect(d)) => {
                    In::Closed(format!("{:?}", d.reason_code))
                }
                _ => return None,
            })
        };
        let task = tokio::spawn(async move {
            loop {
                let got = match events.poll().await {
                    Ok(event) => match translate(event) {
                        Some(got) => got,
                        None => continue,
                    },
                    Err(e) => {
                        // what was read with the packet that ended the connection
                        // (acknowledgements before a DISCONNECT) is still queued
                        for event in events.state.events.drain(..) {
                            if let Some(got) = translate(event) {
                                let _ = tx.send(got);
                            }
                        }
                        let _ = tx.send(In::Closed(format!("{e:?}")));
                        break;
                    }
                };
                if tx.send(got).is_err() {
                    break;
                }
            }
        });
        Ok(Client {
            session_present,
            handle: Handle::V5(client),
            received,
            task,
        })
    } else {
        use rumqttc::{AsyncClient, Event, LastWill, MqttOptions, Packet, QoS};
        let mut mqtt = MqttOptions::new(&options.client_id, host, addr.port());
        mqtt.set_keep_alive(Duration::from_secs(30));
        if let (Some(u), Some(p)) = (&options.username, &options.password) {
            mqtt.set_credentials(u, p);
        }
        if let Some(t) = transport(&options.tls) {
            mqtt.set_transport(t);
        }
        if let Some((topic, payload)) = &options.will {
            mqtt.set_last_will(LastWill::new(
                topic,
                payload.as_bytes(),
                QoS::AtLeastOnce,
                false,
            ));
        }
        if options.session.is_some() {
            mqtt.set_clean_session(false);
        }
        let (client, mut events) = AsyncClient::new(mqtt, 1000);
        let session_present = match tokio::time::timeout(WAIT, events.poll()).await {
            Ok(Ok(Event::Incoming(Packet::ConnAck(ack)))) => ack.session_present,
            Ok(Ok(other)) => return Err(format!("{other:?}")),
            Ok(Err(e)) => return Err(format!("{e:?}")),
            Err(_) => return Err("no CONNACK".into()),
        };
        let translate = |event| {
            Some(match event {
                Event::Incoming(Packet::Publish(p)) => In::Publish(Received {
                    topic: p.topic,
                    payload: p.payload.to_vec(),
                    ..Default::default()
                }),
                Event::Incoming(Packet::PubAck(_)) => In::PubAck("Success".into()),
                Event::Incoming(Packet::SubAck(s)) => In::SubAck(
                    s.return_codes
                        .iter()
                        .map(|c| match c {
                            rumqttc::SubscribeReasonCode::Success(_) => "Success".to_owned(),
                            refused => format!("{refused:?}"),
                        })
                        .collect(),
                ),
                _ => return None,
            })
        };
        let task = tokio::spawn(async move {
            loop {
                let got = match events.poll().await {
                    Ok(event) => match translate(event) {
                        Some(got) => got,
                        None => continue,
                    },
                    Err(e) => {
                        // what was read with the end of the connection is still queued
                        for event in events.state.events.drain(..) {
                            if let Some(got) = translate(event) {
                                let _ = tx.send(got);
                            }
                        }
                        let _ = tx.send(In::Closed(format!("{e:?}")));
                        break;
                    }
                };
                if tx.send(got).is_err() {
                    break;
                }
            }
        });
        Ok(Client {
            session_present,
            handle: Handle::V3(client),
            received,
            task,
        })
    }
}

impl Client {
    /// Publishes at QoS 1 (or 0), with a content type on MQTT 5. Once the connection has
    /// ended (`In::Closed` is queued), the publish is dropped.
    pub async fn publish(
        &self,
        topic: &str,
        qos1: bool,
        payload: &[u8],
        content_type: Option<&str>,
    ) {
        match &self.handle {
            Handle::V3(c) => {
                let qos = if qos1 {
                    rumqttc::QoS::AtLeastOnce
                } else {
                    rumqttc::QoS::AtMostOnce
                };
                // (an error only means the connection has ended)
                let _ = c.publish(topic, qos, false, payload.to_vec()).await;
            }
            Handle::V5(c) => {
                use rumqttc::v5::mqttbytes::QoS;
                let qos = if qos1 {
                    QoS::AtLeastOnce
                } else {
                    QoS::AtMostOnce
                };
                let props = rumqttc::v5::mqttbytes::v5::PublishProperties {
                    content_type: content_type.map(str::to_owned),
                    ..Default::default()
                };
                let _ = c
                    .publish_with_properties(topic, qos, false, payload.to_vec(), props)
                    .await;
            }
        }
    }

    /// Subscribes at QoS 1; `binary` asks (MQTT 5) for events in binary mode.
    pub async fn subscribe(&self, filter: &str, binary: bool) {
        match &self.handle {
            Handle::V3(c) => c
                .subscribe(filter, rumqttc::QoS::AtLeastOnce)
                .await
                .unwrap(),
            Handle::V5(c) => {
                let props = rumqttc::v5::mqttbytes::v5::SubscribeProperties {
                    id: None,
                    user_properties: if binary {
                        vec![("content-mode".into(), "binary".into())]
                    } else {
                        Vec::new()
                    },
                };
                c.subscribe_with_properties(filter, rumqttc::v5::mqttbytes::QoS::AtLeastOnce, props)
                    .await
                    .unwrap()
            }
        }
    }

    /// Subscribes and returns whether it was granted.
    pub async fn subscribed(&mut self, filter: &str, binary: bool) -> bool {
        self.subscribe(filter, binary).await;
        match self.next_ack().await {
            In::SubAck(codes) => codes == ["Success"],
            other => panic!("expected a SUBACK for {filter}, got {other:?}"),
        }
    }

    /// Subscribes (structured events) and returns the SUBACK's code for the filter:
    /// `Success`, or why not (MQTT 5: `NotAuthorized`, ...; MQTT 3.1.1: `Failure`).
    pub async fn suback(&mut self, filter: &str) -> String {
        self.subscribe(filter, false).await;
        match self.next_ack().await {
            In::SubAck(codes) if codes.len() == 1 => codes[0].clone(),
            other => panic!("expected a SUBACK for {filter}, got {other:?}"),
        }
    }

    /// The next thing received.
    pub async fn next(&mut self) -> In {
        tokio::time::timeout(WAIT, self.received.recv())
            .await
            .expect("something arrives within 10 s")
            .unwrap_or(In::Closed("the client stopped".into()))
    }

    /// The next message, skipping acknowledgements.
    pub async fn message(&mut self) -> Received {
        loop {
            match self.next().await {
                In::Publish(p) => return p,
                In::Closed(why) => panic!("the connection closed: {why}"),
                _ => {}
            }
        }
    }

    /// The next message that is not a connection or registry change event.
    pub async fn event(&mut self) -> Received {
        loop {
            let m = self.message().await;
            let ty = m.property("type").map(str::to_owned).or_else(|| {
                serde_json::from_slice::<serde_json::Value>(&m.payload)
                    .ok()
                    .and_then(|v| v["type"].as_str().map(str::to_owned))
            });
            if !matches!(
                ty.as_deref(),
                Some("io.drogue.connection.v1" | "io.drogue.registry.v1")
            ) {
                return m;
            }
        }
    }

    /// The next acknowledgement or end of connection, skipping messages.
    pub async fn next_ack(&mut self) -> In {
        loop {
            match self.next().await {
                In::Publish(_) => {}
                other => return other,
            }
        }
    }

    /// Asserts nothing arrives for a while.
    pub async fn quiet(&mut self, wait: Duration) {
        if let Ok(Some(got)) = tokio::time::timeout(wait, self.received.recv()).await {
            panic!("nothing should arrive, but got {got:?}");
        }
    }

    /// Discards what arrives until nothing has for `wait`.
    pub async fn drain(&mut self, wait: Duration) {
        while let Ok(Some(_)) = tokio::time::timeout(wait, self.received.recv()).await {}
    }

    /// A clean DISCONNECT.
    pub async fn disconnect(self) {
        match &self.handle {
            Handle::V3(c) => c.disconnect().await.unwrap(),
            Handle::V5(c) => c.disconnect().await.unwrap(),
        }
        let _ = tokio::time::timeout(WAIT, self.task).await;
    }

    /// Drops the connection without a DISCONNECT (as a device losing power).
    pub fn kill(self) {
        self.task.abort();
    }
}
