//! `postern store copy`: the whole store from one database to another (SQLite ⇄ PostgreSQL),
//! read from one snapshot of the source and written in one transaction on the target. Sealed
//! secrets are copied as stored (never opened): the copy needs the same data key.
//!
//! Tables and columns come from the two schemas, not from a list here: a table or column
//! added by a later migration is copied without a change to this file, and a source column the
//! target lacks stops the copy instead of being dropped.

mod rows;
pub mod schema;

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use futures::TryStreamExt as _;
use sqlx::Connection as _;
use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqliteSynchronous};

use super::backend::redact_url;
use super::{Conn, DB_FILE, On};
use schema::{CopyTable, quote};

/// Rows per INSERT at most (and fewer for wide tables: each value is a bind parameter).
const BATCH_ROWS: usize = 500;
/// Bytes per INSERT at most, about: queued bodies can be megabytes each.
const BATCH_BYTES: usize = 4 << 20;
/// The application name of the copy's PostgreSQL sessions (a running serve's is `postern`).
const APP_NAME: &str = "postern store copy";

/// Where a store lives: a SQLite file or a PostgreSQL database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    Sqlite(PathBuf),
    Postgres(String),
}

impl Endpoint {
    /// `postgres://…` (or `postgresql://…`), `sqlite:///path/postern.db`, or a plain path: a
    /// data directory (its `postern.db`), or a database file that already exists.
    pub fn parse(text: &str) -> Result<Self, CopyError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(CopyError::BadEndpoint(
                "an empty store: give postgres://USER@HOST/DB, sqlite:///PATH/postern.db or a data directory".into(),
            ));
        }
        if text.starts_with("postgres://") || text.starts_with("postgresql://") {
            PgConnectOptions::from_str(text)
                .map_err(|e| CopyError::BadEndpoint(format!("{}: {e}", redact_url(text))))?;
            return Ok(Endpoint::Postgres(text.to_string()));
        }
        let path = if let Some(rest) = text.strip_prefix("sqlite://") {
            let rest = rest.split('?').next().unwrap_or_default();
            if rest.is_empty() {
                return Err(CopyError::BadEndpoint(format!(
                    "{text} names no file: write sqlite:///PATH/postern.db (three slashes for an absolute path)"
                )));
            }
            let path = PathBuf::from(rest);
            if path.is_dir() {
                path.join(DB_FILE)
            } else {
                path
            }
        } else if text.contains("://") {
            return Err(CopyError::BadEndpoint(format!(
                "{}: not a store this copies: give postgres://USER@HOST/DB, sqlite:///PATH/postern.db or a data directory",
                redact_url(text)
            )));
        } else {
            let path = PathBuf::from(text);
            if path.is_file() {
                path
            } else {
                path.join(DB_FILE)
            }
        };
        Ok(Endpoint::Sqlite(path))
    }

    /// The store's data directory (SQLite) or URL without its password, for messages.
    pub fn describe(&self) -> String {
        match self {
            Endpoint::Sqlite(p) => format!("SQLite {}", p.display()),
            Endpoint::Postgres(u) => format!("PostgreSQL {}", redact_url(u)),
        }
    }

    /// How to empty this store to copy into it again.
    fn start_over(&self) -> String {
        match self {
            Endpoint::Sqlite(p) => format!(
                "copy into a new file, or remove {} (with its -wal and -shm files) and copy again",
                p.display()
            ),
            Endpoint::Postgres(u) => {
                let db = url::Url::parse(u)
                    .ok()
                    .map(|u| u.path().trim_start_matches('/').to_string())
                    .filter(|d| !d.is_empty())
                    .unwrap_or_else(|| "DB".into());
                format!(
                    "copy into a new database, or recreate this one (DROP DATABASE {db}; CREATE DATABASE {db};) and copy again"
                )
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error("{0}")]
    BadEndpoint(String),
    #[error("there is no store at {0}: name the database file (or data directory) to copy from")]
    NoSource(PathBuf),
    #[error("the source and the target are the same store ({0}): name another target")]
    Same(String),
    #[error("{0}")]
    InUse(String),
    #[error(
        "the target is not empty: table `{table}` has {rows} rows (a copy only goes into an empty store, so that nothing there is mixed with or lost to the copy): {how}"
    )]
    NotEmpty {
        table: String,
        rows: i64,
        how: String,
    },
    #[error(
        "the source has table `{0}`, which the target's schema lacks: the source was written by a newer postern than this one; copy with that version. Nothing was copied"
    )]
    MissingTable(String),
    #[error(
        "the source has column `{table}.{column}`, which the target's schema lacks: the source was written by a newer postern than this one; copy with that version. Nothing was copied"
    )]
    MissingColumn { table: String, column: String },
    #[error("`{table}.{column}` holds {ty}, which the copy cannot carry over. Nothing was copied")]
    UnsupportedType {
        table: String,
        column: String,
        ty: String,
    },
    #[error(
        "table `{table}`: {source_rows} rows in the source, {target_rows} in the target after the copy. Nothing was copied (the target's transaction was rolled back)"
    )]
    CountMismatch {
        table: String,
        source_rows: i64,
        target_rows: i64,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("migrating the target: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

impl CopyError {
    /// The caller's mistake (exit 2): what was named, or the state of the stores.
    pub fn is_refusal(&self) -> bool {
        !matches!(
            self,
            CopyError::Db(_) | CopyError::Migrate(_) | CopyError::Io { .. }
        )
    }
}

/// What a copy did: each table with its rows (verified on the target), in copy order.
#[derive(Debug, Clone, Default)]
pub struct Copied {
    pub tables: Vec<(String, i64)>,
    /// Messages that were being sent in the source (claimed), queued again in the copy.
    pub requeued: u64,
    /// Tables left behind (sessions, consents in progress).
    pub skipped: Vec<String>,
}

/// One open database of either backend.
type Link = On<SqliteConnection, PgConnection>;

fn conn(link: &mut Link) -> Conn<'_> {
    match link {
        On::Sqlite(c) => On::Sqlite(c),
        On::Postgres(c) => On::Postgres(c),
    }
}

async fn run(link: &mut Link, sql: &'static str) -> Result<(), sqlx::Error> {
    match link {
        On::Sqlite(c) => sqlx::raw_sql(sql).execute(c).await.map(drop),
        On::Postgres(c) => sqlx::raw_sql(sql).execute(c).await.map(drop),
    }
}

async fn count(link: &mut Link, table: &str) -> Result<i64, sqlx::Error> {
    let sql = sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM {}", quote(table)));
    match link {
        On::Sqlite(c) => sqlx::query_scalar(sql).fetch_one(c).await,
        On::Postgres(c) => sqlx::query_scalar(sql).fetch_one(c).await,
    }
}

/// Keeps the data directory of a SQLite store from a `serve` while the copy runs (the lock a
/// restore takes); refuses when one runs now.
fn lock_sqlite(db: &Path, role: &str) -> Result<Option<std::fs::File>, CopyError> {
    let dir = db
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if !dir.is_dir() {
        return Ok(None);
    }
    let io = |source| CopyError::Io {
        path: dir.to_path_buf(),
        source,
    };
    match super::backup::lock_for_restore(dir).map_err(io)? {
        Some(lock) => Ok(Some(lock)),
        None => Err(CopyError::InUse(format!(
            "a running `postern serve` uses the {role} ({}): stop it, then copy (mail it accepted after the copy began would not be in the copy)",
            dir.display()
        ))),
    }
}

async fn open_postgres(url: &str) -> Result<PgConnection, CopyError> {
    let options = PgConnectOptions::from_str(url)
        .map_err(|e| CopyError::BadEndpoint(format!("{}: {e}", redact_url(url))))?
        .application_name(APP_NAME);
    Ok(PgConnection::connect_with(&options).await?)
}

/// Refuses a PostgreSQL store that a `serve` (or any other postern) is connected to.
async fn refuse_if_served(c: &mut PgConnection, role: &str) -> Result<(), CopyError> {
    // Looked at a few times over 2 s: a postern command that just ended may still be listed
    // while its server process exits.
    let mut others: i64 = 0;
    for _ in 0..10 {
        others = sqlx::query_scalar(
            "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = current_database() \
             AND application_name = 'postern' AND pid <> pg_backend_pid()",
        )
        .fetch_one(&mut *c)
        .await?;
        if others == 0 {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    if others > 0 {
        return Err(CopyError::InUse(format!(
            "{others} postern sessions are connected to the {role} database: stop every `postern serve` on it, then copy (mail accepted after the copy began would not be in the copy)"
        )));
    }
    Ok(())
}

/// The source, opened read-only.
async fn open_source(from: &Endpoint) -> Result<(Link, Option<std::fs::File>), CopyError> {
    match from {
        Endpoint::Sqlite(path) => {
            if !path.is_file() {
                return Err(CopyError::NoSource(path.clone()));
            }
            let lock = lock_sqlite(path, "source")?;
            let options = SqliteConnectOptions::new()
                .filename(path)
                .read_only(true)
                .busy_timeout(Duration::from_secs(10));
            Ok((
                On::Sqlite(SqliteConnection::connect_with(&options).await?),
                lock,
            ))
        }
        Endpoint::Postgres(url) => {
            let mut c = open_postgres(url).await?;
            refuse_if_served(&mut c, "source").await?;
            Ok((On::Postgres(c), None))
        }
    }
}

/// The target, opened (created for SQLite) as `serve` opens it.
async fn open_target(to: &Endpoint) -> Result<(Link, Option<std::fs::File>), CopyError> {
    match to {
        Endpoint::Sqlite(path) => {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                super::create_private_dir(dir).map_err(|source| CopyError::Io {
                    path: dir.to_path_buf(),
                    source,
                })?;
            }
            let lock = lock_sqlite(path, "target")?;
            let options = SqliteConnectOptions::new()
                .filename(path)
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Full)
                .busy_timeout(Duration::from_secs(10))
                .foreign_keys(true);
            Ok((
                On::Sqlite(SqliteConnection::connect_with(&options).await?),
                lock,
            ))
        }
        Endpoint::Postgres(url) => {
            let mut c = open_postgres(url).await?;
            refuse_if_served(&mut c, "target").await?;
            Ok((On::Postgres(c), None))
        }
    }
}

/// Refuses a target with rows in any table (transient ones too: a store in use).
async fn refuse_if_not_empty(target: &mut Link, to: &Endpoint) -> Result<(), CopyError> {
    for table in schema::tables(conn(target)).await? {
        let rows = count(target, &table.name).await?;
        if rows > 0 {
            return Err(CopyError::NotEmpty {
                table: table.name,
                rows,
                how: to.start_over(),
            });
        }
    }
    Ok(())
}

/// Copies the store at `from` into the empty store at `to`. `progress` hears (table, rows
/// copied so far, rows in the table) after each batch.
pub async fn copy(
    from: &Endpoint,
    to: &Endpoint,
    progress: &mut dyn FnMut(&str, i64, i64),
) -> Result<Copied, CopyError> {
    if from == to {
        return Err(CopyError::Same(from.describe()));
    }
    if let (Endpoint::Sqlite(a), Endpoint::Sqlite(b)) = (from, to)
        && let (Ok(a), Ok(b)) = (a.canonicalize(), b.canonicalize())
        && a == b
    {
        return Err(CopyError::Same(from.describe()));
    }
    let (mut source, _source_lock) = open_source(from).await?;
    let (mut target, _target_lock) = open_target(to).await?;

    // Checked before the migrations too: a store in use is refused before anything is written.
    refuse_if_not_empty(&mut target, to).await?;
    match &mut target {
        On::Sqlite(c) => sqlx::migrate!("./migrations/sqlite").run(c).await?,
        On::Postgres(c) => sqlx::migrate!("./migrations/postgres").run(c).await?,
    }

    // One snapshot of the source; the target in one transaction (taking SQLite's write lock now).
    let snapshot = match source {
        On::Sqlite(_) => "BEGIN",
        On::Postgres(_) => "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
    };
    run(&mut source, snapshot).await?;
    let write = match target {
        On::Sqlite(_) => "BEGIN IMMEDIATE",
        On::Postgres(_) => "BEGIN",
    };
    run(&mut target, write).await?;
    refuse_if_not_empty(&mut target, to).await?;
    let source_tables = schema::tables(conn(&mut source)).await?;
    let target_tables = schema::tables(conn(&mut target)).await?;
    let fks = schema::foreign_keys(conn(&mut target), &target_tables).await?;
    let plan = schema::plan(&source_tables, &target_tables, &fks)?;

    let mut copied = Copied {
        skipped: source_tables
            .iter()
            .filter(|t| schema::TRANSIENT.contains(&t.name.as_str()))
            .map(|t| t.name.clone())
            .collect(),
        ..Default::default()
    };
    let mut expected = Vec::new();
    for table in &plan {
        let total = count(&mut source, &table.name).await?;
        let rows = copy_table(&mut source, &mut target, table, total, progress).await?;
        expected.push((table.name.clone(), total, rows));
    }
    if let Some(messages) = target_tables.iter().find(|t| t.name == "messages") {
        copied.requeued = requeue(&mut target, messages).await?;
    }
    if let On::Postgres(c) = &mut target {
        advance_sequences(c).await?;
    }
    for (table, total, rows) in expected {
        let in_target = count(&mut target, &table).await?;
        if in_target != total || rows != total {
            return Err(CopyError::CountMismatch {
                table,
                source_rows: total,
                target_rows: in_target,
            });
        }
        copied.tables.push((table, in_target));
    }
    run(&mut target, "COMMIT").await?;
    run(&mut source, "ROLLBACK").await?;
    match target {
        On::Sqlite(c) => c.close().await?,
        On::Postgres(c) => c.close().await?,
    }
    Ok(copied)
}

/// Streams one table from the source into the target, in bounded batches; the rows copied.
async fn copy_table(
    source: &mut Link,
    target: &mut Link,
    table: &CopyTable,
    total: i64,
    progress: &mut dyn FnMut(&str, i64, i64),
) -> Result<i64, CopyError> {
    let columns: Vec<String> = table.columns.iter().map(|c| quote(c)).collect();
    let sql = format!("SELECT {} FROM {}", columns.join(", "), quote(&table.name));
    let max_rows = (30_000 / table.columns.len().max(1)).clamp(1, BATCH_ROWS);
    let mut batch = Vec::new();
    let mut bytes = 0;
    let mut done = 0i64;
    progress(&table.name, 0, total);
    macro_rules! stream {
        ($c:expr, $read:path) => {{
            let mut stream = sqlx::query(sqlx::AssertSqlSafe(sql)).fetch($c);
            while let Some(row) = stream.try_next().await? {
                let values = $read(table, &row)?;
                bytes += values.iter().map(rows::Value::size).sum::<usize>();
                batch.push(values);
                if batch.len() >= max_rows || bytes >= BATCH_BYTES {
                    done += batch.len() as i64;
                    rows::insert(conn(target), table, std::mem::take(&mut batch)).await?;
                    bytes = 0;
                    progress(&table.name, done, total);
                }
            }
        }};
    }
    match source {
        On::Sqlite(c) => stream!(c, rows::read_sqlite),
        On::Postgres(c) => stream!(c, rows::read_postgres),
    }
    if !batch.is_empty() {
        done += batch.len() as i64;
        rows::insert(conn(target), table, batch).await?;
        progress(&table.name, done, total);
    }
    Ok(done)
}

/// Messages claimed by a sender in the source (`sending`, with a lease) come out queued and
/// due in the copy, as a restart would return them: no instance of the copy holds their claim.
async fn requeue(target: &mut Link, messages: &schema::Table) -> Result<u64, CopyError> {
    let has = |c: &str| messages.columns.iter().any(|(n, _)| n == c);
    if !has("status") {
        return Ok(0);
    }
    let mut sets = vec!["status = 'queued'".to_string()];
    if has("attempts") {
        // The claim counted an attempt that never reached the provider.
        sets.push("attempts = CASE WHEN attempts > 0 THEN attempts - 1 ELSE 0 END".into());
    }
    // Every lease column (lease_until, and any added later), cleared.
    sets.extend(
        messages
            .columns
            .iter()
            .filter(|(n, _)| n.starts_with("lease_"))
            .map(|(n, _)| format!("{} = NULL", quote(n))),
    );
    let sql = sqlx::AssertSqlSafe(format!(
        "UPDATE messages SET {} WHERE status = 'sending'",
        sets.join(", ")
    ));
    Ok(match target {
        On::Sqlite(c) => sqlx::query(sql).execute(c).await?.rows_affected(),
        On::Postgres(c) => sqlx::query(sql).execute(c).await?.rows_affected(),
    })
}

/// Moves each identity or serial sequence past the ids the copy wrote, so the next row the
/// copy's `serve` inserts does not collide with a copied one.
async fn advance_sequences(c: &mut PgConnection) -> Result<(), CopyError> {
    let columns: Vec<(String, String)> = sqlx::query_as(
        "SELECT table_name::text, column_name::text FROM information_schema.columns \
         WHERE table_schema = current_schema() \
         AND (is_identity = 'YES' OR column_default LIKE 'nextval(%')",
    )
    .fetch_all(&mut *c)
    .await?;
    for (table, column) in columns {
        let sql = format!(
            "SELECT setval(pg_get_serial_sequence($1, $2), COALESCE(MAX({}), 0) + 1, false) FROM {}",
            quote(&column),
            quote(&table)
        );
        let _: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .bind(quote(&table))
            .bind(&column)
            .fetch_one(&mut *c)
            .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stores_are_named_by_url_or_directory() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display().to_string();
        assert_eq!(
            Endpoint::parse(&d).unwrap(),
            Endpoint::Sqlite(dir.path().join(DB_FILE))
        );
        assert_eq!(
            Endpoint::parse("sqlite:///var/lib/postern/postern.db").unwrap(),
            Endpoint::Sqlite("/var/lib/postern/postern.db".into())
        );
        assert_eq!(
            Endpoint::parse(&format!("sqlite://{d}")).unwrap(),
            Endpoint::Sqlite(dir.path().join(DB_FILE)),
            "a sqlite URL naming a directory means its postern.db"
        );
        assert!(matches!(
            Endpoint::parse("postgres://u:pw@db.example/postern").unwrap(),
            Endpoint::Postgres(_)
        ));
        let err = Endpoint::parse("mysql://u:hunter2@db/x").unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
        assert!(err.to_string().contains("postgres://"), "{err}");
        assert!(Endpoint::parse("sqlite://").is_err());
    }

    #[test]
    fn a_non_empty_target_says_how_to_start_over() {
        let pg = Endpoint::parse("postgres://u@db.example/postern").unwrap();
        assert!(pg.start_over().contains("DROP DATABASE postern"));
        let lite = Endpoint::parse("sqlite:///srv/p/postern.db").unwrap();
        assert!(lite.start_over().contains("/srv/p/postern.db"));
    }
}
