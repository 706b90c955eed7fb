//! One token refresh per connection across instances: a lock held across the call to the token
//! endpoint, so a rotated refresh token is never sent twice (the second use would revoke the
//! whole token family at Microsoft and lose the mail waiting on it).
//!
//! On PostgreSQL the lock is `pg_advisory_xact_lock` in a transaction on a connection of its
//! own, outside the pool: the refresh it guards reads and commits the tokens through the pool,
//! so holders of the lock can never take every pooled connection and wait on themselves. The
//! transaction ends (and the lock with it) when the holder is released or dropped, or when its
//! instance dies and its connection closes. On SQLite one process serves the store and the
//! token manager's in-process single flight is the whole lock.

use sqlx::Connection as _;
use sqlx::postgres::PgConnection;

use super::{Db, Store, StoreError};

/// The advisory-lock namespace of token refreshes (the first key of the two-key form, which
/// never meets the one-key locks of sqlx's migrator).
const REFRESH_LOCKS: i32 = 0x506f_5254; // "PoRT"

/// A held refresh lock; the lock ends with it.
#[derive(Debug)]
pub struct RefreshLock(Option<PgConnection>);

impl RefreshLock {
    /// Whether other instances are kept out (PostgreSQL), so one may have committed tokens while
    /// this one waited for the lock; on SQLite the process's own single flight is the whole lock
    /// and taking it waits for nothing.
    pub fn spans_instances(&self) -> bool {
        self.0.is_some()
    }

    /// Ends the lock now (dropping it ends it too, when its connection closes).
    pub async fn release(mut self) {
        if let Some(mut conn) = self.0.take()
            && sqlx::query("COMMIT").execute(&mut conn).await.is_ok()
        {
            let _ = conn.close().await;
        }
    }
}

impl Store {
    /// Waits until no other instance is refreshing connection `connection_id`'s tokens, and
    /// holds that right until the returned lock is released.
    pub async fn lock_refresh(&self, connection_id: i64) -> Result<RefreshLock, StoreError> {
        self.refresh_lock(connection_id, true)
            .await
            .map(|l| l.unwrap_or(RefreshLock(None)))
    }

    /// The lock of [`Store::lock_refresh`] if no other instance holds it now; None if one does.
    pub async fn try_lock_refresh(
        &self,
        connection_id: i64,
    ) -> Result<Option<RefreshLock>, StoreError> {
        self.refresh_lock(connection_id, false).await
    }

    async fn refresh_lock(
        &self,
        connection_id: i64,
        wait: bool,
    ) -> Result<Option<RefreshLock>, StoreError> {
        use sqlx::ConnectOptions as _;
        let Db::Postgres { options, .. } = &self.db else {
            return Ok(Some(RefreshLock(None)));
        };
        let mut conn = options.connect().await?;
        sqlx::query("BEGIN").execute(&mut conn).await?;
        // Ids past i32 share a key with another connection: at worst a needless wait.
        let key = connection_id as i32;
        let held = if wait {
            sqlx::query("SELECT pg_advisory_xact_lock($1, $2)")
                .bind(REFRESH_LOCKS)
                .bind(key)
                .execute(&mut conn)
                .await?;
            true
        } else {
            sqlx::query_scalar::<_, bool>("SELECT pg_try_advisory_xact_lock($1, $2)")
                .bind(REFRESH_LOCKS)
                .bind(key)
                .fetch_one(&mut conn)
                .await?
        };
        if held {
            Ok(Some(RefreshLock(Some(conn))))
        } else {
            let _ = conn.close().await;
            Ok(None)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    /// A second instance waits for the first's lock and cannot try-take it meanwhile; other
    /// connections' locks are free. (SQLite: the lock is the process's own, always free.)
    #[tokio::test]
    async fn a_refresh_lock_excludes_other_instances_until_released() {
        let dir = tempfile::tempdir().unwrap();
        let Some(url) = crate::store::fresh_test_database().await else {
            eprintln!("skipped: the cross-instance lock needs PostgreSQL (POSTERN_TEST_STORE_URL)");
            return;
        };
        let open = || crate::store::Store::open_url(Some(&url), dir.path(), None);
        let (a, b) = (open().await.unwrap(), open().await.unwrap());
        let held = a.lock_refresh(1).await.unwrap();
        assert!(b.try_lock_refresh(1).await.unwrap().is_none());
        assert!(b.try_lock_refresh(2).await.unwrap().is_some());
        let waiting = tokio::spawn(async move {
            let lock = b.lock_refresh(1).await?;
            lock.release().await;
            Ok::<_, crate::store::StoreError>(())
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!waiting.is_finished(), "the second instance waits");
        held.release().await;
        tokio::time::timeout(Duration::from_secs(10), waiting)
            .await
            .expect("released: the waiter gets the lock")
            .unwrap()
            .unwrap();
        assert!(a.try_lock_refresh(1).await.unwrap().is_some());
    }
}
