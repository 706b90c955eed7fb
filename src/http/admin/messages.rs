//! The sent-mail pages: the filtered, paged list and one message's detail, with retry and
//! delete for mail still waiting.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::{Flash, Layout, PageError, render};
use crate::http::AppState;
use crate::http::api::messages::{ListParams, filter};
use crate::http::auth::{AdminSession, CsrfForm};
use crate::store::messages::MessageDetail;
use crate::store::queue_admin::{QueueAdminError, RetryTarget};

const PAGE: u32 = 25;
const STATUSES: &[&str] = &[
    "", "queued", "sending", "sent", "deferred", "failed", "held",
];

#[derive(Debug)]
struct Row {
    id: String,
    queued_at: String,
    subject: String,
    to: String,
    status: String,
    last_error: Option<String>,
    connection: String,
}

#[derive(Template)]
#[template(path = "messages.html")]
struct ListPage {
    layout: Layout,
    /// (value, selected)
    statuses: Vec<(&'static str, bool)>,
    connections: Vec<(String, bool)>,
    recipient: String,
    since: String,
    rows: Vec<Row>,
    error: Option<String>,
    first_page: Option<String>,
    next_page: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
pub struct ListQuery {
    status: Option<String>,
    connection: Option<String>,
    recipient: Option<String>,
    since: Option<String>,
    cursor: Option<String>,
    done: Option<String>,
}

/// `2026-01-31` or a full RFC 3339 time, for the filter.
fn since_rfc3339(s: &str) -> Option<String> {
    let s = s.trim();
    if s.is_empty() {
        None
    } else if s.len() == 10 {
        Some(format!("{s}T00:00:00Z"))
    } else {
        Some(s.to_string())
    }
}

fn short_time(rfc3339: &str) -> String {
    chrono::DateTime::parse_from_rfc3339(rfc3339)
        .map(|t| {
            t.with_timezone(&chrono::Utc)
                .format("%Y-%m-%d %H:%M:%S")
                .to_string()
        })
        .unwrap_or_else(|_| rfc3339.to_string())
}

fn query_string(q: &ListQuery, cursor: Option<&str>) -> String {
    let mut s = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in [
        ("status", &q.status),
        ("connection", &q.connection),
        ("recipient", &q.recipient),
        ("since", &q.since),
    ] {
        if let Some(v) = v.as_deref().filter(|v| !v.is_empty()) {
            s.append_pair(k, v);
        }
    }
    if let Some(c) = cursor {
        s.append_pair("cursor", c);
    }
    format!("/admin/messages?{}", s.finish())
}

pub async fn list(
    session: AdminSession,
    State(state): State<AppState>,
    Query(q): Query<ListQuery>,
) -> Result<Response, PageError> {
    let params = ListParams {
        status: q.status.clone(),
        connection: q.connection.clone(),
        since: q.since.as_deref().and_then(since_rfc3339),
        recipient: q.recipient.clone(),
        cursor: q.cursor.clone(),
        limit: Some(PAGE),
    };
    let (rows, error, next_page) = match filter(&params) {
        Ok(f) => {
            let found = state.store().list_messages(&f).await?;
            let next = (found.len() == PAGE as usize)
                .then(|| found.last().map(|m| query_string(&q, Some(&m.id))))
                .flatten();
            let rows = found
                .into_iter()
                .map(|m| Row {
                    id: m.id,
                    queued_at: short_time(&m.queued_at),
                    subject: m.subject.unwrap_or_else(|| "(no subject)".into()),
                    to: m.recipients.join(", "),
                    status: m.status,
                    last_error: m.last_error,
                    connection: m.connection,
                })
                .collect();
            (rows, None, next)
        }
        Err(e) => (Vec::new(), Some(e.to_string()), None),
    };
    let chosen = q.connection.clone().unwrap_or_default();
    let connections = state
        .store()
        .list_connections()
        .await?
        .iter()
        .map(|c| (c.name().to_string(), c.name().as_str() == chosen))
        .collect();
    let status = q.status.clone().unwrap_or_default();
    let flash = match q.done.as_deref() {
        Some("deleted") => Some(Flash::ok("The message was deleted from the queue.")),
        _ => None,
    };
    let page = ListPage {
        layout: Layout::new(&session, "Sent e-mails", "messages").flash(flash),
        statuses: STATUSES.iter().map(|s| (*s, *s == status)).collect(),
        connections,
        recipient: q.recipient.clone().unwrap_or_default(),
        since: q.since.clone().unwrap_or_default(),
        rows,
        error,
        first_page: q.cursor.is_some().then(|| query_string(&q, None)),
        next_page,
    };
    render(StatusCode::OK, &page)
}

#[derive(Template)]
#[template(path = "message.html")]
struct DetailPage {
    layout: Layout,
    m: MessageDetail,
    subject: String,
    recipients: String,
    can_change: bool,
}

#[derive(Debug, Deserialize)]
pub struct DoneQuery {
    done: Option<String>,
}

async fn detail_page(
    session: &AdminSession,
    state: &AppState,
    id: &str,
    flash: Option<Flash>,
) -> Result<Response, PageError> {
    let m = state
        .store()
        .message_detail(id)
        .await?
        .ok_or_else(|| PageError::NotFound(format!("There is no message `{id}`.")))?;
    let page = DetailPage {
        layout: Layout::new(session, "Message", "messages").flash(flash),
        subject: m
            .summary
            .subject
            .clone()
            .unwrap_or_else(|| "(no subject)".into()),
        recipients: m.summary.recipients.join(", "),
        can_change: matches!(
            m.summary.status.as_str(),
            "queued" | "deferred" | "held" | "failed"
        ),
        m,
    };
    render(StatusCode::OK, &page)
}

pub async fn show(
    session: AdminSession,
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<DoneQuery>,
) -> Result<Response, PageError> {
    let flash = match q.done.as_deref() {
        Some("retried") => Some(Flash::ok(
            "The message is due now: a worker picks it up in a moment.",
        )),
        _ => None,
    };
    detail_page(&session, &state, &id, flash).await
}

#[derive(Debug, Deserialize)]
pub struct Empty {}

fn queue_flash(e: QueueAdminError) -> Result<Flash, PageError> {
    match e {
        QueueAdminError::NotFound(id) => {
            Err(PageError::NotFound(format!("There is no message `{id}`.")))
        }
        e @ QueueAdminError::WrongState { .. } => Ok(Flash::bad(e.to_string())),
        QueueAdminError::Store(e) => Err(e.into()),
    }
}

pub async fn retry(
    State(state): State<AppState>,
    Path(id): Path<String>,
    CsrfForm { session, .. }: CsrfForm<Empty>,
) -> Result<Response, PageError> {
    match state
        .store()
        .retry_messages(&RetryTarget::One(id.clone()))
        .await
    {
        Ok(_) => {
            if let (Some(outbox), Some(d)) =
                (state.outbox(), state.store().message_detail(&id).await?)
                && let Some(conn) = state.store().find_connection(&d.summary.connection).await?
            {
                outbox.wakers().wake(conn.id);
            }
            tracing::info!(id = %id, by = %session.username(), "message retried");
            Ok(Redirect::to(&format!("/admin/messages/{id}?done=retried")).into_response())
        }
        Err(e) => {
            let flash = queue_flash(e)?;
            detail_page(&session, &state, &id, Some(flash)).await
        }
    }
}

pub async fn remove(
    State(state): State<AppState>,
    Path(id): Path<String>,
    CsrfForm { session, .. }: CsrfForm<Empty>,
) -> Result<Response, PageError> {
    match state.store().delete_queued_message(&id).await {
        Ok(()) => {
            tracing::info!(id = %id, by = %session.username(), "queued message deleted");
            Ok(Redirect::to("/admin/messages?done=deleted").into_response())
        }
        Err(e) => {
            let flash = queue_flash(e)?;
            detail_page(&session, &state, &id, Some(flash)).await
        }
    }
}
