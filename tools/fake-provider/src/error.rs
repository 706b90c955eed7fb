//! The one error type of the crate: starting a fake server can only fail on sockets or certificates.

/// Why a fake server could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Binding or inspecting a listening socket failed.
    #[error("socket error: {0}")]
    Io(#[from] std::io::Error),
    /// rcgen could not generate the test CA or server certificate.
    #[error("certificate generation failed: {0}")]
    Cert(#[from] rcgen::Error),
    /// rustls refused the generated key or certificate.
    #[error("TLS configuration failed: {0}")]
    Tls(#[from] rustls::Error),
}
