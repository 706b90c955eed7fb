//! Per connection, the way new mail reaches its senders: a wake-up for mail queued in the store,
//! and a lane that hands freshly committed relay mail to the senders in memory.
//!
//! A message in a lane is already on disk, claimed with a lease (status `sending`), so the
//! sender needs no claim and no read of the body. If the process dies, the lease returns it to
//! the queue at the next start, like any claim.
//!
//! Order: the writer hands new mail over only while the lane is `open`, which a sender declares
//! after finding nothing more due in the store. A full lane closes it, and new mail then waits in
//! the store until the senders have caught up, so mail that came first is not passed forever.
//!
//! Memory: a lane is full at [`LANE_CAPACITY`] messages or [`LANE_BYTES`] of bodies, whichever
//! comes first, so a slow provider cannot make bodies pile up in memory (256 messages of 35 MB
//! would be 9 GB). A message too big for the room left waits in the store, where its sender
//! reads it when its turn comes.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use crate::store::messages::ClaimedMessage;

/// Messages waiting in one lane at most; beyond that, new mail waits in the store.
pub const LANE_CAPACITY: usize = 256;
/// Bytes of bodies waiting in one lane at most: a few ordinary messages in flight per
/// connection cost no disk read, while big ones go through the store.
pub const LANE_BYTES: usize = 8 * 1024 * 1024;

/// The messages in a lane and the bytes of their bodies.
#[derive(Debug, Default)]
struct Queue {
    messages: VecDeque<ClaimedMessage>,
    bytes: usize,
}

/// One connection's lane.
#[derive(Debug, Default)]
pub struct Lane {
    /// Messages committed and claimed for this connection, oldest first.
    queue: Mutex<Queue>,
    /// Something was put in `queue`.
    pub pushed: Notify,
    /// The store has news for this connection (mail queued there, released, retried).
    pub wake: Notify,
    /// The senders have drained the store: new mail may come through the lane.
    open: AtomicBool,
    /// Senders running for this connection.
    senders: AtomicUsize,
}

impl Lane {
    fn queue(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// May one more message go through the lane, after `extra` messages already admitted in
    /// this batch, with `bytes` the size of their bodies and its own together? A full lane
    /// closes until a sender reopens it.
    pub fn admit(&self, extra: usize, bytes: usize) -> bool {
        if !self.open.load(Ordering::Acquire) || self.senders.load(Ordering::Acquire) == 0 {
            return false;
        }
        let q = self.queue();
        if q.messages.len() + extra >= LANE_CAPACITY || q.bytes.saturating_add(bytes) > LANE_BYTES {
            self.open.store(false, Ordering::Release);
            return false;
        }
        true
    }

    /// Hands `messages` to the senders; gives them back when the last sender has just ended
    /// (it was admitted before): the caller returns them to the queue.
    #[must_use]
    pub fn push(&self, messages: Vec<ClaimedMessage>) -> Vec<ClaimedMessage> {
        let mut q = self.queue();
        // Checked under the queue's lock, which the last sender holds while it leaves: nothing
        // is pushed into a lane nobody will take from.
        if self.senders.load(Ordering::Acquire) == 0 {
            return messages;
        }
        for m in messages {
            q.bytes += m.body.len();
            q.messages.push_back(m);
        }
        drop(q);
        self.pushed.notify_waiters();
        Vec::new()
    }

    /// Up to `max` messages, oldest first.
    pub fn take(&self, max: usize) -> Vec<ClaimedMessage> {
        let mut q = self.queue();
        let n = q.messages.len().min(max);
        let taken: Vec<ClaimedMessage> = q.messages.drain(..n).collect();
        q.bytes -= taken.iter().map(|m| m.body.len()).sum::<usize>();
        taken
    }

    /// The claims of the messages waiting in the lane.
    pub fn leases(&self) -> Vec<crate::store::messages::Lease> {
        self.queue()
            .messages
            .iter()
            .map(ClaimedMessage::lease)
            .collect()
    }

    pub fn is_empty(&self) -> bool {
        self.queue().messages.is_empty()
    }

    /// A sender found nothing more due in the store.
    pub fn open(&self) {
        self.open.store(true, Ordering::Release);
    }

    /// New mail goes to the store (the connection is held, or its senders stop).
    pub fn close(&self) {
        self.open.store(false, Ordering::Release);
    }

    pub fn sender_started(&self) {
        let _q = self.queue();
        self.senders.fetch_add(1, Ordering::AcqRel);
    }

    /// A sender ends. The last one closes the lane and gets what is left in it, to give back
    /// to the queue.
    pub fn sender_stopped(&self) -> Vec<ClaimedMessage> {
        let mut q = self.queue();
        if self.senders.fetch_sub(1, Ordering::AcqRel) != 1 {
            return Vec::new();
        }
        self.close();
        q.bytes = 0;
        q.messages.drain(..).collect()
    }
}

#[derive(Debug, Default)]
struct Shared {
    lanes: Mutex<HashMap<i64, Arc<Lane>>>,
    /// Connections with news since the scheduler last looked.
    news: Mutex<Vec<i64>>,
    /// Wakes the scheduler (a stored permit: news is never missed).
    noticed: Notify,
}

/// Every connection's lane, created on first use, and the scheduler's news.
#[derive(Debug, Clone, Default)]
pub struct Wakers(Arc<Shared>);

impl Wakers {
    pub fn lane(&self, connection_id: i64) -> Arc<Lane> {
        let mut map = self.0.lanes.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(connection_id).or_default().clone()
    }

    /// The store has news for this connection (mail queued there, released, retried): its
    /// running senders look again, and the scheduler starts one if none runs.
    pub fn wake(&self, connection_id: i64) {
        self.lane(connection_id).wake.notify_waiters();
        self.0
            .news
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(connection_id);
        self.0.noticed.notify_one();
    }

    /// The connections woken since the last call.
    pub fn take_news(&self) -> Vec<i64> {
        std::mem::take(&mut *self.0.news.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Resolves when there is news (at once if some came since the last wait).
    pub async fn noticed(&self) {
        self.0.noticed.notified().await;
    }

    pub fn lanes(&self) -> Vec<Arc<Lane>> {
        let map = self.0.lanes.lock().unwrap_or_else(|e| e.into_inner());
        map.values().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(id: &str) -> ClaimedMessage {
        sized(id, 1)
    }

    fn sized(id: &str, size: usize) -> ClaimedMessage {
        ClaimedMessage {
            id: id.into(),
            lease_id: 7,
            connection_id: 1,
            mail_from: "a@example.com".into(),
            recipients: vec![(0, "b@example.com".into())],
            body: vec![b'x'; size],
            attempts: 1,
            queued_at: 0,
        }
    }

    #[test]
    fn a_lane_admits_only_while_open_with_a_sender_and_room() {
        let lane = Lane::default();
        assert!(!lane.admit(0, 1), "closed until a sender opens it");
        lane.open();
        assert!(!lane.admit(0, 1), "no sender to take the mail");
        lane.sender_started();
        assert!(lane.admit(0, 1));
        assert!(
            !lane.admit(LANE_CAPACITY, 1),
            "no room for a whole lane more"
        );
        assert!(
            !lane.admit(0, 1),
            "a full lane stays closed until a sender reopens it"
        );
        lane.open();
        assert!(lane.admit(0, 1));
        assert!(lane.push(vec![message("a")]).is_empty());
        let left = lane.sender_stopped();
        assert_eq!(left.len(), 1, "the last sender gets what is left");
        assert!(!lane.admit(0, 1));
        assert_eq!(
            lane.push(vec![message("b")]).len(),
            1,
            "mail admitted before the last sender left comes back to the caller"
        );
        assert!(lane.is_empty());
    }

    #[test]
    fn a_lane_is_full_at_its_byte_limit_too() {
        let lane = Lane::default();
        lane.sender_started();
        lane.open();
        assert!(!lane.admit(0, LANE_BYTES + 1), "too big for any lane");
        lane.open();
        assert!(lane.push(vec![sized("a", LANE_BYTES / 2)]).is_empty());
        assert!(lane.admit(0, LANE_BYTES / 2));
        assert!(!lane.admit(0, LANE_BYTES / 2 + 1), "over with what waits");
        lane.open();
        assert_eq!(lane.take(1).len(), 1);
        assert!(lane.admit(0, LANE_BYTES), "room again once taken");
    }

    #[test]
    fn take_returns_the_oldest_first_up_to_the_limit() {
        let lane = Lane::default();
        lane.sender_started();
        assert!(lane.push(["a", "b", "c"].map(message).into()).is_empty());
        let first: Vec<String> = lane.take(2).into_iter().map(|m| m.id).collect();
        assert_eq!(first, ["a", "b"]);
        assert!(!lane.is_empty());
        assert_eq!(lane.take(10).len(), 1);
        assert!(lane.is_empty());
    }
}
