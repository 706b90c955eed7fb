//! The OpenAPI 3.1 document of the JSON API, generated from the handlers' annotations and served
//! at `/api/v1/openapi.json` (built in, no downloads).

use axum::response::{IntoResponse, Response};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::api::{connections, keys, messages, relay_users};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Postern API",
        description = "Queue e-mail for delivery through SMTP OAuth 2.0 connections, and manage \
            those connections. Authenticate with `Authorization: Bearer pk_...` (create a key with \
            `postern api-key create NAME --role send|admin`). Errors are RFC 9457 problem documents."
    ),
    paths(
        serve,
        connections::list, connections::create, connections::show, connections::update,
        connections::remove, connections::authorize, connections::test,
        messages::submit, messages::list, messages::show, messages::retry, messages::remove,
        relay_users::list, relay_users::create, relay_users::remove, relay_users::reset_password,
        keys::list, keys::create, keys::revoke,
    ),
    components(schemas(super::error::Problem, super::error::FieldProblem)),
    modifiers(&BearerAuth),
    tags(
        (name = "messages", description = "Submit mail and read the sent-mail log (send keys: their own messages)"),
        (name = "connections", description = "SMTP OAuth connections (admin keys)"),
        (name = "relay-users", description = "Logins for legacy apps using the SMTP relay (admin keys)"),
        (name = "api-keys", description = "API keys (admin keys)"),
        (name = "meta", description = "This document"),
    )
)]
#[derive(Debug)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("An API key: `pk_...`"))
                    .build(),
            ),
        );
    }
}

/// The document as JSON text.
pub fn document() -> String {
    ApiDoc::openapi()
        .to_pretty_json()
        .unwrap_or_else(|_| "{}".into())
}

#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "meta",
    responses((status = 200, description = "This OpenAPI 3.1 document", content_type = "application/json")))]
pub async fn serve() -> Response {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        document(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_lists_exactly_the_served_routes() {
        let doc: serde_json::Value = serde_json::from_str(&document()).unwrap();
        assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
        let mut documented = Vec::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for method in item.as_object().unwrap().keys() {
                documented.push((method.clone(), path.clone()));
            }
        }
        let mut served: Vec<_> = super::super::api_routes()
            .into_iter()
            .map(|r| (r.method.to_string(), r.path.to_string()))
            .collect();
        documented.sort();
        served.sort();
        assert_eq!(documented, served);
    }

    #[test]
    fn the_connection_schema_matches_what_is_served() {
        let doc: serde_json::Value = serde_json::from_str(&document()).unwrap();
        let props = doc["components"]["schemas"]["Connection"]["properties"]
            .as_object()
            .unwrap();
        let mut documented: Vec<&str> = props.keys().map(String::as_str).collect();
        documented.retain(|k| *k != "notices");
        documented.sort();
        let (settings, _) = crate::domain::ConnectionInput {
            name: Some("c".into()),
            provider: Some("microsoft".into()),
            user: Some("a@b.example".into()),
            client_id: Some("1b2c3d4e-0000-1111-2222-333344445555".into()),
            ..Default::default()
        }
        .validate()
        .unwrap();
        let conn = crate::domain::Connection {
            id: 1,
            settings,
            status: crate::domain::ConnectionStatus::New,
            client_secret_set: false,
            refresh_token_set: false,
            expiry: Default::default(),
            managed_by_file: false,
            created_at: chrono::Utc::now(),
            updated_at: chrono::Utc::now(),
        };
        let view = serde_json::to_value(crate::domain::ConnectionView::from(&conn)).unwrap();
        let mut served: Vec<&str> = view
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        served.sort();
        assert_eq!(documented, served);
    }
}
