//! `/api/v1/api-keys`: API keys. The key itself is in the create response, once.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};

use super::json::JsonBody;
use crate::http::AppState;
use crate::http::auth::AdminKey;
use crate::http::error::{ApiResult, Problem};
use crate::store::{ApiKey, ApiRole};

/// An API key, without its secret.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ApiKeyView {
    pub name: String,
    /// `send` or `admin`.
    pub role: String,
    /// The key's first characters, to recognise it.
    pub prefix: String,
    pub created_at: String,
    pub last_used_at: Option<String>,
    /// The connections a scoped `send` key may use; absent for an unscoped key (any connection).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connections: Option<Vec<String>>,
}

fn time(t: i64) -> String {
    chrono::DateTime::from_timestamp(t, 0)
        .map(|d| d.to_rfc3339())
        .unwrap_or_default()
}

impl From<&ApiKey> for ApiKeyView {
    fn from(k: &ApiKey) -> Self {
        Self {
            name: k.name.clone(),
            role: k.role.to_string(),
            prefix: k.prefix.clone(),
            created_at: time(k.created_at),
            last_used_at: k.last_used_at.map(time),
            connections: k
                .scope
                .as_ref()
                .map(|s| s.iter().map(|c| c.name.clone()).collect()),
        }
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewKeyBody {
    /// A short slug naming the application that will use the key.
    pub name: String,
    #[schema(value_type = String, example = "send")]
    pub role: ApiRole,
    /// Scope a `send` key to these connections: it may then only send through them and read
    /// their messages and status. Empty or absent: any connection.
    #[serde(default)]
    pub connections: Vec<String>,
}

/// A key just created: `key` is shown this once and never again.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CreatedKey {
    #[serde(flatten)]
    pub view: ApiKeyView,
    /// The secret, e.g. `pk_...`: send it as `Authorization: Bearer <key>`.
    pub key: String,
}

#[utoipa::path(get, path = "/api/v1/api-keys", tag = "api-keys", security(("api_key" = [])),
    responses((status = 200, body = Vec<ApiKeyView>),
        (status = 401, body = Problem), (status = 403, body = Problem)))]
pub async fn list(_caller: AdminKey, State(state): State<AppState>) -> ApiResult<Response> {
    let keys = state.store().list_api_keys().await?;
    Ok(axum::Json(keys.iter().map(ApiKeyView::from).collect::<Vec<_>>()).into_response())
}

#[utoipa::path(post, path = "/api/v1/api-keys", tag = "api-keys", security(("api_key" = [])),
    request_body = NewKeyBody,
    responses((status = 201, description = "The key, shown once", body = CreatedKey),
        (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 409, body = Problem)))]
pub async fn create(
    caller: AdminKey,
    State(state): State<AppState>,
    JsonBody(body): JsonBody<NewKeyBody>,
) -> ApiResult<Response> {
    let created = state
        .store()
        .create_api_key(&body.name, body.role, &body.connections)
        .await?;
    tracing::info!(key = %created.key.name, role = %created.key.role, by = %caller.key.name, "API key created");
    let out = CreatedKey {
        view: ApiKeyView::from(&created.key),
        key: created.secret.expose_secret().to_string(),
    };
    Ok((StatusCode::CREATED, axum::Json(out)).into_response())
}

#[utoipa::path(delete, path = "/api/v1/api-keys/{name}", tag = "api-keys", security(("api_key" = [])),
    params(("name" = String, Path, description = "Key name")),
    responses((status = 204, description = "Revoked: it stops working at once"),
        (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub async fn revoke(
    caller: AdminKey,
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    state.store().revoke_api_key(&name).await?;
    tracing::info!(key = %name, by = %caller.key.name, "API key revoked");
    Ok(StatusCode::NO_CONTENT)
}
