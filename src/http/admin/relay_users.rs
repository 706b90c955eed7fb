//! The relay users page: create (a generated password shown once), new password, remove.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use secrecy::ExposeSecret;
use serde::Deserialize;

use super::{Flash, Layout, PageError, render};
use crate::domain::{DisplayName, FromPolicy};
use crate::http::AppState;
use crate::http::auth::{AdminSession, CsrfForm};
use crate::smtp::server::AllowedFrom;
use crate::store::relay_users::NewPassword;
use crate::store::relay_users::{RelayUser, RelayUserError};

#[derive(Template)]
#[template(path = "relay_users.html")]
struct UsersPage {
    layout: Layout,
    users: Vec<RelayUser>,
    connections: Vec<String>,
    relay_port: u16,
    new_password: Option<(String, String)>,
    error: Option<String>,
}

impl From<RelayUserError> for PageError {
    fn from(e: RelayUserError) -> Self {
        match e {
            RelayUserError::Store(s) => s.into(),
            other => PageError::BadRequest(other.to_string()),
        }
    }
}

async fn page(
    session: &AdminSession,
    state: &AppState,
    status: StatusCode,
    flash: Option<Flash>,
    new_password: Option<(String, String)>,
    error: Option<String>,
) -> Result<Response, PageError> {
    let users = state.store().list_relay_users().await?;
    let connections = state
        .store()
        .list_connections()
        .await?
        .iter()
        .map(|c| c.name().to_string())
        .collect();
    render(
        status,
        &UsersPage {
            layout: Layout::new(session, "Relay users", "relay-users").flash(flash),
            users,
            connections,
            relay_port: state.settings().server.smtp_listen.port(),
            new_password,
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
    Query(q): Query<DoneQuery>,
) -> Result<Response, PageError> {
    let flash =
        (q.done.as_deref() == Some("removed")).then(|| Flash::ok("The relay user was removed."));
    page(&session, &state, StatusCode::OK, flash, None, None).await
}

#[derive(Debug, Deserialize)]
pub struct NewUserForm {
    name: String,
    connection: String,
    allow_from: Option<String>,
    /// `refuse` (default), `allow-listed` or `rewrite`.
    from_policy: Option<String>,
    /// The name of a rewritten From; blank keeps the message's own.
    display_name: Option<String>,
}

/// The form's From policy and display name, or what is wrong with them.
fn form_from_policy(form: &NewUserForm) -> Result<(FromPolicy, Option<DisplayName>), String> {
    let policy = match form.from_policy.as_deref().map(str::trim) {
        None | Some("") => FromPolicy::default(),
        Some(p) => p.parse::<FromPolicy>().map_err(|e| e.to_string())?,
    };
    let display_name = match form.display_name.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(n) => Some(DisplayName::parse(n).map_err(|e| e.to_string())?),
    };
    if display_name.is_some() && policy != FromPolicy::Rewrite {
        return Err("a display name is for a rewritten From: choose the policy “rewrite”".into());
    }
    Ok((policy, display_name))
}

pub async fn create(
    State(state): State<AppState>,
    CsrfForm { session, form }: CsrfForm<NewUserForm>,
) -> Result<Response, PageError> {
    let allow: Vec<String> = form
        .allow_from
        .as_deref()
        .unwrap_or("")
        .split([' ', ','])
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    let fail = |m: String| async {
        page(
            &session,
            &state,
            StatusCode::UNPROCESSABLE_ENTITY,
            None,
            None,
            Some(m),
        )
        .await
    };
    if let Err(e) = AllowedFrom::parse(&allow) {
        return fail(e.to_string()).await;
    }
    let (from_policy, display_name) = match form_from_policy(&form) {
        Ok(p) => p,
        Err(e) => return fail(e).await,
    };
    let Some(conn) = state.store().find_connection(&form.connection).await? else {
        return fail(format!("connection `{}` does not exist", form.connection)).await;
    };
    match state
        .store()
        .create_relay_user(form.name.trim(), conn.id, &allow, NewPassword::GENERATED)
        .await
    {
        Ok((user, generated)) => {
            if (from_policy, &display_name) != (FromPolicy::default(), &None)
                && let Err(e) = state
                    .store()
                    .set_relay_from_policy(&user.name, from_policy, display_name.as_ref())
                    .await
            {
                // No half-made user whose generated password nobody saw.
                let _ = state.store().remove_relay_user(&user.name).await;
                return Err(e.into());
            }
            tracing::info!(user = %user.name, by = %session.username(), "relay user created");
            let shown = generated.map(|p| (user.name.clone(), p.expose_secret().to_string()));
            page(&session, &state, StatusCode::OK, None, shown, None).await
        }
        Err(e) if e.is_usage() => fail(e.to_string()).await,
        Err(e) => Err(e.into()),
    }
}

#[derive(Debug, Deserialize)]
pub struct Empty {}

pub async fn reset(
    State(state): State<AppState>,
    Path(name): Path<String>,
    CsrfForm { session, .. }: CsrfForm<Empty>,
) -> Result<Response, PageError> {
    let generated = state
        .store()
        .reset_relay_password(&name, NewPassword::GENERATED)
        .await?;
    tracing::info!(user = %name, by = %session.username(), "relay user password reset");
    let shown = generated.map(|p| (name.clone(), p.expose_secret().to_string()));
    page(&session, &state, StatusCode::OK, None, shown, None).await
}

pub async fn remove(
    State(state): State<AppState>,
    Path(name): Path<String>,
    CsrfForm { session, .. }: CsrfForm<Empty>,
) -> Result<Response, PageError> {
    state.store().remove_relay_user(&name).await?;
    tracing::info!(user = %name, by = %session.username(), "relay user removed");
    Ok(Redirect::to("/admin/relay-users?done=removed").into_response())
}
