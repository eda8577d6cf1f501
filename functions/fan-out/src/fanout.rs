//! The fan-out: the target of the Kinesis event stream (an event source mapping with
//! `ReportBatchItemFailures`).
//!
//! Each record is one event, the structured JSON CloudEvent; its `application` extension
//! names the application. For each record, in this order:
//!
//! 1. it is published to `app/{app}` on IoT Core (QoS 1, the record's bytes as payload,
//!    content type `application/cloudevents+json; charset=utf-8`), which reaches every
//!    MQTT subscriber of the application, including persistent sessions that are offline;
//! 2. it is posted to every WebSocket connection kept for the application (of the same
//!    application `uid`, and of the event's channel when the connection asked for one)
//!    whose access still holds ([`crate::access`]: checked before each delivery, on what
//!    was read at most [`crate::access::RECHECK_PERIOD`] ago). A connection whose access
//!    ended gets nothing more: it is closed (`DeleteConnection`) and forgotten. A
//!    connection that is gone (`GoneException`) is forgotten; any other failure to post
//!    to one connection is logged and does not fail the record, so that one consumer
//!    cannot hold up everyone's events.
//!
//! A record fails when the publish fails or the application's connections, or what
//! decides their access (the application, access tokens), cannot be read. A batch comes from one shard, in sequence order; Lambda retries a shard from the
//! lowest sequence number reported, so once a record fails, every later record of the batch
//! is reported too, and no later record is started. Records are handled concurrently
//! across applications ([`FanOut::concurrency`] at a time) and in order within one, so an
//! application's events keep their order. Delivery is at least once: a retried record
//! can reach a subscriber twice (a CloudEvent's `id` tells).
//!
//! A record that is no CloudEvent of an application (not JSON, no valid `application`)
//! can never succeed: it is logged and skipped, not retried.

use crate::access::{Access, Lookups, decide};
use async_trait::async_trait;
use aws_lambda_events::event::kinesis::{KinesisEvent, KinesisEventRecord};
use aws_lambda_events::event::streams::KinesisEventResponse;
use chrono::{DateTime, Utc};
use drogue_shared::access::authz::AccessControl;
use drogue_shared::aws::Lazy;
use drogue_shared::config::{AdminRole, IotData, Table, non_empty};
use drogue_shared::model::AppName;
use drogue_shared::store::dynamodb::{DynamoStore, StreamConnection};
use drogue_shared::store::{
    ApplicationStore, StoreResult, StoredApplication, StoredToken, TokenStore,
};
use futures_util::StreamExt;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// An error of a backend.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// WebSocket posts in flight per event.
const POSTS_IN_FLIGHT: usize = 16;

/// Publishes to MQTT topics (IoT Core's data plane).
#[async_trait]
pub trait MqttPublisher: Send + Sync {
    async fn publish(&self, topic: &str, payload: &[u8]) -> Result<(), BoxError>;
}

/// Why a post to a WebSocket connection failed.
#[derive(Debug)]
pub enum PostError {
    /// The connection is closed (`GoneException`).
    Gone,
    Failed(BoxError),
}

/// Sends messages to WebSocket connections and closes them (API Gateway's `@connections`
/// API).
#[async_trait]
pub trait ConnectionPoster: Send + Sync {
    async fn post(&self, connection: &str, payload: &[u8]) -> Result<(), PostError>;
    /// Closes a connection (`Gone`: it was closed already).
    async fn close(&self, connection: &str) -> Result<(), PostError>;
}

/// The kept WebSocket connections of applications, and what decides their access.
#[async_trait]
pub trait Subscribers: Send + Sync {
    /// The unexpired connections of an application.
    async fn connections(
        &self,
        application: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<StreamConnection>>;
    /// Forgets a connection.
    async fn remove(&self, application: &str, connection: &str) -> StoreResult<()>;
    /// The application of this name, if there is one.
    async fn application(&self, name: &str) -> StoreResult<Option<StoredApplication>>;
    /// The access token with this prefix, if there is one.
    async fn token(&self, prefix: &str) -> StoreResult<Option<StoredToken>>;
}

#[async_trait]
impl Subscribers for DynamoStore {
    async fn connections(
        &self,
        application: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<StreamConnection>> {
        self.stream_connections(application, now).await
    }

    async fn remove(&self, application: &str, connection: &str) -> StoreResult<()> {
        self.delete_stream_connection(application, connection).await
    }

    async fn application(&self, name: &str) -> StoreResult<Option<StoredApplication>> {
        match AppName::parse(name) {
            Ok(name) => self.get_application(&name).await,
            Err(_) => Ok(None),
        }
    }

    async fn token(&self, prefix: &str) -> StoreResult<Option<StoredToken>> {
        self.get_token(prefix).await
    }
}

/// IoT Core's data plane.
#[derive(Clone, Debug)]
pub struct IotCore(pub Lazy<aws_sdk_iotdataplane::Client>);

#[async_trait]
impl MqttPublisher for IotCore {
    async fn publish(&self, topic: &str, payload: &[u8]) -> Result<(), BoxError> {
        use aws_sdk_iotdataplane::primitives::Blob;
        use aws_sdk_iotdataplane::types::PayloadFormatIndicator;
        self.0
            .publish()
            .topic(topic)
            .qos(1)
            .payload(Blob::new(payload))
            .content_type(crate::CONTENT_TYPE)
            .payload_format_indicator(PayloadFormatIndicator::Utf8Data)
            .send()
            .await?;
        Ok(())
    }
}

/// API Gateway's management API of the WebSocket API.
#[derive(Clone, Debug)]
pub struct Connections(pub Lazy<aws_sdk_apigatewaymanagement::Client>);

#[async_trait]
impl ConnectionPoster for Connections {
    async fn post(&self, connection: &str, payload: &[u8]) -> Result<(), PostError> {
        use aws_sdk_apigatewaymanagement::primitives::Blob;
        match self
            .0
            .post_to_connection()
            .connection_id(connection)
            .data(Blob::new(payload))
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_gone_exception()) => {
                Err(PostError::Gone)
            }
            Err(e) => Err(PostError::Failed(Box::new(e))),
        }
    }

    async fn close(&self, connection: &str) -> Result<(), PostError> {
        match self
            .0
            .delete_connection()
            .connection_id(connection)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_gone_exception()) => {
                Err(PostError::Gone)
            }
            Err(e) => Err(PostError::Failed(Box::new(e))),
        }
    }
}

/// What the fan-out reads from its flags and environment (see `drogue_shared::config`).
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "fan-out",
    about = "Delivers events to MQTT and WebSocket subscribers on AWS"
)]
pub struct Config {
    #[command(flatten)]
    pub table: Table,
    #[command(flatten)]
    pub iot: IotData,
    /// The WebSocket API's management endpoint; without it, events go to MQTT only.
    #[arg(long, env = "DROGUE_WEBSOCKET_CALLBACK_URL", value_name = "DROGUE_WEBSOCKET_CALLBACK_URL", value_parser = non_empty)]
    pub websocket_callback_url: Option<String>,
    /// Applications handled at once (0 counts as 1).
    #[arg(
        long,
        env = "DROGUE_FANOUT_CONCURRENCY",
        value_name = "DROGUE_FANOUT_CONCURRENCY",
        default_value_t = 8
    )]
    pub fanout_concurrency: usize,
    /// As for `$connect`.
    #[command(flatten)]
    pub admin_role: AdminRole,
}

/// One record, as far as the fan-out needs it.
struct Record {
    sequence: String,
    /// `None`: not an application's CloudEvent (skipped).
    event: Option<Event>,
}

struct Event {
    application: String,
    application_uid: Option<String>,
    subject: Option<String>,
    payload: Vec<u8>,
}

fn parse(record: &KinesisEventRecord) -> Option<Event> {
    let payload = record.kinesis.data.0.clone();
    let json: Value = serde_json::from_slice(&payload).ok()?;
    let text = |name: &str| json.get(name).and_then(Value::as_str).map(str::to_owned);
    let application = text("application")?;
    AppName::parse(&application).ok()?;
    Some(Event {
        application,
        application_uid: text("applicationuid"),
        subject: text("subject"),
        payload,
    })
}

/// Why the fan-out failed a whole batch: never (a record that cannot be delivered is in
/// the answer's `batchItemFailures`, retried from there).
#[derive(Debug)]
pub enum FanOutError {}

impl std::fmt::Display for FanOutError {
    fn fmt(&self, _: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {}
    }
}

impl std::error::Error for FanOutError {}

/// The fan-out; cheap to clone.
#[derive(Clone)]
pub struct FanOut {
    publisher: Arc<dyn MqttPublisher>,
    poster: Option<Arc<dyn ConnectionPoster>>,
    subscribers: Arc<dyn Subscribers>,
    concurrency: usize,
    authz: AccessControl,
    lookups: Arc<Lookups>,
}

impl FanOut {
    pub fn new(
        publisher: Arc<dyn MqttPublisher>,
        poster: Option<Arc<dyn ConnectionPoster>>,
        subscribers: Arc<dyn Subscribers>,
    ) -> Self {
        Self {
            publisher,
            poster,
            subscribers,
            concurrency: 8,
            authz: AccessControl::default(),
            lookups: Arc::new(Lookups::default()),
        }
    }

    /// The administrators' role, as `$connect` knows it.
    pub fn authorizer(mut self, authz: AccessControl) -> Self {
        self.authz = authz;
        self
    }

    /// How long what was read about applications and tokens is relied on (by default
    /// [`crate::access::RECHECK_PERIOD`]).
    pub fn recheck_period(mut self, period: std::time::Duration) -> Self {
        self.lookups = Arc::new(Lookups::new(period));
        self
    }

    /// Applications handled at once (at least one).
    pub fn concurrency(mut self, applications: usize) -> Self {
        self.concurrency = applications.max(1);
        self
    }

    /// Handles a Kinesis event (an event that is none is refused by the runtime: a
    /// function error); the answer names the records to retry. Failed deliveries are
    /// such records, never an error of the whole batch.
    pub async fn handle(&self, event: KinesisEvent) -> Result<KinesisEventResponse, FanOutError> {
        Ok(self.fan_out(&event).await)
    }

    /// Delivers every record of a batch; the records to retry.
    pub async fn fan_out(&self, event: &KinesisEvent) -> KinesisEventResponse {
        let records: Vec<Record> = event
            .records
            .iter()
            .map(|r| Record {
                sequence: r.kinesis.sequence_number.clone(),
                event: parse(r),
            })
            .collect();
        // indices per application, in sequence order
        let mut groups: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        for (i, record) in records.iter().enumerate() {
            match &record.event {
                Some(event) => groups.entry(event.application.clone()).or_default().push(i),
                None => tracing::warn!(
                    sequence = %record.sequence,
                    "a record that is no application's CloudEvent: skipped"
                ),
            }
        }
        // the index of the first failed record (records.len(): none)
        let failed = AtomicUsize::new(records.len());
        let records = &records;
        let failed_ref = &failed;
        futures_util::stream::iter(groups)
            .map(|(application, indices)| async move {
                self.application(&application, indices, records, failed_ref)
                    .await
            })
            .buffer_unordered(self.concurrency)
            .collect::<()>()
            .await;
        let first = failed.load(Ordering::SeqCst);
        let mut response = KinesisEventResponse::default();
        for record in records.iter().skip(first) {
            response.add_failure(record.sequence.clone());
        }
        if first < records.len() {
            tracing::warn!(
                first = %records[first].sequence,
                retried = records.len() - first,
                "records failed; they are retried from the first one"
            );
        }
        response
    }

    /// The records of one application, in order; stops at the first failure.
    async fn application(
        &self,
        application: &str,
        indices: Vec<usize>,
        records: &[Record],
        failed: &AtomicUsize,
    ) {
        let mut connections: Option<Vec<StreamConnection>> = None;
        for i in indices {
            if failed.load(Ordering::SeqCst) < i {
                // an earlier record failed: this one is retried after it
                return;
            }
            let Some(event) = &records[i].event else {
                continue;
            };
            if let Err(e) = self.deliver(application, event, &mut connections).await {
                tracing::error!(
                    application,
                    sequence = %records[i].sequence,
                    error = %e,
                    source = ?e.source(),
                    "an event could not be delivered"
                );
                failed.fetch_min(i, Ordering::SeqCst);
                return;
            }
        }
    }

    /// Publishes one event and posts it to the application's connections (read once per
    /// batch and application, into `connections`).
    async fn deliver(
        &self,
        application: &str,
        event: &Event,
        connections: &mut Option<Vec<StreamConnection>>,
    ) -> Result<(), BoxError> {
        let topic = crate::topic(application);
        let publish = self.publisher.publish(&topic, &event.payload);
        if connections.is_none() && self.poster.is_some() {
            let (published, read) = tokio::join!(
                publish,
                self.subscribers.connections(application, Utc::now())
            );
            published?;
            *connections = Some(read?);
        } else {
            publish.await?;
        }
        let (Some(poster), Some(kept)) = (&self.poster, connections.as_mut()) else {
            return Ok(());
        };
        let wanted: Vec<&StreamConnection> = kept
            .iter()
            .filter(|c| c.wants(event.application_uid.as_deref(), event.subject.as_deref()))
            .collect();
        let (wanted, ended) = self.check_access(application, wanted).await?;
        let closed = self.close(application, poster.as_ref(), &ended).await;
        let gone: Vec<String> = futures_util::stream::iter(wanted)
            .map(|connection| async move {
                match poster.post(&connection, &event.payload).await {
                    Ok(()) => None,
                    Err(PostError::Gone) => Some(connection),
                    Err(PostError::Failed(e)) => {
                        tracing::warn!(
                            application,
                            connection,
                            error = %e,
                            "an event could not be posted to a WebSocket connection"
                        );
                        None
                    }
                }
            })
            .buffer_unordered(POSTS_IN_FLIGHT)
            .filter_map(|gone| async move { gone })
            .collect()
            .await;
        for id in &gone {
            match self.subscribers.remove(application, id).await {
                Ok(()) => {
                    tracing::info!(application, connection = %id, "a gone WebSocket connection was forgotten")
                }
                Err(e) => {
                    tracing::warn!(application, connection = %id, error = %e, "a gone WebSocket connection could not be forgotten")
                }
            }
        }
        kept.retain(|c| !gone.contains(&c.id) && !closed.contains(&c.id));
        Ok(())
    }

    /// Splits connections into those whose access holds (their ids) and those whose
    /// access ended (with why).
    async fn check_access(
        &self,
        application: &str,
        connections: Vec<&StreamConnection>,
    ) -> Result<(Vec<String>, Vec<(String, &'static str)>), BoxError> {
        if connections.is_empty() {
            return Ok((Vec::new(), Vec::new()));
        }
        let store = self.subscribers.as_ref();
        let stored = self.lookups.application(store, application).await?;
        // owned: the stream's futures must not borrow from their items
        let mut prefixes: Vec<String> =
            connections.iter().filter_map(|c| c.token.clone()).collect();
        prefixes.sort_unstable();
        prefixes.dedup();
        let tokens: HashMap<String, Option<Arc<StoredToken>>> =
            futures_util::stream::iter(prefixes)
                .map(|prefix| async move {
                    self.lookups
                        .token(store, &prefix)
                        .await
                        .map(|token| (prefix, token))
                })
                .buffer_unordered(POSTS_IN_FLIGHT)
                .collect::<Vec<_>>()
                .await
                .into_iter()
                .collect::<StoreResult<_>>()?;
        let now = Utc::now();
        let (mut granted, mut ended) = (Vec::new(), Vec::new());
        for connection in connections {
            let token = connection
                .token
                .as_deref()
                .and_then(|prefix| tokens.get(prefix).cloned().flatten());
            match decide(
                connection,
                stored.as_deref(),
                token.as_deref(),
                &self.authz,
                now,
            ) {
                Access::Granted => granted.push(connection.id.clone()),
                Access::Ended(why) => ended.push((connection.id.clone(), why)),
            }
        }
        Ok((granted, ended))
    }

    /// Closes and forgets the connections whose access ended; the ids of those no longer
    /// kept. A connection that cannot be closed now stays kept (and gets nothing), to be
    /// closed at a later delivery.
    async fn close(
        &self,
        application: &str,
        poster: &dyn ConnectionPoster,
        ended: &[(String, &'static str)],
    ) -> Vec<String> {
        // owned (`why` too): the stream's futures must not borrow from their items
        let ended: Vec<(String, String)> = ended
            .iter()
            .map(|(connection, why)| (connection.clone(), (*why).to_owned()))
            .collect();
        futures_util::stream::iter(ended)
            .map(|(connection, why)| async move {
                match poster.close(&connection).await {
                    Ok(()) | Err(PostError::Gone) => {}
                    Err(PostError::Failed(e)) => {
                        tracing::warn!(application, connection, why = %why, error = %e, "a WebSocket connection whose access ended could not be closed");
                        return None;
                    }
                }
                match self.subscribers.remove(application, &connection).await {
                    Ok(()) => {
                        tracing::info!(application, connection, why = %why, "access to a WebSocket connection's application ended: closed");
                    }
                    Err(e) => {
                        tracing::warn!(application, connection, why = %why, error = %e, "a closed WebSocket connection could not be forgotten");
                    }
                }
                Some(connection)
            })
            .buffer_unordered(POSTS_IN_FLIGHT)
            .filter_map(|closed| async move { closed })
            .collect()
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use drogue_shared::access::Role;
    use drogue_shared::store::StoreError;
    use serde_json::json;
    use std::collections::HashSet;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Fake {
        published: Mutex<Vec<(String, Vec<u8>)>>,
        /// topics whose publish fails
        failing_topics: HashSet<String>,
        posted: Mutex<Vec<(String, Vec<u8>)>>,
        gone: HashSet<String>,
        broken: HashSet<String>,
        connections: Mutex<Vec<StreamConnection>>,
        removed: Mutex<Vec<String>>,
        unavailable: HashSet<String>,
        queries: AtomicUsize,
        /// applications as stored, by name (not listed: owned by alice, uid `{app}-uid`)
        applications: Mutex<HashMap<String, Option<StoredApplication>>>,
        /// applications whose record cannot be read
        unreadable: HashSet<String>,
        tokens: Mutex<HashMap<String, StoredToken>>,
        /// reads of applications and tokens
        lookups: AtomicUsize,
        closed: Mutex<Vec<String>>,
    }

    #[async_trait]
    impl MqttPublisher for Fake {
        async fn publish(&self, topic: &str, payload: &[u8]) -> Result<(), BoxError> {
            if self.failing_topics.contains(topic) {
                return Err("throttled".into());
            }
            self.published
                .lock()
                .unwrap()
                .push((topic.into(), payload.into()));
            Ok(())
        }
    }

    #[async_trait]
    impl ConnectionPoster for Fake {
        async fn post(&self, connection: &str, payload: &[u8]) -> Result<(), PostError> {
            if self.gone.contains(connection) {
                return Err(PostError::Gone);
            }
            if self.broken.contains(connection) {
                return Err(PostError::Failed("limit exceeded".into()));
            }
            self.posted
                .lock()
                .unwrap()
                .push((connection.into(), payload.into()));
            Ok(())
        }

        async fn close(&self, connection: &str) -> Result<(), PostError> {
            if self.broken.contains(connection) {
                return Err(PostError::Failed("limit exceeded".into()));
            }
            self.closed.lock().unwrap().push(connection.into());
            Ok(())
        }
    }

    #[async_trait]
    impl Subscribers for Fake {
        async fn connections(
            &self,
            application: &str,
            _now: DateTime<Utc>,
        ) -> StoreResult<Vec<StreamConnection>> {
            self.queries.fetch_add(1, Ordering::SeqCst);
            if self.unavailable.contains(application) {
                return Err(StoreError::unavailable(std::io::Error::other("down")));
            }
            Ok(self
                .connections
                .lock()
                .unwrap()
                .iter()
                .filter(|c| c.application == application)
                .cloned()
                .collect())
        }

        async fn remove(&self, _application: &str, connection: &str) -> StoreResult<()> {
            self.removed.lock().unwrap().push(connection.into());
            self.connections
                .lock()
                .unwrap()
                .retain(|c| c.id != connection);
            Ok(())
        }

        async fn application(&self, name: &str) -> StoreResult<Option<StoredApplication>> {
            self.lookups.fetch_add(1, Ordering::SeqCst);
            if self.unreadable.contains(name) {
                return Err(StoreError::unavailable(std::io::Error::other("down")));
            }
            Ok(match self.applications.lock().unwrap().get(name) {
                Some(stored) => stored.clone(),
                None => Some(application(name, "alice", &[])),
            })
        }

        async fn token(&self, prefix: &str) -> StoreResult<Option<StoredToken>> {
            self.lookups.fetch_add(1, Ordering::SeqCst);
            Ok(self.tokens.lock().unwrap().get(prefix).cloned())
        }
    }

    fn application(name: &str, owner: &str, members: &[(&str, Role)]) -> StoredApplication {
        use drogue_shared::model::{Application, Metadata};
        StoredApplication {
            app: Application {
                metadata: Metadata {
                    name: name.into(),
                    application: None,
                    uid: format!("{name}-uid"),
                    creation_timestamp: Utc::now(),
                    generation: 0,
                    resource_version: String::new(),
                    deletion_timestamp: None,
                    finalizers: vec![],
                    labels: Default::default(),
                    annotations: Default::default(),
                },
                spec: Default::default(),
                status: Default::default(),
            },
            owner: owner.into(),
            members: members.iter().map(|(u, r)| (u.to_string(), *r)).collect(),
            transfer_owner: None,
        }
    }

    fn connection(id: &str, app: &str, channel: Option<&str>) -> StreamConnection {
        StreamConnection {
            id: id.into(),
            application: app.into(),
            application_uid: format!("{app}-uid"),
            user: "alice".into(),
            roles: vec![],
            token: None,
            credentials_expire: None,
            channel: channel.map(str::to_owned),
            connected: Utc::now(),
            expires: Utc::now() + chrono::Duration::hours(2),
        }
    }

    fn cloud_event(app: &str, subject: &str) -> Value {
        json!({
            "specversion": "1.0", "id": next_id(), "type": "io.drogue.event.v1",
            "source": format!("drogue://{app}/d1"), "subject": subject,
            "application": app, "applicationuid": format!("{app}-uid"),
            "datacontenttype": "application/json", "data": {"temp": 1},
        })
    }

    /// A new event id.
    fn next_id() -> String {
        static NEXT: AtomicUsize = AtomicUsize::new(1);
        format!("event-{}", NEXT.fetch_add(1, Ordering::SeqCst))
    }

    /// A Kinesis event of these record payloads, sequence numbers 100, 101, ...
    /// Hands a JSON event to the fan-out as the runtime does (typed in, JSON out).
    impl FanOut {
        async fn handle_json(&self, event: Value) -> anyhow::Result<Value> {
            let handler = |event, _| {
                let fan_out = self.clone();
                async move { fan_out.handle(event).await }
            };
            Ok(drogue_shared::runtime::handle_event(
                &handler,
                event,
                drogue_shared::runtime::EventContext::default(),
            )
            .await?)
        }
    }

    fn batch(payloads: &[Vec<u8>]) -> Value {
        use base64::Engine;
        let records: Vec<Value> = payloads
            .iter()
            .enumerate()
            .map(|(i, data)| {
                json!({
                    "kinesis": {
                        "kinesisSchemaVersion": "1.0",
                        "partitionKey": "app/d1",
                        "sequenceNumber": format!("{}", 100 + i),
                        "data": base64::engine::general_purpose::STANDARD.encode(data),
                        "approximateArrivalTimestamp": 1_764_000_000.5,
                    },
                    "eventSource": "aws:kinesis",
                    "eventVersion": "1.0",
                    "eventID": format!("shardId-000000000000:{}", 100 + i),
                    "eventName": "aws:kinesis:record",
                    "awsRegion": "us-east-1",
                    "eventSourceARN": "arn:aws:kinesis:us-east-1:123456789012:stream/events",
                })
            })
            .collect();
        json!({ "Records": records })
    }

    fn bytes(event: &Value) -> Vec<u8> {
        serde_json::to_vec(event).unwrap()
    }

    fn failures(answer: &Value) -> Vec<String> {
        answer["batchItemFailures"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["itemIdentifier"].as_str().unwrap().to_owned())
            .collect()
    }

    fn fan_out(fake: Arc<Fake>) -> FanOut {
        FanOut::new(fake.clone(), Some(fake.clone()), fake)
    }

    #[tokio::test]
    async fn each_event_reaches_its_topic_and_its_applications_connections_only() {
        let fake = Arc::new(Fake::default());
        fake.connections.lock().unwrap().extend([
            connection("a-all", "app-a", None),
            connection("a-state", "app-a", Some("state")),
            connection("b-all", "app-b", None),
        ]);
        let a = bytes(&cloud_event("app-a", "telemetry"));
        let b = bytes(&cloud_event("app-b", "state"));
        let answer = fan_out(fake.clone())
            .handle_json(batch(&[a.clone(), b.clone(), a.clone()]))
            .await
            .unwrap();
        assert_eq!(failures(&answer), Vec::<String>::new());
        let mut published = fake.published.lock().unwrap().clone();
        published.sort();
        assert_eq!(
            published,
            [
                ("app/app-a".to_owned(), a.clone()),
                ("app/app-a".to_owned(), a.clone()),
                ("app/app-b".to_owned(), b.clone())
            ]
        );
        let mut posted = fake.posted.lock().unwrap().clone();
        posted.sort();
        assert_eq!(
            posted,
            [
                ("a-all".to_owned(), a.clone()),
                ("a-all".to_owned(), a),
                ("b-all".to_owned(), b)
            ],
            "a-state wants another channel"
        );
        assert_eq!(
            fake.queries.load(Ordering::SeqCst),
            2,
            "one query per application and batch"
        );
    }

    #[tokio::test]
    async fn events_of_a_recreated_application_do_not_reach_old_connections() {
        let fake = Arc::new(Fake::default());
        fake.connections
            .lock()
            .unwrap()
            .push(connection("old", "app-a", None));
        let mut event = cloud_event("app-a", "telemetry");
        event["applicationuid"] = json!("another-uid");
        fan_out(fake.clone())
            .handle_json(batch(&[bytes(&event)]))
            .await
            .unwrap();
        assert!(fake.posted.lock().unwrap().is_empty());
        assert_eq!(fake.published.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn gone_connections_are_forgotten_and_broken_ones_do_not_fail_the_record() {
        let fake = Arc::new(Fake {
            gone: HashSet::from(["gone".to_owned()]),
            broken: HashSet::from(["broken".to_owned()]),
            ..Default::default()
        });
        fake.connections.lock().unwrap().extend([
            connection("gone", "app-a", None),
            connection("broken", "app-a", None),
            connection("fine", "app-a", None),
        ]);
        let a = bytes(&cloud_event("app-a", "telemetry"));
        let answer = fan_out(fake.clone())
            .handle_json(batch(&[a.clone(), a.clone()]))
            .await
            .unwrap();
        assert!(failures(&answer).is_empty());
        assert_eq!(*fake.removed.lock().unwrap(), ["gone"], "once");
        let posted: Vec<String> = fake
            .posted
            .lock()
            .unwrap()
            .iter()
            .map(|(c, _)| c.clone())
            .collect();
        assert_eq!(posted, ["fine", "fine"]);
    }

    #[tokio::test]
    async fn a_failed_record_and_every_later_one_are_reported() {
        let fake = Arc::new(Fake {
            failing_topics: HashSet::from(["app/app-b".to_owned()]),
            ..Default::default()
        });
        let a = bytes(&cloud_event("app-a", "telemetry"));
        let b = bytes(&cloud_event("app-b", "telemetry"));
        // 100: a, 101: b (fails), 102: a, 103: b
        let answer = fan_out(fake.clone())
            .concurrency(1)
            .handle_json(batch(&[a.clone(), b.clone(), a.clone(), b]))
            .await
            .unwrap();
        assert_eq!(failures(&answer), ["101", "102", "103"]);
        // app-a goes first (one application at a time, in name order): both of its
        // records are delivered before app-b's failure, and only 100 is not retried
        assert_eq!(fake.published.lock().unwrap().len(), 2);
    }

    #[tokio::test]
    async fn after_a_failure_an_application_stops_and_keeps_its_order() {
        let fake = Arc::new(Fake {
            unavailable: HashSet::from(["app-a".to_owned()]),
            ..Default::default()
        });
        let a = bytes(&cloud_event("app-a", "telemetry"));
        let answer = fan_out(fake.clone())
            .handle_json(batch(&[a.clone(), a.clone(), a]))
            .await
            .unwrap();
        assert_eq!(failures(&answer), ["100", "101", "102"]);
        assert_eq!(
            fake.queries.load(Ordering::SeqCst),
            1,
            "no later record of the application is tried"
        );
    }

    #[tokio::test]
    async fn records_that_are_no_application_events_are_skipped() {
        let fake = Arc::new(Fake::default());
        let mut bad_name = cloud_event("app-a", "telemetry");
        bad_name["application"] = json!("app/#");
        let answer = fan_out(fake.clone())
            .handle_json(batch(&[
                b"not json".to_vec(),
                bytes(&json!({"specversion": "1.0"})),
                bytes(&bad_name),
                bytes(&cloud_event("app-a", "telemetry")),
            ]))
            .await
            .unwrap();
        assert!(failures(&answer).is_empty());
        let topics: Vec<String> = fake
            .published
            .lock()
            .unwrap()
            .iter()
            .map(|(t, _)| t.clone())
            .collect();
        assert_eq!(topics, ["app/app-a"]);
    }

    #[tokio::test]
    async fn without_a_websocket_api_events_go_to_mqtt_only() {
        let fake = Arc::new(Fake::default());
        fake.connections
            .lock()
            .unwrap()
            .push(connection("c", "app-a", None));
        let answer = FanOut::new(fake.clone(), None, fake.clone())
            .handle_json(batch(&[bytes(&cloud_event("app-a", "telemetry"))]))
            .await
            .unwrap();
        assert!(failures(&answer).is_empty());
        assert_eq!(fake.published.lock().unwrap().len(), 1);
        assert_eq!(fake.queries.load(Ordering::SeqCst), 0);
    }

    fn posted_to(fake: &Fake) -> Vec<String> {
        let mut posted: Vec<String> = fake
            .posted
            .lock()
            .unwrap()
            .iter()
            .map(|(c, _)| c.clone())
            .collect();
        posted.sort();
        posted
    }

    #[tokio::test]
    async fn connections_whose_access_ended_get_nothing_and_are_closed_and_forgotten() {
        let fake = Arc::new(Fake::default());
        let now = Utc::now();
        let as_user = |id: &str, user: &str| StreamConnection {
            user: user.into(),
            ..connection(id, "app-a", None)
        };
        fake.tokens.lock().unwrap().insert(
            "drg_kept00".into(),
            StoredToken {
                prefix: "drg_kept00".into(),
                user: "olga".into(),
                name: None,
                roles: vec![],
                hash: String::new(),
                created: now,
                description: None,
                expires: None,
            },
        );
        fake.connections.lock().unwrap().extend([
            as_user("owner", "olga"),
            StreamConnection {
                token: Some("drg_kept00".into()),
                ..as_user("owner-token", "olga")
            },
            as_user("member", "rita"),
            as_user("removed", "mallory"),
            StreamConnection {
                token: Some("drg_gone00".into()),
                ..as_user("deleted-token", "olga")
            },
            StreamConnection {
                credentials_expire: Some(now - chrono::Duration::seconds(1)),
                ..as_user("expired", "olga")
            },
        ]);
        fake.applications.lock().unwrap().insert(
            "app-a".into(),
            Some(application("app-a", "olga", &[("rita", Role::Reader)])),
        );
        let a = bytes(&cloud_event("app-a", "telemetry"));
        let answer = fan_out(fake.clone())
            .handle_json(batch(&[a.clone(), a]))
            .await
            .unwrap();
        assert!(failures(&answer).is_empty());
        assert_eq!(
            posted_to(&fake),
            [
                "member",
                "member",
                "owner",
                "owner",
                "owner-token",
                "owner-token"
            ]
        );
        let mut closed = fake.closed.lock().unwrap().clone();
        closed.sort();
        assert_eq!(closed, ["deleted-token", "expired", "removed"], "once each");
        let mut removed = fake.removed.lock().unwrap().clone();
        removed.sort();
        assert_eq!(removed, closed);
        assert_eq!(
            fake.lookups.load(Ordering::SeqCst),
            3,
            "the application and two tokens, once per batch"
        );
    }

    #[tokio::test]
    async fn a_deleted_application_closes_its_connections() {
        let fake = Arc::new(Fake::default());
        fake.connections
            .lock()
            .unwrap()
            .push(connection("c", "app-a", None));
        fake.applications
            .lock()
            .unwrap()
            .insert("app-a".into(), None);
        fan_out(fake.clone())
            .handle_json(batch(&[bytes(&cloud_event("app-a", "telemetry"))]))
            .await
            .unwrap();
        assert!(fake.posted.lock().unwrap().is_empty());
        assert_eq!(*fake.closed.lock().unwrap(), ["c"]);
        assert_eq!(*fake.removed.lock().unwrap(), ["c"]);
        assert_eq!(fake.published.lock().unwrap().len(), 1, "MQTT as before");
    }

    #[tokio::test]
    async fn a_connection_that_cannot_be_closed_stays_kept_and_gets_nothing() {
        let fake = Arc::new(Fake {
            broken: HashSet::from(["c".to_owned()]),
            ..Default::default()
        });
        fake.connections
            .lock()
            .unwrap()
            .push(connection("c", "app-a", None));
        fake.applications
            .lock()
            .unwrap()
            .insert("app-a".into(), Some(application("app-a", "olga", &[])));
        let a = bytes(&cloud_event("app-a", "telemetry"));
        let answer = fan_out(fake.clone())
            .handle_json(batch(&[a.clone(), a]))
            .await
            .unwrap();
        assert!(failures(&answer).is_empty());
        assert!(fake.posted.lock().unwrap().is_empty());
        assert!(fake.removed.lock().unwrap().is_empty());
        assert_eq!(fake.connections.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn access_is_read_again_once_its_period_is_over() {
        let fake = Arc::new(Fake::default());
        fake.connections
            .lock()
            .unwrap()
            .push(connection("c", "app-a", None));
        let a = bytes(&cloud_event("app-a", "telemetry"));
        let cached = fan_out(fake.clone());
        for _ in 0..2 {
            cached
                .handle_json(batch(&[a.clone(), a.clone()]))
                .await
                .unwrap();
        }
        assert_eq!(
            fake.lookups.load(Ordering::SeqCst),
            1,
            "read once within the period, across batches"
        );
        assert_eq!(posted_to(&fake).len(), 4);

        // alice is no longer the owner: what was read within the period stands, after
        // it the change is seen
        let short = fan_out(fake.clone()).recheck_period(std::time::Duration::from_millis(300));
        short
            .handle_json(batch(std::slice::from_ref(&a)))
            .await
            .unwrap();
        assert_eq!(
            fake.lookups.load(Ordering::SeqCst),
            2,
            "another instance reads"
        );
        fake.applications
            .lock()
            .unwrap()
            .insert("app-a".into(), Some(application("app-a", "olga", &[])));
        short
            .handle_json(batch(std::slice::from_ref(&a)))
            .await
            .unwrap();
        assert_eq!(posted_to(&fake).len(), 6, "within the period");
        assert!(fake.closed.lock().unwrap().is_empty());
        tokio::time::sleep(std::time::Duration::from_millis(350)).await;
        short.handle_json(batch(&[a])).await.unwrap();
        assert_eq!(posted_to(&fake).len(), 6, "after it: nothing more");
        assert_eq!(*fake.closed.lock().unwrap(), ["c"]);
        assert_eq!(fake.lookups.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn when_access_cannot_be_read_the_record_is_retried_and_nothing_posted() {
        let fake = Arc::new(Fake {
            unreadable: HashSet::from(["app-a".to_owned()]),
            ..Default::default()
        });
        fake.connections
            .lock()
            .unwrap()
            .push(connection("c", "app-a", None));
        let a = bytes(&cloud_event("app-a", "telemetry"));
        let answer = fan_out(fake.clone())
            .handle_json(batch(&[a.clone(), a]))
            .await
            .unwrap();
        assert_eq!(failures(&answer), ["100", "101"]);
        assert!(fake.posted.lock().unwrap().is_empty());
        assert!(fake.closed.lock().unwrap().is_empty());
        assert_eq!(fake.connections.lock().unwrap().len(), 1, "still kept");
    }

    #[tokio::test]
    async fn what_is_no_kinesis_event_is_a_function_error() {
        let fake = Arc::new(Fake::default());
        assert!(
            fan_out(fake)
                .handle_json(json!({"hello": 1}))
                .await
                .is_err()
        );
    }
}

#[cfg(test)]
mod config_tests {
    use super::Config;
    use drogue_shared::config::{assert_refused, try_parse_flags};

    #[test]
    fn a_good_configuration() {
        let config = try_parse_flags::<Config>(&["--table", "drogue"]).unwrap();
        assert_eq!(config.table.as_str(), "drogue");
        assert_eq!(config.fanout_concurrency, 8);
        assert_eq!(config.websocket_callback_url, None);
        assert_eq!(config.admin_role.as_str(), "drogue-admin");
        let config = try_parse_flags::<Config>(&[
            "--table",
            "drogue",
            "--websocket-callback-url",
            "https://ws.example.com/prod",
            "--fanout-concurrency",
            "2",
            "--iot-data-endpoint",
            "https://iot.example.com",
        ])
        .unwrap();
        assert_eq!(config.fanout_concurrency, 2);
        assert!(config.websocket_callback_url.is_some() && config.iot.iot_data_endpoint.is_some());
    }

    #[test]
    fn missing_empty_or_bad_values_are_refused() {
        assert_refused::<Config>(&[], &["DROGUE_TABLE"]);
        assert_refused::<Config>(&["--table", ""], &["DROGUE_TABLE", "empty"]);
        assert_refused::<Config>(
            &["--table", "t", "--fanout-concurrency", "many"],
            &["DROGUE_FANOUT_CONCURRENCY"],
        );
    }
}
