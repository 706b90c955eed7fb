//! The API keys page: create (the key shown once), list, revoke.

use askama::Template;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use secrecy::ExposeSecret;
use serde::Deserialize;

use super::{Flash, Layout, PageError, render};
use crate::http::AppState;
use crate::http::api::keys::ApiKeyView;
use crate::http::auth::{AdminSession, CsrfForm};
use crate::store::ApiRole;

#[derive(Template)]
#[template(path = "api_keys.html")]
struct KeysPage {
    layout: Layout,
    keys: Vec<ApiKeyView>,
    new_key: Option<(String, String)>,
    error: Option<String>,
}

async fn page(
    session: &AdminSession,
    state: &AppState,
    status: StatusCode,
    flash: Option<Flash>,
    new_key: Option<(String, String)>,
    error: Option<String>,
) -> Result<Response, PageError> {
    let keys = state.store().list_api_keys().await?;
    render(
        status,
        &KeysPage {
            layout: Layout::new(session, "API keys", "api-keys").flash(flash),
            keys: keys.iter().map(ApiKeyView::from).collect(),
            new_key,
            error,
        },
    )
}

#[derive(Debug, Deserialize)]
pub struct DoneQuery {
    done: Option<String>,
}

pub async fn list(
    session: AdminSession,
    State(state): State<AppState>,
    axum::extract::Query(q): axum::extract::Query<DoneQuery>,
) -> Result<Response, PageError> {
    let flash = (q.done.as_deref() == Some("revoked"))
        .then(|| Flash::ok("The key was revoked: it no longer works."));
    page(&session, &state, StatusCode::OK, flash, None, None).await
}

#[derive(Debug, Deserialize)]
pub struct NewKeyForm {
    name: String,
    role: String,
    /// Connection names separated by commas or spaces; empty for an unscoped key.
    #[serde(default)]
    connections: String,
}

/// Shows the new key in the response itself (not after a redirect), so it is never in a URL
/// or the browser's history, and it is never shown again.
pub async fn create(
    State(state): State<AppState>,
    CsrfForm { session, form }: CsrfForm<NewKeyForm>,
) -> Result<Response, PageError> {
    let created = match form.role.parse::<ApiRole>() {
        Ok(role) => {
            let scope: Vec<String> = form
                .connections
                .split(|c: char| c == ',' || c.is_whitespace())
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect();
            state.store().create_api_key(&form.name, role, &scope).await
        }
        Err(e) => Err(e),
    };
    match created {
        Ok(k) => {
            tracing::info!(key = %k.key.name, role = %k.key.role, by = %session.username(), "API key created");
            let shown = (k.key.name.clone(), k.secret.expose_secret().to_string());
            page(&session, &state, StatusCode::OK, None, Some(shown), None).await
        }
        Err(e) if e.is_usage() => {
            page(
                &session,
                &state,
                StatusCode::UNPROCESSABLE_ENTITY,
                None,
                None,
                Some(e.to_string()),
            )
            .await
        }
        Err(e) => Err(e.into()),
    }
}

#[derive(Debug, Deserialize)]
pub struct Empty {}

pub async fn revoke(
    State(state): State<AppState>,
    Path(name): Path<String>,
    CsrfForm { session, .. }: CsrfForm<Empty>,
) -> Result<Response, PageError> {
    state.store().revoke_api_key(&name).await?;
    tracing::info!(key = %name, by = %session.username(), "API key revoked");
    Ok(Redirect::to("/admin/api-keys?done=revoked").into_response())
}
