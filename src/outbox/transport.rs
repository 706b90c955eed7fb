//! The delivery seam: one connection's way out, SMTP (a reused upstream session) or Microsoft
//! Graph (HTTPS sendMail). The worker asks it to send and gets the same classes either way
//! (sent per recipient / deferred, with a time when the provider named one / failed / held),
//! and which transport carried the message (an SMTP connection may fall back to Graph).

use std::time::Duration;

use super::deliver::{AttemptResult, classify, envelope};
use super::fallback::GraphFallback;
use crate::graph::{GraphClient, GraphError, GraphOutcome};
use crate::oauth::TokenSource;
use crate::smtp::client::{SmtpError, Transport};
use crate::store::messages::RecipientOutcome;

/// A connection's transport, as its `transport` setting says.
// One per sender, held for its life: the size difference costs nothing worth a box.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum MailTransport<S: TokenSource> {
    Smtp(Transport<S>),
    Graph(GraphClient<S>),
    /// SMTP, and Graph when SMTP AUTH is off (`--fallback graph`).
    SmtpOrGraph(Box<GraphFallback<S>>),
}

/// Why a transport could not be set up (bad TLS settings, a CA file that cannot be read).
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error(transparent)]
    Smtp(#[from] SmtpError),
    #[error(transparent)]
    Graph(#[from] GraphError),
}

/// The message a transport is to send next (see [`MailTransport::send`]).
#[derive(Debug, Clone, Copy)]
pub struct NextMessage<'a> {
    pub mail_from: &'a str,
    pub part: &'a [(i64, String)],
    pub body: &'a [u8],
}

/// One attempt's meaning, with what only some providers say.
#[derive(Debug)]
pub struct Delivered {
    pub result: AttemptResult,
    /// The provider asked the connection to wait this long (Graph's 429 `Retry-After`).
    pub wait: Option<Duration>,
    /// Exchange blocked the mailbox for a day (`SubmissionQuotaExceeded`): the error text.
    pub quota_blocked: Option<String>,
    /// Which transport carried (or tried) it, as the sent-mail log records it.
    pub transport: crate::domain::Transport,
}

impl<S: TokenSource> MailTransport<S> {
    /// Sends `body` to the recipients `part` (positions and addresses).
    ///
    /// `next`: the message this transport sends next, when the caller is sure of it (same
    /// shape); over SMTP its envelope goes out with this message's data, one round trip saved
    /// per message. Graph and the fallback ignore it.
    pub async fn send(
        &mut self,
        mail_from: &str,
        part: &[(i64, String)],
        body: &[u8],
        next: Option<NextMessage<'_>>,
    ) -> Delivered {
        match self {
            MailTransport::Smtp(t) => {
                let next_envelope = next.map(|n| envelope(n.mail_from, n.part));
                let next = next_envelope.as_ref().zip(next.map(|n| n.body));
                smtp_delivered(
                    t.send_then(&envelope(mail_from, part), body, next).await,
                    part,
                )
            }
            MailTransport::Graph(g) => {
                let rcpts: Vec<String> = part.iter().map(|(_, r)| r.clone()).collect();
                graph_delivered(g.send(&rcpts, body).await, part)
            }
            MailTransport::SmtpOrGraph(f) => f.send(mail_from, part, body).await,
        }
    }

    /// Ends an upstream session politely (SMTP QUIT); nothing to do for Graph.
    pub async fn close(&mut self) {
        match self {
            MailTransport::Smtp(t) => t.close().await,
            MailTransport::SmtpOrGraph(f) => f.close().await,
            MailTransport::Graph(_) => {}
        }
    }
}

/// What an SMTP send came to.
pub(super) fn smtp_delivered(
    result: Result<crate::smtp::client::SendReport, SmtpError>,
    part: &[(i64, String)],
) -> Delivered {
    let quota_blocked = match &result {
        Err(e) if e.to_string().contains("SubmissionQuotaExceeded") => Some(e.to_string()),
        _ => None,
    };
    Delivered {
        result: classify(result, part),
        wait: None,
        quota_blocked,
        transport: crate::domain::Transport::Smtp,
    }
}

/// What a Graph send came to.
pub(super) fn graph_delivered(outcome: GraphOutcome, part: &[(i64, String)]) -> Delivered {
    let (result, wait) = match outcome {
        GraphOutcome::Sent(note) => (
            AttemptResult::Recipients(
                part.iter()
                    .map(|(p, _)| (*p, RecipientOutcome::Sent(note.clone())))
                    .collect(),
            ),
            None,
        ),
        GraphOutcome::Defer {
            reason,
            retry_after,
        } => (AttemptResult::Defer(reason), retry_after),
        GraphOutcome::Hold(reason) => (AttemptResult::Hold(reason), None),
        GraphOutcome::Fail(reason) => (AttemptResult::Fail(reason), None),
    };
    Delivered {
        result,
        wait,
        quota_blocked: None,
        transport: crate::domain::Transport::Graph,
    }
}
