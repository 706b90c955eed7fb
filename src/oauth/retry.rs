//! Backoff for transient token-endpoint failures: capped exponential with jitter, a bounded
//! number of tries, and the provider's `Retry-After` honoured up to a cap.

use std::time::Duration;

use rand::Rng;

/// How hard the token manager retries a transient failure before giving up for now (the caller,
/// typically the outbox, retries later on its own schedule).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Tries in all, the first included.
    pub attempts: u32,
    /// Delay after the first failure, before jitter.
    pub base: Duration,
    /// Longest delay between two tries, before jitter.
    pub cap: Duration,
    /// Longest `Retry-After` waited in place; a longer one ends the retries at once and is
    /// passed on to the caller.
    pub retry_after_cap: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: 4,
            base: Duration::from_millis(500),
            cap: Duration::from_secs(8),
            retry_after_cap: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// The wait after failed try number `failed` (1-based), or `None` to stop retrying.
    pub fn delay(&self, failed: u32, retry_after: Option<Duration>) -> Option<Duration> {
        if failed >= self.attempts {
            return None;
        }
        if let Some(ra) = retry_after
            && ra > self.retry_after_cap
        {
            return None;
        }
        let exp = self
            .base
            .saturating_mul(1u32 << (failed - 1).min(16))
            .min(self.cap);
        // "Equal jitter": at least half the backoff, so retries never bunch up at zero.
        let jittered = exp / 2 + exp.mul_f64(rand::thread_rng().gen_range(0.0..0.5));
        Some(jittered.max(retry_after.unwrap_or(Duration::ZERO)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_caps_and_stops() {
        let p = RetryPolicy::default();
        for failed in 1..p.attempts {
            let d = p.delay(failed, None).unwrap();
            let exp = (p.base * 2u32.pow(failed - 1)).min(p.cap);
            assert!(d >= exp / 2 && d <= exp, "try {failed}: {d:?}");
        }
        assert_eq!(p.delay(p.attempts, None), None);
        let long = RetryPolicy {
            attempts: 40,
            ..RetryPolicy::default()
        };
        assert!(long.delay(39, None).unwrap() <= long.cap);
    }

    #[test]
    fn retry_after_is_honoured_up_to_the_cap() {
        let p = RetryPolicy::default();
        assert!(p.delay(1, Some(Duration::from_secs(10))).unwrap() >= Duration::from_secs(10));
        assert_eq!(p.delay(1, Some(Duration::from_secs(3600))), None);
    }
}
