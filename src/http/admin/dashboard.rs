//! The dashboard: the connections, 50 a page, with a search box, a status filter with counts,
//! and each connection's status badge, queue and last error.

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
use crate::store::ConnectionQuery;
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
    /// The search box's text.
    search: String,
    /// The status filter's value (`""`: any).
    status: String,
    /// Each status with how many connections (matching the search) show it.
    status_counts: Vec<(&'static str, i64)>,
    /// Connections matching the search, whatever their status.
    total: i64,
    /// The link to the next page, filters kept.
    next_page: Option<String>,
    /// Whether this is a later page (offers a way back to the first).
    later_page: bool,
    /// A filter value that could not be used.
    error: Option<String>,
}

/// The dashboard's page size.
const PAGE: u32 = 50;

#[derive(Debug, Deserialize)]
pub struct DashboardQuery {
    done: Option<String>,
    #[serde(default)]
    search: String,
    #[serde(default)]
    status: String,
    cursor: Option<String>,
}

pub async fn page(
    session: AdminSession,
    State(state): State<AppState>,
    Query(q): Query<DashboardQuery>,
) -> Result<Response, PageError> {
    // A wrong filter (a stale bookmark) shows the first unfiltered page with the reason.
    let (query, error) = match ConnectionQuery::parse(
        Some(&q.status),
        None,
        Some(&q.search),
        q.cursor.as_deref(),
        Some(PAGE),
    ) {
        Ok(query) => (query, None),
        Err(e) => (
            ConnectionQuery {
                limit: Some(PAGE),
                ..ConnectionQuery::default()
            },
            Some(e.to_string()),
        ),
    };
    let status_counts = state.store().connection_status_counts(&query).await?;
    let page = state.store().query_connections(&query).await?;
    let next_page = page.next_cursor.as_ref().map(|c| {
        let mut url = url::form_urlencoded::Serializer::new(String::new());
        url.append_pair("search", query.search.as_deref().unwrap_or(""));
        url.append_pair("status", query.status.unwrap_or(""));
        url.append_pair("cursor", c);
        format!("/admin?{}", url.finish())
    });
    let conns = page.connections;
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
            search: query.search.clone().unwrap_or_default(),
            status: query.status.unwrap_or("").to_string(),
            total: status_counts.iter().map(|(_, n)| n).sum(),
            status_counts,
            next_page,
            later_page: query.after.is_some(),
            error,
        },
    )
}
