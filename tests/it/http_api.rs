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
    assert_eq!(list["connections"].as_array().unwrap().len(), 1);

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
    let h = resp.headers().clone();
    let backend = if crate::helpers::fresh_store_url().is_some() {
        "postgres"
    } else {
        "sqlite"
    };
    assert_eq!(
        resp.text().await.unwrap(),
        format!("ok\nstore: {backend} reachable\n"),
        "health names the store it reached"
    );
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

async fn create_connection(app: &crate::http_helpers::HttpApp, key: &str, name: &str) {
    let resp = app
        .request(Method::POST, "/api/v1/connections", Some(key))
        .json(&connection_json(name, "secret"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
}

#[tokio::test]
async fn messages_are_queued_once_per_idempotency_key() {
    let app = spawn_http().await;
    let admin = app.admin_key().await;
    let send = app.send_key().await;
    create_connection(&app, &admin, "contoso").await;
    let body = serde_json::json!({
        "to": ["alice@example.com"],
        "cc": ["carol@example.com"],
        "bcc": ["bob@example.com"],
        "reply_to": ["help@contoso.com"],
        "subject": "Invoice 42",
        "text": "Please find it attached.",
        "attachments": [{"filename": "invoice.pdf", "content_type": "application/pdf", "content": "JVBERi0xLjQK"}],
        "headers": {"In-Reply-To": "<1@contoso.com>"}
    });
    let submit = |key: String| {
        app.request(Method::POST, "/api/v1/messages", Some(&key))
            .header("idempotency-key", "order-42")
            .json(&body)
            .send()
    };
    let resp = submit(send.clone()).await.unwrap();
    assert_eq!(resp.status(), 202);
    let location = resp.headers()["location"].to_str().unwrap().to_string();
    let (_, first, _) = json(resp).await;
    assert_eq!(first["duplicate"], false);
    let id = first["id"].as_str().unwrap().to_string();
    assert_eq!(location, format!("/api/v1/messages/{id}"));
    // The retry after a lost response: the same id, nothing new queued.
    let (status, again, _) = json(submit(send.clone()).await.unwrap()).await;
    assert_eq!(status, 202);
    assert_eq!(
        (again["id"].as_str(), again["duplicate"].as_bool()),
        (Some(id.as_str()), Some(true))
    );
    // The same key from another API key is another message.
    let (_, other, _) = json(submit(admin.clone()).await.unwrap()).await;
    assert_ne!(other["id"], first["id"]);

    let stored = app.store.message_body(&id).await.unwrap().unwrap();
    let text = String::from_utf8_lossy(&stored);
    assert!(text.contains("Subject: Invoice 42"));
    assert!(text.contains("Reply-To: help@contoso.com"));
    assert!(text.contains("In-Reply-To: <1@contoso.com>"));
    assert!(text.contains("invoice.pdf"));
    assert!(
        !text.contains("bob@example.com"),
        "Bcc must stay out of the message"
    );

    let (status, detail, _) = json(
        app.request(Method::GET, &location, Some(&send))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(detail["status"], "queued");
    assert_eq!(detail["from"], "ops@contoso.com");
    assert_eq!(detail["submitter"], "api-key:test-send");
    let rcpts: Vec<&str> = detail["recipients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    assert_eq!(
        rcpts,
        ["alice@example.com", "carol@example.com", "bob@example.com"]
    );

    // The send key sees only its own message; the admin key sees both.
    let (_, mine, _) = json(
        app.request(Method::GET, "/api/v1/messages", Some(&send))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(mine["messages"].as_array().unwrap().len(), 1);
    let (_, all, _) = json(
        app.request(Method::GET, "/api/v1/messages", Some(&admin))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(all["messages"].as_array().unwrap().len(), 2);
    let other_id = other["id"].as_str().unwrap();
    let resp = app
        .request(
            Method::GET,
            &format!("/api/v1/messages/{other_id}"),
            Some(&send),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        404,
        "another key's message does not exist for a send key"
    );
    // Retry and delete are for admin keys.
    let resp = app
        .request(Method::DELETE, &location, Some(&send))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    let resp = app
        .request(Method::DELETE, &location, Some(&admin))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    let resp = app
        .request(Method::DELETE, &location, Some(&admin))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    let resp = app
        .request(
            Method::POST,
            &format!("/api/v1/messages/{other_id}/retry"),
            Some(&admin),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
}

#[tokio::test]
async fn raw_messages_take_their_envelope_from_parameters_or_headers() {
    let app = spawn_http().await;
    let admin = app.admin_key().await;
    create_connection(&app, &admin, "contoso").await;
    let raw = "From: ops@contoso.com\r\nTo: alice@example.com\r\nBcc: hidden@example.com\r\nSubject: Raw\r\n\r\nHello.\r\n";
    let (status, accepted, text) = json(
        app.request(
            Method::POST,
            "/api/v1/messages?connection=contoso",
            Some(&admin),
        )
        .header("content-type", "message/rfc822")
        .body(raw)
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(status, 202, "{text}");
    let id = accepted["id"].as_str().unwrap();
    let detail = app.store.message_detail(id).await.unwrap().unwrap();
    assert_eq!(
        detail.summary.recipients,
        ["alice@example.com", "hidden@example.com"]
    );
    let body = app.store.message_body(id).await.unwrap().unwrap();
    assert!(!String::from_utf8_lossy(&body).contains("hidden@example.com"));

    let (status, _, _) = json(
        app.request(
            Method::POST,
            "/api/v1/messages?to=x@example.com,y@example.com&from=ops@contoso.com",
            Some(&admin),
        )
        .header("content-type", "message/rfc822")
        .body(raw)
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(status, 202);

    // Wrong inputs: each says what to fix.
    let cases: Vec<(&str, &str, String, u16, &str)> = vec![
        ("/api/v1/messages", "text/plain", "hi".into(), 415, "message/rfc822"),
        ("/api/v1/messages?connection=nosuch", "message/rfc822", raw.into(), 422, "nosuch"),
        ("/api/v1/messages", "application/json", r#"{"to":["not-an-address"],"text":"x"}"#.into(), 422, "to"),
        ("/api/v1/messages", "application/json", r#"{"to":["a@example.com"]}"#.into(), 422, "body"),
        ("/api/v1/messages", "application/json", r#"{"to":["a@example.com"],"text":"x","headers":{"From":"evil@x.com"}}"#.into(), 422, "may not be set"),
        ("/api/v1/messages", "application/json", r#"{"to":["a@example.com"],"text":"x","attachments":[{"filename":"a","content":"%%%"}]}"#.into(), 422, "base64"),
        ("/api/v1/messages", "application/json", r#"{"to":"a@example.com"}"#.into(), 400, "to"),
    ];
    for (path, ct, body, want, needle) in cases {
        let (status, problem, text) = json(
            app.request(Method::POST, path, Some(&admin))
                .header("content-type", ct)
                .body(body.clone())
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, want, "{body}: {text}");
        assert!(text.contains(needle), "{body}: {problem}");
    }
    // A message larger than the small limit of other routes still goes in.
    let big = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        vec![7u8; 600 * 1024],
    );
    let (status, _, text) = json(
        app.request(Method::POST, "/api/v1/messages", Some(&admin))
            .json(&serde_json::json!({"to": ["a@example.com"], "text": "x",
                "attachments": [{"filename": "big.bin", "content": big}]}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 202, "{text}");
    // A second connection: the API must be told which one.
    create_connection(&app, &admin, "fabrikam").await;
    let (status, problem, _) = json(
        app.request(Method::POST, "/api/v1/messages", Some(&admin))
            .json(&serde_json::json!({"to": ["a@example.com"], "text": "x"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 422);
    assert_eq!(problem["errors"][0]["field"], "connection");
}

#[tokio::test]
async fn the_message_list_filters_and_pages() {
    let app = spawn_http().await;
    let admin = app.admin_key().await;
    create_connection(&app, &admin, "contoso").await;
    for i in 0..5 {
        let resp = app
            .request(Method::POST, "/api/v1/messages", Some(&admin))
            .json(&serde_json::json!({"to": [format!("r{i}@example.com")], "text": "x", "subject": format!("n{i}")}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 202);
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..10 {
        let path = match &cursor {
            Some(c) => format!("/api/v1/messages?limit=2&cursor={c}"),
            None => "/api/v1/messages?limit=2".to_string(),
        };
        let (status, page, _) = json(
            app.request(Method::GET, &path, Some(&admin))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, 200);
        for m in page["messages"].as_array().unwrap() {
            seen.push(m["subject"].as_str().unwrap().to_string());
        }
        cursor = page["next_cursor"].as_str().map(str::to_string);
        if cursor.is_none() {
            break;
        }
    }
    assert_eq!(
        seen,
        ["n4", "n3", "n2", "n1", "n0"],
        "newest first, each once"
    );

    let (_, page, _) = json(
        app.request(
            Method::GET,
            "/api/v1/messages?recipient=r3@example.com&status=queued&connection=contoso",
            Some(&admin),
        )
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(page["messages"].as_array().unwrap().len(), 1);
    let (_, page, _) = json(
        app.request(Method::GET, "/api/v1/messages?status=sent", Some(&admin))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert!(page["messages"].as_array().unwrap().is_empty());
    for bad in ["status=lost", "since=yesterday"] {
        let (status, problem, _) = json(
            app.request(
                Method::GET,
                &format!("/api/v1/messages?{bad}"),
                Some(&admin),
            )
            .send()
            .await
            .unwrap(),
        )
        .await;
        assert_eq!(status, 400, "{bad}");
        assert!(problem["detail"].as_str().unwrap().len() > 10);
    }
    let (_, page, _) = json(
        app.request(
            Method::GET,
            "/api/v1/messages?since=2999-01-01T00:00:00Z",
            Some(&admin),
        )
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert!(page["messages"].as_array().unwrap().is_empty());
}

#[tokio::test]
async fn authorize_through_the_callback_then_test_send() {
    let app = spawn_http().await;
    let fakes = crate::http_helpers::fakes().await;
    let key = app.admin_key().await;
    let resp = app
        .request(Method::POST, "/api/v1/connections", Some(&key))
        .json(&fakes.connection_json("fake"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);

    // Not authorized yet: the test says so at the first step, nothing is sent.
    let (status, result, _) = json(
        app.request(Method::POST, "/api/v1/connections/fake/test", Some(&key))
            .json(&serde_json::json!({"to": "someone@example.com"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(result["passed"], false);
    assert!(fakes.smtp.messages().is_empty());

    let (status, started, text) = json(
        app.request(
            Method::POST,
            "/api/v1/connections/fake/authorize",
            Some(&key),
        )
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{text}");
    let redirect_uri = started["redirect_uri"].as_str().unwrap();
    assert_eq!(redirect_uri, format!("{}/oauth/callback", app.base));
    let url = started["authorize_url"].as_str().unwrap();
    assert!(
        url.contains("code_challenge_method=S256") && url.contains("state="),
        "{url}"
    );

    let back = crate::http_helpers::consent(&app.client, url).await;
    assert!(back.starts_with(redirect_uri), "{back}");
    let page = app.client.get(&back).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(html.contains("Connected"), "{html}");
    // A state works once.
    let again = app.client.get(&back).send().await.unwrap();
    assert_eq!(again.status(), 400);
    assert!(
        again
            .text()
            .await
            .unwrap()
            .contains("unknown or has expired")
    );

    let (_, conn, text) = json(
        app.request(Method::GET, "/api/v1/connections/fake", Some(&key))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(conn["status"], "authorized", "{text}");
    assert_eq!(conn["refresh_token"], "set");

    let (status, result, text) = json(
        app.request(Method::POST, "/api/v1/connections/fake/test", Some(&key))
            .json(&serde_json::json!({"to": "someone@example.com"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(result["passed"], true, "{text}");
    let steps: Vec<&str> = result["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert!(
        steps.contains(&"auth") && steps.contains(&"send"),
        "{steps:?}"
    );
    let received = fakes.smtp.messages();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].rcpt_to, ["someone@example.com"]);
    let id = result["message_id"].as_str().unwrap();
    let (_, detail, _) = json(
        app.request(Method::GET, &format!("/api/v1/messages/{id}"), Some(&key))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(detail["status"], "sent");
    // Neither the refresh token nor an access token appeared anywhere.
    let rt = fakes
        .idp
        .current_refresh_token_for(fake_provider::idp::DEFAULT_USER)
        .unwrap();
    assert!(!text.contains(&rt) && !html.contains(&rt));
}

#[tokio::test]
async fn a_refused_consent_is_explained_and_changes_nothing() {
    let app = spawn_http().await;
    let fakes = crate::http_helpers::fakes().await;
    let key = app.admin_key().await;
    app.request(Method::POST, "/api/v1/connections", Some(&key))
        .json(&fakes.connection_json("fake"))
        .send()
        .await
        .unwrap();
    fakes.idp.set_consent_denied(true);
    let (_, started, _) = json(
        app.request(
            Method::POST,
            "/api/v1/connections/fake/authorize",
            Some(&key),
        )
        .send()
        .await
        .unwrap(),
    )
    .await;
    let back =
        crate::http_helpers::consent(&app.client, started["authorize_url"].as_str().unwrap()).await;
    let page = app.client.get(&back).send().await.unwrap();
    assert_eq!(page.status(), 400);
    let html = page.text().await.unwrap();
    assert!(
        html.contains("Not connected") && html.contains("access_denied"),
        "{html}"
    );
    let conn = app.store.connection("fake").await.unwrap();
    assert!(!conn.refresh_token_set);
    // Forged or missing state: no connection named, nothing done.
    let page = app
        .client
        .get(app.url("/oauth/callback?code=x&state=forged"))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 400);
    let page = app
        .client
        .get(app.url("/oauth/callback"))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 400);
}

#[tokio::test]
async fn the_api_keeps_the_secret_expiry_and_names_a_bad_date() {
    let app = spawn_http().await;
    let key = app.admin_key().await;
    let mut body = connection_json("contoso", "s3cret-value-0123456789");
    body["secret_expires"] = "2027-03-31".into();
    let resp = app
        .request(Method::POST, "/api/v1/connections", Some(&key))
        .json(&body)
        .send()
        .await
        .unwrap();
    let (status, v, _) = json(resp).await;
    assert_eq!(status, 201, "{v}");
    assert_eq!(v["secret_expires"], "2027-03-31");

    let resp = app
        .request(Method::PATCH, "/api/v1/connections/contoso", Some(&key))
        .json(&serde_json::json!({"secret_expires": "next year"}))
        .send()
        .await
        .unwrap();
    let (status, v, text) = json(resp).await;
    assert_eq!(status, 422, "{text}");
    assert!(
        text.contains("secret_expires") && text.contains("YYYY-MM-DD"),
        "{text}"
    );
    let (_, v2, _) = json(
        app.request(Method::GET, "/api/v1/connections/contoso", Some(&key))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        v2["secret_expires"], "2027-03-31",
        "unchanged after a refused edit: {v}"
    );

    let resp = app
        .request(Method::PATCH, "/api/v1/connections/contoso", Some(&key))
        .json(&serde_json::json!({"secret_expires": ""}))
        .send()
        .await
        .unwrap();
    let (status, v, _) = json(resp).await;
    assert_eq!(status, 200, "{v}");
    assert!(v["secret_expires"].is_null(), "{v}");
}
