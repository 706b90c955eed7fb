//! Logging: one subscriber for the whole process, text or JSON, never showing secrets
//! (secrets are `SecretString` and cannot be formatted).

use std::sync::Arc;

use tracing_subscriber::EnvFilter;

use crate::settings::LogFormat;

type SetLevel = dyn Fn(&str) -> Result<(), String> + Send + Sync;

/// Changes the log filter of the running process (`log.level` on reload).
#[derive(Clone)]
pub struct LogControl(Arc<SetLevel>);

impl std::fmt::Debug for LogControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LogControl")
    }
}

impl LogControl {
    /// Replaces the filter; an unparsable one is refused and the current one stays.
    pub fn set_level(&self, level: &str) -> Result<(), String> {
        (self.0)(level)
    }
}

/// Installs the global subscriber. `RUST_LOG` overrides `level` when set. Returns the handle
/// that changes the level later (None when another subscriber was already installed).
pub fn init(format: LogFormat, level: &str) -> Option<LogControl> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    fn control<S: 'static>(handle: tracing_subscriber::reload::Handle<EnvFilter, S>) -> LogControl {
        LogControl(Arc::new(move |level: &str| {
            let filter = EnvFilter::try_new(level).map_err(|e| format!("`{level}`: {e}"))?;
            handle.reload(filter).map_err(|e| e.to_string())
        }))
    }
    match format {
        LogFormat::Json => {
            let b = builder.json().with_filter_reloading();
            let c = control(b.reload_handle());
            b.try_init().ok().map(|()| c)
        }
        LogFormat::Text => {
            let b = builder.with_filter_reloading();
            let c = control(b.reload_handle());
            b.try_init().ok().map(|()| c)
        }
    }
}
