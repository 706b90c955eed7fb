//! The setup guide: the app registration steps in Postern's own words, with the right scopes.

use askama::Template;
use axum::extract::State;
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::Response;

use super::{Layout, PageError, render};
use crate::http::AppState;
use crate::http::auth::AdminSession;
use crate::http::base_url::callback_uri;

#[derive(Template)]
#[template(path = "guide.html")]
struct Guide {
    layout: Layout,
    callback_uri: String,
}

pub async fn page(
    session: AdminSession,
    State(state): State<AppState>,
    parts: Parts,
) -> Result<Response, PageError> {
    render(
        StatusCode::OK,
        &Guide {
            layout: Layout::new(&session, "Setup guide", "guide"),
            callback_uri: callback_uri(&parts, &state, None),
        },
    )
}
