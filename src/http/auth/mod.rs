//! Who is calling: API keys for the HTTP API, server-side sessions with CSRF tokens for the admin
//! UI, and the login rate limiter.
//!
//! Cookies are `HttpOnly; SameSite=Strict; Path=/`. They get `Secure` (and the `__Host-` name
//! prefix) when the admin reaches Postern over https: the public URL is https, or a proxy says
//! so with `X-Forwarded-Proto: https` / `Forwarded: proto=https`. On a plain-http listener (the
//! default `127.0.0.1:8025`) a `Secure` cookie would never come back, so it is left off there;
//! put Postern behind a TLS proxy before exposing it beyond loopback.

mod api_key;
mod cookies;
mod csrf;
mod limit;
mod scope;
mod session;

pub use api_key::{AdminKey, ApiCaller, ApiKeyCheck};
pub use cookies::{Cookie, is_https, read_cookie};
pub use csrf::CsrfForm;
pub use limit::LoginLimiter;
pub(crate) use session::constant_time_eq;
pub use session::{
    AdminSession, SESSION_COOKIE, SessionRejection, login_cookie, logout_cookie, safe_next,
};
