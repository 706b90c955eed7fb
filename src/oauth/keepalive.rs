//! Keep-alive: a refresh token unused for long dies (90 days at Microsoft, 6 months at Google),
//! so the server refreshes every idle authorized connection at least every `keepalive_days`.

use super::error::TokenError;
use super::tokens::{TokenManager, now};

/// What one keep-alive round did.
#[derive(Debug, Default)]
pub struct KeepaliveReport {
    /// Connections whose refresh token was idle and got refreshed.
    pub refreshed: Vec<String>,
    /// Connections whose refresh failed, with why (a refusal also flips their status).
    pub failed: Vec<(String, TokenError)>,
}

impl TokenManager {
    /// Refreshes every enabled, authorized connection whose refresh token is older than
    /// `keepalive_days`. `serve` calls this periodically (an hour apart is plenty).
    pub async fn keepalive(&self) -> Result<KeepaliveReport, TokenError> {
        let days = i64::try_from(self.settings().keepalive_days).unwrap_or(i64::MAX / 86_400);
        let cutoff = now().saturating_sub(days.saturating_mul(86_400));
        let mut report = KeepaliveReport::default();
        for id in self.store().idle_refresh_tokens(cutoff).await? {
            let name = match self.store().connection_by_id(id).await {
                Ok(c) => c.name().to_string(),
                Err(_) => continue, // removed meanwhile
            };
            match self.force_refresh(id).await {
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
