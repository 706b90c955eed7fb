//! Connections declared in postern.toml (`[[connections]]`): written in one transaction at
//! start and on every reload, and marked as managed by the file, which the CLI, API and admin
//! UI then refuse to edit. A connection taken out of the file stays, no longer managed.

use secrecy::{ExposeSecret, SecretString};

use super::connections::{COLUMNS, ConnectionRow, bind_settings, decode};
use super::secrets::aad;
use super::{SecretKind, Store, StoreError, now};
use crate::domain::ConnectionSettings;

/// One `[[connections]]` entry, validated, with its client secret read from its file or variable.
#[derive(Debug, Clone)]
pub struct Declared {
    pub settings: ConnectionSettings,
    pub client_secret: Option<SecretString>,
}

/// What a sync changed, by connection name.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SyncReport {
    pub created: Vec<String>,
    pub updated: Vec<String>,
    /// In the store as managed, but no longer in the file: kept, and editable again.
    pub released: Vec<String>,
}

impl Store {
    /// Makes the store hold exactly the declared connections' settings (and client secrets),
    /// all or nothing. Tokens and status are kept: a changed setting does not undo consent.
    pub async fn sync_declared(&self, declared: &[Declared]) -> Result<SyncReport, StoreError> {
        let mut report = SyncReport::default();
        on!(self.db(), |pool, q| {
            let mut tx = pool.begin().await?;
            for d in declared {
                let s = &d.settings;
                let name = s.name.to_string();
                let row = sqlx::query_as::<_, ConnectionRow>(q.sql_owned(format!(
                    "SELECT {COLUMNS} FROM connections c WHERE c.name = ?"
                )))
                .bind(&name)
                .fetch_optional(&mut *tx)
                .await?;
                let id = match row.map(decode).transpose()? {
                    None => {
                        let t = now();
                        let id: i64 = bind_settings!(sqlx::query_scalar(
                        q.sql("INSERT INTO connections (name, display_name, provider, flow, host, port, tls, domain, user_name, \
                         tenant, client_id, scope, redirect_uri, authorize_url, token_url, device_url, ca_file, enabled, \
                         max_concurrent, limits, transport, graph_url, fallback, graph_large, status, created_at, updated_at, managed_by_file) \
                         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'new', ?, ?, 1) RETURNING id"),
                    ), s)
                    .bind(t)
                    .bind(t)
                    .fetch_one(&mut *tx)
                    .await?;
                        report.created.push(name.clone());
                        id
                    }
                    Some(current) => {
                        if current.settings != *s || !current.managed_by_file {
                            bind_settings!(sqlx::query(
                            q.sql("UPDATE connections SET name = ?, display_name = ?, provider = ?, flow = ?, host = ?, port = ?, \
                             tls = ?, domain = ?, user_name = ?, tenant = ?, client_id = ?, scope = ?, redirect_uri = ?, \
                             authorize_url = ?, token_url = ?, device_url = ?, ca_file = ?, enabled = ?, max_concurrent = ?, \
                             limits = ?, transport = ?, graph_url = ?, fallback = ?, graph_large = ?, updated_at = ?, managed_by_file = 1 WHERE id = ?"),
                        ), s)
                        .bind(now())
                        .bind(current.id)
                        .execute(&mut *tx)
                        .await?;
                            report.updated.push(name.clone());
                        }
                        current.id
                    }
                };
                if let Some(secret) = &d.client_secret {
                    let aad = aad(id, SecretKind::ClientSecret.as_str());
                    let stored: Option<Vec<u8>> = sqlx::query_scalar(
                    q.sql("SELECT sealed FROM secrets WHERE connection_id = ? AND kind = 'client_secret'"),
                )
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
                    let same = stored
                        .and_then(|sealed| self.sealer.open_secret(&sealed, &aad).ok())
                        .is_some_and(|old| old.expose_secret() == secret.expose_secret());
                    if !same {
                        sqlx::query(
                        q.sql("INSERT INTO secrets (connection_id, kind, sealed, expires_at, updated_at) VALUES (?, 'client_secret', ?, NULL, ?) \
                         ON CONFLICT (connection_id, kind) DO UPDATE SET sealed = excluded.sealed, updated_at = excluded.updated_at"),
                    )
                    .bind(id)
                    .bind(self.sealer.seal_secret(secret, &aad))
                    .bind(now())
                    .execute(&mut *tx)
                    .await?;
                        if !report.created.contains(&name) && !report.updated.contains(&name) {
                            report.updated.push(name.clone());
                        }
                    }
                }
            }
            let names: Vec<String> = declared
                .iter()
                .map(|d| d.settings.name.to_string())
                .collect();
            let managed: Vec<String> =
                sqlx::query_scalar(q.sql("SELECT name FROM connections WHERE managed_by_file = 1"))
                    .fetch_all(&mut *tx)
                    .await?;
            for name in managed.into_iter().filter(|n| !names.contains(n)) {
                sqlx::query(q.sql(
                    "UPDATE connections SET managed_by_file = 0, updated_at = ? WHERE name = ?",
                ))
                .bind(now())
                .bind(&name)
                .execute(&mut *tx)
                .await?;
                report.released.push(name);
            }
            tx.commit().await?;
        });
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{ConnectionInput, ConnectionStatus};

    fn declared(user: &str, secret: Option<&str>) -> Declared {
        let (settings, _) = ConnectionInput {
            name: Some("filed".into()),
            provider: Some("microsoft".into()),
            user: Some(user.into()),
            tenant: Some("contoso.onmicrosoft.com".into()),
            client_id: Some("1b2c3d4e-0000-1111-2222-333344445555".into()),
            ..Default::default()
        }
        .validate()
        .unwrap();
        Declared {
            settings,
            client_secret: secret.map(|s| SecretString::from(s.to_string())),
        }
    }

    #[tokio::test]
    async fn declared_connections_are_created_updated_released_and_never_edited_elsewhere() {
        let (_dir, store, _) = crate::store::test_store_with_connection().await;

        let r = store
            .sync_declared(&[declared("a@contoso.com", Some("s3cret"))])
            .await
            .unwrap();
        assert_eq!(r.created, ["filed"]);
        let c = store.connection("filed").await.unwrap();
        assert!(c.managed_by_file && c.client_secret_set);
        let secret = store
            .secret(c.id, SecretKind::ClientSecret)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(secret.value.expose_secret(), "s3cret");

        // The same again: nothing to write.
        let r = store
            .sync_declared(&[declared("a@contoso.com", Some("s3cret"))])
            .await
            .unwrap();
        assert_eq!(r, SyncReport::default());

        // A changed mailbox (reload): updated in place; consent and status stay.
        store
            .set_status(c.id, &ConnectionStatus::Authorized)
            .await
            .unwrap();
        let r = store
            .sync_declared(&[declared("b@contoso.com", Some("s3cret"))])
            .await
            .unwrap();
        assert_eq!(r.updated, ["filed"]);
        let c = store.connection("filed").await.unwrap();
        assert_eq!(c.settings.user.as_str(), "b@contoso.com");
        assert_eq!(c.status, ConnectionStatus::Authorized);

        // Edits from elsewhere are refused, saying where to make them.
        let refused = [
            store.update_connection(c.id, &c.settings).await.map(|_| ()),
            store.set_enabled("filed", false).await.map(|_| ()),
            store.remove_connection("filed").await,
        ];
        for r in refused {
            let e = r.unwrap_err();
            assert!(
                matches!(&e, StoreError::ManagedByFile(n) if n == "filed")
                    && e.to_string().contains("postern reload"),
                "{e}"
            );
        }
        // Other connections are still editable.
        store.set_enabled("c", false).await.unwrap();

        // Out of the file: kept, editable again.
        let r = store.sync_declared(&[]).await.unwrap();
        assert_eq!(r.released, ["filed"]);
        let c = store.connection("filed").await.unwrap();
        assert!(!c.managed_by_file);
        store.set_enabled("filed", false).await.unwrap();
    }
}
