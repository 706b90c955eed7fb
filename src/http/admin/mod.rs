//! The admin web UI: server-rendered pages (askama templates compiled into the binary), a small
//! stylesheet, plain forms. Works without JavaScript; every form carries the session's CSRF token.

mod assets;
mod connect;
mod connections;
mod dashboard;
mod form;
mod guide;
mod health;
mod keys;
mod login;
mod messages;
mod relay_users;

use askama::Template;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};

use super::AppState;
use super::auth::AdminSession;

/// What every page's frame needs.
#[derive(Debug, Clone, Default)]
pub struct Layout {
    pub title: String,
    /// The logged-in admin; `None` on the login page.
    pub user: Option<String>,
    pub csrf: String,
    /// Which navigation entry is current.
    pub nav: &'static str,
    pub flashes: Vec<Flash>,
}

/// A one-line message at the top of a page.
#[derive(Debug, Clone)]
pub struct Flash {
    /// `ok`, `bad` or `info`.
    pub kind: &'static str,
    pub text: String,
}

impl Flash {
    pub fn ok(text: impl Into<String>) -> Self {
        Flash {
            kind: "ok",
            text: text.into(),
        }
    }
    pub fn bad(text: impl Into<String>) -> Self {
        Flash {
            kind: "bad",
            text: text.into(),
        }
    }
    pub fn info(text: impl Into<String>) -> Self {
        Flash {
            kind: "info",
            text: text.into(),
        }
    }
}

impl Layout {
    pub fn new(session: &AdminSession, title: impl Into<String>, nav: &'static str) -> Self {
        Layout {
            title: title.into(),
            user: Some(session.username().to_string()),
            csrf: session.csrf_token().to_string(),
            nav,
            flashes: Vec::new(),
        }
    }

    pub fn flash(mut self, f: Option<Flash>) -> Self {
        self.flashes.extend(f);
        self
    }
}

/// Renders a template as an HTML response.
pub fn render<T: Template>(status: StatusCode, page: &T) -> Result<Response, PageError> {
    let html = page.render().map_err(PageError::internal)?;
    Ok((status, Html(html)).into_response())
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage {
    layout: Layout,
    message: String,
}

/// A page that could not be served, shown as a small HTML page.
#[derive(Debug)]
pub enum PageError {
    NotFound(String),
    BadRequest(String),
    /// The form's CSRF token is missing or wrong.
    Csrf,
    Internal(anyhow::Error),
}

impl PageError {
    pub fn internal(e: impl Into<anyhow::Error>) -> Self {
        PageError::Internal(e.into())
    }
}

impl From<crate::store::StoreError> for PageError {
    fn from(e: crate::store::StoreError) -> Self {
        match e {
            crate::store::StoreError::NoSuchConnection(n) => {
                PageError::NotFound(format!("There is no connection `{n}`."))
            }
            e @ crate::store::StoreError::ManagedByFile(_) => PageError::BadRequest(e.to_string()),
            other => PageError::internal(other),
        }
    }
}

impl From<crate::store::AccessError> for PageError {
    fn from(e: crate::store::AccessError) -> Self {
        if e.is_usage() {
            PageError::BadRequest(e.to_string())
        } else {
            PageError::internal(e)
        }
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let (status, title, message) = match self {
            PageError::NotFound(m) => (StatusCode::NOT_FOUND, "Not found", m),
            PageError::BadRequest(m) => (StatusCode::BAD_REQUEST, "Cannot do that", m),
            PageError::Csrf => (
                StatusCode::FORBIDDEN,
                "Form expired",
                "This form has expired or did not come from this site. Go back, reload the page \
                 and try again."
                    .to_string(),
            ),
            PageError::Internal(e) => {
                tracing::error!(error = format!("{e:#}"), "page failed");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Something failed",
                    "Postern failed to show this page; the cause is in its log.".to_string(),
                )
            }
        };
        let page = ErrorPage {
            layout: Layout {
                title: title.into(),
                ..Layout::default()
            },
            message,
        };
        match page.render() {
            Ok(html) => (status, Html(html)).into_response(),
            Err(_) => (status, title).into_response(),
        }
    }
}

/// Largest login form body.
const LOGIN_BODY_LIMIT: usize = 16 * 1024;

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/assets/style.css", get(assets::style))
        .route("/assets/copy.js", get(assets::copy_js))
        .route("/favicon.ico", get(assets::favicon))
        // The one form read before anyone is known: a name and a password, so a small limit.
        .route(
            "/admin/login",
            get(login::form)
                .post(login::submit)
                .layer(DefaultBodyLimit::max(LOGIN_BODY_LIMIT)),
        )
        .route("/admin/logout", post(login::logout))
        .route("/admin", get(dashboard::page))
        .route("/admin/guide", get(guide::page))
        .route("/admin/health", get(health::page))
        .route("/admin/connections/new", get(connections::new_form))
        .route("/admin/connections", post(connections::create))
        .route(
            "/admin/connections/{name}",
            get(connections::show).post(connections::update),
        )
        .route(
            "/admin/connections/{name}/edit",
            get(connections::edit_form),
        )
        .route(
            "/admin/connections/{name}/delete",
            post(connections::remove),
        )
        .route("/admin/connections/{name}/connect", post(connect::connect))
        .route("/admin/connections/{name}/test", post(connect::test))
        .route("/oauth/callback", get(connect::callback))
        .route("/admin/messages", get(messages::list))
        .route("/admin/messages/{id}", get(messages::show))
        .route("/admin/messages/{id}/retry", post(messages::retry))
        .route("/admin/messages/{id}/delete", post(messages::remove))
        .route("/admin/api-keys", get(keys::list).post(keys::create))
        .route("/admin/api-keys/{name}/revoke", post(keys::revoke))
        .route(
            "/admin/relay-users",
            get(relay_users::list).post(relay_users::create),
        )
        .route("/admin/relay-users/{name}/reset", post(relay_users::reset))
        .route(
            "/admin/relay-users/{name}/delete",
            post(relay_users::remove),
        )
}
