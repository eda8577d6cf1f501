//! What the event log benches share.

use cloudevents::{Event, EventBuilder, EventBuilderV10};

/// Event `n` of the application `app` (its uid `uid-{app}`), with `data` as its JSON.
pub fn event(app: &str, n: u64, data: serde_json::Value) -> Event {
    EventBuilderV10::new()
        .id(format!("{app}-{n}"))
        .ty("io.drogue.event.v1")
        .source(format!("drogue://{app}/device"))
        .subject("telemetry")
        .extension("application", app)
        .extension("applicationuid", format!("uid-{app}"))
        .data("application/json", data)
        .build()
        .expect("an event")
}
