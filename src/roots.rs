//! The platform's trusted CA certificates, read once per process: reading them parses a few
//! hundred certificates, and every TLS client (token endpoints, providers' SMTP) needs them.

use std::sync::OnceLock;

use rustls::RootCertStore;

/// The platform roots (`ca-certificates` on Debian); empty, with a warning, when there are none.
pub fn platform_roots() -> &'static RootCertStore {
    static ROOTS: OnceLock<RootCertStore> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let loaded = rustls_native_certs::load_native_certs();
        for e in &loaded.errors {
            tracing::warn!(error = %e, "could not read some of the platform's CA certificates");
        }
        let mut roots = RootCertStore::empty();
        let (added, ignored) = roots.add_parsable_certificates(loaded.certs);
        tracing::debug!(added, ignored, "platform CA certificates");
        if added == 0 {
            tracing::warn!(
                "no trusted CA certificates found on this system (install ca-certificates): \
                 servers' certificates cannot be verified"
            );
        }
        roots
    })
}
