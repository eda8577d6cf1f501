//! A counting HTTP proxy in front of moto's DynamoDB: a function pointed at it
//! (`AWS_ENDPOINT_URL_DYNAMODB`) sends its requests, signed by the real AWS SDK, here;
//! each is forwarded to moto unchanged and answered with moto's answer unchanged, and
//! counted by its operation (`X-Amz-Target: DynamoDB_20120810.GetItem`, ...). An
//! independent witness of what a function asks of DynamoDB: nothing in the function
//! counts.
//!
//! For each request it also keeps how many items the request reads (GetItem 1,
//! BatchGetItem its keys, Query and Scan the `ScannedCount` of the answer) and whether
//! the read is strongly consistent, which gives the read units for items of up to 4 KB
//! (1 per item strongly consistent, 0.5 eventually).

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderName, StatusCode, header};
use axum::response::Response;
use serde_json::Value;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

/// One request the proxy forwarded.
#[derive(Debug, Clone, PartialEq)]
pub struct Recorded {
    /// The operation (`GetItem`, `BatchGetItem`, `PutItem`, ...).
    pub operation: String,
    /// Items read (0 for writes and other operations).
    pub items: u64,
    /// Whether the read was strongly consistent.
    pub consistent: bool,
    /// moto's status.
    pub status: u16,
}

/// What DynamoDB's pricing calls reads: the operations that read items.
pub const READ_OPERATIONS: [&str; 6] = [
    "GetItem",
    "BatchGetItem",
    "Query",
    "Scan",
    "TransactGetItems",
    "ExecuteStatement",
];

/// What DynamoDB's pricing calls writes.
pub const WRITE_OPERATIONS: [&str; 6] = [
    "PutItem",
    "UpdateItem",
    "DeleteItem",
    "BatchWriteItem",
    "TransactWriteItems",
    "BatchExecuteStatement",
];

/// A sum over recorded requests.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Counts {
    /// Requests of the read operations.
    pub reads: u64,
    /// Items those requests read.
    pub items: u64,
    /// Read units, for items of up to 4 KB.
    pub read_units: f64,
    /// Requests of the write operations.
    pub writes: u64,
    /// Every request (reads, writes, and anything else, such as DescribeTable).
    pub requests: u64,
}

impl Counts {
    pub fn of(recorded: &[Recorded]) -> Self {
        let mut counts = Self::default();
        for r in recorded {
            counts.requests += 1;
            if READ_OPERATIONS.contains(&r.operation.as_str()) {
                counts.reads += 1;
                counts.items += r.items;
                counts.read_units += r.items as f64 * if r.consistent { 1.0 } else { 0.5 };
            } else if WRITE_OPERATIONS.contains(&r.operation.as_str()) {
                counts.writes += 1;
            }
        }
        counts
    }
}

struct Shared {
    upstream: String,
    http: reqwest::Client,
    recorded: Mutex<Vec<Recorded>>,
}

/// The proxy, on a free loopback port; stops when dropped.
pub struct CountingProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for CountingProxy {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl CountingProxy {
    /// A proxy forwarding to `upstream` (moto's URL).
    pub async fn start(upstream: &str) -> Self {
        let shared = Arc::new(Shared {
            upstream: upstream.trim_end_matches('/').to_owned(),
            http: reqwest::Client::builder()
                .no_proxy()
                .build()
                .expect("an HTTP client"),
            recorded: Mutex::default(),
        });
        let router = Router::new().fallback(forward).with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            axum::serve(listener, router).await.unwrap();
        });
        Self {
            addr,
            shared,
            server,
        }
    }

    /// The URL to give a client as its DynamoDB endpoint.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request so far, in order.
    pub fn recorded(&self) -> Vec<Recorded> {
        self.shared.recorded.lock().unwrap().clone()
    }

    /// The sums over every request so far.
    pub fn counts(&self) -> Counts {
        Counts::of(&self.recorded())
    }

    /// Forgets what was recorded; what was recorded until then.
    pub fn take(&self) -> Vec<Recorded> {
        std::mem::take(&mut *self.shared.recorded.lock().unwrap())
    }
}

/// Hop-by-hop headers and those the forwarding client sets itself.
fn forwarded(name: &HeaderName) -> bool {
    ![
        header::HOST,
        header::CONTENT_LENGTH,
        header::TRANSFER_ENCODING,
        header::CONNECTION,
    ]
    .contains(name)
}

async fn forward(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let Ok(body) = axum::body::to_bytes(body, 16 << 20).await else {
        return status(StatusCode::PAYLOAD_TOO_LARGE);
    };
    let operation = parts
        .headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .map(|t| t.rsplit('.').next().unwrap_or(t).to_owned())
        .unwrap_or_default();
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let mut upstream = shared
        .http
        .request(parts.method.clone(), format!("{}{path}", shared.upstream));
    for (name, value) in parts.headers.iter().filter(|(n, _)| forwarded(n)) {
        upstream = upstream.header(name, value);
    }
    let Ok(answer) = upstream.body(body.clone()).send().await else {
        return status(StatusCode::BAD_GATEWAY);
    };
    let code = answer.status();
    let headers = answer.headers().clone();
    let Ok(answer_body) = answer.bytes().await else {
        return status(StatusCode::BAD_GATEWAY);
    };
    let (items, consistent) = reads_of(&operation, &body, &answer_body);
    shared.recorded.lock().unwrap().push(Recorded {
        operation,
        items,
        consistent,
        status: code.as_u16(),
    });
    let mut response = Response::new(Body::from(answer_body));
    *response.status_mut() = code;
    for (name, value) in headers.iter().filter(|(n, _)| forwarded(n)) {
        response.headers_mut().append(name, value.clone());
    }
    response
}

fn status(code: StatusCode) -> Response {
    let mut response = Response::new(Body::empty());
    *response.status_mut() = code;
    response
}

/// Items read by a request, and whether strongly consistent.
fn reads_of(operation: &str, request: &Bytes, answer: &Bytes) -> (u64, bool) {
    let request: Value = serde_json::from_slice(request).unwrap_or(Value::Null);
    let answer: Value = serde_json::from_slice(answer).unwrap_or(Value::Null);
    let consistent = |v: &Value| v["ConsistentRead"].as_bool().unwrap_or(false);
    match operation {
        "GetItem" => (1, consistent(&request)),
        "BatchGetItem" => {
            let tables = request["RequestItems"].as_object();
            let items = tables
                .into_iter()
                .flat_map(|t| t.values())
                .map(|t| t["Keys"].as_array().map_or(0, Vec::len) as u64)
                .sum();
            let all_consistent = tables.into_iter().flat_map(|t| t.values()).all(consistent);
            (items, all_consistent)
        }
        "TransactGetItems" => (
            request["TransactItems"].as_array().map_or(0, Vec::len) as u64,
            true,
        ),
        "Query" | "Scan" => (
            answer["ScannedCount"].as_u64().unwrap_or(0),
            consistent(&request),
        ),
        "ExecuteStatement" => (
            answer["Items"].as_array().map_or(0, Vec::len) as u64,
            consistent(&request),
        ),
        _ => (0, false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_operation() {
        let read = |operation: &str, items, consistent| Recorded {
            operation: operation.into(),
            items,
            consistent,
            status: 200,
        };
        let counts = Counts::of(&[
            read("GetItem", 1, true),
            read("BatchGetItem", 2, false),
            read("PutItem", 0, false),
            read("DescribeTable", 0, false),
        ]);
        assert_eq!(
            counts,
            Counts {
                reads: 2,
                items: 3,
                read_units: 2.0,
                writes: 1,
                requests: 4
            }
        );
    }

    #[test]
    fn reads_of_requests() {
        let get = Bytes::from_static(br#"{"TableName":"t","Key":{},"ConsistentRead":true}"#);
        assert_eq!(reads_of("GetItem", &get, &Bytes::new()), (1, true));
        let batch = Bytes::from_static(
            br#"{"RequestItems":{"t":{"Keys":[{"pk":{"S":"a"}},{"pk":{"S":"b"}}],"ConsistentRead":false}}}"#,
        );
        assert_eq!(reads_of("BatchGetItem", &batch, &Bytes::new()), (2, false));
        let query = Bytes::from_static(br#"{"TableName":"t"}"#);
        let answer = Bytes::from_static(br#"{"Count":1,"ScannedCount":3,"Items":[]}"#);
        assert_eq!(reads_of("Query", &query, &answer), (3, false));
        assert_eq!(reads_of("PutItem", &get, &Bytes::new()), (0, false));
    }
}
