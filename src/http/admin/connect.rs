//! "Connect with Microsoft/Google" and "Send test e-mail" on the connection page, and the
//! `/oauth/callback` page the provider sends the browser back to.

use askama::Template;
use axum::extract::{Path, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::connections::{StepView, connection_page};
use super::{Flash, PageError, render};
use crate::domain::EmailAddress;
use crate::http::AppState;
use crate::http::auth::{Cookie, CsrfForm, is_https, read_cookie};
use crate::http::base_url::{CALLBACK_PATH, callback_uri};
use crate::http::consent::BINDING_COOKIE;
use crate::http::headers::csp_with_form_target;
use crate::oauth::Callback;
use crate::outbox::direct::test_connection;
use crate::store::messages::Source;

#[derive(Debug, Deserialize)]
pub struct Empty {}

fn binding_cookie(value: &str, secure: bool, max_age: u64) -> Cookie {
    Cookie {
        name: BINDING_COOKIE.into(),
        value: value.into(),
        secure,
        // Lax: it must come back on the provider's (cross-site) redirect to the callback.
        same_site: "Lax",
        path: CALLBACK_PATH,
        max_age: Some(max_age),
    }
}

/// Starts the consent and sends the browser to the provider.
pub async fn connect(
    State(state): State<AppState>,
    Path(name): Path<String>,
    parts: Parts,
    CsrfForm { session, .. }: CsrfForm<Empty>,
) -> Result<Response, PageError> {
    let conn = state.store().connection(&name).await?;
    let redirect = callback_uri(
        &parts,
        &state,
        conn.settings.redirect_uri.as_ref().map(|r| r.as_str()),
    );
    match state
        .consents()
        .start(state.store(), &conn, &redirect, true)
        .await
    {
        Ok(started) => {
            tracing::info!(connection = %name, by = %session.username(), "web consent started");
            let cookie = binding_cookie(
                started.binding.as_deref().unwrap_or_default(),
                is_https(&parts, &state),
                crate::http::state::CONSENT_LIFETIME.as_secs(),
            );
            Ok((
                [(header::SET_COOKIE, cookie.header_value())],
                Redirect::to(started.authorize_url.as_str()),
            )
                .into_response())
        }
        Err(e) => {
            let page = connection_page(
                &session,
                &parts,
                &state,
                &conn,
                Some(Flash::bad(e.to_string())),
                String::new(),
                Vec::new(),
            );
            render(StatusCode::UNPROCESSABLE_ENTITY, &page)
        }
    }
}

#[derive(Template)]
#[template(path = "oauth_result.html")]
struct ResultPage {
    title: &'static str,
    ok: bool,
    message: String,
    hint: Option<String>,
    details: Vec<String>,
    back: String,
    refresh: Option<String>,
}

/// `GET /oauth/callback`: the provider's redirect. No session is needed (the `Strict` session
/// cookie does not come on a cross-site redirect): the single-use `state` and the binding
/// cookie tie the answer to the consent that was started. Where it leads next is built from
/// the connection's name only, never from the request (no open redirect).
pub async fn callback(State(state): State<AppState>, parts: Parts) -> Result<Response, PageError> {
    let cb = Callback::from_query(parts.uri.query().unwrap_or(""));
    let binding = read_cookie(&parts.headers, BINDING_COOKIE);
    let tokens = state.tokens().map_err(PageError::internal)?;
    let outcome = state
        .consents()
        .finish(tokens, state.store(), cb, binding.as_deref())
        .await;
    let (status, page) = match outcome {
        Ok((conn, authorized)) => {
            tracing::info!(connection = %conn.name(), "web consent completed");
            let back = format!("/admin/connections/{}?done=connected", conn.name());
            let mut details = vec![format!(
                "The access token obtained on the way is valid until {}.",
                authorized.access_expires_at.format("%Y-%m-%d %H:%M UTC")
            )];
            if let Some(scope) = &authorized.scope {
                details.push(format!("Granted scopes: {scope}"));
            }
            (
                StatusCode::OK,
                ResultPage {
                    title: "Connected",
                    ok: true,
                    message: format!(
                        "Connection {} is authorized: Postern stored the refresh token (sealed) and renews access tokens by itself.",
                        conn.name()
                    ),
                    hint: None,
                    details,
                    refresh: Some(back.clone()),
                    back,
                },
            )
        }
        Err(f) => {
            tracing::warn!(connection = ?f.connection, error = %f.message, "web consent failed");
            let back = match &f.connection {
                Some(name) => format!("/admin/connections/{name}"),
                None => "/admin".into(),
            };
            (
                StatusCode::BAD_REQUEST,
                ResultPage {
                    title: "Not connected",
                    ok: false,
                    message: f.message,
                    hint: f.hint,
                    details: Vec::new(),
                    back,
                    refresh: None,
                },
            )
        }
    };
    let mut resp = render(status, &page)?;
    let clear = binding_cookie("", is_https(&parts, &state), 0).header_value();
    if let Ok(v) = HeaderValue::from_str(&clear) {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
    Ok(resp)
}

#[derive(Debug, Deserialize)]
pub struct TestForm {
    to: String,
}

/// "Send test e-mail": the same library function as `postern connection test`, each step shown.
pub async fn test(
    State(state): State<AppState>,
    Path(name): Path<String>,
    parts: Parts,
    CsrfForm { session, form }: CsrfForm<TestForm>,
) -> Result<Response, PageError> {
    let conn = state.store().connection(&name).await?;
    let to = match EmailAddress::parse(form.to.trim()) {
        Ok(to) => to,
        Err(e) => {
            let page = connection_page(
                &session,
                &parts,
                &state,
                &conn,
                Some(Flash::bad(format!("Send to: {e}"))),
                form.to.clone(),
                Vec::new(),
            );
            return render(StatusCode::UNPROCESSABLE_ENTITY, &page);
        }
    };
    let tokens = state.tokens().map_err(PageError::internal)?;
    let report = test_connection(
        state.store(),
        tokens,
        &state.settings().delivery,
        &conn,
        &to,
        Source::Api,
    )
    .await
    .map_err(PageError::internal)?;
    tracing::info!(connection = %name, by = %session.username(), passed = report.passed(), "test e-mail");
    let mut steps: Vec<StepView> = report
        .steps
        .iter()
        .map(|s| StepView {
            name: s.name.to_string(),
            ok: s.ok,
            detail: s.detail.clone(),
        })
        .collect();
    let flash = match (&report.failure, &report.message) {
        (None, Some(m)) => Flash::ok(format!(
            "Test e-mail sent to {to}: the provider accepted it (message {}). `sent` means accepted by the provider, not yet read.",
            m.id
        )),
        (None, None) => Flash::ok(format!("Test e-mail sent to {to}.")),
        (Some(f), _) => {
            if let Some(cause) = &f.likely_cause {
                steps.push(StepView {
                    name: "likely cause".into(),
                    ok: false,
                    detail: cause.clone(),
                });
            }
            Flash::bad(format!("The test failed at {}: {}", f.stage, f.error))
        }
    };
    // Re-read: a test may have changed the status (authorized, needs re-authorization).
    let conn = state.store().connection(&name).await?;
    let page = connection_page(
        &session,
        &parts,
        &state,
        &conn,
        Some(flash),
        to.to_string(),
        steps,
    );
    let mut resp = render(StatusCode::OK, &page)?;
    set_connection_csp(&mut resp, &conn);
    Ok(resp)
}

/// The connection page's Connect form ends in a redirect to the provider; CSP `form-action`
/// covers redirects after a submission, so the provider's origin is allowed on this page.
pub fn set_connection_csp(resp: &mut Response, conn: &crate::domain::Connection) {
    let origin = conn
        .settings
        .authorize_endpoint()
        .map(|u| u.origin().ascii_serialization())
        .filter(|o| o != "null");
    if let Some(origin) = origin
        && let Ok(v) = HeaderValue::from_str(&csp_with_form_target(&origin))
    {
        resp.headers_mut()
            .insert(header::CONTENT_SECURITY_POLICY, v);
    }
}
