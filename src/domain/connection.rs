//! The SMTP OAuth connection record, with the fields admins know from vendor guides.

use std::fmt;
use std::path::PathBuf;

use super::{
    ClientId, ConnectionName, EmailAddress, Fallback, GraphLarge, Host, LimitOverrides, Limits,
    OAuthFlow, Port, Provider, RedirectUri, ScopeList, Tenant, TlsMode, Transport,
};

/// A validated connection's settings (no secrets: those live sealed in the store).
#[derive(Debug, Clone, PartialEq)]
pub struct ConnectionSettings {
    pub name: ConnectionName,
    pub display_name: Option<String>,
    pub provider: Provider,
    pub flow: OAuthFlow,
    pub host: Host,
    pub port: Port,
    pub tls: TlsMode,
    /// The domain Postern names in EHLO; defaults to the mailbox's domain.
    pub domain: Host,
    /// The mailbox that authenticates (the form's "User Name").
    pub user: EmailAddress,
    pub tenant: Option<Tenant>,
    pub client_id: ClientId,
    pub scopes: ScopeList,
    pub redirect_uri: Option<RedirectUri>,
    pub authorize_url: Option<url::Url>,
    pub token_url: Option<url::Url>,
    pub device_url: Option<url::Url>,
    pub ca_file: Option<PathBuf>,
    pub enabled: bool,
    /// Upstream SMTP connections at once for this mailbox.
    pub max_concurrent: u32,
    /// Overrides of the provider's sending limits.
    pub limits: LimitOverrides,
    /// How mail leaves: SMTP (default) or Microsoft Graph.
    pub transport: Transport,
    /// The Graph base URL set for this connection (`None`: the provider cloud's Graph).
    pub graph_url: Option<url::Url>,
    /// SMTP connections: deliver through Graph when SMTP AUTH answers `535 5.7.139`.
    pub fallback: Option<Fallback>,
    /// Graph messages over 4 MB: fail (default) or go as a draft plus upload sessions.
    pub graph_large: GraphLarge,
}

/// Where a connection stands, as shown to the admin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectionStatus {
    New,
    Authorized,
    NeedsReauthorization { reason: String },
    Disabled,
}

impl ConnectionStatus {
    pub fn as_str(&self) -> &'static str {
        match self {
            ConnectionStatus::New => "new",
            ConnectionStatus::Authorized => "authorized",
            ConnectionStatus::NeedsReauthorization { .. } => "needs-reauthorization",
            ConnectionStatus::Disabled => "disabled",
        }
    }

    pub fn reason(&self) -> Option<&str> {
        match self {
            ConnectionStatus::NeedsReauthorization { reason } => Some(reason),
            _ => None,
        }
    }

    pub fn from_parts(status: &str, reason: Option<String>) -> Self {
        match status {
            "authorized" => ConnectionStatus::Authorized,
            "needs-reauthorization" => ConnectionStatus::NeedsReauthorization {
                reason: reason.unwrap_or_default(),
            },
            "disabled" => ConnectionStatus::Disabled,
            _ => ConnectionStatus::New,
        }
    }
}

impl fmt::Display for ConnectionStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectionStatus::NeedsReauthorization { reason } => {
                write!(f, "needs-reauthorization ({reason})")
            }
            other => f.write_str(other.as_str()),
        }
    }
}

/// A stored connection.
#[derive(Debug, Clone, PartialEq)]
pub struct Connection {
    pub id: i64,
    pub settings: ConnectionSettings,
    /// `Disabled` is shown when `enabled` is false, whatever the token state.
    pub status: ConnectionStatus,
    pub client_secret_set: bool,
    pub refresh_token_set: bool,
    /// Declared in postern.toml (`[[connections]]`): changed there, never by the CLI, API or UI.
    pub managed_by_file: bool,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub updated_at: chrono::DateTime<chrono::Utc>,
    pub expiry: Expiry,
}

/// A `--secret-expires` value: `YYYY-MM-DD`, or `none` to clear it.
pub fn parse_expiry_date(text: &str) -> Result<Option<chrono::NaiveDate>, String> {
    let t = text.trim();
    if t.eq_ignore_ascii_case("none") || t.is_empty() {
        return Ok(None);
    }
    chrono::NaiveDate::parse_from_str(t, "%Y-%m-%d")
        .map(Some)
        .map_err(|_| {
            format!(
                "`{t}` is not a date: write the secret's expiry as YYYY-MM-DD (the Azure portal shows it \
                 beside the secret under Certificates & secrets), or `none` to clear it"
            )
        })
}

/// What runs out, and when: the dates an admin must act before (secret) or that show a
/// connection going stale (refresh token age, last use).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Expiry {
    /// The client secret's expiry date, as entered by the admin (the Azure portal shows it).
    pub secret_expires: Option<chrono::NaiveDate>,
    /// When the current refresh token was obtained (Microsoft rotates it on every refresh,
    /// so this is also its idle age).
    pub refresh_obtained_at: Option<chrono::DateTime<chrono::Utc>>,
    /// When the cached access token runs out.
    pub access_expires_at: Option<chrono::DateTime<chrono::Utc>>,
    /// The last time a token was obtained for this connection.
    pub last_used_at: Option<chrono::DateTime<chrono::Utc>>,
}

impl Connection {
    /// The sending limits in force: the provider's presets with this connection's overrides.
    pub fn limits(&self) -> Limits {
        self.settings
            .limits
            .effective(self.settings.provider.preset().limits)
    }

    pub fn name(&self) -> &ConnectionName {
        &self.settings.name
    }

    /// What to show: disabled wins over the token state.
    pub fn effective_status(&self) -> ConnectionStatus {
        if !self.settings.enabled {
            ConnectionStatus::Disabled
        } else {
            self.status.clone()
        }
    }
}

impl ConnectionSettings {
    /// Whether Graph is in use: as the transport, or as the fallback of an SMTP connection.
    pub fn uses_graph(&self) -> bool {
        self.transport == Transport::Graph || self.fallback == Some(Fallback::Graph)
    }

    /// The Graph base URL in force: the one set, else the provider cloud's.
    pub fn graph_base(&self) -> url::Url {
        self.graph_url.clone().unwrap_or_else(|| {
            let base = self
                .provider
                .graph_resource()
                .unwrap_or(super::DEFAULT_GRAPH_URL);
            url::Url::parse(base).expect("the Graph presets are URLs")
        })
    }

    fn fill(&self, template: &str) -> Option<url::Url> {
        let tenant = self.tenant.as_ref().map(Tenant::as_str).unwrap_or("common");
        url::Url::parse(&template.replace("{tenant}", tenant)).ok()
    }

    pub fn authorize_endpoint(&self) -> Option<url::Url> {
        self.authorize_url.clone().or_else(|| {
            self.provider
                .preset()
                .authorize_url
                .and_then(|t| self.fill(t))
        })
    }

    pub fn token_endpoint(&self) -> Option<url::Url> {
        self.token_url
            .clone()
            .or_else(|| self.provider.preset().token_url.and_then(|t| self.fill(t)))
    }

    pub fn device_endpoint(&self) -> Option<url::Url> {
        self.device_url
            .clone()
            .or_else(|| self.provider.preset().device_url.and_then(|t| self.fill(t)))
    }
}
