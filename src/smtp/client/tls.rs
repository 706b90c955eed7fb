//! TLS client configuration: platform roots plus an optional CA file, ring as the only provider.
//!
//! The provider is passed explicitly so nothing depends on a process-wide default.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::SystemTime;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use sha2::{Digest, Sha256};

use super::error::SmtpError;
use crate::roots::platform_roots;

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// What makes two configurations the same: the CA file as it is now (its path, modification
/// time and length, so an edited file is read again) and whether verification is on.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct ConfigKey {
    ca_file: Option<(PathBuf, Option<SystemTime>, u64)>,
    insecure: bool,
}

/// The client configuration for a CA file (or none): one per CA file and process, shared by
/// every connection and sender. 10,000 connections then hold one platform root store, not
/// 10,000, and one session-resumption cache, so reconnecting to a provider that offers
/// resumption skips the full handshake.
pub fn client_config(
    ca_file: Option<&Path>,
    insecure_skip_tls_verify: bool,
) -> Result<Arc<ClientConfig>, SmtpError> {
    static CACHE: OnceLock<Mutex<HashMap<ConfigKey, Arc<ClientConfig>>>> = OnceLock::new();
    let ca = match ca_file {
        None => None,
        // An unreadable file is not cached: building says what is wrong with it.
        Some(path) => match std::fs::metadata(path) {
            Ok(m) => Some((path.to_path_buf(), m.modified().ok(), m.len())),
            Err(_) => return build_config(ca_file, insecure_skip_tls_verify),
        },
    };
    let key = ConfigKey {
        ca_file: ca,
        insecure: insecure_skip_tls_verify,
    };
    let cache = CACHE.get_or_init(Mutex::default);
    if let Some(config) = cache.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
        return Ok(Arc::clone(config));
    }
    let config = build_config(ca_file, insecure_skip_tls_verify)?;
    let mut cache = cache.lock().unwrap_or_else(|e| e.into_inner());
    // An edited CA file replaces its older configuration.
    let path = key.ca_file.as_ref().map(|c| c.0.clone());
    cache.retain(|k, _| {
        k.insecure != key.insecure || k.ca_file.as_ref().map(|c| &c.0) != path.as_ref()
    });
    cache.insert(key, Arc::clone(&config));
    Ok(config)
}

fn build_config(
    ca_file: Option<&Path>,
    insecure_skip_tls_verify: bool,
) -> Result<Arc<ClientConfig>, SmtpError> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| SmtpError::Config(format!("TLS: {e}")))?;
    let config = if insecure_skip_tls_verify {
        tracing::warn!("TLS certificate verification is DISABLED (insecure_skip_tls_verify)");
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(
                provider.signature_verification_algorithms,
            )))
            .with_no_client_auth()
    } else {
        builder
            .with_root_certificates(root_store(ca_file)?)
            .with_no_client_auth()
    };
    Ok(Arc::new(config))
}

fn root_store(ca_file: Option<&Path>) -> Result<RootCertStore, SmtpError> {
    let mut roots = platform_roots().clone();
    if let Some(path) = ca_file {
        let bad = |e: &dyn std::fmt::Display| {
            SmtpError::Config(format!("CA file {}: {e}", path.display()))
        };
        let mut count = 0;
        for cert in CertificateDer::pem_file_iter(path).map_err(|e| bad(&e))? {
            roots.add(cert.map_err(|e| bad(&e))?).map_err(|e| bad(&e))?;
            count += 1;
        }
        if count == 0 {
            return Err(bad(&"no PEM certificate in it"));
        }
    }
    if roots.is_empty() {
        tracing::warn!("no trusted CA certificates: every server certificate will be refused");
    }
    Ok(roots)
}

/// What `connection test` prints about the TLS session.
pub fn describe_session(conn: &rustls::ClientConnection, server_name: &str) -> String {
    let mut out = String::new();
    if let Some(version) = conn.protocol_version() {
        let _ = write!(out, "{version:?}");
    }
    if let Some(suite) = conn.negotiated_cipher_suite() {
        let _ = write!(out, ", {:?}", suite.suite());
    }
    let _ = write!(out, ", server name {server_name}");
    if let Some(cert) = conn.peer_certificates().and_then(|c| c.first()) {
        if let Some((subject, issuer, not_after)) = certificate_names(cert) {
            let _ = write!(
                out,
                ", certificate subject {subject} (issuer {issuer}, valid until {not_after})"
            );
        }
        let _ = write!(out, ", SHA-256 {}", fingerprint(cert));
    }
    out
}

/// Subject, issuer and expiry of a certificate, for people reading `connection test`.
fn certificate_names(cert: &CertificateDer<'_>) -> Option<(String, String, String)> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    Some((
        parsed.subject().to_string(),
        parsed.issuer().to_string(),
        parsed.validity().not_after.to_string(),
    ))
}

/// `AB:CD:...` over the DER bytes, the form browsers and `openssl x509 -fingerprint` show.
pub fn fingerprint(cert: &CertificateDer<'_>) -> String {
    let digest = Sha256::digest(cert.as_ref());
    let mut out = String::with_capacity(digest.len() * 3);
    for (i, byte) in digest.iter().enumerate() {
        if i > 0 {
            out.push(':');
        }
        let _ = write!(out, "{byte:02X}");
    }
    out
}

pub fn server_name(host: &str) -> Result<ServerName<'static>, SmtpError> {
    ServerName::try_from(host.to_string())
        .map_err(|_| SmtpError::Config(format!("`{host}` is not a valid TLS server name")))
}

/// Accepts any certificate but still checks handshake signatures, so the session is at least
/// consistent. Reached only through `insecure_skip_tls_verify`.
#[derive(Debug)]
struct AcceptAnyCertificate(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_format() {
        let fp = fingerprint(&CertificateDer::from(vec![1, 2, 3]));
        assert_eq!(fp.len(), 32 * 3 - 1);
        assert!(fp.starts_with("03:90:58:C6:F2:C0:CB:49"), "{fp}");
    }

    #[test]
    fn a_missing_or_empty_ca_file_is_a_configuration_error() {
        let missing = client_config(Some(Path::new("/nonexistent/ca.pem")), false);
        assert!(matches!(missing, Err(SmtpError::Config(m)) if m.contains("/nonexistent/ca.pem")));
        let empty = tempfile::NamedTempFile::new().unwrap();
        let err = client_config(Some(empty.path()), false).unwrap_err();
        assert!(err.to_string().contains("no PEM certificate"), "{err}");
    }

    fn ca_pem() -> String {
        rcgen::generate_simple_self_signed(vec!["ca.test".into()])
            .unwrap()
            .cert
            .pem()
    }

    #[test]
    fn one_configuration_per_ca_file_until_the_file_changes() {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), ca_pem()).unwrap();
        let a = client_config(Some(file.path()), false).unwrap();
        let b = client_config(Some(file.path()), false).unwrap();
        assert!(
            Arc::ptr_eq(&a, &b),
            "the same file shares one configuration"
        );
        let platform = client_config(None, false).unwrap();
        assert!(!Arc::ptr_eq(&a, &platform));
        assert!(Arc::ptr_eq(&platform, &client_config(None, false).unwrap()));
        // An edited file (here: a second certificate added) is read again.
        std::fs::write(file.path(), ca_pem() + &ca_pem()).unwrap();
        let c = client_config(Some(file.path()), false).unwrap();
        assert!(!Arc::ptr_eq(&a, &c), "an edited CA file is read again");
        assert!(Arc::ptr_eq(
            &c,
            &client_config(Some(file.path()), false).unwrap()
        ));
    }
}
