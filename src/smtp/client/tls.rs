//! TLS client configuration: platform roots plus an optional CA file, ring as the only provider.
//!
//! The provider is passed explicitly so nothing depends on a process-wide default.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use sha2::{Digest, Sha256};

use super::error::SmtpError;

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Builds the client configuration once per [`SmtpClient`](super::SmtpClient): reading the
/// platform roots takes milliseconds, too slow for every connection.
pub fn client_config(
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
    let mut roots = RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for error in &native.errors {
        tracing::warn!(%error, "could not load some platform CA certificates");
    }
    let (added, ignored) = roots.add_parsable_certificates(native.certs);
    tracing::debug!(added, ignored, "platform CA certificates");
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
}
