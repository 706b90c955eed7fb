//! The HTTPS client that talks to token and device endpoints: rustls with the ring provider and the
//! platform's trusted roots, no redirects followed, every request bounded by a timeout.

use std::sync::Arc;
use std::time::Duration;

use crate::roots::platform_roots;

/// Why the HTTP client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum HttpClientError {
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    #[error("HTTP client: {0}")]
    Build(#[from] reqwest::Error),
}

/// Builds a client for the OAuth endpoints.
///
/// The TLS configuration is handed to reqwest ready-made, so no process-wide rustls provider has
/// to be installed (reqwest is built without one) and nothing depends on start-up order.
pub fn client(timeout: Duration) -> Result<reqwest::Client, HttpClientError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(platform_roots().clone())
        .with_no_client_auth();
    let client = reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(10)))
        // A token endpoint that redirects is misconfigured; following would turn POST into GET.
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("postern/", env!("CARGO_PKG_VERSION")))
        .build()?;
    Ok(client)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_without_a_process_default_provider() {
        assert!(client(Duration::from_secs(5)).is_ok());
    }
}
