//! Connection rows.

use std::path::PathBuf;

use sqlx::Row;
use sqlx::sqlite::SqliteRow;

use super::{Store, StoreError, now};
use crate::domain::{
    ClientId, Connection, ConnectionName, ConnectionSettings, ConnectionStatus, EmailAddress,
    Expiry, Host, LimitOverrides, Port, RedirectUri, ScopeList, Tenant,
};

/// Re-exported for callers that list connections without decoding them.
pub type ConnectionRow = SqliteRow;

pub(super) const COLUMNS: &str = "c.id, c.name, c.display_name, c.provider, c.flow, c.host, c.port, c.tls, c.domain, \
    c.user_name, c.tenant, c.client_id, c.scope, c.redirect_uri, c.authorize_url, c.token_url, c.device_url, \
    c.ca_file, c.enabled, c.max_concurrent, c.limits, c.transport, c.graph_url, c.status, c.status_reason, c.created_at, c.updated_at, c.managed_by_file, \
    EXISTS(SELECT 1 FROM secrets s WHERE s.connection_id = c.id AND s.kind = 'client_secret') AS has_secret, \
    EXISTS(SELECT 1 FROM secrets s WHERE s.connection_id = c.id AND s.kind = 'refresh_token') AS has_refresh, \
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

pub(super) fn decode(row: &SqliteRow) -> Result<Connection, StoreError> {
    let get_s = |c: &str| row.try_get::<String, _>(c).map_err(StoreError::from);
    let get_o = |c: &str| {
        row.try_get::<Option<String>, _>(c)
            .map_err(StoreError::from)
    };
    let ts = |c: &str| -> Result<chrono::DateTime<chrono::Utc>, StoreError> {
        let v: i64 = row.try_get(c)?;
        chrono::DateTime::from_timestamp(v, 0).ok_or_else(|| corrupt(c, v))
    };
    let opt_ts = |c: &str| -> Result<Option<chrono::DateTime<chrono::Utc>>, StoreError> {
        let v: Option<i64> = row.try_get(c)?;
        v.map(|v| chrono::DateTime::from_timestamp(v, 0).ok_or_else(|| corrupt(c, v)))
            .transpose()
    };
    let settings = ConnectionSettings {
        name: ConnectionName::parse(&get_s("name")?).map_err(|e| corrupt("name", e))?,
        display_name: get_o("display_name")?,
        provider: get_s("provider")?
            .parse()
            .map_err(|e| corrupt("provider", e))?,
        flow: get_s("flow")?.parse().map_err(|e| corrupt("flow", e))?,
        host: Host::parse(&get_s("host")?).map_err(|e| corrupt("host", e))?,
        port: Port::new(row.try_get::<i64, _>("port")? as u16).map_err(|e| corrupt("port", e))?,
        tls: get_s("tls")?.parse().map_err(|e| corrupt("tls", e))?,
        domain: Host::parse(&get_s("domain")?).map_err(|e| corrupt("domain", e))?,
        user: EmailAddress::parse(&get_s("user_name")?).map_err(|e| corrupt("user_name", e))?,
        tenant: get_o("tenant")?
            .map(|t| Tenant::parse(&t))
            .transpose()
            .map_err(|e| corrupt("tenant", e))?,
        client_id: ClientId::parse(&get_s("client_id")?).map_err(|e| corrupt("client_id", e))?,
        scopes: ScopeList::parse(&get_s("scope")?).map_err(|e| corrupt("scope", e))?,
        redirect_uri: get_o("redirect_uri")?
            .map(|r| RedirectUri::parse(&r))
            .transpose()
            .map_err(|e| corrupt("redirect_uri", e))?,
        authorize_url: opt_url(get_o("authorize_url")?, "authorize_url")?,
        token_url: opt_url(get_o("token_url")?, "token_url")?,
        device_url: opt_url(get_o("device_url")?, "device_url")?,
        ca_file: get_o("ca_file")?.map(PathBuf::from),
        enabled: row.try_get::<bool, _>("enabled")?,
        max_concurrent: row.try_get::<i64, _>("max_concurrent")? as u32,
        limits: LimitOverrides::parse(&get_s("limits")?).map_err(|e| corrupt("limits", e))?,
        transport: get_s("transport")?
            .parse()
            .map_err(|e| corrupt("transport", e))?,
        graph_url: opt_url(get_o("graph_url")?, "graph_url")?,
    };
    Ok(Connection {
        id: row.try_get("id")?,
        settings,
        status: ConnectionStatus::from_parts(&get_s("status")?, get_o("status_reason")?),
        client_secret_set: row.try_get("has_secret")?,
        refresh_token_set: row.try_get("has_refresh")?,
        managed_by_file: row.try_get("managed_by_file")?,
        created_at: ts("created_at")?,
        updated_at: ts("updated_at")?,
        expiry: Expiry {
            secret_expires: opt_ts("secret_expires_at")?.map(|t| t.date_naive()),
            refresh_obtained_at: opt_ts("refresh_obtained_at")?,
            access_expires_at: opt_ts("access_expires_at")?,
            last_used_at: opt_ts("last_used_at")?,
        },
    })
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

fn opt_str<T: ToString>(v: &Option<T>) -> Option<String> {
    v.as_ref().map(ToString::to_string)
}

pub(super) type Query<'q> = sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments>;

/// Binds the settings' columns, in the order both INSERT and UPDATE name them.
pub(super) fn bind_settings<'q>(q: Query<'q>, s: &'q ConnectionSettings) -> Query<'q> {
    q.bind(s.name.as_str())
        .bind(&s.display_name)
        .bind(s.provider.as_str())
        .bind(s.flow.as_str())
        .bind(s.host.as_str())
        .bind(i64::from(s.port.get()))
        .bind(s.tls.as_str())
        .bind(s.domain.as_str())
        .bind(s.user.as_str())
        .bind(opt_str(&s.tenant))
        .bind(s.client_id.as_str())
        .bind(s.scopes.to_string())
        .bind(opt_str(&s.redirect_uri))
        .bind(opt_str(&s.authorize_url))
        .bind(opt_str(&s.token_url))
        .bind(opt_str(&s.device_url))
        .bind(s.ca_file.as_ref().map(|p| p.display().to_string()))
        .bind(s.enabled)
        .bind(i64::from(s.max_concurrent))
        .bind(s.limits.to_string())
        .bind(s.transport.as_str())
        .bind(opt_str(&s.graph_url))
}

/// A new connection: the settings' columns, then created_at and updated_at.
pub(super) const INSERT: &str = "INSERT INTO connections (name, display_name, provider, flow, host, port, tls, domain, user_name, \
     tenant, client_id, scope, redirect_uri, authorize_url, token_url, device_url, ca_file, enabled, \
     max_concurrent, limits, transport, graph_url, status, created_at, updated_at) \
     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'new', ?, ?)";

/// New settings: the settings' columns, then updated_at and the id.
pub(super) const UPDATE: &str = "UPDATE connections SET name = ?, display_name = ?, provider = ?, flow = ?, host = ?, port = ?, \
     tls = ?, domain = ?, user_name = ?, tenant = ?, client_id = ?, scope = ?, redirect_uri = ?, \
     authorize_url = ?, token_url = ?, device_url = ?, ca_file = ?, enabled = ?, max_concurrent = ?, \
     limits = ?, transport = ?, graph_url = ?, updated_at = ? WHERE id = ? AND managed_by_file = 0";

impl Store {
    /// The stored connection after an insert or update, or why it could not be saved.
    async fn saved(
        &self,
        res: Result<sqlx::sqlite::SqliteQueryResult, sqlx::Error>,
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
        let res = bind_settings(sqlx::query(INSERT), s)
            .bind(t)
            .bind(t)
            .execute(&self.pool)
            .await;
        self.saved(res, s).await
    }

    /// Replaces the settings of connection `id` (the name may change).
    pub async fn update_connection(
        &self,
        id: i64,
        s: &ConnectionSettings,
    ) -> Result<Connection, StoreError> {
        let res = bind_settings(sqlx::query(UPDATE), s)
            .bind(now())
            .bind(id)
            .execute(&self.pool)
            .await;
        if matches!(&res, Ok(r) if r.rows_affected() == 0) {
            let current = self.connection_by_id(id).await?;
            if current.managed_by_file {
                return Err(StoreError::ManagedByFile(current.settings.name.to_string()));
            }
        }
        self.saved(res, s).await
    }

    pub async fn find_connection(&self, name: &str) -> Result<Option<Connection>, StoreError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM connections c WHERE c.name = ?"
        )))
        .bind(name)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(decode).transpose()
    }

    /// Like [`Store::find_connection`], but a missing connection is an error that says what to do.
    pub async fn connection(&self, name: &str) -> Result<Connection, StoreError> {
        self.find_connection(name)
            .await?
            .ok_or_else(|| StoreError::NoSuchConnection(name.to_string()))
    }

    pub async fn connection_by_id(&self, id: i64) -> Result<Connection, StoreError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM connections c WHERE c.id = ?"
        )))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref()
            .map(decode)
            .transpose()?
            .ok_or_else(|| StoreError::NoSuchConnection(format!("#{id}")))
    }

    pub async fn list_connections(&self) -> Result<Vec<Connection>, StoreError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM connections c ORDER BY c.name"
        )))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(decode).collect()
    }

    pub async fn set_enabled(&self, name: &str, enabled: bool) -> Result<Connection, StoreError> {
        let n = sqlx::query(
            "UPDATE connections SET enabled = ?, updated_at = ? WHERE name = ? AND managed_by_file = 0",
        )
        .bind(enabled)
        .bind(now())
        .bind(name)
        .execute(&self.pool)
        .await?
        .rows_affected();
        if n == 0 {
            return Err(self.why_unchanged(name).await);
        }
        self.connection(name).await
    }

    pub async fn set_status(&self, id: i64, status: &ConnectionStatus) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE connections SET status = ?, status_reason = ?, updated_at = ? WHERE id = ?",
        )
        .bind(status.as_str())
        .bind(status.reason())
        .bind(now())
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Records (or clears) the date the connection's client secret expires.
    pub async fn set_secret_expiry(
        &self,
        id: i64,
        date: Option<chrono::NaiveDate>,
    ) -> Result<(), StoreError> {
        let at = date.map(|d| d.and_time(chrono::NaiveTime::MIN).and_utc().timestamp());
        sqlx::query("UPDATE connections SET secret_expires_at = ?, updated_at = ? WHERE id = ?")
            .bind(at)
            .bind(now())
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn remove_connection(&self, name: &str) -> Result<(), StoreError> {
        let n = sqlx::query("DELETE FROM connections WHERE name = ? AND managed_by_file = 0")
            .bind(name)
            .execute(&self.pool)
            .await?
            .rows_affected();
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
