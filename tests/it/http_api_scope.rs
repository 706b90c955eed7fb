//! API keys scoped to connections, endpoint by endpoint: what a customer's key may reach (its
//! own connections and their messages) and what it is refused (everything else), with errors
//! that name the scope.

use reqwest::Method;

use crate::http_helpers::{HttpApp, connection_json, json, spawn_http};
use postern::store::ApiRole;
use secrecy::ExposeSecret;

async fn create_connection(app: &HttpApp, admin: &str, name: &str) {
    let resp = app
        .request(Method::POST, "/api/v1/connections", Some(admin))
        .json(&connection_json(name, "secret"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201, "{name}");
}

async fn scoped_key(app: &HttpApp, name: &str, connections: &[&str]) -> String {
    let scope: Vec<String> = connections.iter().map(|s| s.to_string()).collect();
    let k = app
        .store
        .create_api_key(name, ApiRole::Send, &scope)
        .await
        .unwrap();
    k.secret.expose_secret().to_string()
}

/// Submits a small message through `connection` (or the default) and returns status and body.
async fn submit(app: &HttpApp, key: &str, connection: Option<&str>) -> (u16, serde_json::Value) {
    let mut body = serde_json::json!({"to": ["alice@example.com"], "subject": "hi", "text": "x"});
    if let Some(c) = connection {
        body["connection"] = c.into();
    }
    let resp = app
        .request(Method::POST, "/api/v1/messages", Some(key))
        .json(&body)
        .send()
        .await
        .unwrap();
    let (status, v, _) = json(resp).await;
    (status, v)
}

async fn get(app: &HttpApp, key: &str, path: &str) -> (u16, serde_json::Value) {
    let (status, v, _) = json(
        app.request(Method::GET, path, Some(key))
            .send()
            .await
            .unwrap(),
    )
    .await;
    (status, v)
}

fn detail(v: &serde_json::Value) -> String {
    v["detail"].as_str().unwrap_or_default().to_string()
}

/// The detail of a refusal names the key, its scope and the connection asked for.
fn names_scope(v: &serde_json::Value, asked: &str) {
    let d = detail(v);
    assert!(
        d.contains("`cust`")
            && d.contains("`alpha`")
            && d.contains("`beta`")
            && d.contains(&format!("`{asked}`")),
        "{v}"
    );
}

struct World {
    app: HttpApp,
    admin: String,
    key: String,
}

async fn world() -> World {
    let app = spawn_http().await;
    let admin = app.admin_key().await;
    for c in ["alpha", "beta", "gamma"] {
        create_connection(&app, &admin, c).await;
    }
    let key = scoped_key(&app, "cust", &["alpha", "beta"]).await;
    World { app, admin, key }
}

#[tokio::test]
async fn a_scoped_key_lists_and_reads_only_its_connections() {
    let World { app, key, .. } = world().await;

    let (status, list) = get(&app, &key, "/api/v1/connections").await;
    assert_eq!(status, 200, "{list}");
    let names: Vec<&str> = list["connections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["alpha", "beta"]);

    let (status, alpha) = get(&app, &key, "/api/v1/connections/alpha").await;
    assert_eq!(status, 200, "{alpha}");
    assert_eq!(alpha["status"], "new");
    assert_eq!(alpha["client_secret"], "set");

    // Another customer's connection and a name that does not exist get the same answer.
    let (status, gamma) = get(&app, &key, "/api/v1/connections/gamma").await;
    assert_eq!(status, 403);
    names_scope(&gamma, "gamma");
    let (status, nosuch) = get(&app, &key, "/api/v1/connections/nosuch").await;
    assert_eq!(status, 403);
    names_scope(&nosuch, "nosuch");
}

#[tokio::test]
async fn a_scoped_key_cannot_manage_connections_keys_or_relay_users() {
    let World { app, key, .. } = world().await;
    let c = connection_json("delta", "s");
    let calls: Vec<(Method, &str, serde_json::Value)> = vec![
        (Method::POST, "/api/v1/connections", c),
        (
            Method::PATCH,
            "/api/v1/connections/alpha",
            serde_json::json!({"display_name": "x"}),
        ),
        (
            Method::DELETE,
            "/api/v1/connections/alpha",
            serde_json::json!({}),
        ),
        (
            Method::POST,
            "/api/v1/connections/alpha/authorize",
            serde_json::json!({}),
        ),
        (
            Method::POST,
            "/api/v1/connections/alpha/test",
            serde_json::json!({"to": "a@example.com"}),
        ),
        (Method::GET, "/api/v1/relay-users", serde_json::json!({})),
        (
            Method::POST,
            "/api/v1/relay-users",
            serde_json::json!({"name": "u", "connection": "alpha"}),
        ),
        (
            Method::DELETE,
            "/api/v1/relay-users/u",
            serde_json::json!({}),
        ),
        (
            Method::POST,
            "/api/v1/relay-users/u/reset-password",
            serde_json::json!({}),
        ),
        (Method::GET, "/api/v1/api-keys", serde_json::json!({})),
        (
            Method::POST,
            "/api/v1/api-keys",
            serde_json::json!({"name": "k2", "role": "send"}),
        ),
        (
            Method::DELETE,
            "/api/v1/api-keys/cust",
            serde_json::json!({}),
        ),
    ];
    for (m, path, body) in calls {
        let resp = app
            .request(m.clone(), path, Some(&key))
            .json(&body)
            .send()
            .await
            .unwrap();
        let (status, v, _) = json(resp).await;
        assert_eq!(status, 403, "{m} {path}: {v}");
        assert!(detail(&v).contains("admin"), "{m} {path}: {v}");
    }
    // Nothing changed: the connection is still there and the key still works.
    assert!(app.store.find_connection("alpha").await.unwrap().is_some());
    assert!(app.store.find_connection("delta").await.unwrap().is_none());
    assert_eq!(get(&app, &key, "/api/v1/connections/alpha").await.0, 200);
}

#[tokio::test]
async fn a_scoped_key_sends_only_through_its_connections() {
    let World { app, key, .. } = world().await;
    let (status, v) = submit(&app, &key, Some("alpha")).await;
    assert_eq!(status, 202, "{v}");
    let (status, v) = submit(&app, &key, Some("gamma")).await;
    assert_eq!(status, 403);
    names_scope(&v, "gamma");
    let (status, v) = submit(&app, &key, Some("nosuch")).await;
    assert_eq!(status, 403);
    names_scope(&v, "nosuch");
    // Two connections in scope: it must say which.
    let (status, v) = submit(&app, &key, None).await;
    assert_eq!(status, 422, "{v}");
    assert!(v.to_string().contains("`alpha`, `beta`"), "{v}");

    // A key scoped to one connection may leave it out, although the server has three.
    let single = scoped_key(&app, "solo", &["beta"]).await;
    let (status, v) = submit(&app, &single, None).await;
    assert_eq!(status, 202, "{v}");
    let id = v["id"].as_str().unwrap();
    let detail = app.store.message_detail(id).await.unwrap().unwrap();
    assert_eq!(detail.summary.connection, "beta");

    // A raw message names its connection in the query string: the same rule.
    let raw = "From: ops@contoso.com\r\nTo: a@example.com\r\nSubject: raw\r\n\r\nbody\r\n";
    for (conn, want) in [("alpha", 202), ("gamma", 403)] {
        let resp = app
            .request(
                Method::POST,
                &format!("/api/v1/messages?connection={conn}"),
                Some(&key),
            )
            .header("content-type", "message/rfc822")
            .body(raw)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), want, "{conn}");
    }
}

#[tokio::test]
async fn a_scoped_key_reads_retries_and_cancels_only_its_connections_messages() {
    let World { app, admin, key } = world().await;
    // Mail of every connection, submitted by the admin (not by the scoped key).
    let mut ids = std::collections::HashMap::new();
    for c in ["alpha", "beta", "gamma"] {
        let (status, v) = submit(&app, &admin, Some(c)).await;
        assert_eq!(status, 202);
        ids.insert(c, v["id"].as_str().unwrap().to_string());
    }

    let (status, page) = get(&app, &key, "/api/v1/messages").await;
    assert_eq!(status, 200, "{page}");
    let mut seen: Vec<&str> = page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["connection"].as_str().unwrap())
        .collect();
    seen.sort();
    assert_eq!(seen, ["alpha", "beta"]);
    let (status, page) = get(&app, &key, "/api/v1/messages?connection=beta").await;
    assert_eq!(status, 200);
    assert_eq!(page["messages"].as_array().unwrap().len(), 1);
    let (status, v) = get(&app, &key, "/api/v1/messages?connection=gamma").await;
    assert_eq!(status, 403);
    names_scope(&v, "gamma");

    let (status, m) = get(&app, &key, &format!("/api/v1/messages/{}", ids["alpha"])).await;
    assert_eq!((status, m["connection"].as_str()), (200, Some("alpha")));
    let (status, _) = get(&app, &key, &format!("/api/v1/messages/{}", ids["gamma"])).await;
    assert_eq!(status, 404, "another connection's message is not found");

    let call = |m: Method, path: String| app.request(m, &path, Some(&key)).send();
    let retry = |id: &str| format!("/api/v1/messages/{id}/retry");
    let one = |id: &str| format!("/api/v1/messages/{id}");
    assert_eq!(
        call(Method::POST, retry(&ids["alpha"]))
            .await
            .unwrap()
            .status(),
        202
    );
    assert_eq!(
        call(Method::POST, retry(&ids["gamma"]))
            .await
            .unwrap()
            .status(),
        404
    );
    assert_eq!(
        call(Method::DELETE, one(&ids["gamma"]))
            .await
            .unwrap()
            .status(),
        404
    );
    assert_eq!(
        call(Method::DELETE, one(&ids["beta"]))
            .await
            .unwrap()
            .status(),
        204
    );
    // gamma's message is untouched; beta's is gone.
    assert!(
        app.store
            .message_detail(&ids["gamma"])
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        app.store
            .message_detail(&ids["beta"])
            .await
            .unwrap()
            .is_none()
    );

    // An unscoped send key still may not retry or cancel (today's meaning).
    let send = app.send_key().await;
    let resp = app
        .request(Method::POST, &retry(&ids["alpha"]), Some(&send))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
}

#[tokio::test]
async fn removing_its_connections_leaves_a_scoped_key_with_nothing_not_everything() {
    let World { app, admin, key } = world().await;
    for c in ["alpha", "beta"] {
        let resp = app
            .request(
                Method::DELETE,
                &format!("/api/v1/connections/{c}"),
                Some(&admin),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 204);
    }
    let (status, list) = get(&app, &key, "/api/v1/connections").await;
    assert_eq!(status, 200);
    let empty = list["connections"].as_array().unwrap();
    assert!(empty.is_empty(), "{list}");
    let (status, v) = submit(&app, &key, Some("gamma")).await;
    assert_eq!(status, 403);
    assert!(detail(&v).contains("removed"), "{v}");
    let (status, _) = submit(&app, &key, None).await;
    assert_eq!(status, 422);
    // The key list shows the (now empty) scope.
    let (_, keys) = get(&app, &admin, "/api/v1/api-keys").await;
    let cust = keys
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == "cust")
        .unwrap();
    assert_eq!(cust["connections"], serde_json::json!([]));
}

#[tokio::test]
async fn scoped_keys_are_created_over_the_api_and_unknown_names_are_refused() {
    let app = spawn_http().await;
    let admin = app.admin_key().await;
    create_connection(&app, &admin, "alpha").await;
    let resp = app
        .request(Method::POST, "/api/v1/api-keys", Some(&admin))
        .json(&serde_json::json!({"name": "c1", "role": "send", "connections": ["alpha"]}))
        .send()
        .await
        .unwrap();
    let (status, v, _) = json(resp).await;
    assert_eq!(status, 201, "{v}");
    assert_eq!(v["connections"], serde_json::json!(["alpha"]));
    let resp = app
        .request(Method::POST, "/api/v1/api-keys", Some(&admin))
        .json(&serde_json::json!({"name": "c2", "role": "send", "connections": ["alpha", "nope"]}))
        .send()
        .await
        .unwrap();
    let (status, v, _) = json(resp).await;
    assert_eq!(status, 400, "{v}");
    assert!(detail(&v).contains("`nope`"), "{v}");
    let resp = app
        .request(Method::POST, "/api/v1/api-keys", Some(&admin))
        .json(&serde_json::json!({"name": "c3", "role": "admin", "connections": ["alpha"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let names: Vec<String> = app
        .store
        .list_api_keys()
        .await
        .unwrap()
        .into_iter()
        .map(|k| k.name)
        .collect();
    assert_eq!(names, ["c1", "test-admin"]);
}

#[test]
fn the_cli_creates_and_lists_scoped_keys() {
    let home = crate::helpers::TestHome::new();
    home.add_connection("alpha", "s1", &[]).ok();
    home.add_connection("beta", "s2", &[]).ok();
    let out = home
        .run(&[
            "api-key",
            "create",
            "cust",
            "--role",
            "send",
            "--connection",
            "alpha",
            "--connection",
            "beta",
        ])
        .ok();
    assert!(out.stdout.trim().starts_with("pk_"), "{}", out.all());
    assert!(out.stderr.contains("only for alpha, beta"), "{}", out.all());
    let list = home.run(&["api-key", "list"]).ok();
    assert!(list.stdout.contains("CONNECTIONS"), "{}", list.all());
    assert!(list.stdout.contains("alpha,beta"), "{}", list.all());
    let json = home.run(&["api-key", "list", "--json"]).ok();
    let v: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(v[0]["connections"], serde_json::json!(["alpha", "beta"]));

    let bad = home.run(&[
        "api-key",
        "create",
        "other",
        "--role",
        "send",
        "--connection",
        "gamma",
    ]);
    assert_eq!(bad.code, 2, "{}", bad.all());
    assert!(bad.stderr.contains("`gamma`"), "{}", bad.all());
}

/// A guard for endpoints added later: every route, aimed at another customer's connection or
/// message, is refused or shows nothing of it.
#[tokio::test]
async fn no_route_reaches_another_customers_connection_or_message() {
    let World { app, admin, key } = world().await;
    let (_, gamma_msg) = submit(&app, &admin, Some("gamma")).await;
    let gamma_id = gamma_msg["id"].as_str().unwrap();
    for r in postern::http::api_routes() {
        if r.path == "/api/v1/openapi.json" {
            continue;
        }
        let path = r.path.replace("{name}", "gamma").replace("{id}", gamma_id);
        let body = if r.path == "/api/v1/messages" && r.method == "post" {
            serde_json::json!({"connection": "gamma", "to": ["a@example.com"], "subject": "x", "text": "x"})
        } else {
            serde_json::json!({})
        };
        let m = Method::from_bytes(r.method.to_ascii_uppercase().as_bytes()).unwrap();
        let resp = app
            .request(m, &path, Some(&key))
            .json(&body)
            .send()
            .await
            .unwrap();
        let (status, _, text) = json(resp).await;
        if (200..300).contains(&status) {
            assert_eq!(
                r.method, "get",
                "{} {path} answered {status}: {text}",
                r.method
            );
            assert!(
                !text.contains("gamma") && !text.contains(gamma_id),
                "{path}: {text}"
            );
        } else {
            assert!(
                status == 403 || status == 404,
                "{} {path} answered {status}: {text}",
                r.method
            );
        }
    }
    // gamma's message is still queued, gamma still exists.
    assert!(app.store.message_detail(gamma_id).await.unwrap().is_some());
    assert!(app.store.find_connection("gamma").await.unwrap().is_some());
}
