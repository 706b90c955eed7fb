//! The dashboard: every connection with its status badge, queue and last error.

use askama::Template;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;

use super::connections::status_text;
use super::{Flash, Layout, PageError, render};
use crate::domain::ConnectionView;
use crate::http::AppState;
use crate::http::auth::AdminSession;
use crate::store::messages::MessageFilter;

#[derive(Debug)]
struct Row {
    name: String,
    display_name: Option<String>,
    user: String,
    provider: String,
    status: String,
    status_label: &'static str,
    reason: Option<String>,
    queue: String,
    last_error: Option<String>,
}

#[derive(Template)]
#[template(path = "dashboard.html")]
struct Dashboard {
    layout: Layout,
    rows: Vec<Row>,
}

#[derive(Debug, Deserialize)]
pub struct DoneQuery {
    done: Option<String>,
}

pub async fn page(
    session: AdminSession,
    State(state): State<AppState>,
    Query(q): Query<DoneQuery>,
) -> Result<Response, PageError> {
    let conns = state.store().list_connections().await?;
    let counts = state.store().message_counts().await?;
    let mut rows = Vec::with_capacity(conns.len());
    for c in &conns {
        let queue: Vec<String> = counts
            .iter()
            .filter(|(conn, _, _)| conn == c.name().as_str())
            .map(|(_, status, n)| format!("{n} {status}"))
            .collect();
        // The latest delivery error still worth reading (on a message not yet sent).
        let recent = state
            .store()
            .list_messages(&MessageFilter {
                connection: Some(c.name().to_string()),
                limit: Some(20),
                ..MessageFilter::default()
            })
            .await?;
        let last_error = recent
            .into_iter()
            .filter(|m| m.status != "sent")
            .find_map(|m| m.last_error);
        rows.push({
            let v = ConnectionView::from(c);
            let (status_label, _) = status_text(&v);
            Row {
                name: v.name.clone(),
                display_name: v.display_name.clone(),
                user: v.user.clone(),
                provider: v.provider.clone(),
                status: v.status.clone(),
                status_label,
                reason: v.status_reason.clone(),
                queue: if queue.is_empty() {
                    "no mail yet".into()
                } else {
                    queue.join(" · ")
                },
                last_error,
            }
        });
    }
    let flash = match q.done.as_deref() {
        Some("removed") => Some(Flash::ok("Connection removed.")),
        _ => None,
    };
    render(
        StatusCode::OK,
        &Dashboard {
            layout: Layout::new(&session, "Connections", "dashboard").flash(flash),
            rows,
        },
    )
}
