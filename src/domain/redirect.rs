//! The OAuth redirect URI registered on the app.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedirectUri {
    raw: String,
    url: url::Url,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RedirectUriError {
    #[error(
        "redirect URI `{0}` is not an absolute URL: use the exact value registered on the app, e.g. `http://localhost`"
    )]
    NotUrl(String),
    #[error("redirect URI `{0}` must use http or https")]
    Scheme(String),
    #[error("redirect URI `{0}` must not contain a fragment (`#...`)")]
    Fragment(String),
}

impl RedirectUri {
    pub fn parse(s: &str) -> Result<Self, RedirectUriError> {
        let s = s.trim();
        let url = url::Url::parse(s).map_err(|_| RedirectUriError::NotUrl(s.to_string()))?;
        if url.scheme() != "http" && url.scheme() != "https" {
            return Err(RedirectUriError::Scheme(s.to_string()));
        }
        if url.host_str().is_none() {
            return Err(RedirectUriError::NotUrl(s.to_string()));
        }
        if url.fragment().is_some() {
            return Err(RedirectUriError::Fragment(s.to_string()));
        }
        Ok(Self {
            raw: s.to_string(),
            url,
        })
    }

    pub fn url(&self) -> &url::Url {
        &self.url
    }

    /// The exact text to register and to send; `Url` would add a trailing `/` to a bare host,
    /// which Entra treats as a different redirect URI, so keep what the admin typed.
    pub fn as_str(&self) -> &str {
        &self.raw
    }

    /// `http://localhost[:port]/...`, `http://127.0.0.1...` or `http://[::1]...`: Postern can listen itself.
    pub fn is_loopback(&self) -> bool {
        self.url.scheme() == "http"
            && matches!(
                self.url.host_str(),
                Some("localhost") | Some("127.0.0.1") | Some("[::1]")
            )
    }
}

impl fmt::Display for RedirectUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        assert!(
            RedirectUri::parse("http://localhost")
                .unwrap()
                .is_loopback()
        );
        assert!(
            RedirectUri::parse("http://127.0.0.1:8400/cb")
                .unwrap()
                .is_loopback()
        );
        assert!(
            !RedirectUri::parse("https://postern.contoso.com/oauth/callback")
                .unwrap()
                .is_loopback()
        );
        assert!(matches!(
            RedirectUri::parse("localhost:8080"),
            Err(RedirectUriError::Scheme(_)) | Err(RedirectUriError::NotUrl(_))
        ));
        assert!(matches!(
            RedirectUri::parse("/oauth/callback"),
            Err(RedirectUriError::NotUrl(_))
        ));
        assert!(matches!(
            RedirectUri::parse("ftp://x.com/"),
            Err(RedirectUriError::Scheme(_))
        ));
        assert!(matches!(
            RedirectUri::parse("https://x.com/#a"),
            Err(RedirectUriError::Fragment(_))
        ));
    }
}
