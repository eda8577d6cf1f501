//! The Things Network's webhooks, as Drogue Cloud 0.11 takes them: `POST /ttn/v3` (TTN v3's
//! uplink messages) and `POST /ttn`, `/ttn/v2` (TTN v2's HTTP integration). The webhook
//! authenticates like any device publish (Basic `device@app` and password, or a client
//! certificate; query `application`, `device`); the message's device id is the device the
//! uplink is for, so the credential is that device's own or a gateway's that serves it
//! (`as`). Each uplink becomes one telemetry CloudEvent:
//!
//! - `subject`: the LoRaWAN frame port; `time`: when TTN received the uplink;
//! - extensions `lorawanport` (the port), `hwaddr` (v3: the device address; v2: the
//!   hardware serial) and, for v2, `lorawanretry`;
//! - `dataschema`: the query's `data_schema`, else the device's
//!   `spec.lorawan.ports.{port}.data_schema`;
//! - the data, by the device's `spec.ttn.payload`: `raw` the frame's bytes
//!   (`application/octet-stream`), `fields` TTN's decoded payload (`application/json`),
//!   anything else the whole webhook message as TTN sent it (`application/json`).
//!
//! Messages that are not uplinks (joins, acknowledgements, ...) are refused with 400, as
//! Drogue Cloud does; so is a body that is not such a message.

use crate::publish::{authenticate, parse_query, read_payload};
use crate::{EndpointError, EndpointState};
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, Utc};
use drogue_shared::events::{self, ExtensionValue, Publish};
use drogue_shared::model::Device;
use serde::Deserialize;
use serde_json::Value;
use std::sync::Arc;

/// An uplink, whichever version of TTN sent it.
#[derive(Debug, Clone, PartialEq)]
pub struct Uplink {
    pub device_id: String,
    pub port: u32,
    pub received: DateTime<Utc>,
    pub retry: Option<bool>,
    pub hardware_address: String,
    pub frame: Vec<u8>,
    pub decoded: Value,
}

/// Why a webhook body is not an uplink.
#[derive(Debug, PartialEq)]
pub enum NotAnUplink {
    Malformed(String),
    OtherMessage,
}

impl std::fmt::Display for NotAnUplink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Malformed(why) => write!(f, "the body is not a TTN message: {why}"),
            Self::OtherMessage => f.write_str("Invalid message type, expected 'Uplink'"),
        }
    }
}

/// TTN v3's webhook message, as far as an uplink needs it.
#[derive(Deserialize)]
struct V3Message {
    end_device_ids: V3DeviceIds,
    #[serde(default)]
    uplink_message: Option<V3Uplink>,
    #[serde(default)]
    received_at: Option<DateTime<Utc>>,
}

#[derive(Deserialize)]
struct V3DeviceIds {
    device_id: String,
    #[serde(default)]
    dev_addr: Option<String>,
}

#[derive(Deserialize)]
struct V3Uplink {
    #[serde(default)]
    f_port: u32,
    #[serde(default)]
    frm_payload: Option<String>,
    #[serde(default)]
    decoded_payload: Option<Value>,
    #[serde(default)]
    received_at: Option<DateTime<Utc>>,
}

/// TTN v2's HTTP integration message.
#[derive(Deserialize)]
struct V2Message {
    dev_id: String,
    #[serde(default)]
    hardware_serial: String,
    port: u32,
    #[serde(default)]
    is_retry: Option<bool>,
    #[serde(default)]
    payload_raw: Option<String>,
    #[serde(default)]
    payload_fields: Option<Value>,
    #[serde(default)]
    metadata: Option<V2Metadata>,
}

#[derive(Deserialize)]
struct V2Metadata {
    #[serde(default)]
    time: Option<DateTime<Utc>>,
}

fn frame(base64: Option<&str>) -> Result<Vec<u8>, NotAnUplink> {
    match base64 {
        Some(text) => STANDARD
            .decode(text)
            .map_err(|e| NotAnUplink::Malformed(format!("the frame payload is not base64: {e}"))),
        None => Ok(Vec::new()),
    }
}

/// Reads a TTN v3 webhook message.
pub fn v3_uplink(body: &[u8], now: DateTime<Utc>) -> Result<Uplink, NotAnUplink> {
    let message: V3Message =
        serde_json::from_slice(body).map_err(|e| NotAnUplink::Malformed(e.to_string()))?;
    let uplink = message.uplink_message.ok_or(NotAnUplink::OtherMessage)?;
    Ok(Uplink {
        device_id: message.end_device_ids.device_id,
        port: uplink.f_port,
        received: uplink.received_at.or(message.received_at).unwrap_or(now),
        retry: None,
        hardware_address: message.end_device_ids.dev_addr.unwrap_or_default(),
        frame: frame(uplink.frm_payload.as_deref())?,
        decoded: uplink.decoded_payload.unwrap_or(Value::Null),
    })
}

/// Reads a TTN v2 HTTP integration message (every one is an uplink).
pub fn v2_uplink(body: &[u8], now: DateTime<Utc>) -> Result<Uplink, NotAnUplink> {
    let message: V2Message =
        serde_json::from_slice(body).map_err(|e| NotAnUplink::Malformed(e.to_string()))?;
    Ok(Uplink {
        device_id: message.dev_id,
        port: message.port,
        received: message.metadata.and_then(|m| m.time).unwrap_or(now),
        retry: message.is_retry,
        hardware_address: message.hardware_serial,
        frame: frame(message.payload_raw.as_deref())?,
        decoded: message.payload_fields.unwrap_or(Value::Null),
    })
}

/// The data schema of an uplink: the query's, else the device's for the port.
fn data_schema(query: Option<String>, device: &Device, port: u32) -> Option<String> {
    query.or_else(|| {
        device
            .spec
            .get("lorawan")?
            .get("ports")?
            .get(port.to_string())?["data_schema"]
            .as_str()
            .map(str::to_owned)
    })
}

/// The event's data and content type, by the device's `spec.ttn.payload`.
fn payload(device: &Device, uplink: &Uplink, body: &[u8]) -> (Vec<u8>, &'static str) {
    let mode = device
        .spec
        .get("ttn")
        .and_then(|ttn| ttn.get("payload"))
        .and_then(Value::as_str);
    match mode {
        Some("raw") => (uplink.frame.clone(), "application/octet-stream"),
        Some("fields") => (uplink.decoded.to_string().into_bytes(), "application/json"),
        _ => (body.to_vec(), "application/json"),
    }
}

pub async fn publish_v3(state: State<Arc<EndpointState>>, request: Request) -> Response {
    publish(state, request, v3_uplink).await.into_response()
}

pub async fn publish_v2(state: State<Arc<EndpointState>>, request: Request) -> Response {
    publish(state, request, v2_uplink).await.into_response()
}

async fn publish(
    State(state): State<Arc<EndpointState>>,
    request: Request,
    read: fn(&[u8], DateTime<Utc>) -> Result<Uplink, NotAnUplink>,
) -> Result<StatusCode, EndpointError> {
    let now = Utc::now();
    let (parts, body) = request.into_parts();
    let mut query = parse_query(parts.uri.query())?;
    let body = read_payload(body).await?;
    let uplink = read(&body, now).map_err(|e| EndpointError::InvalidRequest(e.to_string()))?;
    // the uplink is for the message's device: the credential's own, or one it serves
    query.names.r#as = Some(uplink.device_id.clone());
    let authenticated = authenticate(&state, &parts, query.names).await?;
    state
        .limiter
        .check(&authenticated.sender.metadata.uid)
        .map_err(EndpointError::TooManyRequests)?;
    let device = &authenticated.device;
    let schema = data_schema(query.data_schema, device, uplink.port);
    let (data, content_type) = payload(device, &uplink, &body);
    let port = uplink.port.to_string();
    let mut lorawan = vec![
        ("lorawanport", ExtensionValue::String(port.clone())),
        (
            "hwaddr",
            ExtensionValue::String(uplink.hardware_address.clone()),
        ),
    ];
    if let Some(retry) = uplink.retry {
        lorawan.push(("lorawanretry", ExtensionValue::String(retry.to_string())));
    }
    let event = events::telemetry_with(
        &Publish {
            application: &authenticated.application,
            device,
            sender: &authenticated.sender,
            channel: &port,
            suffix: None,
            content_type: Some(content_type),
            data_schema: schema.as_deref(),
            instance: &state.settings.instance,
            received: uplink.received,
        },
        &data,
        &lorawan,
    )
    .map_err(|e| EndpointError::NotAcceptable(e.to_string()))?;
    state
        .sink
        .publish_structured(event)
        .await
        .map_err(|e| EndpointError::Unavailable(Box::new(e)))?;
    Ok(StatusCode::ACCEPTED)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const V3: &str = include_str!("../tests/testdata/ttn-v3-uplink.json");
    const V3_JOIN: &str = include_str!("../tests/testdata/ttn-v3-join-accept.json");
    const V2: &str = include_str!("../tests/testdata/ttn-v2-uplink.json");

    #[test]
    fn a_v3_uplink_is_read() {
        let uplink = v3_uplink(V3.as_bytes(), Utc::now()).unwrap();
        assert_eq!(uplink.device_id, "eui-70b3d57ed0041234");
        assert_eq!(uplink.port, 15);
        assert_eq!(uplink.hardware_address, "260B1234");
        assert_eq!(uplink.frame, vec![0x01, 0x02, 0x03, 0x04]);
        assert_eq!(uplink.decoded, json!({"temperature": 21.5, "humidity": 40}));
        assert_eq!(
            uplink.received,
            "2026-11-30T10:00:00.123456789Z"
                .parse::<DateTime<Utc>>()
                .unwrap()
        );
    }

    #[test]
    fn other_v3_messages_and_bad_bodies_are_no_uplinks() {
        assert_eq!(
            v3_uplink(V3_JOIN.as_bytes(), Utc::now()),
            Err(NotAnUplink::OtherMessage)
        );
        assert!(matches!(
            v3_uplink(b"{not json", Utc::now()),
            Err(NotAnUplink::Malformed(_))
        ));
        let bad_frame = V3.replace("AQIDBA==", "not base64!");
        assert!(matches!(
            v3_uplink(bad_frame.as_bytes(), Utc::now()),
            Err(NotAnUplink::Malformed(_))
        ));
    }

    #[test]
    fn a_v2_uplink_is_read() {
        let uplink = v2_uplink(V2.as_bytes(), Utc::now()).unwrap();
        assert_eq!(uplink.device_id, "my-device");
        assert_eq!(uplink.port, 1);
        assert_eq!(uplink.retry, Some(false));
        assert_eq!(uplink.hardware_address, "0102030405060708");
        assert_eq!(uplink.frame, vec![0xAB, 0xCD]);
        assert_eq!(uplink.decoded, json!({"led": "on"}));
    }

    #[test]
    fn the_data_schema_comes_from_the_query_or_the_devices_port() {
        let device: Device = serde_json::from_value(json!({
            "metadata": {"name": "d", "application": "a", "uid": "u", "creationTimestamp": "2026-01-01T00:00:00Z", "generation": 0, "resourceVersion": "r"},
            "spec": {"lorawan": {"ports": {"15": {"data_schema": "urn:sensor:v1"}}}}
        }))
        .unwrap();
        assert_eq!(
            data_schema(None, &device, 15).as_deref(),
            Some("urn:sensor:v1")
        );
        assert_eq!(data_schema(None, &device, 2), None);
        assert_eq!(
            data_schema(Some("q".into()), &device, 15).as_deref(),
            Some("q")
        );
    }
}
