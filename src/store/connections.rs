//! Connection rows.

use std::path::PathBuf;

use super::{Store, StoreError, now};
use crate::domain::{
    ClientId, Connection, ConnectionName, ConnectionSettings, ConnectionStatus, EmailAddress,
    Expiry, Host, LimitOverrides, Port, RedirectUri, ScopeList, Tenant,
};

/// A connection's row as stored, before its fields are checked ([`decode`]); the same on both
/// backends (flags as 0/1 integers).
#[derive(Debug, sqlx::FromRow)]
pub struct ConnectionRow {
    id: i64,
    name: String,
    display_name: Option<String>,
    provider: String,
    flow: String,
    host: String,
    port: i64,
    tls: String,
    domain: String,
    user_name: String,
    tenant: Option<String>,
    client_id: String,
    scope: String,
    redirect_uri: Option<String>,
    authorize_url: Option<String>,
    token_url: Option<String>,
    device_url: Option<String>,
    ca_file: Option<String>,
    enabled: i64,
    max_concurrent: i64,
    limits: String,
    transport: String,
    graph_url: Option<String>,
    fallback: Option<String>,
    graph_large: String,
    status: String,
    status_reason: Option<String>,
    created_at: i64,
    updated_at: i64,
    managed_by_file: i64,
    has_secret: i64,
    has_refresh: i64,
    secret_expires_at: Option<i64>,
    last_used_at: Option<i64>,
    refresh_obtained_at: Option<i64>,
    access_expires_at: Option<i64>,
}

pub(super) const COLUMNS: &str = "c.id, c.name, c.display_name, c.provider, c.flow, c.host, c.port, c.tls, c.domain, \
    c.user_name, c.tenant, c.client_id, c.scope, c.redirect_uri, c.authorize_url, c.token_url, c.device_url, \
    c.ca_file, c.enabled, c.max_concurrent, c.limits, c.transport, c.graph_url, c.fallback, c.graph_large, c.status, c.status_reason, c.created_at, c.updated_at, c.managed_by_file, \
    CAST(CASE WHEN EXISTS(SELECT 1 FROM secrets s WHERE s.connection_id = c.id AND s.kind = 'client_secret') THEN 1 ELSE 0 END AS BIGINT) AS has_secret, \
    CAST(CASE WHEN EXISTS(SELECT 1 FROM secrets s WHERE s.connection_id = c.id AND s.kind = 'refresh_token') THEN 1 ELSE 0 END AS BIGINT) AS has_refresh, \
    c.secret_expires_at, c.last_used_at, \
    (SELECT s.updated_at FROM secrets s WHERE s.connection_id = c.id AND s.kind = 'refresh_token') AS refresh_obtained_at, \
    (SELECT s.expires_at FROM secrets s WHERE s.connection_id = c.id AND s.kind = 'access_token') AS access_expires_at";

fn corrupt(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("{what}: {e}"))
}

fn opt_url(v: Option<String>, what: &str) -> Result<Option<url::Url>, StoreError> {
    v.map(|u| url::Url::parse(&u).map_err(|e| corrupt(what, e)))
        .transpose()
}

pub(super) fn decode(row: ConnectionRow) -> Result<Connection, StoreError> {
    let ts = |c: &str, v: i64| -> Result<chrono::DateTime<chrono::Utc>, StoreError> {
        chrono::DateTime::from_timestamp(v, 0).ok_or_else(|| corrupt(c, v))
    };
    let opt_ts =
        |c: &str, v: Option<i64>| -> Result<Option<chrono::DateTime<chrono::Utc>>, StoreError> {
            v.map(|v| ts(c, v)).transpose()
        };
    let settings = ConnectionSettings {
        name: ConnectionName::parse(&row.name).map_err(|e| corrupt("name", e))?,
        display_name: row.display_name,
        provider: row.provider.parse().map_err(|e| corrupt("provider", e))?,
        flow: row.flow.parse().map_err(|e| corrupt("flow", e))?,
        host: Host::parse(&row.host).map_err(|e| corrupt("host", e))?,
        port: Port::new(row.port as u16).map_err(|e| corrupt("port", e))?,
        tls: row.tls.parse().map_err(|e| corrupt("tls", e))?,
        domain: Host::parse(&row.domain).map_err(|e| corrupt("domain", e))?,
        user: EmailAddress::parse(&row.user_name).map_err(|e| corrupt("user_name", e))?,
        tenant: row
            .tenant
            .map(|t| Tenant::parse(&t))
            .transpose()
            .map_err(|e| corrupt("tenant", e))?,
        client_id: ClientId::parse(&row.client_id).map_err(|e| corrupt("client_id", e))?,
        scopes: ScopeList::parse(&row.scope).map_err(|e| corrupt("scope", e))?,
        redirect_uri: row
            .redirect_uri
            .map(|r| RedirectUri::parse(&r))
            .transpose()
            .map_err(|e| corrupt("redirect_uri", e))?,
        authorize_url: opt_url(row.authorize_url, "authorize_url")?,
        token_url: opt_url(row.token_url, "token_url")?,
        device_url: opt_url(row.device_url, "device_url")?,
        ca_file: row.ca_file.map(PathBuf::from),
        enabled: row.enabled != 0,
        max_concurrent: row.max_concurrent as u32,
        limits: LimitOverrides::parse(&row.limits).map_err(|e| corrupt("limits", e))?,
        transport: row.transport.parse().map_err(|e| corrupt("transport", e))?,
        graph_url: opt_url(row.graph_url, "graph_url")?,
        fallback: row
            .fallback
            .as_deref()
            .map(str::parse)
            .transpose()
            .map_err(|e| corrupt("fallback", e))?,
        graph_large: row
            .graph_large
            .parse()
            .map_err(|e| corrupt("graph_large", e))?,
    };
    Ok(Connection {
        id: row.id,
        settings,
        status: ConnectionStatus::from_parts(&row.status, row.status_reason),
        client_secret_set: row.has_secret != 0,
        refresh_token_set: row.has_refresh != 0,
        managed_by_file: row.managed_by_file != 0,
        created_at: ts("created_at", row.created_at)?,
        updated_at: ts("updated_at", row.updated_at)?,
        expiry: Expiry {
            secret_expires: opt_ts("secret_expires_at", row.secret_expires_at)?
                .map(|t| t.date_naive()),
            refresh_obtained_at: opt_ts("refresh_obtained_at", row.refresh_obtained_at)?,
            access_expires_at: opt_ts("access_expires_at", row.access_expires_at)?,
            last_used_at: opt_ts("last_used_at", row.last_used_at)?,
        },
    })
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

/// Binds the settings' columns, in the order both INSERT and UPDATE name them (a macro: the
/// query's type differs by backend).
macro_rules! bind_settings {
    ($q:expr, $s:expr) => {{
        let s: &$crate::domain::ConnectionSettings = $s;
        $q.bind(s.name.as_str())
            .bind(&s.display_name)
            .bind(s.provider.as_str())
            .bind(s.flow.as_str())
            .bind(s.host.as_str())
            .bind(i64::from(s.port.get()))
            .bind(s.tls.as_str())
            .bind(s.domain.as_str())
            .bind(s.user.as_str())
            .bind(s.tenant.as_ref().map(ToString::to_string))
            .bind(s.client_id.as_str())
            .bind(s.scopes.to_string())
            .bind(s.redirect_uri.as_ref().map(ToString::to_string))
            .bind(s.authorize_url.as_ref().map(ToString::to_string))
            .bind(s.token_url.as_ref().map(ToString::to_string))
            .bind(s.device_url.as_ref().map(ToString::to_string))
            .bind(s.ca_file.as_ref().map(|p| p.display().to_string()))
            .bind(i64::from(s.enabled))
            .bind(i64::from(s.max_concurrent))
            .bind(s.limits.to_string())
            .bind(s.transport.as_str())
            .bind(s.graph_url.as_ref().map(ToString::to_string))
            .bind(s.fallback.map(|f| f.as_str()))
            .bind(s.graph_large.as_str())
    }};
}
pub(super) use bind_settings;

/// A new connection: the settings' columns, then created_at and updated_at; returns its id.
pub(super) const INSERT: &str = "INSERT INTO connections (name, display_name, provider, flow, host, port, tls, domain, user_name, \
     tenant, client_id, scope, redirect_uri, authorize_url, token_url, device_url, ca_file, enabled, \
     max_concurrent, limits, transport, graph_url, fallback, graph_large, status, created_at, updated_at) \
     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'new', ?, ?) RETURNING id";

/// New settings: the settings' columns, then updated_at and the id.
pub(super) const UPDATE: &str = "UPDATE connections SET name = ?, display_name = ?, provider = ?, flow = ?, host = ?, port = ?, \
     tls = ?, domain = ?, user_name = ?, tenant = ?, client_id = ?, scope = ?, redirect_uri = ?, \
     authorize_url = ?, token_url = ?, device_url = ?, ca_file = ?, enabled = ?, max_concurrent = ?, \
     limits = ?, transport = ?, graph_url = ?, fallback = ?, graph_large = ?, updated_at = ? WHERE id = ? AND managed_by_file = 0";

impl Store {
    /// The stored connection after an insert or update, or why it could not be saved.
    async fn saved(
        &self,
        res: Result<u64, sqlx::Error>,
        s: &ConnectionSettings,
    ) -> Result<Connection, StoreError> {
        match res {
            Err(e) if is_unique_violation(&e) => {
                Err(StoreError::DuplicateConnection(s.name.to_string()))
            }
            Err(e) => Err(e.into()),
            Ok(_) => self.connection(s.name.as_str()).await,
        }
    }

    pub async fn insert_connection(
        &self,
        s: &ConnectionSettings,
    ) -> Result<Connection, StoreError> {
        let t = now();
        let res = on!(self.db(), |pool, q| {
            bind_settings!(sqlx::query(q.sql(INSERT)), s)
                .bind(t)
                .bind(t)
                .execute(pool)
                .await
                .map(|r| r.rows_affected())
        });
        self.saved(res, s).await
    }

    /// Replaces the settings of connection `id` (the name may change).
    pub async fn update_connection(
        &self,
        id: i64,
        s: &ConnectionSettings,
    ) -> Result<Connection, StoreError> {
        let res = on!(self.db(), |pool, q| {
            bind_settings!(sqlx::query(q.sql(UPDATE)), s)
                .bind(now())
                .bind(id)
                .execute(pool)
                .await
                .map(|r| r.rows_affected())
        });
        if matches!(&res, Ok(0)) {
            let current = self.connection_by_id(id).await?;
            if current.managed_by_file {
                return Err(StoreError::ManagedByFile(current.settings.name.to_string()));
            }
        }
        self.saved(res, s).await
    }

    pub async fn find_connection(&self, name: &str) -> Result<Option<Connection>, StoreError> {
        let row = on!(self.db(), |pool, q| {
            sqlx::query_as::<_, ConnectionRow>(q.sql_owned(format!(
                "SELECT {COLUMNS} FROM connections c WHERE c.name = ?"
            )))
            .bind(name)
            .fetch_optional(pool)
            .await?
        });
        row.map(decode).transpose()
    }

    /// Like [`Store::find_connection`], but a missing connection is an error that says what to do.
    pub async fn connection(&self, name: &str) -> Result<Connection, StoreError> {
        self.find_connection(name)
            .await?
            .ok_or_else(|| StoreError::NoSuchConnection(name.to_string()))
    }

    pub async fn connection_by_id(&self, id: i64) -> Result<Connection, StoreError> {
        let row = on!(self.db(), |pool, q| {
            sqlx::query_as::<_, ConnectionRow>(q.sql_owned(format!(
                "SELECT {COLUMNS} FROM connections c WHERE c.id = ?"
            )))
            .bind(id)
            .fetch_optional(pool)
            .await?
        });
        row.map(decode)
            .transpose()?
            .ok_or_else(|| StoreError::NoSuchConnection(format!("#{id}")))
    }

    pub async fn list_connections(&self) -> Result<Vec<Connection>, StoreError> {
        let rows = on!(self.db(), |pool, q| {
            sqlx::query_as::<_, ConnectionRow>(q.sql_owned(format!(
                "SELECT {COLUMNS} FROM connections c ORDER BY c.name"
            )))
            .fetch_all(pool)
            .await?
        });
        rows.into_iter().map(decode).collect()
    }

    pub async fn set_enabled(&self, name: &str, enabled: bool) -> Result<Connection, StoreError> {
        let n = on!(self.db(), |pool, q| {
            sqlx::query(
            q.sql("UPDATE connections SET enabled = ?, updated_at = ? WHERE name = ? AND managed_by_file = 0"),
        )
        .bind(i64::from(enabled))
        .bind(now())
        .bind(name)
        .execute(pool)
        .await?
        .rows_affected()
        });
        if n == 0 {
            return Err(self.why_unchanged(name).await);
        }
        self.connection(name).await
    }

    pub async fn set_status(&self, id: i64, status: &ConnectionStatus) -> Result<(), StoreError> {
        let _turn = self.write_turn().await;
        on!(self.db(), |pool, q| {
            sqlx::query(q.sql(
                "UPDATE connections SET status = ?, status_reason = ?, updated_at = ? WHERE id = ?",
            ))
            .bind(status.as_str())
            .bind(status.reason())
            .bind(now())
            .bind(id)
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// Records (or clears) the date the connection's client secret expires.
    pub async fn set_secret_expiry(
        &self,
        id: i64,
        date: Option<chrono::NaiveDate>,
    ) -> Result<(), StoreError> {
        let at = date.map(|d| d.and_time(chrono::NaiveTime::MIN).and_utc().timestamp());
        on!(self.db(), |pool, q| {
            sqlx::query(
                q.sql("UPDATE connections SET secret_expires_at = ?, updated_at = ? WHERE id = ?"),
            )
            .bind(at)
            .bind(now())
            .bind(id)
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    pub async fn remove_connection(&self, name: &str) -> Result<(), StoreError> {
        let n = on!(self.db(), |pool, q| {
            sqlx::query(q.sql("DELETE FROM connections WHERE name = ? AND managed_by_file = 0"))
                .bind(name)
                .execute(pool)
                .await?
                .rows_affected()
        });
        if n == 0 {
            return Err(self.why_unchanged(name).await);
        }
        Ok(())
    }

    /// Why a statement on connection `name` changed no row: it is managed by the file, or absent.
    async fn why_unchanged(&self, name: &str) -> StoreError {
        match self.find_connection(name).await {
            Ok(Some(c)) if c.managed_by_file => StoreError::ManagedByFile(name.to_string()),
            Ok(_) => StoreError::NoSuchConnection(name.to_string()),
            Err(e) => e,
        }
    }
}
