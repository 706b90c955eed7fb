//! API keys for the HTTP API: `pk_` + 256 random bits, stored only as HMAC-SHA256 under a
//! server-wide key.
//!
//! The HMAC key is random and kept sealed in `server_secrets` (see `server_secrets.rs`) rather
//! than derived from the data key: `postern secrets rotate-key` re-seals it, so rotating the data
//! key does not invalidate every API key. A keyed hash (not a bare SHA-256) means a copied database alone cannot even
//! confirm a guessed key.

use std::fmt;
use std::str::FromStr;

use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;
use sqlx::Row;

use super::access::{AccessError, is_unique_violation, random_token};
use super::{Store, StoreError, now};
use crate::domain::ConnectionName;

const HMAC_SECRET_NAME: &str = "api_key_hmac";
const KEY_PREFIX: &str = "pk_";

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
}

/// A key just created: the only moment its secret exists in clear.
#[derive(Debug)]
pub struct NewApiKey {
    pub key: ApiKey,
    pub secret: SecretString,
}

fn decode(row: &sqlx::sqlite::SqliteRow) -> Result<ApiKey, AccessError> {
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
    })
}

impl Store {
    async fn api_key_hash(&self, secret: &str) -> Result<Vec<u8>, StoreError> {
        let key = self.server_secret(HMAC_SECRET_NAME).await?;
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&key).expect("any key length");
        mac.update(secret.as_bytes());
        Ok(mac.finalize().into_bytes().to_vec())
    }

    /// Creates a key; its secret is returned once and never stored.
    pub async fn create_api_key(
        &self,
        name: &str,
        role: ApiRole,
    ) -> Result<NewApiKey, AccessError> {
        let name = ConnectionName::parse(name)
            .map_err(|e| AccessError::Invalid(e.to_string()))?
            .to_string();
        let secret = format!("{KEY_PREFIX}{}", random_token());
        let prefix: String = secret.chars().take(KEY_PREFIX.len() + 8).collect();
        let hash = self.api_key_hash(&secret).await?;
        let res = sqlx::query(
            "INSERT INTO api_keys (name, role, hash, prefix, created_at) VALUES (?, ?, ?, ?, ?)",
        )
        .bind(&name)
        .bind(role.as_str())
        .bind(hash)
        .bind(&prefix)
        .bind(now())
        .execute(self.pool())
        .await;
        match res {
            Err(e) if is_unique_violation(&e) => Err(AccessError::DuplicateKey(name)),
            Err(e) => Err(e.into()),
            Ok(done) => Ok(NewApiKey {
                key: ApiKey {
                    id: done.last_insert_rowid(),
                    name,
                    role,
                    prefix,
                    created_at: now(),
                    last_used_at: None,
                },
                secret: SecretString::from(secret),
            }),
        }
    }

    /// The live key whose secret is `presented`, if any; records its use.
    pub async fn authenticate_api_key(
        &self,
        presented: &SecretString,
    ) -> Result<Option<ApiKey>, AccessError> {
        let presented = presented.expose_secret();
        // Cheap shape check first: no store work for obviously wrong headers.
        if !presented.starts_with(KEY_PREFIX) || presented.len() > 128 {
            return Ok(None);
        }
        let hash = self.api_key_hash(presented).await?;
        // Lookup by keyed hash: timing reveals nothing usable about other keys.
        let row = sqlx::query(
            "UPDATE api_keys SET last_used_at = ? WHERE hash = ? AND revoked_at IS NULL \
             RETURNING id, name, role, prefix, created_at, last_used_at",
        )
        .bind(now())
        .bind(hash)
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(decode).transpose()
    }

    /// Live keys, by name.
    pub async fn list_api_keys(&self) -> Result<Vec<ApiKey>, AccessError> {
        let rows = sqlx::query(
            "SELECT id, name, role, prefix, created_at, last_used_at FROM api_keys \
             WHERE revoked_at IS NULL ORDER BY name",
        )
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(decode).collect()
    }

    /// Revokes the live key `name`: it stops working at once.
    pub async fn revoke_api_key(&self, name: &str) -> Result<(), AccessError> {
        let n =
            sqlx::query("UPDATE api_keys SET revoked_at = ? WHERE name = ? AND revoked_at IS NULL")
                .bind(now())
                .bind(name)
                .execute(self.pool())
                .await?
                .rows_affected();
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
        let store = Store::open(dir.path(), None).await.unwrap();
        (dir, store)
    }

    #[tokio::test]
    async fn a_key_authenticates_until_revoked_and_only_its_hash_is_stored() {
        let (dir, store) = store().await;
        let created = store
            .create_api_key("billing", ApiRole::Send)
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

        store.close().await;
        let db = std::fs::read(dir.path().join(super::super::DB_FILE)).unwrap();
        let body = &secret[3..];
        assert!(!db.windows(body.len()).any(|w| w == body.as_bytes()));
        let store = Store::open(dir.path(), None).await.unwrap();

        assert!(matches!(
            store.create_api_key("billing", ApiRole::Admin).await,
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
            .create_api_key("billing", ApiRole::Admin)
            .await
            .unwrap();
        assert_eq!(store.list_api_keys().await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn keys_survive_a_data_key_rotation() {
        let (_dir, mut store) = store().await;
        let created = store.create_api_key("ops", ApiRole::Admin).await.unwrap();
        store.rotate_key(None).await.unwrap();
        assert!(
            store
                .authenticate_api_key(&created.secret)
                .await
                .unwrap()
                .is_some()
        );
    }

    #[test]
    fn roles_parse_with_a_helpful_error() {
        assert_eq!("Admin".parse::<ApiRole>().unwrap(), ApiRole::Admin);
        let e = "root".parse::<ApiRole>().unwrap_err().to_string();
        assert!(e.contains("send") && e.contains("admin"), "{e}");
    }
}
