//! What a store's schema holds (tables, columns, foreign keys), read from the database itself,
//! and the plan of a copy: which tables, which columns, in which order.

use std::collections::{BTreeMap, BTreeSet};

use super::CopyError;
use crate::store::Conn;

/// Tables whose rows only mean something for minutes: web UI sessions, OAuth consents in
/// progress, failed-login counts (throttling), connection ownership leases (of instances that
/// are gone when a copy may run). A copy leaves them behind.
pub const TRANSIENT: &[&str] = &[
    "admin_sessions",
    "pending_consents",
    "auth_failures",
    "connection_owners",
];

/// One table as the database describes it: its columns, in order, with their declared types
/// (lower case: SQLite's declared type, PostgreSQL's `data_type`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    pub name: String,
    pub columns: Vec<(String, String)>,
}

/// A table to copy: the columns both sides have (all of the source's), with the target's types.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyTable {
    pub name: String,
    pub columns: Vec<String>,
    pub target_types: Vec<String>,
}

/// An identifier quoted for SQL (both backends quote with `"`).
pub fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The store's tables (not the migrator's own), with their columns.
pub async fn tables(conn: Conn<'_>) -> Result<Vec<Table>, sqlx::Error> {
    let rows: Vec<(String, String, String)> = match conn {
        Conn::Sqlite(c) => {
            let names: Vec<String> = sqlx::query_scalar(
                "SELECT name FROM sqlite_master WHERE type = 'table' \
                 AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' AND name <> '_sqlx_migrations' \
                 ORDER BY name",
            )
            .fetch_all(&mut *c)
            .await?;
            let mut rows = Vec::new();
            for name in names {
                let columns: Vec<(String, String)> = sqlx::query_as(
                    "SELECT name, lower(type) FROM pragma_table_info(?) ORDER BY cid",
                )
                .bind(&name)
                .fetch_all(&mut *c)
                .await?;
                rows.extend(columns.into_iter().map(|(c, t)| (name.clone(), c, t)));
            }
            rows
        }
        Conn::Postgres(c) => {
            sqlx::query_as(
                "SELECT table_name::text, column_name::text, lower(data_type::text) \
                 FROM information_schema.columns \
                 WHERE table_schema = current_schema() AND table_name <> '_sqlx_migrations' \
                 AND table_name IN (SELECT table_name FROM information_schema.tables \
                     WHERE table_schema = current_schema() AND table_type = 'BASE TABLE') \
                 ORDER BY table_name, ordinal_position",
            )
            .fetch_all(&mut *c)
            .await?
        }
    };
    let mut tables: Vec<Table> = Vec::new();
    for (table, column, ty) in rows {
        match tables.last_mut() {
            Some(t) if t.name == table => t.columns.push((column, ty)),
            _ => tables.push(Table {
                name: table,
                columns: vec![(column, ty)],
            }),
        }
    }
    Ok(tables)
}

/// The foreign keys between tables, as (child, parent) pairs.
pub async fn foreign_keys(
    conn: Conn<'_>,
    tables: &[Table],
) -> Result<Vec<(String, String)>, sqlx::Error> {
    match conn {
        Conn::Sqlite(c) => {
            let mut pairs = Vec::new();
            for t in tables {
                let parents: Vec<String> =
                    sqlx::query_scalar("SELECT \"table\" FROM pragma_foreign_key_list(?)")
                        .bind(&t.name)
                        .fetch_all(&mut *c)
                        .await?;
                pairs.extend(parents.into_iter().map(|p| (t.name.clone(), p)));
            }
            Ok(pairs)
        }
        Conn::Postgres(c) => {
            sqlx::query_as(
                "SELECT child.relname::text, parent.relname::text FROM pg_constraint k \
                 JOIN pg_class child ON child.oid = k.conrelid \
                 JOIN pg_class parent ON parent.oid = k.confrelid \
                 JOIN pg_namespace n ON n.oid = k.connamespace \
                 WHERE k.contype = 'f' AND n.nspname = current_schema()",
            )
            .fetch_all(&mut *c)
            .await
        }
    }
}

/// The copy's plan: every source table but the transient ones, with the source's columns, in
/// an order that puts each table after the tables it refers to. Refuses a table or column the
/// target lacks (its postern is older than the source's): copying without it would lose data.
pub fn plan(
    source: &[Table],
    target: &[Table],
    foreign_keys: &[(String, String)],
) -> Result<Vec<CopyTable>, CopyError> {
    let mut planned = BTreeMap::new();
    for table in source
        .iter()
        .filter(|t| !TRANSIENT.contains(&t.name.as_str()))
    {
        let Some(theirs) = target.iter().find(|t| t.name == table.name) else {
            return Err(CopyError::MissingTable(table.name.clone()));
        };
        let mut columns = Vec::new();
        let mut target_types = Vec::new();
        for (column, _) in &table.columns {
            let Some((_, ty)) = theirs.columns.iter().find(|(c, _)| c == column) else {
                return Err(CopyError::MissingColumn {
                    table: table.name.clone(),
                    column: column.clone(),
                });
            };
            columns.push(column.clone());
            target_types.push(ty.clone());
        }
        planned.insert(
            table.name.clone(),
            CopyTable {
                name: table.name.clone(),
                columns,
                target_types,
            },
        );
    }
    // Parents first (a topological order; names break ties so the order is stable).
    let mut order = Vec::new();
    let mut placed = BTreeSet::new();
    while placed.len() < planned.len() {
        let ready: Vec<&String> = planned
            .keys()
            .filter(|name| !placed.contains(*name))
            .filter(|name| {
                foreign_keys.iter().all(|(child, parent)| {
                    child != *name
                        || parent == *name
                        || placed.contains(parent)
                        || !planned.contains_key(parent)
                })
            })
            .collect();
        if ready.is_empty() {
            // A cycle of foreign keys: no order satisfies it; the database will say which row.
            let rest: Vec<String> = planned
                .keys()
                .filter(|n| !placed.contains(*n))
                .cloned()
                .collect();
            placed.extend(rest.iter().cloned());
            order.extend(rest);
            break;
        }
        for name in ready {
            placed.insert(name.clone());
            order.push(name.clone());
        }
    }
    Ok(order
        .into_iter()
        .filter_map(|name| planned.remove(&name))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(name: &str, columns: &[&str]) -> Table {
        Table {
            name: name.into(),
            columns: columns
                .iter()
                .map(|c| (c.to_string(), "text".to_string()))
                .collect(),
        }
    }

    #[test]
    fn parents_come_before_children_and_transient_tables_stay_behind() {
        let source = [
            table("attempts", &["id", "message_id"]),
            table("admin_sessions", &["token_hash"]),
            table("messages", &["id"]),
            table("recipients", &["message_id"]),
            table("connections", &["id"]),
            table("secrets", &["connection_id"]),
        ];
        let fks = [
            ("attempts".into(), "messages".into()),
            ("recipients".into(), "messages".into()),
            ("secrets".into(), "connections".into()),
            ("admin_sessions".into(), "admin_users".into()),
        ];
        let plan = plan(&source, &source, &fks).unwrap();
        let names: Vec<&str> = plan.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "connections",
                "messages",
                "attempts",
                "recipients",
                "secrets"
            ]
        );
    }

    #[test]
    fn a_column_or_table_the_target_lacks_is_refused_by_name() {
        let source = [table(
            "connections",
            &["id", "name", "from_a_newer_postern"],
        )];
        let target = [table("connections", &["id", "name", "transport"])];
        let err = plan(&source, &target, &[]).unwrap_err();
        assert!(
            err.to_string().contains("connections.from_a_newer_postern"),
            "{err}"
        );

        let err = plan(&[table("consents", &["id"])], &target, &[]).unwrap_err();
        assert!(err.to_string().contains("consents"), "{err}");
    }

    #[test]
    fn only_the_source_columns_are_copied_with_the_target_types() {
        let source = [table("connections", &["id", "name"])];
        let mut target = table("connections", &["name", "transport", "id"]);
        target.columns[2].1 = "bigint".into();
        let plan = plan(&source, &[target], &[]).unwrap();
        assert_eq!(plan[0].columns, ["id", "name"]);
        assert_eq!(plan[0].target_types, ["bigint", "text"]);
    }
}
