//! The Health page: the same checks as `postern doctor`, and what notifications told the admin.

use askama::Template;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;

use super::{Layout, PageError, render};
use crate::doctor::{self, Check, Options};
use crate::http::AppState;
use crate::http::auth::AdminSession;

/// One notification and how its delivery went, as the page shows it.
struct Event {
    at: String,
    event: String,
    connection: String,
    reason: String,
    fix: String,
    attempts: Vec<String>,
}

#[derive(Template)]
#[template(path = "health.html")]
struct Health {
    layout: Layout,
    verdict: &'static str,
    checks: Vec<Check>,
    channels: Vec<&'static str>,
    events: Vec<Event>,
}

fn time(t: i64) -> String {
    chrono::DateTime::from_timestamp(t, 0)
        .unwrap_or_default()
        .format("%Y-%m-%d %H:%M UTC")
        .to_string()
}

pub async fn page(
    session: AdminSession,
    State(state): State<AppState>,
) -> Result<Response, PageError> {
    let settings = state.settings();
    let checks = doctor::run(settings, &Options::default()).await;
    let verdict = doctor::verdict(&checks).as_str();
    let n = &settings.notifications;
    let mut channels = Vec::new();
    if n.webhook_url.is_some() {
        channels.push("webhook");
    }
    if n.email_connection.is_some() {
        channels.push("e-mail");
    }
    if !n.command.is_empty() {
        channels.push("command");
    }
    let store = state.store();
    let mut events = Vec::new();
    for e in store.recent_notifications(20).await? {
        let attempts = store
            .notification_attempts(e.id)
            .await?
            .into_iter()
            .map(|a| {
                format!(
                    "{} {} {}: {}",
                    time(a.at),
                    a.channel,
                    if a.ok { "ok" } else { "failed" },
                    a.detail
                )
            })
            .collect();
        events.push(Event {
            at: time(e.at),
            event: e.event,
            connection: e.connection.unwrap_or_default(),
            reason: e.reason,
            fix: e.fix,
            attempts,
        });
    }
    render(
        StatusCode::OK,
        &Health {
            layout: Layout::new(&session, "Health", "health"),
            verdict,
            checks,
            channels,
            events,
        },
    )
}
