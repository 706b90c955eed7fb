//! Which connections may open an upstream session now, and when to look again. Sans-IO: the
//! dispatcher ([`super::dispatch`]) feeds it news and the time, starts one sender for each
//! connection it names, and reports back when a sender ends.
//!
//! Idle costs nothing: a connection is known here only while it has due mail, a sender, or a
//! timer for deferred mail. Nothing is polled per connection.
//!
//! Fairness: connections with due mail wait in one round-robin queue for a session. While that
//! queue is empty, a busy connection ramps up to its own session limit; once the global cap is
//! reached and others wait, a sender gives up its session after its current batch and its
//! connection queues behind them, so a 50,000-message backlog delays another mailbox by one
//! batch at most.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};

/// Per connection, what the schedule knows.
#[derive(Debug, Default)]
struct Entry {
    /// Senders running.
    active: u32,
    /// Most senders at once (the connection's `max_concurrent`), as a sender last reported it.
    limit: u32,
    /// The timer set for its earliest deferred mail, if any.
    timer: Option<i64>,
    /// Waiting in the ready queue.
    queued: bool,
    /// News came while senders ran, after their last look at the store.
    pending: bool,
}

impl Entry {
    fn is_idle(&self) -> bool {
        self.active == 0 && self.timer.is_none() && !self.queued && !self.pending
    }
}

/// What the dispatcher does next.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Start one sender for each (a connection may appear once per call).
    pub start: Vec<i64>,
    /// Wake the running senders of these: mail came due for them.
    pub wake: Vec<i64>,
}

/// What a sender does after a batch.
#[derive(Debug, PartialEq, Eq)]
pub enum AfterBatch {
    Continue,
    /// Give the session up: other connections wait for one. Do not report `finished`.
    Yield,
}

#[derive(Debug)]
pub struct Schedule {
    entries: HashMap<i64, Entry>,
    /// (due time in ms, connection); an entry whose `timer` no longer matches is stale.
    timers: BinaryHeap<Reverse<(i64, i64)>>,
    ready: VecDeque<i64>,
    sessions: u32,
    max_sessions: u32,
}

impl Schedule {
    /// `max_sessions`: upstream sessions open at once across all connections (at least 1).
    pub fn new(max_sessions: u32) -> Self {
        Self {
            entries: HashMap::new(),
            timers: BinaryHeap::new(),
            ready: VecDeque::new(),
            sessions: 0,
            max_sessions: max_sessions.max(1),
        }
    }

    /// Mail of `conn` is due at `at` (ms since the epoch). Returns true when its running
    /// senders should be woken now.
    pub fn due(&mut self, conn: i64, at: i64, now: i64) -> bool {
        let e = self.entries.entry(conn).or_default();
        if at > now {
            if e.timer.is_none_or(|t| at < t) {
                e.timer = Some(at);
                self.timers.push(Reverse((at, conn)));
            }
            return false;
        }
        if e.active > 0 {
            e.pending = true;
            return true;
        }
        Self::enqueue(&mut self.ready, e, conn);
        false
    }

    fn enqueue(ready: &mut VecDeque<i64>, e: &mut Entry, conn: i64) {
        if !e.queued {
            e.queued = true;
            ready.push_back(conn);
        }
    }

    /// Fires timers that are due and hands out free sessions, in turn.
    pub fn plan(&mut self, now: i64) -> Plan {
        let mut plan = Plan::default();
        while let Some(&Reverse((at, conn))) = self.timers.peek() {
            if at > now {
                break;
            }
            self.timers.pop();
            let Some(e) = self.entries.get_mut(&conn) else {
                continue;
            };
            if e.timer != Some(at) {
                continue;
            }
            e.timer = None;
            if e.active > 0 {
                e.pending = true;
                plan.wake.push(conn);
            } else {
                Self::enqueue(&mut self.ready, e, conn);
            }
        }
        let mut turns = self.ready.len();
        while self.sessions < self.max_sessions && turns > 0 {
            turns -= 1;
            let Some(conn) = self.ready.pop_front() else {
                break;
            };
            let e = self.entries.entry(conn).or_default();
            e.queued = false;
            if e.active >= e.limit.max(1) {
                // At its own limit: a running sender sees the news when it next looks.
                e.pending = true;
                continue;
            }
            e.active += 1;
            self.sessions += 1;
            plan.start.push(conn);
        }
        plan
    }

    /// A sender of `conn` is about to look in the store: news so far reaches it.
    pub fn looking(&mut self, conn: i64) {
        if let Some(e) = self.entries.get_mut(&conn) {
            e.pending = false;
        }
    }

    /// A sender finished a batch; `more`: due mail may be left; `limit`: the connection's
    /// session limit as now configured.
    pub fn after_batch(&mut self, conn: i64, more: bool, limit: u32) -> AfterBatch {
        let e = self.entries.entry(conn).or_default();
        e.limit = limit;
        if e.active > limit.max(1) {
            // The admin lowered the limit: this sender is one too many.
            e.active -= 1;
            self.sessions = self.sessions.saturating_sub(1);
            if more {
                e.pending = true;
            }
            return AfterBatch::Yield;
        }
        if !more {
            return AfterBatch::Continue;
        }
        if self.sessions >= self.max_sessions && !self.ready.is_empty() {
            e.active = e.active.saturating_sub(1);
            self.sessions = self.sessions.saturating_sub(1);
            Self::enqueue(&mut self.ready, e, conn);
            return AfterBatch::Yield;
        }
        if e.active < limit {
            // A backlog: one more session for it, if one is free when the dispatcher plans.
            Self::enqueue(&mut self.ready, e, conn);
        }
        AfterBatch::Continue
    }

    /// A sender of `conn` ended (idle, held, stopped, or its connection is gone);
    /// `next_due`: its earliest waiting mail, when it knows of some.
    pub fn finished(&mut self, conn: i64, next_due: Option<i64>, now: i64) {
        let e = self.entries.entry(conn).or_default();
        e.active = e.active.saturating_sub(1);
        self.sessions = self.sessions.saturating_sub(1);
        if e.active == 0 && std::mem::take(&mut e.pending) {
            Self::enqueue(&mut self.ready, e, conn);
        }
        if let Some(at) = next_due {
            self.due(conn, at, now);
        }
        if self.entries.get(&conn).is_some_and(Entry::is_idle) {
            self.entries.remove(&conn);
        }
    }

    /// Whether `conn` has a sender running or waits for one.
    pub fn busy(&self, conn: i64) -> bool {
        self.entries
            .get(&conn)
            .is_some_and(|e| e.active > 0 || e.queued)
    }

    /// When a timer fires next (it may turn out stale).
    pub fn next_timer(&self) -> Option<i64> {
        self.timers.peek().map(|Reverse((at, _))| *at)
    }

    /// Upstream sessions handed out and not yet given back.
    pub fn sessions(&self) -> u32 {
        self.sessions
    }

    /// Connections with due mail waiting for a session.
    pub fn waiting(&self) -> usize {
        self.ready.len()
    }

    /// Connections wait and every session is taken: an idle sender should give its up. (Mail
    /// just come due waits in the queue until the dispatcher plans, with sessions free: that
    /// is no reason to end a session that may be wanted again a moment later.)
    pub fn starved(&self) -> bool {
        !self.ready.is_empty() && self.sessions >= self.max_sessions
    }

    /// Connections known (with a sender, due mail or a timer): what idle must keep at zero.
    pub fn known(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
#[path = "schedule_tests.rs"]
mod tests;
