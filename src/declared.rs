//! Connections declared in postern.toml (`[[connections]]`): each entry becomes a validated
//! connection with its client secret read from the file or variable it names, and the store is
//! brought to match, at start and on every reload.

use secrecy::SecretString;

use crate::settings::DeclaredConnection;
use crate::store::declared::{Declared, SyncReport};
use crate::store::{Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum DeclaredError {
    #[error("connections[{index}] (`{name}`): {message}")]
    Entry {
        index: usize,
        name: String,
        message: String,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Validates every entry and reads its secret; the first problem stops everything.
pub fn resolve(entries: &[DeclaredConnection]) -> Result<Vec<Declared>, DeclaredError> {
    entries
        .iter()
        .enumerate()
        .map(|(index, c)| {
            let err = |message: String| DeclaredError::Entry {
                index,
                name: c.name.clone(),
                message,
            };
            let (settings, _) = c.input().validate().map_err(|e| err(e.to_string()))?;
            let client_secret = match (&c.client_secret_file, &c.client_secret_env) {
                (Some(path), _) => Some(read_secret_file(path).map_err(err)?),
                (None, Some(var)) => Some(
                    std::env::var(var)
                        .ok()
                        .filter(|v| !v.trim().is_empty())
                        .map(|v| SecretString::from(v.trim().to_string()))
                        .ok_or_else(|| {
                            err(format!(
                                "client_secret_env: environment variable {var} is not set (or empty)"
                            ))
                        })?,
                ),
                (None, None) => None,
            };
            Ok(Declared {
                settings,
                client_secret,
            })
        })
        .collect()
}

fn read_secret_file(path: &std::path::Path) -> Result<SecretString, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("client_secret_file {}: {e}", path.display()))?;
    let value = text.trim();
    if value.is_empty() {
        return Err(format!("client_secret_file {} is empty", path.display()));
    }
    Ok(SecretString::from(value.to_string()))
}

/// Resolves and writes the declared connections; logs what changed.
pub async fn sync(
    store: &Store,
    entries: &[DeclaredConnection],
) -> Result<SyncReport, DeclaredError> {
    let declared = resolve(entries)?;
    let report = store.sync_declared(&declared).await?;
    for name in &report.released {
        tracing::warn!(
            connection = %name,
            "connection `{name}` is no longer in postern.toml: kept, and no longer managed by the file (the CLI, API and UI may change it now)"
        );
    }
    if !report.created.is_empty() || !report.updated.is_empty() {
        tracing::info!(
            created = ?report.created,
            updated = ?report.updated,
            "connections from postern.toml written to the store"
        );
    }
    Ok(report)
}
