//! A throw-away test CA (rcgen) and the rustls configs built on it (ring provider, never the default).

use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
use rustls::crypto::ring;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::Error;

/// A CA generated at start-up; it signs the fake servers' certificates.
/// Clients trust it through [`ca_pem`](Self::ca_pem) or [`client_config`](Self::client_config).
pub struct TestCa {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl std::fmt::Debug for TestCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCa").finish_non_exhaustive()
    }
}

impl TestCa {
    /// Generate a new CA key and self-signed certificate (ECDSA P-256).
    pub fn generate() -> Result<Self, Error> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "Fake Provider Test CA");
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        Ok(Self { cert, key })
    }

    /// The CA certificate, PEM.
    pub fn ca_pem(&self) -> String {
        self.cert.pem()
    }

    /// The CA certificate, DER.
    pub fn ca_der(&self) -> CertificateDer<'static> {
        self.cert.der().clone()
    }

    /// A rustls server config with a fresh leaf certificate for `names` (DNS names or IPs).
    pub fn server_config(&self, names: &[String]) -> Result<Arc<rustls::ServerConfig>, Error> {
        let mut params = CertificateParams::new(names.to_vec())?;
        params
            .distinguished_name
            .push(DnType::CommonName, names.first().map_or("fake", |n| n));
        let key = KeyPair::generate()?;
        let leaf = params.signed_by(&key, &self.cert, &self.key)?;
        let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let config =
            rustls::ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
                .with_safe_default_protocol_versions()?
                .with_no_client_auth()
                .with_single_cert(vec![leaf.der().clone()], key_der)?;
        Ok(Arc::new(config))
    }

    /// A rustls client config that trusts only this CA (for tests' hand-written clients).
    pub fn client_config(&self) -> Result<Arc<rustls::ClientConfig>, Error> {
        client_config_for(self.ca_der())
    }
}

/// A rustls client config (ring provider) trusting exactly `ca`.
pub fn client_config_for(ca: CertificateDer<'static>) -> Result<Arc<rustls::ClientConfig>, Error> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca)?;
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}
