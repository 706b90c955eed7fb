//! Security headers on every response. Pages may set their own `Content-Security-Policy` (the
//! connection page allows its form to go on to the provider's consent page); otherwise this one.

use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue, header};
use axum::middleware::Next;
use axum::response::Response;

/// No scripts but our own file, no framing, forms only to us.
pub const DEFAULT_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The default policy, with `origin` also allowed as a form target (a consent redirect).
pub fn csp_with_form_target(origin: &str) -> String {
    DEFAULT_CSP.replace(
        "form-action 'self'",
        &format!("form-action 'self' {origin}"),
    )
}

pub async fn security_headers(req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    let mut set = |name: HeaderName, value: &'static str| {
        if !h.contains_key(&name) {
            h.insert(name, HeaderValue::from_static(value));
        }
    };
    set(header::CONTENT_SECURITY_POLICY, DEFAULT_CSP);
    set(header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(header::X_FRAME_OPTIONS, "DENY");
    set(header::REFERRER_POLICY, "no-referrer");
    set(
        HeaderName::from_static("cross-origin-opener-policy"),
        "same-origin",
    );
    set(
        HeaderName::from_static("permissions-policy"),
        "camera=(), microphone=(), geolocation=()",
    );
    // Pages show connection details and one-time secrets: never keep them in a cache.
    set(header::CACHE_CONTROL, "no-store");
    resp
}
