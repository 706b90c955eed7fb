//! Where the data key comes from: `POSTERN_SECRET_KEY` or a key file with mode 0600.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::seal::{DataKey, SealError};

pub const KEY_ENV: &str = "POSTERN_SECRET_KEY";

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{KEY_ENV}: {0}")]
    Env(SealError),
    #[error("key file {path}: {source}")]
    Parse { path: PathBuf, source: SealError },
    #[error(
        "key file {path} is readable by group or others (mode {mode:o}): the key decrypts every \
         secret Postern holds. Run `chmod 600 {path}` and start again"
    )]
    Permissions { path: PathBuf, mode: u32 },
    #[error("key file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Where the key was read from, so rotation knows where to write the next one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    Env,
    File(PathBuf),
}

/// Reads the key from the environment, else from `path`, creating the file on first use.
pub fn load_or_create(path: &Path) -> Result<(DataKey, KeySource), KeyError> {
    if let Ok(text) = std::env::var(KEY_ENV)
        && !text.trim().is_empty()
    {
        return Ok((
            DataKey::from_base64(&text).map_err(KeyError::Env)?,
            KeySource::Env,
        ));
    }
    if !path.exists() {
        let key = DataKey::generate();
        write_key_file(path, &key)?;
        tracing::info!(path = %path.display(), "created a new secret key file; back it up: without it the stored secrets cannot be read");
        return Ok((key, KeySource::File(path.to_path_buf())));
    }
    Ok((read_key_file(path)?, KeySource::File(path.to_path_buf())))
}

pub fn read_key_file(path: &Path) -> Result<DataKey, KeyError> {
    let io = |source| KeyError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mode = fs::metadata(path).map_err(io)?.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(KeyError::Permissions {
            path: path.to_path_buf(),
            mode,
        });
    }
    let text = zeroize::Zeroizing::new(fs::read_to_string(path).map_err(io)?);
    DataKey::from_base64(&text).map_err(|source| KeyError::Parse {
        path: path.to_path_buf(),
        source,
    })
}

/// Writes `key` to `path` with mode 0600, durably, never leaving a half-written file in place.
pub fn write_key_file(path: &Path, key: &DataKey) -> Result<(), KeyError> {
    let io = |source| KeyError::Io {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
    {
        fs::create_dir_all(dir).map_err(io)?;
    }
    let tmp = path.with_extension("tmp");
    let _ = fs::remove_file(&tmp);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io)?;
    f.write_all(key.to_base64().as_bytes()).map_err(io)?;
    f.write_all(b"\n").map_err(io)?;
    f.sync_all().map_err(io)?;
    fs::rename(&tmp, path).map_err(io)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
    }
    Ok(())
}
