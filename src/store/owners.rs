//! Connection ownership across instances (PostgreSQL): one instance at a time runs a
//! connection's senders, so its limits (sessions, messages a minute, recipients a day) are
//! enforced by one scheduler. Ownership is a lease row taken only when free or expired, by the
//! database's clock; the owner renews all its rows in one statement per heartbeat and deletes a
//! row when its senders for that connection end. On SQLite one process serves the store: it
//! owns everything and these statements are never run.

use super::{On, Store, StoreError};

/// The outcome of trying to take a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Take {
    /// Ours for the lease (ms, from when the statement ran).
    Taken,
    /// Another instance holds it; its lease runs out in this many ms (0: about now).
    Held { expires_in_ms: i64 },
}

/// What a heartbeat's renewal found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Renewal {
    /// The connections still owned, renewed.
    pub kept: Vec<i64>,
    /// Of those, the ones another instance has asked for within a lease.
    pub wanted: Vec<i64>,
    /// This instance's fair share: the owned connections of the cluster over the instances
    /// that own or want one, rounded up.
    pub share: usize,
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
                // Held by another instance (or released since: then it is free at once). Say
                // that this one wants it too, for a lease's time: an owner holding more than its
                // share gives wanted connections up (see `renew_connections`).
                let left: Option<i64> = sqlx::query_scalar(q.sql(
                    "UPDATE connection_owners SET wanted_by = ?, wanted_until = \
                     CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT) + ? \
                     WHERE connection_id = ? \
                     RETURNING lease_until - CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)",
                ))
                .bind(instance)
                .bind(lease_ms)
                .bind(connection_id)
                .fetch_optional(pool)
                .await?;
                Take::Held {
                    expires_in_ms: left.unwrap_or(0).max(0),
                }
            }
        }))
    }

    /// Renews every lease `instance` holds, in one statement; says which connections it still
    /// owns (a lease that ran out and was taken by another instance is not among them), which
    /// of those another instance wants, and this instance's fair share of the owned connections.
    pub async fn renew_connections(&self, instance: &str) -> Result<Renewal, StoreError> {
        let On::Postgres(pool) = self.db() else {
            return Ok(Renewal::default());
        };
        // The counts read the statement's snapshot (before the renewal): a lease of this
        // instance's that ran out a moment ago still counts as held (it is being renewed).
        let rows: Vec<(i64, bool, i64, i64)> = sqlx::query_as(
            "WITH t AS (SELECT CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT) AS now), \
             renewed AS (UPDATE connection_owners SET lease_until = (SELECT now FROM t) + $1 \
                 WHERE instance = $2 RETURNING connection_id, \
                 COALESCE(wanted_by <> $2 AND wanted_until > (SELECT now FROM t), false) AS wanted), \
             live AS (SELECT * FROM connection_owners \
                 WHERE lease_until > (SELECT now FROM t) OR instance = $2) \
             SELECT connection_id, wanted, \
                 (SELECT count(*) FROM live), \
                 (SELECT count(DISTINCT name) FROM ( \
                     SELECT instance AS name FROM live \
                     UNION SELECT wanted_by FROM connection_owners \
                         WHERE wanted_until > (SELECT now FROM t)) AS names) \
             FROM renewed",
        )
        .bind(self.lease_ms())
        .bind(instance)
        .fetch_all(pool)
        .await?;
        let (owned, instances) = rows.first().map_or((0, 1), |&(_, _, o, i)| {
            (o.max(0) as usize, i.max(1) as usize)
        });
        Ok(Renewal {
            kept: rows.iter().map(|r| r.0).collect(),
            wanted: rows.iter().filter(|r| r.1).map(|r| r.0).collect(),
            share: owned.div_ceil(instances),
        })
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
