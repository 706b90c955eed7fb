//! The store: one place for every query, over two backends: SQLite in the data directory (WAL,
//! `synchronous=FULL`; the embedded default) or PostgreSQL (`store.url`, the scale-out store).
//! The API is plain async methods on [`Store`]; callers never see which backend runs. Most
//! queries are one generic sqlx text run on whichever pool is active (the [`on!`] macro); the
//! few that cannot be portable have a PostgreSQL version beside them.

#[macro_use]
mod backend;
mod access;
mod admins;
mod api_key_scope;
mod api_keys;
pub mod attempts;
pub mod auth_failures;
pub mod backup;
mod connection_query;
pub mod connection_watch;
mod connections;
mod consents;
pub mod copy;
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
pub mod owners;
mod refresh_lock;
pub mod relay_users;
pub mod seal;
mod secrets;
mod server_secrets;
mod sessions;
mod tokens;
mod write_turn;
pub use write_turn::Turn;

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

pub use backend::{AnyRow, Backend, Conn, On, PortableRow};

pub use access::AccessError;
pub use admins::{Admin, MIN_PASSWORD_CHARS, check_admin_name};
pub use api_key_scope::ScopedConnection;
pub use api_keys::{ApiKey, ApiRole, NewApiKey};
pub use connection_query::{ConnectionPage, ConnectionQuery, ListQueryError, STATUSES};
pub use connections::ConnectionRow;
pub use consents::{NewConsent, TakenConsent};
pub use import::{ImportCounts, ImportItem};
pub use keyfile::{KeyError, KeySource};
pub use refresh_lock::RefreshLock;
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
    #[error("{0} is not available with the PostgreSQL store (store.url); {1}")]
    Unsupported(&'static str, &'static str),
    #[error(
        "the data key ({0}) does not open the secrets already in the database: every instance on \
         one database needs the same key. Set POSTERN_SECRET_KEY (or store.key_file) to the key \
         the database was written with; a fresh key only suits an empty database"
    )]
    WrongKey(String),
    #[error("store.url `{0}`: {1}")]
    BadUrl(String, String),
}

impl StoreError {
    /// The disk is full: clients get `452 4.3.1`, not a permanent failure.
    pub fn is_disk_full(&self) -> bool {
        match self {
            StoreError::Db(sqlx::Error::Database(e)) => {
                e.code().as_deref() == Some("13")
                    || e.code().as_deref() == Some("53100")
                    || e.message().contains("database or disk is full")
            }
            StoreError::Db(sqlx::Error::Io(e)) => e.raw_os_error() == Some(28),
            StoreError::Batch(e) => e.is_disk_full(),
            _ => false,
        }
    }
}

/// The pools of the active backend.
#[derive(Debug, Clone)]
enum Db {
    Sqlite {
        pool: SqlitePool,
        /// `synchronous=NORMAL`: only for the outbox's claims (and attempt records outside the
        /// writer).
        bookkeeping: SqlitePool,
        /// How to open another connection (the outbox writer's own).
        options: SqliteConnectOptions,
        /// Whose turn it is to write (see [`write_turn`]).
        turn: write_turn::WriteTurn,
    },
    Postgres {
        pool: PgPool,
        /// How to open another connection (the outbox writer's and the listener's own).
        options: PgConnectOptions,
    },
}

/// A handle on the store; cheap to clone.
#[derive(Debug, Clone)]
pub struct Store {
    db: Db,
    sealer: Arc<Sealer>,
    data_dir: PathBuf,
    key_source: KeySource,
    /// argon2id checks of admin and relay passwords: a bounded pool shared by all clones.
    passwords: password_check::PasswordChecks,
    /// Writes of failed-login counts through this handle and its clones (see `auth_failures`).
    auth_writes: Arc<std::sync::atomic::AtomicU64>,
    /// How long a claim on a message lasts (`delivery.lease_secs`), in ms.
    lease_ms: i64,
}

/// The claim length when no setting says otherwise (`delivery.lease_secs`' default).
pub const DEFAULT_LEASE_MS: i64 = 60_000;

/// Renews claims while it lives (see [`Store::keep_claims`]).
#[derive(Debug)]
pub struct ClaimKeeper(Option<tokio::task::JoinHandle<()>>);

impl Drop for ClaimKeeper {
    fn drop(&mut self) {
        if let Some(task) = self.0.take() {
            task.abort();
        }
    }
}

/// The data directory holds the database and key: only its owner may enter it.
pub(crate) fn create_private_dir(dir: &Path) -> std::io::Result<()> {
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
    /// Opens the store the settings name: PostgreSQL at `store.url` when set, else SQLite in
    /// `store.data_dir`.
    pub async fn open_settings(s: &crate::settings::StoreSettings) -> Result<Self, StoreError> {
        Self::open_url(s.url.as_deref(), &s.data_dir, s.key_file.as_deref()).await
    }

    /// Opens the store at `url` (`postgres://…`), or SQLite in `data_dir` when `url` is None.
    /// The key comes from the environment or `key_file` (default `<data_dir>/secret.key`) either
    /// way: it belongs to the deployment, not to the database.
    pub async fn open_url(
        url: Option<&str>,
        data_dir: &Path,
        key_file: Option<&Path>,
    ) -> Result<Self, StoreError> {
        match url.map(str::trim).filter(|u| !u.is_empty()) {
            None => Self::open(data_dir, key_file).await,
            Some(u) => Self::open_postgres(u, data_dir, key_file).await,
        }
    }

    /// Opens (creating if needed) the SQLite store in `data_dir`, with the key from the
    /// environment or `key_file` (default `<data_dir>/secret.key`).
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
        sqlx::migrate!("./migrations/sqlite").run(&pool).await?;
        // Delivery bookkeeping (claims, attempt records) does not wait for the disk: after a
        // power loss the last of it may be gone, and those messages are sent again, which
        // at-least-once allows. The next FULL commit makes everything before it durable too.
        let bookkeeping = SqlitePoolOptions::new()
            .max_connections(1)
            .test_before_acquire(false)
            .connect_with(options.clone().synchronous(SqliteSynchronous::Normal))
            .await?;
        let store = Self {
            db: Db::Sqlite {
                pool,
                bookkeeping,
                options,
                turn: write_turn::WriteTurn::default(),
            },
            sealer: Arc::new(sealer),
            data_dir: data_dir.to_path_buf(),
            key_source,
            passwords: password_check::PasswordChecks::default(),
            auth_writes: Arc::default(),
            lease_ms: DEFAULT_LEASE_MS,
        };
        store.finish_pending_rotation(&key_path).await?;
        store.check_key().await?;
        Ok(store)
    }

    /// Opens the PostgreSQL store at `url`, applying its migrations (sqlx's migrator holds an
    /// advisory lock meanwhile, so instances starting together take turns).
    async fn open_postgres(
        url: &str,
        data_dir: &Path,
        key_file: Option<&Path>,
    ) -> Result<Self, StoreError> {
        let options = PgConnectOptions::from_str(url)
            .map_err(|e| StoreError::BadUrl(backend::redact_url(url), e.to_string()))?
            // A commit returns once the WAL is flushed here (and on a synchronous standby when
            // the server names one): what a `250` promises. Set here so that a server default
            // of `off` cannot weaken it.
            .options([("synchronous_commit", "on")])
            .application_name("postern");
        // The key is still per deployment; with POSTERN_SECRET_KEY no file is needed at all.
        let key_path = key_file
            .map(Path::to_path_buf)
            .unwrap_or_else(|| data_dir.join(KEY_FILE));
        if std::env::var_os(keyfile::KEY_ENV).is_none()
            && let Some(parent) = key_path.parent().filter(|p| !p.as_os_str().is_empty())
        {
            create_private_dir(parent).map_err(|source| StoreError::DataDir {
                path: parent.to_path_buf(),
                source,
            })?;
        }
        let (key, key_source) = keyfile::load_or_create(&key_path)?;
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options.clone())
            .await?;
        sqlx::migrate!("./migrations/postgres").run(&pool).await?;
        let store = Self {
            db: Db::Postgres { pool, options },
            sealer: Arc::new(Sealer::new(key)),
            data_dir: data_dir.to_path_buf(),
            key_source,
            passwords: password_check::PasswordChecks::default(),
            auth_writes: Arc::default(),
            lease_ms: DEFAULT_LEASE_MS,
        };
        store.check_key().await?;
        Ok(store)
    }

    /// Refuses a data key that does not open the secrets already stored: sealing new secrets
    /// with it would leave the database with two keys and no way to read half of it.
    async fn check_key(&self) -> Result<(), StoreError> {
        let sample: Option<(String, Vec<u8>)> = on!(self.db(), |pool, q| {
            sqlx::query_as(q.sql(
                "SELECT 'postern/server/' || name, sealed FROM server_secrets \
                 UNION ALL SELECT 'postern/connection/' || CAST(connection_id AS TEXT) || '/' || kind, sealed \
                 FROM secrets LIMIT 1",
            ))
            .fetch_optional(pool)
            .await?
        });
        let Some((aad, sealed)) = sample else {
            return Ok(());
        };
        if self.sealer.open(&sealed, &aad).is_err() {
            let source = match &self.key_source {
                KeySource::Env => keyfile::KEY_ENV.to_string(),
                KeySource::File(p) => format!("key file {}", p.display()),
            };
            return Err(StoreError::WrongKey(source));
        }
        Ok(())
    }

    /// The active pools, for [`on!`] (and tests that change rows directly).
    pub fn db(&self) -> On<&SqlitePool, &PgPool> {
        match &self.db {
            Db::Sqlite { pool, .. } => On::Sqlite(pool),
            Db::Postgres { pool, .. } => On::Postgres(pool),
        }
    }

    /// The pool for delivery bookkeeping (SQLite: `synchronous=NORMAL`).
    pub(crate) fn bookkeeping(&self) -> On<&SqlitePool, &PgPool> {
        match &self.db {
            Db::Sqlite { bookkeeping, .. } => On::Sqlite(bookkeeping),
            Db::Postgres { pool, .. } => On::Postgres(pool),
        }
    }

    pub fn backend(&self) -> Backend {
        match &self.db {
            Db::Sqlite { .. } => Backend::Sqlite,
            Db::Postgres { .. } => Backend::Postgres,
        }
    }

    /// The SQLite pool, for what only SQLite does (backups, integrity checks): `what` names the
    /// operation in the error on PostgreSQL, `instead` what to do there.
    pub fn sqlite_pool(
        &self,
        what: &'static str,
        instead: &'static str,
    ) -> Result<&SqlitePool, StoreError> {
        match &self.db {
            Db::Sqlite { pool, .. } => Ok(pool),
            Db::Postgres { .. } => Err(StoreError::Unsupported(what, instead)),
        }
    }

    /// Whether the database answers (for `/healthz`).
    pub async fn ping(&self) -> Result<(), StoreError> {
        let _: i64 = on!(self.db(), |pool, q| {
            sqlx::query_scalar(q.sql("SELECT CAST(1 AS BIGINT)"))
                .fetch_one(pool)
                .await?
        });
        Ok(())
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

    /// Claims last `secs` (`delivery.lease_secs`); set before cloning.
    pub fn with_lease_secs(mut self, secs: u64) -> Self {
        self.lease_ms = i64::try_from(secs.max(1).saturating_mul(1000)).unwrap_or(i64::MAX);
        self
    }

    /// How long a claim on a message lasts, in ms.
    pub fn lease_ms(&self) -> i64 {
        self.lease_ms
    }

    /// Keeps the claims on `ids` alive while the returned guard lives: renewed every third of
    /// the lease, so only a claimer that stopped (died, hung) loses them. SQLite needs none:
    /// one process claims, and it returns its claims only at restart.
    pub fn keep_claims(&self, claims: Vec<messages::Lease>) -> ClaimKeeper {
        if !self.backend().is_postgres() || claims.is_empty() {
            return ClaimKeeper(None);
        }
        let store = self.clone();
        let every = Duration::from_millis((self.lease_ms / 3).max(100) as u64);
        ClaimKeeper(Some(tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                if let Err(e) = store.extend_claims(&claims).await {
                    tracing::warn!(error = %e, "could not renew message claims");
                }
            }
        })))
    }

    /// Moves the end of `claims` (still `sending`, still held) to a lease from now; returns how
    /// many were renewed (a claim taken over by another is not).
    pub async fn extend_claims(&self, claims: &[messages::Lease]) -> Result<u64, StoreError> {
        let _turn = self.write_turn().await;
        let mut n = 0;
        for chunk in claims.chunks(500) {
            n += on!(self.bookkeeping(), |pool, q| {
                let t = db_now_ms!(q, pool);
                let sql = format!(
                    "UPDATE messages SET lease_until = ? WHERE status = 'sending' \
                     AND (id, lease_id) IN (VALUES {})",
                    vec!["(?, ?)"; chunk.len()].join(", ")
                );
                let mut query = sqlx::query(q.sql_owned(sql)).bind(t + self.lease_ms);
                for c in chunk {
                    query = query.bind(&c.id).bind(c.lease_id);
                }
                query.execute(pool).await?.rows_affected()
            });
        }
        Ok(n)
    }

    pub async fn close(&self) {
        match &self.db {
            Db::Sqlite {
                pool, bookkeeping, ..
            } => {
                bookkeeping.close().await;
                pool.close().await;
            }
            Db::Postgres { pool, .. } => pool.close().await,
        }
    }
}

/// The PostgreSQL server tests run against a second time (`postgres://…/postgres`): each test
/// gets a database of its own there. Unset: the tests use SQLite only.
pub const TEST_STORE_URL: &str = "POSTERN_TEST_STORE_URL";

/// A fresh, empty PostgreSQL database on the test server named by [`TEST_STORE_URL`], as a URL;
/// None when the variable is unset.
pub async fn fresh_test_database() -> Option<String> {
    use sqlx::ConnectOptions as _;
    let server = std::env::var(TEST_STORE_URL)
        .ok()
        .filter(|u| !u.trim().is_empty())?;
    let name = format!("postern_test_{}", uuid::Uuid::new_v4().simple());
    let mut admin = PgConnectOptions::from_str(&server)
        .unwrap_or_else(|e| panic!("{TEST_STORE_URL}: {e}"))
        .connect()
        .await
        .unwrap_or_else(|e| panic!("{TEST_STORE_URL}: cannot connect: {e}"));
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin)
        .await
        .unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {e}"));
    let mut url = url::Url::parse(&server).unwrap_or_else(|e| panic!("{TEST_STORE_URL}: {e}"));
    url.set_path(&format!("/{name}"));
    Some(url.to_string())
}

/// The store a test uses: on the PostgreSQL test server when [`TEST_STORE_URL`] is set (a fresh
/// database), else SQLite in `dir`. The key file lives in `dir` either way.
pub async fn test_store(dir: &Path) -> Store {
    let url = fresh_test_database().await;
    Store::open_url(url.as_deref(), dir, None).await.unwrap()
}

/// A fresh store holding one Microsoft connection named `c`; tests use its id.
#[cfg(test)]
pub(crate) async fn test_store_with_connection() -> (tempfile::TempDir, Store, i64) {
    let dir = tempfile::tempdir().unwrap();
    let store = test_store(dir.path()).await;
    let id = insert_test_connection(&store).await;
    (dir, store, id)
}

/// Adds a Microsoft connection named `c` to `store`; returns its id.
#[cfg(test)]
pub(crate) async fn insert_test_connection(store: &Store) -> i64 {
    let (s, _) = crate::domain::ConnectionInput {
        name: Some("c".into()),
        provider: Some("microsoft".into()),
        user: Some("ops@contoso.com".into()),
        client_id: Some("1b2c3d4e-0000-1111-2222-333344445555".into()),
        ..Default::default()
    }
    .validate()
    .unwrap();
    store.insert_connection(&s).await.unwrap().id
}

#[cfg(test)]
mod postgres_parity {
    use super::*;

    /// Says whether this run covers PostgreSQL: without [`TEST_STORE_URL`] the store tests ran
    /// on SQLite only, which is fine on a laptop and a failure in CI (CI=true), where the
    /// PostgreSQL run must happen.
    #[tokio::test]
    async fn the_postgresql_run_happens_in_ci() {
        if std::env::var_os(TEST_STORE_URL).is_none() {
            // .ci/run's first pass is SQLite's and says so; its PostgreSQL pass follows.
            if std::env::var_os("POSTERN_TEST_SQLITE_PASS").is_some() {
                eprintln!("skipped: the SQLite pass of CI; .ci/run runs the PostgreSQL pass next");
                return;
            }
            let ci = std::env::var("CI").is_ok_and(|v| v == "true");
            assert!(
                !ci,
                "CI=true but {TEST_STORE_URL} is not set: the PostgreSQL run of the store tests \
                 did not happen (.ci/run starts a cluster with scripts/pg-cluster.sh)"
            );
            eprintln!(
                "skipped: the PostgreSQL runs of the store tests need {TEST_STORE_URL} (a server \
                 URL; `scripts/pg-cluster.sh start DIR` starts a private one and prints it)"
            );
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let store = test_store(dir.path()).await;
        assert_eq!(store.backend(), Backend::Postgres);
        store.ping().await.unwrap();
    }

    /// A key other than the one the database's secrets were sealed with is refused at start.
    #[tokio::test]
    async fn a_store_refuses_a_key_that_does_not_open_its_secrets() {
        let (dir, store, id) = test_store_with_connection().await;
        let secret = secrecy::SecretString::from("s3cret".to_string());
        store
            .put_secret(id, SecretKind::ClientSecret, &secret, None)
            .await
            .unwrap();
        let url = match &store.db {
            Db::Postgres { options, .. } => Some(options.clone()),
            Db::Sqlite { .. } => None,
        };
        store.close().await;
        let other = tempfile::tempdir().unwrap();
        let other_key = other.path().join("other.key");
        keyfile::load_or_create(&other_key).unwrap();
        let err = match url {
            None => Store::open(dir.path(), Some(&other_key)).await.unwrap_err(),
            Some(options) => {
                let pool = PgPoolOptions::new()
                    .max_connections(1)
                    .connect_with(options.clone())
                    .await
                    .unwrap();
                let store = Store {
                    db: Db::Postgres { pool, options },
                    sealer: Arc::new(Sealer::new(keyfile::load_or_create(&other_key).unwrap().0)),
                    data_dir: dir.path().to_path_buf(),
                    key_source: KeySource::File(other_key.clone()),
                    passwords: password_check::PasswordChecks::default(),
                    auth_writes: Arc::default(),
                    lease_ms: DEFAULT_LEASE_MS,
                };
                store.check_key().await.unwrap_err()
            }
        };
        assert!(matches!(err, StoreError::WrongKey(_)), "{err}");
        assert!(err.to_string().contains("other.key"), "{err}");
    }
}
