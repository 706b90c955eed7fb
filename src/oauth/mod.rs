//! OAuth 2.0: consent flows, token exchange and the token manager.

mod error;
mod source;

pub use error::TokenError;
pub use source::TokenSource;
