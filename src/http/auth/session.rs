//! Admin sessions: a random token in a cookie, the session (and its CSRF token) in the store.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Redirect, Response};
use secrecy::{ExposeSecret, SecretString};

use super::cookies::{Cookie, is_https, read_cookie};
use crate::http::AppState;
use crate::http::state::SESSION_LIFETIME;
use crate::store::Session;

/// The session cookie's name on plain http; over https it is `__Host-` + this.
pub const SESSION_COOKIE: &str = "postern_session";
const SECURE_SESSION_COOKIE: &str = "__Host-postern_session";

/// A logged-in admin.
#[derive(Debug, Clone)]
pub struct AdminSession {
    pub session: Session,
    pub token: SecretString,
}

impl AdminSession {
    pub fn username(&self) -> &str {
        &self.session.username
    }

    pub fn csrf_token(&self) -> &str {
        &self.session.csrf_token
    }

    /// Constant-time comparison of a submitted CSRF token with the session's.
    pub fn csrf_matches(&self, submitted: &str) -> bool {
        constant_time_eq(submitted.as_bytes(), self.session.csrf_token.as_bytes())
    }
}

pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The cookie that carries a new session.
pub fn login_cookie(token: &SecretString, secure: bool) -> Cookie {
    Cookie {
        name: if secure {
            SECURE_SESSION_COOKIE
        } else {
            SESSION_COOKIE
        }
        .into(),
        value: token.expose_secret().to_string(),
        secure,
        same_site: "Strict",
        path: "/",
        max_age: Some(SESSION_LIFETIME.as_secs()),
    }
}

/// The cookie that removes the session cookie.
pub fn logout_cookie(secure: bool) -> Cookie {
    Cookie {
        value: String::new(),
        max_age: Some(0),
        ..login_cookie(&SecretString::from(String::new()), secure)
    }
}

/// Why a page needing a login was not served.
#[derive(Debug)]
pub enum SessionRejection {
    /// No live session: go to the login page (then back to this local path).
    Login {
        next: String,
    },
    Failed(anyhow::Error),
}

impl IntoResponse for SessionRejection {
    fn into_response(self) -> Response {
        match self {
            SessionRejection::Login { next } => {
                let mut target = url::form_urlencoded::Serializer::new(String::new());
                target.append_pair("next", &next);
                Redirect::to(&format!("/admin/login?{}", target.finish())).into_response()
            }
            SessionRejection::Failed(e) => {
                crate::http::admin::PageError::Internal(e).into_response()
            }
        }
    }
}

/// The session token from the request's cookies (either name).
pub(crate) fn session_token(parts: &Parts) -> Option<SecretString> {
    read_cookie(&parts.headers, SECURE_SESSION_COOKIE)
        .or_else(|| read_cookie(&parts.headers, SESSION_COOKIE))
        .filter(|t| !t.is_empty() && t.len() <= 128)
        .map(SecretString::from)
}

impl AdminSession {
    /// The session of this request, if the admin is logged in.
    pub async fn from_parts(
        parts: &Parts,
        state: &AppState,
    ) -> Result<Option<Self>, anyhow::Error> {
        let Some(token) = session_token(parts) else {
            return Ok(None);
        };
        let session = state.store().session(&token).await?;
        Ok(session.map(|session| AdminSession { session, token }))
    }

    /// Whether cookies for this request should be `Secure`.
    pub fn secure(parts: &Parts, state: &AppState) -> bool {
        is_https(parts, state)
    }
}

impl FromRequestParts<AppState> for AdminSession {
    type Rejection = SessionRejection;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, SessionRejection> {
        match AdminSession::from_parts(parts, state).await {
            Ok(Some(s)) => Ok(s),
            Ok(None) => Err(SessionRejection::Login {
                next: local_path(parts),
            }),
            Err(e) => Err(SessionRejection::Failed(e)),
        }
    }
}

/// Where to come back to after login: this request's path, only if it is a local admin page
/// (never another site: no open redirect).
fn local_path(parts: &Parts) -> String {
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/admin");
    safe_next(path).to_string()
}

/// `next` if it is a path under `/admin` on this site, else `/admin`.
pub fn safe_next(next: &str) -> &str {
    let local = next.starts_with("/admin")
        && !next.starts_with("//")
        && !next.contains('\\')
        && !next.chars().any(char::is_control);
    if local && parts_method_safe(next) {
        next
    } else {
        "/admin"
    }
}

fn parts_method_safe(next: &str) -> bool {
    // Only pages worth returning to: not the login page itself.
    !next.starts_with("/admin/login")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_is_only_ever_a_local_admin_path() {
        assert_eq!(
            safe_next("/admin/messages?status=queued"),
            "/admin/messages?status=queued"
        );
        for bad in [
            "https://evil.example/",
            "//evil.example/admin",
            "/admin\\..\\x",
            "/other",
            "/admin/login",
        ] {
            assert_eq!(safe_next(bad), "/admin", "{bad}");
        }
    }

    #[test]
    fn csrf_comparison_is_exact() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
