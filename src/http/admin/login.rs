//! Logging in and out. The login form has no session yet, so its CSRF token is a double-submit
//! cookie: a random value both in a SameSite=Strict cookie and in the form.

use std::net::{IpAddr, SocketAddr};

use askama::Template;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use secrecy::SecretString;
use serde::Deserialize;

use super::{Layout, PageError, render};
use crate::http::AppState;
use crate::http::auth::{
    AdminSession, Cookie, CsrfForm, is_https, login_cookie, logout_cookie, read_cookie, safe_next,
};
use crate::http::state::SESSION_LIFETIME;
use crate::store::{AccessError, StoreError, new_token};

const LOGIN_CSRF_COOKIE: &str = "postern_login_csrf";

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    layout: Layout,
    csrf: String,
    next: String,
    username: String,
    error: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct NextQuery {
    next: Option<String>,
}

fn csrf_cookie(value: &str, secure: bool) -> Cookie {
    Cookie {
        name: LOGIN_CSRF_COOKIE.into(),
        value: value.into(),
        secure,
        same_site: "Strict",
        path: "/admin/login",
        max_age: Some(3600),
    }
}

fn login_page(
    status: StatusCode,
    secure: bool,
    next: &str,
    username: &str,
    error: Option<String>,
) -> Result<Response, PageError> {
    let token = new_token();
    let page = LoginPage {
        layout: Layout {
            title: "Log in".into(),
            ..Layout::default()
        },
        csrf: token.clone(),
        next: safe_next(next).to_string(),
        username: username.to_string(),
        error,
    };
    let mut resp = render(status, &page)?;
    if let Ok(v) = csrf_cookie(&token, secure).header_value().parse() {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
    Ok(resp)
}

pub async fn form(
    State(state): State<AppState>,
    Query(q): Query<NextQuery>,
    parts: Parts,
) -> Result<Response, PageError> {
    let next = q.next.as_deref().unwrap_or("/admin");
    if AdminSession::from_parts(&parts, &state)
        .await
        .map_err(PageError::Internal)?
        .is_some()
    {
        return Ok(Redirect::to(safe_next(next)).into_response());
    }
    login_page(StatusCode::OK, is_https(&parts, &state), next, "", None)
}

#[derive(Deserialize)]
pub struct LoginForm {
    csrf: String,
    username: String,
    password: String,
    next: Option<String>,
}

impl std::fmt::Debug for LoginForm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginForm")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// The client's address, when the server was started with connect info. Without it only the
/// user name is limited (one shared "unknown" key would let anyone lock everybody out).
fn client_ip(parts: &Parts) -> Option<IpAddr> {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
}

/// Sets `Retry-After` on a page.
fn retry_after(mut resp: Response, seconds: u64) -> Response {
    if let Ok(v) = seconds.to_string().parse() {
        resp.headers_mut().insert(header::RETRY_AFTER, v);
    }
    resp
}

pub async fn submit(
    State(state): State<AppState>,
    parts: Parts,
    axum::Form(form): axum::Form<LoginForm>,
) -> Result<Response, PageError> {
    let secure = is_https(&parts, &state);
    let next = form.next.as_deref().unwrap_or("/admin");
    let cookie = read_cookie(&parts.headers, LOGIN_CSRF_COOKIE).unwrap_or_default();
    if cookie.is_empty()
        || !crate::http::auth::constant_time_eq(cookie.as_bytes(), form.csrf.as_bytes())
    {
        return Err(PageError::Csrf);
    }
    // Failures count per client address: counting them per user name as well would let
    // anyone lock the admin out by guessing wrong on purpose. Guessing from many addresses
    // at once is bounded by the password-check pool instead.
    let ip = client_ip(&parts);
    let keys = vec![match ip {
        Some(ip) => format!("ip:{}", crate::store::password_check::client_block(ip)),
        None => format!("user:{}", form.username.trim().to_lowercase()),
    }];
    if let Err(wait) = state.limiter().check(&keys) {
        tracing::warn!(user = %form.username.trim(), "login refused: too many failures");
        let resp = login_page(
            StatusCode::TOO_MANY_REQUESTS,
            secure,
            next,
            &form.username,
            Some(format!(
                "Too many failed logins. Try again in {} minutes.",
                wait.div_ceil(60)
            )),
        )?;
        return Ok(retry_after(resp, wait));
    }
    let password = SecretString::from(form.password);
    let admin = match state
        .store()
        .verify_admin(&form.username, &password, ip)
        .await
    {
        Err(AccessError::Store(StoreError::Busy(_))) => {
            // Not a failure of this user: nothing is counted against them. (The pool logs
            // refusals, once per storm rather than once per attempt.)
            tracing::debug!("login refused: too many password checks at once");
            let resp = login_page(
                StatusCode::SERVICE_UNAVAILABLE,
                secure,
                next,
                &form.username,
                Some("The server is busy checking other logins. Try again in a moment.".into()),
            )?;
            return Ok(retry_after(resp, 1));
        }
        other => other?,
    };
    let Some(admin) = admin else {
        state.limiter().failed(&keys);
        tracing::warn!(user = %form.username.trim(), "login failed");
        return login_page(
            StatusCode::UNAUTHORIZED,
            secure,
            next,
            &form.username,
            Some("Wrong user name or password.".into()),
        );
    };
    state.limiter().succeeded(&keys);
    let session = state
        .store()
        .create_session(admin.id, SESSION_LIFETIME)
        .await?;
    tracing::info!(user = %admin.username, "admin logged in");
    let mut headers = HeaderMap::new();
    for c in [
        login_cookie(&session.token, secure),
        Cookie {
            max_age: Some(0),
            value: String::new(),
            ..csrf_cookie("", secure)
        },
    ] {
        if let Ok(v) = c.header_value().parse() {
            headers.append(header::SET_COOKIE, v);
        }
    }
    Ok((headers, Redirect::to(safe_next(next))).into_response())
}

#[derive(Debug, Deserialize)]
pub struct Empty {}

pub async fn logout(
    State(state): State<AppState>,
    parts: Parts,
    CsrfForm { session, .. }: CsrfForm<Empty>,
) -> Result<Response, PageError> {
    state.store().delete_session(&session.token).await?;
    tracing::info!(user = %session.username(), "admin logged out");
    let cookie = logout_cookie(is_https(&parts, &state)).header_value();
    Ok(([(header::SET_COOKIE, cookie)], Redirect::to("/admin/login")).into_response())
}
