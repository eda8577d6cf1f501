//! Device events as CloudEvents (Drogue Cloud's mapping, RFC 0003) and the event stream
//! they are written to: an `EventSink` port with a Kinesis adapter for AWS, an HTTP
//! adapter for Knative's `$K_SINK` (binary-mode CloudEvents) and a persistent local log
//! for `drogue-local`.

pub mod destination;
pub mod http_sink;
pub mod kinesis;
#[cfg(feature = "local")]
pub mod log;

use crate::model::{Application, Device};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
pub use cloudevents::event::ExtensionValue;
use cloudevents::{AttributesReader, Data, Event, EventBuilder, EventBuilderV10};
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};

/// The type of device events.
pub const TYPE_EVENT: &str = "io.drogue.event.v1";
/// The type of connection events (`{"connected": bool}` on subject `connection`).
pub const TYPE_CONNECTION: &str = "io.drogue.connection.v1";
/// The type of command responses (subject: the command's name).
pub const TYPE_COMMAND_RESPONSE: &str = "io.drogue.command.response.v1";
/// The type of registry change events (subject `applications` or `devices`).
pub const TYPE_REGISTRY: &str = "io.drogue.registry.v1";
/// The default value of the `instance` extension.
pub const DEFAULT_INSTANCE: &str = "drogue";

/// What a device published.
pub struct Publish<'a> {
    pub application: &'a Application,
    /// The device the data is for (the `as` device of a gateway).
    pub device: &'a Device,
    /// The device that sent it (the authenticated one).
    pub sender: &'a Device,
    /// The channel: the event's `subject`.
    pub channel: &'a str,
    /// More topic levels after the channel, kept in the `topic` extension.
    pub suffix: Option<&'a str>,
    pub content_type: Option<&'a str>,
    pub data_schema: Option<&'a str>,
    pub instance: &'a str,
    pub received: DateTime<Utc>,
}

/// The payload could not be taken as its content type says.
#[derive(Debug, thiserror::Error)]
#[error("the payload is declared as JSON but is not valid JSON: {0}")]
pub struct InvalidJson(String);

/// Whether a content type is JSON (`application/json`, `text/json`, `*+json`).
pub fn is_json(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or_default().trim();
    essence.starts_with("application/json")
        || essence.starts_with("text/json")
        || essence.ends_with("+json")
}

/// `{app}/{device}`, each percent-encoded (everything but ASCII letters and digits).
pub fn device_path(app: &str, device: &str) -> String {
    let mut path = String::with_capacity(app.len() + device.len() + 1);
    push_encoded(&mut path, app);
    path.push('/');
    push_encoded(&mut path, device);
    path
}

/// The `source` of a device's events, as Drogue Cloud 0.11 builds it:
/// `drogue://{app}/{device}`, the application as is (a DNS label needs no encoding) and
/// the device percent-encoded (everything but ASCII letters and digits).
pub fn source(app: &str, device: &str) -> String {
    let mut source = String::with_capacity(app.len() + device.len() + 10);
    source.push_str("drogue://");
    source.push_str(app);
    source.push('/');
    push_encoded(&mut source, device);
    source
}

/// `name` percent-encoded (everything but ASCII letters and digits) after `out`; most
/// names need none, and are copied as they are.
fn push_encoded(out: &mut String, name: &str) {
    if name.bytes().all(|b| b.is_ascii_alphanumeric()) {
        out.push_str(name);
    } else {
        out.extend(utf8_percent_encode(name, NON_ALPHANUMERIC));
    }
}

/// `time` in RFC 3339 as chrono serializes a `DateTime<Utc>` (what a
/// `cloudevents::Event`'s `time` becomes): `2026-12-05T17:31:56.123456789Z`, the fraction
/// in 3, 6 or 9 digits as it needs, none when it is zero; written digit by digit into
/// `buf`, without the formatting machinery. `None` for what chrono writes otherwise
/// (years outside 0 to 9999, a leap second).
fn rfc3339<'b>(time: &DateTime<Utc>, buf: &'b mut [u8; 30]) -> Option<&'b str> {
    use chrono::{Datelike, Timelike};
    let year = u32::try_from(time.year()).ok().filter(|y| *y <= 9999)?;
    let nanos = time.nanosecond();
    if nanos >= 1_000_000_000 {
        return None;
    }
    fn digits(buf: &mut [u8], mut value: u32) {
        for b in buf.iter_mut().rev() {
            *b = b'0' + (value % 10) as u8;
            value /= 10;
        }
    }
    buf[..19].copy_from_slice(b"0000-00-00T00:00:00");
    digits(&mut buf[0..4], year);
    digits(&mut buf[5..7], time.month());
    digits(&mut buf[8..10], time.day());
    digits(&mut buf[11..13], time.hour());
    digits(&mut buf[14..16], time.minute());
    digits(&mut buf[17..19], time.second());
    let mut end = 19;
    let (fraction, places) = match nanos {
        0 => (0, 0),
        n if n % 1_000_000 == 0 => (n / 1_000_000, 3),
        n if n % 1_000 == 0 => (n / 1_000, 6),
        n => (n, 9),
    };
    if places > 0 {
        buf[end] = b'.';
        digits(&mut buf[end + 1..end + 1 + places], fraction);
        end += 1 + places;
    }
    buf[end] = b'Z';
    std::str::from_utf8(&buf[..=end]).ok()
}

/// A CloudEvent in structured JSON mode, with the attributes the event streams route
/// and index it by. Device events are written this way directly ([`telemetry`],
/// [`command_response`], [`connection`]); any other [`Event`] becomes one with `from`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StructuredEvent {
    /// The `application` extension (empty without one).
    pub application: String,
    /// The `applicationuid` extension.
    pub application_uid: Option<String>,
    /// The `subject`.
    pub subject: Option<String>,
    /// The `partitionkey` extension (`{app}/{device}`), or the source.
    pub partition_key: String,
    /// The whole event (`data` for JSON, `data_base64` otherwise).
    pub json: String,
}

impl From<&Event> for StructuredEvent {
    fn from(event: &Event) -> Self {
        Self {
            application: application_of(event).unwrap_or_default(),
            application_uid: event.extension("applicationuid").map(|v| v.to_string()),
            subject: event.subject().map(str::to_owned),
            partition_key: partition_key(event),
            json: to_json(event),
        }
    }
}

impl StructuredEvent {
    /// The event as a [`cloudevents::Event`] (for a binary-mode binding).
    pub fn to_event(&self) -> Result<Event, serde_json::Error> {
        read_structured(&self.json)
    }
}

/// A structured JSON event read back as an [`Event`]. `dataschema` is read as the
/// extension a device's event carries it as (`?data_schema=` need not be a URI, which
/// `cloudevents-sdk` requires of the attribute of that name).
pub fn read_structured(json: &str) -> Result<Event, serde_json::Error> {
    let mut map: serde_json::Map<String, serde_json::Value> = serde_json::from_str(json)?;
    let schema = map.remove("dataschema");
    let mut event: Event = serde_json::from_value(serde_json::Value::Object(map))?;
    match schema {
        Some(serde_json::Value::String(schema)) => event.set_extension("dataschema", schema),
        Some(other) => event.set_extension("dataschema", other.to_string()),
        None => {}
    }
    Ok(event)
}

/// The CloudEvent of a device's publish.
///
/// A declared JSON content type must carry valid JSON, and becomes `application/json`;
/// other content types are kept; without one, a body that parses as JSON is
/// `application/json`, anything else `application/octet-stream`. JSON data is kept as the
/// device sent it, without its insignificant whitespace.
pub fn telemetry(publish: &Publish<'_>, body: &[u8]) -> Result<StructuredEvent, InvalidJson> {
    event(publish, TYPE_EVENT, body, &[])
}

/// [`telemetry`] with more extensions, after the standard ones.
pub fn telemetry_with(
    publish: &Publish<'_>,
    body: &[u8],
    more: &[(&str, ExtensionValue)],
) -> Result<StructuredEvent, InvalidJson> {
    event(publish, TYPE_EVENT, body, more)
}

/// The CloudEvent of a device's response to a command: `subject` is the command's
/// name (in `channel`), `requestid` and `status` are extensions.
pub fn command_response(
    publish: &Publish<'_>,
    request: &str,
    status: u16,
    body: &[u8],
) -> Result<StructuredEvent, InvalidJson> {
    event(
        publish,
        TYPE_COMMAND_RESPONSE,
        body,
        &[
            ("requestid", ExtensionValue::String(request.to_owned())),
            ("status", ExtensionValue::Integer(i64::from(status))),
        ],
    )
}

/// The CloudEvent of a device connecting or disconnecting over MQTT: subject
/// `connection`, data `{"connected": bool}` (as Drogue Cloud's device-state events).
pub fn connection(publish: &Publish<'_>, connected: bool) -> StructuredEvent {
    let body = if connected {
        r#"{"connected":true}"#
    } else {
        r#"{"connected":false}"#
    };
    let publish = Publish {
        channel: "connection",
        suffix: None,
        content_type: Some("application/json"),
        data_schema: None,
        ..*publish
    };
    event(&publish, TYPE_CONNECTION, body.as_bytes(), &[]).expect("the body is JSON")
}

/// Whether `body` is one JSON value (with nothing after it), without building it.
fn check_json(body: &[u8]) -> Result<(), serde_json::Error> {
    serde_json::from_slice::<serde::de::IgnoredAny>(body).map(drop)
}

/// JSON data copied value by value into the event, as sent but compact.
struct JsonData<'a>(&'a [u8]);

impl serde::Serialize for JsonData<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut from = serde_json::Deserializer::from_slice(self.0);
        serde_transcode::transcode(&mut from, serializer)
    }
}

/// Writes a device's event straight into structured JSON mode, in the order and with the
/// attributes of a `cloudevents::Event` built for it (tested against one below).
fn event(
    publish: &Publish<'_>,
    ty: &str,
    body: &[u8],
    more: &[(&str, ExtensionValue)],
) -> Result<StructuredEvent, InvalidJson> {
    use base64::Engine;
    use serde::ser::{SerializeMap, Serializer};

    let is_json_body = match publish.content_type {
        Some(ct) if is_json(ct) => {
            check_json(body).map_err(|e| InvalidJson(e.to_string()))?;
            true
        }
        Some(_) => false,
        None => check_json(body).is_ok(),
    };
    let content_type = match publish.content_type {
        _ if is_json_body => "application/json",
        Some(ct) => ct,
        None => "application/octet-stream",
    };
    let app = publish.application.metadata.name.as_str();
    let device = publish.device.metadata.name.as_str();
    let partition_key = device_path(app, device);
    let topic = publish
        .suffix
        .filter(|s| !s.is_empty())
        .map(|suffix| [publish.channel, suffix].join("/"));
    let mut id = uuid::Uuid::encode_buffer();
    let id = uuid::Uuid::new_v4().hyphenated().encode_lower(&mut id);

    let mut json = Vec::with_capacity(640 + body.len() * 4 / 3);
    let mut serializer = serde_json::Serializer::new(&mut json);
    let written: Result<(), serde_json::Error> = (|| {
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("specversion", "1.0")?;
        map.serialize_entry("id", id)?;
        map.serialize_entry("type", ty)?;
        map.serialize_entry("source", &source(app, device))?;
        map.serialize_entry("datacontenttype", content_type)?;
        map.serialize_entry("subject", publish.channel)?;
        match rfc3339(&publish.received, &mut [0; 30]) {
            Some(time) => map.serialize_entry("time", time)?,
            None => map.serialize_entry("time", &publish.received)?,
        }
        if is_json_body {
            map.serialize_entry("data", &JsonData(body))?;
        } else {
            let encoded = base64::engine::general_purpose::STANDARD.encode(body);
            map.serialize_entry("data_base64", &encoded)?;
        }
        map.serialize_entry("instance", publish.instance)?;
        map.serialize_entry("application", app)?;
        map.serialize_entry("applicationuid", &publish.application.metadata.uid)?;
        map.serialize_entry("device", device)?;
        map.serialize_entry("deviceuid", &publish.device.metadata.uid)?;
        map.serialize_entry("sender", &publish.sender.metadata.name)?;
        map.serialize_entry("senderuid", &publish.sender.metadata.uid)?;
        map.serialize_entry("partitionkey", &partition_key)?;
        if let Some(schema) = publish.data_schema {
            map.serialize_entry("dataschema", schema)?;
        }
        if let Some(topic) = &topic {
            map.serialize_entry("topic", topic)?;
        }
        for (name, value) in more {
            map.serialize_entry(name, value)?;
        }
        map.end()
    })();
    written.map_err(|e| InvalidJson(e.to_string()))?;
    Ok(StructuredEvent {
        application: app.to_owned(),
        application_uid: Some(publish.application.metadata.uid.clone()),
        subject: Some(publish.channel.to_owned()),
        partition_key,
        json: String::from_utf8(json).map_err(|e| InvalidJson(e.to_string()))?,
    })
}

/// What happened to a resource of the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Change {
    Created,
    Updated,
    Deleted,
}

impl Change {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Updated => "updated",
            Self::Deleted => "deleted",
        }
    }
}

/// The application a registry change event belongs to.
pub struct ChangedIn<'a> {
    pub name: &'a str,
    /// `None` when it cannot be told any more (the application is gone too).
    pub uid: Option<&'a str>,
}

/// The CloudEvent of a change of an application or a device in the registry, as Drogue
/// Cloud's device registry events (type `io.drogue.registry.v1`, subject `devices`, the
/// device as `device` and `sender`), with applications too (subject `applications`) and
/// a JSON body saying what changed: `{"change", "name", "uid", "generation",
/// "resourceVersion"}`. `application` is the application the resource is, or belongs to.
pub fn registry_change(
    instance: &str,
    application: &ChangedIn<'_>,
    device: Option<&crate::model::Resource>,
    resource: &crate::model::Resource,
    change: Change,
    time: DateTime<Utc>,
) -> Event {
    let app = application.name;
    let body = serde_json::json!({
        "change": change.as_str(),
        "name": resource.metadata.name,
        "uid": resource.metadata.uid,
        "generation": resource.metadata.generation,
        "resourceVersion": resource.metadata.resource_version,
    });
    let mut builder = EventBuilderV10::new()
        .id(uuid::Uuid::new_v4().to_string())
        .ty(TYPE_REGISTRY)
        .time(time)
        .extension("instance", instance)
        .extension("application", app);
    if let Some(uid) = application.uid {
        builder = builder.extension("applicationuid", uid);
    }
    builder = match device {
        Some(device) => {
            let name = device.metadata.name.as_str();
            let uid = device.metadata.uid.as_str();
            builder
                .source(source(app, name))
                .subject("devices")
                .extension("device", name)
                .extension("deviceuid", uid)
                .extension("sender", name)
                .extension("senderuid", uid)
                .extension("partitionkey", device_path(app, name))
        }
        None => builder
            .source(format!("drogue://{app}"))
            .subject("applications")
            .extension(
                "partitionkey",
                utf8_percent_encode(app, NON_ALPHANUMERIC).to_string(),
            ),
    };
    builder
        .extension("change", change.as_str())
        .data("application/json", Data::Json(body))
        .build()
        .expect("every required attribute is set")
}

/// The `partitionkey` extension (`{app}/{device}`), or the source.
pub fn partition_key(event: &Event) -> String {
    match event.extension("partitionkey") {
        Some(value) => value.to_string(),
        None => event.source().to_string(),
    }
}

/// The `application` extension.
pub fn application_of(event: &Event) -> Option<String> {
    event.extension("application").map(|v| v.to_string())
}

/// The event in structured JSON mode (`data` for JSON, `data_base64` otherwise).
pub fn to_json(event: &Event) -> String {
    serde_json::to_string(event).expect("events serialize")
}

/// Why an event was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("the event stream is unavailable")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl SinkError {
    pub fn unavailable(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::Unavailable(Box::new(e))
    }
}

/// Where device events go. `publish` returns once the event is durably accepted.
#[async_trait]
pub trait EventSink: Send + Sync {
    /// Publishes an event in structured JSON mode (device events are built that way).
    async fn publish_structured(&self, event: StructuredEvent) -> Result<(), SinkError>;

    /// Publishes any other event (registry changes, ...).
    async fn publish(&self, event: &Event) -> Result<(), SinkError> {
        self.publish_structured(StructuredEvent::from(event)).await
    }

    /// Publishes an event as [`publish_structured`](Self::publish_structured) does, and
    /// calls `sequenced` once the event's place in the stream is fixed: an event the
    /// caller publishes after that call lands after this one. A caller that keeps its
    /// events in order (a connection's publishes) may start the next one then, and
    /// need not wait for this one to be durable. Streams that cannot tell call it when
    /// the event is accepted or refused; a publish that fails before its place is fixed
    /// may not call it at all.
    async fn publish_in_order(
        &self,
        event: StructuredEvent,
        sequenced: &(dyn Fn() + Send + Sync),
    ) -> Result<(), SinkError> {
        let result = self.publish_structured(event).await;
        sequenced();
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Metadata, Resource};
    use serde_json::{Value, json};

    fn resource(name: &str, uid: &str) -> Resource {
        Resource {
            metadata: Metadata {
                name: name.into(),
                application: None,
                uid: uid.into(),
                creation_timestamp: Utc::now(),
                generation: 0,
                resource_version: "rv".into(),
                deletion_timestamp: None,
                finalizers: vec![],
                labels: Default::default(),
                annotations: Default::default(),
            },
            spec: Default::default(),
            status: Default::default(),
        }
    }

    fn event(content_type: Option<&str>, body: &[u8]) -> Result<Value, InvalidJson> {
        let (app, device, gateway) = (
            resource("my-app", "a-uid"),
            resource("dev 1", "d-uid"),
            resource("gw", "g-uid"),
        );
        let publish = Publish {
            application: &app,
            device: &device,
            sender: &gateway,
            channel: "telemetry",
            suffix: Some("room/1"),
            content_type,
            data_schema: Some("urn:schema"),
            instance: DEFAULT_INSTANCE,
            received: "2026-11-24T10:00:00Z".parse().unwrap(),
        };
        telemetry(&publish, body).map(|e| serde_json::from_str(&e.json).unwrap())
    }

    /// The event of a publish built as a `cloudevents::Event`, attribute by attribute.
    fn reference(
        publish: &Publish<'_>,
        ty: &str,
        body: &[u8],
        more: &[(&str, ExtensionValue)],
    ) -> Event {
        let app = &publish.application.metadata.name;
        let mut builder = EventBuilderV10::new()
            .id(uuid::Uuid::new_v4().to_string())
            .ty(ty)
            .source(source(app, &publish.device.metadata.name))
            .subject(publish.channel)
            .time(publish.received)
            .extension("instance", publish.instance)
            .extension("application", app.as_str())
            .extension("applicationuid", publish.application.metadata.uid.as_str())
            .extension("device", publish.device.metadata.name.as_str())
            .extension("deviceuid", publish.device.metadata.uid.as_str())
            .extension("sender", publish.sender.metadata.name.as_str())
            .extension("senderuid", publish.sender.metadata.uid.as_str())
            .extension(
                "partitionkey",
                device_path(app, &publish.device.metadata.name),
            );
        if let Some(schema) = publish.data_schema {
            builder = builder.extension("dataschema", schema);
        }
        if let Some(suffix) = publish.suffix.filter(|s| !s.is_empty()) {
            builder = builder.extension("topic", format!("{}/{suffix}", publish.channel));
        }
        for (name, value) in more {
            builder = builder.extension(name, value.clone());
        }
        builder = match publish.content_type {
            Some(ct) if is_json(ct) => builder.data(
                "application/json",
                Data::Json(serde_json::from_slice(body).unwrap()),
            ),
            Some(ct) => builder.data(ct, body.to_vec()),
            None => match serde_json::from_slice(body) {
                Ok(value) => builder.data("application/json", Data::Json(value)),
                Err(_) => builder.data("application/octet-stream", body.to_vec()),
            },
        };
        builder.build().unwrap()
    }

    #[test]
    fn names_are_percent_encoded_as_the_encoder_does() {
        for (app, device) in [
            ("my-app", "dev1"),
            ("app1", "dev \"1\"/ü"),
            ("a", "x%41+y"),
            ("ABC09", ""),
        ] {
            let encoded = |s: &str| utf8_percent_encode(s, NON_ALPHANUMERIC).to_string();
            assert_eq!(
                device_path(app, device),
                format!("{}/{}", encoded(app), encoded(device))
            );
            assert_eq!(
                source(app, device),
                format!("drogue://{app}/{}", encoded(device))
            );
        }
    }

    #[test]
    fn times_are_written_as_chrono_serializes_them() {
        let mut times: Vec<DateTime<Utc>> = [
            "2026-11-24T10:00:00Z",
            "2026-11-24T10:00:00.5Z",
            "2026-11-24T10:00:00.120Z",
            "2026-11-24T10:00:00.000120Z",
            "2026-11-24T10:00:00.000000001Z",
            "2026-11-24T10:00:00.999999999Z",
            "0000-01-01T00:00:00Z",
            "9999-12-31T23:59:59.999Z",
            "1970-01-01T00:00:00Z",
            "2024-02-29T23:59:59.100200300Z",
        ]
        .iter()
        .map(|t| t.parse().unwrap())
        .collect();
        // a spread of instants, and the clock's own
        times.extend((0..2_000).map(|i: i64| {
            DateTime::from_timestamp(
                i * 7_919_777 % 4_102_444_800,
                (i * 104_729 % 1_000_000_000) as u32,
            )
            .unwrap()
        }));
        times.push(Utc::now());
        let mut buf = [0; 30];
        for time in &times {
            let expected = serde_json::to_value(time).unwrap();
            let written = rfc3339(time, &mut buf).unwrap();
            assert_eq!(written, expected.as_str().unwrap(), "{time:?}");
        }
        // outside 0 to 9999 and a leap second: chrono's own serialization is used
        let at = |year, nanos| {
            chrono::NaiveDate::from_ymd_opt(year, 12, 31)
                .unwrap()
                .and_hms_nano_opt(23, 59, 59, nanos)
                .unwrap()
                .and_utc()
        };
        let odd = [at(10_000, 0), at(-1, 0), at(2016, 1_500_000_000)];
        for time in odd {
            assert_eq!(rfc3339(&time, &mut [0; 30]), None, "{time:?}");
        }
    }

    /// An event's JSON without its `id`, which is new for every event.
    fn without_id(json: &str) -> Value {
        let mut value: Value = serde_json::from_str(json).unwrap();
        let id = value.as_object_mut().unwrap().remove("id").unwrap();
        assert!(uuid::Uuid::parse_str(id.as_str().unwrap()).is_ok());
        value
    }

    #[test]
    fn structured_events_are_the_cloudevents_built_for_them() {
        let (app, device, gateway) = (
            resource("my-app", "a-uid"),
            resource("dev \"1\"/ü", "d-uid"),
            resource("gw", "g-uid"),
        );
        let bodies: [(Option<&str>, &[u8]); 7] = [
            (
                Some("application/json"),
                br#"{"temp": 21.5, "n": [1, -2, 3e2], "s": "a\"b\u00e9"}"#,
            ),
            (Some("text/json"), b"  42 "),
            (Some("text/plain; charset=utf-8"), "grüß".as_bytes()),
            (None, br#"{"a":{"b":null}}"#),
            (None, b"{nope"),
            (None, &[0xff, 0x00, 0x7f]),
            (None, b""),
        ];
        let schemas = [
            (None, None),
            (Some("room/1"), Some("urn:s")),
            (Some(""), Some("v1 (no URI)")),
        ];
        for (suffix, schema) in schemas {
            for (content_type, body) in bodies {
                let publish = Publish {
                    application: &app,
                    device: &device,
                    sender: &gateway,
                    channel: "telemetry",
                    suffix,
                    content_type,
                    data_schema: schema,
                    instance: DEFAULT_INSTANCE,
                    received: "2026-11-24T10:00:00.123456789Z".parse().unwrap(),
                };
                let more = [
                    ("requestid", ExtensionValue::String("r-1".into())),
                    ("status", ExtensionValue::Integer(200)),
                    ("retry", ExtensionValue::Boolean(true)),
                ];
                for (ty, more) in [(TYPE_EVENT, &more[..0]), (TYPE_COMMAND_RESPONSE, &more[..])] {
                    let ours = super::event(&publish, ty, body, more).unwrap();
                    let theirs = reference(&publish, ty, body, more);
                    let expected = StructuredEvent::from(&theirs);
                    assert_eq!(
                        without_id(&ours.json),
                        without_id(&expected.json),
                        "{content_type:?} {body:?}"
                    );
                    assert_eq!(
                        (
                            &ours.application,
                            &ours.application_uid,
                            &ours.subject,
                            &ours.partition_key
                        ),
                        (
                            &expected.application,
                            &expected.application_uid,
                            &expected.subject,
                            &expected.partition_key
                        ),
                    );
                    let back = ours.to_event().unwrap();
                    assert_eq!(without_id(&to_json(&back)), without_id(&expected.json));
                }
            }
        }
    }

    #[test]
    fn json_data_is_kept_as_sent_without_whitespace() {
        let e = event(None, b" { \"b\" : 1,\n \"a\" : [ true , \"x y\" ] } ").unwrap();
        assert_eq!(e["data"], json!({"b": 1, "a": [true, "x y"]}));
        let (app, device) = (resource("my-app", "a-uid"), resource("d", "d-uid"));
        let publish = Publish {
            application: &app,
            device: &device,
            sender: &device,
            channel: "c",
            suffix: None,
            content_type: None,
            data_schema: None,
            instance: DEFAULT_INSTANCE,
            received: Utc::now(),
        };
        let raw = telemetry(&publish, b" { \"b\" : 1,\n \"a\" : [ true , \"x y\" ] } ").unwrap();
        assert!(
            raw.json.contains(r#""data":{"b":1,"a":[true,"x y"]}"#),
            "{}",
            raw.json
        );
        // a member the device repeats stays repeated
        let repeated = telemetry(&publish, br#"{"a":1,"a":2}"#).unwrap();
        assert!(
            repeated.json.contains(r#""data":{"a":1,"a":2}"#),
            "{}",
            repeated.json
        );
        assert!(event(Some("application/json"), br#"{"a":1} trailing"#).is_err());
        let e = event(None, br#"{"a":1} trailing"#).unwrap();
        assert_eq!(e["datacontenttype"], "application/octet-stream");
    }

    #[test]
    fn connection_events_say_whether_connected() {
        let (app, device) = (resource("my-app", "a-uid"), resource("d", "d-uid"));
        let publish = Publish {
            application: &app,
            device: &device,
            sender: &device,
            channel: "ignored",
            suffix: Some("x"),
            content_type: None,
            data_schema: Some("ignored"),
            instance: DEFAULT_INSTANCE,
            received: Utc::now(),
        };
        for connected in [true, false] {
            let e: Value = serde_json::from_str(&connection(&publish, connected).json).unwrap();
            assert_eq!(e["type"], TYPE_CONNECTION);
            assert_eq!(e["subject"], "connection");
            assert_eq!(e["data"], json!({ "connected": connected }));
            assert!(e.get("topic").is_none() && e.get("dataschema").is_none());
        }
    }

    #[test]
    fn every_attribute_follows_the_drogue_mapping() {
        let e = event(Some("application/json"), br#"{"temp":42}"#).unwrap();
        assert_eq!(e["specversion"], "1.0");
        assert!(uuid::Uuid::parse_str(e["id"].as_str().unwrap()).is_ok());
        assert_eq!(e["type"], "io.drogue.event.v1");
        assert_eq!(
            e["source"], "drogue://my-app/dev%201",
            "as Drogue Cloud 0.11"
        );
        assert_eq!(e["subject"], "telemetry");
        assert_eq!(e["time"], "2026-11-24T10:00:00Z");
        assert_eq!(e["datacontenttype"], "application/json");
        assert_eq!(e["dataschema"], "urn:schema");
        assert_eq!(e["instance"], "drogue");
        assert_eq!(e["application"], "my-app");
        assert_eq!(e["applicationuid"], "a-uid");
        assert_eq!(e["device"], "dev 1");
        assert_eq!(e["deviceuid"], "d-uid");
        assert_eq!(e["sender"], "gw");
        assert_eq!(e["senderuid"], "g-uid");
        assert_eq!(e["partitionkey"], "my%2Dapp/dev%201");
        assert_eq!(e["topic"], "telemetry/room/1");
        assert_eq!(e["data"], json!({"temp": 42}));
    }

    #[test]
    fn registry_changes_say_what_changed_on_which_resource() {
        let (app, device) = (resource("my-app", "a-uid"), resource("dev 1", "d-uid"));
        let time = "2026-12-01T10:00:00Z".parse().unwrap();
        let apps = ChangedIn {
            name: "my-app",
            uid: Some("a-uid"),
        };
        let e = registry_change(
            "drogue",
            &apps,
            Some(&device),
            &device,
            Change::Updated,
            time,
        );
        let e: Value = serde_json::from_str(&to_json(&e)).unwrap();
        assert_eq!(e["type"], "io.drogue.registry.v1");
        assert_eq!(e["subject"], "devices");
        assert_eq!(e["source"], "drogue://my-app/dev%201");
        assert_eq!(e["application"], "my-app");
        assert_eq!(e["applicationuid"], "a-uid");
        assert_eq!(e["device"], "dev 1");
        assert_eq!(e["deviceuid"], "d-uid");
        assert_eq!(e["sender"], "dev 1");
        assert_eq!(e["change"], "updated");
        assert_eq!(
            e["data"],
            json!({"change": "updated", "name": "dev 1", "uid": "d-uid",
                   "generation": 0, "resourceVersion": "rv"})
        );

        let gone = ChangedIn {
            name: "my-app",
            uid: None,
        };
        let e = registry_change("drogue", &gone, None, &app, Change::Deleted, time);
        let e: Value = serde_json::from_str(&to_json(&e)).unwrap();
        assert_eq!(e["subject"], "applications");
        assert_eq!(e["source"], "drogue://my-app");
        assert_eq!(e["partitionkey"], "my%2Dapp");
        assert!(e.get("applicationuid").is_none());
        assert!(e.get("device").is_none());
        assert_eq!(e["data"]["change"], "deleted");
        assert_eq!(e["data"]["uid"], "a-uid");
    }

    #[test]
    fn content_types_are_checked_normalised_or_sniffed() {
        let e = event(Some("application/senml+json; charset=utf-8"), b"[1]").unwrap();
        assert_eq!(e["datacontenttype"], "application/json");
        assert!(event(Some("application/json"), b"{nope").is_err());
        let e = event(Some("text/plain"), b"hello").unwrap();
        assert_eq!(e["datacontenttype"], "text/plain");
        assert_eq!(e["data_base64"], "aGVsbG8=");
        let e = event(None, br#"{"a":1}"#).unwrap();
        assert_eq!(e["datacontenttype"], "application/json");
        let e = event(None, &[0xff, 0x00]).unwrap();
        assert_eq!(e["datacontenttype"], "application/octet-stream");
        assert_eq!(e["data_base64"], "/wA=");
        let e = event(None, b"").unwrap();
        assert_eq!(e["datacontenttype"], "application/octet-stream");
    }
}
