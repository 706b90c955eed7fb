//! What can go wrong while obtaining a token, classified for the callers that must react.

/// A failure to obtain an access token.
///
/// Callers branch on [`TokenError::is_transient`] and [`TokenError::needs_reauthorization`],
/// never on the message text.
#[derive(Debug, thiserror::Error)]
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
