//! MQTT 5: translates its packets to the broker's one connection path and the answers
//! back, with its reason codes and reason strings.

use super::BrokerError;
use super::connect::{self, Conn, Connect, Connection};
use super::deliver::Outlet;
use super::publish::{PublishIn, Published, Turn, closing};
use super::subscribe::Subscribed;
use crate::mqtt::backend::{Backend, Outcome, Will};
use crate::mqtt::hub::{ContentMode, Delivery};
use drogue_shared::mqtt::Refusal;
use ntex_bytes::ByteString;
use ntex_mqtt::{QoS, v5};
use std::sync::Arc;
use tokio::runtime::Handle;

/// An error of the MQTT 5 publish service closes the connection (refusals that can be
/// told in a PUBACK are answered with one before it gets here).
impl TryFrom<BrokerError> for v5::PublishAck {
    type Error = BrokerError;
    fn try_from(err: BrokerError) -> Result<Self, Self::Error> {
        Err(err)
    }
}

/// A CONNECT, decided by [`connect::connect`]; refusals get a CONNACK reason code and
/// string.
pub(super) async fn handshake(
    backend: Arc<Backend>,
    main: Handle,
    hs: v5::Handshake,
) -> Result<v5::HandshakeAck<Conn>, BrokerError> {
    let packet = hs.packet();
    let request = Connect {
        client_id: packet.client_id.to_string(),
        username: packet.username.as_ref().map(ToString::to_string),
        password: packet.password.as_ref().map(|p| p.to_vec()),
        certificates: connect::peer_certificates(hs.io()),
        clean_start: packet.clean_start,
        session_expiry: packet.session_expiry_interval_secs,
        will: packet.last_will.as_ref().map(|w| Will {
            topic: w.topic.to_string(),
            payload: w.message.to_vec(),
            content_type: w.content_type.as_ref().map(ToString::to_string),
        }),
    };
    let refuse = |code, reason: &str| v5::codec::ConnectAck {
        reason_code: code,
        reason_string: Some(ByteString::from(reason)),
        ..Default::default()
    };
    match connect::connect(&backend, &main, request).await? {
        Connection::Accepted(accepted) => {
            let (session_present, capped) = (accepted.session_present, accepted.capped_expiry);
            let conn = accepted.deliver(hs.sink());
            Ok(hs.ack(conn).with(|ack| {
                ack.session_present = session_present;
                ack.session_expiry_interval_secs = capped;
                ack.retain_available = false;
                ack.subscription_identifiers_available = false;
                ack.shared_subscription_available = true;
                ack.wildcard_subscription_available = true;
            }))
        }
        Connection::Refused(reason) => Ok(hs.fail_with(refuse(
            v5::codec::ConnectAckReason::BadUserNameOrPassword,
            reason,
        ))),
        Connection::Unavailable => Ok(hs.fail_with(refuse(
            v5::codec::ConnectAckReason::ServerUnavailable,
            "the registry is unavailable",
        ))),
        Connection::OverQuota(limit) => Ok(hs.fail_with(refuse(
            v5::codec::ConnectAckReason::QuotaExceeded,
            &format!("the owner holds its {limit} live connections"),
        ))),
    }
}

impl Outlet for v5::MqttSink {
    fn on_ack(&self, acked: impl Fn(u16, bool) + 'static) {
        self.publish_ack_cb(move |ack, disconnected| acked(ack.packet_id.get(), disconnected));
    }

    fn ready(&self) -> impl Future<Output = bool> {
        v5::MqttSink::ready(self)
    }

    /// With the content type, correlation data and user properties as properties.
    fn send(&self, d: &Delivery, packet_id: Option<u16>) -> bool {
        let publish = self
            // (the delivery's buffers are shared: clones, not copies)
            .publish(d.topic.clone())
            .properties(|p| {
                p.content_type.clone_from(&d.content_type);
                p.correlation_data.clone_from(&d.correlation_data);
                p.user_properties.clone_from(&d.user_properties);
            });
        let payload = d.payload.clone();
        match packet_id {
            Some(id) => publish
                .packet_id(id)
                .send_at_least_once_no_block(payload)
                .is_ok(),
            None => publish.send_at_most_once(payload).is_ok(),
        }
    }

    fn close(&self, revoked: bool) {
        let reason_code = if revoked {
            v5::codec::DisconnectReasonCode::NotAuthorized
        } else {
            v5::codec::DisconnectReasonCode::SessionTakenOver
        };
        self.close_with_reason(v5::codec::Disconnect {
            reason_code,
            ..Default::default()
        });
    }
}

/// A PUBLISH, decided by `ConnInner::publish` in the turn it took on arrival.
pub(super) async fn publish(
    conn: Conn,
    turn: Turn,
    p: v5::Publish,
) -> Result<v5::PublishAck, BrokerError> {
    let payload = p
        .read_all()
        .await
        .map_err(|e| BrokerError(format!("cannot read the payload: {e:?}")))?;
    let content_type = p.packet().properties.content_type.clone();
    let publish = PublishIn {
        topic: p.publish_topic(),
        payload,
        content_type: content_type.as_deref(),
        // a QoS 0 publish has no PUBACK to refuse it with
        refusable: p.qos() != QoS::AtMostOnce,
    };
    use v5::codec::PublishAckReason as Reason;
    let (code, reason) = match conn.publish(turn, publish).await {
        Published::Accepted => return Ok(p.ack()),
        Published::TooFast(wait) => {
            // MQTT 5 has "message rate too high" (0x96) for DISCONNECT only; a PUBACK
            // says "quota exceeded" (0x97)
            return Ok(p
                .ack()
                .reason_code(Reason::QuotaExceeded)
                .reason(ByteString::from(format!(
                    "message rate too high: retry after {} ms",
                    wait.as_millis().max(1)
                ))));
        }
        // not answered: the connection is closing
        Published::Dropped => return Err(closing()),
        Published::Refused { outcome, reason } => (
            match outcome {
                Outcome::NotAuthorized => Reason::NotAuthorized,
                Outcome::Refused(Refusal::PayloadFormat(_)) => Reason::PayloadFormatInvalid,
                Outcome::Refused(Refusal::Other(_)) => Reason::ImplementationSpecificError,
                // (never `Accepted`: that is `Published::Accepted`)
                Outcome::Unavailable | Outcome::Accepted => Reason::UnspecifiedError,
            },
            reason,
        ),
    };
    if p.qos() == QoS::AtMostOnce {
        // nothing to answer: the connection is closed instead
        return Err(BrokerError(format!("publish refused: {reason}")));
    }
    Ok(p.ack().reason_code(code).reason(ByteString::from(reason)))
}

/// A subscription with the user property `content-mode=binary` gets events in binary
/// mode.
fn content_mode(properties: &[(ByteString, ByteString)]) -> ContentMode {
    if properties
        .iter()
        .any(|(k, v)| k == "content-mode" && v.eq_ignore_ascii_case("binary"))
    {
        ContentMode::Binary
    } else {
        ContentMode::Structured
    }
}

/// SUBSCRIBE (decided by `ConnInner::subscribe_to`), UNSUBSCRIBE and DISCONNECT.
pub(super) async fn control(
    conn: Conn,
    msg: v5::ProtocolMessage,
) -> Result<v5::ProtocolMessageAck, BrokerError> {
    match msg {
        v5::ProtocolMessage::Subscribe(mut s) => {
            let mode = content_mode(&s.packet().user_properties);
            for mut sub in s.iter_mut() {
                let filter = sub.topic().to_string();
                match conn.subscribe_to(&filter, sub.options().qos, mode).await {
                    Subscribed::Granted(qos) => sub.confirm(qos),
                    Subscribed::NotAuthorized => {
                        sub.fail(v5::codec::SubscribeAckReason::NotAuthorized);
                    }
                    Subscribed::TooMany => {
                        sub.fail(v5::codec::SubscribeAckReason::QuotaExceeded);
                    }
                }
            }
            Ok(s.ack())
        }
        v5::ProtocolMessage::Unsubscribe(mut u) => {
            let filters: Vec<String> = u.iter().map(ToString::to_string).collect();
            for (mut item, filter) in u.iter_mut().zip(filters) {
                if conn.unsubscribe(&filter) {
                    item.success();
                } else {
                    item.fail(v5::codec::UnsubscribeAckReason::NoSubscriptionExisted);
                }
            }
            Ok(u.ack())
        }
        v5::ProtocolMessage::Disconnect(d) => {
            conn.disconnect(
                d.packet().reason_code
                    == v5::codec::DisconnectReasonCode::DisconnectWithWillMessage,
            );
            Ok(d.ack())
        }
        other => Ok(other.ack()),
    }
}
