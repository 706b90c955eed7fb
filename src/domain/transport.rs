//! How a connection's mail leaves: SMTP with XOAUTH2 (the default) or Microsoft Graph's sendMail.

use std::fmt;
use std::str::FromStr;

/// The Microsoft Graph base URL of the worldwide cloud (national clouds set `--graph-url`).
pub const DEFAULT_GRAPH_URL: &str = "https://graph.microsoft.com";

/// `smtp` (AUTH XOAUTH2 to the provider's SMTP server) or `graph` (`POST /v1.0/users/{user}/sendMail`),
/// for tenants where SMTP AUTH is off (`535 5.7.139`).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    #[default]
    Smtp,
    Graph,
}

impl Transport {
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Smtp => "smtp",
            Transport::Graph => "graph",
        }
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    #[error(
        "transport `{0}` is not known: use `smtp` (SMTP AUTH with OAuth) or `graph` (Microsoft Graph \
         sendMail, for tenants where SMTP AUTH is disabled)"
    )]
    Transport(String),
    #[error(
        "fallback `{0}` is not known: use `graph` (deliver through Microsoft Graph when SMTP AUTH \
         answers 535 5.7.139) or `none`"
    )]
    Fallback(String),
    #[error(
        "graph_large `{0}` is not known: use `fail` (refuse a message over Graph's 4 MB limit, with \
         the reason) or `draft` (send it as a draft plus attachment uploads; needs Mail.ReadWrite)"
    )]
    GraphLarge(String),
}

impl FromStr for Transport {
    type Err = TransportError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "smtp" => Ok(Transport::Smtp),
            "graph" => Ok(Transport::Graph),
            _ => Err(TransportError::Transport(s.to_string())),
        }
    }
}

/// What an SMTP connection does when SMTP AUTH is switched off for its mailbox or tenant
/// (`535 5.7.139`): `graph`, deliver through Microsoft Graph's sendMail with a Graph token from the
/// same grant. (The only fallback there is; `None` in the settings means none.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Fallback {
    Graph,
}

impl Fallback {
    pub fn as_str(self) -> &'static str {
        match self {
            Fallback::Graph => "graph",
        }
    }

    /// `graph`, or `none` (also an empty value) for no fallback.
    pub fn parse_option(s: &str) -> Result<Option<Fallback>, TransportError> {
        match s.trim().to_ascii_lowercase().as_str() {
            "" | "none" => Ok(None),
            "graph" => Ok(Some(Fallback::Graph)),
            _ => Err(TransportError::Fallback(s.to_string())),
        }
    }
}

impl fmt::Display for Fallback {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What Graph does with a message whose base64 is over its 4 MB request limit: `fail` (the
/// default: refused before any request, with the reason) or `draft` (a draft from the message
/// without its large attachments, the attachments through upload sessions, then send; needs
/// `Mail.ReadWrite`). Never truncated either way.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum GraphLarge {
    #[default]
    Fail,
    Draft,
}

impl GraphLarge {
    pub fn as_str(self) -> &'static str {
        match self {
            GraphLarge::Fail => "fail",
            GraphLarge::Draft => "draft",
        }
    }
}

impl fmt::Display for GraphLarge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for GraphLarge {
    type Err = TransportError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "fail" => Ok(GraphLarge::Fail),
            "draft" => Ok(GraphLarge::Draft),
            _ => Err(TransportError::GraphLarge(s.to_string())),
        }
    }
}

impl FromStr for Fallback {
    type Err = TransportError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Fallback::parse_option(s)?.ok_or_else(|| TransportError::Fallback(s.to_string()))
    }
}

/// A Graph base URL: `https://` only (a bearer token never crosses cleartext), no path, query or
/// credentials.
pub fn parse_graph_url(s: &str) -> Result<url::Url, String> {
    let u = url::Url::parse(s.trim()).map_err(|e| {
        format!("`{s}` is not an absolute URL ({e}): write e.g. {DEFAULT_GRAPH_URL}")
    })?;
    if u.scheme() != "https" {
        return Err(format!(
            "`{s}` must be an https URL: Graph is only reached over TLS (e.g. {DEFAULT_GRAPH_URL})"
        ));
    }
    if u.host_str().is_none() || !u.username().is_empty() || u.password().is_some() {
        return Err(format!("`{s}` needs a host and no user name or password"));
    }
    if u.path() != "/" || u.query().is_some() || u.fragment().is_some() {
        return Err(format!(
            "`{s}` must be the base URL only (e.g. {DEFAULT_GRAPH_URL}): Postern adds /v1.0/users/…/sendMail"
        ));
    }
    Ok(u)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_known_transports_in_any_case() {
        assert_eq!("SMTP".parse::<Transport>(), Ok(Transport::Smtp));
        assert_eq!(" graph ".parse::<Transport>(), Ok(Transport::Graph));
        let err = "rest".parse::<Transport>().unwrap_err().to_string();
        assert!(err.contains("`rest`") && err.contains("graph"), "{err}");
    }

    #[test]
    fn fallbacks_are_graph_or_none() {
        assert_eq!(Fallback::parse_option(" Graph "), Ok(Some(Fallback::Graph)));
        assert_eq!(Fallback::parse_option("none"), Ok(None));
        assert_eq!(Fallback::parse_option(""), Ok(None));
        let err = Fallback::parse_option("smtp").unwrap_err().to_string();
        assert!(err.contains("`smtp`") && err.contains("5.7.139"), "{err}");
        assert!("none".parse::<Fallback>().is_err());
    }

    #[test]
    fn graph_urls_are_https_base_urls() {
        let u = parse_graph_url("https://graph.microsoft.us").unwrap();
        assert_eq!(u.as_str(), "https://graph.microsoft.us/");
        assert!(parse_graph_url("https://127.0.0.1:8443").is_ok());
        for (bad, why) in [
            ("http://graph.microsoft.com", "https"),
            ("https://graph.microsoft.com/v1.0", "base URL"),
            ("graph.microsoft.com", "absolute"),
            ("https://u:p@graph.microsoft.com", "password"),
        ] {
            let e = parse_graph_url(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }
}
