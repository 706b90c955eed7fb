//! The Graph fallback of an SMTP connection (`--fallback graph`): when SMTP AUTH answers
//! `535 5.7.139` (SMTP AUTH switched off for the mailbox or tenant), the message goes through
//! Microsoft Graph's sendMail, with a Graph token bought by the same grant.
//!
//! After a 5.7.139 the connection's next messages go straight to Graph for [`SMTP_RETRY_AFTER`]
//! (remembered in memory, per process, shared by the connection's senders), so a message does
//! not pay a refused AUTH first; then SMTP is tried again, in case an admin turned it back on.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::graph::{GraphClient, GraphOutcome};
use crate::oauth::TokenSource;
use crate::smtp::client::Transport;

use super::deliver::envelope;
use super::transport::{Delivered, graph_delivered, smtp_delivered};

/// How long a connection whose SMTP AUTH answered 5.7.139 sends through Graph alone.
pub const SMTP_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// Per connection, since when SMTP AUTH is known to be off and what it answered. One per
/// [`super::Delivery`], shared by every sender.
#[derive(Debug, Clone, Default)]
pub struct SmtpAuthOff(Arc<Mutex<HashMap<i64, (Instant, String)>>>);

impl SmtpAuthOff {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<i64, (Instant, String)>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// What SMTP answered, if it was 5.7.139 less than [`SMTP_RETRY_AFTER`] before `now`.
    pub fn known_off(&self, connection_id: i64, now: Instant) -> Option<String> {
        let map = self.map();
        let (at, said) = map.get(&connection_id)?;
        (now.saturating_duration_since(*at) < SMTP_RETRY_AFTER).then(|| said.clone())
    }

    /// SMTP AUTH answered `said` (a 5.7.139) at `now`.
    pub fn mark(&self, connection_id: i64, now: Instant, said: String) {
        self.map().insert(connection_id, (now, said));
    }

    /// Try SMTP again with the next message.
    pub fn forget(&self, connection_id: i64) {
        self.map().remove(&connection_id);
    }
}

/// An SMTP connection's transport with Graph behind it.
#[derive(Debug)]
pub struct GraphFallback<S: TokenSource> {
    smtp: Transport<S>,
    graph: GraphClient<S>,
    connection_id: i64,
    off: SmtpAuthOff,
}

impl<S: TokenSource> GraphFallback<S> {
    pub fn new(
        smtp: Transport<S>,
        graph: GraphClient<S>,
        connection_id: i64,
        off: SmtpAuthOff,
    ) -> Self {
        Self {
            smtp,
            graph,
            connection_id,
            off,
        }
    }

    /// SMTP, unless SMTP AUTH is known to be off; Graph when it is, or when it answers 5.7.139.
    pub async fn send(
        &mut self,
        mail_from: &str,
        part: &[(i64, String)],
        body: &[u8],
    ) -> Delivered {
        let id = self.connection_id;
        let smtp_said = match self.off.known_off(id, Instant::now()) {
            Some(said) => format!(
                "{said} (answered earlier: Postern sends through Graph for {} min before trying SMTP again)",
                SMTP_RETRY_AFTER.as_secs() / 60
            ),
            None => {
                let result = self.smtp.send(&envelope(mail_from, part), body).await;
                match result {
                    Err(e) if e.is_smtp_auth_disabled() => {
                        let said = e.to_string();
                        tracing::warn!(connection_id = id, error = %said, "SMTP AUTH is off for the mailbox; delivering through the Graph fallback");
                        self.off.mark(id, Instant::now(), said.clone());
                        said
                    }
                    other => return smtp_delivered(other, part),
                }
            }
        };
        let rcpts: Vec<String> = part.iter().map(|(_, r)| r.clone()).collect();
        let outcome = self.graph.send(&rcpts, body).await;
        if matches!(outcome, GraphOutcome::Hold(_)) {
            // No Graph token: ask SMTP again next time, whose own token trouble (a dead grant)
            // puts the connection on hold properly, rather than blaming the Graph permission.
            self.off.forget(id);
        }
        graph_delivered(after_smtp_refusal(outcome, &smtp_said), part)
    }

    pub async fn close(&mut self) {
        self.smtp.close().await;
    }
}

/// Graph's outcome for a message SMTP refused with 5.7.139 (`smtp_said`): a failure names both
/// refusals; Graph's lack of a token fails the message (the connection itself stays usable, so
/// holding its mail would not wait for anything an admin is told to do).
pub fn after_smtp_refusal(outcome: GraphOutcome, smtp_said: &str) -> GraphOutcome {
    let both = |graph: &str| {
        format!(
            "SMTP AUTH is off for this mailbox ({smtp_said}), and the Graph fallback failed too: {graph}"
        )
    };
    match outcome {
        GraphOutcome::Sent(note) => GraphOutcome::Sent(format!(
            "{note}; through the Graph fallback (SMTP AUTH answered 535 5.7.139)"
        )),
        GraphOutcome::Defer {
            reason,
            retry_after,
        } => GraphOutcome::Defer {
            reason: both(&reason),
            retry_after,
        },
        GraphOutcome::Hold(reason) | GraphOutcome::Fail(reason) => {
            GraphOutcome::Fail(both(&reason))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smtp_auth_off_is_remembered_for_an_hour_per_connection() {
        let off = SmtpAuthOff::default();
        let t0 = Instant::now();
        assert_eq!(off.known_off(1, t0), None);
        off.mark(1, t0, "AUTH refused: 535 5.7.139".into());
        assert_eq!(
            off.known_off(1, t0 + Duration::from_secs(3599)).as_deref(),
            Some("AUTH refused: 535 5.7.139")
        );
        assert_eq!(off.known_off(2, t0), None, "another connection");
        assert_eq!(off.known_off(1, t0 + SMTP_RETRY_AFTER), None, "SMTP again");
        off.forget(1);
        assert_eq!(off.known_off(1, t0), None);
    }

    #[test]
    fn graph_refusals_carry_the_smtp_refusal_too() {
        let said = "AUTH refused: 535 5.7.139 Authentication unsuccessful";
        let GraphOutcome::Fail(text) = after_smtp_refusal(
            GraphOutcome::Fail("Graph answered HTTP 403 ErrorAccessDenied".into()),
            said,
        ) else {
            panic!("a Graph 403 fails the message")
        };
        assert!(
            text.contains("5.7.139") && text.contains("ErrorAccessDenied"),
            "{text}"
        );
        // No Graph token: failed (not held), with both reasons.
        let GraphOutcome::Fail(text) = after_smtp_refusal(
            GraphOutcome::Hold("Microsoft Graph refused a token (AADSTS65001)".into()),
            said,
        ) else {
            panic!("a refused Graph token fails the message")
        };
        assert!(
            text.contains("5.7.139") && text.contains("AADSTS65001"),
            "{text}"
        );
        let deferred = after_smtp_refusal(
            GraphOutcome::Defer {
                reason: "429".into(),
                retry_after: Some(Duration::from_secs(5)),
            },
            said,
        );
        assert!(
            matches!(&deferred, GraphOutcome::Defer { reason, retry_after: Some(_) } if reason.contains("5.7.139")),
            "{deferred:?}"
        );
        let GraphOutcome::Sent(note) =
            after_smtp_refusal(GraphOutcome::Sent("202 Accepted".into()), said)
        else {
            panic!()
        };
        assert!(note.starts_with("202 Accepted") && note.contains("fallback"));
    }
}
