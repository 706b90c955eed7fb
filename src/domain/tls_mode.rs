//! How the connection to an SMTP server is secured.

use std::fmt;
use std::str::FromStr;

/// `starttls` (port 587: plain connect, then STARTTLS, mandatory) or `implicit` (port 465: TLS first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    Starttls,
    Implicit,
}

impl TlsMode {
    pub fn as_str(self) -> &'static str {
        match self {
            TlsMode::Starttls => "starttls",
            TlsMode::Implicit => "implicit",
        }
    }
}

impl fmt::Display for TlsMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("TLS mode `{0}` is not known: use `starttls` (port 587) or `implicit` (port 465)")]
pub struct TlsModeError(String);

impl FromStr for TlsMode {
    type Err = TlsModeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "starttls" => Ok(TlsMode::Starttls),
            "implicit" | "tls" | "smtps" => Ok(TlsMode::Implicit),
            _ => Err(TlsModeError(s.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_known_modes_in_any_case() {
        assert_eq!("STARTTLS".parse::<TlsMode>(), Ok(TlsMode::Starttls));
        assert_eq!("implicit".parse::<TlsMode>(), Ok(TlsMode::Implicit));
        let err = "ssl3".parse::<TlsMode>().unwrap_err().to_string();
        assert!(err.contains("ssl3") && err.contains("starttls"), "{err}");
    }
}
