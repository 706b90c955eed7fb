//! Listing connections at scale: filters and keyset paging done in SQL, so a page of 50 out of
//! 10,000 connections reads 51 rows, whatever the page number.
//!
//! The status filtered on is the status every surface shows (`Connection::effective_status`):
//! a disabled connection shows `disabled` whatever its token state, so the SQL derives it the
//! same way from `enabled` and the stored `status`.

use base64::Engine;

use super::connections::{COLUMNS, ConnectionRow, decode};
use super::{Store, StoreError};
use crate::domain::{Connection, Provider};

/// The statuses a connection can show, in the order lists present them.
pub const STATUSES: &[&str] = &["new", "authorized", "needs-reauthorization", "disabled"];

/// The status as shown, derived in SQL exactly as `Connection::effective_status` does.
const EFFECTIVE_STATUS: &str = "(CASE WHEN c.enabled = 0 THEN 'disabled' ELSE c.status END)";

/// Largest page a caller may ask for.
pub const MAX_PAGE: u32 = 1000;

/// A filter value or cursor that cannot be used, saying what would be accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ListQueryError {
    #[error("status `{0}` is not known: use new, authorized, needs-reauthorization or disabled")]
    Status(String),
    #[error(
        "provider `{0}` is not known: use microsoft, microsoft-us-gov, microsoft-china, outlook, google or custom"
    )]
    Provider(String),
    #[error("cursor `{0}` is not one this server gave out: start again without a cursor")]
    Cursor(String),
    #[error("limit must be 1 to {MAX_PAGE}, not {0}")]
    Limit(String),
}

/// Which connections to list, parsed from the caller's text.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnectionQuery {
    /// One of [`STATUSES`].
    pub status: Option<&'static str>,
    pub provider: Option<Provider>,
    /// Matched case-insensitively anywhere in the name, display name, user or domain.
    pub search: Option<String>,
    /// Only these connections (a scoped API key's).
    pub ids: Option<Vec<i64>>,
    /// Connections named after this one (decoded from the cursor).
    pub after: Option<String>,
    /// Page size; `None` for every match.
    pub limit: Option<u32>,
}

/// One page of connections, by name.
#[derive(Debug)]
pub struct ConnectionPage {
    pub connections: Vec<Connection>,
    /// Pass back as the cursor for the next page; `None` on the last one.
    pub next_cursor: Option<String>,
}

fn some_text(v: Option<&str>) -> Option<&str> {
    v.map(str::trim).filter(|s| !s.is_empty())
}

impl ConnectionQuery {
    /// Parses the filters as the CLI flags and API parameters give them; blank means absent.
    pub fn parse(
        status: Option<&str>,
        provider: Option<&str>,
        search: Option<&str>,
        cursor: Option<&str>,
        limit: Option<u32>,
    ) -> Result<Self, ListQueryError> {
        let status = some_text(status)
            .map(|s| {
                let s = s.to_ascii_lowercase();
                STATUSES
                    .iter()
                    .copied()
                    .find(|k| *k == s)
                    .ok_or(ListQueryError::Status(s))
            })
            .transpose()?;
        let provider = some_text(provider)
            .map(|p| {
                p.parse::<Provider>()
                    .map_err(|_| ListQueryError::Provider(p.to_string()))
            })
            .transpose()?;
        let after = some_text(cursor).map(decode_cursor).transpose()?;
        if let Some(l) = limit
            && !(1..=MAX_PAGE).contains(&l)
        {
            return Err(ListQueryError::Limit(l.to_string()));
        }
        Ok(ConnectionQuery {
            status,
            provider,
            search: some_text(search).map(str::to_string),
            ids: None,
            after,
            limit,
        })
    }

    /// The WHERE clause (without status when `with_status` is false) and its text arguments,
    /// in order.
    fn conditions(&self, with_status: bool) -> (String, Vec<String>) {
        let mut sql = String::from(" WHERE 1 = 1");
        let mut args = Vec::new();
        if let (true, Some(s)) = (with_status, self.status) {
            sql.push_str(&format!(" AND {EFFECTIVE_STATUS} = ?"));
            args.push(s.to_string());
        }
        if let Some(p) = self.provider {
            sql.push_str(" AND c.provider = ?");
            args.push(p.as_str().to_string());
        }
        if let Some(text) = &self.search {
            // instr, not LIKE: the caller's `%` and `_` are plain characters. lower() folds
            // ASCII only, which covers names, addresses and domains.
            sql.push_str(
                " AND (instr(lower(c.name), ?) > 0 OR instr(lower(coalesce(c.display_name, '')), ?) > 0 \
                 OR instr(lower(c.user_name), ?) > 0 OR instr(lower(c.domain), ?) > 0)",
            );
            // Four positional placeholders, the same value in each.
            args.extend(std::iter::repeat_n(text.to_lowercase(), 4));
        }
        if let Some(ids) = &self.ids {
            // Integers from the store itself, written inline.
            let list: Vec<String> = ids.iter().map(i64::to_string).collect();
            if list.is_empty() {
                sql.push_str(" AND 1 = 0");
            } else {
                sql.push_str(&format!(" AND c.id IN ({})", list.join(",")));
            }
        }
        (sql, args)
    }
}

/// The cursor is the last name of a page, base64url-encoded: opaque to callers, so the paging
/// key may change without breaking them.
fn encode_cursor(name: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("n:{name}"))
}

fn decode_cursor(cursor: &str) -> Result<String, ListQueryError> {
    let bad = || ListQueryError::Cursor(cursor.to_string());
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cursor)
        .map_err(|_| bad())?;
    let text = String::from_utf8(bytes).map_err(|_| bad())?;
    text.strip_prefix("n:").map(str::to_string).ok_or_else(bad)
}

impl Store {
    /// The connections matching `q`, by name, one page at a time.
    pub async fn query_connections(
        &self,
        q: &ConnectionQuery,
    ) -> Result<ConnectionPage, StoreError> {
        let (mut sql, mut args) = q.conditions(true);
        if let Some(after) = &q.after {
            sql.push_str(" AND c.name > ?");
            args.push(after.clone());
        }
        sql.push_str(" ORDER BY c.name");
        // One row more than the page tells whether another page follows.
        if let Some(limit) = q.limit {
            sql.push_str(&format!(" LIMIT {}", i64::from(limit) + 1));
        }
        let sql = format!("SELECT {COLUMNS} FROM connections c{sql}");
        let rows = on!(self.db(), |pool, bk| {
            let mut query = sqlx::query_as::<_, ConnectionRow>(bk.sql_owned(sql));
            for a in args {
                query = query.bind(a);
            }
            query.fetch_all(pool).await?
        });
        let mut connections = rows
            .into_iter()
            .map(decode)
            .collect::<Result<Vec<_>, _>>()?;
        let next_cursor = match q.limit {
            Some(limit) if connections.len() > limit as usize => {
                connections.truncate(limit as usize);
                connections.last().map(|c| encode_cursor(c.name().as_str()))
            }
            _ => None,
        };
        Ok(ConnectionPage {
            connections,
            next_cursor,
        })
    }

    /// How many connections match `q` (ignoring its status and cursor) per shown status, in
    /// [`STATUSES`] order: the counts beside a status filter.
    pub async fn connection_status_counts(
        &self,
        q: &ConnectionQuery,
    ) -> Result<Vec<(&'static str, i64)>, StoreError> {
        let (sql, args) = q.conditions(false);
        let sql = format!(
            "SELECT {EFFECTIVE_STATUS} AS s, COUNT(*) AS n FROM connections c{sql} GROUP BY s"
        );
        let rows = on!(self.db(), |pool, bk| {
            let mut query = sqlx::query_as::<_, (String, i64)>(bk.sql_owned(sql));
            for a in args {
                query = query.bind(a);
            }
            query.fetch_all(pool).await?
        });
        Ok(STATUSES
            .iter()
            .map(|s| {
                let n = rows.iter().find(|(k, _)| k == s).map_or(0, |(_, n)| *n);
                (*s, n)
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{ConnectionInput, ConnectionStatus};

    async fn store_with(n: usize) -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::test_store(dir.path()).await;
        for i in 0..n {
            let google = i % 3 == 0;
            let (s, _) = ConnectionInput {
                name: Some(format!("c{i:03}")),
                display_name: (i == 7).then(|| "Fabrikam Billing".to_string()),
                provider: Some(if google { "google" } else { "microsoft" }.into()),
                user: Some(format!("ops{i}@tenant{i}.example")),
                tenant: (!google).then(|| "contoso.onmicrosoft.com".to_string()),
                client_id: Some("1b2c3d4e-0000-1111-2222-333344445555".into()),
                enabled: Some(i % 10 != 5),
                ..Default::default()
            }
            .validate()
            .unwrap();
            let c = store.insert_connection(&s).await.unwrap();
            if i % 4 == 1 {
                store
                    .set_status(c.id, &ConnectionStatus::Authorized)
                    .await
                    .unwrap();
            }
        }
        (dir, store)
    }

    fn names(p: &ConnectionPage) -> Vec<String> {
        p.connections.iter().map(|c| c.name().to_string()).collect()
    }

    #[tokio::test]
    async fn pages_cover_every_match_once_and_filters_agree_with_the_shown_status() {
        let (_dir, store) = store_with(40).await;
        let all = store.list_connections().await.unwrap();
        for status in STATUSES {
            let q = ConnectionQuery::parse(Some(status), None, None, None, Some(7)).unwrap();
            let mut got = Vec::new();
            let mut cursor = None;
            loop {
                let q = ConnectionQuery {
                    after: cursor.as_deref().map(|c| decode_cursor(c).unwrap()),
                    ..q.clone()
                };
                let page = store.query_connections(&q).await.unwrap();
                assert!(page.connections.len() <= 7);
                got.extend(names(&page));
                match page.next_cursor {
                    Some(c) => cursor = Some(c),
                    None => break,
                }
            }
            let want: Vec<String> = all
                .iter()
                .filter(|c| c.effective_status().as_str() == *status)
                .map(|c| c.name().to_string())
                .collect();
            assert_eq!(got, want, "{status}");
        }
        let counts = store
            .connection_status_counts(&ConnectionQuery::default())
            .await
            .unwrap();
        assert_eq!(counts.iter().map(|(_, n)| n).sum::<i64>(), 40);
        assert_eq!(counts[3], ("disabled", 4));
    }

    #[tokio::test]
    async fn search_matches_name_display_name_user_and_domain_case_insensitively() {
        let (_dir, store) = store_with(12).await;
        let find = |text: &str, provider: Option<&str>| {
            let q = ConnectionQuery::parse(None, provider, Some(text), None, None).unwrap();
            let store = store.clone();
            async move { names(&store.query_connections(&q).await.unwrap()) }
        };
        assert_eq!(find("C011", None).await, ["c011"]);
        assert_eq!(find("fabrikam", None).await, ["c007"]);
        assert_eq!(find("OPS10@", None).await, ["c010"]);
        assert_eq!(find("TENANT3.", None).await, ["c003"]);
        assert_eq!(find("tenant1", Some("gmail")).await, ["c000"; 0]);
        assert_eq!(find("tenant", Some("gmail")).await.len(), 4);
        // `%` and `_` are not wildcards.
        assert!(find("%", None).await.is_empty());
    }

    #[test]
    fn bad_filters_say_what_is_accepted() {
        let e = ConnectionQuery::parse(Some("broken"), None, None, None, None).unwrap_err();
        assert!(e.to_string().contains("needs-reauthorization"), "{e}");
        assert!(ConnectionQuery::parse(None, Some("yahoo"), None, None, None).is_err());
        let e = ConnectionQuery::parse(None, None, None, Some("zzz"), None).unwrap_err();
        assert!(e.to_string().contains("without a cursor"), "{e}");
        assert!(ConnectionQuery::parse(None, None, None, None, Some(0)).is_err());
        let q = ConnectionQuery::parse(Some(" Disabled "), Some(""), Some(" "), None, None);
        assert_eq!(q.unwrap().status, Some("disabled"));
        assert_eq!(
            decode_cursor(&encode_cursor("c-1_x")).unwrap(),
            "c-1_x".to_string()
        );
    }
}
