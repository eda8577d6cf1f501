//! DynamoDB requests per ingested message, counted by [`CountingProxy`] between a real
//! function binary (`http-endpoint` or `mqtt-ingest`, under the emulated Lambda Runtime
//! API) and moto: the function's DynamoDB endpoint (`AWS_ENDPOINT_URL_DYNAMODB`) is the
//! proxy, Kinesis is moto itself. Shared by the test that holds the functions to their
//! figures (`tests/lambda/dynamodb_reads.rs`) and the bench that prints them
//! (`tests/bench/dynamodb-reads.sh`, the `dynamodb-reads` binary).

use crate::backend::{fresh_dynamo_table, fresh_kinesis_stream, kinesis_client, moto_url};
use crate::dynamo_proxy::{CountingProxy, Counts};
use crate::lambda::{FunctionProcess, RuntimeApi, lambda_environment, start_path};
use base64::Engine;
use drogue_shared::access::Principal;
use drogue_shared::access::authz::AccessControl;
use drogue_shared::model::AppName;
use drogue_shared::registry::Registry;
use drogue_shared::store::dynamodb::DynamoStore;
use serde_json::{Value, json};
use std::path::Path;
use std::sync::Arc;

/// The application every device of a measurement is in.
pub const APP: &str = "reads";
/// The gateway of a measurement, and its password.
pub const GATEWAY: &str = "gw";

/// How messages come in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ingest {
    /// `POST /v1/telemetry` through API Gateway to `http-endpoint`.
    Http,
    /// A publish on `dt/{app}/{device}/telemetry`, handed by the IoT rule to
    /// `mqtt-ingest`.
    Mqtt,
}

impl Ingest {
    /// The function binary.
    pub fn binary(self) -> &'static str {
        match self {
            Self::Http => "http-endpoint",
            Self::Mqtt => "mqtt-ingest",
        }
    }
}

/// Who sends a message: a device for itself, or the gateway for one of its devices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sender {
    pub device: String,
    /// The device the gateway sends for (`as=` over HTTP, the topic over MQTT).
    pub r#as: Option<String>,
}

/// The password of every device of a measurement (the registry stores its hash).
pub fn password_of(device: &str) -> String {
    format!("secret-of-{device}")
}

/// A registry with `devices` devices (`device-0`, ...) in [`APP`], and the gateway
/// [`GATEWAY`] serving all of them; a Kinesis stream.
pub struct Registered {
    pub store: DynamoStore,
    pub stream: String,
    pub registry: Registry,
    pub admin: Principal,
}

/// The name of device `i`.
pub fn device_name(i: usize) -> String {
    format!("device-{i}")
}

/// A fresh table with `devices` devices and the gateway, and a fresh stream.
pub async fn register(devices: usize) -> Registered {
    let store = fresh_dynamo_table().await;
    let stream = fresh_kinesis_stream(&kinesis_client(&moto_url())).await;
    let mut admin = Principal::user("admin");
    admin.roles.push(AccessControl::DEFAULT_ADMIN_ROLE.into());
    let registry = Registry::new(Arc::new(store.clone()), AccessControl::default());
    let input = |v| serde_json::from_value(v).unwrap();
    registry
        .create_application(&admin, input(json!({"metadata": {"name": APP}})))
        .await
        .unwrap();
    let app = AppName::parse(APP).unwrap();
    let pass = |name: &str| json!([{"pass": password_of(name)}]);
    registry
        .create_device(
            &admin,
            &app,
            input(json!({"metadata": {"name": GATEWAY}, "spec": {"authentication": {"credentials": pass(GATEWAY)}}})),
        )
        .await
        .unwrap();
    for i in 0..devices {
        let name = device_name(i);
        let spec = json!({
            "authentication": {"credentials": pass(&name)},
            "gatewaySelector": {"matchNames": [GATEWAY]},
        });
        registry
            .create_device(
                &admin,
                &app,
                input(json!({"metadata": {"name": name}, "spec": spec})),
            )
            .await
            .unwrap();
    }
    Registered {
        store,
        stream,
        registry,
        admin,
    }
}

/// A function binary under its own Runtime API, its DynamoDB requests through a counting
/// proxy; stopped when dropped.
pub struct CountedFunction {
    // dropped (killed) first, before its Runtime API goes away under it
    _process: FunctionProcess,
    pub ingest: Ingest,
    pub api: RuntimeApi,
    pub proxy: CountingProxy,
}

impl CountedFunction {
    /// Starts `binary` (the `ingest` function) over `registered`, with `settings` (such
    /// as `DROGUE_DEVICE_CACHE_TTL`).
    pub async fn start(
        binary: &Path,
        ingest: Ingest,
        registered: &Registered,
        settings: &[(&str, &str)],
    ) -> Self {
        let proxy = CountingProxy::start(&moto_url()).await;
        let api = RuntimeApi::start(ingest.binary()).await;
        let mut env = lambda_environment(&api, ingest.binary(), &moto_url());
        env.push(("AWS_ENDPOINT_URL_DYNAMODB".into(), proxy.url()));
        env.push(("DROGUE_TABLE".into(), registered.store.table().into()));
        env.push(("DROGUE_EVENT_STREAM".into(), registered.stream.clone()));
        env.extend(settings.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let process = start_path(binary, &env);
        Self {
            ingest,
            api,
            proxy,
            _process: process,
        }
    }

    /// Sends message `n` from `sender` with `password`; whether it was accepted (HTTP
    /// 202, MQTT `accepted`), and the function's answer.
    pub async fn send_with(&self, sender: &Sender, password: &str, n: usize) -> (bool, Value) {
        let payload = json!({"n": n}).to_string();
        match self.ingest {
            Ingest::Http => {
                let mut event = crate::events::event("http-telemetry-basic.json");
                let basic = base64::engine::general_purpose::STANDARD
                    .encode(format!("{}@{APP}:{password}", sender.device));
                event["headers"]["authorization"] = json!(format!("Basic {basic}"));
                event["headers"]["content-length"] = json!(payload.len().to_string());
                event["body"] = json!(payload);
                if let Some(target) = &sender.r#as {
                    event["rawQueryString"] = json!(format!("as={target}"));
                    event["queryStringParameters"] = json!({"as": target});
                }
                let answer = self.api.invoke(event).await.response();
                (answer["statusCode"] == 202, answer)
            }
            Ingest::Mqtt => {
                let device = sender.r#as.as_deref().unwrap_or(&sender.device);
                let event = json!({
                    "payload": base64::engine::general_purpose::STANDARD.encode(&payload),
                    "topic": format!("dt/{APP}/{device}/telemetry"),
                    "clientId": format!("{}@{APP}", sender.device),
                    "contentType": "application/json",
                    "timestamp": chrono::Utc::now().timestamp_millis(),
                });
                let answer = self.api.invoke(event).await.response();
                (answer["outcome"] == "accepted", answer)
            }
        }
    }

    /// Sends message `n` from `sender` with its password; panics unless accepted.
    pub async fn send(&self, sender: &Sender, n: usize) {
        let (accepted, answer) = self
            .send_with(sender, &password_of(&sender.device), n)
            .await;
        assert!(
            accepted,
            "{:?} message {n} from {sender:?} was not accepted: {answer}",
            self.ingest
        );
    }
}

/// What one measurement counted.
#[derive(Debug, Clone, Copy)]
pub struct Measured {
    /// The first message (the function's first invocation).
    pub first: Counts,
    /// The messages after the first, warm.
    pub warm: Counts,
    /// How many messages `warm` counts.
    pub messages: u64,
    /// Events the stream got (every message once: `messages + 1`).
    pub events: usize,
    /// Of them, different messages (by the number each message carries).
    pub distinct: usize,
}

impl Measured {
    /// Read requests per warm message.
    pub fn reads_per_message(&self) -> f64 {
        self.warm.reads as f64 / self.messages as f64
    }

    /// Read units per warm message (items of up to 4 KB).
    pub fn read_units_per_message(&self) -> f64 {
        self.warm.read_units / self.messages as f64
    }
}

/// Sends `1 + messages` messages through a fresh function over `registered`, message `i`
/// from `senders[i % senders.len()]`: the counts of the first and of the rest, and the
/// events that reached the stream (their CloudEvent ids, each message once).
pub async fn measure(
    binary: &Path,
    ingest: Ingest,
    registered: &Registered,
    senders: &[Sender],
    messages: usize,
    settings: &[(&str, &str)],
) -> Measured {
    let kinesis = kinesis_client(&moto_url());
    let before = crate::backend::kinesis_records(&kinesis, &registered.stream)
        .await
        .len();
    let function = CountedFunction::start(binary, ingest, registered, settings).await;
    function.send(&senders[0], 0).await;
    let first = Counts::of(&function.proxy.take());
    for n in 1..=messages {
        function.send(&senders[n % senders.len()], n).await;
    }
    let warm = Counts::of(&function.proxy.take());
    let records = crate::backend::kinesis_records(&kinesis, &registered.stream).await;
    let events = records.len() - before;
    let mut sent: Vec<u64> = records[before..]
        .iter()
        .map(|(_, data)| {
            let event: Value = serde_json::from_slice(data).expect("a JSON CloudEvent");
            event["data"]["n"].as_u64().expect("the message's number")
        })
        .collect();
    sent.sort_unstable();
    sent.dedup();
    Measured {
        first,
        warm,
        messages: messages as u64,
        events,
        distinct: sent.len(),
    }
}
