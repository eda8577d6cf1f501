//! The messages of a session to its client, for both versions: the session's queue is
//! drained into the connection, as fast as the client takes them; the connection is
//! closed when the session is taken over or loses its access. The queue is made with the
//! session's first subscription ([`Slot`]): a client that only publishes has none.

use crate::mqtt::hub::{Delivery, Push, Track};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::sync::{Notify, mpsc};

/// Where a session's messages go: a version's connection.
pub(super) trait Outlet: 'static {
    /// Calls `acked` with the packet id of each PUBACK, and whether it is the
    /// connection's end that "acknowledges" it.
    fn on_ack(&self, acked: impl Fn(u16, bool) + 'static);
    /// Whether the connection takes another message, once it does; `false` when it is
    /// closed.
    fn ready(&self) -> impl Future<Output = bool>;
    /// Sends a message: QoS 1 with a packet id, QoS 0 without; `false` when the
    /// connection is closed.
    fn send(&self, delivery: &Delivery, packet_id: Option<u16>) -> bool;
    /// Closes the connection: its session was taken over, or (`revoked`) its client
    /// lost its access.
    fn close(&self, revoked: bool);
}

/// Where a session's queue reaches its delivery task. The queue is made with the
/// session's first subscription, which may come before the task starts (a session
/// taken up again) or long after, or never (a device that only publishes: tokio's
/// channel and the first block of messages it allocates with it take about 1.8 KB a
/// session). A task with a queue ends when the queue's senders are gone, with the
/// connection; one without ends when the connection tells the slot it ended.
#[derive(Default)]
pub(super) struct Slot {
    receiver: RefCell<Option<mpsc::Receiver<Push>>>,
    made: Notify,
    /// The delivery task or the connection ended: a queue made after it is closed at
    /// once, and a task still waiting for one ends.
    ended: Cell<bool>,
}

impl Slot {
    /// Hands the session's new queue to its delivery task.
    pub fn put(&self, receiver: mpsc::Receiver<Push>) {
        if !self.ended.get() {
            *self.receiver.borrow_mut() = Some(receiver);
            self.made.notify_one();
        }
    }

    /// The connection ended: a delivery task still waiting for a queue ends.
    pub fn end(&self) {
        self.ended.set(true);
        self.made.notify_one();
    }

    /// The session's queue, once it is made; `None` when the connection ended first.
    async fn receiver(&self) -> Option<mpsc::Receiver<Push>> {
        loop {
            if let Some(receiver) = self.receiver.borrow_mut().take() {
                return Some(receiver);
            }
            if self.ended.get() {
                return None;
            }
            self.made.notified().await;
        }
    }
}

/// Marks the slot's task ended however it ends (the worker's stop drops it too).
struct Ended(Rc<Slot>);

impl Drop for Ended {
    fn drop(&mut self) {
        self.0.ended.set(true);
        self.0.receiver.borrow_mut().take();
    }
}

/// The packet ids of QoS 1 messages sent to a client, and what each acknowledgement
/// moves on: the broker numbers them itself, to know which event a PUBACK is for.
pub(super) struct Outgoing {
    next: Cell<u16>,
    tracked: RefCell<HashMap<u16, Track>>,
}

impl Outgoing {
    pub fn new() -> Rc<Self> {
        Rc::new(Self {
            next: Cell::new(0),
            tracked: RefCell::new(HashMap::new()),
        })
    }

    /// The next packet id, remembering what it carries.
    fn send(&self, track: Option<Track>) -> u16 {
        let id = match self.next.get().wrapping_add(1) {
            0 => 1,
            id => id,
        };
        self.next.set(id);
        let mut tracked = self.tracked.borrow_mut();
        match track {
            Some(track) => tracked.insert(id, track),
            None => tracked.remove(&id),
        };
        id
    }

    /// A PUBACK arrived (not a connection's end): the cursor it moves.
    pub fn acked(&self, id: u16, disconnected: bool) -> Option<Track> {
        let track = self.tracked.borrow_mut().remove(&id);
        track.filter(|_| !disconnected)
    }
}

/// Messages a session's delivery hands its connection before it lets the worker's other
/// tasks run.
const DRAIN_TURN: u32 = 128;

/// Feeds the session's queue to the client until either ends.
pub(super) async fn run(
    outlet: impl Outlet,
    outgoing: Rc<Outgoing>,
    slot: Rc<Slot>,
    close: Arc<Notify>,
    revoked: Arc<AtomicBool>,
) {
    let _ended = Ended(slot.clone());
    let mut queue = tokio::select! {
        queue = slot.receiver() => match queue {
            Some(queue) => queue,
            // the connection ended (its client left) before the session subscribed
            None => return,
        },
        () = close.notified() => {
            outlet.close(revoked.load(Ordering::SeqCst));
            return;
        }
    };
    let mut sent = 0u32;
    loop {
        let push = tokio::select! {
            push = queue.recv() => match push { Some(push) => push, None => break },
            () = close.notified() => {
                outlet.close(revoked.load(Ordering::SeqCst));
                break;
            }
        };
        // the client's receive window (QoS 1) and the connection's write buffer
        // (both): a slow subscriber holds its queue back, not the broker's memory; one
        // that stopped acknowledging is still closed when its session is taken over or
        // its access ends
        let ready = tokio::select! {
            ready = outlet.ready() => ready,
            () = close.notified() => {
                outlet.close(revoked.load(Ordering::SeqCst));
                break;
            }
        };
        if !ready {
            break;
        }
        let packet_id = push.qos1.then(|| outgoing.send(push.track));
        if !outlet.send(&push.delivery, packet_id) {
            break;
        }
        // a long queue is drained in turns of DRAIN_TURN messages, so the worker's other
        // connections go on meanwhile (the write buffer's back-pressure reaches this
        // loop only once the connection's dispatcher has run)
        sent = sent.wrapping_add(1);
        if sent.is_multiple_of(DRAIN_TURN) {
            tokio::task::yield_now().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_queue_reaches_the_delivery_task_whenever_it_is_made_and_never_after_its_end() {
        tokio::task::LocalSet::new()
            .run_until(async {
                // made before the task waits for it (a session taken up again)
                let slot = Rc::new(Slot::default());
                let (tx, rx) = mpsc::channel(1);
                slot.put(rx);
                let mut received = slot.receiver().await.expect("the queue");
                tx.try_send(push()).unwrap();
                assert!(received.try_recv().is_ok());
                // made while the task waits (a first subscription later on)
                let slot = Rc::new(Slot::default());
                let task = tokio::task::spawn_local({
                    let slot = slot.clone();
                    async move { slot.receiver().await }
                });
                tokio::task::yield_now().await;
                assert!(!task.is_finished());
                let (tx, rx) = mpsc::channel(1);
                slot.put(rx);
                let mut received = task.await.unwrap().expect("the queue");
                tx.try_send(push()).unwrap();
                assert!(received.try_recv().is_ok());
                // made after the task ended: closed at once
                drop(Ended(slot.clone()));
                let (tx, rx) = mpsc::channel(1);
                slot.put(rx);
                assert!(tx.is_closed(), "a queue made after the task ended");
            })
            .await;
    }

    /// A connection as the delivery task sees it: what it was sent, whether it was
    /// closed (and as revoked).
    #[derive(Clone, Default)]
    struct Recorder {
        sent: Rc<Cell<usize>>,
        closed: Rc<Cell<Option<bool>>>,
        /// A client that stopped acknowledging: the connection takes nothing more.
        stalled: Rc<Cell<bool>>,
    }

    impl Outlet for Recorder {
        fn on_ack(&self, _acked: impl Fn(u16, bool) + 'static) {}
        fn ready(&self) -> impl Future<Output = bool> {
            let stalled = self.stalled.get();
            async move {
                if stalled {
                    std::future::pending::<()>().await;
                }
                true
            }
        }
        fn send(&self, _delivery: &Delivery, _packet_id: Option<u16>) -> bool {
            self.sent.set(self.sent.get() + 1);
            true
        }
        fn close(&self, revoked: bool) {
            self.closed.set(Some(revoked));
        }
    }

    /// Starts a delivery task as a connection does: its outlet, slot and close signal.
    fn start() -> (Recorder, Rc<Slot>, Arc<Notify>, tokio::task::JoinHandle<()>) {
        let (outlet, slot, close, _revoked, task) = start_with_revoked();
        (outlet, slot, close, task)
    }

    #[tokio::test]
    async fn a_delivery_task_ends_with_its_connection_queue_or_not() {
        let ended = |task| tokio::time::timeout(std::time::Duration::from_secs(5), task);
        tokio::task::LocalSet::new()
            .run_until(async {
                // no queue, and the client leaves: the task ends, closing nothing
                let (outlet, slot, _close, task) = start();
                tokio::task::yield_now().await;
                assert!(!task.is_finished());
                slot.end();
                ended(task).await.expect("the task ends").unwrap();
                assert_eq!(outlet.closed.get(), None);
                // no queue, and the session is taken over: the connection is closed
                let (outlet, _slot, close, task) = start();
                close.notify_one();
                ended(task).await.expect("the task ends").unwrap();
                assert_eq!(outlet.closed.get(), Some(false));
                // a queue made later: its messages are sent, and the task ends with
                // its senders, though the connection's slot was told nothing
                let (outlet, slot, _close, task) = start();
                tokio::task::yield_now().await;
                let (tx, rx) = mpsc::channel(8);
                slot.put(rx);
                tx.send(push()).await.unwrap();
                tx.send(push()).await.unwrap();
                drop(tx);
                ended(task).await.expect("the task ends").unwrap();
                assert_eq!(outlet.sent.get(), 2);
                assert_eq!(outlet.closed.get(), None);
                // a client that stopped acknowledging, its session taken over or its
                // access ended while a message waits for its receive window: the
                // connection is closed all the same
                for revoke in [false, true] {
                    let (outlet, slot, close, revoked, task) = start_with_revoked();
                    outlet.stalled.set(true);
                    let (tx, rx) = mpsc::channel(8);
                    slot.put(rx);
                    tx.send(push()).await.unwrap();
                    tokio::task::yield_now().await;
                    assert!(!task.is_finished());
                    revoked.store(revoke, Ordering::SeqCst);
                    close.notify_one();
                    ended(task).await.expect("the task ends").unwrap();
                    assert_eq!(outlet.sent.get(), 0);
                    assert_eq!(outlet.closed.get(), Some(revoke));
                }
            })
            .await;
    }

    /// [`start`], with the session's revoked flag.
    fn start_with_revoked() -> (
        Recorder,
        Rc<Slot>,
        Arc<Notify>,
        Arc<AtomicBool>,
        tokio::task::JoinHandle<()>,
    ) {
        let (outlet, slot, close, revoked) = (
            Recorder::default(),
            Rc::new(Slot::default()),
            Arc::new(Notify::new()),
            Arc::new(AtomicBool::new(false)),
        );
        let task = tokio::task::spawn_local(run(
            outlet.clone(),
            Outgoing::new(),
            slot.clone(),
            close.clone(),
            revoked.clone(),
        ));
        (outlet, slot, close, revoked, task)
    }

    fn push() -> Push {
        Push {
            delivery: Arc::new(Delivery {
                topic: "app/app1".into(),
                payload: Default::default(),
                content_type: None,
                correlation_data: None,
                user_properties: Vec::new(),
            }),
            qos1: false,
            track: None,
        }
    }
}
