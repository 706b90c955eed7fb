//! API keys scoped to connections: which connections a scoped key may use, by id, so a renamed
//! connection stays in scope and a removed one leaves it (the rows cascade away).

use std::collections::HashMap;

use super::PortableRow as _;

use super::Store;
use super::access::AccessError;
use super::api_keys::{ApiKey, ApiRole};

/// One connection a scoped key may use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScopedConnection {
    pub id: i64,
    /// Its current name (read with the key, so renames show).
    pub name: String,
}

/// The connections named for a new key, checked: `None` for an unscoped key. Every unknown name
/// is reported at once. Only `send` keys take a scope: an `admin` key manages connections,
/// keys and relay users, which a per-connection scope could not meaningfully limit.
pub(super) async fn resolve_scope(
    mut tx: super::Conn<'_>,
    role: ApiRole,
    names: &[String],
) -> Result<Option<Vec<ScopedConnection>>, AccessError> {
    if names.is_empty() {
        return Ok(None);
    }
    if role == ApiRole::Admin {
        return Err(AccessError::Invalid(
            "an `admin` key cannot be scoped to connections: use `--role send` with \
             `--connection`, or an unscoped admin key"
                .into(),
        ));
    }
    let mut found = Vec::new();
    let mut missing = Vec::new();
    for name in names {
        let id: Option<i64> = on!(&mut tx, |tx, q| {
            sqlx::query_scalar(q.sql("SELECT id FROM connections WHERE name = ?"))
                .bind(name)
                .fetch_optional(&mut **tx)
                .await?
        });
        match id {
            Some(id) if !found.iter().any(|c: &ScopedConnection| c.id == id) => {
                found.push(ScopedConnection {
                    id,
                    name: name.clone(),
                })
            }
            Some(_) => {}
            None => missing.push(format!("`{name}`")),
        }
    }
    if !missing.is_empty() {
        return Err(AccessError::Invalid(format!(
            "no connection named {}: see `postern connection list` for the names",
            missing.join(", ")
        )));
    }
    found.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Some(found))
}

impl Store {
    /// The connections key `key_id` may use, by name.
    pub(super) async fn key_scope(
        &self,
        key_id: i64,
    ) -> Result<Vec<ScopedConnection>, AccessError> {
        let rows = on!(self.db(), |pool, q| {
            sqlx::query(
            q.sql("SELECT c.id, c.name FROM api_key_connections k JOIN connections c ON c.id = k.connection_id \
             WHERE k.key_id = ? ORDER BY c.name"),
        )
        .bind(key_id)
        .fetch_all(pool)
        .await?.into_iter().map(super::AnyRow::from).collect::<Vec<_>>()
        });
        rows.iter()
            .map(|r| {
                Ok(ScopedConnection {
                    id: r.try_get("id")?,
                    name: r.try_get("name")?,
                })
            })
            .collect()
    }

    /// Fills in the scope of every scoped key in `keys` with one query.
    pub(super) async fn fill_scopes(&self, keys: &mut [ApiKey]) -> Result<(), AccessError> {
        if keys.iter().all(|k| k.scope.is_none()) {
            return Ok(());
        }
        let rows = on!(self.db(), |pool, q| {
            sqlx::query(q.sql(
                "SELECT k.key_id, c.id, c.name FROM api_key_connections k \
             JOIN connections c ON c.id = k.connection_id ORDER BY c.name",
            ))
            .fetch_all(pool)
            .await?
            .into_iter()
            .map(super::AnyRow::from)
            .collect::<Vec<_>>()
        });
        let mut by_key: HashMap<i64, Vec<ScopedConnection>> = HashMap::new();
        for r in &rows {
            by_key
                .entry(r.try_get("key_id")?)
                .or_default()
                .push(ScopedConnection {
                    id: r.try_get("id")?,
                    name: r.try_get("name")?,
                });
        }
        for k in keys.iter_mut().filter(|k| k.scope.is_some()) {
            k.scope = Some(by_key.remove(&k.id).unwrap_or_default());
        }
        Ok(())
    }

    /// The connection id of message `id`, if the message exists: what a scoped key's access to
    /// a message is decided on (the name in the log may be a connection's former name).
    pub async fn message_connection_id(&self, id: &str) -> Result<Option<i64>, AccessError> {
        Ok(on!(self.db(), |pool, q| {
            sqlx::query_scalar(q.sql("SELECT connection_id FROM messages WHERE id = ?"))
                .bind(id)
                .fetch_optional(pool)
                .await?
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ConnectionInput;

    async fn store_with(names: &[&str]) -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::test_store(dir.path()).await;
        for n in names {
            let (s, _) = ConnectionInput {
                name: Some(n.to_string()),
                provider: Some("microsoft".into()),
                user: Some(format!("ops@{n}.com")),
                tenant: Some(format!("{n}.onmicrosoft.com")),
                client_id: Some("1b2c3d4e-0000-1111-2222-333344445555".into()),
                ..Default::default()
            }
            .validate()
            .unwrap();
            store.insert_connection(&s).await.unwrap();
        }
        (dir, store)
    }

    fn names(k: &ApiKey) -> Option<Vec<&str>> {
        k.scope
            .as_ref()
            .map(|s| s.iter().map(|c| c.name.as_str()).collect())
    }

    #[tokio::test]
    async fn a_scoped_key_keeps_its_scope_through_renames_and_shrinks_when_a_connection_goes() {
        let (_dir, store) = store_with(&["alpha", "beta", "gamma"]).await;
        let scope = ["beta".to_string(), "alpha".to_string()];
        let created = store
            .create_api_key("cust", ApiRole::Send, &scope)
            .await
            .unwrap();
        assert_eq!(names(&created.key), Some(vec!["alpha", "beta"]));
        let seen = store
            .authenticate_api_key(&created.secret)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(names(&seen), Some(vec!["alpha", "beta"]));

        // Renamed: still in scope, under its new name.
        let beta = store.connection("beta").await.unwrap();
        let mut s = beta.settings.clone();
        s.name = crate::domain::ConnectionName::parse("beta2").unwrap();
        store.update_connection(beta.id, &s).await.unwrap();
        // Removed: out of the scope; the key is NOT widened when its last connection goes.
        store.remove_connection("alpha").await.unwrap();
        let listed = store.list_api_keys().await.unwrap();
        assert_eq!(names(&listed[0]), Some(vec!["beta2"]));
        store.remove_connection("beta2").await.unwrap();
        let seen = store
            .authenticate_api_key(&created.secret)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(names(&seen), Some(vec![]));
        let left: i64 = on!(store.db(), |pool, q| {
            sqlx::query_scalar(q.sql("SELECT COUNT(*) FROM api_key_connections"))
                .fetch_one(pool)
                .await
                .unwrap()
        });
        assert_eq!(left, 0, "no dangling scope rows");
    }

    #[tokio::test]
    async fn unknown_connections_and_scoped_admin_keys_are_refused_and_nothing_is_written() {
        let (_dir, store) = store_with(&["alpha"]).await;
        let e = store
            .create_api_key(
                "cust",
                ApiRole::Send,
                &["alpha".into(), "nosuch".into(), "other".into()],
            )
            .await
            .unwrap_err();
        assert!(e.is_usage());
        let e = e.to_string();
        assert!(e.contains("`nosuch`") && e.contains("`other`"), "{e}");
        let e = store
            .create_api_key("ops", ApiRole::Admin, &["alpha".into()])
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("--role send"), "{e}");
        assert!(store.list_api_keys().await.unwrap().is_empty());
        // Unscoped keys are unchanged.
        let k = store
            .create_api_key("any", ApiRole::Send, &[])
            .await
            .unwrap();
        assert_eq!(k.key.scope, None);
    }
}
