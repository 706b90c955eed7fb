//! What the relay needs from the rest of Postern: checking relay users, storing messages.

use std::error::Error as StdError;
use std::future::Future;

use secrecy::SecretString;

use super::config::PeerInfo;
use super::envelope::{Envelope, StoreFailure};
use super::identity::Identity;
pub use crate::outbox::arrivals::Arriving;

/// The relay's view of the store. The real implementation (relay users and the outbox) lives
/// elsewhere; tests use an in-memory one.
pub trait RelayBackend: Send + Sync + 'static {
    /// Checks a relay user's password. `Ok(None)`: wrong user or password (the client gets
    /// `535`); `Err`: the check itself failed (the client gets `454` and may retry).
    fn authenticate(
        &self,
        username: &str,
        password: &SecretString,
        peer: &PeerInfo,
    ) -> impl Future<Output = Result<Option<Identity>, BackendError>> + Send;

    /// The relay user whose networks hold the client's address (a device such as a scanner),
    /// asked once when a connection opens: the session is that user without AUTH. Must be
    /// cheap (no store query per connection). `None` for everyone else, and by default.
    fn device(&self, peer: &PeerInfo) -> impl Future<Output = Option<Identity>> + Send {
        let _ = peer;
        std::future::ready(None)
    }

    /// A message's body is on its way (`354` was sent): the store may wait a moment for it
    /// before its next commit. The token comes back with the message to
    /// [`RelayBackend::accept`], or is dropped if the message is not finished.
    fn arriving(&self) -> Arriving {
        Arriving::none()
    }

    /// Stores an accepted message durably and returns its queue id. Only then does the client
    /// get `250`, and may forget the message. `identity` is `None` for a trusted network
    /// (`server.trusted_networks`); a device's is its relay user's. `arriving`: the token from
    /// [`RelayBackend::arriving`] (none if the session never waited for the body).
    fn accept(
        &self,
        identity: Option<&Identity>,
        envelope: Envelope,
        message: Vec<u8>,
        arriving: Arriving,
    ) -> impl Future<Output = Result<String, StoreFailure>> + Send;
}

/// The backend could not answer (not the same as a wrong password).
#[derive(Debug, thiserror::Error)]
#[error("relay backend: {message}")]
pub struct BackendError {
    message: String,
    #[source]
    source: Option<Box<dyn StdError + Send + Sync>>,
    busy: bool,
}

impl BackendError {
    /// Too many checks at once: the client gets `454` and the event was logged where it was
    /// counted, so the session does not log it again (a storm would flood the log).
    pub fn busy(source: impl Into<Box<dyn StdError + Send + Sync>>) -> Self {
        Self {
            message: "too many password checks at once".into(),
            source: Some(source.into()),
            busy: true,
        }
    }

    pub fn is_busy(&self) -> bool {
        self.busy
    }

    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            source: None,
            busy: false,
        }
    }

    pub fn with_source(
        message: impl Into<String>,
        source: impl Into<Box<dyn StdError + Send + Sync>>,
    ) -> Self {
        Self {
            message: message.into(),
            source: Some(source.into()),
            busy: false,
        }
    }
}
