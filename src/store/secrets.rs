//! Sealed per-connection secrets: client secret, refresh token, access tokens (one per audience).

use secrecy::SecretString;

use super::{Store, StoreError, now};

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
        on!(self.db(), |pool, q| {
            let mut tx = pool.begin().await?;
            if let Some(rt) = refresh_token {
                let kind = SecretKind::RefreshToken.as_str();
                sqlx::query(q.sql(upsert))
                    .bind(connection_id)
                    .bind(kind)
                    .bind(self.sealer.seal_secret(rt, &aad(connection_id, kind)))
                    .bind(None::<i64>)
                    .bind(t)
                    .execute(&mut *tx)
                    .await?;
            }
            let kind = access_kind.as_str();
            sqlx::query(q.sql(upsert))
                .bind(connection_id)
                .bind(kind)
                .bind(
                    self.sealer
                        .seal_secret(access_token, &aad(connection_id, kind)),
                )
                .bind(access_expires_at)
                .bind(t)
                .execute(&mut *tx)
                .await?;
            sqlx::query(q.sql("UPDATE connections SET status = 'authorized', status_reason = NULL, updated_at = ?, last_used_at = ? WHERE id = ?"))
            .bind(t)
            .bind(t)
            .bind(connection_id)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
        });
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
}
