//! HTTP plumbing: the axum router and the authorize, devicecode and introspect handlers.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use super::error::OAuthError;
use super::grants::{self, parse_form};
use super::tokens::{CodeGrant, parse_scope};
use super::{Count, Shared, lock};
use crate::util::{now_unix, random_b64, random_guid};

type St = State<Arc<Shared>>;

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/{tenant}/oauth2/v2.0/authorize", get(authorize))
        .route("/{tenant}/oauth2/v2.0/token", post(token))
        .route("/{tenant}/oauth2/v2.0/devicecode", post(devicecode))
        .route("/introspect", get(introspect).post(introspect))
        .route("/devicelogin", get(devicelogin))
        .with_state(shared)
}

/// Latency, then the "down" switch; `Some` is the 503 to send instead of serving.
async fn gate(shared: &Shared) -> Option<Response> {
    let latency = shared.latency_us.load(Ordering::Relaxed);
    if latency > 0 {
        tokio::time::sleep(std::time::Duration::from_micros(latency)).await;
    }
    if shared.down.load(Ordering::Relaxed) {
        let mut resp = (StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable").into_response();
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        return Some(resp);
    }
    None
}

async fn token(
    State(shared): St,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(resp) = gate(&shared).await {
        return resp;
    }
    grants::token(&shared, &tenant, &headers, &body)
}

fn redirect_to(location: &str) -> Response {
    let mut resp = StatusCode::FOUND.into_response();
    if let Ok(v) = HeaderValue::from_str(location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp
}

/// `redirect_uri` with extra query pairs appended (keeping any query it already has).
fn with_query(redirect_uri: &str, pairs: &[(&str, &str)]) -> Option<String> {
    let mut url = url::Url::parse(redirect_uri).ok()?;
    {
        let mut q = url.query_pairs_mut();
        for (k, v) in pairs {
            q.append_pair(k, v);
        }
    }
    Some(url.into())
}

/// Auto-consent: validate like Entra, then 302 to the redirect URI with a code (or an error).
async fn authorize(
    State(shared): St,
    Path(tenant): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    if let Some(resp) = gate(&shared).await {
        return resp;
    }
    shared.counters.bump(Count::Authorize);
    let q = parse_form(query.unwrap_or_default().as_bytes());
    let get = |k: &str| q.get(k).map(String::as_str).unwrap_or("");
    let client_id = get("client_id");
    let Some(client) = shared.config.client(client_id) else {
        return (
            StatusCode::BAD_REQUEST,
            format!(
                "AADSTS700016: Application with identifier '{client_id}' was not found in the \
                 directory 'Fake Tenant'."
            ),
        )
            .into_response();
    };
    let redirect_uri = get("redirect_uri");
    if url::Url::parse(redirect_uri).is_err() {
        return (
            StatusCode::BAD_REQUEST,
            "AADSTS900144: missing or invalid 'redirect_uri'.",
        )
            .into_response();
    }
    let state = get("state");
    let fail = |error: &str, description: String| {
        let mut pairs = vec![
            ("error", error),
            ("error_description", description.as_str()),
        ];
        if !state.is_empty() {
            pairs.push(("state", state));
        }
        match with_query(redirect_uri, &pairs) {
            Some(loc) => redirect_to(&loc),
            None => (StatusCode::BAD_REQUEST, description.clone()).into_response(),
        }
    };
    if !client.redirects.allows(redirect_uri) {
        return fail(
            "invalid_request",
            format!(
                "AADSTS50011: The redirect URI '{redirect_uri}' specified in the request does not \
                 match the redirect URIs configured for the application '{client_id}'."
            ),
        );
    }
    if get("response_type") != "code" {
        return fail(
            "unsupported_response_type",
            "AADSTS700054: response_type 'code' is required for this flow.".to_owned(),
        );
    }
    let challenge = get("code_challenge");
    if challenge.is_empty() || get("code_challenge_method") != "S256" {
        return fail(
            "invalid_request",
            "AADSTS9002325: Proof Key for Code Exchange is required: send code_challenge with \
             code_challenge_method=S256."
                .to_owned(),
        );
    }
    let scope = get("scope");
    if let Err(e) = parse_scope(scope) {
        return fail(&e.error, e.description);
    }
    if shared.consent_denied.load(Ordering::Relaxed) {
        return fail(
            "access_denied",
            "AADSTS65004: User declined to consent to access the app.".to_owned(),
        );
    }
    let user = match get("login_hint") {
        "" => shared.config.default_user.clone(),
        hint => hint.to_owned(),
    };
    let code = format!("1.AXfake.{}", random_b64(96));
    lock(&shared.grants).codes.insert(
        code.clone(),
        CodeGrant {
            client_id: client_id.to_owned(),
            redirect_uri: redirect_uri.to_owned(),
            scope: scope.to_owned(),
            challenge: challenge.to_owned(),
            user,
            tid: shared.tid_for(&tenant),
            expires_at: now_unix() + 600,
            redeemed: false,
        },
    );
    let session = random_guid();
    let mut pairs = vec![("code", code.as_str())];
    if !state.is_empty() {
        pairs.push(("state", state));
    }
    pairs.push(("session_state", session.as_str()));
    match with_query(redirect_uri, &pairs) {
        Some(loc) => redirect_to(&loc),
        None => (StatusCode::BAD_REQUEST, "invalid redirect_uri").into_response(),
    }
}

/// RFC 8628 device authorization request.
async fn devicecode(State(shared): St, Path(tenant): Path<String>, body: Bytes) -> Response {
    if let Some(resp) = gate(&shared).await {
        return resp;
    }
    shared.counters.bump(Count::Devicecode);
    let form = parse_form(&body);
    let client_id = form.get("client_id").map(String::as_str).unwrap_or("");
    if shared.config.client(client_id).is_none() {
        return OAuthError::new(
            400,
            "unauthorized_client",
            700016,
            format!("AADSTS700016: Application with identifier '{client_id}' was not found."),
        )
        .into_response();
    }
    let scope = form.get("scope").map(String::as_str).unwrap_or("");
    if let Err(e) = parse_scope(scope) {
        return e.into_response();
    }
    let cfg = &shared.config;
    let (device_code, user_code) = lock(&shared.devices).start(
        client_id,
        scope,
        &shared.tid_for(&tenant),
        cfg.device_expires_in,
    );
    let uri = format!("{}/devicelogin", shared.base_url);
    axum::Json(serde_json::json!({
        "device_code": device_code,
        "user_code": user_code,
        "verification_uri": uri,
        "expires_in": cfg.device_expires_in,
        "interval": cfg.device_interval,
        "message": format!(
            "To sign in, use a web browser to open the page {uri} and enter the code {user_code} \
             to authenticate."
        ),
    }))
    .into_response()
}

/// A stand-in for microsoft.com/devicelogin, so the printed URL leads somewhere.
async fn devicelogin() -> &'static str {
    "Fake device login: approve with FakeIdp::approve_device(user_code).\n"
}

/// RFC 7662 introspection; the token comes from the form, the query or a Bearer header
/// (Dovecot's introspection_mode = post, get or auth).
async fn introspect(
    State(shared): St,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(resp) = gate(&shared).await {
        return resp;
    }
    shared.counters.bump(Count::Introspect);
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned);
    let token = parse_form(&body)
        .remove("token")
        .or_else(|| parse_form(query.unwrap_or_default().as_bytes()).remove("token"))
        .or(bearer)
        .unwrap_or_default();
    let body = match shared.lookup_access(&token) {
        Some(info) => serde_json::json!({
            "active": true,
            "username": info.user,
            "email": info.user,
            "sub": info.user,
            "scope": info.scopes.join(" "),
            "client_id": info.client_id,
            "aud": info.aud,
            "token_type": "Bearer",
            "exp": info.exp,
        }),
        None => serde_json::json!({"active": false}),
    };
    axum::Json(body).into_response()
}
