//! SUBSCRIBE and UNSUBSCRIBE, for both versions: the client's policy, per filter, then
//! the hub (which bounds the subscriptions of a session).

use super::connect::ConnInner;
use crate::mqtt::hub::ContentMode;
use crate::mqtt::sessions::{self, Cursor};
use ntex_mqtt::QoS;

/// What the broker answers one filter of a SUBSCRIBE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Subscribed {
    /// Subscribed, with the QoS granted.
    Granted(QoS),
    /// The client's policy does not allow the filter.
    NotAuthorized,
    /// The session holds too many subscriptions.
    TooMany,
}

/// The QoS granted for the one asked for (the broker has at most 1), and whether it is 1.
fn granted(requested: QoS) -> (QoS, bool) {
    match requested {
        QoS::AtMostOnce => (QoS::AtMostOnce, false),
        _ => (QoS::AtLeastOnce, true),
    }
}

impl ConnInner {
    /// Decides one filter of a SUBSCRIBE.
    pub(super) async fn subscribe_to(
        &self,
        filter: &str,
        requested: QoS,
        mode: ContentMode,
    ) -> Subscribed {
        if !self.backend.may_subscribe(&self.client, filter) {
            return Subscribed::NotAuthorized;
        }
        let (qos, qos1) = granted(requested);
        if self.subscribe(filter, qos1, mode, None).await {
            Subscribed::Granted(qos)
        } else {
            Subscribed::TooMany
        }
    }

    /// Removes a subscription; whether there was one.
    pub(super) fn unsubscribe(&self, filter: &str) -> bool {
        self.backend.hub.unsubscribe(self.session, filter)
    }

    /// Subscribes; a QoS 1 subscription to one application's events resumes from
    /// `cursor` (a session taken up again; MQTT 5 may take up a persistent session for
    /// one connection, with a session expiry of 0), or, in a persistent session, from a
    /// new cursor at the newest event; subscribed again, it goes on from where it is.
    /// `false` when the session holds too many subscriptions.
    pub(super) async fn subscribe(
        &self,
        filter: &str,
        qos1: bool,
        mode: ContentMode,
        cursor: Option<Cursor>,
    ) -> bool {
        let cursor = match (cursor, qos1, sessions::resumable_application(filter)) {
            (Some(cursor), true, Some(_)) => self.backend.current_cursor(cursor).await,
            (None, true, Some(app)) if self.expiry.is_some() => self.backend.new_cursor(app).await,
            // a session taken up for one connection: a subscription that resumes goes
            // on when it is subscribed again
            (None, true, Some(_)) => match self.backend.hub.resuming(self.session, filter) {
                Some(cursor) => self.backend.current_cursor(cursor).await,
                None => None,
            },
            _ => None,
        };
        // (the hub feeds it only from an application the session's policy was decided
        // for: a cursor of one made anew since is routed live instead)
        let queue = self.queue();
        let (backend, main) = (&self.backend, &self.main);
        backend
            .hub
            .subscribe_resuming(self.session, filter, qos1, mode, cursor, |c| {
                sessions::start_feed(
                    &backend.log,
                    main,
                    c,
                    mode,
                    queue.clone(),
                    sessions::Fed::Tracked,
                )
            })
    }
}
