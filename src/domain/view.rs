//! The public face of a connection: what `show --json`, `list --json` and the HTTP API return.
//! Secrets appear only as `set` / `not set`.

use serde::Serialize;

use super::{Connection, Limits};

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ConnectionView {
    pub name: String,
    pub display_name: Option<String>,
    pub provider: String,
    pub flow: String,
    pub host: String,
    pub port: u16,
    pub tls: String,
    pub domain: String,
    pub user: String,
    pub tenant: Option<String>,
    pub client_id: String,
    pub scope: String,
    pub redirect_uri: Option<String>,
    pub authorize_url: Option<String>,
    pub token_url: Option<String>,
    pub device_url: Option<String>,
    pub ca_file: Option<String>,
    pub enabled: bool,
    pub max_concurrent: u32,
    /// The sending limits in force (0: none).
    pub limits: Limits,
    /// Which of them this connection overrides (`name=N,…`; empty: all from the preset).
    pub limit_overrides: String,
    /// `smtp` or `graph`.
    pub transport: String,
    /// The Microsoft Graph base URL in force (Graph connections and SMTP ones falling back to
    /// Graph; `None` for other SMTP ones).
    pub graph_url: Option<String>,
    /// `graph` when an SMTP connection delivers through Graph once SMTP AUTH answers
    /// `535 5.7.139`; `None`: no fallback.
    pub fallback: Option<String>,
    /// `fail` or `draft`: what Graph does with a message over its 4 MB limit.
    pub graph_large: String,
    /// `new`, `authorized`, `needs-reauthorization` or `disabled`.
    pub status: String,
    pub status_reason: Option<String>,
    /// `set` or `not set`.
    pub client_secret: &'static str,
    /// `set` or `not set`.
    pub refresh_token: &'static str,
    pub created_at: String,
    pub updated_at: String,
    /// The client secret's expiry date (`YYYY-MM-DD`), if the admin entered it.
    pub secret_expires: Option<String>,
    /// When the current refresh token was obtained (RFC 3339).
    pub refresh_token_obtained_at: Option<String>,
    /// When the cached access token expires (RFC 3339).
    pub access_token_expires_at: Option<String>,
    /// The last time a token was obtained (RFC 3339).
    pub last_used_at: Option<String>,
}

fn set(b: bool) -> &'static str {
    if b { "set" } else { "not set" }
}

impl From<&Connection> for ConnectionView {
    fn from(c: &Connection) -> Self {
        let s = &c.settings;
        let status = c.effective_status();
        Self {
            name: s.name.to_string(),
            display_name: s.display_name.clone(),
            provider: s.provider.to_string(),
            flow: s.flow.to_string(),
            host: s.host.to_string(),
            port: s.port.get(),
            tls: s.tls.to_string(),
            domain: s.domain.to_string(),
            user: s.user.to_string(),
            tenant: s.tenant.as_ref().map(ToString::to_string),
            client_id: s.client_id.to_string(),
            scope: s.scopes.to_string(),
            redirect_uri: s.redirect_uri.as_ref().map(ToString::to_string),
            authorize_url: s.authorize_endpoint().map(String::from),
            token_url: s.token_endpoint().map(String::from),
            device_url: s.device_endpoint().map(String::from),
            ca_file: s.ca_file.as_ref().map(|p| p.display().to_string()),
            enabled: s.enabled,
            max_concurrent: s.max_concurrent,
            limits: c.limits(),
            limit_overrides: s.limits.to_string(),
            transport: s.transport.to_string(),
            graph_url: s
                .uses_graph()
                .then(|| s.graph_base().as_str().trim_end_matches('/').to_string()),
            fallback: s.fallback.map(|f| f.to_string()),
            graph_large: s.graph_large.to_string(),
            status: status.as_str().to_string(),
            status_reason: c.status.reason().map(str::to_string),
            client_secret: set(c.client_secret_set),
            refresh_token: set(c.refresh_token_set),
            created_at: c.created_at.to_rfc3339(),
            updated_at: c.updated_at.to_rfc3339(),
            secret_expires: c.expiry.secret_expires.map(|d| d.to_string()),
            refresh_token_obtained_at: c.expiry.refresh_obtained_at.map(|t| t.to_rfc3339()),
            access_token_expires_at: c.expiry.access_expires_at.map(|t| t.to_rfc3339()),
            last_used_at: c.expiry.last_used_at.map(|t| t.to_rfc3339()),
        }
    }
}
