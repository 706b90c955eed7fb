//! Several `postern serve` processes on one PostgreSQL store (what a load balancer spreads
//! requests over): state a request leaves on one instance must be there for the next request on
//! any other. Two instances on one SQLite data directory are not a supported set-up (SQLite is
//! the single-instance store), so these tests run only with `POSTERN_TEST_STORE_URL`.

use std::net::SocketAddr;

use fake_provider::idp::DEFAULT_CLIENT_ID;
use postern::store::ApiRole;
use reqwest::Method;
use secrecy::ExposeSecret;

use crate::http_helpers::{client, json};
use crate::relay::world::{Flow, USER, World};

/// Says why a two-instance test does not run here; true when it should return.
fn skip_on_sqlite(w: &World) -> bool {
    if w.home.store_url.is_none() {
        eprintln!(
            "skipped on SQLite: several instances share a PostgreSQL store (store.url); SQLite is \
             the single-instance store. Set POSTERN_TEST_STORE_URL to run it"
        );
        return true;
    }
    false
}

fn api(http: SocketAddr, key: &str, method: Method, path: &str) -> reqwest::RequestBuilder {
    client()
        .request(method, format!("http://{http}{path}"))
        .bearer_auth(key)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consent_started_on_one_instance_completes_on_another_and_only_once() {
    let w = World::new(Flow::ClientCredentials).await;
    if skip_on_sqlite(&w) {
        return;
    }
    // A connection that needs a sign-in (the world's own is app-only).
    let home = w.home.path();
    let (secret, ca) = (home.join("client-secret"), home.join("provider-ca.pem"));
    let (port, token_url) = (
        w.smtp.port().to_string(),
        w.idp.token_url("contoso.example"),
    );
    let authorize_url = w.idp.authorize_url("contoso.example");
    w.postern(&[
        "connection",
        "add",
        "web",
        "--provider",
        "microsoft",
        "--tenant",
        "contoso.example",
        "--user",
        USER,
        "--client-id",
        DEFAULT_CLIENT_ID,
        "--client-secret-file",
        &secret.display().to_string(),
        "--host",
        "127.0.0.1",
        "--port",
        &port,
        "--ca-file",
        &ca.display().to_string(),
        "--token-url",
        &token_url,
        "--authorize-url",
        &authorize_url,
        "--flow",
        "authorization-code",
    ])
    .await
    .ok();
    let key = w
        .store()
        .await
        .create_api_key("ops", ApiRole::Admin, &[])
        .await
        .unwrap()
        .secret
        .expose_secret()
        .to_string();
    let (a, b) = (w.serve().await, w.serve().await);

    // Started on A…
    let (status, started, text) = json(
        api(
            a.http,
            &key,
            Method::POST,
            "/api/v1/connections/web/authorize",
        )
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{text}");
    let back =
        crate::http_helpers::consent(&client(), started["authorize_url"].as_str().unwrap()).await;
    let on_a = format!("http://{}/oauth/callback?", a.http);
    assert!(back.starts_with(&on_a), "{back}");
    // …the provider's redirect reaches B (the load balancer's choice).
    let on_b = back.replacen(&on_a, &format!("http://{}/oauth/callback?", b.http), 1);
    let page = client().get(&on_b).send().await.unwrap();
    let (status, html) = (page.status(), page.text().await.unwrap());
    assert_eq!(status, 200, "{html}\n{}", w.log());
    assert!(html.contains("Connected"), "{html}");

    let (_, conn, text) = json(
        api(b.http, &key, Method::GET, "/api/v1/connections/web")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(conn["status"], "authorized", "{text}");
    assert_eq!(conn["refresh_token"], "set", "{text}");

    // The same redirect again, on either instance: refused, saying why.
    for replay in [&on_b, &back] {
        let page = client().get(replay).send().await.unwrap();
        assert_eq!(page.status(), 400);
        let html = page.text().await.unwrap();
        assert!(
            html.contains("unknown or has expired (or was already used)"),
            "{html}"
        );
    }
}

/// One wrong admin login on `http`, as a browser does it (login page, then the form); returns
/// the status and the page.
async fn wrong_login(http: SocketAddr) -> (u16, String) {
    let c = client();
    let page = c
        .get(format!("http://{http}/admin/login"))
        .send()
        .await
        .unwrap();
    let cookie = page.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let body = page.text().await.unwrap();
    let at = body.find("name=\"csrf\" value=\"").expect("a csrf field") + 19;
    let csrf = body[at..].split('"').next().unwrap();
    let form = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("csrf", csrf)
        .append_pair("username", "alice")
        .append_pair("password", "not the password")
        .append_pair("next", "/admin")
        .finish();
    let resp = c
        .post(format!("http://{http}/admin/login"))
        .header("cookie", cookie)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form)
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

/// Long enough for every instance to have written its failures and read the others'.
const SHARED: std::time::Duration = std::time::Duration::from_millis(2_500);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_admin_passwords_spread_over_two_instances_are_throttled_at_the_cluster_limit() {
    let w = World::new(Flow::ClientCredentials).await;
    if skip_on_sqlite(&w) {
        return;
    }
    w.store()
        .await
        .create_admin(
            "alice",
            &secrecy::SecretString::from(crate::http_helpers::ADMIN_PASSWORD.to_string()),
        )
        .await
        .unwrap();
    let (a, b) = (w.serve().await, w.serve().await);
    // Five allowed per client (web login's MAX_FAILURES): three on A, two on B. Alone, neither
    // instance has seen five.
    for http in [a.http, b.http, a.http, b.http, a.http] {
        let (status, page) = wrong_login(http).await;
        assert_eq!(status, 401, "{page}");
        assert!(page.contains("Wrong user name or password"), "{page}");
    }
    tokio::time::sleep(SHARED).await;
    for http in [b.http, a.http] {
        let (status, page) = wrong_login(http).await;
        assert_eq!(status, 429, "{page}\n{}", w.log());
        assert!(page.contains("Too many failed logins"), "{page}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_relay_passwords_spread_over_two_instances_close_the_session_at_the_cluster_limit() {
    use crate::relay::client::Client;
    let w = World::new(Flow::ClientCredentials).await;
    if skip_on_sqlite(&w) {
        return;
    }
    let (a, b) = (w.serve().await, w.serve().await);
    // The relay closes a session at its 10th failure (AuthThrottle::max_failures); a new
    // session starts from the client's earlier failures. Five on A, then four on B…
    let mut failures = 0;
    for (relay, n) in [(a.relay, 5), (b.relay, 4)] {
        tokio::time::sleep(SHARED).await;
        let mut c = Client::connect_tls(relay, &w.relay_cert()).await;
        for _ in 0..n {
            let r = c.auth_plain("app", "wrong password").await;
            failures += 1;
            assert_eq!(r.code, 535, "failure {failures}: {r:?}");
        }
        c.cmd("QUIT").await;
    }
    // …so the next wrong password, on either, is the cluster's 10th: the session is closed.
    tokio::time::sleep(SHARED).await;
    let mut c = Client::connect_tls(a.relay, &w.relay_cert()).await;
    let r = c.auth_plain("app", "wrong password").await;
    assert_eq!(r.code, 421, "{r:?}\n{}", w.log());
    assert!(r.text.contains("Too many authentication failures"), "{r:?}");
}
