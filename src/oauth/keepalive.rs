//! Keep-alive: a refresh token unused for long dies (90 days at Microsoft, 6 months at Google),
//! so the server refreshes every idle authorized connection at least every `keepalive_days`.
//!
//! Connections authorized together (an import, a migration) would all come due in the same
//! round and send the token endpoints a burst; each connection's period is shortened by its own
//! fixed share of up to a tenth, so they come due spread over most of a day instead (at
//! `keepalive_days = 7`), and the rounds refresh them one at a time.

use super::error::TokenError;
use super::tokens::{TokenManager, now};

/// What one keep-alive round did.
#[derive(Debug, Default)]
pub struct KeepaliveReport {
    /// Connections whose refresh token was idle and got refreshed.
    pub refreshed: Vec<String>,
    /// Connections whose refresh failed, with why (a refusal also flips their status).
    pub failed: Vec<(String, TokenError)>,
    /// Connections another instance was refreshing at that moment (it keeps them alive).
    pub skipped: Vec<String>,
}

impl TokenManager {
    /// Refreshes every enabled, authorized connection whose refresh token is older than
    /// `keepalive_days`. `serve` calls this periodically (an hour apart is plenty).
    pub async fn keepalive(&self) -> Result<KeepaliveReport, TokenError> {
        let days = i64::try_from(self.settings().keepalive_days).unwrap_or(i64::MAX / 86_400);
        let period = days.saturating_mul(86_400);
        let now = now();
        let mut report = KeepaliveReport::default();
        let idle = self
            .store()
            .idle_refresh_tokens(now.saturating_sub(period - period / 10))
            .await?;
        for (id, _) in idle
            .into_iter()
            .filter(|&(id, last)| last < now.saturating_sub(own_period(period, id)))
        {
            let name = match self.store().connection_by_id(id).await {
                Ok(c) => c.name().to_string(),
                Err(_) => continue, // removed meanwhile
            };
            // Once per connection across instances: one that holds its refresh lock is
            // refreshing it now, and one that held it just before may have made it not idle.
            let Some(lock) = self.store().try_lock_refresh(id).await? else {
                report.skipped.push(name);
                continue;
            };
            let cutoff = now.saturating_sub(own_period(period, id));
            if !self.store().refresh_token_idle(id, cutoff).await? {
                lock.release().await;
                continue;
            }
            match self.force_refresh_holding(id, lock).await {
                Ok(_) => {
                    tracing::info!(connection = %name, "keep-alive refresh done");
                    report.refreshed.push(name);
                }
                Err(e) => {
                    tracing::warn!(connection = %name, error = %e, "keep-alive refresh failed");
                    report.failed.push((name, e));
                }
            }
        }
        Ok(report)
    }
}

/// The keep-alive period of connection `id`: `period` less its own share of up to a tenth.
fn own_period(period: i64, id: i64) -> i64 {
    // A multiplicative hash: neighbouring ids land far apart.
    let share = (id as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 54; // 0..1024
    period - period / 10 * share as i64 / 1024
}

#[cfg(test)]
mod tests {
    use super::own_period;

    #[test]
    fn periods_fall_in_the_last_tenth_and_spread_evenly() {
        let period = 7 * 86_400;
        let mut buckets = [0u32; 10];
        for id in 1..=10_000 {
            let p = own_period(period, id);
            assert!(p > period - period / 10 - 1 && p <= period, "{p}");
            let b = ((period - p) * 10 / (period / 10 + 1)) as usize;
            buckets[b] += 1;
        }
        // 10,000 connections over ten slices of about 100 minutes each: none gets a burst.
        assert!(
            buckets.iter().all(|&n| (800..1200).contains(&n)),
            "{buckets:?}"
        );
    }
}
