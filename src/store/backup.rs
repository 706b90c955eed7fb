//! Online backups of the store, a check that a store's secrets open with the current key, and
//! the lock that tells a restore that `serve` is using a data directory.

use std::fs::File;
use std::path::Path;

use super::secrets::aad;
use super::{Store, StoreError};

/// Held (shared) by every running `serve` of a data directory; a restore needs it exclusively.
pub const SERVE_LOCK: &str = "serve.lock";

/// A running `serve`'s claim on its data directory; released when dropped (or the process dies).
#[derive(Debug)]
pub struct ServeLock(#[allow(dead_code)] File);

/// Takes the shared lock of a running `serve`. Several `serve`s may hold it; a restore cannot.
pub fn lock_for_serve(data_dir: &Path) -> std::io::Result<ServeLock> {
    let file = File::create(data_dir.join(SERVE_LOCK))?;
    match file.try_lock_shared() {
        Ok(()) => Ok(ServeLock(file)),
        Err(std::fs::TryLockError::WouldBlock) => Err(std::io::Error::other(
            "a `postern restore` is replacing the store of this data directory: start serve when it is done",
        )),
        Err(std::fs::TryLockError::Error(e)) => Err(e),
    }
}

/// The exclusive lock a restore holds while it replaces the store; `None` while a `serve` runs.
pub fn lock_for_restore(data_dir: &Path) -> std::io::Result<Option<File>> {
    let file = File::create(data_dir.join(SERVE_LOCK))?;
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(std::fs::TryLockError::WouldBlock) => Ok(None),
        Err(std::fs::TryLockError::Error(e)) => Err(e),
    }
}

impl Store {
    /// Writes a consistent copy of the store to `to` while it is in use (`VACUUM INTO` reads
    /// one snapshot; writers go on). The file is created private (mode 0600): it holds message
    /// bodies and sealed secrets. Returns its size in bytes.
    pub async fn backup_to(&self, to: &Path) -> Result<u64, StoreError> {
        use std::os::unix::fs::OpenOptionsExt;
        let io = |source| StoreError::DataDir {
            path: to.to_path_buf(),
            source,
        };
        // `create_new`: never overwrite; SQLite accepts the empty file it then fills.
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(to)
            .map_err(io)?;
        let target = to.to_str().ok_or_else(|| {
            StoreError::Corrupt(format!("backup path {} is not UTF-8", to.display()))
        })?;
        let pool = self.sqlite_pool(
            "`postern backup`",
            "back the database up with pg_dump or pg_basebackup",
        )?;
        if let Err(e) = sqlx::query("VACUUM INTO ?")
            .bind(target)
            .execute(pool)
            .await
        {
            let _ = std::fs::remove_file(to);
            return Err(e.into());
        }
        Ok(std::fs::metadata(to).map_err(io)?.len())
    }

    /// Opens every sealed value with the current key; the number opened. An error names the
    /// first value that does not open: the store was sealed under another key.
    pub async fn check_secrets_open(&self) -> Result<usize, StoreError> {
        let mut opened = 0;
        let rows = on!(self.db(), |pool, q| {
            sqlx::query_as::<_, (i64, String, Vec<u8>)>(
                q.sql("SELECT connection_id, kind, sealed FROM secrets"),
            )
            .fetch_all(pool)
            .await?
        });
        for row in rows {
            let (id, kind, sealed) = row;
            self.sealer()
                .open(&sealed, &aad(id, &kind))
                .map_err(|source| StoreError::Seal {
                    what: format!("{kind} of connection {id}"),
                    source,
                })?;
            opened += 1;
        }
        let rows = on!(self.db(), |pool, q| {
            sqlx::query_as::<_, (String, Vec<u8>)>(q.sql("SELECT name, sealed FROM server_secrets"))
                .fetch_all(pool)
                .await?
        });
        for row in rows {
            let (name, sealed) = row;
            self.sealer()
                .open(&sealed, &format!("postern/server/{name}"))
                .map_err(|source| StoreError::Seal {
                    what: format!("server secret {name}"),
                    source,
                })?;
            opened += 1;
        }
        Ok(opened)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SecretKind;

    /// Backups are SQLite files: this test runs on SQLite whatever the test store.
    #[tokio::test]
    async fn a_backup_opens_with_its_own_key_only() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), None).await.unwrap();
        let conn = crate::store::insert_test_connection(&store).await;
        let secret = secrecy::SecretString::from("client secret".to_string());
        store
            .put_secret(conn, SecretKind::ClientSecret, &secret, None)
            .await
            .unwrap();
        let file = dir.path().join("backup.db");
        assert!(store.backup_to(&file).await.unwrap() > 0);
        assert!(store.backup_to(&file).await.is_err(), "never overwrites");

        // The same key opens every secret of the copy.
        let same = tempfile::tempdir().unwrap();
        std::fs::copy(&file, same.path().join(crate::store::DB_FILE)).unwrap();
        let key = dir.path().join(crate::store::KEY_FILE);
        let copy = Store::open(same.path(), Some(&key)).await.unwrap();
        assert!(copy.check_secrets_open().await.unwrap() >= 1);

        // Another key does not: the store refuses to open with it.
        let other = tempfile::tempdir().unwrap();
        std::fs::copy(&file, other.path().join(crate::store::DB_FILE)).unwrap();
        let err = Store::open(other.path(), None).await.unwrap_err();
        assert!(matches!(err, StoreError::WrongKey(_)), "{err}");
    }
}
