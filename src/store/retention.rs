//! Retention of the sent-mail log: finished messages (sent or failed) older than the period are
//! deleted with their recipients and attempts, in small transactions; mail not yet finished is
//! never touched. And the store's size on disk, for `/metrics`.

use super::{Store, StoreError};

/// Messages deleted per transaction: short enough that the outbox writer never waits long.
pub const BATCH: u32 = 500;

impl Store {
    /// Deletes up to `batch` messages that finished (sent or failed) before `cutoff_ms`, with
    /// their recipient results and attempts; the number deleted. Queued, sending, deferred and
    /// held mail is never touched, however old.
    pub async fn prune_log_batch(&self, cutoff_ms: i64, batch: u32) -> Result<u64, StoreError> {
        // The queued_at index finds the candidates (nothing finishes before it was queued);
        // recipients and attempts go by ON DELETE CASCADE.
        let n = on!(self.db(), |pool, q| {
            sqlx::query(q.sql(
                "DELETE FROM messages WHERE id IN ( \
               SELECT id FROM messages \
               WHERE queued_at < ?1 AND status IN ('sent', 'failed') \
                 AND COALESCE(done_at, queued_at) < ?1 \
               ORDER BY queued_at LIMIT CAST(?2 AS INTEGER))",
            ))
            .bind(cutoff_ms)
            .bind(i64::from(batch))
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(n)
    }

    /// Bytes the store takes on disk: the database's pages plus its write-ahead log (on
    /// PostgreSQL, the database's size as the server counts it).
    pub async fn store_bytes(&self) -> Result<u64, StoreError> {
        if self.backend().is_postgres() {
            let size: i64 = on!(self.db(), |pool, q| {
                sqlx::query_scalar(q.sql("SELECT pg_database_size(current_database())"))
                    .fetch_one(pool)
                    .await?
            });
            return Ok(size.max(0) as u64);
        }
        let pages: i64 = on!(self.db(), |pool, q| {
            sqlx::query_scalar(q.sql("PRAGMA page_count"))
                .fetch_one(pool)
                .await?
        });
        let size: i64 = on!(self.db(), |pool, q| {
            sqlx::query_scalar(q.sql("PRAGMA page_size"))
                .fetch_one(pool)
                .await?
        });
        let wal = std::fs::metadata(self.data_dir.join(format!("{}-wal", super::DB_FILE)))
            .map(|m| m.len())
            .unwrap_or(0);
        Ok((pages.max(0) as u64) * (size.max(0) as u64) + wal)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::messages::{now_ms, test_message};

    const DAY_MS: i64 = 86_400_000;

    /// Queues one message, then makes it `status`, queued (and finished) `days` ago.
    async fn aged(store: &Store, status: &str, days: i64) -> String {
        let id = store
            .insert_messages(&[test_message(&["b@example.org"])])
            .await
            .unwrap()
            .remove(0)
            .id;
        let at = now_ms() - days * DAY_MS;
        let done = matches!(status, "sent" | "failed").then_some(at + 1000);
        on!(store.db(), |pool, q| {
            sqlx::query(q.sql("UPDATE messages SET status = ?, queued_at = ?, done_at = ?, next_attempt_at = ?, held_by = CASE WHEN ? = 'held' THEN 'admin' END WHERE id = ?"))
            .bind(status)
            .bind(at)
            .bind(done)
            .bind(at)
            .bind(status)
            .bind(&id)
            .execute(pool)
            .await
            .unwrap();
        });
        on!(store.db(), |pool, q| {
            sqlx::query(q.sql(
                "INSERT INTO attempts (message_id, at, outcome, detail) VALUES (?, ?, ?, 'x')",
            ))
            .bind(&id)
            .bind(at)
            .bind(status)
            .execute(pool)
            .await
            .unwrap();
        });
        id
    }

    async fn count(store: &Store, table: &str, id: &str) -> i64 {
        on!(store.db(), |pool, q| {
            sqlx::query_scalar(q.sql_owned(format!(
                "SELECT COUNT(*) FROM {table} WHERE {} = ?",
                if table == "messages" {
                    "id"
                } else {
                    "message_id"
                }
            )))
            .bind(id)
            .fetch_one(pool)
            .await
            .unwrap()
        })
    }

    #[tokio::test]
    async fn a_pass_deletes_old_finished_mail_and_never_waiting_mail() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::test_store(dir.path()).await;
        let mut waiting = Vec::new();
        for status in ["queued", "deferred", "held", "sending"] {
            waiting.push(aged(&store, status, 200).await);
        }
        let old_sent = aged(&store, "sent", 100).await;
        let old_failed = aged(&store, "failed", 100).await;
        let recent_failed = aged(&store, "failed", 10).await;
        let recent_sent = aged(&store, "sent", 10).await;

        let cutoff = now_ms() - 90 * DAY_MS;
        // Batches of one: the pass goes on until a batch comes back short.
        assert_eq!(store.prune_log_batch(cutoff, 1).await.unwrap(), 1);
        assert_eq!(store.prune_log_batch(cutoff, 1).await.unwrap(), 1);
        assert_eq!(store.prune_log_batch(cutoff, 1).await.unwrap(), 0);

        for id in [&old_sent, &old_failed] {
            for table in ["messages", "recipients", "attempts"] {
                assert_eq!(count(&store, table, id).await, 0, "{table} of {id}");
            }
        }
        for id in &waiting {
            assert_eq!(count(&store, "messages", id).await, 1);
            assert_eq!(count(&store, "attempts", id).await, 1);
            assert!(
                store.message_body(id).await.unwrap().is_some(),
                "waiting mail keeps its content"
            );
        }
        assert!(store.message_body(&recent_failed).await.unwrap().is_some());
        assert_eq!(count(&store, "messages", &recent_sent).await, 1);
    }

    #[tokio::test]
    async fn the_store_size_counts_pages_and_the_write_ahead_log() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::test_store(dir.path()).await;
        let before = store.store_bytes().await.unwrap();
        assert!(before > 0);
        let mut big = test_message(&["b@example.org"]);
        // Random bytes: PostgreSQL compresses what it stores out of line, and 1 MiB of one
        // letter would take a few KiB.
        let mut noise = vec![0u8; 1024 * 1024];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut noise);
        big.body.extend_from_slice(&noise);
        store.insert_messages(&[big]).await.unwrap();
        let after = store.store_bytes().await.unwrap();
        assert!(after >= before + 1024 * 1024, "{before} → {after}");
    }
}
