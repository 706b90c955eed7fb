//! Who may use the HTTP API and the admin UI: the errors and random tokens shared by API keys,
//! admin accounts and sessions.

use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};

use super::StoreError;

/// A failure of an access-control operation, with the caller's mistakes told apart.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    #[error("an API key named `{0}` already exists: revoke it first or choose another name")]
    DuplicateKey(String),
    #[error("there is no live API key named `{0}` (see `postern api-key list`)")]
    NoSuchKey(String),
    #[error("an admin named `{0}` already exists")]
    DuplicateAdmin(String),
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for AccessError {
    fn from(e: sqlx::Error) -> Self {
        AccessError::Store(StoreError::Db(e))
    }
}

impl AccessError {
    /// The caller's mistake (exit code 2, HTTP 4xx) rather than a failure of the store.
    pub fn is_usage(&self) -> bool {
        !matches!(self, AccessError::Store(_))
    }
}

/// 32 random bytes as unpadded base64url (43 characters): session ids, CSRF tokens, key bodies.
pub(crate) fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// SHA-256 of a random token: enough for values with 256 bits of entropy (a stolen database
/// yields no usable session or state), where a password would need a slow hash.
pub(crate) fn token_hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

pub(crate) fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}
