//! Mail coming in from the relay: checking relay users and queuing what they submit.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

use super::queue::{Outbox, QueueError};
use crate::smtp::server::{
    AllowedFrom, BackendError, Envelope, Identity, PeerInfo, RelayBackend, StoreFailure,
};
use crate::store::messages::{NewMessage, Source};
use crate::store::relay_users::RelayUser;
use crate::store::{Store, StoreError};

/// How long a successful password check is remembered (argon2 costs tens of milliseconds).
const AUTH_CACHE_TTL: Duration = Duration::from_secs(120);

struct Cached {
    /// SHA-256 of a per-process salt, the user and the password: no password kept in memory.
    proof: [u8; 32],
    user: RelayUser,
    identity: Identity,
    until: Instant,
}

/// The relay's backend: relay users from the store, messages into the outbox.
pub struct RelayIntake {
    store: Store,
    outbox: Outbox,
    salt: [u8; 32],
    cache: Mutex<HashMap<String, Cached>>,
}

impl std::fmt::Debug for RelayIntake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelayIntake").finish_non_exhaustive()
    }
}

impl RelayIntake {
    pub fn new(store: Store, outbox: Outbox) -> Self {
        let mut salt = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut salt);
        Self {
            store,
            outbox,
            salt,
            cache: Mutex::new(HashMap::new()),
        }
    }

    fn proof(&self, user: &str, password: &SecretString) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(self.salt);
        h.update(user.as_bytes());
        h.update([0]);
        h.update(password.expose_secret().as_bytes());
        h.finalize().into()
    }

    fn cached(&self, user: &str, proof: &[u8; 32]) -> Option<Identity> {
        let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        cache
            .get(user)
            .filter(|c| &c.proof == proof && c.until > Instant::now())
            .map(|c| c.identity.clone())
    }

    fn connection_of(&self, user: &str) -> Option<(i64, String)> {
        let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        cache
            .get(user)
            .map(|c| (c.user.connection_id, c.user.connection.clone()))
    }

    async fn identity_for(&self, user: &RelayUser) -> Result<Identity, BackendError> {
        let conn = self
            .store
            .connection_by_id(user.connection_id)
            .await
            .map_err(|e| BackendError::with_source("cannot read the relay user's connection", e))?;
        let mut allowed: Vec<String> = vec![conn.settings.user.to_string()];
        allowed.extend(user.allow_from.iter().cloned());
        let allowed_from = AllowedFrom::parse(&allowed)
            .map_err(|e| BackendError::with_source("a stored allowed sender is invalid", e))?;
        Ok(Identity {
            user: user.name.clone(),
            allowed_from,
        })
    }
}

fn queue_failure(e: QueueError) -> StoreFailure {
    match e {
        QueueError::DiskFull => StoreFailure::DiskFull,
        QueueError::Closed | QueueError::Store(_) => StoreFailure::Temporary,
    }
}

impl RelayBackend for RelayIntake {
    async fn authenticate(
        &self,
        username: &str,
        password: &SecretString,
        peer: &PeerInfo,
    ) -> Result<Option<Identity>, BackendError> {
        let proof = self.proof(username, password);
        if let Some(identity) = self.cached(username, &proof) {
            return Ok(Some(identity));
        }
        let user = self
            .store
            .verify_relay_user(username, password, Some(peer.addr.ip()))
            .await
            .map_err(|e| match e {
                StoreError::Busy(busy) => BackendError::busy(busy),
                e => BackendError::with_source("cannot check the relay user", e),
            })?;
        let Some(user) = user else { return Ok(None) };
        let identity = self.identity_for(&user).await?;
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        cache.retain(|_, c| c.until > Instant::now());
        cache.insert(
            username.to_string(),
            Cached {
                proof,
                user,
                identity: identity.clone(),
                until: Instant::now() + AUTH_CACHE_TTL,
            },
        );
        Ok(Some(identity))
    }

    async fn accept(
        &self,
        identity: Option<&Identity>,
        envelope: Envelope,
        message: Vec<u8>,
    ) -> Result<String, StoreFailure> {
        let from = envelope
            .from
            .address()
            .map(ToString::to_string)
            .unwrap_or_default();
        let (connection_id, connection_name) = match identity {
            Some(id) => match self.connection_of(&id.user) {
                Some(c) => c,
                None => {
                    let user = self
                        .store
                        .relay_user(&id.user)
                        .await
                        .map_err(|_| StoreFailure::Temporary)?;
                    (user.connection_id, user.connection)
                }
            },
            // A trusted network sends without AUTH: the connection whose mailbox is the sender.
            None => {
                let conns = self
                    .store
                    .list_connections()
                    .await
                    .map_err(|_| StoreFailure::Temporary)?;
                let conn = conns
                    .iter()
                    .find(|c| c.settings.user.as_str().eq_ignore_ascii_case(&from))
                    .ok_or_else(|| {
                        StoreFailure::Rejected(format!("no connection sends as <{from}>"))
                    })?;
                (conn.id, conn.name().to_string())
            }
        };
        let queued = self
            .outbox
            .enqueue(NewMessage {
                connection_id,
                connection_name,
                source: Source::Relay,
                submitter: identity.map(|i| i.user.clone()),
                mail_from: from,
                recipients: envelope
                    .recipients
                    .iter()
                    .map(ToString::to_string)
                    .collect(),
                body: message,
                idempotency_key: None,
            })
            .await
            .map_err(queue_failure)?;
        Ok(queued.id)
    }
}
