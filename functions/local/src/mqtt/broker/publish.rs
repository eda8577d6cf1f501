//! A PUBLISH, for both versions: its turn in the connection's order, the device's rate
//! limit, the client's policy, then the ingest. A QoS 1 publish is acknowledged once the
//! event is in the stream.

use super::BrokerError;
use super::connect::ConnInner;
use crate::mqtt::backend::{Message, Outcome};
use ntex_bytes::Bytes;
use std::time::Duration;
use tokio::sync::oneshot;

/// Publishes of one connection handled at once (each waits for the one before it to
/// have its place in the stream, and they are made durable together); beyond, the
/// broker stops reading from the client, which slows it down rather than the broker
/// filling its memory.
pub const PUBLISHES_IN_FLIGHT: usize = 16;

/// A publish, whichever the version.
pub(super) struct PublishIn<'a> {
    pub topic: &'a str,
    pub payload: Bytes,
    pub content_type: Option<&'a str>,
    /// Whether the version can refuse this publish in its acknowledgement (an MQTT 5
    /// QoS 1 one); otherwise a publish over the rate waits, and a refused one closes
    /// the connection.
    pub refusable: bool,
}

/// What the broker answers a publish.
#[derive(Debug)]
pub(super) enum Published {
    /// The event is in the stream (or the command dropped off).
    Accepted,
    /// Over the rate limit: the client may publish again after this long (only for a
    /// refusable publish).
    TooFast(Duration),
    /// Refused: what became of it, and why in words (for the acknowledgement, or the
    /// connection's close).
    Refused {
        outcome: Outcome,
        reason: &'static str,
    },
    /// Not handled: a publish before it was refused in a way that closes the connection.
    /// It is not answered either, so that the client sends it again.
    Dropped,
}

/// The error a publish dropped while its connection closes ends its call with.
pub(super) fn closing() -> BrokerError {
    BrokerError("publish dropped: the connection is closing".into())
}

/// A publish's place in its connection's order: wait for the one before, and let the
/// next one go once this one's event has its place in the stream (its telemetry is
/// queued for the log's writer, not yet durable), or when dropped (refused, failed, or
/// done otherwise).
pub(super) struct Turn {
    previous: Option<oneshot::Receiver<()>>,
    done: std::sync::Mutex<Option<oneshot::Sender<()>>>,
}

impl Turn {
    async fn wait(&mut self) {
        if let Some(previous) = self.previous.take() {
            // an error only means the one before is gone: it is done either way
            let _ = previous.await;
        }
    }

    /// Lets the next publish of the connection go.
    fn pass(&self) {
        if let Ok(mut done) = self.done.lock() {
            done.take();
        }
    }
}

impl ConnInner {
    /// Called synchronously as each publish arrives, so turns follow arrival order.
    pub(super) fn turn(&self) -> Turn {
        let (done, next) = oneshot::channel();
        Turn {
            previous: self.previous.replace(Some(next)),
            done: std::sync::Mutex::new(Some(done)),
        }
    }

    /// Decides a publish whose payload is read, in its turn: a refusable one over the
    /// rate limit is refused, another waits until the device may publish again; then the
    /// client's policy and the ingest.
    ///
    /// A refusal that cannot be told in an acknowledgement closes the connection: the
    /// publishes after it are then dropped unhandled, and the close waits for the
    /// answers to every packet read (the dispatcher answers a connection's packets in
    /// order, errors included, and reads no more meanwhile), so that no event the
    /// client hears nothing of is kept.
    pub(super) async fn publish(&self, mut turn: Turn, publish: PublishIn<'_>) -> Published {
        turn.wait().await;
        if self.closing.get() {
            return Published::Dropped;
        }
        let refusable = publish.refusable;
        let published = self.decide(&turn, publish).await;
        if !refusable && matches!(published, Published::Refused { .. }) {
            // (set before the turn passes to the next publish, but for an event the
            // log fails after it had its place: the publishes after it are then
            // handled, and the connection closes once they are answered)
            self.closing.set(true);
        }
        published
    }

    async fn decide(&self, turn: &Turn, publish: PublishIn<'_>) -> Published {
        if let Some(refused) = self.refused_if_revoked() {
            return refused;
        }
        if !publish.refusable {
            // nothing to refuse it with: one over the device's rate waits for its turn
            self.shaped(publish.topic).await;
            // (access may have ended while it waited, or the connection be closing)
            if let Some(refused) = self.refused_if_revoked() {
                return refused;
            }
            if self.closing.get() {
                return Published::Dropped;
            }
        } else if let Err(wait) = self.backend.admit(&self.client, publish.topic) {
            tracing::debug!(client_id = %self.client.client_id, ?wait, "MQTT publish over the rate limit refused");
            return Published::TooFast(wait);
        }
        let outcome = self
            .ingest(
                publish.topic,
                publish.payload,
                publish.content_type,
                &|| turn.pass(),
            )
            .await;
        let reason = match outcome {
            Outcome::Accepted => return Published::Accepted,
            Outcome::NotAuthorized => "the topic is not allowed",
            Outcome::Refused(refusal) => refusal.reason(),
            Outcome::Unavailable => "the event stream is unavailable",
        };
        Published::Refused { outcome, reason }
    }

    /// A closed connection's publishes are still handled, but not once the client's
    /// access has ended.
    fn refused_if_revoked(&self) -> Option<Published> {
        if !self.revoked.load(std::sync::atomic::Ordering::SeqCst) {
            return None;
        }
        tracing::debug!(client_id = %self.client.client_id, "MQTT publish after the client's access ended dropped");
        Some(Published::Refused {
            outcome: Outcome::NotAuthorized,
            reason: "the client's access has ended",
        })
    }

    /// Waits until the device may publish again under its rate limit. Publishes of one
    /// connection wait in order, at most [`PUBLISHES_IN_FLIGHT`] of them; beyond, the
    /// broker stops reading from the connection. Other connections do not wait.
    async fn shaped(&self, topic: &str) {
        while let Err(wait) = self.backend.admit(&self.client, topic) {
            tracing::trace!(client_id = %self.client.client_id, ?wait, "MQTT publish over the rate limit waits");
            ntex_util::time::sleep(ntex_util::time::Millis(
                u32::try_from(wait.as_millis()).unwrap_or(u32::MAX).max(1),
            ))
            .await;
        }
    }

    /// Handles a publish on this worker: the ingest needs nothing of the main runtime
    /// (the store, the event log and the caches work from any thread), and each hop to
    /// it would cost two thread switches per message. `sequenced` is called once a
    /// device's telemetry has its place in the stream: the publishes of one connection
    /// in one group of the log are acknowledged together.
    async fn ingest(
        &self,
        topic: &str,
        payload: Bytes,
        content_type: Option<&str>,
        sequenced: &(dyn Fn() + Send + Sync),
    ) -> Outcome {
        self.backend
            .publish(
                &self.client,
                &Message {
                    topic,
                    payload: &payload,
                    content_type,
                    sequenced: Some(sequenced),
                },
            )
            .await
    }
}
