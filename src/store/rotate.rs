//! `postern secrets rotate-key`: re-seal everything under a new data key.
//!
//! Order matters for crash safety: (1) the new key is written beside the old one
//! (`secret.key.new`), (2) every sealed value is re-sealed in one transaction, (3) the new key file
//! replaces the old. A crash after (1) or (2) is finished at the next start: the store opens with
//! both keys and completes the rename once no value needs the old key.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::PortableRow as _;

use super::keyfile::{self, KeySource};
use super::seal::{DataKey, Sealer};
use super::secrets::aad;
use super::{Store, StoreError};

pub(crate) fn pending_path(key_path: &Path) -> PathBuf {
    let mut p = key_path.as_os_str().to_owned();
    p.push(".new");
    PathBuf::from(p)
}

fn seal_err(what: &str) -> impl FnOnce(super::SealError) -> StoreError + '_ {
    move |source| StoreError::Seal {
        what: what.to_string(),
        source,
    }
}

/// What a rotation did.
#[derive(Debug)]
pub struct Rotation {
    pub resealed: usize,
    pub old_key_id: String,
    pub new_key_id: String,
    /// Where the new key was written.
    pub key_file: PathBuf,
}

impl Store {
    /// Re-seals every secret with a fresh key. With a key file, the file is replaced; with
    /// `POSTERN_SECRET_KEY`, the new key is written to `new_key_out` and the admin must put it in
    /// the environment before the next start.
    pub async fn rotate_key(&mut self, new_key_out: Option<&Path>) -> Result<Rotation, StoreError> {
        let new_key = DataKey::generate();
        let old_key_id = self.sealer.current_key().id_hex();
        let new_key_id = new_key.id_hex();
        let (key_path, pending) = match (&self.key_source, new_key_out) {
            (_, Some(out)) => (out.to_path_buf(), out.to_path_buf()),
            (KeySource::File(p), None) => (p.clone(), pending_path(p)),
            (KeySource::Env, None) => {
                return Err(StoreError::Corrupt(
                    "the key comes from POSTERN_SECRET_KEY: pass --new-key-file FILE to receive the new key".into(),
                ));
            }
        };
        keyfile::write_key_file(&pending, &new_key)?;
        let new_sealer =
            Sealer::new(DataKey::from_base64(&new_key.to_base64()).map_err(seal_err("new key"))?);

        let resealed = on!(self.db(), |pool, q| {
            let mut tx = pool.begin().await?;
            let mut resealed = 0;
            let rows = sqlx::query(q.sql("SELECT connection_id, kind, sealed FROM secrets"))
                .fetch_all(&mut *tx)
                .await?;
            for row in rows {
                let (id, kind): (i64, String) =
                    (row.try_get("connection_id")?, row.try_get("kind")?);
                let sealed: Vec<u8> = row.try_get("sealed")?;
                let plain = self
                    .sealer
                    .open(&sealed, &aad(id, &kind))
                    .map_err(seal_err(&kind))?;
                sqlx::query(
                    q.sql("UPDATE secrets SET sealed = ? WHERE connection_id = ? AND kind = ?"),
                )
                .bind(new_sealer.seal(&plain, &aad(id, &kind)))
                .bind(id)
                .bind(&kind)
                .execute(&mut *tx)
                .await?;
                resealed += 1;
            }
            let rows = sqlx::query(q.sql("SELECT name, sealed FROM server_secrets"))
                .fetch_all(&mut *tx)
                .await?;
            for row in rows {
                let name: String = row.try_get("name")?;
                let sealed: Vec<u8> = row.try_get("sealed")?;
                let what = format!("postern/server/{name}");
                let plain = self.sealer.open(&sealed, &what).map_err(seal_err(&name))?;
                sqlx::query(q.sql("UPDATE server_secrets SET sealed = ? WHERE name = ?"))
                    .bind(new_sealer.seal(&plain, &what))
                    .bind(&name)
                    .execute(&mut *tx)
                    .await?;
                resealed += 1;
            }
            // Consents in progress are not re-sealed: they last minutes, and one caught by a
            // rotation only means pressing Connect again.
            sqlx::query(q.sql("DELETE FROM pending_consents"))
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            resealed
        });
        if pending != key_path {
            std::fs::rename(&pending, &key_path).map_err(|source| {
                StoreError::Key(keyfile::KeyError::Io {
                    path: key_path.clone(),
                    source,
                })
            })?;
        }
        self.sealer = Arc::new(new_sealer);
        Ok(Rotation {
            resealed,
            old_key_id,
            new_key_id,
            key_file: key_path,
        })
    }

    /// Completes a rotation interrupted between its commit and its rename.
    pub(crate) async fn finish_pending_rotation(&self, key_path: &Path) -> Result<(), StoreError> {
        let pending = pending_path(key_path);
        if !matches!(self.key_source, KeySource::File(_)) || !pending.exists() {
            return Ok(());
        }
        let current = self.sealer.current_key().id_hex();
        let mut rows = on!(self.db(), |pool, q| {
            sqlx::query(q.sql("SELECT sealed FROM secrets"))
                .fetch_all(pool)
                .await?
                .into_iter()
                .map(super::AnyRow::from)
                .collect::<Vec<_>>()
        });
        rows.extend(on!(self.db(), |pool, q| {
            sqlx::query(q.sql("SELECT sealed FROM server_secrets"))
                .fetch_all(pool)
                .await?
                .into_iter()
                .map(super::AnyRow::from)
                .collect::<Vec<_>>()
        }));
        let still_old = rows
            .iter()
            .filter_map(|r| r.try_get::<Vec<u8>>("sealed").ok())
            .any(|s| Sealer::key_id_of(&s).as_deref() == Some(current.as_str()));
        if still_old {
            // The re-seal never committed: the old key stays; drop the unused new one.
            std::fs::remove_file(&pending).map_err(|source| {
                StoreError::Key(keyfile::KeyError::Io {
                    path: pending.clone(),
                    source,
                })
            })?;
        } else {
            std::fs::rename(&pending, key_path).map_err(|source| {
                StoreError::Key(keyfile::KeyError::Io {
                    path: key_path.to_path_buf(),
                    source,
                })
            })?;
            tracing::warn!(
                "finished a key rotation that had been interrupted; restart to use the new key only"
            );
        }
        Ok(())
    }
}
