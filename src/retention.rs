//! The background pruning of the sent-mail log (`retention.log_days`): once shortly after
//! start, then every hour, finished messages past the period are deleted in small
//! transactions with a pause between them, so the relay's writes never wait long behind it.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::settings::RetentionSettings;
use crate::store::Store;
use crate::store::retention::BATCH;

/// The first pass waits for start-up to settle (recovered leases, the first deliveries).
const FIRST_PASS_AFTER: Duration = Duration::from_secs(60);
const EVERY: Duration = Duration::from_secs(3600);
/// Between two batches: room for the outbox writer.
const PAUSE: Duration = Duration::from_millis(200);

const DAY_MS: i64 = 86_400_000;

pub async fn run(
    store: Store,
    settings: RetentionSettings,
    metrics: Metrics,
    stop: CancellationToken,
) {
    if settings.log_days == 0 {
        tracing::info!("retention.log_days = 0: the sent-mail log is kept forever");
        return;
    }
    let mut wait = FIRST_PASS_AFTER;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
        wait = EVERY;
        match pass(&store, settings.log_days, &stop).await {
            Ok(deleted) => {
                metrics.retention_pass(deleted);
                if deleted > 0 {
                    tracing::info!(
                        deleted,
                        log_days = settings.log_days,
                        "retention: deleted finished messages older than retention.log_days"
                    );
                }
            }
            Err(e) => tracing::warn!(error = %e, "retention pass failed; trying again in an hour"),
        }
    }
}

/// Deletes in batches until one comes back short; the number deleted.
pub async fn pass(
    store: &Store,
    log_days: u32,
    stop: &CancellationToken,
) -> Result<u64, crate::store::StoreError> {
    let cutoff = crate::store::messages::now_ms() - i64::from(log_days) * DAY_MS;
    let mut deleted = 0;
    loop {
        let n = store.prune_log_batch(cutoff, BATCH).await?;
        deleted += n;
        if n < u64::from(BATCH) {
            return Ok(deleted);
        }
        tokio::select! {
            () = stop.cancelled() => return Ok(deleted),
            () = tokio::time::sleep(PAUSE) => {}
        }
    }
}
