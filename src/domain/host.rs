//! SMTP host names and ports.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// A DNS name or an IP address (no port, no scheme).
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(transparent)]
pub struct Host(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    #[error("a host cannot be empty")]
    Empty,
    #[error(
        "host `{0}` is not a valid host name: use a name like `smtp.office365.com` or an IP address, without a scheme or port"
    )]
    Invalid(String),
}

impl Host {
    pub fn parse(s: &str) -> Result<Self, HostError> {
        let s = s.trim();
        if s.is_empty() {
            return Err(HostError::Empty);
        }
        if s.parse::<IpAddr>().is_ok() {
            return Ok(Self(s.to_string()));
        }
        let s_lower = s.trim_end_matches('.').to_ascii_lowercase();
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_alphanumeric() || c == '-')
        };
        if s_lower.len() > 253 || !s_lower.split('.').all(label_ok) {
            return Err(HostError::Invalid(s.to_string()));
        }
        Ok(Self(s_lower))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Host {
    type Err = HostError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A TCP port, 1 to 65535.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(transparent)]
pub struct Port(u16);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("port `{0}` is not a port number: use 1 to 65535 (587 for STARTTLS, 465 for implicit TLS)")]
pub struct PortError(String);

impl Port {
    pub fn new(n: u16) -> Result<Self, PortError> {
        if n == 0 {
            return Err(PortError("0".into()));
        }
        Ok(Self(n))
    }

    pub fn get(self) -> u16 {
        self.0
    }
}

impl FromStr for Port {
    type Err = PortError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.trim()
            .parse::<u16>()
            .ok()
            .and_then(|n| Self::new(n).ok())
            .ok_or_else(|| PortError(s.to_string()))
    }
}

impl fmt::Display for Port {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts() {
        assert_eq!(
            Host::parse("SMTP.Office365.com").unwrap().as_str(),
            "smtp.office365.com"
        );
        assert_eq!(Host::parse("127.0.0.1").unwrap().as_str(), "127.0.0.1");
        assert_eq!(Host::parse("::1").unwrap().as_str(), "::1");
        for bad in [
            "",
            "smtp://x.com",
            "x.com:587",
            "a..b",
            "-a.com",
            "with space.com",
        ] {
            assert!(Host::parse(bad).is_err(), "{bad}");
        }
        assert!(
            Host::parse("x.com:587")
                .unwrap_err()
                .to_string()
                .contains("without a scheme or port")
        );
    }

    #[test]
    fn ports() {
        assert_eq!("587".parse::<Port>().unwrap().get(), 587);
        for bad in ["0", "65536", "-1", "smtp", ""] {
            let err = bad.parse::<Port>().unwrap_err().to_string();
            assert!(err.contains("1 to 65535"), "{bad}: {err}");
        }
    }
}
