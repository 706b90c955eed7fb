//! Admin accounts for the web UI: argon2id password hashes (PHC strings), checked on the
//! store's bounded password pool because a good password hash is deliberately slow.

use std::net::IpAddr;

use super::PortableRow as _;
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::OnceCell;

use super::access::{AccessError, is_unique_violation};
use super::{Store, StoreError, now};

/// Shortest password accepted for an admin account.
pub const MIN_PASSWORD_CHARS: usize = 12;

/// An admin account (never its hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admin {
    pub id: i64,
    pub username: String,
    pub created_at: i64,
    pub last_login_at: Option<i64>,
}

/// Checks an admin user name: 1 to 64 letters, digits, `.`, `_`, `-` or `@`.
pub fn check_admin_name(name: &str) -> Result<&str, AccessError> {
    let name = name.trim();
    let ok = !name.is_empty()
        && name.chars().count() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'));
    if ok {
        Ok(name)
    } else {
        Err(AccessError::Invalid(format!(
            "admin name `{name}` must be 1 to 64 letters, digits, `.`, `_`, `-` or `@`"
        )))
    }
}

impl Store {
    /// A hash of a password nobody knows, verified when the user does not exist so that a wrong
    /// user name costs as much time as a wrong password (no user enumeration by timing).
    async fn decoy_hash(&self) -> Result<&'static str, AccessError> {
        static DECOY: OnceCell<String> = OnceCell::const_new();
        let decoy = DECOY
            .get_or_try_init(|| async {
                let nobody = SecretString::from(super::access::random_token());
                self.password_checks().hash(&nobody).await
            })
            .await
            .map_err(StoreError::from)?;
        Ok(decoy.as_str())
    }
}

impl Store {
    /// Creates an admin account; the password must have at least [`MIN_PASSWORD_CHARS`] characters.
    pub async fn create_admin(
        &self,
        username: &str,
        password: &SecretString,
    ) -> Result<Admin, AccessError> {
        let username = check_admin_name(username)?.to_string();
        if password.expose_secret().chars().count() < MIN_PASSWORD_CHARS {
            return Err(AccessError::Invalid(format!(
                "the password must have at least {MIN_PASSWORD_CHARS} characters"
            )));
        }
        let hash = self
            .password_checks()
            .hash(password)
            .await
            .map_err(StoreError::from)?;
        let t = now();
        let res = on!(self.db(), |pool, q| {
            sqlx::query_scalar::<_, i64>(q.sql(
                "INSERT INTO admin_users (username, password_hash, created_at) VALUES (?, ?, ?) \
                 RETURNING id",
            ))
            .bind(&username)
            .bind(hash)
            .bind(t)
            .fetch_one(pool)
            .await
        });
        match res {
            Err(e) if is_unique_violation(&e) => Err(AccessError::DuplicateAdmin(username)),
            Err(e) => Err(e.into()),
            Ok(id) => Ok(Admin {
                id,
                username,
                created_at: t,
                last_login_at: None,
            }),
        }
    }

    /// The admin whose name and password match, if any (and records the login). `client`: the
    /// address the attempt came from; `AccessError::Store(StoreError::Busy)` means too many
    /// password checks are running: try again in a moment.
    pub async fn verify_admin(
        &self,
        username: &str,
        password: &SecretString,
        client: Option<IpAddr>,
    ) -> Result<Option<Admin>, AccessError> {
        let row = on!(self.db(), |pool, q| {
            sqlx::query(q.sql(
                "SELECT id, username, password_hash, created_at, last_login_at FROM admin_users \
             WHERE username = ?",
            ))
            .bind(username.trim())
            .fetch_optional(pool)
            .await?
            .map(super::AnyRow::from)
        });
        let hash = match &row {
            Some(r) => r.try_get::<String>("password_hash")?,
            None => self.decoy_hash().await?.to_string(),
        };
        let ok = self
            .password_checks()
            .verify(client, &hash, password)
            .await
            .map_err(StoreError::from)?;
        let Some(row) = row.filter(|_| ok) else {
            return Ok(None);
        };
        let id: i64 = row.try_get("id")?;
        on!(self.db(), |pool, q| {
            sqlx::query(q.sql("UPDATE admin_users SET last_login_at = ? WHERE id = ?"))
                .bind(now())
                .bind(id)
                .execute(pool)
                .await?;
        });
        Ok(Some(Admin {
            id,
            username: row.try_get("username")?,
            created_at: row.try_get("created_at")?,
            last_login_at: Some(now()),
        }))
    }

    pub async fn list_admins(&self) -> Result<Vec<Admin>, AccessError> {
        let rows =
            on!(self.db(), |pool, q| {
                sqlx::query(q.sql(
                "SELECT id, username, created_at, last_login_at FROM admin_users ORDER BY username",
            ))
            .fetch_all(pool)
            .await?.into_iter().map(super::AnyRow::from).collect::<Vec<_>>()
            });
        rows.iter()
            .map(|r| {
                Ok(Admin {
                    id: r.try_get("id")?,
                    username: r.try_get("username")?,
                    created_at: r.try_get("created_at")?,
                    last_login_at: r.try_get("last_login_at")?,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn passwords_are_hashed_with_argon2id_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::test_store(dir.path()).await;
        let pw = SecretString::from("correct horse battery".to_string());
        store.create_admin("alice", &pw).await.unwrap();
        let stored: String = on!(store.db(), |pool, q| {
            sqlx::query_scalar(q.sql("SELECT password_hash FROM admin_users"))
                .fetch_one(pool)
                .await
                .unwrap()
        });
        assert!(stored.starts_with("$argon2id$"), "{stored}");
        assert!(
            store
                .verify_admin("alice", &pw, None)
                .await
                .unwrap()
                .is_some()
        );
        let wrong = SecretString::from("correct horse battery!".to_string());
        assert!(
            store
                .verify_admin("alice", &wrong, None)
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            store
                .verify_admin("bob", &pw, None)
                .await
                .unwrap()
                .is_none()
        );
        assert!(matches!(
            store.create_admin("alice", &pw).await,
            Err(AccessError::DuplicateAdmin(_))
        ));
        let short = SecretString::from("short".to_string());
        assert!(matches!(
            store.create_admin("carol", &short).await,
            Err(AccessError::Invalid(_))
        ));
        assert!(check_admin_name("a b").is_err());
    }
}
