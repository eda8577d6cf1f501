//! MQTT 3.1.1: translates its packets to the broker's one connection path and the
//! answers back. 3.1.1 has no reason strings, properties or session expiry, and cannot
//! refuse a publish but by closing the connection.

use super::BrokerError;
use super::connect::{self, Conn, Connect, Connection};
use super::deliver::Outlet;
use super::publish::{PublishIn, Published, Turn, closing};
use super::subscribe::Subscribed;
use crate::mqtt::backend::{Backend, Will};
use crate::mqtt::hub::{ContentMode, Delivery};
use crate::mqtt::sessions;
use ntex_mqtt::v3;
use std::sync::Arc;
use tokio::runtime::Handle;

/// A CONNECT, decided by [`connect::connect`]; refusals get return code 4 (bad user
/// name or password) or 3 (server unavailable: the registry, or the owner's connection
/// limit).
pub(super) async fn handshake(
    backend: Arc<Backend>,
    main: Handle,
    hs: v3::Handshake,
) -> Result<v3::HandshakeAck<Conn>, BrokerError> {
    let packet = hs.packet();
    let request = Connect {
        client_id: packet.client_id.to_string(),
        username: packet.username.as_ref().map(ToString::to_string),
        password: packet.password.as_ref().map(|p| p.to_vec()),
        certificates: connect::peer_certificates(hs.io()),
        clean_start: packet.clean_session,
        // MQTT 3.1.1 sessions have no expiry of their own
        session_expiry: if packet.clean_session {
            0
        } else {
            sessions::V3_EXPIRY
        },
        will: packet.last_will.as_ref().map(|w| Will {
            topic: w.topic.to_string(),
            payload: w.message.to_vec(),
            content_type: None,
        }),
    };
    match connect::connect(&backend, &main, request).await? {
        Connection::Accepted(accepted) => {
            let session_present = accepted.session_present;
            let conn = accepted.deliver(hs.sink());
            Ok(hs.ack(conn, session_present))
        }
        Connection::Refused(_) => Ok(hs.bad_username_or_pwd()),
        // 3.1.1 has no code for a quota: "server unavailable", as when it is busy
        Connection::Unavailable | Connection::OverQuota(_) => Ok(hs.service_unavailable()),
    }
}

impl Outlet for v3::MqttSink {
    fn on_ack(&self, acked: impl Fn(u16, bool) + 'static) {
        self.publish_ack_cb(move |id, disconnected| acked(id.get(), disconnected));
    }

    fn ready(&self) -> impl Future<Output = bool> {
        v3::MqttSink::ready(self)
    }

    /// Topic and payload: 3.1.1 has no properties to carry the rest.
    fn send(&self, delivery: &Delivery, packet_id: Option<u16>) -> bool {
        // (the delivery's buffers are shared: clones, not copies)
        let publish = self.publish(delivery.topic.clone());
        let payload = delivery.payload.clone();
        match packet_id {
            Some(id) => publish
                .packet_id(id)
                .send_at_least_once_no_block(payload)
                .is_ok(),
            None => publish.send_at_most_once(payload).is_ok(),
        }
    }

    // MQTT 3.1.1 has no reason to tell: the connection is closed either way
    fn close(&self, _revoked: bool) {
        v3::MqttSink::close(self);
    }
}

/// A PUBLISH, decided by `ConnInner::publish` in the turn it took on arrival.
pub(super) async fn publish(conn: Conn, turn: Turn, p: v3::Publish) -> Result<(), BrokerError> {
    let payload = p
        .read_all()
        .await
        .map_err(|e| BrokerError(format!("cannot read the payload: {e:?}")))?;
    let publish = PublishIn {
        topic: p.publish_topic(),
        payload,
        content_type: None,
        // MQTT 3.1.1 cannot refuse a publish: one over the device's rate waits for its
        // turn
        refusable: false,
    };
    match conn.publish(turn, publish).await {
        Published::Accepted => Ok(()),
        // MQTT 3.1.1 cannot refuse a publish but by closing the connection
        Published::Refused { outcome, .. } => {
            Err(BrokerError(format!("publish refused: {outcome:?}")))
        }
        Published::Dropped => Err(closing()),
        // (not for its rate: one that cannot be refused waits)
        Published::TooFast(wait) => Err(BrokerError(format!(
            "publish refused: message rate too high: retry after {} ms",
            wait.as_millis().max(1)
        ))),
    }
}

/// SUBSCRIBE (decided by `ConnInner::subscribe_to`), UNSUBSCRIBE and DISCONNECT.
pub(super) async fn control(
    conn: Conn,
    msg: v3::ProtocolMessage,
) -> Result<v3::ProtocolMessageAck, BrokerError> {
    match msg {
        v3::ProtocolMessage::Subscribe(mut s) => {
            for mut sub in s.iter_mut() {
                let filter = sub.topic().to_string();
                // 3.1.1 has one failure code for any refusal
                match conn
                    .subscribe_to(&filter, sub.qos(), ContentMode::Structured)
                    .await
                {
                    Subscribed::Granted(qos) => sub.confirm(qos),
                    Subscribed::NotAuthorized | Subscribed::TooMany => sub.fail(),
                }
            }
            Ok(s.ack())
        }
        v3::ProtocolMessage::Unsubscribe(u) => {
            for filter in u.iter() {
                conn.unsubscribe(filter);
            }
            Ok(u.ack())
        }
        v3::ProtocolMessage::Disconnect(d) => {
            conn.disconnect(false);
            Ok(d.ack())
        }
        other => Ok(other.ack()),
    }
}
