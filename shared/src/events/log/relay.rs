//! Acknowledgements handed over per thread. The writer thread ends each commit by
//! acknowledging its events, one wake-up of a publisher's task each. A task of a
//! single-threaded runtime woken from another thread is queued apart from the thread's
//! own tasks, and the runtime takes such tasks one at a time between its own: so the
//! broker's worker would answer each acknowledged publish, and write its PUBACK, before
//! taking the next, one socket write per publish even when a connection had several in
//! the commit. A thread that runs [`relay_acknowledgements`] gets the acknowledgements
//! of the events published from it in one hand-over per commit instead; its relay task
//! completes them on the thread, which queues all their publishers together, so a
//! connection's PUBACKs of one commit go out in one write.

use std::cell::RefCell;
use std::sync::{Arc, Mutex, PoisonError};
use tokio::sync::{Notify, oneshot};

/// An event's acknowledgement: `Ok` once it is durable, or why it is not.
pub(super) type Ack = oneshot::Sender<Result<(), String>>;

/// An acknowledgement and what it says.
type Left = (Ack, Result<(), String>);

/// A thread's relay: where the writer leaves acknowledgements for it.
pub(super) struct Relay {
    /// Waiting for the relay task; `None` once the task is gone.
    acks: Mutex<Option<Vec<Left>>>,
    notify: Notify,
}

thread_local! {
    static HERE: RefCell<Option<Arc<Relay>>> = const { RefCell::new(None) };
}

/// The relay of the current thread, if a relay task runs on it.
pub(super) fn here() -> Option<Arc<Relay>> {
    HERE.try_with(|here| here.borrow().clone()).ok().flatten()
}

impl Relay {
    /// Leaves an acknowledgement for the relay task, or sends it at once when the task
    /// is gone. Whether it was left: then the relay is to be woken (once for a commit).
    pub(super) fn leave(&self, ack: Ack, result: Result<(), String>) -> bool {
        let mut acks = self.acks.lock().unwrap_or_else(PoisonError::into_inner);
        match acks.as_mut() {
            Some(acks) => {
                acks.push((ack, result));
                true
            }
            None => {
                drop(acks);
                let _ = ack.send(result);
                false
            }
        }
    }

    /// Wakes the relay task to complete what was left.
    pub(super) fn wake(&self) {
        self.notify.notify_one();
    }

    fn take(&self, into: &mut Vec<Left>) {
        if let Some(acks) = self
            .acks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_mut()
        {
            std::mem::swap(acks, into);
        }
    }
}

/// Relays the acknowledgements of the events published from the current thread while
/// it runs; meant to be spawned on a single-threaded runtime that publishes many events
/// (each MQTT worker of the broker). Returns at once if the thread has a relay already.
/// When dropped (the runtime stops), what is left is sent directly, as are later
/// acknowledgements of the thread's events.
pub async fn relay_acknowledgements() {
    if here().is_some() {
        return;
    }
    let relay = Arc::new(Relay {
        acks: Mutex::new(Some(Vec::new())),
        notify: Notify::new(),
    });
    if HERE
        .try_with(|here| *here.borrow_mut() = Some(relay.clone()))
        .is_err()
    {
        return;
    }
    let _gone = Gone(relay.clone());
    let mut taken = Vec::new();
    loop {
        relay.notify.notified().await;
        relay.take(&mut taken);
        for (ack, result) in taken.drain(..) {
            let _ = ack.send(result);
        }
    }
}

/// The relay task ended: the thread has no relay any more, and what was left is sent.
struct Gone(Arc<Relay>);

impl Drop for Gone {
    fn drop(&mut self) {
        let _ = HERE.try_with(|here| {
            if let Ok(mut here) = here.try_borrow_mut()
                && here.as_ref().is_some_and(|r| Arc::ptr_eq(r, &self.0))
            {
                here.take();
            }
        });
        let left = self
            .0
            .acks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        for (ack, result) in left.into_iter().flatten() {
            let _ = ack.send(result);
        }
    }
}
