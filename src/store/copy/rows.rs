//! Rows in flight: values read from either backend by the type the value has, and written to
//! either backend by the type the target's column has.

use sqlx::{Row as _, TypeInfo as _, ValueRef as _};

use super::CopyError;
use super::schema::{CopyTable, quote};
use crate::store::Conn;

/// One value of a row, as both backends can hold it.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
    Blob(Vec<u8>),
}

impl Value {
    /// About how much memory it takes (batches are bounded by it: bodies can be large).
    pub fn size(&self) -> usize {
        match self {
            Value::Text(s) => s.len() + 16,
            Value::Blob(b) => b.len() + 16,
            _ => 16,
        }
    }
}

fn unsupported(table: &CopyTable, i: usize, ty: &str) -> CopyError {
    CopyError::UnsupportedType {
        table: table.name.clone(),
        column: table.columns[i].clone(),
        ty: ty.to_string(),
    }
}

/// A SQLite row's values, by the storage class each value has (SQLite types values, not
/// columns).
pub fn read_sqlite(
    table: &CopyTable,
    row: &sqlx::sqlite::SqliteRow,
) -> Result<Vec<Value>, CopyError> {
    let mut values = Vec::with_capacity(table.columns.len());
    for i in 0..table.columns.len() {
        let raw = row.try_get_raw(i)?;
        if raw.is_null() {
            values.push(Value::Null);
            continue;
        }
        let ty = raw.type_info().name().to_string();
        values.push(match ty.as_str() {
            "INTEGER" => Value::Int(row.try_get_unchecked(i)?),
            "REAL" => Value::Real(row.try_get_unchecked(i)?),
            "TEXT" => Value::Text(row.try_get_unchecked(i)?),
            "BLOB" => Value::Blob(row.try_get_unchecked(i)?),
            other => return Err(unsupported(table, i, other)),
        });
    }
    Ok(values)
}

/// A PostgreSQL row's values, by each column's type.
pub fn read_postgres(
    table: &CopyTable,
    row: &sqlx::postgres::PgRow,
) -> Result<Vec<Value>, CopyError> {
    let mut values = Vec::with_capacity(table.columns.len());
    for i in 0..table.columns.len() {
        let raw = row.try_get_raw(i)?;
        if raw.is_null() {
            values.push(Value::Null);
            continue;
        }
        let ty = raw.type_info().name().to_string();
        values.push(match ty.as_str() {
            "INT8" => Value::Int(row.try_get::<i64, _>(i)?),
            "INT4" => Value::Int(row.try_get::<i32, _>(i)?.into()),
            "INT2" => Value::Int(row.try_get::<i16, _>(i)?.into()),
            "BOOL" => Value::Int(row.try_get::<bool, _>(i)?.into()),
            "FLOAT8" => Value::Real(row.try_get(i)?),
            "FLOAT4" => Value::Real(row.try_get::<f32, _>(i)?.into()),
            "TEXT" | "VARCHAR" | "BPCHAR" | "NAME" => Value::Text(row.try_get(i)?),
            "BYTEA" => Value::Blob(row.try_get(i)?),
            other => return Err(unsupported(table, i, other)),
        });
    }
    Ok(values)
}

/// The value as the integer a PostgreSQL integer column takes (SQLite may hold `'7'`).
fn as_int(v: Value) -> Option<i64> {
    match v {
        Value::Int(n) => Some(n),
        Value::Real(f) if f.fract() == 0.0 => Some(f as i64),
        Value::Text(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn as_text(v: Value) -> Option<String> {
    match v {
        Value::Text(s) => Some(s),
        Value::Int(n) => Some(n.to_string()),
        Value::Real(f) => Some(f.to_string()),
        Value::Blob(b) => String::from_utf8(b).ok(),
        Value::Null => None,
    }
}

type PgQuery<'q> = sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>;

/// Binds `v` as the type of the PostgreSQL column (`data_type`); None when it does not fit.
fn bind_postgres<'q>(q: PgQuery<'q>, ty: &str, v: Value) -> Option<PgQuery<'q>> {
    let null = v == Value::Null;
    Some(match ty {
        "bigint" => q.bind(if null { None } else { Some(as_int(v)?) }),
        "integer" => q.bind(if null {
            None
        } else {
            Some(i32::try_from(as_int(v)?).ok()?)
        }),
        "smallint" => q.bind(if null {
            None
        } else {
            Some(i16::try_from(as_int(v)?).ok()?)
        }),
        "boolean" => q.bind(if null { None } else { Some(as_int(v)? != 0) }),
        "double precision" | "real" | "numeric" => q.bind(match v {
            Value::Null => None,
            Value::Real(f) => Some(f),
            Value::Int(n) => Some(n as f64),
            Value::Text(s) => Some(s.trim().parse().ok()?),
            Value::Blob(_) => return None,
        }),
        "text" | "character varying" | "character" => {
            q.bind(if null { None } else { Some(as_text(v)?) })
        }
        "bytea" => q.bind(match v {
            Value::Null => None,
            Value::Blob(b) => Some(b),
            Value::Text(s) => Some(s.into_bytes()),
            _ => return None,
        }),
        _ => return None,
    })
}

type SqliteQuery<'q> = sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments>;

fn bind_sqlite(q: SqliteQuery<'_>, v: Value) -> SqliteQuery<'_> {
    match v {
        Value::Null => q.bind(None::<i64>),
        Value::Int(n) => q.bind(n),
        Value::Real(f) => q.bind(f),
        Value::Text(s) => q.bind(s),
        Value::Blob(b) => q.bind(b),
    }
}

/// Inserts `rows` (each with the table's columns, in order) in one statement.
pub async fn insert(
    conn: Conn<'_>,
    table: &CopyTable,
    rows: Vec<Vec<Value>>,
) -> Result<(), CopyError> {
    if rows.is_empty() {
        return Ok(());
    }
    let columns: Vec<String> = table.columns.iter().map(|c| quote(c)).collect();
    let mut sql = format!(
        "INSERT INTO {} ({}) VALUES ",
        quote(&table.name),
        columns.join(", ")
    );
    let postgres = matches!(conn, Conn::Postgres(_));
    let mut n = 0;
    for r in 0..rows.len() {
        if r > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
        for c in 0..columns.len() {
            if c > 0 {
                sql.push_str(", ");
            }
            n += 1;
            if postgres {
                sql.push_str(&format!("${n}"));
            } else {
                sql.push('?');
            }
        }
        sql.push(')');
    }
    match conn {
        Conn::Sqlite(c) => {
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for row in rows {
                for v in row {
                    q = bind_sqlite(q, v);
                }
            }
            q.execute(&mut *c).await?;
        }
        Conn::Postgres(c) => {
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for row in rows {
                for (i, v) in row.into_iter().enumerate() {
                    let ty = &table.target_types[i];
                    q = bind_postgres(q, ty, v).ok_or_else(|| CopyError::UnsupportedType {
                        table: table.name.clone(),
                        column: table.columns[i].clone(),
                        ty: format!("a value that does not fit the target's {ty}"),
                    })?;
                }
            }
            q.execute(&mut *c).await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_values_become_the_postgresql_column_types() {
        assert_eq!(as_int(Value::Text(" 7".into())), Some(7));
        assert_eq!(as_int(Value::Real(3.0)), Some(3));
        assert_eq!(as_int(Value::Blob(vec![1])), None);
        assert_eq!(as_text(Value::Int(5)).as_deref(), Some("5"));
        assert_eq!(as_text(Value::Blob(vec![0xff])), None, "not UTF-8");
    }
}
