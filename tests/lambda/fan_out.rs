//! The event fan-out and the WebSocket API's routes, as their binaries run on Lambda:
//! `stream` takes `$connect`/`$disconnect`/`$default` events and keeps connections in
//! DynamoDB (moto); `fan-out` takes Kinesis events made of the records the
//! `http-endpoint` and `mqtt-ingest` binaries wrote to moto's Kinesis, and publishes
//! them to IoT Core's data plane and API Gateway's `@connections` API (moto).
//!
//! moto keeps neither what is published to IoT Core nor what is posted to a connection
//! where a client could read it back, and it never answers `GoneException`. So the
//! fan-out reaches moto through a recording proxy: every request is passed on to moto
//! (which must accept it) and recorded; posts to connections the test calls gone, and
//! publishes while the test makes them fail, are answered with API Gateway's and IoT
//! Core's errors instead.

use super::{Function, fixture};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use drogue_shared::store::dynamodb::DynamoStore;
use drogue_tests::backend::{
    fresh_dynamo_table, fresh_kinesis_stream, kinesis_client, kinesis_stream_records, moto_url,
};
use drogue_tests::events::event;
use serde_json::{Value, json};
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// A request the proxy saw, and its answer.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    /// As sent (percent-encoded).
    path: String,
    query: String,
    body: Vec<u8>,
    status: u16,
}

impl Seen {
    /// The connection id of a `@connections` request.
    fn connection(&self) -> Option<&str> {
        self.path.strip_prefix("/@connections/")
    }
}

#[derive(Default)]
struct ProxyState {
    moto: String,
    gone: Mutex<HashSet<String>>,
    fail_publishes: AtomicBool,
    seen: Mutex<Vec<Seen>>,
}

/// The recording proxy in front of moto.
struct Proxy {
    url: String,
    state: Arc<ProxyState>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.server.abort();
    }
}

fn error(status: u16, kind: &str, message: &str) -> (u16, Response) {
    let response = Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .header("x-amzn-errortype", kind)
        .body(Body::from(json!({ "message": message }).to_string()))
        .unwrap();
    (status, response)
}

async fn forward(State(state): State<Arc<ProxyState>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, 1 << 20).await.unwrap().to_vec();
    let path = parts.uri.path().to_owned();
    let query = parts.uri.query().unwrap_or_default().to_owned();
    let gone = path
        .strip_prefix("/@connections/")
        .is_some_and(|id| state.gone.lock().unwrap().contains(id));
    let (status, response) = if gone {
        error(410, "GoneException", "the connection is gone")
    } else if path.starts_with("/topics/") && state.fail_publishes.load(Ordering::SeqCst) {
        error(
            400,
            "InvalidRequestException",
            "the publish failed (made to fail by the test)",
        )
    } else {
        let mut url = format!("{}{path}", state.moto);
        if !query.is_empty() {
            url = format!("{url}?{query}");
        }
        let mut headers = parts.headers.clone();
        headers.remove(axum::http::header::HOST);
        let answer = reqwest::Client::new()
            .request(parts.method.clone(), url)
            .headers(headers)
            .body(body.clone())
            .send()
            .await
            .expect("moto answers");
        let status = answer.status().as_u16();
        let mut response = Response::builder().status(status);
        for (name, value) in answer.headers() {
            if name != axum::http::header::CONTENT_LENGTH
                && name != axum::http::header::TRANSFER_ENCODING
            {
                response = response.header(name, value);
            }
        }
        let bytes = answer.bytes().await.unwrap();
        (status, response.body(Body::from(bytes)).unwrap())
    };
    state.seen.lock().unwrap().push(Seen {
        method: parts.method.to_string(),
        path,
        query,
        body,
        status,
    });
    response
}

impl Proxy {
    async fn start() -> Self {
        let state = Arc::new(ProxyState {
            moto: moto_url(),
            ..Default::default()
        });
        let router = axum::Router::new()
            .fallback(forward)
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            axum::serve(listener, router).await.unwrap();
        });
        Self { url, state, server }
    }

    /// What was seen so far, and forgets it.
    fn take(&self) -> Vec<Seen> {
        std::mem::take(&mut *self.state.seen.lock().unwrap())
    }
}

/// A record of the stream: sequence number, partition key, data, arrival (epoch s).
type Record = (String, String, Vec<u8>, f64);

/// Every record of a one-shard stream, with what a Kinesis event carries.
async fn records(client: &aws_sdk_kinesis::Client, stream: &str) -> Vec<Record> {
    kinesis_stream_records(client, stream)
        .await
        .iter()
        .map(|r| {
            let arrival = r
                .approximate_arrival_timestamp()
                .map(|t| t.as_secs_f64())
                .unwrap_or_default();
            (
                r.sequence_number().to_owned(),
                r.partition_key().unwrap_or_default().to_owned(),
                r.data().as_ref().to_vec(),
                arrival,
            )
        })
        .collect()
}

/// The Kinesis event Lambda's event source mapping makes of `records`, in the form of
/// `events/kinesis-events.json`.
fn kinesis_event(stream: &str, records: &[Record]) -> Value {
    use base64::Engine;
    let template = event("kinesis-events.json")["Records"][0].clone();
    let records: Vec<Value> = records
        .iter()
        .map(|(sequence, key, data, arrival)| {
            let mut record = template.clone();
            record["kinesis"]["sequenceNumber"] = json!(sequence);
            record["kinesis"]["partitionKey"] = json!(key);
            record["kinesis"]["data"] =
                json!(base64::engine::general_purpose::STANDARD.encode(data));
            record["kinesis"]["approximateArrivalTimestamp"] = json!(arrival);
            record["eventID"] = json!(format!("shardId-000000000000:{sequence}"));
            record["eventSourceARN"] = json!(format!(
                "arn:aws:kinesis:us-east-1:123456789012:stream/{stream}"
            ));
            record
        })
        .collect();
    json!({ "Records": records })
}

/// `events/websocket-connect.json` for connection `id` with this query; without an
/// `Authorization` header unless `basic_auth`.
fn connect_event(id: &str, query: &[(&str, &str)], basic_auth: bool) -> Value {
    let mut connect = event("websocket-connect.json");
    connect["requestContext"]["connectionId"] = json!(id);
    let single: serde_json::Map<String, Value> = query
        .iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect();
    let multi: serde_json::Map<String, Value> = query
        .iter()
        .map(|(k, v)| (k.to_string(), json!([v])))
        .collect();
    connect["queryStringParameters"] = Value::Object(single);
    connect["multiValueQueryStringParameters"] = Value::Object(multi);
    if !basic_auth {
        for headers in ["headers", "multiValueHeaders"] {
            connect[headers]
                .as_object_mut()
                .unwrap()
                .remove("Authorization");
        }
    }
    connect
}

/// The status code of a WebSocket route's answer, and its JSON body if any.
async fn route(function: &Function, event: Value) -> (u64, Value) {
    let answer = function.api.invoke(event).await.response();
    let body = answer["body"]
        .as_str()
        .and_then(|b| serde_json::from_str(b).ok())
        .unwrap_or(Value::Null);
    (answer["statusCode"].as_u64().expect("a status"), body)
}

async fn kept_ids(store: &DynamoStore, app: &str) -> Vec<String> {
    store
        .stream_connections(app, chrono::Utc::now())
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.id)
        .collect()
}

fn failures(answer: &Value) -> Vec<String> {
    answer["batchItemFailures"]
        .as_array()
        .expect("a KinesisEventResponse")
        .iter()
        .map(|f| f["itemIdentifier"].as_str().unwrap().to_owned())
        .collect()
}

/// `$connect` keeps the connections of users who may read the application (with an
/// access token in the `Authorization` header or in the query), refuses the others with
/// the management API's statuses, and keeps at most the configured number per
/// application; `$disconnect` forgets a connection; `$default` ignores messages.
#[tokio::test]
async fn websocket_routes_keep_the_connections_of_readers_only() {
    let store = fresh_dynamo_table().await;
    let rita = fixture::populate(Arc::new(store.clone())).await;
    let table = store.table().to_owned();
    let f = Function::start("stream", &[("DROGUE_TABLE", &table)]).await;

    // the fixture: the administrator, Basic access token, ?app=from-lambda
    let fixture_id = event("websocket-connect.json")["requestContext"]["connectionId"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(route(&f, event("websocket-connect.json")).await.0, 200);
    let kept = store
        .stream_connections("from-lambda", chrono::Utc::now())
        .await
        .unwrap();
    assert_eq!(kept.len(), 1);
    assert_eq!(
        (kept[0].id.as_str(), kept[0].user.as_str()),
        (fixture_id.as_str(), "admin")
    );
    assert!(kept[0].expires > chrono::Utc::now() + chrono::Duration::minutes(110));

    // rita reads from-lambda, with her token in the query, one channel only
    let query = [
        ("app", "from-lambda"),
        ("channel", "state"),
        ("username", "rita"),
        ("api_key", rita.as_str()),
    ];
    assert_eq!(
        route(&f, connect_event("rita-1", &query, false)).await.0,
        200
    );
    let rita_kept = store
        .stream_connections("from-lambda", chrono::Utc::now())
        .await
        .unwrap()
        .into_iter()
        .find(|c| c.id == "rita-1")
        .expect("rita's connection is kept");
    assert_eq!(rita_kept.user, "rita");
    assert_eq!(rita_kept.channel.as_deref(), Some("state"));

    // refused: another application (404), no credentials (401), a wrong token (403),
    // no application (400), an application that does not exist (404)
    let rita_other = [
        ("app", "other-app"),
        ("username", "rita"),
        ("api_key", rita.as_str()),
    ];
    let wrong = [
        ("app", "from-lambda"),
        ("username", "rita"),
        (
            "api_key",
            "drg_wrong0_wrongwrongwrongwrongwrongwrong00000000",
        ),
    ];
    for (id, query, basic, status, kind) in [
        ("r-other", &rita_other[..], false, 404, "NotFound"),
        (
            "anonymous",
            &[("app", "from-lambda")][..],
            false,
            401,
            "Unauthorized",
        ),
        ("wrong", &wrong[..], false, 403, "Forbidden"),
        ("no-app", &[][..], true, 400, "InvalidRequest"),
        (
            "missing",
            &[("app", "no-such-app")][..],
            true,
            404,
            "NotFound",
        ),
    ] {
        let (answer, body) = route(&f, connect_event(id, query, basic)).await;
        assert_eq!(
            (answer, body["error"].as_str()),
            (status, Some(kind)),
            "{id}"
        );
        assert!(
            store
                .stream_connection_application(id)
                .await
                .unwrap()
                .is_none(),
            "{id} is not kept"
        );
    }
    assert!(kept_ids(&store, "other-app").await.is_empty());

    // messages are ignored
    assert_eq!(route(&f, event("websocket-message.json")).await.0, 200);

    // $disconnect (of the fixture's connection) forgets both of its items
    assert_eq!(route(&f, event("websocket-disconnect.json")).await.0, 200);
    assert_eq!(kept_ids(&store, "from-lambda").await, ["rita-1"]);
    assert!(
        store
            .stream_connection_application(&fixture_id)
            .await
            .unwrap()
            .is_none()
    );

    // at most two per application
    let limited = Function::start(
        "stream",
        &[
            ("DROGUE_TABLE", &table),
            ("DROGUE_MAX_STREAMS_PER_APPLICATION", "2"),
        ],
    )
    .await;
    let admin = [("app", "from-lambda")];
    assert_eq!(
        route(&limited, connect_event("a-2", &admin, true)).await.0,
        200
    );
    let (status, body) = route(&limited, connect_event("a-3", &admin, true)).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (429, Some("QuotaExceeded"))
    );
    assert_eq!(kept_ids(&store, "from-lambda").await, ["a-2", "rita-1"]);
}

/// Events the device endpoint wrote to Kinesis reach IoT Core's `app/{app}` and every
/// WebSocket connection of their application (of their channel, when one was asked for),
/// in order; a gone connection is forgotten; records that fail (IoT Core refuses the
/// publish, the table is unavailable) are reported as batch item failures.
#[tokio::test]
async fn events_fan_out_to_mqtt_and_the_applications_websockets() {
    // with from-lambda's trust anchor, for the device's certificate
    let store = super::populated().await;
    let table = store.table().to_owned();

    // the subscribers, through $connect
    let stream = Function::start("stream", &[("DROGUE_TABLE", &table)]).await;
    for (id, query) in [
        ("all", &[("app", "from-lambda")][..]),
        ("state", &[("app", "from-lambda"), ("channel", "state")][..]),
        ("other", &[("app", "other-app")][..]),
        ("gone", &[("app", "from-lambda")][..]),
    ] {
        assert_eq!(
            route(&stream, connect_event(id, query, true)).await.0,
            200,
            "{id}"
        );
    }

    // two events of device1 in from-lambda: telemetry, then state
    let kinesis = kinesis_client(&moto_url());
    let events = fresh_kinesis_stream(&kinesis).await;
    let endpoint = Function::start(
        "http-endpoint",
        &[("DROGUE_TABLE", &table), ("DROGUE_EVENT_STREAM", &events)],
    )
    .await;
    assert_eq!(endpoint.http("http-telemetry-basic.json").await.0, 202);
    assert_eq!(endpoint.http("http-telemetry-mtls.json").await.0, 202);
    let written = records(&kinesis, &events).await;
    assert_eq!(written.len(), 2);
    let batch = kinesis_event(&events, &written);
    let (telemetry, state) = (written[0].2.clone(), written[1].2.clone());

    let proxy = Proxy::start().await;
    proxy.state.gone.lock().unwrap().insert("gone".into());
    let fan_out = Function::start(
        "fan-out",
        &[
            ("DROGUE_TABLE", &table),
            ("DROGUE_IOT_DATA_ENDPOINT", &proxy.url),
            ("DROGUE_WEBSOCKET_CALLBACK_URL", &proxy.url),
        ],
    )
    .await;
    let answer = fan_out.api.invoke(batch.clone()).await.response();
    assert_eq!(failures(&answer), Vec::<String>::new(), "{answer}");

    let seen = proxy.take();
    let publishes: Vec<&Seen> = seen
        .iter()
        .filter(|s| s.path.starts_with("/topics/"))
        .collect();
    assert_eq!(publishes.len(), 2, "{seen:?}");
    for (publish, data) in publishes.iter().zip([&telemetry, &state]) {
        assert_eq!(publish.method, "POST");
        assert_eq!(publish.path, "/topics/app%2Ffrom-lambda");
        assert!(publish.query.contains("qos=1"), "{}", publish.query);
        assert!(
            publish
                .query
                .contains("contentType=application%2Fcloudevents%2Bjson"),
            "{}",
            publish.query
        );
        assert_eq!(&publish.body, data, "the record as it is, in order");
        assert_eq!(publish.status, 200, "moto took the publish");
    }
    let posted_to = |id: &str| -> Vec<(Vec<u8>, u16)> {
        seen.iter()
            .filter(|s| s.method == "POST" && s.connection() == Some(id))
            .map(|s| (s.body.clone(), s.status))
            .collect()
    };
    assert_eq!(
        posted_to("all"),
        [(telemetry.clone(), 200), (state.clone(), 200)],
        "both events, in order, taken by moto"
    );
    assert_eq!(
        posted_to("state"),
        [(state.clone(), 200)],
        "its channel only"
    );
    assert_eq!(posted_to("other"), [], "another application's connection");
    assert_eq!(posted_to("gone"), [(telemetry.clone(), 410)], "tried once");
    assert_eq!(kept_ids(&store, "from-lambda").await, ["all", "state"]);
    assert!(
        store
            .stream_connection_application("gone")
            .await
            .unwrap()
            .is_none(),
        "a gone connection is forgotten"
    );
    assert_eq!(kept_ids(&store, "other-app").await, ["other"]);

    // IoT Core refuses the publishes: every record is retried, nothing is posted
    proxy.state.fail_publishes.store(true, Ordering::SeqCst);
    let answer = fan_out.api.invoke(batch.clone()).await.response();
    let sequences: Vec<String> = written.iter().map(|r| r.0.clone()).collect();
    assert_eq!(failures(&answer), sequences);
    let seen = proxy.take();
    assert!(
        seen.iter().all(|s| s.path.starts_with("/topics/")),
        "no post after a failed publish: {seen:?}"
    );
    assert_eq!(seen.len(), 1, "no later record is tried: {seen:?}");
    proxy.state.fail_publishes.store(false, Ordering::SeqCst);

    // the table is unavailable: every record is retried
    let no_table = Function::start(
        "fan-out",
        &[
            ("DROGUE_TABLE", "drogue-test-no-such-table"),
            ("DROGUE_IOT_DATA_ENDPOINT", &proxy.url),
            ("DROGUE_WEBSOCKET_CALLBACK_URL", &proxy.url),
        ],
    )
    .await;
    let answer = no_table.api.invoke(batch).await.response();
    assert_eq!(failures(&answer), sequences);
    assert!(
        proxy.take().iter().all(|s| s.connection().is_none()),
        "nothing is posted without the connections"
    );

    // what is no Kinesis event is a function error
    assert!(matches!(
        fan_out.api.invoke(json!({"hello": "world"})).await,
        drogue_tests::lambda::Answer::Error(_)
    ));

    // what the MQTT ingest wrote goes the same way
    let from_mqtt = fresh_kinesis_stream(&kinesis).await;
    let ingest = Function::start(
        "mqtt-ingest",
        &[
            ("DROGUE_TABLE", &table),
            ("DROGUE_EVENT_STREAM", &from_mqtt),
        ],
    )
    .await;
    assert_eq!(
        ingest.invoke("mqtt-ingest-telemetry.json").await.response()["outcome"],
        "accepted"
    );
    let written = records(&kinesis, &from_mqtt).await;
    assert_eq!(written.len(), 1);
    let answer = fan_out
        .api
        .invoke(kinesis_event(&from_mqtt, &written))
        .await
        .response();
    assert_eq!(failures(&answer), Vec::<String>::new(), "{answer}");
    let seen = proxy.take();
    let published: Vec<&Seen> = seen
        .iter()
        .filter(|s| s.path.starts_with("/topics/"))
        .collect();
    assert_eq!(published.len(), 1, "{seen:?}");
    assert_eq!(published[0].path, "/topics/app%2Ffrom-lambda");
    assert_eq!(published[0].body, written[0].2, "the record as it is");
    let to_all: Vec<&Seen> = seen
        .iter()
        .filter(|s| s.method == "POST" && s.connection() == Some("all"))
        .collect();
    assert_eq!(to_all.len(), 1, "{seen:?}");
    assert_eq!(to_all[0].body, written[0].2);
}

/// The fan-out checks a connection's access again before each delivery (on what it read
/// at most 5 s before): a member removed from the application, a deleted access token
/// and an expired one get no more events, and their connections are closed through the
/// management API (`DeleteConnection`) and forgotten; the owner's connection keeps
/// receiving.
#[tokio::test]
async fn connections_whose_access_ended_are_closed_before_the_next_event() {
    use chrono::Timelike;
    use drogue_shared::access::{Principal, Role, TokenOptions, create_token, create_token_with};
    use drogue_shared::registry::{MemberEntry, Members, Registry};
    use drogue_shared::store::{ApplicationStore, TokenStore};

    let store = fresh_dynamo_table().await;
    let table = store.table().to_owned();
    let shared: Arc<DynamoStore> = Arc::new(store.clone());
    let registry = Registry::new(shared.clone(), Default::default());
    let olga = Principal::user("olga");
    let app = drogue_shared::model::AppName::parse("ws-app").unwrap();
    registry
        .create_application(
            &olga,
            serde_json::from_value(json!({"metadata": {"name": "ws-app"}})).unwrap(),
        )
        .await
        .unwrap();
    let members = |names: &[&str]| Members {
        resource_version: None,
        members: names
            .iter()
            .map(|n| (n.to_string(), MemberEntry { role: Role::Reader }))
            .collect(),
    };
    registry
        .set_members(&olga, &app, members(&["rita", "mia"]))
        .await
        .unwrap();
    let token = |user: &'static str| {
        let shared = shared.clone();
        async move {
            create_token(shared.as_ref(), &Principal::user(user), None)
                .await
                .unwrap()
        }
    };
    let (olga_token, rita_token, mia_deleted) =
        (token("olga").await, token("rita").await, token("mia").await);
    let in_an_hour = chrono::Utc::now() + chrono::Duration::hours(1);
    let mia_expiring = create_token_with(
        shared.as_ref(),
        &Principal::user("mia"),
        TokenOptions {
            description: None,
            expires: Some(in_an_hour),
        },
    )
    .await
    .unwrap();

    let stream = Function::start("stream", &[("DROGUE_TABLE", &table)]).await;
    for (id, user, secret) in [
        ("owner", "olga", &olga_token.token),
        ("member", "rita", &rita_token.token),
        ("deleted-token", "mia", &mia_deleted.token),
        ("expired-token", "mia", &mia_expiring.token),
    ] {
        let query = [
            ("app", "ws-app"),
            ("username", user),
            ("api_key", secret.as_str()),
        ];
        assert_eq!(
            route(&stream, connect_event(id, &query, false)).await.0,
            200,
            "{id}"
        );
    }
    let kept = store
        .stream_connections("ws-app", chrono::Utc::now())
        .await
        .unwrap();
    let expiring = kept.iter().find(|c| c.id == "expired-token").unwrap();
    assert_eq!(
        (expiring.token.as_deref(), expiring.credentials_expire),
        (
            Some(mia_expiring.prefix.as_str()),
            Some(in_an_hour.with_nanosecond(0).unwrap())
        ),
        "the token's prefix and expiry are kept with the connection"
    );
    for (id, prefix) in [
        ("owner", &olga_token.prefix),
        ("member", &rita_token.prefix),
        ("deleted-token", &mia_deleted.prefix),
    ] {
        let connection = kept.iter().find(|c| c.id == id).unwrap();
        assert_eq!(
            connection.token.as_ref(),
            Some(prefix),
            "the token's prefix, never the token"
        );
    }

    let uid = store
        .get_application(&app)
        .await
        .unwrap()
        .unwrap()
        .app
        .metadata
        .uid;
    let event_of = |n: u32| -> Vec<u8> {
        serde_json::to_vec(&json!({
            "specversion": "1.0", "id": format!("ws-{n}"), "type": "io.drogue.event.v1",
            "source": "drogue://ws-app/d1", "subject": "telemetry",
            "application": "ws-app", "applicationuid": uid,
            "datacontenttype": "application/json", "data": {"n": n},
        }))
        .unwrap()
    };
    let batch_of = |n: u32| {
        let record = (
            format!("{}", 1000 + n),
            "ws-app/d1".to_owned(),
            event_of(n),
            1_764_000_000.5,
        );
        kinesis_event("events", &[record])
    };

    let proxy = Proxy::start().await;
    let fan_out = Function::start(
        "fan-out",
        &[
            ("DROGUE_TABLE", &table),
            ("DROGUE_IOT_DATA_ENDPOINT", &proxy.url),
            ("DROGUE_WEBSOCKET_CALLBACK_URL", &proxy.url),
        ],
    )
    .await;
    let delivered = |seen: &[Seen], method: &str| -> Vec<(String, u16)> {
        let mut found: Vec<(String, u16)> = seen
            .iter()
            .filter(|s| s.method == method)
            .filter_map(|s| s.connection().map(|c| (c.to_owned(), s.status)))
            .collect();
        found.sort();
        found
    };

    // everyone may read: everyone gets the first event
    let answer = fan_out.api.invoke(batch_of(1)).await.response();
    let first = std::time::Instant::now();
    assert_eq!(failures(&answer), Vec::<String>::new(), "{answer}");
    let seen = proxy.take();
    assert_eq!(
        delivered(&seen, "POST"),
        [
            ("deleted-token".to_owned(), 200),
            ("expired-token".to_owned(), 200),
            ("member".to_owned(), 200),
            ("owner".to_owned(), 200),
        ]
    );
    assert_eq!(delivered(&seen, "DELETE"), []);

    // rita is removed, one of mia's tokens deleted, the other's expiry lies in the past
    registry
        .set_members(&olga, &app, members(&["mia"]))
        .await
        .unwrap();
    assert!(
        store
            .delete_token("mia", &mia_deleted.prefix)
            .await
            .unwrap()
    );
    let mut expired = store
        .get_token(&mia_expiring.prefix)
        .await
        .unwrap()
        .unwrap();
    expired.expires = Some(chrono::Utc::now() - chrono::Duration::seconds(1));
    assert!(store.delete_token("mia", &expired.prefix).await.unwrap());
    store.create_token(&expired).await.unwrap();

    // what the fan-out read is relied on for at most 5 s
    let period = std::time::Duration::from_millis(5200);
    tokio::time::sleep(period.saturating_sub(first.elapsed())).await;
    let answer = fan_out.api.invoke(batch_of(2)).await.response();
    assert_eq!(failures(&answer), Vec::<String>::new(), "{answer}");
    let seen = proxy.take();
    assert_eq!(
        delivered(&seen, "POST"),
        [("owner".to_owned(), 200)],
        "the owner only"
    );
    assert_eq!(
        delivered(&seen, "DELETE"),
        [
            ("deleted-token".to_owned(), 200),
            ("expired-token".to_owned(), 200),
            ("member".to_owned(), 200),
        ],
        "closed through the management API, which took it"
    );
    assert_eq!(kept_ids(&store, "ws-app").await, ["owner"]);
    for id in ["deleted-token", "expired-token", "member"] {
        assert!(
            store
                .stream_connection_application(id)
                .await
                .unwrap()
                .is_none(),
            "{id} is forgotten"
        );
    }

    // the next event: the owner again, nothing more to close
    let answer = fan_out.api.invoke(batch_of(3)).await.response();
    assert_eq!(failures(&answer), Vec::<String>::new(), "{answer}");
    let seen = proxy.take();
    assert_eq!(delivered(&seen, "POST"), [("owner".to_owned(), 200)]);
    assert_eq!(delivered(&seen, "DELETE"), []);
}
