//! Forms of the admin UI: a logged-in session, and the session's CSRF token in the `csrf` field.
//!
//! SameSite=Strict already keeps other sites' requests from carrying the session; the token is
//! the second lock (older browsers, same-site subdomains).

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;

use super::session::{AdminSession, SessionRejection};
use crate::http::AppState;
use crate::http::admin::PageError;
use crate::http::state::SMALL_BODY_LIMIT;

/// The name of the hidden field that carries the token.
pub const CSRF_FIELD: &str = "csrf";

/// A form posted by a logged-in admin, with a valid CSRF token.
#[derive(Debug)]
pub struct CsrfForm<T> {
    pub session: AdminSession,
    pub form: T,
}

/// Why a form was refused.
#[derive(Debug)]
pub enum FormRejection {
    Session(SessionRejection),
    Page(PageError),
}

impl IntoResponse for FormRejection {
    fn into_response(self) -> Response {
        match self {
            FormRejection::Session(s) => s.into_response(),
            FormRejection::Page(p) => p.into_response(),
        }
    }
}

impl<T: DeserializeOwned + Send> FromRequest<AppState> for CsrfForm<T> {
    type Rejection = FormRejection;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, FormRejection> {
        let (mut parts, body) = req.into_parts();
        let session = AdminSession::from_request_parts(&mut parts, state)
            .await
            .map_err(FormRejection::Session)?;
        let content_type = parts.headers.get(axum::http::header::CONTENT_TYPE).cloned();
        let bytes = Bytes::from_request(Request::from_parts(parts, body), state)
            .await
            .map_err(|e| FormRejection::Page(PageError::BadRequest(e.body_text())))?;
        if bytes.len() > SMALL_BODY_LIMIT {
            return Err(FormRejection::Page(PageError::BadRequest(
                "the form is too large".into(),
            )));
        }
        let token = url::form_urlencoded::parse(&bytes)
            .find(|(k, _)| k == CSRF_FIELD)
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default();
        if !session.csrf_matches(&token) {
            return Err(FormRejection::Page(PageError::Csrf));
        }
        // Decode with axum's own form extractor, which also checks the content type.
        let mut again = Request::new(axum::body::Body::from(bytes));
        *again.method_mut() = axum::http::Method::POST;
        if let Some(ct) = content_type {
            again
                .headers_mut()
                .insert(axum::http::header::CONTENT_TYPE, ct);
        }
        let axum::Form(form) = axum::Form::<T>::from_request(again, state)
            .await
            .map_err(|e| {
                FormRejection::Page(PageError::BadRequest(format!(
                    "the form is not valid: {}",
                    e.body_text()
                )))
            })?;
        Ok(CsrfForm { session, form })
    }
}
