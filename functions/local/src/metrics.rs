//! `GET /metrics`: counters in the Prometheus text format, without authentication (they
//! hold no names, only counts).

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use drogue_shared::device_auth::DeviceAuthenticator;
use drogue_shared::events::log::EventLog;
use std::sync::Arc;

#[derive(Clone)]
pub struct Metrics {
    pub device_auth: DeviceAuthenticator,
    pub events: EventLog,
    pub mqtt: Arc<crate::mqtt::hub::Hub>,
    pub swept: Arc<crate::housekeeping::Swept>,
    pub positions: crate::stream::Positions,
}

pub fn router(metrics: Metrics) -> Router {
    Router::new()
        .route("/metrics", get(render))
        .with_state(metrics)
}

async fn render(State(m): State<Metrics>) -> impl IntoResponse {
    let verified = m.device_auth.verified_passwords();
    let (events, commits) = m.events.counters();
    let names = m.events.names();
    let (rechecks, waiting) = (m.mqtt.rechecks(), m.mqtt.rechecks_waiting());
    let delivery = m.mqtt.delivery_tasks();
    let (sweeps, swept_sessions, swept_groups, swept_events) = m.swept.counts();
    let position_writes = m.positions.writes();
    let text = format!(
        "# HELP drogue_device_password_checks_total Password checks that ran the stored hashes (cache misses).\n\
         # TYPE drogue_device_password_checks_total counter\n\
         drogue_device_password_checks_total {}\n\
         # HELP drogue_device_password_cache_entries Verified device passwords remembered.\n\
         # TYPE drogue_device_password_cache_entries gauge\n\
         drogue_device_password_cache_entries {}\n\
         # HELP drogue_device_lookup_reads_total Device lookups that read the registry (not remembered, expired, or their application written to since).\n\
         # TYPE drogue_device_lookup_reads_total counter\n\
         drogue_device_lookup_reads_total {}\n\
         # HELP drogue_events_written_total Events written to the local event log.\n\
         # TYPE drogue_events_written_total counter\n\
         drogue_events_written_total {events}\n\
         # HELP drogue_event_log_names Application names the local event log's index holds (a name goes once no application of it has events left).\n\
         # TYPE drogue_event_log_names gauge\n\
         drogue_event_log_names {names}\n\
         # HELP drogue_event_commits_total Commits of the local event log (each holds one or more events).\n\
         # TYPE drogue_event_commits_total counter\n\
         drogue_event_commits_total {commits}\n\
         # HELP drogue_mqtt_sessions MQTT connections of the local broker.\n\
         # TYPE drogue_mqtt_sessions gauge\n\
         drogue_mqtt_sessions {}\n\
         # HELP drogue_mqtt_publishes_in_flight MQTT publishes read and being handled (at most 16 per connection).\n\
         # TYPE drogue_mqtt_publishes_in_flight gauge\n\
         drogue_mqtt_publishes_in_flight {}\n\
         # HELP drogue_mqtt_dropped_total Messages dropped for MQTT subscribers that fell behind (QoS 0, wildcards, shared groups, commands).\n\
         # TYPE drogue_mqtt_dropped_total counter\n\
         drogue_mqtt_dropped_total {}\n\
         # HELP drogue_mqtt_fell_behind_total MQTT subscriptions to an application's events that fell behind and went on from the event log.\n\
         # TYPE drogue_mqtt_fell_behind_total counter\n\
         drogue_mqtt_fell_behind_total {}\n\
         # HELP drogue_mqtt_caught_up_total MQTT subscriptions fed from the event log after falling behind that caught up and are routed live again.\n\
         # TYPE drogue_mqtt_caught_up_total counter\n\
         drogue_mqtt_caught_up_total {}\n\
         # HELP drogue_mqtt_rechecks_total Live MQTT sessions' access decided again (every 5 s each).\n\
         # TYPE drogue_mqtt_rechecks_total counter\n\
         drogue_mqtt_rechecks_total {rechecks}\n\
         # HELP drogue_mqtt_rechecks_waiting Live MQTT sessions of devices whose recheck waits for a registry write (or their certificate's expiry).\n\
         # TYPE drogue_mqtt_rechecks_waiting gauge\n\
         drogue_mqtt_rechecks_waiting {waiting}\n\
         # HELP drogue_mqtt_delivery_tasks MQTT sessions' delivery tasks running (one per connection, ended with it).\n\
         # TYPE drogue_mqtt_delivery_tasks gauge\n\
         drogue_mqtt_delivery_tasks {delivery}\n\
         # HELP drogue_stream_position_writes_total Durable writes of WebSocket stream groups' positions (each holds the saves waiting together).\n\
         # TYPE drogue_stream_position_writes_total counter\n\
         drogue_stream_position_writes_total {position_writes}\n\
         # HELP drogue_housekeeping_sweeps_total Housekeeping sweeps done (at start, then hourly).\n\
         # TYPE drogue_housekeeping_sweeps_total counter\n\
         drogue_housekeeping_sweeps_total {sweeps}\n\
         # HELP drogue_housekeeping_removed_total Saved MQTT sessions (expired), WebSocket groups (of deleted applications, or unused) and events (of deleted applications) removed.\n\
         # TYPE drogue_housekeeping_removed_total counter\n\
         drogue_housekeeping_removed_total{{kind=\"mqtt_session\"}} {swept_sessions}\n\
         drogue_housekeeping_removed_total{{kind=\"websocket_group\"}} {swept_groups}\n\
         drogue_housekeeping_removed_total{{kind=\"event\"}} {swept_events}\n",
        verified.slow_checks(),
        verified.len(),
        m.device_auth.lookup_reads(),
        m.mqtt.sessions(),
        m.mqtt.publishes_in_flight(),
        m.mqtt.dropped(),
        m.mqtt.fell_behind(),
        m.mqtt.caught_up(),
    );
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text)
}
