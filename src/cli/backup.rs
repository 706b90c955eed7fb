//! `postern backup FILE` and `postern restore FILE`: an online copy of the store, and putting
//! one back. The data key is never in a backup: it is kept (and backed up) separately.

use std::path::{Path, PathBuf};

use super::{CliError, CliResult, Ctx};
use crate::store::backup::lock_for_restore;
use crate::store::{DB_FILE, KEY_FILE, Store, StoreError};

/// Where a restore prepares the copy before it replaces the store.
const STAGING: &str = "restore-staging";

fn failed(what: &str, e: impl std::fmt::Display) -> CliError {
    CliError::Failed(anyhow::anyhow!("{what}: {e}"))
}

fn key_path(ctx: &Ctx) -> PathBuf {
    ctx.settings
        .store
        .key_file
        .clone()
        .unwrap_or_else(|| ctx.settings.store.data_dir.join(KEY_FILE))
}

pub async fn backup(ctx: &Ctx, file: &Path) -> CliResult {
    if file.exists() {
        return Err(CliError::Usage(format!(
            "{} already exists: name a new file (a backup never overwrites one)",
            file.display()
        )));
    }
    let store = ctx.store().await?;
    let bytes = store.backup_to(file).await?;
    println!(
        "backed up the store to {} ({} KiB): a consistent copy, taken while serve may run.",
        file.display(),
        bytes.div_ceil(1024)
    );
    let key = if std::env::var_os("POSTERN_SECRET_KEY").is_some() {
        "POSTERN_SECRET_KEY".to_string()
    } else {
        key_path(ctx).display().to_string()
    };
    println!(
        "The data key is not in it: keep a copy of {key} apart from the backup; without that key \
         the backup's secrets cannot be opened."
    );
    Ok(())
}

pub async fn restore(ctx: &Ctx, file: &Path) -> CliResult {
    if ctx.settings.store.url.is_some() {
        return Err(CliError::Usage(
            "`postern restore` replaces the SQLite store in the data directory, and store.url \
             names a PostgreSQL store: restore that with pg_restore (or from its replicas)"
                .into(),
        ));
    }
    let data_dir = &ctx.settings.store.data_dir;
    if !file.is_file() {
        return Err(CliError::Usage(format!(
            "{} is not a file: give the path of a backup made with `postern backup`",
            file.display()
        )));
    }
    std::fs::create_dir_all(data_dir).map_err(|e| failed("data directory", e))?;
    let Some(_lock) = lock_for_restore(data_dir).map_err(|e| failed("lock", e))? else {
        return Err(CliError::Usage(format!(
            "a running `postern serve` uses {}: stop it, then restore",
            data_dir.display()
        )));
    };
    let key = key_path(ctx);
    if std::env::var_os("POSTERN_SECRET_KEY").is_none() && !key.exists() {
        return Err(CliError::Usage(format!(
            "no data key at {}: put there the key file that was in use when the backup was made \
             (backups do not contain it)",
            key.display()
        )));
    }
    // Checked on a copy first: a bad backup or the wrong key leaves the store as it was.
    let staging = data_dir.join(STAGING);
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(&staging).map_err(|e| failed("staging directory", e))?;
    std::fs::copy(file, staging.join(DB_FILE)).map_err(|e| failed("copying the backup", e))?;
    let summary = match check(&staging, &key).await {
        Ok(summary) => summary,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(e);
        }
    };
    let db = data_dir.join(DB_FILE);
    let aside = data_dir.join(format!(
        "{DB_FILE}.before-restore-{}",
        chrono::Utc::now().format("%Y%m%dT%H%M%SZ")
    ));
    if db.exists() {
        std::fs::rename(&db, &aside).map_err(|e| failed("moving the old store aside", e))?;
        for suffix in ["-wal", "-shm"] {
            let from = PathBuf::from(format!("{}{suffix}", db.display()));
            if from.exists() {
                let to = PathBuf::from(format!("{}{suffix}", aside.display()));
                std::fs::rename(&from, &to).map_err(|e| failed("moving the old store aside", e))?;
            }
        }
    }
    std::fs::rename(staging.join(DB_FILE), &db)
        .map_err(|e| failed("putting the backup in place", e))?;
    let _ = std::fs::remove_dir_all(&staging);
    println!(
        "restored {} into {}: {summary}.",
        file.display(),
        data_dir.display()
    );
    if aside.exists() {
        println!("The store it replaced is kept as {}.", aside.display());
    }
    Ok(())
}

/// Opens the copy (upgrading an older backup's schema), checks its integrity and that every
/// secret opens with the key; what it holds, in words.
async fn check(staging: &Path, key: &Path) -> Result<String, CliError> {
    let store = match Store::open(staging, Some(key)).await {
        Err(e @ StoreError::WrongKey(_)) => {
            return Err(CliError::Usage(format!(
                "the backup's secrets do not open with the data key at {} ({e}): use the key \
                 that was in use when the backup was made",
                key.display()
            )));
        }
        other => other?,
    };
    let result = async {
        let integrity: String = sqlx::query_scalar("PRAGMA integrity_check")
            .fetch_one(store.sqlite_pool("restore", "restore with pg_restore")?)
            .await
            .map_err(StoreError::from)?;
        if integrity != "ok" {
            return Err(CliError::Usage(format!(
                "the backup is damaged (integrity check: {integrity}): use another one"
            )));
        }
        let secrets = store.check_secrets_open().await.map_err(|e| {
            CliError::Usage(format!(
                "the backup's secrets do not open with the data key at {} ({e}): use the key that \
                 was in use when the backup was made",
                key.display()
            ))
        })?;
        let waiting: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM messages WHERE status IN ('queued', 'deferred', 'sending', 'held')",
        )
        .fetch_one(store.sqlite_pool("restore", "restore with pg_restore")?)
        .await
        .map_err(StoreError::from)?;
        let connections: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM connections")
            .fetch_one(store.sqlite_pool("restore", "restore with pg_restore")?)
            .await
            .map_err(StoreError::from)?;
        Ok(format!(
            "{connections} connections, {secrets} secrets (all open with the key), {waiting} messages waiting to be sent"
        ))
    }
    .await;
    store.close().await;
    result
}
