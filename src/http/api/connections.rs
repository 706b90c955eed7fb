//! `/api/v1/connections`: the SMTP OAuth connections. Secrets are write-only: responses say
//! `set` / `not set`, never the value. Admin keys manage them; a `send` key scoped to
//! connections may list and read its own (see `http/auth/scope.rs`).

use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use super::json::{JsonBody, number_or_string, secret};
use crate::domain::{ConnectionInput, ConnectionView};
use crate::http::AppState;
use crate::http::auth::{AdminKey, ApiCaller};
use crate::http::error::{ApiError, ApiResult, Problem};
use crate::store::{ConnectionQuery, Store};

/// The connection form as JSON. On create, omitted fields take the provider's preset; on
/// update, omitted fields keep their value and `""` clears an optional one.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConnectionBody {
    /// A short slug: lowercase letters, digits, `-`, `_`.
    pub name: Option<String>,
    pub display_name: Option<String>,
    /// `microsoft` (Microsoft 365), `microsoft-us-gov` (GCC High / DoD), `microsoft-china`
    /// (21Vianet), `outlook` (Outlook.com personal), `google` or `custom`.
    pub provider: Option<String>,
    /// `authorization-code` (delegated, default) or `client-credentials` (app-only).
    pub flow: Option<String>,
    /// SMTP server ("Address"), e.g. `smtp.office365.com`.
    pub host: Option<String>,
    #[serde(default, deserialize_with = "number_or_string")]
    #[schema(value_type = Option<u16>)]
    pub port: Option<String>,
    /// `starttls` (587) or `implicit` (465).
    pub tls: Option<String>,
    /// The domain named in EHLO (default: the mailbox's domain).
    pub domain: Option<String>,
    /// The mailbox that sends ("User Name").
    pub user: Option<String>,
    /// `organizations`, `common`, `consumers`, the Directory (tenant) ID or a verified domain.
    pub tenant: Option<String>,
    /// The Application (client) ID.
    pub client_id: Option<String>,
    /// Space-separated scopes, e.g. `https://outlook.office.com/SMTP.Send offline_access`.
    pub scope: Option<String>,
    pub redirect_uri: Option<String>,
    pub authorize_url: Option<String>,
    pub token_url: Option<String>,
    pub device_url: Option<String>,
    pub ca_file: Option<String>,
    pub enabled: Option<bool>,
    #[serde(default, deserialize_with = "number_or_string")]
    #[schema(value_type = Option<u32>)]
    pub max_concurrent: Option<String>,
    /// Overrides of the provider's sending limits, replacing any set before:
    /// `messages-per-minute=N,messages-per-day=N,recipients-per-day=N,recipients-per-message=N`
    /// (any subset; 0: none). `""`: the provider's presets.
    pub limits: Option<String>,
    /// `smtp` (default: SMTP AUTH with XOAUTH2) or `graph` (Microsoft Graph sendMail, for
    /// tenants where SMTP AUTH is off; scopes `https://graph.microsoft.com/Mail.Send offline_access`).
    pub transport: Option<String>,
    /// The Microsoft Graph base URL (default: the provider cloud's, `https://graph.microsoft.com`).
    pub graph_url: Option<String>,
    /// `graph`: an SMTP connection to Microsoft 365 delivers through Microsoft Graph when SMTP
    /// AUTH answers `535 5.7.139` (needs the Graph Mail.Send permission too); `none` or `""`: no
    /// fallback.
    pub fallback: Option<String>,
    /// `fail` (default: a Graph message over 4 MB fails with the reason) or `draft` (a draft plus
    /// attachment upload sessions; needs `Mail.ReadWrite`). Graph connections only.
    pub graph_large: Option<String>,
    /// Write-only. `""` removes it.
    #[serde(default, deserialize_with = "secret")]
    #[schema(value_type = Option<String>, write_only)]
    pub client_secret: Option<SecretString>,
    /// Write-only; normally obtained by the authorize flow. `""` removes it.
    #[serde(default, deserialize_with = "secret")]
    #[schema(value_type = Option<String>, write_only)]
    pub refresh_token: Option<SecretString>,
    /// The client secret's expiry date, `YYYY-MM-DD` (Azure portal: Certificates & secrets);
    /// `""` clears it. Postern warns 30, 7 and 1 days before.
    pub secret_expires: Option<String>,
}

impl ConnectionBody {
    /// `Some(date or None)` when `secret_expires` was sent.
    fn secret_expiry(
        &self,
    ) -> Result<Option<Option<chrono::NaiveDate>>, crate::domain::ValidationErrors> {
        self.secret_expires
            .as_deref()
            .map(|t| {
                crate::domain::parse_expiry_date(t)
                    .map_err(|m| crate::domain::ValidationErrors::single("secret_expires", m))
            })
            .transpose()
    }
}

impl ConnectionBody {
    pub fn input(&self) -> ConnectionInput {
        ConnectionInput {
            name: self.name.clone(),
            display_name: self.display_name.clone(),
            provider: self.provider.clone(),
            flow: self.flow.clone(),
            host: self.host.clone(),
            port: self.port.clone(),
            tls: self.tls.clone(),
            domain: self.domain.clone(),
            user: self.user.clone(),
            tenant: self.tenant.clone(),
            client_id: self.client_id.clone(),
            scope: self.scope.clone(),
            redirect_uri: self.redirect_uri.clone(),
            authorize_url: self.authorize_url.clone(),
            token_url: self.token_url.clone(),
            device_url: self.device_url.clone(),
            ca_file: self.ca_file.clone(),
            enabled: self.enabled,
            max_concurrent: self.max_concurrent.clone(),
            limits: self.limits.clone(),
            transport: self.transport.clone(),
            graph_url: self.graph_url.clone(),
            fallback: self.fallback.clone(),
            graph_large: self.graph_large.clone(),
        }
    }
}

/// A connection as the API shows it (the same JSON as `postern connection show --json`).
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = Connection)]
#[allow(dead_code)] // Documentation only: responses serialize `ConnectionView`.
pub struct ConnectionDoc {
    name: String,
    display_name: Option<String>,
    provider: String,
    flow: String,
    host: String,
    port: u16,
    tls: String,
    domain: String,
    user: String,
    tenant: Option<String>,
    client_id: String,
    scope: String,
    redirect_uri: Option<String>,
    authorize_url: Option<String>,
    token_url: Option<String>,
    device_url: Option<String>,
    ca_file: Option<String>,
    enabled: bool,
    max_concurrent: u32,
    /// The sending limits in force (0: none).
    #[schema(value_type = Object)]
    limits: serde_json::Value,
    /// The overrides set on this connection (`name=N,…`; empty: the provider's presets).
    limit_overrides: String,
    /// `smtp` or `graph`.
    transport: String,
    /// The Graph base URL in force (Graph connections, and SMTP ones falling back to Graph).
    graph_url: Option<String>,
    /// `graph` when an SMTP connection falls back to Graph on `535 5.7.139`; null: no fallback.
    fallback: Option<String>,
    /// `fail` or `draft`: what Graph does with a message over its 4 MB limit.
    graph_large: String,
    /// `new`, `authorized`, `needs-reauthorization` or `disabled`.
    status: String,
    status_reason: Option<String>,
    /// `set` or `not set`.
    client_secret: String,
    /// `set` or `not set`.
    refresh_token: String,
    created_at: String,
    updated_at: String,
    /// The client secret's expiry date (`YYYY-MM-DD`), if entered.
    secret_expires: Option<String>,
    /// When the current refresh token was obtained (RFC 3339).
    refresh_token_obtained_at: Option<String>,
    /// When the cached access token expires (RFC 3339).
    access_token_expires_at: Option<String>,
    /// The last time a token was obtained (RFC 3339).
    last_used_at: Option<String>,
    /// Only after create and update: what Postern adjusted (e.g. added `offline_access`).
    notices: Option<Vec<String>>,
}

/// A connection just saved, with the notices validation produced.
#[derive(Debug, Serialize)]
pub struct Saved {
    #[serde(flatten)]
    pub connection: ConnectionView,
    pub notices: Vec<String>,
}

/// Writes the secrets given in `body`: a value replaces, `""` removes.
pub(crate) async fn save_secrets(
    store: &Store,
    id: i64,
    client_secret: Option<&SecretString>,
    refresh_token: Option<&SecretString>,
) -> Result<(), crate::store::StoreError> {
    store
        .put_credentials(id, client_secret, refresh_token)
        .await?;
    Ok(())
}

/// Filters and paging for the connection list.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// `new`, `authorized`, `needs-reauthorization` or `disabled` (as `status` shows it).
    pub status: Option<String>,
    /// `microsoft`, `microsoft-us-gov`, `microsoft-china`, `outlook`, `google` or `custom`.
    pub provider: Option<String>,
    /// Text found, in any case, in the name, display name, user or domain.
    pub search: Option<String>,
    /// Page size, 1 to 1000 (default 50).
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// One page of connections, by name.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ConnectionPageDoc {
    #[schema(value_type = Vec<ConnectionDoc>)]
    pub connections: Vec<ConnectionView>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// Default page size of the connection list.
pub const DEFAULT_PAGE: u32 = 50;

#[utoipa::path(get, path = "/api/v1/connections", tag = "connections",
    security(("api_key" = [])), params(ListParams),
    responses(
        (status = 200, description = "A page of connections, by name (a scoped key sees only its own)", body = ConnectionPageDoc),
        (status = 400, description = "A filter or cursor is not valid", body = Problem),
        (status = 401, body = Problem), (status = 403, body = Problem)))]
pub async fn list(
    caller: ApiCaller,
    State(state): State<AppState>,
    Query(p): Query<ListParams>,
) -> ApiResult<Response> {
    let scope = caller.readable_connections()?;
    let mut q = ConnectionQuery::parse(
        p.status.as_deref(),
        p.provider.as_deref(),
        p.search.as_deref(),
        p.cursor.as_deref(),
        Some(p.limit.unwrap_or(DEFAULT_PAGE)),
    )
    .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    q.ids = scope.map(|s| s.iter().map(|c| c.id).collect());
    let page = state.store().query_connections(&q).await?;
    Ok(axum::Json(ConnectionPageDoc {
        connections: page.connections.iter().map(ConnectionView::from).collect(),
        next_cursor: page.next_cursor,
    })
    .into_response())
}

#[utoipa::path(post, path = "/api/v1/connections", tag = "connections",
    security(("api_key" = [])), request_body = ConnectionBody,
    responses(
        (status = 201, description = "Created", body = ConnectionDoc),
        (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 409, description = "The name is taken", body = Problem),
        (status = 422, description = "Fields are wrong: every one is listed in `errors`", body = Problem)))]
pub async fn create(
    caller: AdminKey,
    State(state): State<AppState>,
    JsonBody(body): JsonBody<ConnectionBody>,
) -> ApiResult<Response> {
    let (settings, notices) = body.input().validate()?;
    crate::oauth::service_account::check_key_field(settings.flow, body.client_secret.as_ref())?;
    let expires = body.secret_expiry()?;
    let store = state.store();
    let conn = store.insert_connection(&settings).await?;
    if let Some(date) = expires {
        store.set_secret_expiry(conn.id, date).await?;
    }
    save_secrets(
        store,
        conn.id,
        body.client_secret.as_ref(),
        body.refresh_token.as_ref(),
    )
    .await?;
    let conn = store.connection_by_id(conn.id).await?;
    tracing::info!(connection = %conn.name(), by = %caller.key.name, "connection created");
    let location = format!("/api/v1/connections/{}", conn.name());
    let saved = Saved {
        connection: ConnectionView::from(&conn),
        notices: notices.into_iter().map(|n| n.0).collect(),
    };
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        axum::Json(saved),
    )
        .into_response())
}

#[utoipa::path(get, path = "/api/v1/connections/{name}", tag = "connections",
    security(("api_key" = [])), params(("name" = String, Path, description = "Connection name")),
    responses(
        (status = 200, body = ConnectionDoc),
        (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub async fn show(
    caller: ApiCaller,
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    caller.readable_connections()?;
    caller.check_connection_name(&name)?;
    let conn = state.store().connection(&name).await?;
    Ok(axum::Json(ConnectionView::from(&conn)).into_response())
}

#[utoipa::path(patch, path = "/api/v1/connections/{name}", tag = "connections",
    security(("api_key" = [])), params(("name" = String, Path, description = "Connection name")),
    request_body = ConnectionBody,
    responses(
        (status = 200, description = "Updated", body = ConnectionDoc),
        (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem), (status = 409, body = Problem), (status = 422, body = Problem)))]
pub async fn update(
    caller: AdminKey,
    State(state): State<AppState>,
    Path(name): Path<String>,
    JsonBody(body): JsonBody<ConnectionBody>,
) -> ApiResult<Response> {
    let store = state.store();
    let current = store.connection(&name).await?;
    let (settings, notices) = ConnectionInput::from_settings(&current.settings)
        .overlay(body.input())
        .validate()?;
    crate::oauth::service_account::check_key_field(settings.flow, body.client_secret.as_ref())?;
    let expires = body.secret_expiry()?;
    let conn = store.update_connection(current.id, &settings).await?;
    if let Some(date) = expires {
        store.set_secret_expiry(conn.id, date).await?;
    }
    save_secrets(
        store,
        conn.id,
        body.client_secret.as_ref(),
        body.refresh_token.as_ref(),
    )
    .await?;
    let conn = store.connection_by_id(conn.id).await?;
    tracing::info!(connection = %conn.name(), by = %caller.key.name, "connection updated");
    Ok(axum::Json(Saved {
        connection: ConnectionView::from(&conn),
        notices: notices.into_iter().map(|n| n.0).collect(),
    })
    .into_response())
}

#[utoipa::path(delete, path = "/api/v1/connections/{name}", tag = "connections",
    security(("api_key" = [])), params(("name" = String, Path, description = "Connection name")),
    responses(
        (status = 204, description = "Removed, with its stored secrets"),
        (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub async fn remove(
    caller: AdminKey,
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    state.store().remove_connection(&name).await?;
    tracing::info!(connection = %name, by = %caller.key.name, "connection removed");
    Ok(StatusCode::NO_CONTENT)
}

/// Where to send the admin's browser to authorize a connection.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AuthorizeStart {
    /// Open this in a browser and sign in as the connection's mailbox.
    pub authorize_url: String,
    /// Where the provider sends the browser back (`/oauth/callback`): register it on the app.
    pub redirect_uri: String,
    /// The sign-in must finish within this many seconds.
    pub expires_in: u64,
}

#[utoipa::path(post, path = "/api/v1/connections/{name}/authorize", tag = "connections",
    security(("api_key" = [])), params(("name" = String, Path, description = "Connection name")),
    responses(
        (status = 200, description = "The provider's authorize URL; `/oauth/callback` completes the consent", body = AuthorizeStart),
        (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem),
        (status = 422, description = "The connection cannot be authorized this way (app-only, no endpoint)", body = Problem)))]
pub async fn authorize(
    caller: AdminKey,
    State(state): State<AppState>,
    Path(name): Path<String>,
    parts: axum::http::request::Parts,
) -> ApiResult<Response> {
    let conn = state.store().connection(&name).await?;
    let redirect = crate::http::base_url::callback_uri(
        &parts,
        &state,
        conn.settings.redirect_uri.as_ref().map(|r| r.as_str()),
    );
    // No browser to bind (the caller is a program): the single-use, short-lived state is the tie.
    let started = state
        .consents()
        .start(state.store(), &conn, &redirect, false)
        .await
        .map_err(|e| {
            crate::http::error::ApiError::Validation(vec![crate::http::error::FieldProblem {
                field: "connection".into(),
                message: e.to_string(),
            }])
        })?;
    tracing::info!(connection = %name, by = %caller.key.name, "web consent started");
    Ok(axum::Json(AuthorizeStart {
        authorize_url: started.authorize_url.to_string(),
        redirect_uri: started.redirect_uri,
        expires_in: crate::http::state::CONSENT_LIFETIME.as_secs(),
    })
    .into_response())
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TestBody {
    /// Who receives the test message.
    pub to: String,
}

/// One step of a connection test.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TestStep {
    /// `dns`, `tcp`, `greeting`, `ehlo`, `starttls`, `tls`, `token`, `auth`, `send`, `quit`...
    pub name: String,
    pub ok: bool,
    pub detail: String,
}

/// What a connection test saw.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TestResult {
    pub passed: bool,
    pub steps: Vec<TestStep>,
    /// The test message's id in the sent-mail log, when it got that far.
    pub message_id: Option<String>,
    /// Where it failed and why, with the likely cause when Postern knows it.
    pub failure_stage: Option<String>,
    pub failure: Option<String>,
    pub likely_cause: Option<String>,
}

#[utoipa::path(post, path = "/api/v1/connections/{name}/test", tag = "connections",
    security(("api_key" = [])), params(("name" = String, Path, description = "Connection name")),
    request_body = TestBody,
    responses(
        (status = 200, description = "The test ran (see `passed`)", body = TestResult),
        (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem), (status = 422, body = Problem)))]
pub async fn test(
    caller: AdminKey,
    State(state): State<AppState>,
    Path(name): Path<String>,
    JsonBody(body): JsonBody<TestBody>,
) -> ApiResult<Response> {
    let conn = state.store().connection(&name).await?;
    let to = crate::domain::EmailAddress::parse(body.to.trim()).map_err(|e| {
        crate::http::error::ApiError::Validation(vec![crate::http::error::FieldProblem {
            field: "to".into(),
            message: e.to_string(),
        }])
    })?;
    let tokens = state
        .tokens()
        .map_err(crate::http::error::ApiError::internal)?;
    let report = crate::outbox::direct::test_connection(
        state.store(),
        tokens,
        &state.settings().delivery,
        &conn,
        &to,
        crate::store::messages::Source::Api,
    )
    .await
    .map_err(crate::http::error::ApiError::internal)?;
    tracing::info!(connection = %name, by = %caller.key.name, passed = report.passed(), "connection test");
    Ok(axum::Json(TestResult {
        passed: report.passed(),
        steps: report
            .steps
            .iter()
            .map(|s| TestStep {
                name: s.name.to_string(),
                ok: s.ok,
                detail: s.detail.clone(),
            })
            .collect(),
        message_id: report.message.as_ref().map(|m| m.id.clone()),
        failure_stage: report.failure.as_ref().map(|f| f.stage.clone()),
        failure: report.failure.as_ref().map(|f| f.error.clone()),
        likely_cause: report.failure.as_ref().and_then(|f| f.likely_cause.clone()),
    })
    .into_response())
}
