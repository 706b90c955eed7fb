//! OAuth 2.0: consent flows, token exchange and the token manager.
//!
//! # Layout
//!
//! - `authorize`: the authorization request (URL, PKCE S256, `state`) and its checks.
//! - `loopback`: the redirect listener on `http://localhost[:port]/path` (RFC 8252).
//! - `paste`: the redirected URL (or the code) pasted back, for hosts without a browser.
//! - `device`: the device authorization grant (RFC 8628).
//! - `exchange`: the token endpoint client; answers parsed, failures classified.
//! - `tokens`: [`TokenManager`]: cached tokens, single-flight refresh, commit before use.
//! - `consent`: finishing an authorization (code, device, client credentials).
//! - `keepalive`: periodic refresh so idle refresh tokens never age out.
//! - `diagnose`: hints for the common AADSTS codes and OAuth errors.
//! - `claims`: reading a JWT's claims for diagnostics (never to trust it).
//! - `http`, `retry`: the HTTPS client and the backoff policy.

mod audience;
pub mod authorize;
mod cache;
pub mod claims;
mod consent;
pub mod device;
pub mod diagnose;
mod error;
pub mod exchange;
mod gate;
mod http;
mod keepalive;
pub mod loopback;
pub mod paste;
mod retry;
pub mod service_account;
mod source;
mod tokens;

pub use audience::Audience;
pub use authorize::{AuthorizationRequest, AuthorizeError, Callback, Pkce};
pub use claims::Claims;
pub use consent::Authorized;
pub use device::{DeviceAuthorization, DevicePolling, PollEvent};
pub use error::{ProviderError, TokenError};
pub use exchange::{Grant, TokenClient, TokenResponse};
pub use http::{HttpClientError, client as http_client};
pub use keepalive::KeepaliveReport;
pub use loopback::LoopbackListener;
pub use retry::RetryPolicy;
pub use source::TokenSource;
pub use tokens::{AccessToken, ConnectionTokens, TokenManager, TokenOrigin};
