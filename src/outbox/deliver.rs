//! One message through the SMTP client, and what the result means for each recipient.

use crate::domain::{Connection, Provider};
use crate::oauth::TokenSource;
use crate::settings::DeliverySettings;
use crate::smtp::client::{AuthMechanism, Envelope, SendReport, SmtpClientConfig, SmtpError};
use crate::store::messages::RecipientOutcome;

/// Hands out a token source for a connection: the token manager in production, a stand-in in tests.
pub trait TokenFactory: Send + Sync + 'static {
    type Source: TokenSource + 'static;
    /// Tokens for the connection's own transport.
    fn token_source(&self, connection: &Connection) -> Self::Source;
    /// Tokens for Microsoft Graph bought by the same grant (an SMTP connection's Graph fallback).
    fn graph_token_source(&self, connection: &Connection) -> Self::Source;
}

/// The SMTP client settings of a connection record.
pub fn client_config(conn: &Connection, delivery: &DeliverySettings) -> SmtpClientConfig {
    let s = &conn.settings;
    let mut c = SmtpClientConfig::new(s.host.as_str(), s.port.get(), s.tls, s.user.as_str());
    c.hello_name = s.domain.to_string();
    c.ca_file = s.ca_file.clone();
    c.insecure_skip_tls_verify = delivery.insecure_skip_tls_verify;
    c.mechanism = AuthMechanism::Xoauth2;
    if s.provider == Provider::Google {
        // Gmail offers both; OAUTHBEARER is the standard (RFC 7628). XOAUTH2 when a server
        // (or a proxy in front of Gmail) offers only that.
        c.mechanism = AuthMechanism::OAuthBearer;
        c.fallback_mechanism = Some(AuthMechanism::Xoauth2);
    } else if s.provider == Provider::Custom && s.host.as_str().ends_with("gmail.com") {
        c.mechanism = AuthMechanism::OAuthBearer;
    }
    c
}

/// A reply with its explanation, as stored in the sent-mail log.
fn describe(reply: &crate::smtp::client::Reply) -> String {
    match crate::smtp::client::explain_reply(reply) {
        Some(hint) => format!("{reply} — {hint}"),
        None => reply.to_string(),
    }
}

fn per_recipient(
    report: &SendReport,
    positions: &[(i64, String)],
    data_ok: Option<bool>,
) -> Vec<(i64, RecipientOutcome)> {
    positions
        .iter()
        .zip(&report.recipients)
        .map(|((pos, _), r)| {
            let outcome = if !r.accepted {
                if r.reply.is_transient() {
                    RecipientOutcome::Deferred(describe(&r.reply))
                } else {
                    RecipientOutcome::Failed(describe(&r.reply))
                }
            } else {
                match (&report.data_reply, data_ok) {
                    (Some(d), Some(true)) => RecipientOutcome::Sent(d.to_string()),
                    (Some(d), _) if d.is_transient() => RecipientOutcome::Deferred(describe(d)),
                    (Some(d), _) => RecipientOutcome::Failed(describe(d)),
                    (None, _) => RecipientOutcome::Deferred("no reply to the message data".into()),
                }
            };
            (*pos, outcome)
        })
        .collect()
}

/// What one attempt means for the message.
#[derive(Debug)]
pub enum AttemptResult {
    /// Each recipient's outcome (some may be deferred).
    Recipients(Vec<(i64, RecipientOutcome)>),
    /// Nothing was delivered and the reason is not this message's fault: try later.
    Defer(String),
    /// The connection needs an admin (re-authorization): hold its mail.
    Hold(String),
    /// The message can never pass as it is: every remaining recipient fails.
    Fail(String),
}

pub fn classify(
    result: Result<SendReport, SmtpError>,
    positions: &[(i64, String)],
) -> AttemptResult {
    match result {
        Ok(report) => AttemptResult::Recipients(per_recipient(&report, positions, Some(true))),
        Err(SmtpError::RecipientsRefused { report }) => {
            AttemptResult::Recipients(per_recipient(&report, positions, None))
        }
        Err(e) if e.needs_reauthorization() => AttemptResult::Hold(e.to_string()),
        Err(e) => {
            let text = match e.explanation() {
                Some(hint) => format!("{e} — {hint}"),
                None => e.to_string(),
            };
            if e.is_transient() || e.is_connection_problem() {
                AttemptResult::Defer(text)
            } else {
                AttemptResult::Fail(text)
            }
        }
    }
}

/// The envelope of a claimed message.
pub fn envelope(mail_from: &str, recipients: &[(i64, String)]) -> Envelope {
    Envelope::new(mail_from, recipients.iter().map(|(_, r)| r.clone()))
}

impl TokenFactory for crate::oauth::TokenManager {
    type Source = crate::oauth::ConnectionTokens;
    fn token_source(&self, connection: &Connection) -> Self::Source {
        crate::oauth::TokenManager::for_connection(self, connection.id)
    }
    fn graph_token_source(&self, connection: &Connection) -> Self::Source {
        self.for_audience(connection.id, crate::oauth::Audience::Graph)
    }
}
