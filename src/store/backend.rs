//! Two backends behind one store: which one runs, and the few differences of their SQL.
//!
//! Queries are written once, with SQLite's `?` placeholders, and run through [`on!`] on the
//! active pool (or connection); on PostgreSQL [`Backend::sql`] numbers the placeholders
//! (`$1`, `$2`, …) once per statement text and keeps the result.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

/// One value per backend: the active pool, connection or transaction.
#[derive(Debug)]
pub enum On<S, P> {
    Sqlite(S),
    Postgres(P),
}

impl<'a> From<&'a mut sqlx::SqliteConnection>
    for On<&'a mut sqlx::SqliteConnection, &'a mut sqlx::PgConnection>
{
    fn from(c: &'a mut sqlx::SqliteConnection) -> Self {
        On::Sqlite(c)
    }
}

impl<'a> From<&'a mut sqlx::PgConnection>
    for On<&'a mut sqlx::SqliteConnection, &'a mut sqlx::PgConnection>
{
    fn from(c: &'a mut sqlx::PgConnection) -> Self {
        On::Postgres(c)
    }
}

/// A connection of either backend, for functions that run inside a caller's transaction.
pub type Conn<'a> = On<&'a mut sqlx::SqliteConnection, &'a mut sqlx::PgConnection>;

/// Which backend a statement is written for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }

    pub fn is_postgres(self) -> bool {
        self == Backend::Postgres
    }

    /// `sql` for this backend: as written on SQLite, placeholders numbered on PostgreSQL.
    pub fn sql(self, sql: &'static str) -> &'static str {
        match self {
            Backend::Sqlite => sql,
            Backend::Postgres => numbered_static(sql),
        }
    }

    /// `sql` (built at run time) for this backend.
    pub fn sql_owned(self, sql: String) -> sqlx::AssertSqlSafe<String> {
        match self {
            Backend::Sqlite => sqlx::AssertSqlSafe(sql),
            Backend::Postgres => sqlx::AssertSqlSafe(numbered(&sql)),
        }
    }

    /// The statement written for this backend, where the two differ.
    pub fn pick(self, sqlite: &'static str, postgres: &'static str) -> &'static str {
        match self {
            Backend::Sqlite => sqlite,
            Backend::Postgres => numbered_static(postgres),
        }
    }
}

/// Runs `$body` with `$x` bound to the active backend's value of an [`On`] (a pool, a
/// connection) and `$q` to its [`Backend`]. The body is compiled once per backend, so generic
/// sqlx code (`query_as` into `FromRow` types or tuples, `query_scalar`) serves both.
macro_rules! on {
    ($on:expr, |$x:ident, $q:ident| $body:expr) => {
        match $on {
            $crate::store::On::Sqlite($x) => {
                #[allow(unused_variables)]
                let $q = $crate::store::Backend::Sqlite;
                $body
            }
            $crate::store::On::Postgres($x) => {
                #[allow(unused_variables)]
                let $q = $crate::store::Backend::Postgres;
                $body
            }
        }
    };
}

/// The current time in unix milliseconds, from the database on PostgreSQL (every instance then
/// agrees on what is due and which lease ran out, whatever its own clock says), from this host on
/// SQLite (one host). `$x` is an executor of the backend `$q` names.
macro_rules! db_now_ms {
    ($q:expr, $x:expr) => {
        if $q.is_postgres() {
            sqlx::query_scalar::<_, i64>(
                "SELECT CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)",
            )
            .fetch_one($x)
            .await?
        } else {
            $crate::store::messages::now_ms()
        }
    };
}

/// A value both backends decode the same way.
pub trait Portable:
    Sized
    + for<'r> sqlx::Decode<'r, sqlx::Sqlite>
    + sqlx::Type<sqlx::Sqlite>
    + for<'r> sqlx::Decode<'r, sqlx::Postgres>
    + sqlx::Type<sqlx::Postgres>
{
}

impl<T> Portable for T where
    T: Sized
        + for<'r> sqlx::Decode<'r, sqlx::Sqlite>
        + sqlx::Type<sqlx::Sqlite>
        + for<'r> sqlx::Decode<'r, sqlx::Postgres>
        + sqlx::Type<sqlx::Postgres>
{
}

/// A row of either backend, read by column name: decoders written once take `&impl
/// PortableRow`.
pub trait PortableRow {
    fn try_get<T: Portable>(&self, column: &str) -> Result<T, sqlx::Error>;

    /// A 0/1 flag column (stored as an integer on both backends).
    fn flag(&self, column: &str) -> Result<bool, sqlx::Error> {
        Ok(self.try_get::<i64>(column)? != 0)
    }
}

impl PortableRow for sqlx::sqlite::SqliteRow {
    fn try_get<T: Portable>(&self, column: &str) -> Result<T, sqlx::Error> {
        sqlx::Row::try_get(self, column)
    }
}

impl PortableRow for sqlx::postgres::PgRow {
    fn try_get<T: Portable>(&self, column: &str) -> Result<T, sqlx::Error> {
        sqlx::Row::try_get(self, column)
    }
}

/// A row of either backend (what an untyped `sqlx::query` returns), for code after [`on!`].
pub type AnyRow = On<sqlx::sqlite::SqliteRow, sqlx::postgres::PgRow>;

impl From<sqlx::sqlite::SqliteRow> for AnyRow {
    fn from(r: sqlx::sqlite::SqliteRow) -> Self {
        On::Sqlite(r)
    }
}

impl From<sqlx::postgres::PgRow> for AnyRow {
    fn from(r: sqlx::postgres::PgRow) -> Self {
        On::Postgres(r)
    }
}

impl PortableRow for AnyRow {
    fn try_get<T: Portable>(&self, column: &str) -> Result<T, sqlx::Error> {
        match self {
            On::Sqlite(r) => r.try_get(column),
            On::Postgres(r) => r.try_get(column),
        }
    }
}

/// SQLite's `?` and `?N` placeholders as PostgreSQL's `$N` (outside quoted text).
pub(crate) fn numbered(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 16);
    let mut n = 0;
    let mut quoted = false;
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                quoted = !quoted;
                out.push(c);
            }
            '?' if !quoted => {
                let mut digits = String::new();
                while let Some(d) = chars.peek().filter(|d| d.is_ascii_digit()) {
                    digits.push(*d);
                    chars.next();
                }
                out.push('$');
                if digits.is_empty() {
                    n += 1;
                    out.push_str(&n.to_string());
                } else {
                    out.push_str(&digits);
                }
            }
            _ => out.push(c),
        }
    }
    out
}

/// [`numbered`] for a statement in the program's text, converted once and kept (the set of
/// such statements is fixed, so this holds a bounded amount).
fn numbered_static(sql: &'static str) -> &'static str {
    static DONE: OnceLock<Mutex<HashMap<usize, &'static str>>> = OnceLock::new();
    let done = DONE.get_or_init(Default::default);
    let key = sql.as_ptr() as usize ^ (sql.len() << 48);
    let mut done = done.lock().unwrap_or_else(|e| e.into_inner());
    done.entry(key)
        .or_insert_with(|| Box::leak(numbered(sql).into_boxed_str()))
}

/// A database URL without its password, for messages.
pub(crate) fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("redacted"));
            u.to_string()
        }
        Ok(u) => u.to_string(),
        Err(_) => "(not a URL)".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_numbered_outside_quotes() {
        assert_eq!(
            numbered("SELECT a FROM t WHERE b = ? AND c = '?' AND d IN (?, ?)"),
            "SELECT a FROM t WHERE b = $1 AND c = '?' AND d IN ($2, $3)"
        );
        assert_eq!(
            numbered("x = ?1 OR y = ?1 OR z = ?2"),
            "x = $1 OR y = $1 OR z = $2"
        );
        let s = Backend::Postgres.sql("UPDATE t SET a = ? WHERE id = ?");
        assert_eq!(s, "UPDATE t SET a = $1 WHERE id = $2");
    }

    #[test]
    fn a_url_password_is_not_shown() {
        let shown = redact_url("postgres://postern:hunter2@db.example/postern");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("db.example"), "{shown}");
    }
}
