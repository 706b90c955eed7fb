//! Web consents in progress, shared by every instance on the store: the provider's redirect may
//! reach another instance than the one that started the consent.
//!
//! `state` is a bearer secret, so only its SHA-256 is stored; the PKCE verifier is sealed, bound
//! to its row. A row is redeemed once: `DELETE … RETURNING`, so two instances receiving the same
//! callback cannot both get it. Expiry uses database time (every instance agrees).

use std::time::Duration;

use secrecy::SecretString;

use super::access::token_hash;
use super::{Store, StoreError};

/// A consent to keep until its callback.
#[derive(Debug)]
pub struct NewConsent<'a> {
    pub state: &'a str,
    pub connection_id: i64,
    pub verifier: &'a SecretString,
    pub redirect_uri: &'a str,
    /// SHA-256 of the browser binding cookie, when an admin's browser started it.
    pub binding_hash: Option<Vec<u8>>,
    pub lifetime: Duration,
}

/// A consent taken (and so removed) for its callback.
#[derive(Debug)]
pub struct TakenConsent {
    pub connection_id: i64,
    pub verifier: SecretString,
    pub redirect_uri: String,
    pub binding_hash: Option<Vec<u8>>,
    /// False when it was found but its lifetime had run out.
    pub live: bool,
}

/// Associated data: a sealed verifier opens only in the row of its `state`.
fn aad(state_hash: &[u8]) -> String {
    let hex: String = state_hash.iter().map(|b| format!("{b:02x}")).collect();
    format!("postern/consent/{hex}")
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 2)
}

impl Store {
    /// Keeps a started consent; drops expired ones, and the oldest past `max_rows`.
    pub async fn put_pending_consent(
        &self,
        c: NewConsent<'_>,
        max_rows: u32,
    ) -> Result<(), StoreError> {
        let state_hash = token_hash(c.state);
        let sealed = self.sealer.seal_secret(c.verifier, &aad(&state_hash));
        on!(self.db(), |pool, q| {
            let now = db_now_ms!(q, pool);
            // Swept here rather than by a timer: consents are rare.
            sqlx::query(q.sql("DELETE FROM pending_consents WHERE expires_at <= ?"))
                .bind(now)
                .execute(pool)
                .await?;
            sqlx::query(q.sql(
                "INSERT INTO pending_consents (state_hash, connection_id, verifier, redirect_uri, \
                 binding_hash, created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            ))
            .bind(&state_hash)
            .bind(c.connection_id)
            .bind(sealed)
            .bind(c.redirect_uri)
            .bind(c.binding_hash)
            .bind(now)
            .bind(now.saturating_add(millis(c.lifetime)))
            .execute(pool)
            .await?;
            // A bound on what a flood of Connect presses can make the store keep: the newest
            // `max_rows` stay (ties at the cut may keep a few more).
            sqlx::query(q.sql(
                "DELETE FROM pending_consents WHERE created_at < (SELECT created_at FROM \
                 pending_consents ORDER BY created_at DESC LIMIT 1 OFFSET ?)",
            ))
            .bind(i64::from(max_rows.max(1)) - 1)
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// Takes the consent for `state`, once: a second call (here or on another instance) gets
    /// `None`.
    pub async fn take_pending_consent(
        &self,
        state: &str,
    ) -> Result<Option<TakenConsent>, StoreError> {
        let state_hash = token_hash(state);
        let row = on!(self.db(), |pool, q| {
            let now = db_now_ms!(q, pool);
            sqlx::query_as::<_, (i64, Vec<u8>, String, Option<Vec<u8>>, i64)>(q.sql(
                "DELETE FROM pending_consents WHERE state_hash = ? RETURNING connection_id, \
                 verifier, redirect_uri, binding_hash, expires_at",
            ))
            .bind(&state_hash)
            .fetch_optional(pool)
            .await?
            .map(|r| (r, now))
        });
        let Some(((connection_id, sealed, redirect_uri, binding_hash, expires_at), now)) = row
        else {
            return Ok(None);
        };
        let verifier = self
            .sealer
            .open_secret(&sealed, &aad(&state_hash))
            .map_err(|source| StoreError::Seal {
                what: "pending consent".into(),
                source,
            })?;
        Ok(Some(TakenConsent {
            connection_id,
            verifier,
            redirect_uri,
            binding_hash,
            live: expires_at > now,
        }))
    }

    /// Consents in progress (expired ones not yet swept included).
    pub async fn pending_consent_count(&self) -> Result<i64, StoreError> {
        Ok(on!(self.db(), |pool, q| {
            sqlx::query_scalar::<_, i64>(q.sql("SELECT COUNT(*) FROM pending_consents"))
                .fetch_one(pool)
                .await?
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    fn consent<'a>(state: &'a str, id: i64, v: &'a SecretString, life: Duration) -> NewConsent<'a> {
        NewConsent {
            state,
            connection_id: id,
            verifier: v,
            redirect_uri: "http://127.0.0.1/oauth/callback",
            binding_hash: Some(token_hash("cookie")),
            lifetime: life,
        }
    }

    #[tokio::test]
    async fn a_consent_is_taken_once_with_its_verifier() {
        let (_dir, store, id) = crate::store::test_store_with_connection().await;
        let v = SecretString::from("the-pkce-verifier".to_string());
        store
            .put_pending_consent(consent("s1", id, &v, Duration::from_secs(60)), 10)
            .await
            .unwrap();
        assert!(store.take_pending_consent("other").await.unwrap().is_none());
        let t = store.take_pending_consent("s1").await.unwrap().unwrap();
        assert_eq!(t.connection_id, id);
        assert_eq!(t.verifier.expose_secret(), "the-pkce-verifier");
        assert_eq!(t.binding_hash, Some(token_hash("cookie")));
        assert!(t.live);
        assert!(store.take_pending_consent("s1").await.unwrap().is_none());
    }

    #[tokio::test]
    async fn state_and_verifier_are_not_stored_in_clear() {
        let (_dir, store, id) = crate::store::test_store_with_connection().await;
        let v = SecretString::from("verifier-in-clear-would-show".to_string());
        store
            .put_pending_consent(
                consent("state-in-clear", id, &v, Duration::from_secs(60)),
                10,
            )
            .await
            .unwrap();
        let (state_hash, verifier): (Vec<u8>, Vec<u8>) = on!(store.db(), |pool, q| {
            sqlx::query_as(q.sql("SELECT state_hash, verifier FROM pending_consents"))
                .fetch_one(pool)
                .await
                .unwrap()
        });
        let all = [state_hash, verifier].concat();
        let text = String::from_utf8_lossy(&all);
        assert!(!text.contains("state-in-clear"));
        assert!(!text.contains("verifier-in-clear"));
    }

    #[tokio::test]
    async fn expired_consents_are_refused_and_the_oldest_dropped_past_the_cap() {
        let (_dir, store, id) = crate::store::test_store_with_connection().await;
        let v = SecretString::from("v".to_string());
        store
            .put_pending_consent(consent("gone", id, &v, Duration::ZERO), 10)
            .await
            .unwrap();
        let t = store.take_pending_consent("gone").await.unwrap().unwrap();
        assert!(!t.live, "a consent past its lifetime is not redeemable");

        for i in 0..5 {
            store
                .put_pending_consent(
                    consent(&format!("s{i}"), id, &v, Duration::from_secs(60)),
                    3,
                )
                .await
                .unwrap();
            // Distinct creation times, so "oldest" is well defined.
            tokio::time::sleep(Duration::from_millis(3)).await;
        }
        assert_eq!(store.pending_consent_count().await.unwrap(), 3);
        assert!(store.take_pending_consent("s0").await.unwrap().is_none());
        assert!(store.take_pending_consent("s1").await.unwrap().is_none());
        assert!(store.take_pending_consent("s4").await.unwrap().is_some());
    }
}
