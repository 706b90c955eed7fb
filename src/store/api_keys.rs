//! API keys for the HTTP API: `pk_` + 256 random bits, stored only as HMAC-SHA256 under a
//! server-wide key.
//!
//! The HMAC key is random and kept sealed in `server_secrets` (see `server_secrets.rs`) rather
//! than derived from the data key: `postern secrets rotate-key` re-seals it, so rotating the data
//! key does not invalidate every API key. A keyed hash (not a bare SHA-256) means a copied database alone cannot even
//! confirm a guessed key.
//!
//! Checking a key is cheap on purpose, so a flood of wrong keys costs one indexed read each and
//! never a write: `last_used_at` is written at most once a minute per key, and only for keys
//! that exist.

use std::fmt;
use std::str::FromStr;

use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;
use zeroize::Zeroizing;

use super::access::{AccessError, is_unique_violation, random_token};
use super::api_key_scope::{ScopedConnection, resolve_scope};
use super::{Store, StoreError, now};
use crate::domain::ConnectionName;

const HMAC_SECRET_NAME: &str = "api_key_hmac";
const KEY_PREFIX: &str = "pk_";
/// `pk_` and 43 characters of URL-safe base64 (256 bits).
const KEY_LEN: usize = KEY_PREFIX.len() + 43;
/// `last_used_at` is written at most this often per key (seconds).
const LAST_USED_EVERY: i64 = 60;

/// The server-wide HMAC key that API keys are stored under; it never changes once created
/// (rotating the data key re-seals it), so a caller may keep it for the process's lifetime.
pub struct ApiKeyHasher(Zeroizing<Vec<u8>>);

impl fmt::Debug for ApiKeyHasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKeyHasher(..)")
    }
}

impl ApiKeyHasher {
    /// The keyed hash of `secret`, as stored; `None` when it cannot be an API key at all
    /// (no store work for obviously wrong headers).
    pub fn hash(&self, secret: &SecretString) -> Option<Vec<u8>> {
        let secret = secret.expose_secret();
        if !secret.starts_with(KEY_PREFIX) || secret.len() != KEY_LEN {
            return None;
        }
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.0).expect("any key length");
        mac.update(secret.as_bytes());
        Some(mac.finalize().into_bytes().to_vec())
    }
}

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ApiRole {
    /// Submit messages and read the messages it submitted.
    Send,
    /// Everything: connections, messages, keys, relay users.
    Admin,
}

impl ApiRole {
    pub fn as_str(self) -> &'static str {
        match self {
            ApiRole::Send => "send",
            ApiRole::Admin => "admin",
        }
    }
}

impl FromStr for ApiRole {
    type Err = AccessError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "send" => Ok(ApiRole::Send),
            "admin" => Ok(ApiRole::Admin),
            other => Err(AccessError::Invalid(format!(
                "role `{other}` is not known: use `send` (submit mail, read own messages) or `admin`"
            ))),
        }
    }
}

impl fmt::Display for ApiRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A live API key, without its secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    pub id: i64,
    pub name: String,
    pub role: ApiRole,
    /// The first characters of the key (`pk_AbCd1234`), to recognise it.
    pub prefix: String,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
    /// `None`: any connection (the key's role decides). `Some`: only these connections, by name;
    /// empty once all of them were removed (the key then may use none).
    pub scope: Option<Vec<ScopedConnection>>,
}

/// A key just created: the only moment its secret exists in clear.
#[derive(Debug)]
pub struct NewApiKey {
    pub key: ApiKey,
    pub secret: SecretString,
}

fn decode(row: &impl super::PortableRow) -> Result<ApiKey, AccessError> {
    let role: String = row.try_get("role")?;
    Ok(ApiKey {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        role: role
            .parse()
            .map_err(|_| StoreError::Corrupt(format!("api key role `{role}`")))?,
        prefix: row.try_get("prefix")?,
        created_at: row.try_get("created_at")?,
        last_used_at: row.try_get("last_used_at")?,
        // Filled in by the caller from `api_key_connections` (see `api_key_scope.rs`).
        scope: row.flag("scoped")?.then(Vec::new),
    })
}

impl Store {
    /// The hasher for API keys (one store read; keep it).
    pub async fn api_key_hasher(&self) -> Result<ApiKeyHasher, StoreError> {
        Ok(ApiKeyHasher(self.server_secret(HMAC_SECRET_NAME).await?))
    }

    /// Creates a key; its secret is returned once and never stored. A non-empty `connections`
    /// scopes a `send` key to those connections (all must exist; see `api_key_scope.rs`).
    pub async fn create_api_key(
        &self,
        name: &str,
        role: ApiRole,
        connections: &[String],
    ) -> Result<NewApiKey, AccessError> {
        let name = ConnectionName::parse(name)
            .map_err(|e| AccessError::Invalid(e.to_string()))?
            .to_string();
        let secret = format!("{KEY_PREFIX}{}", random_token());
        let prefix: String = secret.chars().take(KEY_PREFIX.len() + 8).collect();
        let secret = SecretString::from(secret);
        // Before the transaction: the first call writes the HMAC key.
        let hash = self
            .api_key_hasher()
            .await?
            .hash(&secret)
            .expect("a new key has the key shape");
        // One transaction: the scope's connections cannot vanish between the check and the insert.
        let (id, scope) = on!(self.db(), |pool, q| {
            let mut tx = pool.begin().await?;
            let scope = resolve_scope(super::Conn::from(&mut *tx), role, connections).await?;
            let res = sqlx::query_scalar::<_, i64>(q.sql(
                "INSERT INTO api_keys (name, role, hash, prefix, created_at, scoped) \
             VALUES (?, ?, ?, ?, ?, ?) RETURNING id",
            ))
            .bind(&name)
            .bind(role.as_str())
            .bind(hash)
            .bind(&prefix)
            .bind(now())
            .bind(i64::from(scope.is_some()))
            .fetch_one(&mut *tx)
            .await;
            let id = match res {
                Err(e) if is_unique_violation(&e) => return Err(AccessError::DuplicateKey(name)),
                Err(e) => return Err(e.into()),
                Ok(id) => id,
            };
            for c in scope.iter().flatten() {
                sqlx::query(
                    q.sql("INSERT INTO api_key_connections (key_id, connection_id) VALUES (?, ?)"),
                )
                .bind(id)
                .bind(c.id)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            (id, scope)
        });
        Ok(NewApiKey {
            key: ApiKey {
                id,
                name,
                role,
                prefix,
                created_at: now(),
                last_used_at: None,
                scope,
            },
            secret,
        })
    }

    /// The live key whose secret is `presented`, if any; records its use.
    pub async fn authenticate_api_key(
        &self,
        presented: &SecretString,
    ) -> Result<Option<ApiKey>, AccessError> {
        let hasher = self.api_key_hasher().await?;
        match hasher.hash(presented) {
            Some(hash) => self.authenticate_api_key_hash(&hash).await,
            None => Ok(None),
        }
    }

    /// The live key whose keyed hash is `hash` (see [`ApiKeyHasher`]), if any. A miss is one
    /// indexed read; a hit writes `last_used_at` only when it is a minute old.
    pub async fn authenticate_api_key_hash(
        &self,
        hash: &[u8],
    ) -> Result<Option<ApiKey>, AccessError> {
        // Lookup by keyed hash: timing reveals nothing usable about other keys.
        let row = on!(self.db(), |pool, q| {
            sqlx::query(q.sql(
                "SELECT id, name, role, prefix, created_at, last_used_at, scoped FROM api_keys \
             WHERE hash = ? AND revoked_at IS NULL",
            ))
            .bind(hash)
            .fetch_optional(pool)
            .await?
            .map(super::AnyRow::from)
        });
        let Some(mut key) = row.as_ref().map(decode).transpose()? else {
            return Ok(None);
        };
        let at = now();
        if key.last_used_at.is_none_or(|t| at - t >= LAST_USED_EVERY) {
            let _turn = self.write_turn().await;
            on!(self.db(), |pool, q| {
                sqlx::query(q.sql(
                    "UPDATE api_keys SET last_used_at = ? WHERE id = ? \
                 AND (last_used_at IS NULL OR last_used_at <= ?)",
                ))
                .bind(at)
                .bind(key.id)
                .bind(at - LAST_USED_EVERY)
                .execute(pool)
                .await?;
            });
            key.last_used_at = Some(at);
        }
        if key.scope.is_some() {
            key.scope = Some(self.key_scope(key.id).await?);
        }
        Ok(Some(key))
    }

    /// Live keys, by name.
    pub async fn list_api_keys(&self) -> Result<Vec<ApiKey>, AccessError> {
        let rows = on!(self.db(), |pool, q| {
            sqlx::query(q.sql(
                "SELECT id, name, role, prefix, created_at, last_used_at, scoped FROM api_keys \
             WHERE revoked_at IS NULL ORDER BY name",
            ))
            .fetch_all(pool)
            .await?
            .into_iter()
            .map(super::AnyRow::from)
            .collect::<Vec<_>>()
        });
        let mut keys = rows.iter().map(decode).collect::<Result<Vec<_>, _>>()?;
        self.fill_scopes(&mut keys).await?;
        Ok(keys)
    }

    /// Revokes the live key `name`: it stops working at once.
    pub async fn revoke_api_key(&self, name: &str) -> Result<(), AccessError> {
        let n = on!(self.db(), |pool, q| {
            sqlx::query(
                q.sql("UPDATE api_keys SET revoked_at = ? WHERE name = ? AND revoked_at IS NULL"),
            )
            .bind(now())
            .bind(name)
            .execute(pool)
            .await?
            .rows_affected()
        });
        if n == 0 {
            return Err(AccessError::NoSuchKey(name.to_string()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::test_store(dir.path()).await;
        (dir, store)
    }

    #[tokio::test]
    async fn a_key_authenticates_until_revoked_and_only_its_hash_is_stored() {
        let (dir, store) = store().await;
        let created = store
            .create_api_key("billing", ApiRole::Send, &[])
            .await
            .unwrap();
        let secret = created.secret.expose_secret().to_string();
        assert!(secret.starts_with("pk_") && secret.len() == 46, "{secret}");
        let found = store
            .authenticate_api_key(&created.secret)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (found.name.as_str(), found.role),
            ("billing", ApiRole::Send)
        );
        assert!(found.last_used_at.is_some());
        let wrong = SecretString::from(format!("{secret}x"));
        assert!(store.authenticate_api_key(&wrong).await.unwrap().is_none());

        let body = &secret[3..];
        let store = if store.backend().is_postgres() {
            // Every row of the tables that hold keys and hashes, as text.
            let rows: String = on!(store.db(), |pool, q| {
                sqlx::query_scalar(q.sql(
                    "SELECT COALESCE(string_agg(t, ' '), '') FROM ( \
                     SELECT CAST(a AS TEXT) AS t FROM api_keys a \
                     UNION ALL SELECT CAST(s AS TEXT) FROM server_secrets s) AS rows",
                ))
                .fetch_one(pool)
                .await
                .unwrap()
            });
            assert!(rows.contains("billing"), "the dump holds the key's row");
            assert!(!rows.contains(body));
            store
        } else {
            store.close().await;
            let db = std::fs::read(dir.path().join(super::super::DB_FILE)).unwrap();
            assert!(!db.windows(body.len()).any(|w| w == body.as_bytes()));
            Store::open(dir.path(), None).await.unwrap()
        };

        assert!(matches!(
            store.create_api_key("billing", ApiRole::Admin, &[]).await,
            Err(AccessError::DuplicateKey(_))
        ));
        store.revoke_api_key("billing").await.unwrap();
        assert!(
            store
                .authenticate_api_key(&created.secret)
                .await
                .unwrap()
                .is_none()
        );
        assert!(matches!(
            store.revoke_api_key("billing").await,
            Err(AccessError::NoSuchKey(_))
        ));
        // The name is free again once revoked.
        store
            .create_api_key("billing", ApiRole::Admin, &[])
            .await
            .unwrap();
        assert_eq!(store.list_api_keys().await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn keys_survive_a_data_key_rotation() {
        let (_dir, mut store) = store().await;
        let created = store
            .create_api_key("ops", ApiRole::Admin, &[])
            .await
            .unwrap();
        store.rotate_key(None).await.unwrap();
        assert!(
            store
                .authenticate_api_key(&created.secret)
                .await
                .unwrap()
                .is_some()
        );
    }

    #[tokio::test]
    async fn wrong_keys_are_refused_by_shape_or_one_read_and_last_used_is_written_once_a_minute() {
        let (_dir, store) = store().await;
        let created = store
            .create_api_key("ops", ApiRole::Send, &[])
            .await
            .unwrap();
        let hasher = store.api_key_hasher().await.unwrap();
        for wrong in ["", "Bearer", "pk_short", &format!("pk_{}", "A".repeat(43))] {
            let wrong = SecretString::from(wrong.to_string());
            assert!(store.authenticate_api_key(&wrong).await.unwrap().is_none());
        }
        assert!(
            hasher
                .hash(&SecretString::from("pk_short".to_string()))
                .is_none()
        );
        let hash = hasher.hash(&created.secret).unwrap();
        let s = &store;
        let set_last_used = move |at: i64| async move {
            on!(s.db(), |pool, q| {
                sqlx::query(q.sql("UPDATE api_keys SET last_used_at = ? WHERE name = 'ops'"))
                    .bind(at)
                    .execute(pool)
                    .await
                    .map(|r| r.rows_affected())
            })
        };
        let last_used = || async { store.list_api_keys().await.unwrap()[0].last_used_at };

        // Used 30 seconds ago: not written again.
        let recently = now() - 30;
        set_last_used(recently).await.unwrap();
        let key = store
            .authenticate_api_key_hash(&hash)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(key.name, "ops");
        assert_eq!(last_used().await, Some(recently));
        // Used two minutes ago: written now.
        set_last_used(now() - 120).await.unwrap();
        store
            .authenticate_api_key_hash(&hash)
            .await
            .unwrap()
            .unwrap();
        assert!(last_used().await.unwrap() >= now() - 1);
    }

    #[test]
    fn roles_parse_with_a_helpful_error() {
        assert_eq!("Admin".parse::<ApiRole>().unwrap(), ApiRole::Admin);
        let e = "root".parse::<ApiRole>().unwrap_err().to_string();
        assert!(e.contains("send") && e.contains("admin"), "{e}");
    }
}
