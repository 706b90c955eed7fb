//! Where admins reach Postern, for the OAuth redirect URI of the web Connect flow.

use axum::http::header::HOST;
use axum::http::request::Parts;

use super::AppState;
use super::auth::is_https;

/// The path the provider sends the browser back to after consent.
pub const CALLBACK_PATH: &str = "/oauth/callback";

/// `scheme://host[:port]` as the admin's browser sees it: the configured public URL, else the
/// request's `Host` (checked to be a plain authority), else the listen address.
pub fn base_url(parts: &Parts, state: &AppState) -> String {
    if let Some(u) = state.public_url() {
        return u.origin().ascii_serialization();
    }
    let scheme = if is_https(parts, state) {
        "https"
    } else {
        "http"
    };
    let host = parts
        .headers
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| {
            !h.is_empty()
                && h.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'))
        })
        .map(str::to_string)
        .unwrap_or_else(|| state.settings().server.http_listen.to_string());
    format!("{scheme}://{host}")
}

/// The redirect URI Connect uses for a connection: its own Redirect URI when that already
/// points at a Postern callback (e.g. the public name behind a proxy), else this server's.
pub fn callback_uri(parts: &Parts, state: &AppState, configured: Option<&str>) -> String {
    match configured {
        Some(r) if url::Url::parse(r).is_ok_and(|u| u.path() == CALLBACK_PATH) => r.to_string(),
        _ => format!("{}{CALLBACK_PATH}", base_url(parts, state)),
    }
}
