//! When to retry: exponential backoff with jitter, like a mail server; give up after the queue lifetime.

use std::time::Duration;

use rand::Rng;

use crate::settings::DeliverySettings;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub first: Duration,
    pub max: Duration,
    pub lifetime: Duration,
}

impl RetryPolicy {
    pub fn from_settings(s: &DeliverySettings) -> Self {
        Self {
            first: Duration::from_secs(s.first_retry_secs),
            max: Duration::from_secs(s.max_retry_secs),
            lifetime: Duration::from_secs(s.max_queue_lifetime_hours * 3600),
        }
    }

    /// The delay before attempt `attempts + 1`: first × 2^(attempts-1), capped, ±20% jitter so a
    /// burst of deferred mail does not come back all at once.
    pub fn delay(&self, attempts: u32) -> Duration {
        let exp = attempts.saturating_sub(1).min(20);
        let base = self.first.saturating_mul(1 << exp).min(self.max);
        let jitter = rand::thread_rng().gen_range(0.8..=1.2);
        base.mul_f64(jitter).min(self.max.mul_f64(1.2))
    }

    /// The next attempt time (unix ms), and whether the message has waited long enough to give up.
    pub fn next(&self, attempts: u32, queued_at_ms: i64, now_ms: i64) -> (i64, bool) {
        let at = now_ms + self.delay(attempts).as_millis() as i64;
        let give_up = at > queued_at_ms + self.lifetime.as_millis() as i64;
        (at, give_up)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            first: Duration::from_secs(60),
            max: Duration::from_secs(3600),
            lifetime: Duration::from_secs(5 * 86400),
        }
    }

    #[test]
    fn grows_exponentially_within_jitter_and_caps() {
        let p = policy();
        for (attempts, base) in [
            (1u32, 60.0),
            (2, 120.0),
            (3, 240.0),
            (7, 3600.0),
            (30, 3600.0),
        ] {
            let d = p.delay(attempts).as_secs_f64();
            assert!(
                d >= base * 0.8 - 0.001 && d <= base * 1.2 + 0.001,
                "attempt {attempts}: {d}"
            );
        }
    }

    #[test]
    fn gives_up_after_the_lifetime() {
        let p = policy();
        let day = 86_400_000;
        assert!(!p.next(3, 0, day).1);
        assert!(p.next(50, 0, 5 * day).1);
    }
}
