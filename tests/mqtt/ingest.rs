//! The ingest of rule messages (over DynamoDB and Kinesis in moto), and commands from the
//! `command/#` rule.

use super::fixture::populate;
use base64::Engine;
use drogue_mqtt_ingest::{Config, Ingest};
use drogue_shared::commands::CommandService;
use drogue_shared::events::destination::Destination;
use drogue_shared::events::kinesis::KinesisSink;
use drogue_shared::runtime;
use drogue_shared::store::CommandStore;
use drogue_shared::store::dynamodb::DynamoStore;
use drogue_tests::backend::{
    fresh_dynamo_table, fresh_kinesis_stream, kinesis_client, kinesis_records, moto_url,
};
use drogue_tests::events::event;
use serde_json::{Value, json};
use std::sync::Arc;

/// Hands a JSON event to a handler as the runtime does (typed in, JSON out).
trait HandleJson {
    async fn handle_json(&self, event: Value) -> anyhow::Result<Value>;
}

impl HandleJson for Ingest {
    async fn handle_json(&self, event: Value) -> anyhow::Result<Value> {
        let handler = |event: drogue_mqtt_ingest::IngestEvent, _| {
            let ingest = self.clone();
            async move { ingest.handle(event).await }
        };
        Ok(runtime::handle_event(&handler, event, runtime::EventContext::default()).await?)
    }
}

/// The command function's rule handler, as the runtime calls it.
async fn command_rule(commands: CommandService, event: Value) -> anyhow::Result<Value> {
    let handler = |message, _| drogue_command::mqtt::handle(commands.clone(), message);
    Ok(runtime::handle_event(&handler, event, runtime::EventContext::default()).await?)
}

fn message(topic: &str, client_id: &str, payload: &[u8]) -> Value {
    let mut e = event("mqtt-ingest-telemetry.json");
    e["topic"] = json!(topic);
    e["clientId"] = json!(client_id);
    e["payload"] = json!(base64::engine::general_purpose::STANDARD.encode(payload));
    e.as_object_mut().unwrap().remove("contentType");
    e
}

/// The fixture's applications in a new table, a new stream, and the ingest over both.
struct Setup {
    store: Arc<DynamoStore>,
    client: aws_sdk_kinesis::Client,
    stream: String,
    ingest: Ingest,
}

async fn setup() -> Setup {
    let store = Arc::new(fresh_dynamo_table().await);
    populate(store.clone()).await;
    let client = kinesis_client(&moto_url());
    let stream = fresh_kinesis_stream(&client).await;
    let config = Config {
        table: "unused".into(),
        events: Destination::Kinesis(stream.clone()),
        instance: "drogue".into(),
        lookup_cache: Default::default(),
    };
    let ingest = Ingest::new(
        store.clone(),
        Arc::new(KinesisSink::new(client.clone(), &stream)),
        &config,
    );
    Setup {
        store,
        client,
        stream,
        ingest,
    }
}

#[tokio::test]
async fn rule_messages_become_events_in_the_stream() {
    let Setup {
        client,
        stream,
        ingest,
        ..
    } = setup().await;

    let accepted = ingest
        .handle_json(event("mqtt-ingest-telemetry.json"))
        .await
        .unwrap();
    assert_eq!(accepted, json!({"outcome": "accepted"}));
    let proxied = ingest
        .handle_json(message(
            "dt/from-lambda/behind-1/state/room",
            "gw@from-lambda",
            b"on",
        ))
        .await
        .unwrap();
    assert_eq!(proxied["outcome"], "accepted");

    for (topic, client_id, why) in [
        (
            "dt/from-lambda/device1/telemetry",
            "gw@from-lambda",
            "gw does not serve device1",
        ),
        (
            "dt/other-app/device1/telemetry",
            "device1@from-lambda",
            "another application's topic",
        ),
        (
            "dt/from-lambda/device1/telemetry",
            "device1",
            "no application in the client id",
        ),
        (
            "dt/from-lambda/nobody/telemetry",
            "nobody@from-lambda",
            "no such device",
        ),
        (
            "other/topic/x/y",
            "device1@from-lambda",
            "not a device topic",
        ),
    ] {
        assert_eq!(
            ingest
                .handle_json(message(topic, client_id, b"1"))
                .await
                .unwrap()["outcome"],
            "refused",
            "{why}"
        );
    }
    let mut bad_json = message("dt/from-lambda/device1/t", "device1@from-lambda", b"{not");
    bad_json["contentType"] = json!("application/json");
    assert_eq!(
        ingest.handle_json(bad_json).await.unwrap()["outcome"],
        "refused"
    );

    let records = kinesis_records(&client, &stream).await;
    assert_eq!(records.len(), 2, "only the accepted messages");
    let first: Value = serde_json::from_slice(&records[0].1).unwrap();
    assert_eq!(first["type"], "io.drogue.event.v1");
    assert_eq!(first["subject"], "telemetry");
    assert_eq!(first["device"], "device1");
    assert_eq!(first["data"], json!({"temp": 21.5}));
    assert_eq!(
        first["time"], "2026-11-25T22:00:00Z",
        "the rule's timestamp"
    );
    let second: Value = serde_json::from_slice(&records[1].1).unwrap();
    assert_eq!(
        (second["device"].as_str(), second["sender"].as_str()),
        (Some("behind-1"), Some("gw"))
    );
    assert_eq!(second["topic"], "state/room");
    assert_eq!(records[1].0, "from%2Dlambda/behind%2D1");
}

#[tokio::test]
async fn answers_to_commands_are_recorded_and_streamed() {
    let Setup {
        store,
        client,
        stream,
        ingest,
    } = setup().await;

    // an application's command over MQTT, through the command function's rule handler
    let commands = CommandService::new(store.clone());
    let outcome = command_rule(commands, event("mqtt-command.json"))
        .await
        .unwrap();
    assert_eq!(outcome["outcome"], "accepted");
    let command = store
        .take_command("from-lambda", "device1", chrono::Utc::now())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (command.name.as_str(), command.payload.as_slice()),
        ("reboot", br#"{"delay":5}"#.as_slice())
    );

    let topic = format!("cmd/from-lambda/device1/reboot/res/{}/200", command.id);
    let answered = ingest
        .handle_json(message(&topic, "device1@from-lambda", b"done"))
        .await
        .unwrap();
    assert_eq!(answered["outcome"], "accepted");
    assert_eq!(
        ingest
            .handle_json(message(&topic, "device1@from-lambda", b"again"))
            .await
            .unwrap()["outcome"],
        "refused"
    );
    let other = format!("cmd/from-lambda/gw/reboot/res/{}/200", command.id);
    assert_eq!(
        ingest
            .handle_json(message(&other, "gw@from-lambda", b"x"))
            .await
            .unwrap()["outcome"],
        "refused"
    );
    let response = store
        .get_response(&command.id, chrono::Utc::now())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (response.status, response.payload.as_slice()),
        (200, b"done".as_slice())
    );

    let records = kinesis_records(&client, &stream).await;
    let answer: Value = serde_json::from_slice(&records[0].1).unwrap();
    assert_eq!(answer["type"], "io.drogue.command.response.v1");
    assert_eq!(answer["requestid"], command.id.as_str());
    assert_eq!(answer["status"], 200);

    let unknown = command_rule(
        CommandService::new(store.clone()),
        json!({"topic": "command/from-lambda/nobody/x", "payload": "MQ==", "clientId": "c"}),
    )
    .await
    .unwrap();
    assert_eq!(unknown["outcome"], "refused");
}

#[tokio::test]
async fn lifecycle_events_become_connection_events() {
    let Setup {
        client,
        stream,
        ingest,
        ..
    } = setup().await;
    for fixture in [
        "mqtt-lifecycle-connected.json",
        "mqtt-lifecycle-disconnected.json",
    ] {
        assert_eq!(
            ingest.handle_json(event(fixture)).await.unwrap()["outcome"],
            "accepted"
        );
    }
    // an application's connection, a failed one, an unknown device: no events
    let mut app = event("mqtt-lifecycle-connected.json");
    app["clientId"] = json!("my-integration");
    let mut failed = event("mqtt-lifecycle-connected.json");
    failed["eventType"] = json!("connect_failed");
    let mut unknown = event("mqtt-lifecycle-connected.json");
    unknown["clientId"] = json!("nobody@from-lambda");
    for e in [app, failed, unknown] {
        assert_eq!(ingest.handle_json(e).await.unwrap()["outcome"], "ignored");
    }

    let records = kinesis_records(&client, &stream).await;
    assert_eq!(records.len(), 2);
    let events: Vec<Value> = records
        .iter()
        .map(|(_, data)| serde_json::from_slice(data).unwrap())
        .collect();
    for (e, connected, time) in [
        (&events[0], true, "2026-11-25T22:00:00Z"),
        (&events[1], false, "2026-11-25T22:01:00Z"),
    ] {
        assert_eq!(e["type"], "io.drogue.connection.v1");
        assert_eq!(e["subject"], "connection");
        assert_eq!(e["device"], "device1");
        assert_eq!(e["data"], json!({"connected": connected}));
        assert_eq!(e["time"], time);
    }
}
