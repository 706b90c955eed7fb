//! Counters of the relay listener, read by metrics and the admin pages.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Shared, cheap to clone; one per listener unless shared with [`super::RelayServer::with_stats`].
#[derive(Debug, Clone, Default)]
pub struct RelayStats(Arc<Counters>);

#[derive(Debug, Default)]
struct Counters {
    open_sessions: AtomicU64,
    sessions_total: AtomicU64,
    connections_refused: AtomicU64,
    tls_failures: AtomicU64,
    auth_successes: AtomicU64,
    auth_failures: AtomicU64,
    messages_accepted: AtomicU64,
    messages_failed: AtomicU64,
    timeouts: AtomicU64,
    memory_refusals: AtomicU64,
}

/// The counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Sessions running now.
    pub open_sessions: u64,
    /// Sessions started since the listener started.
    pub sessions_total: u64,
    /// Connections turned away with `421` because the connection limit was reached.
    pub connections_refused: u64,
    /// TLS handshakes that failed or timed out.
    pub tls_failures: u64,
    pub auth_successes: u64,
    /// Wrong user name or password (what a password-guessing alert watches).
    pub auth_failures: u64,
    /// Messages stored and answered with `250`.
    pub messages_accepted: u64,
    /// Messages the backend failed to store or rejected.
    pub messages_failed: u64,
    /// Sessions closed with `421 4.4.2` because the client was too slow.
    pub timeouts: u64,
    /// Messages refused with `452 4.3.1` because the memory budget was used up.
    pub memory_refusals: u64,
}

impl RelayStats {
    pub fn snapshot(&self) -> StatsSnapshot {
        let c = &self.0;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        StatsSnapshot {
            open_sessions: get(&c.open_sessions),
            sessions_total: get(&c.sessions_total),
            connections_refused: get(&c.connections_refused),
            tls_failures: get(&c.tls_failures),
            auth_successes: get(&c.auth_successes),
            auth_failures: get(&c.auth_failures),
            messages_accepted: get(&c.messages_accepted),
            messages_failed: get(&c.messages_failed),
            timeouts: get(&c.timeouts),
            memory_refusals: get(&c.memory_refusals),
        }
    }

    /// Counts a session as open until the guard is dropped.
    pub(crate) fn session_opened(&self) -> OpenSession {
        self.0.open_sessions.fetch_add(1, Ordering::Relaxed);
        self.0.sessions_total.fetch_add(1, Ordering::Relaxed);
        OpenSession(self.clone())
    }

    pub(crate) fn connection_refused(&self) {
        self.0.connections_refused.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn tls_failed(&self) {
        self.0.tls_failures.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn auth(&self, success: bool) {
        let counter = if success {
            &self.0.auth_successes
        } else {
            &self.0.auth_failures
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn timed_out(&self) {
        self.0.timeouts.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn memory_refused(&self) {
        self.0.memory_refusals.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn message(&self, stored: bool) {
        let counter = if stored {
            &self.0.messages_accepted
        } else {
            &self.0.messages_failed
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

#[derive(Debug)]
pub(crate) struct OpenSession(RelayStats);

impl Drop for OpenSession {
    fn drop(&mut self) {
        self.0.0.open_sessions.fetch_sub(1, Ordering::Relaxed);
    }
}
