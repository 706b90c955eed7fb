//! Reloading the settings of a running `serve` (SIGHUP, `postern reload`): the settings file and
//! environment are read again, with the same layering as at start-up; what can change live is
//! applied to new sessions and handshakes, every other changed key is named as needing a
//! restart. A reload that cannot be applied as a whole changes nothing.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::settings::{Settings, SettingsError};
use crate::smtp::server::tls::{SELF_SIGNED_CERT_FILE, SELF_SIGNED_KEY_FILE, TlsSetupError};
use crate::smtp::server::{ListenerConfig, LiveCert, LiveConfig};
use crate::telemetry::LogControl;

/// Reads the settings again, exactly as start-up did (file < environment < flags).
pub type SettingsSource = Arc<dyn Fn() -> Result<Settings, SettingsError> + Send + Sync>;

/// Keys a reload applies without a restart. Everything else sizes a structure built at start
/// (listeners, pools, budgets, workers) and is reported as needing a restart.
const LIVE_KEYS: &[&str] = &[
    "server.tls_cert",
    "server.tls_key",
    "server.max_message_size",
    "server.max_recipients",
    "server.trusted_networks",
    "server.bare_lf_networks",
    "server.plain_networks",
    "server.allow_cleartext_auth",
    "server.cleartext_auth_on_loopback",
    "server.received_header",
    "log.level",
];

#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error(transparent)]
    Settings(#[from] SettingsError),
    #[error("setting {key}: {source}")]
    Tls {
        key: &'static str,
        source: TlsSetupError,
    },
    #[error("setting {key}: {message}")]
    Setting { key: &'static str, message: String },
    #[error(transparent)]
    Start(#[from] crate::app::StartError),
    #[error(transparent)]
    Declared(#[from] crate::declared::DeclaredError),
    #[error("connections: {0}")]
    Store(#[from] crate::store::StoreError),
}

/// What a reload did, for the log line and the tests.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Changed keys now in effect.
    pub applied: Vec<String>,
    /// Changed keys that take effect only after a restart.
    pub need_restart: Vec<String>,
    /// The certificate's fingerprint changed (a renewal keeps the same file names).
    pub new_certificate: Option<String>,
}

/// The listeners' live handles, as `Application::build` made them.
#[derive(Debug, Clone)]
pub(crate) struct Live {
    pub cert: LiveCert,
    pub relay: LiveConfig,
    pub relay_tls: Option<LiveConfig>,
    pub relay_plain: Option<LiveConfig>,
}

/// Holds the settings in effect and applies new ones.
pub(crate) struct Reloader {
    pub store: crate::store::Store,
    pub source: SettingsSource,
    pub current: Settings,
    pub live: Live,
    pub log: Option<LogControl>,
}

impl std::fmt::Debug for Reloader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloader").finish_non_exhaustive()
    }
}

impl Reloader {
    /// Reads, checks, then applies; on any error nothing changed.
    pub async fn reload(&mut self) -> Result<Outcome, ReloadError> {
        let next = (self.source)()?;
        // Declared connections are checked (secrets read) before anything changes, and written
        // in one transaction first: if that fails, nothing else changes either.
        let declared = crate::declared::resolve(&next.connections)?;
        // What will run: the keys a reload applies from the new settings, every other key as it
        // runs now (so the listeners do not take a new hostname or budget half-way, and the
        // next reload names a key that needs a restart again).
        let running = with_live_keys(&self.current, &next);
        if running.server.max_message_size > running.server.message_memory_budget {
            return Err(ReloadError::Setting {
                key: "server.max_message_size",
                message: format!(
                    "{} is more than the running server.message_memory_budget ({}), which changes only \
                     with a restart: no message of that size would fit",
                    running.server.max_message_size, running.server.message_memory_budget
                ),
            });
        }
        let data_dir = &running.store.data_dir;
        let (cert_key, cert, key) = match (&running.server.tls_cert, &running.server.tls_key) {
            (Some(c), Some(k)) => ("server.tls_cert", c.clone(), k.clone()),
            _ => (
                "server.tls_cert",
                data_dir.join(SELF_SIGNED_CERT_FILE),
                data_dir.join(SELF_SIGNED_KEY_FILE),
            ),
        };
        // Everything is built before anything is swapped.
        let relay = crate::app::listener_config(&running)?;
        let plain = match self.live.relay_plain {
            Some(_) => Some(crate::app::plain_listener_config(&running, &relay)?),
            None => None,
        };
        let certified = crate::smtp::server::tls::certified_key(&cert, &key).map_err(|source| {
            let key = match &source {
                TlsSetupError::Key { .. } | TlsSetupError::Mismatch { .. } => "server.tls_key",
                _ => cert_key,
            };
            ReloadError::Tls { key, source }
        })?;

        let synced = self.store.sync_declared(&declared).await?;
        for name in &synced.released {
            tracing::warn!(
                "connection `{name}` is no longer in postern.toml: kept, and no longer managed by the file"
            );
        }
        let before = self.live.cert.fingerprint();
        self.live.cert.set(certified);
        let after = self.live.cert.fingerprint();
        self.apply_policy(relay, plain);
        let mut outcome = Outcome {
            new_certificate: (before != after).then_some(after),
            ..Outcome::default()
        };
        for name in synced.created.iter().chain(&synced.updated) {
            outcome.applied.push(format!("connections.{name}"));
        }
        for key in changed_keys(&self.current, &next) {
            if key == "log.level" && self.log.is_none() {
                tracing::info!("log.level changed, but -v, -q or RUST_LOG chose the level: kept");
            } else if LIVE_KEYS.contains(&key.as_str()) {
                outcome.applied.push(key);
            } else {
                outcome.need_restart.push(key);
            }
        }
        if let Some(log) = &self.log
            && next.log.level != self.current.log.level
            && let Err(e) = log.set_level(&next.log.level)
        {
            tracing::warn!(error = %e, "log.level: kept the current level");
        }
        self.current = running;
        Ok(outcome)
    }

    fn apply_policy(&self, relay: ListenerConfig, plain: Option<ListenerConfig>) {
        if let Some(tls) = &self.live.relay_tls {
            tls.replace(relay.clone());
        }
        if let (Some(live), Some(plain)) = (&self.live.relay_plain, plain) {
            live.replace(plain);
        }
        self.live.relay.replace(relay);
    }

    /// Runs a reload and logs its outcome: one summary line, one line per key needing a restart.
    pub async fn reload_and_log(&mut self) {
        match self.reload().await {
            Err(e) => tracing::error!(
                error = %e,
                "reload refused: the running settings stay as they were; fix the setting named and reload again"
            ),
            Ok(o) => {
                for key in &o.need_restart {
                    tracing::warn!("{key} changed: needs a restart");
                }
                let cert = o
                    .new_certificate
                    .as_deref()
                    .map(|f| {
                        format!("; new relay certificate (SHA-256 {f}) for new TLS handshakes")
                    })
                    .unwrap_or_default();
                let list = |keys: &[String]| {
                    if keys.is_empty() {
                        "none".to_string()
                    } else {
                        keys.join(", ")
                    }
                };
                tracing::info!(
                    "settings reloaded: applied {}; needs a restart: {}{cert}",
                    list(&o.applied),
                    list(&o.need_restart),
                );
            }
        }
    }
}

/// `current` with the keys a reload applies taken from `next`.
fn with_live_keys(current: &Settings, next: &Settings) -> Settings {
    let mut running = current.clone();
    let (to, from) = (&mut running.server, &next.server);
    to.tls_cert.clone_from(&from.tls_cert);
    to.tls_key.clone_from(&from.tls_key);
    to.max_message_size = from.max_message_size;
    to.max_recipients = from.max_recipients;
    to.trusted_networks.clone_from(&from.trusted_networks);
    to.bare_lf_networks.clone_from(&from.bare_lf_networks);
    to.plain_networks.clone_from(&from.plain_networks);
    to.allow_cleartext_auth = from.allow_cleartext_auth;
    to.cleartext_auth_on_loopback = from.cleartext_auth_on_loopback;
    to.received_header = from.received_header;
    running.log.level.clone_from(&next.log.level);
    running.connections.clone_from(&next.connections);
    running
}

/// `section.key` of every setting whose value differs.
fn changed_keys(old: &Settings, new: &Settings) -> Vec<String> {
    let (old, new) = (flatten(old), flatten(new));
    let mut keys: Vec<String> = old
        .keys()
        .chain(new.keys())
        .filter(|k| old.get(*k) != new.get(*k))
        .cloned()
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

fn flatten(s: &Settings) -> BTreeMap<String, toml::Value> {
    let mut out = BTreeMap::new();
    if let Ok(table) = toml::Table::try_from(s) {
        for (section, v) in table {
            if let toml::Value::Table(keys) = v {
                for (key, value) in keys {
                    out.insert(format!("{section}.{key}"), value);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changed_keys_name_each_section_and_key() {
        let old = Settings::default();
        let mut new = old.clone();
        new.server.max_recipients = 5;
        new.server.smtp_listen = "127.0.0.1:2600".parse().unwrap();
        new.server.tls_cert = Some("/etc/postern/relay.pem".into());
        assert_eq!(
            changed_keys(&old, &new),
            [
                "server.max_recipients",
                "server.smtp_listen",
                "server.tls_cert"
            ]
        );
        assert!(changed_keys(&old, &old.clone()).is_empty());
    }

    #[test]
    fn only_live_keys_reach_the_running_settings() {
        let current = Settings::default();
        let mut next = current.clone();
        next.server.max_recipients = 5;
        next.server.hostname = "relay.example".into();
        next.server.max_connections = 10;
        next.delivery.max_retry_secs = 60;
        let running = with_live_keys(&current, &next);
        assert_eq!(running.server.max_recipients, 5);
        assert_eq!(running.server.hostname, "localhost");
        assert_eq!(running.server.max_connections, 2048);
        assert_eq!(running.delivery, current.delivery);
        assert_eq!(
            changed_keys(&running, &next),
            [
                "delivery.max_retry_secs",
                "server.hostname",
                "server.max_connections"
            ],
            "named again at the next reload"
        );
    }
}
