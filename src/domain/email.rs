//! An e-mail address as used in SMTP envelopes and the connection's user name.

use std::fmt;
use std::str::FromStr;

/// `local@domain`, checked enough that it can be put in an SMTP command or a header safely.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(transparent)]
pub struct EmailAddress(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EmailError {
    #[error("an e-mail address cannot be empty")]
    Empty,
    #[error(
        "`{0}` is not an e-mail address: it needs exactly one `@` between a name and a domain (like `ops@contoso.com`)"
    )]
    Shape(String),
    #[error("e-mail address `{0}` contains a space, control character or one of `<>()[],;:\"\\`")]
    BadCharacter(String),
    #[error("e-mail address `{0}` is longer than 254 characters")]
    TooLong(String),
    #[error("the domain of `{0}` is not a valid domain name")]
    BadDomain(String),
}

impl EmailAddress {
    pub fn parse(s: &str) -> Result<Self, EmailError> {
        let s = s.trim();
        if s.is_empty() {
            return Err(EmailError::Empty);
        }
        if s.len() > 254 {
            return Err(EmailError::TooLong(s.to_string()));
        }
        // Control characters and header/SMTP delimiters are refused outright: they are how
        // CRLF and envelope injection reach a server.
        if s.chars()
            .any(|c| c.is_control() || c.is_whitespace() || "<>()[],;:\"\\".contains(c))
        {
            return Err(EmailError::BadCharacter(s.escape_debug().to_string()));
        }
        let Some((local, domain)) = s.rsplit_once('@') else {
            return Err(EmailError::Shape(s.to_string()));
        };
        if local.is_empty() || domain.is_empty() || local.contains('@') || local.len() > 64 {
            return Err(EmailError::Shape(s.to_string()));
        }
        if super::host::Host::parse(domain).is_err() {
            return Err(EmailError::BadDomain(s.to_string()));
        }
        Ok(Self(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn domain(&self) -> &str {
        self.0.rsplit_once('@').map(|(_, d)| d).unwrap_or_default()
    }

    /// Needs the SMTPUTF8 extension to be sent in an envelope.
    pub fn is_ascii(&self) -> bool {
        self.0.is_ascii()
    }
}

impl FromStr for EmailAddress {
    type Err = EmailError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for EmailAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        for good in [
            "a@contoso.com",
            "first.last+tag@sub.example.org",
            "jürgen@exämple.de",
            "x@localhost",
        ] {
            assert_eq!(EmailAddress::parse(good).unwrap().as_str(), good);
        }
        let bad = [
            ("", "empty"),
            ("nobody", "exactly one `@`"),
            ("@contoso.com", "exactly one `@`"),
            ("a@", "exactly one `@`"),
            ("a b@contoso.com", "space"),
            ("a@contoso.com\r\nRCPT TO:<x@y>", "control"),
            ("<a@contoso.com>", "space"),
            ("a@-bad-.com", "domain"),
        ];
        for (input, msg) in bad {
            let err = EmailAddress::parse(input).unwrap_err().to_string();
            assert!(err.contains(msg), "{input:?}: {err}");
        }
        assert_eq!(
            EmailAddress::parse("Ops@Contoso.com").unwrap().domain(),
            "Contoso.com"
        );
    }
}
