//! What went wrong while delivering, classified for the retry policy and explained for the admin.

use std::fmt;
use std::time::Duration;

use crate::oauth::TokenError;

use super::explain;
use super::reply::Reply;
use super::report::SendReport;

/// Where in the session something failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stage {
    Resolve,
    Connect,
    Greeting,
    Ehlo,
    StartTls,
    TlsHandshake,
    Auth,
    Rset,
    MailFrom,
    RcptTo,
    Data,
    /// Writing the message and waiting for the reply to the final dot.
    Message,
    Quit,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Resolve => "DNS resolution",
            Stage::Connect => "TCP connect",
            Stage::Greeting => "greeting",
            Stage::Ehlo => "EHLO",
            Stage::StartTls => "STARTTLS",
            Stage::TlsHandshake => "TLS handshake",
            Stage::Auth => "AUTH",
            Stage::Rset => "RSET",
            Stage::MailFrom => "MAIL FROM",
            Stage::RcptTo => "RCPT TO",
            Stage::Data => "DATA",
            Stage::Message => "message data",
            Stage::Quit => "QUIT",
        }
    }

    /// Stages of a transaction before the message body is on the wire: a failure here cannot
    /// have delivered anything, so retrying on a fresh connection cannot duplicate the message.
    pub(crate) fn is_before_body(self) -> bool {
        matches!(
            self,
            Stage::Rset | Stage::MailFrom | Stage::RcptTo | Stage::Data
        )
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A delivery failure. The server's full reply is kept whenever there was one.
///
/// The outbox decides on [`is_transient`](Self::is_transient), [`is_permanent`](Self::is_permanent)
/// and [`is_connection_problem`](Self::is_connection_problem), never on the text;
/// [`explanation`](Self::explanation) is for humans.
#[derive(Debug, thiserror::Error)]
pub enum SmtpError {
    #[error("cannot resolve {host}: {source}")]
    Resolve {
        host: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot connect to {host}:{port}: {source}")]
    Connect {
        host: String,
        port: u16,
        #[source]
        source: std::io::Error,
    },
    #[error("timed out after {}s waiting for the {stage} reply", after.as_secs())]
    Timeout { stage: Stage, after: Duration },
    #[error("network error during {stage}: {source}")]
    Io {
        stage: Stage,
        #[source]
        source: std::io::Error,
    },
    #[error("the server closed the connection during {stage}")]
    Closed { stage: Stage },
    #[error("malformed reply during {stage}: {detail}")]
    Protocol { stage: Stage, detail: String },
    /// Certificate or TLS protocol failure: a configuration matter, not a passing one.
    #[error("TLS with {host} failed: {source}")]
    Tls {
        host: String,
        #[source]
        source: rustls::Error,
    },
    #[error("{host} does not offer STARTTLS; refusing to send the token and mail in cleartext")]
    StartTlsNotOffered { host: String },
    #[error("{host} does not offer AUTH {wanted} (it offers: {offered})")]
    AuthNotOffered {
        host: String,
        wanted: &'static str,
        offered: String,
    },
    /// The server answered with an error code.
    #[error("{stage} refused: {reply}")]
    Rejected { stage: Stage, reply: Reply },
    /// The access token was refused, even after one forced refresh.
    #[error("access token rejected: {reply}")]
    TokenRejected { reply: Reply },
    /// No recipient was accepted, so no message was sent; the report holds each refusal.
    #[error("every recipient was refused: {}", first_refusal(report))]
    RecipientsRefused { report: SendReport },
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error("the message is {size} bytes; the server accepts at most {limit}")]
    MessageTooLarge { size: u64, limit: u64 },
    #[error("the message has 8-bit content but the server does not offer 8BITMIME")]
    EightBitNotOffered,
    #[error("an envelope address is not ASCII but the server does not offer SMTPUTF8")]
    SmtpUtf8NotOffered,
    #[error("invalid envelope: {0}")]
    InvalidEnvelope(String),
    #[error("invalid SMTP client configuration: {0}")]
    Config(String),
}

fn first_refusal(report: &SendReport) -> String {
    report
        .recipients
        .first()
        .map(|r| format!("{}: {}", r.recipient, r.reply))
        .unwrap_or_default()
}

impl SmtpError {
    /// Worth retrying later: a 4xx reply, a network failure or timeout, a passing token failure.
    pub fn is_transient(&self) -> bool {
        match self {
            SmtpError::Resolve { .. }
            | SmtpError::Connect { .. }
            | SmtpError::Timeout { .. }
            | SmtpError::Io { .. }
            | SmtpError::Closed { .. } => true,
            SmtpError::Rejected { reply, .. } => reply.is_transient(),
            SmtpError::RecipientsRefused { report } => {
                report.recipients.iter().any(|r| r.reply.is_transient())
            }
            SmtpError::Token(e) => e.is_transient(),
            _ => false,
        }
    }

    /// The server said no for good (5xx), or this message can never pass this server as it is.
    pub fn is_permanent(&self) -> bool {
        match self {
            SmtpError::Rejected { reply, .. } | SmtpError::TokenRejected { reply } => {
                reply.is_permanent()
            }
            SmtpError::RecipientsRefused { report } => {
                report.recipients.iter().all(|r| r.reply.is_permanent())
            }
            SmtpError::MessageTooLarge { .. }
            | SmtpError::EightBitNotOffered
            | SmtpError::SmtpUtf8NotOffered
            | SmtpError::InvalidEnvelope(_) => true,
            _ => false,
        }
    }

    /// The failure is about the connection (TLS, authentication, configuration, tokens), not
    /// this message: keep the mail queued and tell the admin, rather than bouncing it.
    pub fn is_connection_problem(&self) -> bool {
        match self {
            SmtpError::Tls { .. }
            | SmtpError::StartTlsNotOffered { .. }
            | SmtpError::AuthNotOffered { .. }
            | SmtpError::TokenRejected { .. }
            | SmtpError::Token(_)
            | SmtpError::Config(_) => true,
            SmtpError::Rejected { stage, reply } => {
                matches!(
                    stage,
                    Stage::Greeting | Stage::Ehlo | Stage::StartTls | Stage::Auth
                ) || reply.has_enhanced(5, 7, 57)
                    || reply.has_enhanced(4, 3, 2)
            }
            _ => false,
        }
    }

    /// The server refused the access token itself (535 5.7.3, or a 401 challenge).
    pub fn is_token_rejected(&self) -> bool {
        matches!(self, SmtpError::TokenRejected { .. })
    }

    /// AUTH answered `535 5.7.139`: SMTP AUTH is switched off for the mailbox or tenant (no
    /// token helps; Microsoft Graph may still deliver).
    pub fn is_smtp_auth_disabled(&self) -> bool {
        matches!(self, SmtpError::Rejected { stage: Stage::Auth, reply } if reply.has_enhanced(5, 7, 139))
    }

    /// The token manager says an admin must authorize the connection again.
    pub fn needs_reauthorization(&self) -> bool {
        matches!(self, SmtpError::Token(e) if e.needs_reauthorization())
    }

    /// The server's reply, when the failure is one.
    pub fn reply(&self) -> Option<&Reply> {
        match self {
            SmtpError::Rejected { reply, .. } | SmtpError::TokenRejected { reply } => Some(reply),
            _ => None,
        }
    }

    pub fn stage(&self) -> Option<Stage> {
        match self {
            SmtpError::Resolve { .. } => Some(Stage::Resolve),
            SmtpError::Connect { .. } => Some(Stage::Connect),
            SmtpError::Tls { .. } => Some(Stage::TlsHandshake),
            SmtpError::StartTlsNotOffered { .. } => Some(Stage::StartTls),
            SmtpError::AuthNotOffered { .. } | SmtpError::TokenRejected { .. } => Some(Stage::Auth),
            SmtpError::Timeout { stage, .. }
            | SmtpError::Io { stage, .. }
            | SmtpError::Closed { stage }
            | SmtpError::Protocol { stage, .. }
            | SmtpError::Rejected { stage, .. } => Some(*stage),
            SmtpError::RecipientsRefused { .. } => Some(Stage::RcptTo),
            _ => None,
        }
    }

    /// What to tell the admin, for the replies that deserve more than their own text.
    pub fn explanation(&self) -> Option<String> {
        explain::explain(self)
    }

    /// The connection went away before the message body was sent: a reused connection that the
    /// server had closed. Sending again on a new connection cannot duplicate the message.
    pub(crate) fn is_stale_connection(&self) -> bool {
        match self {
            SmtpError::Closed { stage } | SmtpError::Io { stage, .. } => stage.is_before_body(),
            SmtpError::Timeout { stage, .. } => stage.is_before_body(),
            // 421: "service not available, closing transmission channel" (idle timeout).
            SmtpError::Rejected { stage, reply } => stage.is_before_body() && reply.code == 421,
            _ => false,
        }
    }

    /// Whether the session can carry on after this error (a plain refusal), or is broken.
    pub(crate) fn leaves_session_usable(&self) -> bool {
        match self {
            SmtpError::Rejected { reply, .. } => reply.code != 421,
            SmtpError::RecipientsRefused { .. }
            | SmtpError::MessageTooLarge { .. }
            | SmtpError::EightBitNotOffered
            | SmtpError::SmtpUtf8NotOffered
            | SmtpError::InvalidEnvelope(_) => true,
            _ => false,
        }
    }
}
