//! Token bookkeeping queries: which connections need a keep-alive refresh.

use super::{Store, StoreError};

impl Store {
    /// Enabled, authorized, delegated connections whose refresh token was last used (or written)
    /// before `cutoff` (Unix seconds), with that time. Every successful refresh rewrites the access token, so its
    /// `updated_at` is the last use even for providers that do not rotate (Google).
    pub async fn idle_refresh_tokens(&self, cutoff: i64) -> Result<Vec<(i64, i64)>, StoreError> {
        Ok(on!(self.db(), |pool, q| {
            sqlx::query_as(q.pick(
                "SELECT c.id, MAX(r.updated_at, COALESCE(a.updated_at, 0)) FROM connections c \
             JOIN secrets r ON r.connection_id = c.id AND r.kind = 'refresh_token' \
             LEFT JOIN secrets a ON a.connection_id = c.id AND a.kind = 'access_token' \
             WHERE c.enabled = 1 AND c.status = 'authorized' AND c.flow = 'authorization-code' \
             AND MAX(r.updated_at, COALESCE(a.updated_at, 0)) < ? \
             ORDER BY c.id",
                "SELECT c.id, GREATEST(r.updated_at, COALESCE(a.updated_at, 0)) FROM connections c \
             JOIN secrets r ON r.connection_id = c.id AND r.kind = 'refresh_token' \
             LEFT JOIN secrets a ON a.connection_id = c.id AND a.kind = 'access_token' \
             WHERE c.enabled = 1 AND c.status = 'authorized' AND c.flow = 'authorization-code' \
             AND GREATEST(r.updated_at, COALESCE(a.updated_at, 0)) < ? \
             ORDER BY c.id",
            ))
            .bind(cutoff)
            .fetch_all(pool)
            .await?
        }))
    }

    /// Whether connection `id` is still among [`Store::idle_refresh_tokens`]`(cutoff)` (read
    /// again under its refresh lock: another instance may just have refreshed it).
    pub async fn refresh_token_idle(&self, id: i64, cutoff: i64) -> Result<bool, StoreError> {
        let last: Option<i64> = on!(self.db(), |pool, q| {
            sqlx::query_scalar(q.pick(
                "SELECT MAX(r.updated_at, COALESCE(a.updated_at, 0)) FROM secrets r \
             LEFT JOIN secrets a ON a.connection_id = r.connection_id AND a.kind = 'access_token' \
             WHERE r.connection_id = ? AND r.kind = 'refresh_token'",
                "SELECT GREATEST(r.updated_at, COALESCE(a.updated_at, 0)) FROM secrets r \
             LEFT JOIN secrets a ON a.connection_id = r.connection_id AND a.kind = 'access_token' \
             WHERE r.connection_id = ? AND r.kind = 'refresh_token'",
            ))
            .bind(id)
            .fetch_optional(pool)
            .await?
        });
        Ok(last.is_some_and(|last| last < cutoff))
    }
}
