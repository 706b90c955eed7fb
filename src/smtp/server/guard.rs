//! Failed AUTHs remembered per client address across connections, so a password guesser
//! cannot reset the session's throttle by reconnecting; with [`SharedFailures`], across the
//! instances on one store too, so it cannot spread its guesses over them.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;

use crate::store::auth_failures::{FailureCount, FailureKind, SharedFailures, WINDOW};
/// Addresses remembered at most; past that, expired entries go, then (under a flood from
/// very many addresses) everything, so memory stays bounded.
const CAPACITY: usize = 10_000;

/// Recent AUTH failures by client address (IPv6 by /64, the smallest block a host gets).
#[derive(Debug, Default)]
pub(crate) struct FailureMemory {
    entries: Mutex<HashMap<IpAddr, FailureCount>>,
    /// The counts of every instance on the store (none: this process's alone).
    shared: Option<SharedFailures>,
}

impl FailureMemory {
    pub fn new(shared: Option<SharedFailures>) -> Self {
        Self {
            entries: Mutex::default(),
            shared,
        }
    }

    /// Failures from `ip` within the window: this listener's, or the cluster's when more (they
    /// include this listener's once written, so the larger is the truth, not the sum).
    pub fn recent(&self, ip: IpAddr) -> u32 {
        let local = {
            let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
            entries
                .get(&key(ip))
                .filter(|e| e.last.elapsed() < WINDOW)
                .map_or(0, |e| e.failures)
        };
        let shared = self
            .shared
            .as_ref()
            .map_or(0, |s| s.recent(FailureKind::Relay, &key(ip).to_string()).0);
        local.max(shared)
    }

    /// Records one failed AUTH from `ip`.
    pub fn failed(&self, ip: IpAddr) {
        if let Some(s) = &self.shared {
            s.failed(FailureKind::Relay, &key(ip).to_string());
        }
        let now = Instant::now();
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= CAPACITY {
            entries.retain(|_, e| now.duration_since(e.last) < WINDOW);
            if entries.len() >= CAPACITY {
                entries.clear();
            }
        }
        entries
            .entry(key(ip))
            .or_insert(FailureCount::new(now))
            .add(now);
    }
}

/// IPv4 addresses as they are, IPv6 by /64 (the same blocks as the password-check pool).
fn key(ip: IpAddr) -> IpAddr {
    crate::store::password_check::client_block(ip)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_counted_per_address() {
        let m = FailureMemory::default();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        for _ in 0..3 {
            m.failed(a);
        }
        assert_eq!(m.recent(a), 3);
        assert_eq!(m.recent(b), 0);
        // The mapped form of the same IPv4 address is the same client.
        assert_eq!(m.recent("::ffff:192.0.2.1".parse().unwrap()), 3);
    }

    #[test]
    fn ipv6_addresses_of_one_network_share_a_count() {
        let m = FailureMemory::default();
        m.failed("2001:db8:1:2::1".parse().unwrap());
        m.failed("2001:db8:1:2:ffff::9".parse().unwrap());
        assert_eq!(m.recent("2001:db8:1:2::77".parse().unwrap()), 2);
        assert_eq!(m.recent("2001:db8:1:3::1".parse().unwrap()), 0);
    }

    #[test]
    fn memory_stays_bounded() {
        let m = FailureMemory::default();
        for i in 0..(CAPACITY as u32 + 10) {
            m.failed(IpAddr::from(i.to_be_bytes()));
        }
        assert!(m.entries.lock().unwrap().len() <= CAPACITY);
    }
}
