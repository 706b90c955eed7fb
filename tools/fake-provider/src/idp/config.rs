//! How a [`FakeIdp`](super::FakeIdp) behaves: registered clients, lifetimes, latency, device flow.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

/// Client id registered by [`IdpConfig::default`].
pub const DEFAULT_CLIENT_ID: &str = "00000000-0000-4000-8000-00000000c1d0";
/// Secret of [`DEFAULT_CLIENT_ID`].
pub const DEFAULT_CLIENT_SECRET: &str = "fake~client~secret";
/// Mailbox user who "consents" when the authorize request carries no `login_hint`.
pub const DEFAULT_USER: &str = "user@contoso.example";
/// Tenant GUID put in `tid` when the path names `common`/`organizations`/a domain.
pub const DEFAULT_TENANT_ID: &str = "11111111-2222-4333-8444-555555555555";

/// Which redirect URIs a client may use at the authorize and token endpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedirectPolicy {
    /// No check at all.
    Any,
    /// `http://localhost`, `http://127.0.0.1` or `http://[::1]`, any port and path
    /// (Entra ignores the port of a localhost redirect; RFC 8252 §7.3).
    AnyLoopback,
    /// Only these exact URIs.
    Exact(Vec<String>),
}

impl RedirectPolicy {
    /// Whether `uri` is acceptable under this policy.
    pub fn allows(&self, uri: &str) -> bool {
        match self {
            RedirectPolicy::Any => true,
            RedirectPolicy::Exact(list) => list.iter().any(|u| u == uri),
            RedirectPolicy::AnyLoopback => url::Url::parse(uri).is_ok_and(|u| {
                u.scheme() == "http"
                    && matches!(u.host_str(), Some("localhost" | "127.0.0.1" | "[::1]"))
            }),
        }
    }
}

/// An app registration: client id, optional secret (confidential client), redirect URIs.
#[derive(Clone)]
pub struct ClientRegistration {
    /// Application (client) id.
    pub client_id: String,
    /// Client secret; `None` makes a public client (no secret checked).
    pub secret: Option<String>,
    /// Allowed redirect URIs.
    pub redirects: RedirectPolicy,
}

impl ClientRegistration {
    /// A confidential client with a secret, any loopback redirect.
    pub fn confidential(client_id: impl Into<String>, secret: impl Into<String>) -> Self {
        Self {
            client_id: client_id.into(),
            secret: Some(secret.into()),
            redirects: RedirectPolicy::AnyLoopback,
        }
    }

    /// A public client (no secret), any loopback redirect.
    pub fn public(client_id: impl Into<String>) -> Self {
        Self {
            client_id: client_id.into(),
            secret: None,
            redirects: RedirectPolicy::AnyLoopback,
        }
    }

    /// Replace the redirect policy.
    pub fn with_redirects(mut self, redirects: RedirectPolicy) -> Self {
        self.redirects = redirects;
        self
    }
}

// The secret is fake, but Debug output ends up in test logs: keep the habit of hiding it.
impl fmt::Debug for ClientRegistration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientRegistration")
            .field("client_id", &self.client_id)
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("redirects", &self.redirects)
            .finish()
    }
}

/// Configuration of a [`FakeIdp`](super::FakeIdp). Start from `Default` and change fields.
#[derive(Debug, Clone)]
pub struct IdpConfig {
    /// Address to bind; default `127.0.0.1:0`.
    pub listen: SocketAddr,
    /// Registered clients; default: one confidential client ([`DEFAULT_CLIENT_ID`]).
    pub clients: Vec<ClientRegistration>,
    /// User who consents when there is no `login_hint`, and who approves device codes.
    pub default_user: String,
    /// `tid` claim when the tenant in the path is not a GUID.
    pub tenant_id: String,
    /// Access token lifetime in seconds (default 3600); changeable later with `set_expires_in`.
    pub expires_in: u64,
    /// Send `expires_in`/`ext_expires_in` as JSON strings, as some providers do.
    pub expires_in_as_string: bool,
    /// Delay added to every request before it is answered (changeable with `set_latency`).
    pub latency: Duration,
    /// Device flow: `interval` returned by the devicecode endpoint (seconds, default 5).
    pub device_interval: u64,
    /// Device flow: lifetime of a device code in seconds (default 900).
    pub device_expires_in: u64,
    /// Device flow: approve automatically (as `default_user`) after this many pending polls.
    pub auto_approve_after_polls: Option<u32>,
    /// `roles` claim of app-only (client credentials) tokens.
    pub app_roles: Vec<String>,
    /// Like Microsoft, issue a refresh token only when `offline_access` was requested (default true).
    pub refresh_requires_offline_access: bool,
}

impl Default for IdpConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            clients: vec![ClientRegistration::confidential(
                DEFAULT_CLIENT_ID,
                DEFAULT_CLIENT_SECRET,
            )],
            default_user: DEFAULT_USER.to_owned(),
            tenant_id: DEFAULT_TENANT_ID.to_owned(),
            expires_in: 3600,
            expires_in_as_string: false,
            latency: Duration::ZERO,
            device_interval: 5,
            device_expires_in: 900,
            auto_approve_after_polls: None,
            app_roles: vec!["SMTP.SendAsApp".to_owned()],
            refresh_requires_offline_access: true,
        }
    }
}

impl IdpConfig {
    /// Replace the registered clients with exactly this one.
    pub fn with_client(mut self, client: ClientRegistration) -> Self {
        self.clients = vec![client];
        self
    }

    /// Look a client up by id.
    pub(crate) fn client(&self, client_id: &str) -> Option<&ClientRegistration> {
        self.clients.iter().find(|c| c.client_id == client_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_policy() {
        let p = RedirectPolicy::AnyLoopback;
        assert!(p.allows("http://localhost:53123/callback"));
        assert!(p.allows("http://127.0.0.1/"));
        assert!(!p.allows("https://localhost/"));
        assert!(!p.allows("http://evil.example/"));
    }
}
