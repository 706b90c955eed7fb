//! Direct delivery, for `postern send`, `postern connection test` and the HTTP API's "send test
//! e-mail": the message is recorded in the sent-mail log, then delivered at once (no queue)
//! through the same SMTP client, token manager and outcome classification as the outbox.
//!
//! - [`send_now`]: one message, each recipient's outcome.
//! - [`test_connection`]: a short test message, with every step of the session for diagnosis.
//! - `compose`: building a message from parts, or reading the envelope of a ready one.
//! - `cause`: the likely cause of a failure, in the admin's terms.

mod cause;
pub mod compose;
mod connection_test;
mod graph;

use crate::domain::{Connection, EmailAddress};
use crate::oauth::TokenSource;
use crate::settings::DeliverySettings;
use crate::smtp::client::{Envelope, SendReport, SmtpClient, SmtpError, Step};
use crate::store::messages::{Lease, MessageStatus, NewMessage, RecipientDetail, Source, now_ms};
use crate::store::{Store, StoreError};

use super::deliver::{AttemptResult, TokenFactory, classify, client_config};
use super::worker::hold_reason;

pub use cause::likely_cause;
pub use compose::{Attachment, Composed, Draft};
pub use connection_test::{TestReport, test_connection};

/// A message to deliver now.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// The envelope sender (`MAIL FROM`).
    pub from: EmailAddress,
    /// Every envelope recipient (To, Cc and Bcc).
    pub recipients: Vec<EmailAddress>,
    /// The message as it goes on the wire (RFC 5322, Bcc already removed).
    pub bytes: Vec<u8>,
    pub source: Source,
    /// The API key or user that asked, when there is one.
    pub submitter: Option<String>,
}

impl From<Composed> for Outgoing {
    fn from(c: Composed) -> Self {
        Self {
            from: c.from,
            recipients: c.recipients,
            bytes: c.bytes,
            source: Source::Cli,
            submitter: None,
        }
    }
}

/// What went wrong with the whole attempt (as opposed to one recipient).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Failure {
    /// Where it failed: `DNS resolution`, `TLS handshake`, `AUTH`, `message data`, `token`...
    pub stage: String,
    pub error: String,
    /// What the admin should do about it, when Postern knows.
    pub likely_cause: Option<String>,
    /// A temporary failure: the same send may work later.
    pub transient: bool,
}

impl Failure {
    fn from_error(e: &SmtpError, conn: &Connection) -> Self {
        Self {
            stage: stage_name(e).to_string(),
            error: e.to_string(),
            likely_cause: likely_cause(e, conn),
            transient: e.is_transient(),
        }
    }
}

/// Where an error happened, as `connection test` names its steps.
pub(crate) fn stage_name(e: &SmtpError) -> &'static str {
    match e {
        SmtpError::Token(_) => "token",
        SmtpError::Config(_) => "settings",
        SmtpError::MessageTooLarge { .. }
        | SmtpError::EightBitNotOffered
        | SmtpError::SmtpUtf8NotOffered
        | SmtpError::InvalidEnvelope(_) => "MAIL FROM",
        other => other.stage().map_or("SMTP", |s| s.as_str()),
    }
}

/// The result of a direct send, as recorded in the sent-mail log.
///
/// `sent` means the provider accepted the message for that recipient; what happens after
/// (delivery to the final mailbox) is not tracked.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SendOutcome {
    /// The message's id in the sent-mail log (`postern messages show ID`).
    pub id: String,
    /// `sent` if at least one recipient was accepted (see each recipient), else `failed`.
    pub status: MessageStatus,
    /// Each recipient with its status and the provider's reply (for accepted recipients, the
    /// reply to the message data, which carries the provider's queue id).
    pub recipients: Vec<RecipientDetail>,
    /// Set when the attempt failed as a whole (nothing was delivered).
    pub failure: Option<Failure>,
}

impl SendOutcome {
    /// Every recipient accepted.
    pub fn all_sent(&self) -> bool {
        self.failure.is_none() && self.recipients.iter().all(|r| r.status == "sent")
    }
}

/// Failures that stop a direct send before it reaches the provider.
#[derive(Debug, thiserror::Error)]
pub enum DirectError {
    /// Disabled, needs re-authorization, never authorized: the text says what to run.
    #[error("{0}")]
    NotUsable(String),
    /// The connection's SMTP settings cannot work (bad CA file, host name...).
    #[error("the SMTP settings of `{connection}` cannot be used: {source}")]
    Settings {
        connection: String,
        #[source]
        source: SmtpError,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Records `message` in the sent-mail log and delivers it now through `conn`.
///
/// Nothing is retried later: a temporary failure leaves the message `failed` with the
/// provider's reply, and the caller may send again.
pub async fn send_now<F: TokenFactory>(
    store: &Store,
    tokens: &F,
    delivery: &DeliverySettings,
    conn: &Connection,
    message: Outgoing,
) -> Result<SendOutcome, DirectError> {
    if let Some(reason) = hold_reason(conn) {
        return Err(DirectError::NotUsable(reason));
    }
    if conn.settings.transport == crate::domain::Transport::Graph {
        let client = crate::graph::GraphClient::new(
            conn,
            delivery.insecure_skip_tls_verify,
            tokens.token_source(conn),
        )
        .map_err(|e| DirectError::NotUsable(e.to_string()))?;
        return graph::deliver(store, &client, conn, &message, None).await;
    }
    let client = SmtpClient::new(client_config(conn, delivery), tokens.token_source(conn))
        .map_err(|source| DirectError::Settings {
            connection: conn.name().to_string(),
            source,
        })?;
    let fallback = graph_fallback(conn, delivery, tokens.graph_token_source(conn))?;
    deliver(store, &client, fallback.as_ref(), conn, &message, None).await
}

/// The Graph client of an SMTP connection with `--fallback graph` (tokens for Graph's audience).
pub(crate) fn graph_fallback<T: TokenSource>(
    conn: &Connection,
    delivery: &DeliverySettings,
    tokens: T,
) -> Result<Option<crate::graph::GraphClient<T>>, DirectError> {
    match conn.settings.fallback {
        None => Ok(None),
        Some(crate::domain::Fallback::Graph) => {
            crate::graph::GraphClient::new(conn, delivery.insecure_skip_tls_verify, tokens)
                .map(Some)
                .map_err(|e| DirectError::NotUsable(e.to_string()))
        }
    }
}

/// Records, claims, sends over one fresh session (traced when `steps` is given), records the
/// outcome and reads it back from the log. With a Graph `fallback`, a `535 5.7.139` at AUTH
/// sends the message through Graph instead.
pub(crate) async fn deliver<T: TokenSource>(
    store: &Store,
    client: &SmtpClient<T>,
    fallback: Option<&crate::graph::GraphClient<T>>,
    conn: &Connection,
    message: &Outgoing,
    mut steps: Option<&mut Vec<Step>>,
) -> Result<SendOutcome, DirectError> {
    let (lease, recipients, _claim) = record(store, conn, message).await?;
    let envelope = Envelope::new(message.from.as_str(), recipients.iter().cloned());
    let result = transact(client, &envelope, &message.bytes, steps.as_deref_mut()).await;
    if let (Err(e), Some(graph)) = (&result, fallback)
        && e.is_smtp_auth_disabled()
    {
        let outcome = graph.send(&recipients, &message.bytes).await;
        let outcome = super::fallback::after_smtp_refusal(outcome, &e.to_string());
        return graph::conclude(store, lease, &recipients, graph, outcome, steps).await;
    }
    let failure = match &result {
        Err(e) if !matches!(e, SmtpError::RecipientsRefused { .. }) => {
            Some(Failure::from_error(e, conn))
        }
        _ => None,
    };
    let positions: Vec<(i64, String)> = (0i64..).zip(recipients).collect();
    finish(
        store,
        lease,
        classify(result, &positions),
        failure,
        crate::domain::Transport::Smtp,
    )
    .await
}

/// Puts `message` in the sent-mail log, claimed for this process: its claim, its recipients and
/// the keeper of its claim (hold it until the attempt is recorded).
pub(crate) async fn record(
    store: &Store,
    conn: &Connection,
    message: &Outgoing,
) -> Result<(Lease, Vec<String>, crate::store::ClaimKeeper), DirectError> {
    let recipients: Vec<String> = message.recipients.iter().map(|a| a.to_string()).collect();
    // Queued already claimed, in one commit: a running `postern serve` (on PostgreSQL, told
    // of new mail at once) never sees it unclaimed, so only we send it. If this process dies
    // mid-send, the outbox takes the message over once the claim (`delivery.lease_secs`) runs
    // out; it is renewed while the send goes on.
    let queued = store
        .insert_claimed(&[NewMessage {
            connection_id: conn.id,
            connection_name: conn.name().to_string(),
            source: message.source,
            submitter: message.submitter.clone(),
            mail_from: message.from.to_string(),
            recipients: recipients.clone(),
            body: message.bytes.clone(),
            idempotency_key: None,
        }])
        .await?;
    let lease = queued
        .into_iter()
        .next()
        .ok_or_else(|| StoreError::Corrupt("inserting a message returned no id".into()))?;
    let claim = store.keep_claims(vec![lease.clone()]);
    Ok((lease, recipients, claim))
}

/// Records the one attempt's outcome and reads the message back from the log.
pub(crate) async fn finish(
    store: &Store,
    lease: Lease,
    result: AttemptResult,
    failure: Option<Failure>,
    transport: crate::domain::Transport,
) -> Result<SendOutcome, DirectError> {
    let transport = Some(transport.as_str());
    let now = now_ms();
    // `give_up`: a direct send is one attempt; deferred recipients become failed, not retried.
    let status = match result {
        AttemptResult::Recipients(outcomes) => {
            store
                .record_attempt(&lease, &outcomes, now, true, transport)
                .await?
        }
        AttemptResult::Defer(reason)
        | AttemptResult::Fail(reason)
        | AttemptResult::Hold(reason) => {
            // Our own explanation covers token and TLS trouble too, not only known replies.
            let reason = match &failure {
                Some(Failure {
                    error,
                    likely_cause: Some(cause),
                    ..
                }) => format!("{error} — {cause}"),
                _ => reason,
            };
            store
                .defer_message(&lease, &reason, now, true, transport)
                .await?
        }
    };
    let id = lease.id;
    let detail = store
        .message_detail(&id)
        .await?
        .ok_or_else(|| StoreError::Corrupt(format!("message {id} vanished from the log")))?;
    Ok(SendOutcome {
        id,
        status,
        recipients: detail.recipient_results,
        failure,
    })
}

/// Connect, send, say goodbye. The session is not kept: a direct send is one message.
async fn transact<T: TokenSource>(
    client: &SmtpClient<T>,
    envelope: &Envelope,
    bytes: &[u8],
    steps: Option<&mut Vec<Step>>,
) -> Result<SendReport, SmtpError> {
    let Some(steps) = steps else {
        let mut session = client.connect().await?;
        let result = session.send(envelope, bytes).await;
        if let Err(e) = session.quit().await {
            tracing::debug!(error = %e, "QUIT after a direct send failed");
        }
        return result;
    };
    let mut session = client.connect_traced(steps).await?;
    let result = session.send(envelope, bytes).await;
    steps.push(Step {
        name: "send",
        ok: result.as_ref().is_ok_and(SendReport::all_accepted),
        detail: match &result {
            Ok(report) => describe_report(report),
            Err(SmtpError::RecipientsRefused { report }) => describe_report(report),
            Err(e) => e.to_string(),
        },
    });
    match session.quit().await {
        Ok(()) => steps.push(Step {
            name: "quit",
            ok: true,
            detail: "session closed".into(),
        }),
        Err(e) => steps.push(Step {
            name: "quit",
            ok: false,
            detail: format!("{e} (the message outcome above stands)"),
        }),
    }
    result
}

fn describe_report(report: &SendReport) -> String {
    let mut parts: Vec<String> = report
        .recipients
        .iter()
        .map(|r| {
            let verdict = if r.accepted { "accepted" } else { "refused" };
            format!("RCPT {} {verdict}: {}", r.recipient, r.reply)
        })
        .collect();
    if let Some(reply) = &report.data_reply {
        parts.push(format!("message: {reply}"));
    }
    parts.join("; ")
}
