//! Sealed per-connection secrets: client secret, refresh token, access tokens (one per audience).

use secrecy::SecretString;

use super::{On, Store, StoreError, now};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretKind {
    ClientSecret,
    RefreshToken,
    AccessToken,
    /// A Microsoft Graph access token of an SMTP connection (its Graph fallback), obtained with
    /// the same refresh token: kept apart so neither refresh replaces the other's token.
    GraphAccessToken,
}

impl SecretKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SecretKind::ClientSecret => "client_secret",
            SecretKind::RefreshToken => "refresh_token",
            SecretKind::AccessToken => "access_token",
            SecretKind::GraphAccessToken => "access_token_graph",
        }
    }
}

/// Associated data: binds a sealed value to its connection and kind.
pub(crate) fn aad(connection_id: i64, kind: &str) -> String {
    format!("postern/connection/{connection_id}/{kind}")
}

/// A secret opened from the store.
#[derive(Debug)]
pub struct StoredSecret {
    pub value: SecretString,
    /// Unix seconds; set for access tokens.
    pub expires_at: Option<i64>,
}

impl Store {
    pub async fn put_secret(
        &self,
        connection_id: i64,
        kind: SecretKind,
        value: &SecretString,
        expires_at: Option<i64>,
    ) -> Result<(), StoreError> {
        let _turn = self.write_turn().await;
        let sealed = self
            .sealer
            .seal_secret(value, &aad(connection_id, kind.as_str()));
        on!(self.db(), |pool, q| {
            sqlx::query(
            q.sql("INSERT INTO secrets (connection_id, kind, sealed, expires_at, updated_at) VALUES (?, ?, ?, ?, ?) \
             ON CONFLICT (connection_id, kind) DO UPDATE SET sealed = excluded.sealed, \
             expires_at = excluded.expires_at, updated_at = excluded.updated_at"),
        )
        .bind(connection_id)
        .bind(kind.as_str())
        .bind(sealed)
        .bind(expires_at)
        .bind(now())
        .execute(pool)
        .await?;
        });
        Ok(())
    }

    pub async fn secret(
        &self,
        connection_id: i64,
        kind: SecretKind,
    ) -> Result<Option<StoredSecret>, StoreError> {
        let row =
            on!(self.db(), |pool, q| {
                sqlx::query_as::<_, (Vec<u8>, Option<i64>)>(q.sql(
                    "SELECT sealed, expires_at FROM secrets WHERE connection_id = ? AND kind = ?",
                ))
                .bind(connection_id)
                .bind(kind.as_str())
                .fetch_optional(pool)
                .await?
            });
        let Some((sealed, expires_at)) = row else {
            return Ok(None);
        };
        let value = self
            .sealer
            .open_secret(&sealed, &aad(connection_id, kind.as_str()))
            .map_err(|source| StoreError::Seal {
                what: kind.as_str().to_string(),
                source,
            })?;
        Ok(Some(StoredSecret { value, expires_at }))
    }

    pub async fn delete_secret(
        &self,
        connection_id: i64,
        kind: SecretKind,
    ) -> Result<(), StoreError> {
        let _turn = self.write_turn().await;
        on!(self.db(), |pool, q| {
            sqlx::query(q.sql("DELETE FROM secrets WHERE connection_id = ? AND kind = ?"))
                .bind(connection_id)
                .bind(kind.as_str())
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    /// Commits a token response in one transaction: the rotated refresh token (if any), the access
    /// token (as `access_kind`: one per audience), and the `authorized` status. Called before the access token is handed to anyone, so a
    /// crash can only lose the new tokens, never leave the old refresh token half replaced.
    pub async fn save_tokens(
        &self,
        connection_id: i64,
        refresh_token: Option<&SecretString>,
        access_kind: SecretKind,
        access_token: &SecretString,
        access_expires_at: i64,
    ) -> Result<(), StoreError> {
        let _turn = self.write_turn().await;
        let t = now();
        let upsert = "INSERT INTO secrets (connection_id, kind, sealed, expires_at, updated_at) VALUES (?, ?, ?, ?, ?) \
             ON CONFLICT (connection_id, kind) DO UPDATE SET sealed = excluded.sealed, \
             expires_at = excluded.expires_at, updated_at = excluded.updated_at";
        let status = "UPDATE connections SET status = 'authorized', status_reason = NULL, updated_at = ?, last_used_at = ? WHERE id = ?";
        // The secrets to write: (kind, sealed value, expiry).
        let seal = |kind: SecretKind, value: &SecretString, expires_at: Option<i64>| {
            let sealed = self
                .sealer
                .seal_secret(value, &aad(connection_id, kind.as_str()));
            (kind.as_str(), sealed, expires_at)
        };
        let rows: Vec<_> = refresh_token
            .map(|rt| seal(SecretKind::RefreshToken, rt, None))
            .into_iter()
            .chain([seal(access_kind, access_token, Some(access_expires_at))])
            .collect();
        match self.db() {
            // One command, so one round trip to the connection's thread instead of four or five
            // (`BEGIN`, each statement, `COMMIT`): with a thousand connections fetching their
            // first tokens at once, those trips and their wake-ups were much of `serve`'s CPU.
            On::Sqlite(pool) => {
                let mut sql = String::from("BEGIN IMMEDIATE;\n");
                for _ in &rows {
                    sql.push_str(upsert);
                    sql.push_str(";\n");
                }
                sql.push_str(status);
                sql.push_str(";\nCOMMIT;");
                let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
                for (kind, sealed, expires_at) in rows {
                    query = query
                        .bind(connection_id)
                        .bind(kind)
                        .bind(sealed)
                        .bind(expires_at)
                        .bind(t);
                }
                let query = query.bind(t).bind(t).bind(connection_id);
                let mut conn = pool.acquire().await?;
                if let Err(e) = query.execute(&mut *conn).await {
                    // Whatever part ran is undone, and the connection leaves the pool rather
                    // than go back to it with a transaction open.
                    let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
                    drop(conn.detach());
                    return Err(e.into());
                }
            }
            On::Postgres(pool) => {
                let q = super::Backend::Postgres;
                let mut tx = pool.begin().await?;
                for (kind, sealed, expires_at) in rows {
                    sqlx::query(q.sql(upsert))
                        .bind(connection_id)
                        .bind(kind)
                        .bind(sealed)
                        .bind(expires_at)
                        .bind(t)
                        .execute(&mut *tx)
                        .await?;
                }
                sqlx::query(q.sql(status))
                    .bind(t)
                    .bind(t)
                    .bind(connection_id)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
            }
        }
        Ok(())
    }

    /// When the refresh token was last written (for keep-alive refreshes of idle connections).
    pub async fn secret_updated_at(
        &self,
        connection_id: i64,
        kind: SecretKind,
    ) -> Result<Option<i64>, StoreError> {
        let row = on!(self.db(), |pool, q| {
            sqlx::query_scalar::<_, i64>(
                q.sql("SELECT updated_at FROM secrets WHERE connection_id = ? AND kind = ?"),
            )
            .bind(connection_id)
            .bind(kind.as_str())
            .fetch_optional(pool)
            .await?
        });
        Ok(row)
    }
}

impl Store {
    /// Saves credentials an admin supplied (`Some("")` removes one). New credentials are the fix
    /// for a refused grant or secret, so a connection that needs re-authorization becomes usable
    /// again: the next refresh proves them, and `serve` releases its held mail. Returns whether
    /// that happened.
    pub async fn put_credentials(
        &self,
        connection_id: i64,
        client_secret: Option<&SecretString>,
        refresh_token: Option<&SecretString>,
    ) -> Result<bool, StoreError> {
        use secrecy::ExposeSecret;
        let mut supplied = false;
        for (kind, value) in [
            (SecretKind::ClientSecret, client_secret),
            (SecretKind::RefreshToken, refresh_token),
        ] {
            match value.map(|v| v.expose_secret().trim()) {
                Some("") => self.delete_secret(connection_id, kind).await?,
                Some(v) => {
                    self.put_secret(
                        connection_id,
                        kind,
                        &SecretString::from(v.to_string()),
                        None,
                    )
                    .await?;
                    supplied = true;
                }
                None => {}
            }
        }
        if !supplied {
            return Ok(false);
        }
        let n = on!(self.db(), |pool, q| {
            sqlx::query(q.sql(
                "UPDATE connections SET status = 'new', status_reason = NULL, updated_at = ? \
             WHERE id = ? AND status = 'needs-reauthorization'",
            ))
            .bind(now())
            .bind(connection_id)
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(n > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ConnectionStatus;

    #[tokio::test]
    async fn new_credentials_make_a_refused_connection_usable_again() {
        let (_dir, store, id) = crate::store::test_store_with_connection().await;
        let refused = ConnectionStatus::NeedsReauthorization {
            reason: "invalid_client: AADSTS7000215".into(),
        };
        store.set_status(id, &refused).await.unwrap();

        assert!(
            !store.put_credentials(id, None, None).await.unwrap(),
            "nothing supplied, nothing changes"
        );
        assert_eq!(store.connection("c").await.unwrap().status, refused);

        let secret = SecretString::from("  new-secret-value ".to_string());
        assert!(
            store
                .put_credentials(id, Some(&secret), None)
                .await
                .unwrap()
        );
        let c = store.connection("c").await.unwrap();
        assert_eq!(c.status, ConnectionStatus::New);
        let stored = store
            .secret(id, SecretKind::ClientSecret)
            .await
            .unwrap()
            .unwrap();
        use secrecy::ExposeSecret;
        assert_eq!(stored.value.expose_secret(), "new-secret-value", "trimmed");

        store
            .put_credentials(id, Some(&SecretString::from(String::new())), None)
            .await
            .unwrap();
        assert!(
            !store.connection("c").await.unwrap().client_secret_set,
            "an empty value removes the secret"
        );
    }

    /// A token response is committed whole or not at all, and a failed save leaves the store
    /// writable (on SQLite the save is one command with its own `BEGIN` and `COMMIT`).
    #[tokio::test]
    async fn a_token_response_is_saved_whole_and_a_failed_save_leaves_nothing_open() {
        use secrecy::ExposeSecret;
        let (_dir, store, id) = crate::store::test_store_with_connection().await;
        let refresh = SecretString::from("refresh-2".to_string());
        let access = SecretString::from("access-2".to_string());

        // No such connection: the foreign key refuses the first statement.
        let refused = store
            .save_tokens(
                id + 1000,
                Some(&refresh),
                SecretKind::AccessToken,
                &access,
                4_102_444_800,
            )
            .await;
        assert!(
            refused.is_err(),
            "a token saved for a connection that does not exist"
        );

        for _ in 0..8 {
            // More saves than the pool has connections: none of them finds a transaction
            // left open by the failed one.
            store
                .save_tokens(
                    id,
                    Some(&refresh),
                    SecretKind::AccessToken,
                    &access,
                    4_102_444_800,
                )
                .await
                .unwrap();
        }
        let read = |kind| {
            let store = store.clone();
            async move { store.secret(id, kind).await.unwrap().unwrap() }
        };
        assert_eq!(
            read(SecretKind::RefreshToken).await.value.expose_secret(),
            "refresh-2"
        );
        let stored = read(SecretKind::AccessToken).await;
        assert_eq!(stored.value.expose_secret(), "access-2");
        assert_eq!(stored.expires_at, Some(4_102_444_800));
        assert_eq!(
            store.connection("c").await.unwrap().status,
            ConnectionStatus::Authorized
        );
    }
}
