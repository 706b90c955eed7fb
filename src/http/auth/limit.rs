//! Login rate limiting: a few failures per user name and per client address, then a pause.
//!
//! Counted in memory, so a check costs no round trip; with [`SharedFailures`] the counts of
//! every instance on the store are added in (a guesser cannot spread its tries over the
//! instances behind a load balancer). It only has to slow down guessing (argon2id does the rest).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::store::auth_failures::{FailureKind, SharedFailures};

/// Failures allowed per key within [`WINDOW`].
pub const MAX_FAILURES: u32 = 5;
/// How long failures count.
pub const WINDOW: Duration = Duration::from_secs(15 * 60);
/// Keys kept before expired ones are swept (bounds memory under a spray of user names).
const MAX_KEYS: usize = 10_000;

#[derive(Debug, Default)]
pub struct LoginLimiter {
    failures: Mutex<HashMap<String, (u32, Instant)>>,
    /// The counts of every instance on the store (none: this process's alone).
    shared: Option<SharedFailures>,
}

impl LoginLimiter {
    pub fn new(shared: Option<SharedFailures>) -> Self {
        Self {
            failures: Mutex::default(),
            shared,
        }
    }

    /// `Err(seconds to wait)` when any of `keys` has used up its failures.
    pub fn check(&self, keys: &[String]) -> Result<(), u64> {
        let map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let local = keys
            .iter()
            .filter_map(|k| map.get(k))
            .filter(|(n, first)| *n >= MAX_FAILURES && now.duration_since(*first) < WINDOW)
            .map(|(_, first)| (WINDOW - now.duration_since(*first)).as_secs().max(1));
        // The cluster's count includes this instance's once written: the larger decides.
        let shared = self.shared.iter().flat_map(|s| {
            keys.iter()
                .map(|k| s.recent(FailureKind::Login, k))
                .filter(|(n, _)| *n >= MAX_FAILURES)
                .map(|(_, age)| WINDOW.saturating_sub(age).as_secs().max(1))
        });
        local.chain(shared).max().map_or(Ok(()), Err)
    }

    pub fn failed(&self, keys: &[String]) {
        if let Some(s) = &self.shared {
            for k in keys {
                s.failed(FailureKind::Login, k);
            }
        }
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if map.len() >= MAX_KEYS {
            map.retain(|_, (_, first)| now.duration_since(*first) < WINDOW);
        }
        for k in keys {
            let entry = map.entry(k.clone()).or_insert((0, now));
            if now.duration_since(entry.1) >= WINDOW {
                *entry = (0, now);
            }
            entry.0 += 1;
        }
    }

    pub fn succeeded(&self, keys: &[String]) {
        if let Some(s) = &self.shared {
            for k in keys {
                s.succeeded(FailureKind::Login, k);
            }
        }
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        for k in keys {
            map.remove(k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_after_max_failures_and_resets_on_success() {
        let l = LoginLimiter::default();
        let keys = vec!["user:alice".to_string(), "ip:127.0.0.1".to_string()];
        for _ in 0..MAX_FAILURES {
            assert!(l.check(&keys).is_ok());
            l.failed(&keys);
        }
        let wait = l.check(&keys).unwrap_err();
        assert!(wait > 0 && wait <= WINDOW.as_secs());
        // Another user from another address is not affected.
        assert!(l.check(&["user:bob".to_string()]).is_ok());
        l.succeeded(&keys);
        assert!(l.check(&keys).is_ok());
    }
}
