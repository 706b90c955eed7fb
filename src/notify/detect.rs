//! Which state changes deserve an event: a pure function of the connections, the message log and
//! the states last recorded, so it is table-tested without a store or a clock.

use std::collections::HashMap;

use chrono::NaiveDate;

use crate::domain::OAuthFlow;
use crate::explain::{self, Context, reauthorization_fix};
use crate::store::connection_watch::WatchedConnection;
use crate::store::notifications::{MailWatch, NewNotification};

/// A state to record, with the event it causes (if any).
#[derive(Debug, Clone)]
pub struct Transition {
    pub subject: String,
    pub topic: &'static str,
    /// The state this change starts from (none recorded yet: `None`).
    pub prev: Option<String>,
    pub state: String,
    pub event: Option<NewNotification>,
}

pub type States = HashMap<(String, String), String>;

/// Microsoft ends a refresh token unused for 90 days: tell the admin at 60.
const REFRESH_IDLE_DAYS: i64 = 60;

/// The days before a secret's expiry at which the admin is warned, latest first.
const SECRET_WARNINGS: [i64; 3] = [1, 7, 30];

fn event(
    kind: &str,
    connection: Option<&str>,
    reason: String,
    fix: String,
) -> Option<NewNotification> {
    Some(NewNotification {
        event: kind.to_string(),
        connection: connection.map(str::to_string),
        reason,
        fix,
    })
}

/// Every change since `states`, given the time now.
pub fn transitions(
    conns: &[WatchedConnection],
    mail: &MailWatch,
    states: &States,
    today: NaiveDate,
    now_ms: i64,
    queue_age_minutes: u64,
) -> Vec<Transition> {
    let mut out = Vec::new();
    let mut push = |subject: &str, topic: &'static str, state: String, event| {
        let prev = states.get(&(subject.to_string(), topic.to_string()));
        if prev != Some(&state) {
            out.push(Transition {
                subject: subject.to_string(),
                topic,
                prev: prev.cloned(),
                state,
                event,
            });
        }
    };
    for c in conns {
        let name = c.name.as_str();
        let prev = states.get(&(name.to_string(), "status".to_string()));
        if let Some(reason) = c.status.reason().filter(|_| c.enabled) {
            let ev = event(
                "connection.needs_reauthorization",
                Some(name),
                format!("`{name}` cannot get tokens and holds its mail: {reason}"),
                reauthorization_fix(name, reason),
            );
            push(name, "status", "needs-reauthorization".into(), ev);
        } else if c.status.as_str() == "authorized" {
            // A connection seen healthy first is no news; one that was broken has recovered.
            let ev = match prev.map(String::as_str) {
                Some("needs-reauthorization") => event(
                    "connection.recovered",
                    Some(name),
                    format!("`{name}` obtains tokens again; its held mail is being sent"),
                    "Nothing to do.".into(),
                ),
                _ => None,
            };
            push(name, "status", "ok".into(), ev);
        }
        if let Some(date) = c.secret_expires {
            let left = (date - today).num_days();
            let bucket = SECRET_WARNINGS.iter().find(|d| left <= **d);
            let state = format!("{date}:{}", bucket.map_or("none".into(), i64::to_string));
            let ev = bucket.and_then(|days| {
                let when = if left < 0 {
                    format!("expired on {date}")
                } else {
                    format!("expires on {date}, in {left} day(s)")
                };
                event(
                    &format!("secret.expiring.{days}d"),
                    Some(name),
                    format!("the client secret of `{name}` {when} (warning at {days} day(s))"),
                    format!(
                        "Create a new secret under App registrations > Certificates & secrets, then \
                         `postern connection edit {name} --client-secret-file FILE --secret-expires YYYY-MM-DD`."
                    ),
                )
            });
            push(name, "secret_expiry", state, ev);
        }
    }
    for c in conns
        .iter()
        .filter(|c| c.enabled && c.flow == OAuthFlow::AuthorizationCode)
    {
        let Some(t) = c.refresh_obtained_at else {
            continue;
        };
        let name = c.name.as_str();
        let age = (now_ms / 1000 - t.timestamp()) / 86_400;
        let idle = age >= REFRESH_IDLE_DAYS;
        let ev = idle
            .then(|| {
                event(
                    "refresh_token.idle",
                    Some(name),
                    format!(
                        "the refresh token of `{name}` was last renewed {age} days ago: Microsoft ends it after 90 idle days"
                    ),
                    format!(
                        "Check that `postern serve` runs (its keep-alive renews idle tokens), or run `postern connection token {name}`."
                    ),
                )
            })
            .flatten();
        let seen = states.contains_key(&(name.to_string(), "refresh_idle".to_string()));
        if idle || seen {
            push(
                name,
                "refresh_idle",
                if idle { "idle" } else { "ok" }.into(),
                ev,
            );
        }
    }
    let seen_failed: i64 = states
        .get(&(String::new(), "message_failed".to_string()))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    if mail.failed != seen_failed {
        let ev = match &mail.last_failure {
            Some((id, conn, error)) if mail.failed > seen_failed => {
                let error = error.clone().unwrap_or_default();
                let fix = explain::lookup(&error).map_or_else(
                    || format!("See `postern messages show {id}`."),
                    |e| {
                        e.explain(Context {
                            connection: Some(conn),
                            redirect_uri: None,
                        })
                    },
                );
                let n = mail.failed - seen_failed;
                event(
                    "message.failed",
                    Some(conn),
                    format!("{n} message(s) failed; the latest, {id}: {error}"),
                    fix,
                )
            }
            _ => None,
        };
        push("", "message_failed", mail.failed.to_string(), ev);
    }
    if queue_age_minutes > 0 {
        let limit_ms = i64::try_from(queue_age_minutes).unwrap_or(i64::MAX / 120_000) * 60_000;
        let old = mail
            .oldest_waiting_ms
            .is_some_and(|t| now_ms - t > limit_ms);
        let ev = old.then(|| NewNotification {
            event: "queue.old".into(),
            connection: None,
            reason: format!("a message has waited more than {queue_age_minutes} minute(s) to be delivered"),
            fix: "See `postern queue list` and `postern connection list` for held or failing connections.".into(),
        });
        let seen = states.contains_key(&(String::new(), "queue_age".to_string()));
        if old || seen {
            push("", "queue_age", if old { "old" } else { "ok" }.into(), ev);
        }
    }
    out
}

#[cfg(test)]
#[path = "detect_tests.rs"]
mod tests;
