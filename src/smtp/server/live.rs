//! What a reload may change in running relay listeners: the certificate new TLS handshakes
//! present, and the policy new sessions start with (limits, networks). Sessions in progress
//! keep what they started with.

use std::path::Path;
use std::sync::{Arc, RwLock};

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio_rustls::TlsAcceptor;

use super::config::SessionConfig;
use super::listener::ListenerConfig;
use super::tls::{self, TlsSetupError};

/// The relay's certificate and key, replaceable while listeners run. The acceptors built from
/// it ask for the current pair at every handshake.
#[derive(Debug, Clone)]
pub struct LiveCert {
    current: Arc<RwLock<Arc<CertifiedKey>>>,
}

impl LiveCert {
    /// Loads a PEM certificate chain and its private key; an error says which file is wrong,
    /// or that the key is not the certificate's.
    pub fn from_pem_files(cert: &Path, key: &Path) -> Result<Self, TlsSetupError> {
        Ok(Self {
            current: Arc::new(RwLock::new(Arc::new(tls::certified_key(cert, key)?))),
        })
    }

    /// Swaps in a new pair for the handshakes to come; on error the current one stays.
    pub fn replace(&self, cert: &Path, key: &Path) -> Result<(), TlsSetupError> {
        self.set(tls::certified_key(cert, key)?);
        Ok(())
    }

    /// Swaps in a pair already loaded (with [`tls::certified_key`]).
    pub fn set(&self, key: CertifiedKey) {
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(key);
    }

    /// SHA-256 of the certificate now served, `AB:CD:…`, for the log.
    pub fn fingerprint(&self) -> String {
        let current = self.current.read().unwrap_or_else(|e| e.into_inner());
        tls::fingerprint(&current.cert[0])
    }

    /// A TLS acceptor that always presents the current pair.
    pub fn acceptor(&self) -> Result<TlsAcceptor, TlsSetupError> {
        Ok(TlsAcceptor::from(tls::server_config_with(Arc::new(
            self.clone(),
        ))?))
    }
}

impl ResolvesServerCert for LiveCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(
            &self.current.read().unwrap_or_else(|e| e.into_inner()),
        ))
    }
}

/// What a session starts from: the listener's policy and the session settings made from it.
#[derive(Debug)]
pub(crate) struct Policy {
    pub config: ListenerConfig,
    pub session: Arc<SessionConfig>,
}

/// A listener's policy, replaceable while it runs. Timeouts, the memory budget and the session
/// limit are read once when the listener starts (they size shared structures): a reload of
/// those needs a restart.
#[derive(Debug, Clone)]
pub struct LiveConfig {
    current: Arc<RwLock<Arc<Policy>>>,
}

impl LiveConfig {
    pub(crate) fn new(config: ListenerConfig, starttls_available: bool) -> Self {
        let session = Arc::new(config.session_config(starttls_available));
        Self {
            current: Arc::new(RwLock::new(Arc::new(Policy { config, session }))),
        }
    }

    /// New sessions use `config` (with the listener's own TLS mode, which does not change).
    pub fn replace(&self, config: ListenerConfig) {
        let mut current = self.current.write().unwrap_or_else(|e| e.into_inner());
        let session = Arc::new(config.session_config(current.session.starttls_available));
        *current = Arc::new(Policy { config, session });
    }

    pub(crate) fn get(&self) -> Arc<Policy> {
        Arc::clone(&self.current.read().unwrap_or_else(|e| e.into_inner()))
    }
}
