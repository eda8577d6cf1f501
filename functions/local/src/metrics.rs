//! `GET /metrics`: counters in the Prometheus text format, without authentication (they
//! hold no names, only counts).

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use drogue_shared::device_auth::DeviceAuthenticator;
use drogue_shared::events::log::EventLog;

#[derive(Clone)]
pub struct Metrics {
    pub device_auth: DeviceAuthenticator,
    pub events: EventLog,
}

pub fn router(metrics: Metrics) -> Router {
    Router::new()
        .route("/metrics", get(render))
        .with_state(metrics)
}

async fn render(State(m): State<Metrics>) -> impl IntoResponse {
    let verified = m.device_auth.verified_passwords();
    let (events, commits) = m.events.counters();
    let text = format!(
        "# HELP drogue_device_password_checks_total Password checks that ran the stored hashes (cache misses).\n\
         # TYPE drogue_device_password_checks_total counter\n\
         drogue_device_password_checks_total {}\n\
         # HELP drogue_device_password_cache_entries Verified device passwords remembered.\n\
         # TYPE drogue_device_password_cache_entries gauge\n\
         drogue_device_password_cache_entries {}\n\
         # HELP drogue_events_written_total Events written to the local event log.\n\
         # TYPE drogue_events_written_total counter\n\
         drogue_events_written_total {events}\n\
         # HELP drogue_event_commits_total Commits of the local event log (each holds one or more events).\n\
         # TYPE drogue_event_commits_total counter\n\
         drogue_event_commits_total {commits}\n",
        verified.slow_checks(),
        verified.len(),
    );
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text)
}
