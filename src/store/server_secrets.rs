//! Server-wide random keys, sealed in `server_secrets` and created on first use.
//!
//! Keyed hashes (API keys, relay passwords) use these rather than the data key itself, so
//! `postern secrets rotate-key` re-seals them and every stored hash stays valid.

use rand::RngCore;
use zeroize::Zeroizing;

use super::{Store, StoreError, now};

impl Store {
    /// The 32-byte server key `name`, created (randomly) the first time it is asked for.
    pub(crate) async fn server_secret(&self, name: &str) -> Result<Zeroizing<Vec<u8>>, StoreError> {
        let aad = format!("postern/server/{name}");
        let open = |sealed: Vec<u8>| {
            self.sealer
                .open(&sealed, &aad)
                .map(|v| Zeroizing::new(v.to_vec()))
                .map_err(|source| StoreError::Seal {
                    what: name.to_string(),
                    source,
                })
        };
        let existing = on!(self.db(), |pool, q| {
            sqlx::query_scalar::<_, Vec<u8>>(
                q.sql("SELECT sealed FROM server_secrets WHERE name = ?"),
            )
            .bind(name)
            .fetch_optional(pool)
            .await?
        });
        if let Some(row) = existing {
            return open(row);
        }
        let mut key = Zeroizing::new(vec![0u8; 32]);
        rand::rngs::OsRng.fill_bytes(&mut key);
        // Two processes may race to create it: the first insert wins and both read it back.
        on!(self.db(), |pool, q| {
            sqlx::query(q.sql(
                "INSERT INTO server_secrets (name, sealed, updated_at) VALUES (?, ?, ?) \
                 ON CONFLICT (name) DO NOTHING",
            ))
            .bind(name)
            .bind(self.sealer.seal(&key, &aad))
            .bind(now())
            .execute(pool)
            .await?;
        });
        let row = on!(self.db(), |pool, q| {
            sqlx::query_scalar::<_, Vec<u8>>(
                q.sql("SELECT sealed FROM server_secrets WHERE name = ?"),
            )
            .bind(name)
            .fetch_one(pool)
            .await?
        });
        open(row)
    }
}
