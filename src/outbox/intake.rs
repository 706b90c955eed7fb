//! Mail coming in from the relay: checking relay users and queuing what they submit.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

use super::arrivals::Arriving;
use super::from_rewrite;
use super::queue::{Outbox, QueueError};
use crate::domain::FromPolicy;
use crate::smtp::server::RewriteFrom;
use crate::smtp::server::{
    AllowedFrom, BackendError, Envelope, Identity, IpNetwork, PeerInfo, RelayBackend, StoreFailure,
};
use crate::store::messages::{NewMessage, Source};
use crate::store::relay_users::RelayUser;
use crate::store::{Store, StoreError};

/// How long a successful password check is remembered (argon2 costs tens of milliseconds).
const AUTH_CACHE_TTL: Duration = Duration::from_secs(120);

/// How long the list of devices (relay users bound to networks) is used before it is read
/// again: a CLI change is seen within seconds, and a connection costs no store query.
const DEVICES_TTL: Duration = Duration::from_secs(3);

/// A relay user bound to networks, ready to be matched against a client's address.
struct Device {
    networks: Vec<IpNetwork>,
    connection_id: i64,
    connection: String,
    identity: Identity,
}

struct Devices {
    list: Vec<Device>,
    until: Instant,
}

impl Devices {
    fn find(&self, ip: IpAddr) -> Option<&Device> {
        self.list
            .iter()
            .find(|d| d.networks.iter().any(|n| n.contains(ip)))
    }
}

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
    devices: Mutex<Option<Devices>>,
    devices_reload: tokio::sync::Mutex<()>,
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
            devices: Mutex::new(None),
            devices_reload: tokio::sync::Mutex::new(()),
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

    fn device_connection(&self, user: &str) -> Option<(i64, String)> {
        let devices = self.devices.lock().unwrap_or_else(|e| e.into_inner());
        let list = devices.as_ref()?;
        list.list
            .iter()
            .find(|d| d.identity.user == user)
            .map(|d| (d.connection_id, d.connection.clone()))
    }

    /// The relay users bound to networks, read again when the list is older than
    /// [`DEVICES_TTL`]. A store failure keeps the last list (and says so).
    async fn refresh_devices(&self) {
        let fresh = || {
            let devices = self.devices.lock().unwrap_or_else(|e| e.into_inner());
            devices.as_ref().is_some_and(|d| d.until > Instant::now())
        };
        if fresh() {
            return;
        }
        // One reload at a time: connections arriving meanwhile wait for it, then use it.
        let _reloading = self.devices_reload.lock().await;
        if fresh() {
            return;
        }
        let users = match self.store.list_relay_users().await {
            Ok(users) => users,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the relay users bound to networks");
                // Keep the last list (none: no devices) and try again after the TTL.
                let mut devices = self.devices.lock().unwrap_or_else(|e| e.into_inner());
                let list = devices.take().map(|d| d.list).unwrap_or_default();
                *devices = Some(Devices {
                    list,
                    until: Instant::now() + DEVICES_TTL,
                });
                return;
            }
        };
        let mut list = Vec::new();
        for user in users.iter().filter(|u| !u.networks.is_empty()) {
            let device = async {
                let networks = user
                    .networks
                    .iter()
                    .map(|n| IpNetwork::parse(n))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| e.to_string())?;
                let identity = self.identity_for(user).await.map_err(|e| e.to_string())?;
                Ok::<_, String>(Device {
                    networks,
                    connection_id: user.connection_id,
                    connection: user.connection.clone(),
                    identity,
                })
            };
            match device.await {
                Ok(device) => list.push(device),
                Err(e) => tracing::warn!(user = %user.name, error = %e, "relay device ignored"),
            }
        }
        let mut devices = self.devices.lock().unwrap_or_else(|e| e.into_inner());
        *devices = Some(Devices {
            list,
            until: Instant::now() + DEVICES_TTL,
        });
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
        let rewrite_from = (user.from_policy == FromPolicy::Rewrite).then(|| RewriteFrom {
            mailbox: conn.settings.user.clone(),
            display_name: user.display_name.clone(),
        });
        Ok(Identity {
            user: user.name.clone(),
            allowed_from,
            rewrite_from,
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
    async fn device(&self, peer: &PeerInfo) -> Option<Identity> {
        self.refresh_devices().await;
        let devices = self.devices.lock().unwrap_or_else(|e| e.into_inner());
        let device = devices.as_ref()?.find(peer.addr.ip())?;
        Some(device.identity.clone())
    }

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

    fn arriving(&self) -> Arriving {
        self.outbox.arriving()
    }

    async fn accept(
        &self,
        identity: Option<&Identity>,
        envelope: Envelope,
        mut message: Vec<u8>,
        arriving: Arriving,
    ) -> Result<String, StoreFailure> {
        let from = envelope
            .from
            .address()
            .map(ToString::to_string)
            .unwrap_or_default();
        let (connection_id, connection_name) = match identity {
            Some(id) => match self
                .connection_of(&id.user)
                .or_else(|| self.device_connection(&id.user))
            {
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
            // A trusted network (`server.trusted_networks`, kept for compatibility) sends
            // without AUTH: the connection whose mailbox is the sender. Devices bound to
            // networks do not come here: they have an identity.
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
        let from = apply_from_policy(identity, &envelope, &mut message).unwrap_or(from);
        let queued = self
            .outbox
            .enqueue_arrived(
                NewMessage {
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
                },
                arriving,
            )
            .await
            .map_err(queue_failure)?;
        Ok(queued.id)
    }
}

/// The `rewrite` From policy, for a user that has it: rewrites the message's header block and
/// returns the new envelope sender (the mailbox) when the client's may not be used. Logs both
/// addresses, so the log still says who sent what.
fn apply_from_policy(
    identity: Option<&Identity>,
    envelope: &Envelope,
    message: &mut Vec<u8>,
) -> Option<String> {
    let identity = identity?;
    let policy = identity.rewrite_from.as_ref()?;
    let sender = envelope.from.address();
    let done = from_rewrite::rewrite(message, sender, &identity.allowed_from, policy);
    if done.changed() {
        tracing::info!(
            user = %identity.user,
            envelope_from = done.envelope.as_deref().unwrap_or("(kept)"),
            header_from = done.header.as_deref().unwrap_or("(kept)"),
            sent_as = %policy.mailbox,
            "relay rewrote the sender (from policy `rewrite`)"
        );
    }
    done.envelope.map(|_| policy.mailbox.to_string())
}
