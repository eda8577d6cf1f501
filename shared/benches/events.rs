//! Building a device's event: a telemetry publish with a small JSON body, from the
//! publish to the structured JSON CloudEvent the event stream takes.
//!
//! `cargo bench -p drogue-shared --bench events`

use chrono::Utc;
use criterion::{Criterion, criterion_group, criterion_main};
use drogue_shared::events::{self, DEFAULT_INSTANCE, Publish};
use drogue_shared::model::Resource;
use std::hint::black_box;

fn resource(name: &str) -> Resource {
    serde_json::from_value(serde_json::json!({
        "metadata": {
            "name": name,
            "uid": uuid::Uuid::new_v4().to_string(),
            "creationTimestamp": Utc::now(),
            "generation": 1,
            "resourceVersion": uuid::Uuid::new_v4().to_string(),
        }
    }))
    .unwrap()
}

fn telemetry(c: &mut Criterion) {
    let (app, device) = (resource("my-app"), resource("device1"));
    let body = br#"{"temp":21.5,"hum":48,"room":"kitchen","ok":true}"#;
    let publish = Publish {
        application: &app,
        device: &device,
        sender: &device,
        channel: "sensor",
        suffix: None,
        content_type: Some("application/json"),
        data_schema: None,
        instance: DEFAULT_INSTANCE,
        received: Utc::now(),
    };
    c.bench_function("telemetry event, JSON body, to structured JSON", |b| {
        b.iter(|| black_box(events::telemetry(black_box(&publish), black_box(body)).unwrap()))
    });
}

criterion_group!(benches, telemetry);
criterion_main!(benches);
