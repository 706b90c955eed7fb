//! How to reach and authenticate to one provider's SMTP server.

use std::path::PathBuf;
use std::time::Duration;

use crate::domain::TlsMode;

/// Every network wait of a session is bounded by one of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// DNS resolution plus the TCP connect, over all addresses tried.
    pub connect: Duration,
    /// The server's `220` greeting (RFC 5321 allows 5 minutes; providers answer in milliseconds).
    pub greeting: Duration,
    /// The TLS handshake.
    pub tls_handshake: Duration,
    /// Each command's reply, and each write of a block of message data.
    pub command: Duration,
    /// The reply to the final dot: RFC 5321 §4.5.3.2.6 asks for 10 minutes, the server may be
    /// scanning the message.
    pub data_end: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(30),
            greeting: Duration::from_secs(120),
            tls_handshake: Duration::from_secs(60),
            command: Duration::from_secs(120),
            data_end: Duration::from_secs(600),
        }
    }
}

/// The SASL mechanism used with the access token.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum AuthMechanism {
    /// Google's and Microsoft's `XOAUTH2`: the one Exchange Online offers.
    #[default]
    Xoauth2,
    /// RFC 7628 `OAUTHBEARER`: offered by Gmail, not by Exchange Online.
    OAuthBearer,
}

impl AuthMechanism {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMechanism::Xoauth2 => "XOAUTH2",
            AuthMechanism::OAuthBearer => "OAUTHBEARER",
        }
    }
}

/// The SMTP side of one connection record.
#[derive(Debug, Clone)]
pub struct SmtpClientConfig {
    /// Host name to connect to and to verify the certificate against (`smtp.office365.com`).
    pub host: String,
    pub port: u16,
    /// `Starttls` (587; STARTTLS is then mandatory) or `Implicit` (465).
    pub tls: TlsMode,
    /// The mailbox the token was issued for: the SASL user name.
    pub username: String,
    pub mechanism: AuthMechanism,
    /// Used instead of `mechanism` when the server does not offer it (Gmail offers both
    /// OAUTHBEARER and XOAUTH2; a Google connection prefers the standard one).
    pub fallback_mechanism: Option<AuthMechanism>,
    /// The name sent with EHLO: the system host name unless set.
    pub hello_name: String,
    /// Extra trusted CA certificates (PEM), added to the platform roots.
    pub ca_file: Option<PathBuf>,
    /// Accept ANY server certificate. For tests against a local fake only: it hands the token to
    /// whoever answers.
    pub insecure_skip_tls_verify: bool,
    pub timeouts: Timeouts,
    /// A connection authenticated with a token older than this is not reused. Access tokens live
    /// about an hour and the token manager hands them out with a few minutes to spare.
    pub max_token_age: Duration,
}

impl SmtpClientConfig {
    pub const DEFAULT_MAX_TOKEN_AGE: Duration = Duration::from_secs(50 * 60);

    /// A configuration with safe defaults: certificate verification against the platform roots,
    /// XOAUTH2, default timeouts.
    pub fn new(
        host: impl Into<String>,
        port: u16,
        tls: TlsMode,
        username: impl Into<String>,
    ) -> Self {
        Self {
            host: host.into(),
            port,
            tls,
            username: username.into(),
            mechanism: AuthMechanism::default(),
            fallback_mechanism: None,
            hello_name: default_hello_name(),
            ca_file: None,
            insecure_skip_tls_verify: false,
            timeouts: Timeouts::default(),
            max_token_age: Self::DEFAULT_MAX_TOKEN_AGE,
        }
    }
}

/// The system host name if it is a usable EHLO argument, else `localhost`.
pub fn default_hello_name() -> String {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .filter_map(|path| std::fs::read_to_string(path).ok())
        .map(|name| name.trim().to_string())
        .find(|name| is_valid_hello_name(name))
        .unwrap_or_else(|| "localhost".to_string())
}

/// A domain name (letters, digits, `-`, `.`) or an address literal (`[192.0.2.1]`).
pub fn is_valid_hello_name(name: &str) -> bool {
    if let Some(literal) = name.strip_prefix('[').and_then(|n| n.strip_suffix(']')) {
        return !literal.is_empty()
            && literal
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b':'));
    }
    !name.is_empty()
        && name.len() <= 255
        && name.split('.').all(|label| {
            !label.is_empty()
                && !label.starts_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hello_names() {
        for good in [
            "localhost",
            "relay.example.org",
            "host-1",
            "[192.0.2.1]",
            "[IPv6:2001:db8::1]",
        ] {
            assert!(is_valid_hello_name(good), "{good}");
        }
        for bad in ["", "a..b", "bad name", "x\r\nMAIL", "-x", "[]", "ünï"] {
            assert!(!is_valid_hello_name(bad), "{bad}");
        }
        assert!(is_valid_hello_name(&default_hello_name()));
    }

    #[test]
    fn defaults_are_safe() {
        let c = SmtpClientConfig::new(
            "smtp.office365.com",
            587,
            TlsMode::Starttls,
            "a@example.com",
        );
        assert!(!c.insecure_skip_tls_verify);
        assert_eq!(c.mechanism, AuthMechanism::Xoauth2);
        assert_eq!(c.timeouts.data_end, Duration::from_secs(600));
        assert_eq!(c.max_token_age, Duration::from_secs(3000));
    }
}
