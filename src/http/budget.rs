//! The memory budget for message submissions: `POST /api/v1/messages` bodies are buffered, parsed
//! and composed in memory, so each one reserves a few times its size from
//! `server.http_message_memory_budget` before its body is read. When the budget is used up a
//! submission waits briefly, then gets `503` with `Retry-After`: never an unbounded queue.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::FromRequestParts;
use axum::http::header::CONTENT_LENGTH;
use axum::http::request::Parts;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::AppState;
use super::error::ApiError;

/// Memory a submission may use per byte of body, until its message is queued: the body, the
/// parsed parts or decoded attachments, the composed message, and the store's copies while it
/// writes the message (its query argument, SQLite's own copy, the dirty pages). Measured by
/// `tests/prove/http_flood.rs`: about 4.1 for a mix of raw and base64-JSON submissions; the
/// rest is margin for the allocator.
pub const BYTES_PER_BODY_BYTE: u64 = 5;
/// How long a submission waits for room before it is refused.
pub const WAIT: Duration = Duration::from_secs(2);
/// What the refusal tells the client to wait.
pub const RETRY_AFTER_SECS: u64 = 5;

/// Budget units are KiB, so a `u32` reservation covers any body.
const UNIT: u64 = 1024;

/// Memory held by submissions in flight.
#[derive(Debug, Clone)]
pub struct MessageBudget {
    units: Arc<Semaphore>,
    total: u64,
}

impl MessageBudget {
    pub fn new(bytes: u64) -> Self {
        let total = (bytes / UNIT).clamp(1, u64::from(u32::MAX));
        Self {
            units: Arc::new(Semaphore::new(total as usize)),
            total,
        }
    }

    /// The budget, in bytes.
    pub fn total_bytes(&self) -> u64 {
        self.total * UNIT
    }

    /// Units in use right now (for tests and metrics).
    pub fn in_use_bytes(&self) -> u64 {
        (self.total - self.units.available_permits() as u64) * UNIT
    }

    /// Reserves room for a body of `body_len` bytes, waiting at most `wait`. A body larger than
    /// the whole budget takes the whole budget (alone), so it can still be accepted.
    pub async fn reserve(&self, body_len: u64, wait: Duration) -> Option<Reservation> {
        let units = body_len
            .saturating_mul(BYTES_PER_BODY_BYTE)
            .div_ceil(UNIT)
            .clamp(1, self.total);
        let units = u32::try_from(units).unwrap_or(u32::MAX);
        let acquire = self.units.clone().acquire_many_owned(units);
        match tokio::time::timeout(wait, acquire).await {
            Ok(Ok(permit)) => Some(Reservation {
                _permit: permit,
                body_len: usize::try_from(body_len).ok(),
            }),
            _ => None,
        }
    }
}

/// Room reserved for one submission; given back when the request ends (or times out).
#[derive(Debug)]
pub struct Reservation {
    _permit: OwnedSemaphorePermit,
    body_len: Option<usize>,
}

impl Reservation {
    /// Reads the whole body into one buffer sized from `Content-Length`: one copy of the body,
    /// where collecting the chunks and then joining them would briefly hold two.
    pub async fn read_body(&self, body: Body, limit: usize) -> Result<Vec<u8>, ApiError> {
        use futures::StreamExt as _;
        let too_large = || ApiError::PayloadTooLarge {
            limit: format!("{limit} bytes; server.max_message_size sets it"),
        };
        let mut out = Vec::with_capacity(self.body_len.unwrap_or(0).min(limit));
        let mut chunks = body.into_data_stream();
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk.map_err(|e| {
                ApiError::BadRequest(format!("the request body could not be read: {e}"))
            })?;
            if out.len() + chunk.len() > limit {
                return Err(too_large());
            }
            out.extend_from_slice(&chunk);
        }
        Ok(out)
    }
}

/// The extractor: place it after the API key check and before the body, so neither
/// unauthenticated callers nor queued ones hold memory.
impl FromRequestParts<AppState> for Reservation {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let limit = state.message_body_limit() as u64;
        // Without a length (chunked), assume the largest body allowed.
        let len = parts
            .headers
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(limit);
        if len > limit {
            return Err(ApiError::PayloadTooLarge {
                limit: format!("{limit} bytes; server.max_message_size sets it"),
            });
        }
        let budget = state.message_budget();
        match budget.reserve(len, WAIT).await {
            Some(r) => Ok(r),
            None => {
                tracing::warn!(
                    body_bytes = len,
                    budget_mib = budget.total_bytes() >> 20,
                    "message submission refused: the message memory budget is in use"
                );
                Err(ApiError::Overloaded {
                    message: format!(
                        "the server is receiving as many messages as its memory budget allows \
                         (server.http_message_memory_budget = {} MiB): retry after {RETRY_AFTER_SECS} \
                         seconds, or send fewer large messages at once",
                        budget.total_bytes() >> 20
                    ),
                    retry_after_secs: RETRY_AFTER_SECS,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reservations_wait_briefly_then_fail_and_come_back_when_dropped() {
        let budget = MessageBudget::new(10 * 1024 * 1024);
        let big = budget.reserve(1024 * 1024, WAIT).await.unwrap();
        assert_eq!(budget.in_use_bytes(), BYTES_PER_BODY_BYTE * 1024 * 1024);
        let started = std::time::Instant::now();
        assert!(
            budget
                .reserve(2 * 1024 * 1024, Duration::from_millis(100))
                .await
                .is_none()
        );
        assert!(started.elapsed() < Duration::from_secs(1));
        // Small ones still fit beside it.
        let small = budget.reserve(10_000, WAIT).await.unwrap();
        drop((big, small));
        assert_eq!(budget.in_use_bytes(), 0);
        // A body larger than the whole budget takes all of it, alone.
        let huge = budget.reserve(u64::MAX, WAIT).await.unwrap();
        assert_eq!(budget.in_use_bytes(), budget.total_bytes());
        assert!(budget.reserve(1, Duration::from_millis(10)).await.is_none());
        drop(huge);
    }
}
