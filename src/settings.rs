//! Typed settings: built-in defaults < `postern.toml` < `POSTERN_SECTION__KEY` environment < flags.
//!
//! Every layer is merged as a TOML table while remembering where each key came from, then the
//! result is deserialized once; a bad value stops start-up naming the key, its origin and the reason.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// All of Postern's settings. Keys mirror the command-line flags.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    pub store: StoreSettings,
    pub log: LogSettings,
    pub server: ServerSettings,
    pub tokens: TokenSettings,
    pub delivery: DeliverySettings,
    pub notifications: crate::notify::NotificationSettings,
    pub retention: RetentionSettings,
    /// Connections declared in the file (`[[connections]]`), kept in the store as written here.
    pub connections: Vec<DeclaredConnection>,
}

/// A `[[connections]]` entry: the fields of `connection add`. The client secret is named by a
/// file or an environment variable, never written here.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DeclaredConnection {
    /// The connection's name (`contoso`).
    pub name: String,
    pub display_name: Option<String>,
    /// microsoft, outlook, google, custom…
    pub provider: Option<String>,
    /// authorization-code or client-credentials.
    pub flow: Option<String>,
    pub host: Option<String>,
    pub port: Option<u16>,
    /// starttls or implicit.
    pub tls: Option<String>,
    pub domain: Option<String>,
    /// The mailbox (`ops@contoso.com`).
    pub user: Option<String>,
    pub tenant: Option<String>,
    pub client_id: Option<String>,
    pub scope: Option<String>,
    pub redirect_uri: Option<String>,
    pub authorize_url: Option<String>,
    pub token_url: Option<String>,
    pub device_url: Option<String>,
    pub ca_file: Option<String>,
    pub enabled: Option<bool>,
    pub max_concurrent: Option<u32>,
    /// Overrides of the provider's sending limits: `"messages-per-minute=10,recipients-per-day=5000"`.
    pub limits: Option<String>,
    /// `smtp` (default) or `graph` (Microsoft Graph sendMail).
    pub transport: Option<String>,
    /// The Microsoft Graph base URL (default: the provider cloud's).
    pub graph_url: Option<String>,
    /// `graph`: an SMTP connection delivers through Microsoft Graph when SMTP AUTH answers
    /// `535 5.7.139`; `none` (default): no fallback.
    pub fallback: Option<String>,
    /// `fail` (default): a Graph message over 4 MB fails with the reason; `draft`: it goes as a
    /// draft plus attachment upload sessions (needs `Mail.ReadWrite`).
    pub graph_large: Option<String>,
    /// A file holding the client secret (mode 0600).
    pub client_secret_file: Option<PathBuf>,
    /// An environment variable holding the client secret.
    pub client_secret_env: Option<String>,
    /// Refused: present only to say so clearly instead of "unknown field".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<toml::Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionSettings {
    /// Delete finished messages (sent or failed) from the sent-mail log, with their recipient
    /// results and attempts, this many days after they finished; 0 keeps them forever. Mail not
    /// yet finished (queued, deferred, held) is never deleted; failed mail keeps its content
    /// until then, so it can be sent again.
    pub log_days: u32,
}

impl Default for RetentionSettings {
    fn default() -> Self {
        Self { log_days: 90 }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct StoreSettings {
    /// Holds the SQLite database and, by default, the secret key file.
    pub data_dir: PathBuf,
    /// The data key file (default `<data_dir>/secret.key`); `POSTERN_SECRET_KEY` wins over it.
    pub key_file: Option<PathBuf>,
    /// `postgres://…`: the PostgreSQL store shared by several instances. Absent: SQLite in
    /// `data_dir`. The key stays per deployment (every instance needs the same one).
    pub url: Option<String>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LogSettings {
    /// `text` or `json`.
    pub format: LogFormat,
    /// A tracing filter such as `info` or `postern=debug`.
    pub level: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSettings {
    /// The relay's submission listener (STARTTLS offered).
    pub smtp_listen: SocketAddr,
    /// An optional implicit-TLS listener (like port 465).
    pub smtps_listen: Option<SocketAddr>,
    /// An optional listener without any TLS, for devices whose TLS is missing or too old
    /// (TLS 1.0/1.1). AUTH without TLS is allowed there only from `plain_networks`.
    pub plain_listen: Option<SocketAddr>,
    /// Networks (CIDR) allowed to AUTH without TLS on `plain_listen`: their passwords cross
    /// the network in clear, so list only LAN segments you control. Required with `plain_listen`.
    pub plain_networks: Vec<String>,
    /// The HTTP API, admin UI, `/healthz` and `/metrics`.
    pub http_listen: SocketAddr,
    /// PEM certificate chain for the relay's TLS; without it a self-signed one is generated.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key matching `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// Allow AUTH without TLS from non-loopback clients (dangerous: passwords in clear).
    pub allow_cleartext_auth: bool,
    /// Treat loopback clients as local: AUTH without TLS allowed. Turn off when a proxy or
    /// tunnel on this host forwards remote clients, which then all look like loopback.
    pub cleartext_auth_on_loopback: bool,
    /// Networks (CIDR) whose clients may send without AUTH. Empty: nobody (never an open relay).
    /// Kept for compatibility: bind a network to a relay user instead
    /// (`relay-user add NAME --connection C --network CIDR`).
    pub trusted_networks: Vec<String>,
    /// Networks (CIDR) whose clients may end lines and messages with a bare LF (`LF.LF`) and
    /// AUTH after HELO, for devices that cannot do better. Empty: everyone else must end a
    /// message with `CRLF.CRLF` (no SMTP smuggling). Devices bound to networks are lenient anyway.
    pub bare_lf_networks: Vec<String>,
    /// Largest message accepted, in bytes (announced with SIZE).
    pub max_message_size: u64,
    /// Bytes of relay message content that all sessions together may hold in memory. A
    /// message that finds it used up waits a few seconds, then gets `452 4.3.1`.
    pub message_memory_budget: u64,
    /// Most recipients in one message.
    pub max_recipients: u32,
    /// Most simultaneous relay sessions; more get `421 4.7.0`.
    pub max_connections: u32,
    /// argon2id password checks (relay AUTH, admin login) running at once; 0: one per two
    /// cores (at least one), so that a storm of guesses leaves CPU for mail.
    /// One that cannot start within a second is refused (`454 4.7.0`, HTTP `503`).
    pub max_password_checks: u32,
    /// This instance's name in `/metrics` (`postern_instance_info`); empty: the host name.
    pub instance: String,
    /// The name the relay gives in its greeting and Received headers.
    pub hostname: String,
    /// Add a `Received:` header to relayed messages.
    pub received_header: bool,
    /// Seconds that running sessions and deliveries get to finish on shutdown.
    pub shutdown_grace_secs: u64,
    /// The URL admins reach the web UI at, when behind a proxy (`https://postern.example.com`):
    /// the OAuth redirect URI for Connect is built from it. Without it, from the request.
    pub public_url: Option<String>,
    /// Most simultaneous HTTP connections; more get an immediate `503` and are closed.
    pub http_max_connections: u32,
    /// Longest an HTTP request may take, body upload included; slower ones get `408`.
    pub http_request_timeout_secs: u64,
    /// Close an HTTP connection that sends and receives nothing for this many seconds (slow or
    /// silent clients; keep it above the request timeout).
    pub http_idle_timeout_secs: u64,
    /// Bytes of memory that `POST /api/v1/messages` submissions being received and composed may
    /// hold at once (each reserves a few times its size). A submission that finds it used up
    /// waits up to two seconds, then gets `503` with `Retry-After`.
    pub http_message_memory_budget: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TokenSettings {
    /// Refresh an access token when it has less than this many seconds left.
    pub refresh_margin_secs: u64,
    /// Refresh idle authorized connections at least this often, so refresh tokens never age out.
    pub keepalive_days: u64,
    /// Seconds to wait for the token endpoint.
    pub http_timeout_secs: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DeliverySettings {
    /// First retry delay after a temporary failure.
    pub first_retry_secs: u64,
    /// Longest delay between retries.
    pub max_retry_secs: u64,
    /// Give up (status `failed`) after a message has waited this long.
    pub max_queue_lifetime_hours: u64,
    /// Optional cap on messages per minute per connection (0: none).
    pub messages_per_minute: u32,
    /// Upstream SMTP sessions open at once across all connections. When connections with due
    /// mail wait for one, busy connections give theirs up batch by batch, in turn.
    pub max_sessions: u32,
    /// How long a claim on a message lasts before another worker may take it over (the
    /// claimer died). Senders renew their claims every third of it while they work, so a long
    /// send keeps its messages. Matters with several instances on one PostgreSQL store; a
    /// single SQLite instance returns its claims at restart.
    pub lease_secs: u64,
    /// Skip certificate verification of provider SMTP servers. For tests only.
    pub insecure_skip_tls_verify: bool,
}

impl Default for StoreSettings {
    fn default() -> Self {
        StoreSettings {
            data_dir: PathBuf::from("./postern-data"),
            key_file: None,
            url: None,
        }
    }
}

impl Default for LogSettings {
    fn default() -> Self {
        LogSettings {
            format: LogFormat::Text,
            level: "info".into(),
        }
    }
}

impl Default for TokenSettings {
    fn default() -> Self {
        TokenSettings {
            refresh_margin_secs: 300,
            keepalive_days: 7,
            http_timeout_secs: 30,
        }
    }
}

impl Default for DeliverySettings {
    fn default() -> Self {
        DeliverySettings {
            first_retry_secs: 60,
            max_retry_secs: 3600,
            max_queue_lifetime_hours: 120,
            messages_per_minute: 0,
            max_sessions: 256,
            lease_secs: 60,
            insecure_skip_tls_verify: false,
        }
    }
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            smtp_listen: ([127, 0, 0, 1], 2525).into(),
            smtps_listen: None,
            plain_listen: None,
            plain_networks: Vec::new(),
            http_listen: ([127, 0, 0, 1], 8025).into(),
            tls_cert: None,
            tls_key: None,
            allow_cleartext_auth: false,
            cleartext_auth_on_loopback: true,
            trusted_networks: Vec::new(),
            bare_lf_networks: Vec::new(),
            max_message_size: 35 * 1024 * 1024,
            message_memory_budget: 256 * 1024 * 1024,
            max_recipients: 100,
            max_connections: 2048,
            max_password_checks: 0,
            instance: String::new(),
            hostname: "localhost".into(),
            received_header: true,
            shutdown_grace_secs: 30,
            public_url: None,
            http_max_connections: 1024,
            http_request_timeout_secs: 60,
            http_idle_timeout_secs: 75,
            http_message_memory_budget: 256 * 1024 * 1024,
        }
    }
}

/// Where a setting's value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    Default,
    File(PathBuf),
    Env(String),
    Flag(String),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Default => f.write_str("the built-in default"),
            Origin::File(p) => write!(f, "{}", p.display()),
            Origin::Env(v) => write!(f, "environment variable {v}"),
            Origin::Flag(v) => write!(f, "command-line flag {v}"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("cannot read settings file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("settings file {path} is not valid TOML: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("setting `{key}` (from {origin}): {message}")]
    Invalid {
        key: String,
        origin: Origin,
        message: String,
    },
}

/// Collects the layers, then builds [`Settings`].
#[derive(Debug, Default)]
pub struct Loader {
    table: toml::Table,
    /// `[[connections]]` of the file, an array of tables.
    connections: Option<Vec<toml::Value>>,
    origins: BTreeMap<String, Origin>,
}

impl Loader {
    pub fn new() -> Self {
        Self::default()
    }

    fn set(&mut self, section: &str, key: &str, value: toml::Value, origin: Origin) {
        let entry = self
            .table
            .entry(section.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        match entry {
            toml::Value::Table(t) => {
                t.insert(key.to_string(), value);
            }
            other => {
                *other = toml::Value::Table(toml::Table::from_iter([(key.to_string(), value)]))
            }
        }
        self.origins.insert(format!("{section}.{key}"), origin);
    }

    /// Reads `path`; with `required` false a missing file is skipped.
    pub fn file(mut self, path: &Path, required: bool) -> Result<Self, SettingsError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => return Ok(self),
            Err(source) => {
                return Err(SettingsError::Read {
                    path: path.to_path_buf(),
                    source,
                });
            }
        };
        let table: toml::Table =
            text.parse()
                .map_err(|e: toml::de::Error| SettingsError::Syntax {
                    path: path.to_path_buf(),
                    message: e.message().to_string(),
                })?;
        for (section, value) in table {
            let origin = Origin::File(path.to_path_buf());
            match value {
                toml::Value::Array(entries) if section == "connections" => {
                    self.connections = Some(entries);
                    self.origins.insert("connections".into(), origin);
                }
                toml::Value::Table(keys) => {
                    for (key, v) in keys {
                        self.set(&section, &key, v, origin.clone());
                    }
                }
                _ => {
                    return Err(SettingsError::Invalid {
                        key: section,
                        origin,
                        message:
                            "expected a [section] (store, log, server, tokens, delivery, retention)"
                                .into(),
                    });
                }
            }
        }
        Ok(self)
    }

    /// `POSTERN_SECTION__KEY=value` variables (others, like `POSTERN_SECRET_KEY`, are not settings).
    pub fn env(mut self, vars: impl IntoIterator<Item = (String, String)>) -> Self {
        for (name, raw) in vars {
            let Some(rest) = name.strip_prefix("POSTERN_") else {
                continue;
            };
            let Some((section, key)) = rest.split_once("__") else {
                continue;
            };
            let value = parse_scalar(&raw);
            self.set(
                &section.to_ascii_lowercase(),
                &key.to_ascii_lowercase(),
                value,
                Origin::Env(name.clone()),
            );
        }
        self
    }

    /// A value given on the command line as `flag`.
    pub fn flag(mut self, section: &str, key: &str, raw: Option<String>, flag: &str) -> Self {
        if let Some(raw) = raw {
            self.set(
                section,
                key,
                toml::Value::String(raw),
                Origin::Flag(flag.to_string()),
            );
        }
        self
    }

    pub fn build(self) -> Result<Settings, SettingsError> {
        let origins = self.origins;
        let origin_of = |path: &str| {
            let key = if path.starts_with("connections") {
                "connections"
            } else {
                path
            };
            origins.get(key).cloned().unwrap_or(Origin::Default)
        };
        let mut merged = toml::Table::try_from(Settings::default()).expect("defaults serialize");
        if let Some(entries) = self.connections {
            merged.insert("connections".into(), toml::Value::Array(entries));
        }
        for (section, v) in self.table {
            let (toml::Value::Table(keys), Some(toml::Value::Table(base))) =
                (v, merged.get_mut(&section))
            else {
                return Err(SettingsError::Invalid {
                    key: section.clone(),
                    origin: origins
                        .iter()
                        .find(|(k, _)| k.starts_with(&format!("{section}.")))
                        .map(|(_, o)| o.clone())
                        .unwrap_or(Origin::Default),
                    message:
                        "unknown section: use store, log, server, tokens, delivery or retention"
                            .into(),
                });
            };
            for (key, value) in keys {
                let expected = base.get(&key).cloned();
                base.insert(key, coerce(value, expected.as_ref()));
            }
        }
        let de = toml::Value::Table(merged);
        let settings: Settings = serde_path_to_error::deserialize(de).map_err(|e| {
            let key = e.path().to_string();
            SettingsError::Invalid {
                origin: origin_of(&key),
                message: e.inner().to_string(),
                key,
            }
        })?;
        settings.check(&origin_of)?;
        Ok(settings)
    }
}

impl Settings {
    fn check(&self, origin_of: &dyn Fn(&str) -> Origin) -> Result<(), SettingsError> {
        let invalid = |key: &str, message: &str| SettingsError::Invalid {
            key: key.to_string(),
            origin: origin_of(key),
            message: message.to_string(),
        };
        if let Some((key, message)) = self.notifications.problem() {
            return Err(invalid(key, &message));
        }
        if self.server.tls_cert.is_some() != self.server.tls_key.is_some() {
            return Err(invalid(
                "server.tls_key",
                "tls_cert and tls_key go together: set both, or neither for a self-signed certificate",
            ));
        }
        for net in &self.server.trusted_networks {
            if let Err(e) = crate::smtp::server::IpNetwork::parse(net) {
                return Err(invalid("server.trusted_networks", &e.to_string()));
            }
        }
        for net in &self.server.plain_networks {
            match crate::smtp::server::IpNetwork::parse(net) {
                Ok(_) => {}
                Err(crate::smtp::server::IpNetworkError::Everything(_)) => {
                    return Err(invalid(
                        "server.plain_networks",
                        &format!(
                            "`{net}` matches every address: passwords in clear text from anywhere; \
                             list the LAN networks of the devices instead"
                        ),
                    ));
                }
                Err(e) => return Err(invalid("server.plain_networks", &e.to_string())),
            }
        }
        if self.server.plain_listen.is_some() && self.server.plain_networks.is_empty() {
            return Err(invalid(
                "server.plain_networks",
                "plain_listen is set but no network may use it: name the LAN networks (CIDR) of \
                 the devices that cannot use TLS, or remove plain_listen",
            ));
        }
        for net in &self.server.bare_lf_networks {
            if let Err(e) = crate::smtp::server::IpNetwork::parse(net) {
                return Err(invalid("server.bare_lf_networks", &e.to_string()));
            }
        }
        if let Some(u) = &self.server.public_url {
            match url::Url::parse(u) {
                Ok(parsed)
                    if matches!(parsed.scheme(), "http" | "https")
                        && parsed.host_str().is_some() => {}
                _ => {
                    return Err(invalid(
                        "server.public_url",
                        &format!(
                            "`{u}` is not an absolute http(s) URL such as https://postern.example.com"
                        ),
                    ));
                }
            }
        }
        if self.server.max_message_size < 1024 {
            return Err(invalid(
                "server.max_message_size",
                "must be at least 1024 bytes",
            ));
        }
        if self.server.message_memory_budget < self.server.max_message_size {
            return Err(invalid(
                "server.message_memory_budget",
                "must be at least server.max_message_size, or no message of that size fits",
            ));
        }
        if self.server.http_max_connections == 0 {
            return Err(invalid("server.http_max_connections", "must be at least 1"));
        }
        if self.server.http_request_timeout_secs == 0 {
            return Err(invalid(
                "server.http_request_timeout_secs",
                "must be at least 1 second",
            ));
        }
        if self.server.http_idle_timeout_secs <= self.server.http_request_timeout_secs {
            return Err(invalid(
                "server.http_idle_timeout_secs",
                "must be longer than server.http_request_timeout_secs, or slow answers are cut off",
            ));
        }
        if self.server.http_message_memory_budget < 1024 * 1024 {
            return Err(invalid(
                "server.http_message_memory_budget",
                "must be at least 1 MiB (1048576 bytes)",
            ));
        }
        if self.tokens.refresh_margin_secs < 60 {
            return Err(invalid(
                "tokens.refresh_margin_secs",
                "must be at least 60 seconds (providers' clocks differ)",
            ));
        }
        if self.tokens.keepalive_days == 0 || self.tokens.keepalive_days > 80 {
            return Err(invalid(
                "tokens.keepalive_days",
                "use 1 to 80 days: Microsoft refresh tokens die after 90 idle days",
            ));
        }
        for (i, c) in self.connections.iter().enumerate() {
            let key = |field: &str| format!("connections[{i}].{field}");
            let bad = |field: &str, message: String| SettingsError::Invalid {
                key: key(field),
                origin: origin_of("connections"),
                message,
            };
            if c.client_secret.is_some() {
                return Err(bad(
                    "client_secret",
                    format!(
                        "connection `{}`: a secret is never written in the settings file (it would sit \
                         in clear wherever the file is read or copied): put it in a file only Postern \
                         can read and name it with client_secret_file, or name an environment \
                         variable with client_secret_env",
                        c.name
                    ),
                ));
            }
            if c.client_secret_file.is_some() && c.client_secret_env.is_some() {
                return Err(bad(
                    "client_secret_env",
                    "give client_secret_file or client_secret_env, not both".into(),
                ));
            }
            if let Err(errors) = c.input().validate() {
                let first = &errors.0[0];
                return Err(bad(
                    first.field,
                    format!("connection `{}`: {errors}", c.name),
                ));
            }
            if self.connections[..i].iter().any(|o| o.name == c.name) {
                return Err(bad(
                    "name",
                    format!("connection `{}` is declared twice", c.name),
                ));
            }
        }
        if self.log.level.trim().is_empty() {
            return Err(invalid("log.level", "use a level such as info or debug"));
        }
        Ok(())
    }
}

impl DeclaredConnection {
    /// The same fields as `connection add` would give.
    pub fn input(&self) -> crate::domain::ConnectionInput {
        crate::domain::ConnectionInput {
            name: Some(self.name.clone()),
            display_name: self.display_name.clone(),
            provider: self.provider.clone(),
            flow: self.flow.clone(),
            host: self.host.clone(),
            port: self.port.map(|p| p.to_string()),
            tls: self.tls.clone(),
            domain: self.domain.clone(),
            user: self.user.clone(),
            tenant: self.tenant.clone(),
            client_id: self.client_id.clone(),
            scope: self.scope.clone(),
            redirect_uri: self.redirect_uri.clone(),
            authorize_url: self.authorize_url.clone(),
            token_url: self.token_url.clone(),
            device_url: self.device_url.clone(),
            ca_file: self.ca_file.clone(),
            enabled: self.enabled,
            max_concurrent: self.max_concurrent.map(|n| n.to_string()),
            limits: self.limits.clone(),
            transport: self.transport.clone(),
            graph_url: self.graph_url.clone(),
            fallback: self.fallback.clone(),
            graph_large: self.graph_large.clone(),
        }
    }
}

/// Environment and flag values arrive as text: read them as TOML where that makes sense.
fn parse_scalar(raw: &str) -> toml::Value {
    format!("v = {raw}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_string()))
}

/// A string where the default is a number, boolean or list is re-read as TOML, so
/// `--smtp-listen` text and `POSTERN_SERVER__MAX_RECIPIENTS=50` both land as the right type.
fn coerce(value: toml::Value, expected: Option<&toml::Value>) -> toml::Value {
    match (value, expected) {
        (
            toml::Value::String(s),
            Some(toml::Value::Integer(_) | toml::Value::Boolean(_) | toml::Value::Array(_)),
        ) => parse_scalar(&s),
        (toml::Value::Integer(i), Some(toml::Value::String(_))) => {
            toml::Value::String(i.to_string())
        }
        (v, _) => v,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn layers_override_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("postern.toml");
        std::fs::write(&file, "[server]\nmax_recipients = 10\nsmtp_listen = \"127.0.0.1:2600\"\n[store]\ndata_dir = \"/var/lib/postern\"\n").unwrap();
        let s = Loader::new()
            .file(&file, true)
            .unwrap()
            .env(env(&[
                ("POSTERN_SERVER__MAX_RECIPIENTS", "50"),
                ("POSTERN_SECRET_KEY", "ignored"),
                ("PATH", "x"),
            ]))
            .flag(
                "server",
                "smtp_listen",
                Some("127.0.0.1:2700".into()),
                "--smtp-listen",
            )
            .build()
            .unwrap();
        assert_eq!(s.server.max_recipients, 50);
        assert_eq!(s.server.smtp_listen, "127.0.0.1:2700".parse().unwrap());
        assert_eq!(s.store.data_dir, PathBuf::from("/var/lib/postern"));
        assert_eq!(s.server.http_listen, "127.0.0.1:8025".parse().unwrap());
    }

    #[test]
    fn a_bad_value_names_key_origin_and_reason() {
        let err = Loader::new()
            .env(env(&[("POSTERN_SERVER__SMTP_LISTEN", "localhost")]))
            .build()
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("server.smtp_listen") && err.contains("POSTERN_SERVER__SMTP_LISTEN"),
            "{err}"
        );

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("p.toml");
        std::fs::write(&file, "[server]\nmax_recipents = 5\n").unwrap();
        let err = Loader::new()
            .file(&file, true)
            .unwrap()
            .build()
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("max_recipents")
                && err.contains("p.toml")
                && err.contains("unknown field"),
            "{err}"
        );

        let err = Loader::new()
            .env(env(&[("POSTERN_TOKENS__KEEPALIVE_DAYS", "120")]))
            .build()
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("tokens.keepalive_days") && err.contains("90 idle days"),
            "{err}"
        );

        let err = Loader::new()
            .env(env(&[(
                "POSTERN_SERVER__TRUSTED_NETWORKS",
                "[\"10.0.0.0/33\"]",
            )]))
            .build()
            .unwrap_err()
            .to_string();
        assert!(err.contains("10.0.0.0/33"), "{err}");
    }

    #[test]
    fn a_cleartext_listener_needs_its_networks_and_never_all_of_them() {
        let build = |pairs: &[(&str, &str)]| Loader::new().env(env(pairs)).build();
        let listen = ("POSTERN_SERVER__PLAIN_LISTEN", "0.0.0.0:2526");
        let err = build(&[listen]).unwrap_err().to_string();
        assert!(
            err.contains("server.plain_networks") && err.contains("plain_listen"),
            "{err}"
        );
        for everything in ["[\"0.0.0.0/0\"]", "[\"::/0\"]"] {
            let err = build(&[listen, ("POSTERN_SERVER__PLAIN_NETWORKS", everything)])
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("server.plain_networks") && err.contains("every address"),
                "{err}"
            );
        }
        let s = build(&[
            listen,
            ("POSTERN_SERVER__PLAIN_NETWORKS", "[\"192.168.1.0/24\"]"),
        ])
        .unwrap();
        assert_eq!(s.server.plain_listen, Some("0.0.0.0:2526".parse().unwrap()));
        assert_eq!(s.server.plain_networks, ["192.168.1.0/24"]);
        assert_eq!(Settings::default().server.plain_listen, None);
    }

    #[test]
    fn retention_is_its_own_section_with_a_90_day_default() {
        assert_eq!(Settings::default().retention.log_days, 90);
        let s = Loader::new()
            .env(env(&[("POSTERN_RETENTION__LOG_DAYS", "0")]))
            .build()
            .unwrap();
        assert_eq!(s.retention.log_days, 0);
        let err = Loader::new()
            .env(env(&[("POSTERN_RETENTION__BODY_DAYS", "7")]))
            .build()
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("body_days") && err.contains("POSTERN_RETENTION__BODY_DAYS"),
            "{err}"
        );
    }

    #[test]
    fn declared_connections_refuse_inline_secrets_and_name_bad_fields() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("postern.toml");
        let entry = "[[connections]]\nname = \"contoso\"\nuser = \"ops@contoso.com\"\n\
                     client_id = \"1b2c3d4e-0000-1111-2222-333344445555\"\n";
        let ok = "provider = \"microsoft\"\ntenant = \"contoso.onmicrosoft.com\"\n";
        let load = |extra: &str| {
            std::fs::write(
                &file,
                format!("[server]\nmax_recipients = 5\n{entry}{extra}"),
            )
            .unwrap();
            Loader::new().file(&file, true).unwrap().build()
        };
        let s = load(&format!(
            "{ok}client_secret_file = \"/etc/postern/contoso.secret\"\nport = 587\n"
        ))
        .unwrap();
        assert_eq!(s.connections.len(), 1);
        assert_eq!(s.connections[0].port, Some(587));
        assert_eq!(s.server.max_recipients, 5);

        let err = load(&format!("{ok}client_secret = \"hunter2\"\n"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("connections[0].client_secret")
                && err.contains("client_secret_file")
                && err.contains("postern.toml")
                && !err.contains("hunter2"),
            "{err}"
        );
        let err = load("provider = \"yahoo\"\ntenant = \"contoso.onmicrosoft.com\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("connections[0]"), "{err}");
        let err = load("provider = \"microsoft\"\ntenant = \"not a tenant!\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("connections[0].tenant") && err.contains("contoso"),
            "{err}"
        );
    }

    #[test]
    fn missing_optional_file_is_fine_but_a_named_one_is_not() {
        assert!(
            Loader::new()
                .file(Path::new("/nonexistent/postern.toml"), false)
                .is_ok()
        );
        assert!(matches!(
            Loader::new().file(Path::new("/nonexistent/postern.toml"), true),
            Err(SettingsError::Read { .. })
        ));
    }
}
