//! The seam between token keeping and the senders that need tokens.

use secrecy::SecretString;
use std::future::Future;

use super::TokenError;

/// Something that hands out access tokens for one connection.
///
/// The SMTP client asks for a token before AUTH, and calls [`TokenSource::force_refresh`]
/// once when the server rejects the token (535 5.7.3 or a 401 challenge).
pub trait TokenSource: Send + Sync {
    /// A token with enough life left to authenticate now (cached, or refreshed).
    fn access_token(&self) -> impl Future<Output = Result<SecretString, TokenError>> + Send;
    /// Discard any cached token and obtain a fresh one.
    fn force_refresh(&self) -> impl Future<Output = Result<SecretString, TokenError>> + Send;
}
