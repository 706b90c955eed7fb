//! What the delivery scheduler asks of the store: which connections have waiting mail, and when
//! it is due. Both queries read partial indexes that hold only waiting (or held) mail, so their
//! cost follows the mail that waits, not the number of connections or the size of the log.

use std::time::SystemTime;

use super::{DB_FILE, Db, Store, StoreError};

/// The SQLite database file's and its write-ahead log's sizes and modification times.
pub type FilesMark = [(u64, Option<SystemTime>); 2];

impl Store {
    /// On SQLite, a mark of the database files that changes whenever any process commits (every
    /// commit appends to the WAL, or rewrites it after a checkpoint): while it stays the same,
    /// the store holds no news for the scheduler, and two `stat` calls replace its queries.
    /// None on PostgreSQL (other instances write elsewhere; they notify).
    pub fn files_mark(&self) -> Option<FilesMark> {
        let Db::Sqlite { .. } = &self.db else {
            return None;
        };
        let db = self.data_dir.join(DB_FILE);
        let wal = self.data_dir.join(format!("{DB_FILE}-wal"));
        let mark = |p: &std::path::Path| match std::fs::metadata(p) {
            Ok(m) => (m.len(), m.modified().ok()),
            Err(_) => (0, None),
        };
        Some([mark(&db), mark(&wal)])
    }

    /// Per connection with queued or deferred mail, the earliest time (ms) one is due.
    pub async fn due_by_connection(&self) -> Result<Vec<(i64, i64)>, StoreError> {
        Ok(on!(self.db(), |pool, q| {
            sqlx::query_as(q.pick(
                "SELECT connection_id, MIN(next_attempt_at) FROM messages INDEXED BY messages_due \
             WHERE status IN ('queued', 'deferred') GROUP BY connection_id",
                "SELECT connection_id, MIN(next_attempt_at) FROM messages \
             WHERE status IN ('queued', 'deferred') GROUP BY connection_id",
            ))
            .fetch_all(pool)
            .await?
        }))
    }

    /// Connections holding mail for their own sake (disabled, needs re-authorization) that
    /// changed at or after `since` (seconds): the only ones whose mail may now be released.
    pub async fn held_connections_changed_since(&self, since: i64) -> Result<Vec<i64>, StoreError> {
        Ok(on!(self.db(), |pool, q| {
            sqlx::query_scalar(q.sql(
                "SELECT id FROM connections WHERE updated_at >= ? AND id IN \
             (SELECT connection_id FROM messages WHERE status = 'held' AND held_by = 'connection')",
            ))
            .bind(since)
            .fetch_all(pool)
            .await?
        }))
    }
}

impl Store {
    /// Per connection with waiting mail, how many messages wait (queued, deferred, or held for
    /// the connection's sake), from the partial indexes of waiting mail.
    pub async fn waiting_by_connection(&self) -> Result<Vec<(i64, i64)>, StoreError> {
        Ok(on!(self.db(), |pool, q| {
            sqlx::query_as(q.pick(
                "SELECT connection_id, SUM(n) FROM ( \
               SELECT connection_id, COUNT(*) AS n FROM messages INDEXED BY messages_due \
                 WHERE status IN ('queued', 'deferred') GROUP BY connection_id \
               UNION ALL \
               SELECT connection_id, COUNT(*) FROM messages INDEXED BY messages_held_by_connection \
                 WHERE status = 'held' AND held_by = 'connection' GROUP BY connection_id) \
             GROUP BY connection_id",
                "SELECT connection_id, CAST(SUM(n) AS BIGINT) FROM ( \
               SELECT connection_id, COUNT(*) AS n FROM messages \
                 WHERE status IN ('queued', 'deferred') GROUP BY connection_id \
               UNION ALL \
               SELECT connection_id, COUNT(*) FROM messages \
                 WHERE status = 'held' AND held_by = 'connection' GROUP BY connection_id) AS waiting \
             GROUP BY connection_id",
            ))
            .fetch_all(pool)
            .await?
        }))
    }

    /// A connection's sending since `since` (ms): per message with a recipient sent, when it
    /// was last attempted and how many of its recipients were sent.
    pub async fn sent_since(
        &self,
        connection_id: i64,
        since: i64,
    ) -> Result<Vec<(i64, i64)>, StoreError> {
        Ok(on!(self.db(), |pool, q| {
            sqlx::query_as(
            q.sql("SELECT at, n FROM (SELECT m.last_attempt_at AS at, \
             (SELECT COUNT(*) FROM recipients r WHERE r.message_id = m.id AND r.status = 'sent') AS n \
             FROM messages m WHERE m.connection_id = ? AND m.last_attempt_at >= ?) AS sent WHERE n > 0"),
        )
        .bind(connection_id)
        .bind(since)
        .fetch_all(pool)
        .await?
        }))
    }

    /// Defers every waiting message of the connection due before `until` to `until` (a
    /// provider limit reached): one statement, instead of claiming the backlog batch by batch
    /// only to put it back.
    pub async fn defer_connection_mail(
        &self,
        connection_id: i64,
        until: i64,
        reason: &str,
    ) -> Result<u64, StoreError> {
        let _turn = self.write_turn().await;
        Ok(on!(self.db(), |pool, q| {
            sqlx::query(q.sql(
                "UPDATE messages SET status = 'deferred', next_attempt_at = ?, last_error = ? \
             WHERE connection_id = ? AND status IN ('queued', 'deferred') AND next_attempt_at < ?",
            ))
            .bind(until)
            .bind(reason)
            .bind(connection_id)
            .bind(until)
            .execute(pool)
            .await?
            .rows_affected()
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::super::messages::test_message;
    use crate::domain::ConnectionStatus;

    #[tokio::test]
    async fn due_mail_is_reported_once_per_connection_with_its_earliest_time() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::test_store(dir.path()).await;
        assert!(store.due_by_connection().await.unwrap().is_empty());
        let mut batch = vec![test_message(&["b@example.org"]); 3];
        batch[2].connection_id = 2;
        store.insert_messages(&batch).await.unwrap();
        let due = store.due_by_connection().await.unwrap();
        assert_eq!(due.iter().map(|d| d.0).collect::<Vec<_>>(), [1, 2]);
        // Mail held for the connection's sake is not due.
        store.hold_connection_mail(2, "disabled").await.unwrap();
        let due = store.due_by_connection().await.unwrap();
        assert_eq!(due.iter().map(|d| d.0).collect::<Vec<_>>(), [1]);
        assert!(
            store
                .held_connections_changed_since(0)
                .await
                .unwrap()
                .is_empty(),
            "no connection #2 exists to release mail for"
        );
        // A limit reached: connection 1's waiting mail moves to the time it allows.
        let until = crate::store::messages::now_ms() + 3_600_000;
        assert_eq!(
            store
                .defer_connection_mail(1, until, "limit")
                .await
                .unwrap(),
            2
        );
        assert_eq!(store.due_by_connection().await.unwrap(), [(1, until)]);
        assert!(
            store.sent_since(1, 0).await.unwrap().is_empty(),
            "nothing sent yet"
        );
    }

    #[tokio::test]
    async fn the_files_mark_moves_with_a_commit_and_only_then() {
        let (_dir, store, id) = crate::store::test_store_with_connection().await;
        let Some(before) = store.files_mark() else {
            // PostgreSQL: other instances write elsewhere and notify instead.
            assert!(store.backend().is_postgres());
            return;
        };
        // Reads leave the files alone: an idle scheduler stays idle.
        store.due_by_connection().await.unwrap();
        store.list_connections().await.unwrap();
        assert_eq!(store.files_mark(), Some(before));
        // Any commit, by this process or another (the CLI), moves it.
        store
            .set_status(id, &ConnectionStatus::Authorized)
            .await
            .unwrap();
        assert_ne!(store.files_mark(), Some(before));
    }
}
