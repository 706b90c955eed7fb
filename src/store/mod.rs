//! The store: one place for every query. SQLite today (WAL, `synchronous=FULL`); the API is
//! plain async methods on [`Store`] so a PostgreSQL backend can follow behind the same surface.

mod access;
mod admins;
mod api_key_scope;
mod api_keys;
pub mod attempts;
pub mod backup;
mod connection_query;
mod connections;
pub mod declared;
mod due;
mod import;
pub mod keyfile;
mod message_log;
pub mod messages;
pub mod notifications;
pub mod outbox_batch;
pub mod password_check;
pub mod queue_admin;
pub mod retention;
mod rotate;
pub use rotate::Rotation;
pub mod relay_users;
pub mod seal;
mod secrets;
mod server_secrets;
mod sessions;
mod tokens;

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

pub use access::AccessError;
pub use admins::{Admin, MIN_PASSWORD_CHARS, check_admin_name};
pub use api_key_scope::ScopedConnection;
pub use api_keys::{ApiKey, ApiRole, NewApiKey};
pub use connection_query::{ConnectionPage, ConnectionQuery, ListQueryError, STATUSES};
pub use connections::ConnectionRow;
pub use import::{ImportCounts, ImportItem};
pub use keyfile::{KeyError, KeySource};
pub use seal::{DataKey, SealError, Sealer};
pub use secrets::{SecretKind, StoredSecret};
pub use sessions::{NewSession, Session, hash_token, new_token};

pub const DB_FILE: &str = "postern.db";
pub const KEY_FILE: &str = "secret.key";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("database migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("secret `{what}`: {source}")]
    Seal { what: String, source: SealError },
    #[error("data directory {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("connection `{0}` does not exist (see `postern connection list`)")]
    NoSuchConnection(String),
    #[error(
        "a connection named `{0}` already exists: choose another name or use `postern connection edit {0}`"
    )]
    DuplicateConnection(String),
    #[error(
        "connection `{0}` is managed by postern.toml ([[connections]] name = \"{0}\"): change it \
         there and run `postern reload`, or remove it from the file to manage it here"
    )]
    ManagedByFile(String),
    #[error("stored data is inconsistent: {0}")]
    Corrupt(String),
    /// The error of a batch written for several callers at once (group commit).
    #[error(transparent)]
    Batch(Arc<StoreError>),
    #[error("the outbox writer has stopped (the server is shutting down)")]
    WriterStopped,
    #[error(transparent)]
    Busy(#[from] password_check::Busy),
}

impl StoreError {
    /// The disk is full: clients get `452 4.3.1`, not a permanent failure.
    pub fn is_disk_full(&self) -> bool {
        match self {
            StoreError::Db(sqlx::Error::Database(e)) => {
                e.code().as_deref() == Some("13")
                    || e.message().contains("database or disk is full")
            }
            StoreError::Db(sqlx::Error::Io(e)) => e.raw_os_error() == Some(28),
            StoreError::Batch(e) => e.is_disk_full(),
            _ => false,
        }
    }
}

/// A handle on the store; cheap to clone.
#[derive(Debug, Clone)]
pub struct Store {
    pool: SqlitePool,
    /// `synchronous=NORMAL`: only for the outbox's claims (and attempt records outside the writer).
    bookkeeping: SqlitePool,
    /// How to open another connection (the outbox writer's own).
    options: SqliteConnectOptions,
    sealer: Arc<Sealer>,
    data_dir: PathBuf,
    key_source: KeySource,
    /// argon2id checks of admin and relay passwords: a bounded pool shared by all clones.
    passwords: password_check::PasswordChecks,
}

/// The data directory holds the database and key: only its owner may enter it.
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

pub(crate) fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

impl Store {
    /// Opens (creating if needed) the store in `data_dir`, with the key from the environment or
    /// `key_file` (default `<data_dir>/secret.key`).
    pub async fn open(data_dir: &Path, key_file: Option<&Path>) -> Result<Self, StoreError> {
        create_private_dir(data_dir).map_err(|source| StoreError::DataDir {
            path: data_dir.to_path_buf(),
            source,
        })?;
        let key_path = key_file
            .map(Path::to_path_buf)
            .unwrap_or_else(|| data_dir.join(KEY_FILE));
        let (key, key_source) = keyfile::load_or_create(&key_path)?;
        let mut sealer = Sealer::new(key);
        // A rotation that stopped between its commit and its rename leaves the new key beside the old.
        let pending = rotate::pending_path(&key_path);
        if matches!(key_source, KeySource::File(_)) && pending.exists() {
            sealer = sealer.with_older(keyfile::read_key_file(&pending)?);
        }
        let options = SqliteConnectOptions::from_str("sqlite://")?
            .filename(data_dir.join(DB_FILE))
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // FULL: a committed message survives power loss, which is what a `250` promises.
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true)
            // 512 KiB of page cache per connection instead of SQLite's 2 MB: the outbox writes at
            // the end of its tables and the kernel caches the file anyway; this keeps the relay
            // small (several connections, each with its own cache).
            .pragma("cache_size", "-512");
        // No ping before handing out a connection: it is a local file, not a server that may
        // have hung up, and the ping is a round trip to the connection's thread per query.
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .test_before_acquire(false)
            .connect_with(options.clone())
            .await?;
        sqlx::migrate!("./migrations").run(&pool).await?;
        // Delivery bookkeeping (claims, attempt records) does not wait for the disk: after a
        // power loss the last of it may be gone, and those messages are sent again, which
        // at-least-once allows. The next FULL commit makes everything before it durable too.
        let bookkeeping = SqlitePoolOptions::new()
            .max_connections(1)
            .test_before_acquire(false)
            .connect_with(options.clone().synchronous(SqliteSynchronous::Normal))
            .await?;
        let store = Self {
            pool,
            bookkeeping,
            options,
            sealer: Arc::new(sealer),
            data_dir: data_dir.to_path_buf(),
            key_source,
            passwords: password_check::PasswordChecks::default(),
        };
        store.finish_pending_rotation(&key_path).await?;
        Ok(store)
    }

    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    pub fn sealer(&self) -> &Sealer {
        &self.sealer
    }

    pub fn key_source(&self) -> &KeySource {
        &self.key_source
    }

    /// Use this pool for password checks (`server.max_password_checks`); set before cloning.
    pub fn with_password_checks(mut self, checks: password_check::PasswordChecks) -> Self {
        self.passwords = checks;
        self
    }

    pub fn password_checks(&self) -> &password_check::PasswordChecks {
        &self.passwords
    }

    pub async fn close(&self) {
        self.bookkeeping.close().await;
        self.pool.close().await;
    }
}

/// A fresh store holding one Microsoft connection named `c`; tests use its id.
#[cfg(test)]
pub(crate) async fn test_store_with_connection() -> (tempfile::TempDir, Store, i64) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), None).await.unwrap();
    let (s, _) = crate::domain::ConnectionInput {
        name: Some("c".into()),
        provider: Some("microsoft".into()),
        user: Some("ops@contoso.com".into()),
        client_id: Some("1b2c3d4e-0000-1111-2222-333344445555".into()),
        ..Default::default()
    }
    .validate()
    .unwrap();
    let id = store.insert_connection(&s).await.unwrap().id;
    (dir, store, id)
}
