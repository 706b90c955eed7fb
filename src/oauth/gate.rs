//! Token requests per token endpoint: a few at a time, and none while the endpoint has asked us
//! to wait (`429` with `Retry-After`). Ten thousand connections starting at once, or a keep-alive
//! round, then queue here instead of hammering Entra ID or Google into throttling everyone.
//!
//! Keyed by the token URL, not the host. Microsoft's token URL names the tenant
//! (`login.microsoftonline.com/{tenant}/oauth2/v2.0/token`) and Entra ID throttles per tenant and
//! application (it publishes no fixed figure; a throttled `client_credentials` request gets `429`
//! with `Retry-After`, per the MSAL documentation), so one URL is one throttling unit: a vendor's
//! thousand customers, each in its own tenant, do not queue behind each other, and one tenant's
//! `429` pauses that tenant only. Keyed by host, all of them would share four requests in flight
//! and one tenant's pause would stop every tenant. Google has one token URL for everyone, so its
//! connections share one gate. The total in flight stays bounded all the same: first tokens are
//! asked for by senders, which `delivery.max_sessions` caps, and keep-alive refreshes are spread.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// Requests in flight per token endpoint (URL) at most.
pub const PER_ENDPOINT: usize = 4;

#[derive(Debug)]
struct Endpoint {
    permits: Arc<Semaphore>,
    /// No request starts before this (the endpoint's `Retry-After`).
    paused_until: Mutex<Option<Instant>>,
}

#[derive(Debug, Default)]
pub struct Gates {
    endpoints: Mutex<HashMap<String, Arc<Endpoint>>>,
}

impl Gates {
    fn endpoint(&self, url: &str) -> Arc<Endpoint> {
        let mut map = self.endpoints.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(url.to_string())
            .or_insert_with(|| {
                Arc::new(Endpoint {
                    permits: Arc::new(Semaphore::new(PER_ENDPOINT)),
                    paused_until: Mutex::new(None),
                })
            })
            .clone()
    }

    /// Waits for a turn at `url`: a free slot, after any pause it asked for.
    pub async fn enter(&self, url: &str) -> OwnedSemaphorePermit {
        let ep = self.endpoint(url);
        let permit = ep
            .permits
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        loop {
            let until = *ep.paused_until.lock().unwrap_or_else(|e| e.into_inner());
            match until {
                Some(t) if t > Instant::now() => tokio::time::sleep_until(t).await,
                _ => return permit,
            }
        }
    }

    /// `url` answered `429`/`503` with `Retry-After`: nobody asks it again before then.
    pub fn pause(&self, url: &str, wait: Duration) {
        let ep = self.endpoint(url);
        let until = Instant::now() + wait;
        let mut p = ep.paused_until.lock().unwrap_or_else(|e| e.into_inner());
        if p.is_none_or(|t| t < until) {
            *p = Some(until);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn at_most_four_requests_per_endpoint_and_others_are_not_held_up() {
        let gates = Arc::new(Gates::default());
        let mut held = Vec::new();
        for _ in 0..PER_ENDPOINT {
            held.push(gates.enter("https://idp/a/token").await);
        }
        let waiting = tokio::spawn({
            let g = gates.clone();
            async move { g.enter("https://idp/a/token").await }
        });
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(!waiting.is_finished(), "a fifth request waits");
        let _other =
            tokio::time::timeout(Duration::from_millis(1), gates.enter("https://idp/b/token"))
                .await
                .expect("another endpoint is not held up");
        held.pop();
        let _fifth = tokio::time::timeout(Duration::from_millis(1), waiting)
            .await
            .expect("a freed slot goes to the waiting request")
            .unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_retry_after_pauses_every_request_to_that_endpoint() {
        let gates = Gates::default();
        gates.pause("https://idp/a/token", Duration::from_secs(30));
        gates.pause("https://idp/a/token", Duration::from_secs(10));
        let started = Instant::now();
        let _p = gates.enter("https://idp/a/token").await;
        assert_eq!(
            started.elapsed().as_secs(),
            30,
            "the longer pause holds; a shorter one does not shorten it"
        );
    }
}
