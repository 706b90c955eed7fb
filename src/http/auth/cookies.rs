//! Reading and writing the few cookies Postern sets, by hand (no cookie jar needed).

use axum::http::HeaderMap;
use axum::http::request::Parts;

use crate::http::AppState;

/// The value of cookie `name` in the request, if present.
pub fn read_cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim().to_string())
}

/// Whether the admin's browser talks https to us (directly or through a proxy that says so).
pub fn is_https(parts: &Parts, state: &AppState) -> bool {
    if state.public_url().is_some_and(|u| u.scheme() == "https") {
        return true;
    }
    let header = |name: &str| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_ascii_lowercase)
    };
    header("x-forwarded-proto").is_some_and(|v| v.split(',').next().map(str::trim) == Some("https"))
        || header("forwarded").is_some_and(|v| v.contains("proto=https"))
}

/// A `Set-Cookie` value.
#[derive(Debug, Clone)]
pub struct Cookie {
    pub name: String,
    pub value: String,
    pub secure: bool,
    pub same_site: &'static str,
    pub path: &'static str,
    /// `None`: a session cookie (gone when the browser closes); `Some(0)`: delete it.
    pub max_age: Option<u64>,
}

impl Cookie {
    pub fn header_value(&self) -> String {
        let mut s = format!(
            "{}={}; Path={}; HttpOnly; SameSite={}",
            self.name, self.value, self.path, self.same_site
        );
        if self.secure {
            s.push_str("; Secure");
        }
        if let Some(age) = self.max_age {
            s.push_str(&format!("; Max-Age={age}"));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_found_among_others() {
        let mut h = HeaderMap::new();
        h.insert("cookie", "a=1; postern_session=xyz ; b=2".parse().unwrap());
        assert_eq!(read_cookie(&h, "postern_session").as_deref(), Some("xyz"));
        assert_eq!(read_cookie(&h, "c"), None);
        let c = Cookie {
            name: "n".into(),
            value: "v".into(),
            secure: true,
            same_site: "Strict",
            path: "/",
            max_age: Some(0),
        };
        assert_eq!(
            c.header_value(),
            "n=v; Path=/; HttpOnly; SameSite=Strict; Secure; Max-Age=0"
        );
    }
}
