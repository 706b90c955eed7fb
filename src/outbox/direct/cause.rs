//! The likely cause of a failed send, in the admin's terms: the SMTP client's explanations for
//! known replies, the OAuth hints for token refusals, and what each network step usually means.

use rustls::CertificateError;

use crate::domain::{Connection, RedirectUri, TlsMode};
use crate::oauth::diagnose::{HintContext, hint};
use crate::oauth::{ProviderError, TokenError};
use crate::smtp::client::{SmtpError, Stage};

/// What to check or do about `e` on `conn`, when Postern can tell.
pub fn likely_cause(e: &SmtpError, conn: &Connection) -> Option<String> {
    if let Some(known) = e.explanation() {
        return Some(known.to_string());
    }
    let s = &conn.settings;
    let name = conn.name().as_str();
    let (host, port) = (s.host.as_str(), s.port.get());
    let text = match e {
        SmtpError::Token(t) => return token_cause(t, conn),
        SmtpError::Resolve { .. } => format!(
            "the host name `{host}` does not resolve: check the connection's host \
             (`postern connection edit {name} --host ...`) and this machine's DNS"
        ),
        SmtpError::Connect { .. } | SmtpError::Timeout {
            stage: Stage::Connect | Stage::Resolve,
            ..
        } => format!(
            "nothing accepted a connection on {host}:{port}: check the port (587 with STARTTLS, 465 with \
             implicit TLS) and that a firewall allows outbound connections to it"
        ),
        SmtpError::Timeout {
            stage: Stage::Greeting,
            ..
        }
        | SmtpError::Closed {
            stage: Stage::Greeting,
        } if s.tls == TlsMode::Starttls => format!(
            "the server did not greet in plain text: port {port} may expect implicit TLS \
             (`postern connection edit {name} --tls implicit`)"
        ),
        SmtpError::Io {
            stage: Stage::TlsHandshake,
            ..
        }
        | SmtpError::Timeout {
            stage: Stage::TlsHandshake,
            ..
        } if s.tls == TlsMode::Implicit => format!(
            "the TLS handshake failed: port {port} may expect STARTTLS instead of implicit TLS \
             (`postern connection edit {name} --tls starttls`)"
        ),
        SmtpError::Tls { source, .. } => tls_cause(source, conn),
        SmtpError::AuthNotOffered { .. } => format!(
            "the server does not offer OAuth authentication after TLS: check that `{host}` is the \
             provider's submission server (smtp.office365.com, smtp.gmail.com)"
        ),
        SmtpError::Config(_) => format!(
            "fix the connection's settings with `postern connection edit {name}` (a CA file must be a \
             readable PEM file)"
        ),
        SmtpError::EightBitNotOffered | SmtpError::SmtpUtf8NotOffered => {
            "the server cannot carry this message as it is: encode 8-bit content (quoted-printable or \
             base64) and use ASCII addresses"
                .to_string()
        }
        _ => return None,
    };
    Some(text)
}

fn token_cause(t: &TokenError, conn: &Connection) -> Option<String> {
    let name = conn.name().as_str();
    match t {
        TokenError::NeedsReauthorization { reason } => {
            let context = HintContext {
                connection: name,
                redirect_uri: conn.settings.redirect_uri.as_ref().map(RedirectUri::as_str),
            };
            // Postern's own diagnosis (a Google refresh token dead at 7 days) says more than
            // the provider's error word.
            if let Some(entry) = crate::explain::lookup(reason)
                .filter(|e| matches!(e.key, crate::explain::Key::Postern(_)))
            {
                return Some(entry.explain(crate::explain::Context {
                    connection: Some(name),
                    redirect_uri: context.redirect_uri,
                }));
            }
            Some(
                hint(&ProviderError::from_reason(reason), context).unwrap_or_else(|| {
                    format!("run `postern connection authorize {name}` to sign in again")
                }),
            )
        }
        TokenError::Transient { .. } => Some(format!(
            "the token endpoint{} could not be reached or was busy: check outbound HTTPS from this \
             machine, then try again",
            conn.settings
                .token_endpoint()
                .map(|u| format!(" ({})", u.host_str().unwrap_or_default()))
                .unwrap_or_default()
        )),
        // Already says what to run (authorize, enable).
        TokenError::NotUsable(_) | TokenError::Store(_) => None,
    }
}

fn tls_cause(e: &rustls::Error, conn: &Connection) -> String {
    let name = conn.name().as_str();
    let host = conn.settings.host.as_str();
    let ca_hint = match &conn.settings.ca_file {
        Some(f) => format!(
            "the configured CA file ({}) does not vouch for it either",
            f.display()
        ),
        None => format!(
            "if the server uses a private CA, trust it with `postern connection edit {name} --ca-file CA.pem`"
        ),
    };
    match e {
        rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer) => format!(
            "the server's certificate is not signed by a trusted authority (or something intercepts the \
             connection); {ca_hint}"
        ),
        rustls::Error::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
        ) => format!(
            "the server's certificate is not issued for `{host}`: use the host name the provider \
             documents (smtp.office365.com), not an IP address or alias"
        ),
        rustls::Error::InvalidCertificate(
            CertificateError::Expired | CertificateError::ExpiredContext { .. },
        ) => "the server's certificate has expired (or this machine's clock is wrong)".to_string(),
        rustls::Error::InvalidCertificate(_) => {
            format!("the server's certificate was refused; {ca_hint}")
        }
        _ => "the TLS handshake failed: the server may not speak TLS on this port, or only old \
              TLS versions Postern refuses"
            .to_string(),
    }
}
