//! `postern connection test` (and the web UI's "Send test e-mail"): a short message through the
//! connection, with each step of the session recorded, and on failure the step and likely cause.

use chrono::Utc;

use super::compose::{ComposeError, Draft};
use super::{DirectError, Failure, Outgoing, SendOutcome, deliver, stage_name};
use crate::domain::{Connection, EmailAddress};
use crate::oauth::TokenManager;
use crate::settings::DeliverySettings;
use crate::smtp::client::{SmtpClient, Step};
use crate::store::Store;
use crate::store::messages::Source;

use crate::outbox::deliver::client_config;
use crate::outbox::worker::hold_reason;

/// What a connection test saw.
#[derive(Debug, Clone)]
pub struct TestReport {
    pub connection: String,
    pub to: EmailAddress,
    pub subject: String,
    /// In order: `dns`, `tcp`, `greeting`, `ehlo`, `starttls`, `tls`, `ehlo`, `token`, `auth`,
    /// `send`, `quit` (and `refresh`/`challenge` when the token was refused once). A failed
    /// step is the last one, or the one before `quit`.
    pub steps: Vec<Step>,
    /// The test message in the sent-mail log; `None` when the test stopped before sending
    /// (connection disabled or never authorized, unusable settings).
    pub message: Option<SendOutcome>,
    /// Why the test failed, if it did: the step, the error, the likely cause.
    pub failure: Option<Failure>,
}

impl TestReport {
    pub fn passed(&self) -> bool {
        self.failure.is_none()
    }
}

fn subject(conn: &Connection, at: chrono::DateTime<Utc>) -> String {
    format!(
        "Postern test message via connection {} ({})",
        conn.name(),
        at.format("%Y-%m-%d %H:%M:%S UTC")
    )
}

fn body(conn: &Connection, at: chrono::DateTime<Utc>) -> String {
    let s = &conn.settings;
    let server = match s.transport {
        crate::domain::Transport::Graph => {
            format!(
                "{} (Microsoft Graph sendMail)",
                s.graph_base().as_str().trim_end_matches('/')
            )
        }
        crate::domain::Transport::Smtp => format!("{}:{} ({})", s.host, s.port, s.tls),
    };
    format!(
        "This is a test message from Postern.\r\n\r\n\
         Connection: {}\r\nMailbox:    {}\r\nServer:     {}\r\nSent at:    {}\r\n\r\n\
         If you can read this, the connection can authenticate with OAuth and hand mail to the \
         provider. No reply is needed.\r\n",
        conn.name(),
        s.user,
        server,
        at.to_rfc3339(),
    )
}

/// The test message from the connection's mailbox to `to`.
pub fn test_message(conn: &Connection, to: &EmailAddress) -> Result<Outgoing, ComposeError> {
    let at = Utc::now();
    let draft = Draft {
        from: conn.settings.user.clone(),
        from_name: Some(
            conn.settings
                .display_name
                .clone()
                .unwrap_or_else(|| "Postern".to_string()),
        ),
        to: vec![to.clone()],
        cc: vec![],
        bcc: vec![],
        subject: subject(conn, at),
        text: Some(body(conn, at)),
        html: None,
        attachments: vec![],
    };
    Ok(draft.compose()?.into())
}

/// Sends a short test message through `conn` to `to`, recording every step. It is recorded
/// in the sent-mail log like any message (`source` tells who asked).
///
/// Errors only when the store fails; every connection or provider problem is in the report.
pub async fn test_connection(
    store: &Store,
    tokens: &TokenManager,
    delivery: &DeliverySettings,
    conn: &Connection,
    to: &EmailAddress,
    source: Source,
) -> Result<TestReport, DirectError> {
    let mut report = TestReport {
        connection: conn.name().to_string(),
        to: to.clone(),
        subject: String::new(),
        steps: Vec::new(),
        message: None,
        failure: None,
    };
    let stop = |mut report: TestReport, step: &'static str, error: String| {
        report.steps.push(Step {
            name: step,
            ok: false,
            detail: error.clone(),
        });
        report.failure = Some(Failure {
            stage: step.to_string(),
            error,
            likely_cause: None,
            transient: false,
        });
        Ok(report)
    };
    if let Some(reason) = hold_reason(conn) {
        return stop(report, "status", reason);
    }
    let mut message = match test_message(conn, to) {
        Ok(m) => m,
        Err(e) => return stop(report, "message", e.to_string()),
    };
    message.source = source;
    report.subject = subject_of(&message.bytes);
    if conn.settings.transport == crate::domain::Transport::Graph {
        let insecure = delivery.insecure_skip_tls_verify;
        if let Some(f) = super::graph::preflight(tokens, conn, insecure, &mut report.steps).await {
            report.failure = Some(f);
            return Ok(report);
        }
        let client =
            match crate::graph::GraphClient::new(conn, insecure, tokens.for_connection(conn.id)) {
                Ok(c) => c,
                Err(e) => return stop(report, "settings", e.to_string()),
            };
        let outcome =
            super::graph::deliver(store, &client, conn, &message, Some(&mut report.steps)).await?;
        report.failure = outcome.failure.clone().or_else(|| refused(&outcome));
        report.message = Some(outcome);
        return Ok(report);
    }
    let client = match SmtpClient::new(
        client_config(conn, delivery),
        tokens.for_connection(conn.id),
    ) {
        Ok(c) => c,
        Err(e) => {
            let cause = super::likely_cause(&e, conn);
            let mut r = stop(report, stage_name(&e), e.to_string())?;
            if let Some(f) = r.failure.as_mut() {
                f.likely_cause = cause;
            }
            return Ok(r);
        }
    };
    let fallback = match super::graph_fallback(
        conn,
        delivery,
        tokens.for_audience(conn.id, crate::oauth::Audience::Graph),
    ) {
        Ok(f) => f,
        Err(e) => return stop(report, "settings", e.to_string()),
    };
    let outcome = deliver(
        store,
        &client,
        fallback.as_ref(),
        conn,
        &message,
        Some(&mut report.steps),
    )
    .await?;
    describe_token(tokens, conn, &mut report.steps).await;
    report.failure = outcome.failure.clone().or_else(|| refused(&outcome));
    report.message = Some(outcome);
    Ok(report)
}

/// The Subject as built (one line: the builder may have encoded it).
fn subject_of(bytes: &[u8]) -> String {
    mail_parser::MessageParser::default()
        .parse_headers(bytes)
        .and_then(|m| m.subject().map(str::to_string))
        .unwrap_or_default()
}

/// A recipient the provider refused, as the test's failure.
fn refused(outcome: &SendOutcome) -> Option<Failure> {
    let r = outcome.recipients.iter().find(|r| r.status != "sent")?;
    Some(Failure {
        stage: "send".into(),
        error: format!(
            "{} was refused: {}",
            r.address,
            r.reply.as_deref().unwrap_or("no reply")
        ),
        // The stored reply already carries the explanation of known replies.
        likely_cause: None,
        transient: false,
    })
}

/// Adds the expiry of the token that authenticated to the last successful token step. The
/// token is in the manager's cache by now: this asks the provider nothing.
async fn describe_token(tokens: &TokenManager, conn: &Connection, steps: &mut [Step]) {
    let Some(step) = steps
        .iter_mut()
        .rev()
        .find(|s| s.ok && matches!(s.name, "token" | "refresh"))
    else {
        return;
    };
    if let Ok(t) = tokens.access_token(conn).await {
        let left = (t.expires_at - Utc::now()).num_minutes();
        step.detail = format!(
            "{}; valid until {} (in {left} min)",
            step.detail,
            t.expires_at.format("%Y-%m-%d %H:%M:%S UTC")
        );
    }
}
