//! Connection ownership across instances (PostgreSQL): one instance at a time runs a
//! connection's senders, so its limits (sessions, messages a minute, recipients a day) are
//! enforced by one scheduler. Ownership is a lease row taken only when free or expired, by the
//! database's clock; the owner renews all its rows in one statement per heartbeat and deletes a
//! row when its senders for that connection end. On SQLite one process serves the store: it
//! owns everything and these statements are never run.

use super::{Store, StoreError};

/// The outcome of trying to take a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Take {
    /// Ours for the lease (ms, from when the statement ran).
    Taken,
    /// Another instance holds it; its lease runs out in this many ms (0: about now).
    Held { expires_in_ms: i64 },
}

impl Store {
    /// Takes connection `connection_id` for `instance` if it is free, expired, or already
    /// `instance`'s (then the lease is renewed).
    pub async fn take_connection(
        &self,
        connection_id: i64,
        instance: &str,
    ) -> Result<Take, StoreError> {
        if !self.backend().is_postgres() {
            return Ok(Take::Taken);
        }
        let lease_ms = self.lease_ms();
        let lease_id: i64 = rand::random::<i64>() & i64::MAX;
        Ok(on!(self.db(), |pool, q| {
            let taken: Option<i64> = sqlx::query_scalar(q.sql(
                "INSERT INTO connection_owners (connection_id, instance, lease_id, lease_until) \
                 VALUES (?, ?, ?, CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT) + ?) \
                 ON CONFLICT (connection_id) DO UPDATE SET instance = excluded.instance, \
                 lease_id = excluded.lease_id, lease_until = excluded.lease_until \
                 WHERE connection_owners.instance = excluded.instance \
                 OR connection_owners.lease_until < CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT) \
                 RETURNING lease_id",
            ))
            .bind(connection_id)
            .bind(instance)
            .bind(lease_id)
            .bind(lease_ms)
            .fetch_optional(pool)
            .await?;
            if taken.is_some() {
                Take::Taken
            } else {
                // Held by another instance (or released since: then it is free at once).
                let left: Option<i64> = sqlx::query_scalar(q.sql(
                    "SELECT lease_until - CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT) \
                     FROM connection_owners WHERE connection_id = ?",
                ))
                .bind(connection_id)
                .fetch_optional(pool)
                .await?;
                Take::Held {
                    expires_in_ms: left.unwrap_or(0).max(0),
                }
            }
        }))
    }

    /// Renews every lease `instance` holds, in one statement; returns the connections it still
    /// owns (a lease that ran out and was taken by another instance is not among them).
    pub async fn renew_connections(&self, instance: &str) -> Result<Vec<i64>, StoreError> {
        if !self.backend().is_postgres() {
            return Ok(Vec::new());
        }
        let lease_ms = self.lease_ms();
        Ok(on!(self.db(), |pool, q| {
            sqlx::query_scalar(q.sql(
                "UPDATE connection_owners \
                 SET lease_until = CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT) + ? \
                 WHERE instance = ? RETURNING connection_id",
            ))
            .bind(lease_ms)
            .bind(instance)
            .fetch_all(pool)
            .await?
        }))
    }

    /// Gives connection `connection_id` up, if `instance` still owns it.
    pub async fn release_connection(
        &self,
        connection_id: i64,
        instance: &str,
    ) -> Result<(), StoreError> {
        on!(self.db(), |pool, q| {
            sqlx::query(
                q.sql("DELETE FROM connection_owners WHERE connection_id = ? AND instance = ?"),
            )
            .bind(connection_id)
            .bind(instance)
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(())
    }

    /// Each owned connection with its owner (for `status` and tests).
    pub async fn connection_owners(&self) -> Result<Vec<(i64, String)>, StoreError> {
        Ok(on!(self.db(), |pool, q| {
            sqlx::query_as(q.sql(
                "SELECT connection_id, instance FROM connection_owners ORDER BY connection_id",
            ))
            .fetch_all(pool)
            .await?
        }))
    }
}
