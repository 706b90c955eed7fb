//! The JSON API, one file per resource. The route table here is the single source for the
//! router and for the check that the OpenAPI document lists every route.

pub mod connections;
mod json;
pub mod keys;
pub mod messages;
pub mod relay_users;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::handler::Handler;
use axum::routing::{MethodFilter, on};

use super::AppState;
use super::state::SMALL_BODY_LIMIT;

/// One API route: its method and path as the OpenAPI document names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiRoute {
    pub method: &'static str,
    pub path: &'static str,
}

struct Entry {
    route: ApiRoute,
    add: Box<dyn FnOnce(Router<AppState>) -> Router<AppState>>,
}

fn entry<H, T>(method: &'static str, path: &'static str, handler: H) -> Entry
where
    H: Handler<T, AppState>,
    T: 'static,
{
    let filter = match method {
        "get" => MethodFilter::GET,
        "post" => MethodFilter::POST,
        "patch" => MethodFilter::PATCH,
        "put" => MethodFilter::PUT,
        _ => MethodFilter::DELETE,
    };
    Entry {
        route: ApiRoute { method, path },
        add: Box::new(move |r: Router<AppState>| r.route(path, on(filter, handler))),
    }
}

fn table() -> Vec<Entry> {
    vec![
        entry("get", "/api/v1/openapi.json", super::openapi::serve),
        entry("get", "/api/v1/connections", connections::list),
        entry("post", "/api/v1/connections", connections::create),
        entry("get", "/api/v1/connections/{name}", connections::show),
        entry("patch", "/api/v1/connections/{name}", connections::update),
        entry("delete", "/api/v1/connections/{name}", connections::remove),
        entry(
            "post",
            "/api/v1/connections/{name}/authorize",
            connections::authorize,
        ),
        entry("post", "/api/v1/connections/{name}/test", connections::test),
        entry("post", "/api/v1/messages", messages::submit),
        entry("get", "/api/v1/messages", messages::list),
        entry("get", "/api/v1/messages/{id}", messages::show),
        entry("post", "/api/v1/messages/{id}/retry", messages::retry),
        entry("delete", "/api/v1/messages/{id}", messages::remove),
        entry("get", "/api/v1/relay-users", relay_users::list),
        entry("post", "/api/v1/relay-users", relay_users::create),
        entry("delete", "/api/v1/relay-users/{name}", relay_users::remove),
        entry(
            "post",
            "/api/v1/relay-users/{name}/reset-password",
            relay_users::reset_password,
        ),
        entry("get", "/api/v1/api-keys", keys::list),
        entry("post", "/api/v1/api-keys", keys::create),
        entry("delete", "/api/v1/api-keys/{name}", keys::revoke),
    ]
}

/// Every API route, as served.
pub fn api_routes() -> Vec<ApiRoute> {
    table().into_iter().map(|e| e.route).collect()
}

/// The API routes, ready to merge into the main router. Message submission gets its own body
/// limit (a whole message, base64 in JSON); everything else keeps the small default.
pub(crate) fn routes(message_body_limit: usize) -> Router<AppState> {
    let (submit, rest): (Vec<Entry>, Vec<Entry>) = table()
        .into_iter()
        .partition(|e| e.route.method == "post" && e.route.path == "/api/v1/messages");
    let big = submit
        .into_iter()
        .fold(Router::new(), |router, e| (e.add)(router))
        .layer(DefaultBodyLimit::max(message_body_limit));
    rest.into_iter()
        .fold(Router::new(), |router, e| (e.add)(router))
        .layer(DefaultBodyLimit::max(SMALL_BODY_LIMIT))
        .merge(big)
}
