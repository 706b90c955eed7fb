//! `postern doctor` and the Health page: every check of the installation, one line each with
//! ok / warn / fail and the fix. The CLI and the UI call [`run`]; neither decides anything itself.

mod connection;
mod install;

use serde::Serialize;

use crate::domain::EmailAddress;
use crate::oauth::TokenManager;
use crate::settings::Settings;
use crate::store::Store;

/// How a check came out, worst last.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Ok,
    Warn,
    Fail,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Ok => "ok",
            Level::Warn => "warn",
            Level::Fail => "fail",
        }
    }

    /// `doctor`'s exit code: 0 ok, 1 a warning, 2 a failure.
    pub fn exit_code(self) -> i32 {
        self as i32
    }
}

/// One line of the report.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// What was checked: `key file`, `store`, `connection contoso: token`...
    pub name: String,
    pub level: Level,
    /// What was found.
    pub message: String,
    /// What to do, when not ok.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Check {
    pub fn ok(name: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            level: Level::Ok,
            message: message.into(),
            fix: None,
        }
    }

    pub fn warn(
        name: impl Into<String>,
        message: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Self {
            name: name.into(),
            level: Level::Warn,
            message: message.into(),
            fix: Some(fix.into()),
        }
    }

    pub fn fail(
        name: impl Into<String>,
        message: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Self {
            name: name.into(),
            level: Level::Fail,
            message: message.into(),
            fix: Some(fix.into()),
        }
    }
}

/// What to check.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Only these connections (all when empty).
    pub connections: Vec<String>,
    /// Send a test message to this address through each connection (else AUTH only).
    pub send_to: Option<EmailAddress>,
}

/// Runs every check; the worst level is the verdict. Opens the store itself, after checking the
/// key file, so that a store that will not open is reported as a check, not an error.
pub async fn run(settings: &Settings, opts: &Options) -> Vec<Check> {
    let mut out = install::key_file(settings);
    let store = match Store::open_settings(&settings.store).await {
        Ok(s) => s,
        Err(e) => {
            out.push(Check::fail(
                "store",
                e.to_string(),
                "Fix the line above, then run `postern doctor` again.",
            ));
            return out;
        }
    };
    let tokens = match TokenManager::new(store.clone(), settings.tokens.clone()) {
        Ok(t) => t,
        Err(e) => {
            out.push(Check::fail(
                "tokens",
                e.to_string(),
                "Check the [tokens] settings.",
            ));
            return out;
        }
    };
    out.extend(with_store(settings, &store, &tokens, opts).await);
    store.close().await;
    out
}

async fn with_store(
    settings: &Settings,
    store: &Store,
    tokens: &TokenManager,
    opts: &Options,
) -> Vec<Check> {
    let mut out = Vec::new();
    out.push(install::store_integrity(store).await);
    out.push(install::disk_space(store.data_dir()));
    out.push(install::relay_certificate(settings));
    match store.list_connections().await {
        Ok(conns) => {
            for name in &opts.connections {
                if !conns.iter().any(|c| c.name().as_str() == name) {
                    out.push(Check::fail(
                        format!("connection {name}"),
                        "does not exist",
                        "See `postern connection list`.",
                    ));
                }
            }
            let mail_counts = store.held_and_failed().await;
            for c in conns.iter().filter(|c| {
                opts.connections.is_empty()
                    || opts.connections.iter().any(|n| n == c.name().as_str())
            }) {
                out.extend(
                    connection::checks(
                        settings,
                        store,
                        tokens,
                        c,
                        opts.send_to.as_ref(),
                        &mail_counts,
                    )
                    .await,
                );
            }
        }
        Err(e) => out.push(Check::fail(
            "connections",
            e.to_string(),
            "Check the store (see above).",
        )),
    }
    out.extend(install::notifications(settings, store).await);
    out
}

/// The worst level of `checks` (ok when empty).
pub fn verdict(checks: &[Check]) -> Level {
    checks.iter().map(|c| c.level).max().unwrap_or(Level::Ok)
}
