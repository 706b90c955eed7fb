//! Per-minute pacing of one connection's messages (`messages-per-minute`), sans-IO.
//!
//! Two rules. Messages start evenly spaced, `60 s / limit` apart, never in a burst (a quiet minute
//! is not saved up). And no 60 seconds hold more than `limit` of them as the provider counts them.
//! The provider counts a message when it takes it, somewhere between our start and our reading its
//! answer, so evenly spaced starts alone are not enough: a slow answer then a quick one put 31 in a
//! minute at 30 a minute (the full-length pacing benchmark saw it), and Exchange Online answers the
//! 31st with a throttling error. So a message also starts no earlier than 60 s after the end of the
//! attempt `limit - in_flight` ends back. Then any 60 s that hold its arrival hold at most the
//! attempts under way when it was reserved, the `limit - in_flight - 1` that ended after that one,
//! and itself: `limit`. The price is the answer time once per `limit` messages (30 a minute with
//! answers in 0.2 s: 300 messages in 602 s instead of 598).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

const MINUTE: Duration = Duration::from_secs(60);

/// The pacing of every connection, shared by the senders of one process.
#[derive(Debug, Default)]
pub(crate) struct Pacing {
    pacers: Mutex<Pacers>,
    /// An attempt ended: senders waiting for a slot ask again.
    ended: Notify,
}

impl Pacing {
    /// Waits for the next sending slot of `connection_id` under `limit` a minute. The slot is
    /// held until the returned guard is dropped, which must be when the attempt has ended.
    pub(crate) async fn slot(&self, connection_id: i64, limit: u32) -> Slot<'_> {
        loop {
            // Listening before asking: an end between the two still wakes us.
            let ended = self.ended.notified();
            tokio::pin!(ended);
            ended.as_mut().enable();
            let slot = self
                .pacers
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .reserve(connection_id, Instant::now(), limit);
            if let Some(at) = slot {
                // Made before the wait, so that a sender stopped while waiting gives it back.
                let guard = Slot {
                    pacing: self,
                    connection_id,
                };
                tokio::time::sleep_until(at.into()).await;
                return guard;
            }
            ended.await;
        }
    }
}

/// A reserved sending slot: dropping it tells the connection's pacer the attempt ended.
pub(crate) struct Slot<'a> {
    pacing: &'a Pacing,
    connection_id: i64,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.pacing
            .pacers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .end(self.connection_id, Instant::now());
        self.pacing.ended.notify_waiters();
    }
}

/// The pacers of the connections that sent lately, by connection id. A connection's pacer is
/// dropped once it has been idle for a minute (a sweep at most once a minute), so connections that
/// sent once keep nothing.
#[derive(Debug, Default)]
pub(crate) struct Pacers {
    by_connection: HashMap<i64, Pacer>,
    swept: Option<Instant>,
}

impl Pacers {
    /// [`Pacer::reserve`] for `connection_id`.
    pub(crate) fn reserve(
        &mut self,
        connection_id: i64,
        now: Instant,
        limit: u32,
    ) -> Option<Instant> {
        if self.swept.is_none_or(|t| t + MINUTE <= now) {
            self.swept = Some(now);
            self.by_connection.retain(|_, p| !p.idle_at(now));
        }
        self.by_connection
            .entry(connection_id)
            .or_default()
            .reserve(now, limit)
    }

    /// [`Pacer::end`] for `connection_id`.
    pub(crate) fn end(&mut self, connection_id: i64, at: Instant) {
        if let Some(p) = self.by_connection.get_mut(&connection_id) {
            p.end(at);
        }
    }

    /// How many connections have a pacer.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.by_connection.len()
    }
}

/// One connection's pacing state, shared by its senders.
#[derive(Debug, Default)]
pub(crate) struct Pacer {
    /// The earliest start of the next message by even spacing.
    next: Option<Instant>,
    /// Attempts reserved and not yet ended.
    in_flight: usize,
    /// When attempts ended, oldest first; only the last minute's can matter.
    ended: VecDeque<Instant>,
}

impl Pacer {
    /// Reserves the start of one more message under `limit` a minute, asked at `now`: when it may
    /// start, or `None` while `limit` attempts are under way (wait for one to end, then ask again).
    /// Every reservation must be followed by [`Pacer::end`].
    pub(crate) fn reserve(&mut self, now: Instant, limit: u32) -> Option<Instant> {
        let limit = limit.max(1);
        self.forget_before(now);
        let back = (limit as usize)
            .checked_sub(self.in_flight)
            .filter(|&b| b > 0)?;
        let mut slot = self.next.map_or(now, |n| n.max(now));
        if let Some(i) = self.ended.len().checked_sub(back) {
            slot = slot.max(self.ended[i] + MINUTE);
        }
        self.next = Some(slot + MINUTE / limit);
        self.in_flight += 1;
        Some(slot)
    }

    /// A reserved attempt ended at `at`: answered, refused, or given up before it started.
    pub(crate) fn end(&mut self, at: Instant) {
        self.in_flight = self.in_flight.saturating_sub(1);
        // Kept in order: two senders' ends may be reported a hair out of it.
        let i = self.ended.partition_point(|&t| t <= at);
        self.ended.insert(i, at);
        self.forget_before(at);
    }

    /// Nothing under way, no end within the last minute, no spacing still to keep: a new pacer
    /// would give the same slots.
    fn idle_at(&mut self, now: Instant) -> bool {
        self.forget_before(now);
        self.in_flight == 0 && self.ended.is_empty() && self.next.is_none_or(|n| n <= now)
    }

    /// Ends a minute old bind no slot from `now` on (slots are never earlier than the asking).
    fn forget_before(&mut self, now: Instant) {
        while self.ended.front().is_some_and(|&t| t + MINUTE <= now) {
            self.ended.pop_front();
        }
    }
}

#[cfg(test)]
#[path = "pacing_tests.rs"]
mod tests;
