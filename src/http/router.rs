//! The one router: API, admin UI, OAuth callback and health, with the layers every request
//! passes through (request id, tracing, timeout, body limit, security headers).

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{Request, StatusCode};
use axum::response::Redirect;
use axum::routing::get;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use super::state::SMALL_BODY_LIMIT;
use super::{AppState, admin, api, headers};

/// Builds the HTTP service. Serve it with `into_make_service_with_connect_info::<SocketAddr>()`
/// so login rate limiting can tell clients apart.
pub fn router(state: AppState) -> Router {
    let timeout = state.request_timeout();
    let message_limit = state.message_body_limit();
    Router::new()
        .route("/healthz", get(healthz))
        .route("/", get(|| async { Redirect::to("/admin") }))
        .merge(admin::routes())
        .layer(DefaultBodyLimit::max(SMALL_BODY_LIMIT))
        // Merged after the small limit so the submission route keeps its own, larger one.
        .merge(api::routes(message_limit))
        .layer(axum::middleware::from_fn(headers::security_headers))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            timeout,
        ))
        .layer(
            TraceLayer::new_for_http().make_span_with(|req: &Request<_>| {
                let id = req
                    .headers()
                    .get("x-request-id")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("-");
                // The path only: query strings may carry OAuth codes.
                tracing::info_span!(
                    "http",
                    method = %req.method(),
                    path = %req.uri().path(),
                    request_id = %id,
                    api_key = tracing::field::Empty,
                )
            }),
        )
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        .with_state(state)
}

/// `ok` and the store's backend once the store answers; `503` when it does not (a PostgreSQL
/// server out of reach), so a load balancer sends requests to another instance.
async fn healthz(
    axum::extract::State(state): axum::extract::State<AppState>,
) -> (StatusCode, String) {
    let store = state.store();
    let backend = store.backend().name();
    match store.ping().await {
        Ok(()) => (StatusCode::OK, format!("ok\nstore: {backend} reachable\n")),
        Err(e) => {
            tracing::warn!(error = %e, "healthz: the store does not answer");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("unavailable\nstore: {backend} unreachable\n"),
            )
        }
    }
}
