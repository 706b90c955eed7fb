//! The HTTP API against a real server on 127.0.0.1:0: auth on every route, connections and API
//! keys end to end, problem documents, the OpenAPI document, and the api-key / admin commands.

use reqwest::Method;

use crate::helpers::TestHome;
use crate::http_helpers::{connection_json, json, spawn_http};

/// Every route with its path parameters filled in.
fn concrete(path: &str) -> String {
    path.replace("{name}", "nosuch").replace("{id}", "nosuch")
}

fn method(m: &str) -> Method {
    Method::from_bytes(m.to_ascii_uppercase().as_bytes()).unwrap()
}

#[tokio::test]
async fn every_api_route_requires_a_valid_key() {
    let app = spawn_http().await;
    let send = app.send_key().await;
    for r in postern::http::api_routes() {
        if r.path == "/api/v1/openapi.json" {
            continue;
        }
        let path = concrete(r.path);
        for key in [None, Some("pk_not-a-real-key"), Some("Basic abc")] {
            let resp = app
                .request(method(r.method), &path, key)
                .json(&serde_json::json!({}))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 401, "{} {path} with {key:?}", r.method);
            assert_eq!(resp.headers()["content-type"], "application/problem+json");
            assert!(resp.headers().contains_key("www-authenticate"));
            let (_, body, _) = json(resp).await;
            assert_eq!(body["status"], 401);
            assert!(
                body["detail"].as_str().unwrap().contains("API key"),
                "{body}"
            );
        }
        // Send keys only submit and read their own messages.
        if !r.path.starts_with("/api/v1/messages") {
            let resp = app
                .request(method(r.method), &path, Some(&send))
                .json(&serde_json::json!({}))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 403, "{} {path} with a send key", r.method);
            let (_, body, _) = json(resp).await;
            assert!(body["detail"].as_str().unwrap().contains("admin"), "{body}");
        }
    }
}

#[tokio::test]
async fn connections_round_trip_and_never_return_secrets() {
    let app = spawn_http().await;
    let key = app.admin_key().await;
    let secret = "Zx8Q~the-client-secret-value";
    let mut seen = String::new();

    let resp = app
        .request(Method::POST, "/api/v1/connections", Some(&key))
        .json(&connection_json("contoso", secret))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["location"], "/api/v1/connections/contoso");
    let (status, created, text) = json(resp).await;
    seen.push_str(&text);
    assert_eq!(status, 201, "{text}");
    assert_eq!(created["client_secret"], "set");
    assert_eq!(created["refresh_token"], "not set");
    assert_eq!(created["host"], "smtp.office365.com");
    assert_eq!(
        created["scope"],
        "https://outlook.office.com/SMTP.Send offline_access"
    );
    assert_eq!(created["status"], "new");

    // The same name again: 409.
    let (status, body, text) = json(
        app.request(Method::POST, "/api/v1/connections", Some(&key))
            .json(&connection_json("contoso", secret))
            .send()
            .await
            .unwrap(),
    )
    .await;
    seen.push_str(&text);
    assert_eq!(status, 409);
    assert!(body["detail"].as_str().unwrap().contains("already exists"));

    let (status, list, text) = json(
        app.request(Method::GET, "/api/v1/connections", Some(&key))
            .send()
            .await
            .unwrap(),
    )
    .await;
    seen.push_str(&text);
    assert_eq!(status, 200);
    assert_eq!(list.as_array().unwrap().len(), 1);

    // PATCH: only the given fields change; a refresh token may be written, never read.
    let (status, patched, text) = json(
        app.request(Method::PATCH, "/api/v1/connections/contoso", Some(&key))
            .json(&serde_json::json!({"port": 465, "tls": "implicit", "refresh_token": "0.AAAA-refresh"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    seen.push_str(&text);
    assert_eq!(status, 200, "{text}");
    assert_eq!(
        (patched["port"].as_u64(), patched["tls"].as_str()),
        (Some(465), Some("implicit"))
    );
    assert_eq!(patched["user"], "ops@contoso.com");
    assert_eq!(patched["refresh_token"], "set");

    // `""` removes a secret.
    let (status, patched, text) = json(
        app.request(Method::PATCH, "/api/v1/connections/contoso", Some(&key))
            .json(&serde_json::json!({"client_secret": ""}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    seen.push_str(&text);
    assert_eq!(status, 200);
    assert_eq!(patched["client_secret"], "not set");

    let (status, shown, text) = json(
        app.request(Method::GET, "/api/v1/connections/contoso", Some(&key))
            .send()
            .await
            .unwrap(),
    )
    .await;
    seen.push_str(&text);
    assert_eq!(status, 200);
    assert_eq!(shown["name"], "contoso");

    assert!(
        !seen.contains(secret),
        "a response contained the client secret"
    );
    assert!(
        !seen.contains("0.AAAA-refresh"),
        "a response contained the refresh token"
    );

    let resp = app
        .request(Method::DELETE, "/api/v1/connections/contoso", Some(&key))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    for m in [Method::GET, Method::DELETE, Method::PATCH] {
        let (status, body, _) = json(
            app.request(m.clone(), "/api/v1/connections/contoso", Some(&key))
                .json(&serde_json::json!({}))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, 404, "{m}");
        assert_eq!(body["type"], "about:blank");
        assert!(body["detail"].as_str().unwrap().contains("contoso"));
    }
}

#[tokio::test]
async fn wrong_fields_get_the_same_explanations_as_the_cli() {
    let app = spawn_http().await;
    let key = app.admin_key().await;
    let mut body = connection_json("Bad Name", "s");
    body["scope"] = "https://graph.microsoft.com/SMTP.Send offline_access".into();
    body["port"] = "99999".into();
    let resp = app
        .request(Method::POST, "/api/v1/connections", Some(&key))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["content-type"], "application/problem+json");
    let (status, problem, _) = json(resp).await;
    assert_eq!(status, 422);
    let fields: Vec<&str> = problem["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["name", "port", "scope"]);

    // The CLI's own words for the Graph scope mistake.
    let expected = postern::domain::ConnectionInput {
        name: Some("x".into()),
        provider: Some("microsoft".into()),
        user: Some("ops@contoso.com".into()),
        client_id: Some("1b2c3d4e-0000-1111-2222-333344445555".into()),
        scope: Some("https://graph.microsoft.com/SMTP.Send offline_access".into()),
        ..Default::default()
    }
    .validate()
    .unwrap_err()
    .0[0]
        .message
        .clone();
    let scope_message = problem["errors"][2]["message"].as_str().unwrap();
    assert_eq!(scope_message, expected);
    assert!(scope_message.contains("https://outlook.office.com/SMTP.Send"));

    // Malformed JSON, an unknown field, a wrong type: 400 naming the problem.
    for (raw, needle) in [
        ("{not json", "JSON"),
        (r#"{"name":"a","colour":"red"}"#, "colour"),
        (r#"{"name":"a","enabled":"maybe"}"#, "enabled"),
    ] {
        let (status, problem, _) = json(
            app.request(Method::POST, "/api/v1/connections", Some(&key))
                .header("content-type", "application/json")
                .body(raw)
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, 400, "{raw}");
        assert!(
            problem["detail"].as_str().unwrap().contains(needle),
            "{problem}"
        );
    }
    let (status, problem, _) = json(
        app.request(Method::POST, "/api/v1/connections", Some(&key))
            .body("name=x")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 400);
    assert!(problem["detail"].as_str().unwrap().contains("Content-Type"));
}

#[tokio::test]
async fn api_keys_are_shown_once_and_stop_working_when_revoked() {
    let app = spawn_http().await;
    let admin = app.admin_key().await;
    let (status, created, _) = json(
        app.request(Method::POST, "/api/v1/api-keys", Some(&admin))
            .json(&serde_json::json!({"name": "billing", "role": "send"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 201);
    let new_key = created["key"].as_str().unwrap().to_string();
    assert!(new_key.starts_with(created["prefix"].as_str().unwrap()));

    // The new key authenticates (a send key: 403 on admin routes, not 401).
    let resp = app
        .request(Method::GET, "/api/v1/api-keys", Some(&new_key))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);

    let (status, list, text) = json(
        app.request(Method::GET, "/api/v1/api-keys", Some(&admin))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(list.as_array().unwrap().len(), 2);
    assert!(!text.contains(&new_key[3..]), "the list shows a key");

    let (status, _, _) = json(
        app.request(Method::POST, "/api/v1/api-keys", Some(&admin))
            .json(&serde_json::json!({"name": "billing", "role": "admin"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 409);
    let (status, problem, _) = json(
        app.request(Method::POST, "/api/v1/api-keys", Some(&admin))
            .json(&serde_json::json!({"name": "x", "role": "root"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        problem["detail"].as_str().unwrap().contains("role"),
        "{problem}"
    );

    let resp = app
        .request(Method::DELETE, "/api/v1/api-keys/billing", Some(&admin))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    let resp = app
        .request(Method::GET, "/api/v1/api-keys", Some(&new_key))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let resp = app
        .request(Method::DELETE, "/api/v1/api-keys/billing", Some(&admin))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
}

#[tokio::test]
async fn the_openapi_document_lists_every_route_and_each_exists() {
    let app = spawn_http().await;
    let resp = app
        .request(Method::GET, "/api/v1/openapi.json", None)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/json");
    let (_, doc, _) = json(resp).await;
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    let mut documented = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for m in item.as_object().unwrap().keys() {
            documented.push((m.clone(), path.clone()));
        }
    }
    documented.sort();
    let mut served: Vec<_> = postern::http::api_routes()
        .iter()
        .map(|r| (r.method.to_string(), r.path.to_string()))
        .collect();
    served.sort();
    assert_eq!(documented, served);
    // And the real server answers each documented route (not 404/405 from the router).
    for (m, path) in &documented {
        let resp = app
            .request(method(m), &concrete(path), None)
            .send()
            .await
            .unwrap();
        assert!(
            resp.status() != 405 && (resp.status() != 404 || path.contains('{')),
            "{m} {path}: {}",
            resp.status()
        );
    }
    assert!(doc["components"]["securitySchemes"]["api_key"].is_object());
}

#[tokio::test]
async fn responses_carry_security_headers_and_a_request_id() {
    let app = spawn_http().await;
    let resp = app
        .request(Method::GET, "/healthz", None)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let h = resp.headers();
    assert!(
        h["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("default-src 'none'")
    );
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert_eq!(h["x-frame-options"], "DENY");
    assert_eq!(h["referrer-policy"], "no-referrer");
    assert_eq!(h["x-request-id"].to_str().unwrap().len(), 36);
    // A client's own id is kept.
    let resp = app
        .request(Method::GET, "/healthz", None)
        .header("x-request-id", "abc-123")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["x-request-id"], "abc-123");
    // Too large a body for a form or JSON route: 413.
    let key = app.admin_key().await;
    let resp = app
        .request(Method::POST, "/api/v1/connections", Some(&key))
        .header("content-type", "application/json")
        .body(vec![b' '; 1024 * 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);
}

#[test]
fn api_key_and_admin_commands() {
    let home = TestHome::new();
    let run = home
        .run(&["api-key", "create", "billing", "--role", "send"])
        .ok();
    let key = run.stdout.trim().to_string();
    assert!(key.starts_with("pk_"), "{}", run.stdout);
    assert!(run.stderr.contains("only this once"), "{}", run.stderr);
    let list = home.run(&["api-key", "list"]).ok();
    assert!(list.stdout.contains("billing") && list.stdout.contains("send"));
    assert!(!list.stdout.contains(&key[3..]));
    let json = home.run(&["api-key", "list", "--json"]).ok();
    let v: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(v[0]["name"], "billing");

    let dup = home.run(&["api-key", "create", "billing", "--role", "admin"]);
    assert_eq!(dup.code, 2, "{}", dup.all());
    let bad = home.run(&["api-key", "create", "x", "--role", "root"]);
    assert_eq!(bad.code, 2);
    assert!(bad.stderr.contains("send"), "{}", bad.stderr);
    home.run(&["api-key", "revoke", "billing"]).ok();
    let again = home.run(&["api-key", "revoke", "billing"]);
    assert_eq!(again.code, 2);
    assert!(again.stderr.contains("api-key list"), "{}", again.stderr);

    let pw = home.file("pw", "a long admin password\n");
    let run = home
        .run(&["admin", "create", "alice", "--password-file", &pw])
        .ok();
    assert!(run.stdout.contains("alice"));
    let short = home.file("short", "short\n");
    let run = home.run(&["admin", "create", "bob", "--password-file", &short]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("12 characters"), "{}", run.stderr);
    // No terminal, no file: a usage error that says what to do.
    let run = home.run(&["admin", "create", "carol"]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("--password-file"), "{}", run.stderr);
    assert!(!crate::helpers::contains_bytes(
        &home.data_bytes(),
        "a long admin password"
    ));
}
