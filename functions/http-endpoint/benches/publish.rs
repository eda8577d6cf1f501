//! The handler's cost per telemetry message, with a warm password cache, against a
//! baseline handler that only parses the same request (query, headers, body) and answers
//! 202. The sink discards events: this measures the handler, not the event stream.
//!
//! `cargo bench -p drogue-http-endpoint --bench publish`

use axum::body::Body;
use axum::extract::Request;
use axum::http::StatusCode;
use criterion::{Criterion, criterion_group, criterion_main};
use drogue_shared::access::Principal;
use drogue_shared::access::authz::AccessControl;
use drogue_shared::events::{EventSink, SinkError, StructuredEvent};
use drogue_shared::model::{AppName, ResourceInput};
use drogue_shared::rate_limit::RateLimit;
use drogue_shared::registry::Registry;
use drogue_shared::store::embedded::EmbeddedStore;
use serde_json::json;
use std::hint::black_box;
use std::sync::Arc;
use tower::ServiceExt;

struct Discard;

#[async_trait::async_trait]
impl EventSink for Discard {
    async fn publish_structured(&self, event: StructuredEvent) -> Result<(), SinkError> {
        black_box(event);
        Ok(())
    }
}

fn request() -> Request {
    Request::post("/v1/telemetry?data_schema=urn:bench")
        .header("authorization", "Basic ZGV2aWNlMUBiZW5jaDpzZWNyZXQ=") // device1@bench:secret
        .header("content-type", "application/json")
        .body(Body::from(r#"{"temp":21.5,"hum":40}"#))
        .unwrap()
}

/// Parses what the real handler parses, and nothing more.
async fn parse_only(request: Request) -> StatusCode {
    let (parts, body) = request.into_parts();
    let query: Vec<(String, String)> = form_urlencoded_pairs(parts.uri.query());
    black_box((
        query,
        parts.headers.get("authorization"),
        parts.headers.get("content-type"),
    ));
    let body = axum::body::to_bytes(body, 64 * 1024).await.unwrap();
    black_box(body);
    StatusCode::ACCEPTED
}

fn form_urlencoded_pairs(query: Option<&str>) -> Vec<(String, String)> {
    query
        .unwrap_or_default()
        .split('&')
        .filter_map(|p| p.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())))
        .collect()
}

fn publish(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(EmbeddedStore::open(dir.path().join("bench.redb")).unwrap());
    let router = rt.block_on(async {
        let registry = Registry::new(store.clone(), AccessControl::default());
        let owner = Principal::user("bench");
        let input = |v| serde_json::from_value::<ResourceInput>(v).unwrap();
        registry.create_application(&owner, input(json!({"metadata": {"name": "bench"}}))).await.unwrap();
        let device = json!({"metadata": {"name": "device1"}, "spec": {"authentication": {"credentials": [{"pass": "secret"}]}}});
        registry
            .create_device(&owner, &AppName::parse("bench").unwrap(), input(device))
            .await
            .unwrap();
        // (no publish rate limit: the bench publishes far beyond a device's 100/s)
        let settings = drogue_http_endpoint::Settings {
            publish_rate: RateLimit::UNLIMITED,
            ..Default::default()
        };
        let router = drogue_http_endpoint::router(store, Arc::new(Discard), settings);
        let warm = router.clone().oneshot(request()).await.unwrap();
        assert_eq!(warm.status(), StatusCode::ACCEPTED);
        router
    });
    let baseline = axum::Router::new().route("/v1/{channel}", axum::routing::post(parse_only));

    c.bench_function("telemetry publish (warm cache, discarding sink)", |b| {
        b.to_async(&rt).iter(|| async {
            let response = router.clone().oneshot(request()).await.unwrap();
            assert_eq!(response.status(), StatusCode::ACCEPTED);
        })
    });
    c.bench_function("baseline: parse the request, answer 202", |b| {
        b.to_async(&rt).iter(|| async {
            let response = baseline.clone().oneshot(request()).await.unwrap();
            assert_eq!(response.status(), StatusCode::ACCEPTED);
        })
    });
}

criterion_group!(benches, publish);
criterion_main!(benches);
