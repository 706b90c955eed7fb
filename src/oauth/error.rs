//! What can go wrong while obtaining a token, classified for the callers that must react.

use std::fmt;

use secrecy::{ExposeSecret, SecretString};

/// A failure to obtain an access token.
///
/// Callers branch on [`TokenError::is_transient`] and [`TokenError::needs_reauthorization`],
/// never on the message text. Cloneable so that every caller waiting on one refresh gets its
/// result, failures included.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TokenError {
    /// Network error, timeout, HTTP 5xx or 429: try again later; tokens are kept.
    #[error("token endpoint unavailable: {message}")]
    Transient {
        message: String,
        /// How long the provider asked us to wait (429 `Retry-After`), if it said.
        retry_after: Option<std::time::Duration>,
    },
    /// The provider refused the grant (`invalid_grant`, `invalid_client`, consent, MFA...):
    /// an admin must act. `reason` holds the `error` code and `error_description`, secrets redacted.
    #[error("the connection needs re-authorization: {reason}")]
    NeedsReauthorization { reason: String },
    /// The connection cannot be used as configured (disabled, never authorized, missing secret).
    #[error("{0}")]
    NotUsable(String),
    /// The store failed while reading or saving tokens.
    #[error("token store: {0}")]
    Store(String),
}

impl TokenError {
    pub fn is_transient(&self) -> bool {
        matches!(self, TokenError::Transient { .. } | TokenError::Store(_))
    }

    pub fn needs_reauthorization(&self) -> bool {
        matches!(self, TokenError::NeedsReauthorization { .. })
    }
}

impl From<crate::store::StoreError> for TokenError {
    fn from(e: crate::store::StoreError) -> Self {
        TokenError::Store(e.to_string())
    }
}

/// An OAuth error answer from the provider (`error`, `error_description`, AADSTS codes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderError {
    /// HTTP status of the answer (0 when it came back through a browser redirect).
    pub status: u16,
    /// The OAuth `error` code, e.g. `invalid_grant`.
    pub error: String,
    /// `error_description` as sent (Microsoft appends trace and correlation ids).
    pub description: Option<String>,
    /// Microsoft's `error_codes`, or the number of an `AADSTSnnnn:` prefix.
    pub codes: Vec<u32>,
}

impl ProviderError {
    pub fn new(status: u16, error: &str, description: Option<String>, codes: Vec<u32>) -> Self {
        let mut codes = codes;
        if codes.is_empty()
            && let Some(code) = description.as_deref().and_then(aadsts_code)
        {
            codes.push(code);
        }
        Self {
            status,
            error: error.to_string(),
            description,
            codes,
        }
    }

    /// Reads back a status reason written from [`ProviderError`]'s `Display`
    /// (`error: description`), enough for hints.
    pub fn from_reason(reason: &str) -> Self {
        let (error, description) = match reason.split_once(": ") {
            Some((e, d)) if !e.contains(' ') => (e, Some(d.to_string())),
            _ => ("", Some(reason.to_string())),
        };
        Self::new(0, error, description, vec![])
    }

    /// The first AADSTS code, if Microsoft sent one.
    pub fn aadsts(&self) -> Option<u32> {
        self.codes.first().copied()
    }

    /// The provider is having trouble, not refusing: retry later.
    pub fn is_transient(&self) -> bool {
        self.status >= 500
            || self.status == 429
            || matches!(
                self.error.as_str(),
                "temporarily_unavailable" | "server_error"
            )
    }

    /// The description without Microsoft's trace/correlation/timestamp tail, which only
    /// Microsoft support needs and which makes every status reason look different.
    pub fn short_description(&self) -> Option<&str> {
        let d = self.description.as_deref()?;
        let cut = d.find(" Trace ID:").unwrap_or(d.len());
        let d = d[..cut].trim();
        (!d.is_empty()).then_some(d)
    }

    /// The same error with every occurrence of `secrets` removed from the description.
    pub fn redacted(mut self, secrets: &[&SecretString]) -> Self {
        self.description = self.description.map(|d| redact(&d, secrets));
        self
    }
}

impl fmt::Display for ProviderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.error)?;
        match self.short_description() {
            Some(d) => write!(f, ": {d}")?,
            None if self.status != 0 => write!(f, " (HTTP {})", self.status)?,
            None => {}
        }
        if let Some(code) = self.aadsts()
            && !self
                .short_description()
                .is_some_and(|d| d.contains(&format!("AADSTS{code}")))
        {
            write!(f, " [AADSTS{code}]")?;
        }
        Ok(())
    }
}

impl std::error::Error for ProviderError {}

/// The number in an `AADSTSnnnn:` prefix (or anywhere in the text).
pub fn aadsts_code(text: &str) -> Option<u32> {
    let at = text.find("AADSTS")?;
    let digits: String = text[at + 6..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// Replaces every occurrence of each secret in `text` with `[redacted]`.
pub fn redact(text: &str, secrets: &[&SecretString]) -> String {
    let mut out = text.to_string();
    for s in secrets {
        let s = s.expose_secret();
        // Short values would redact ordinary words; real secrets are long.
        if s.len() >= 8 {
            out = out.replace(s, "[redacted]");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_and_codes() {
        let e = ProviderError::new(
            401,
            "invalid_client",
            Some(
                "AADSTS7000215: Invalid client secret provided. Trace ID: abc Correlation ID: d"
                    .into(),
            ),
            vec![],
        );
        assert_eq!(e.aadsts(), Some(7000215));
        assert_eq!(
            e.to_string(),
            "invalid_client: AADSTS7000215: Invalid client secret provided."
        );
        assert!(!e.is_transient());
        let e = ProviderError::new(400, "invalid_grant", Some("bad".into()), vec![70000]);
        assert_eq!(e.to_string(), "invalid_grant: bad [AADSTS70000]");
        let e = ProviderError::new(503, "temporarily_unavailable", None, vec![]);
        assert!(e.is_transient());
        assert_eq!(e.to_string(), "temporarily_unavailable (HTTP 503)");
    }

    #[test]
    fn reason_round_trip() {
        let e = ProviderError::new(
            400,
            "invalid_grant",
            Some("AADSTS70000: bad. Trace ID: x".into()),
            vec![],
        );
        let back = ProviderError::from_reason(&e.to_string());
        assert_eq!(back.error, "invalid_grant");
        assert_eq!(back.aadsts(), Some(70000));
    }

    #[test]
    fn redaction() {
        let secret = SecretString::from("s3cr3t-value-123");
        let e = ProviderError::new(
            400,
            "invalid_grant",
            Some("token s3cr3t-value-123 is bad".into()),
            vec![],
        )
        .redacted(&[&secret]);
        assert_eq!(e.description.as_deref(), Some("token [redacted] is bad"));
    }

    #[test]
    fn errors_are_classified() {
        assert!(
            TokenError::Transient {
                message: "x".into(),
                retry_after: None
            }
            .is_transient()
        );
        assert!(TokenError::NeedsReauthorization { reason: "x".into() }.needs_reauthorization());
        assert!(!TokenError::NotUsable("x".into()).is_transient());
    }
}
