//! `connection import`: many connections created or updated in one transaction, so a file
//! either lands whole or not at all.

use secrecy::SecretString;

use super::connections::{INSERT, UPDATE, bind_settings};
use super::secrets::aad;
use super::{SecretKind, Store, StoreError, now};
use crate::domain::ConnectionSettings;

/// One connection to write, already validated.
#[derive(Debug)]
pub struct ImportItem {
    /// The connection to update; `None` creates one.
    pub existing_id: Option<i64>,
    pub settings: ConnectionSettings,
    pub client_secret: Option<SecretString>,
    pub refresh_token: Option<SecretString>,
}

/// What an import did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ImportCounts {
    pub created: usize,
    pub updated: usize,
}

impl Store {
    /// Writes every item in one transaction: on any failure (a name taken meanwhile, the disk)
    /// nothing is written. New secrets on an existing connection clear a needs-reauthorization
    /// status, as `connection edit` does.
    pub async fn import_connections(
        &self,
        items: &[ImportItem],
    ) -> Result<ImportCounts, StoreError> {
        on!(self.db(), |pool, q| {
            let mut tx = pool.begin().await?;
            let mut counts = ImportCounts::default();
            for item in items {
                let s = &item.settings;
                let res = match item.existing_id {
                    Some(id) => {
                        let res = bind_settings!(sqlx::query(q.sql(UPDATE)), s)
                            .bind(now())
                            .bind(id)
                            .execute(&mut *tx)
                            .await
                            .map(|r| r.rows_affected());
                        // The only row an UPDATE by id misses: one postern.toml manages.
                        if matches!(&res, Ok(0)) {
                            return Err(StoreError::ManagedByFile(s.name.to_string()));
                        }
                        res.map(|_| id)
                    }
                    None => {
                        bind_settings!(sqlx::query_scalar::<_, i64>(q.sql(INSERT)), s)
                            .bind(now())
                            .bind(now())
                            .fetch_one(&mut *tx)
                            .await
                    }
                };
                let new_id = res.map_err(|e| match &e {
                    sqlx::Error::Database(d) if d.is_unique_violation() => {
                        StoreError::DuplicateConnection(s.name.to_string())
                    }
                    _ => e.into(),
                })?;
                let id = match item.existing_id {
                    Some(id) => {
                        counts.updated += 1;
                        id
                    }
                    None => {
                        counts.created += 1;
                        new_id
                    }
                };
                let secrets = [
                    (SecretKind::ClientSecret, &item.client_secret),
                    (SecretKind::RefreshToken, &item.refresh_token),
                ];
                for (kind, value) in secrets {
                    let Some(value) = value else { continue };
                    sqlx::query(q.sql(
                        "INSERT INTO secrets (connection_id, kind, sealed, expires_at, updated_at) \
                     VALUES (?, ?, ?, NULL, ?) ON CONFLICT (connection_id, kind) DO UPDATE SET \
                     sealed = excluded.sealed, expires_at = NULL, updated_at = excluded.updated_at",
                    ))
                    .bind(id)
                    .bind(kind.as_str())
                    .bind(self.sealer.seal_secret(value, &aad(id, kind.as_str())))
                    .bind(now())
                    .execute(&mut *tx)
                    .await?;
                }
                if item.existing_id.is_some()
                    && (item.client_secret.is_some() || item.refresh_token.is_some())
                {
                    sqlx::query(q.sql(
                        "UPDATE connections SET status = 'new', status_reason = NULL \
                     WHERE id = ? AND status = 'needs-reauthorization'",
                    ))
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                }
            }
            tx.commit().await?;
            Ok(counts)
        })
    }
}
