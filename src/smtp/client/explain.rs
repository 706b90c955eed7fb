//! Plain-language hints for the failures an admin cannot decode from the reply alone
//! (PROTOCOL.md, "Errors worth a human explanation"). Provider replies are explained by the
//! catalogue ([`crate::explain`]); only Postern's own refusals (TLS, STARTTLS) are worded here.

use super::error::SmtpError;
use super::reply::Reply;
use crate::explain::{self as catalogue, Context};

const STARTTLS_MISSING: &str = "The server did not offer STARTTLS, so Postern refused to continue \
rather than send the token in cleartext. Check the host and port (587 uses STARTTLS, 465 implicit \
TLS), or a network device stripping STARTTLS.";

const OLD_TLS: &str = "The server and Postern share no TLS version: Postern (rustls) speaks \
TLS 1.2 and 1.3 only, never TLS 1.0 or 1.1, which are broken and which Microsoft 365 and Gmail no \
longer accept either. Check the host and port: a server limited to TLS 1.0/1.1 is not the provider \
itself (an old proxy or appliance in between?).";

/// The peer wants a TLS version older than 1.2, which rustls does not implement.
fn is_old_tls(e: &rustls::Error) -> bool {
    use rustls::PeerIncompatible as P;
    matches!(
        e,
        rustls::Error::PeerIncompatible(
            P::ServerDoesNotSupportTls12Or13
                | P::SupportedVersionsExtensionRequired
                | P::Tls12NotOffered
                | P::Tls12NotOfferedOrEnabled
        ) | rustls::Error::AlertReceived(rustls::AlertDescription::ProtocolVersion)
    )
}

pub(super) fn explain(error: &SmtpError) -> Option<String> {
    match error {
        SmtpError::Tls { source, .. } if is_old_tls(source) => Some(OLD_TLS.to_string()),
        SmtpError::TokenRejected { reply } => {
            // Whatever the server's code, a refused token after a refresh means scope or mailbox.
            let entry = catalogue::smtp(535, Some((5, 7, 3)), "")?;
            Some(explain_reply(reply).unwrap_or_else(|| entry.explain(Context::default())))
        }
        SmtpError::StartTlsNotOffered { .. } => Some(STARTTLS_MISSING.to_string()),
        SmtpError::Rejected { reply, .. } => explain_reply(reply),
        SmtpError::RecipientsRefused { report } => report
            .recipients
            .iter()
            .find_map(|r| explain_reply(&r.reply)),
        _ => None,
    }
}

/// The catalogue's explanation of a reply, if it is one of the known ones.
pub fn explain_reply(reply: &Reply) -> Option<String> {
    let enhanced = reply.enhanced.map(|e| (e.class, e.subject, e.detail));
    catalogue::smtp(reply.code, enhanced, &reply.text()).map(|e| e.explain(Context::default()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::smtp::client::error::Stage;
    use crate::smtp::client::reply::parse_reply;
    use crate::smtp::client::report::{RecipientResult, SendReport};

    fn reply(wire: &str) -> Reply {
        parse_reply(format!("{wire}\r\n").as_bytes())
            .unwrap()
            .unwrap()
            .0
    }

    fn rejected(stage: Stage, wire: &str) -> SmtpError {
        SmtpError::Rejected {
            stage,
            reply: reply(wire),
        }
    }

    #[test]
    fn the_protocol_table_is_explained() {
        let cases = [
            ("535 5.7.3 Authentication unsuccessful", "SMTP.Send"),
            (
                "535 5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the Mailbox.",
                "Set-CASMailbox",
            ),
            (
                "530 5.7.57 Client not authenticated to send mail.",
                "not authenticated",
            ),
            (
                "554 5.2.0 STOREDRV.Submission.Exception:SendAsDeniedException.MapiExceptionSendAsDenied; Failed to process message",
                "SendAs right",
            ),
            (
                "554 5.2.252 SendAsDenied; a@example.com not allowed to send as b@example.com",
                "SendAs right",
            ),
            (
                "432 4.3.2 STOREDRV.ClientSubmit; sender thread limit exceeded",
                "3 per mailbox",
            ),
            (
                "554 5.2.0 STOREDRV.Submission.Exception:SubmissionQuotaExceededException",
                "10,000",
            ),
            (
                "550 5.7.30 Basic authentication is not supported for Client Submission.",
                "OAuth",
            ),
        ];
        for (wire, needle) in cases {
            let text = rejected(Stage::MailFrom, wire)
                .explanation()
                .unwrap_or_else(|| panic!("no explanation for {wire}"));
            assert!(text.contains(needle), "{wire}: {text}");
        }
    }

    #[test]
    fn smtp_auth_disabled_says_refreshing_will_not_help() {
        let e = rejected(Stage::Auth, "535 5.7.139 Authentication unsuccessful");
        let text = e.explanation().unwrap();
        assert!(text.contains("will not help") && text.contains("security defaults"));
        assert!(e.is_permanent() && e.is_connection_problem() && !e.is_token_rejected());
    }

    #[test]
    fn ordinary_replies_have_no_explanation() {
        assert_eq!(
            rejected(Stage::RcptTo, "550 5.1.1 User unknown").explanation(),
            None
        );
        assert_eq!(SmtpError::Closed { stage: Stage::Data }.explanation(), None);
    }

    #[test]
    fn classification() {
        let busy = rejected(Stage::MailFrom, "451 4.3.0 try later");
        assert!(busy.is_transient() && !busy.is_permanent());
        let gone = rejected(Stage::RcptTo, "550 5.1.1 unknown");
        assert!(gone.is_permanent() && !gone.is_transient() && !gone.is_connection_problem());
        let token = SmtpError::TokenRejected {
            reply: reply("535 5.7.3 Authentication unsuccessful"),
        };
        assert!(token.is_token_rejected() && token.is_connection_problem());
        assert!(!token.needs_reauthorization());
        let reauth = SmtpError::Token(crate::oauth::TokenError::NeedsReauthorization {
            reason: "invalid_grant".into(),
        });
        assert!(reauth.needs_reauthorization() && !reauth.is_transient());
        let net = SmtpError::Closed {
            stage: Stage::Message,
        };
        assert!(net.is_transient() && !net.is_stale_connection());
        assert!(SmtpError::Closed { stage: Stage::Rset }.is_stale_connection());
        assert!(SmtpError::MessageTooLarge { size: 2, limit: 1 }.is_permanent());
    }

    #[test]
    fn refused_recipients_are_transient_if_any_refusal_is() {
        let report = |codes: &[&str]| SendReport {
            recipients: codes
                .iter()
                .enumerate()
                .map(|(i, wire)| RecipientResult {
                    recipient: format!("r{i}@example.com"),
                    accepted: false,
                    reply: reply(wire),
                })
                .collect(),
            data_reply: None,
        };
        let all_5xx = SmtpError::RecipientsRefused {
            report: report(&["550 5.1.1 a", "550 5.1.1 b"]),
        };
        assert!(all_5xx.is_permanent() && !all_5xx.is_transient());
        assert!(all_5xx.to_string().contains("r0@example.com: 550 5.1.1 a"));
        let mixed = SmtpError::RecipientsRefused {
            report: report(&["550 5.1.1 a", "452 4.5.3 too many"]),
        };
        assert!(mixed.is_transient() && !mixed.is_permanent());
    }

    #[test]
    fn a_server_stuck_on_tls_1_0_is_told_what_postern_speaks() {
        let old = SmtpError::Tls {
            host: "relay.example".into(),
            source: rustls::PeerIncompatible::ServerDoesNotSupportTls12Or13.into(),
        };
        assert!(old.explanation().unwrap().contains("TLS 1.2 and 1.3 only"));
        let alert = SmtpError::Tls {
            host: "relay.example".into(),
            source: rustls::Error::AlertReceived(rustls::AlertDescription::ProtocolVersion),
        };
        assert!(alert.explanation().unwrap().contains("TLS 1.0 or 1.1"));
    }
}
