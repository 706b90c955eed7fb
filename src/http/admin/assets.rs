//! The stylesheet and the optional copy-button script, compiled into the binary.

use axum::http::header;
use axum::response::{IntoResponse, Response};

const STYLE: &str = include_str!("assets/style.css");
const COPY_JS: &str = include_str!("assets/copy.js");

pub async fn style() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        STYLE,
    )
        .into_response()
}

pub async fn copy_js() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        COPY_JS,
    )
        .into_response()
}

/// Browsers ask for it on every site; an empty answer keeps their consoles and our logs quiet.
pub async fn favicon() -> axum::http::StatusCode {
    axum::http::StatusCode::NO_CONTENT
}
