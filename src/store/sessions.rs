//! Admin sessions. Only SHA-256 hashes of the session tokens are stored, so a copy of the
//! database cannot be replayed as a login.

use std::time::Duration;

use super::PortableRow as _;
use secrecy::{ExposeSecret, SecretString};

use super::access::{AccessError, random_token, token_hash};
use super::{Store, now};

/// A logged-in admin, as the request handlers see it.
#[derive(Debug, Clone)]
pub struct Session {
    pub admin_id: i64,
    pub username: String,
    /// The anti-CSRF token every form of this session must carry.
    pub csrf_token: String,
    pub expires_at: i64,
}

/// A session just opened: its token goes into the cookie.
#[derive(Debug)]
pub struct NewSession {
    pub token: SecretString,
    pub session: Session,
}

fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX / 2)
}

impl Store {
    pub async fn create_session(
        &self,
        admin_id: i64,
        lifetime: Duration,
    ) -> Result<NewSession, AccessError> {
        let token = random_token();
        let csrf_token = random_token();
        let t = now();
        let expires_at = t + secs(lifetime);
        // Old sessions are swept here rather than by a timer: logins are rare.
        on!(self.db(), |pool, q| {
            sqlx::query(q.sql("DELETE FROM admin_sessions WHERE expires_at <= ?"))
                .bind(t)
                .execute(pool)
                .await?;
        });
        on!(self.db(), |pool, q| {
            sqlx::query(
            q.sql("INSERT INTO admin_sessions (token_hash, admin_id, csrf_token, created_at, expires_at) \
             VALUES (?, ?, ?, ?, ?)"),
        )
        .bind(token_hash(&token))
        .bind(admin_id)
        .bind(&csrf_token)
        .bind(t)
        .bind(expires_at)
        .execute(pool)
        .await?;
        });
        let username: String = on!(self.db(), |pool, q| {
            sqlx::query_scalar(q.sql("SELECT username FROM admin_users WHERE id = ?"))
                .bind(admin_id)
                .fetch_one(pool)
                .await?
        });
        Ok(NewSession {
            token: SecretString::from(token),
            session: Session {
                admin_id,
                username,
                csrf_token,
                expires_at,
            },
        })
    }

    /// The live session for a cookie token, if any.
    pub async fn session(&self, token: &SecretString) -> Result<Option<Session>, AccessError> {
        let row = on!(self.db(), |pool, q| {
            sqlx::query(q.sql(
                "SELECT s.admin_id, u.username, s.csrf_token, s.expires_at FROM admin_sessions s \
             JOIN admin_users u ON u.id = s.admin_id WHERE s.token_hash = ? AND s.expires_at > ?",
            ))
            .bind(token_hash(token.expose_secret()))
            .bind(now())
            .fetch_optional(pool)
            .await?
            .map(super::AnyRow::from)
        });
        row.map(|r| {
            Ok(Session {
                admin_id: r.try_get("admin_id")?,
                username: r.try_get("username")?,
                csrf_token: r.try_get("csrf_token")?,
                expires_at: r.try_get("expires_at")?,
            })
        })
        .transpose()
    }

    pub async fn delete_session(&self, token: &SecretString) -> Result<(), AccessError> {
        on!(self.db(), |pool, q| {
            sqlx::query(q.sql("DELETE FROM admin_sessions WHERE token_hash = ?"))
                .bind(token_hash(token.expose_secret()))
                .execute(pool)
                .await?;
        });
        Ok(())
    }
}

/// A fresh random token (for `state` values and binding cookies).
pub fn new_token() -> String {
    random_token()
}

/// SHA-256 of a token, as stored.
pub fn hash_token(token: &str) -> Vec<u8> {
    token_hash(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sessions_open_expire_and_close() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::test_store(dir.path()).await;
        let pw = SecretString::from("a long enough password".to_string());
        let admin = store.create_admin("alice", &pw).await.unwrap();
        let new = store
            .create_session(admin.id, Duration::from_secs(3600))
            .await
            .unwrap();
        let s = store.session(&new.token).await.unwrap().unwrap();
        assert_eq!(s.username, "alice");
        assert_eq!(s.csrf_token, new.session.csrf_token);
        store.delete_session(&new.token).await.unwrap();
        assert!(store.session(&new.token).await.unwrap().is_none());
        let expired = store
            .create_session(admin.id, Duration::ZERO)
            .await
            .unwrap();
        assert!(store.session(&expired.token).await.unwrap().is_none());
    }
}
