//! `postern connection authorize` end to end: the real binary, the fake IdP, and the test
//! acting as the browser.

use fake_provider::idp::{ClientRegistration, RedirectPolicy};
use postern::domain::ConnectionStatus;
use postern::store::SecretKind;
use secrecy::ExposeSecret;

use super::{
    Running, SECRET, USER, add_connection, assert_no_secrets, browser, follow_authorize,
    idp_config, param, start_idp,
};
use crate::helpers::{CLIENT_ID, TestHome};

/// The stored refresh and access tokens of `name`, read from the binary's data directory.
async fn stored_tokens(home: &TestHome, name: &str) -> (String, String, ConnectionStatus) {
    let store = home.store().await;
    let conn = store.connection(name).await.unwrap();
    let rt = store
        .secret(conn.id, SecretKind::RefreshToken)
        .await
        .unwrap()
        .expect("refresh token stored");
    let at = store
        .secret(conn.id, SecretKind::AccessToken)
        .await
        .unwrap()
        .expect("access token stored");
    store.close().await;
    (
        rt.value.expose_secret().to_string(),
        at.value.expose_secret().to_string(),
        conn.status,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loopback_flow_with_the_test_as_the_browser() {
    let idp = start_idp(idp_config()).await;
    let home = TestHome::new();
    add_connection(&home, &idp, "contoso", &[]);
    let mut run = Running::spawn(
        &home,
        &["connection", "authorize", "contoso", "--no-browser"],
        true,
    );
    let url = run.authorize_url();
    let redirect_uri = param(&url, "redirect_uri").unwrap();
    // The registered `http://localhost` has no port: Postern picked one and sends it.
    assert!(
        redirect_uri.starts_with("http://localhost:"),
        "{redirect_uri}"
    );
    assert_eq!(param(&url, "login_hint").as_deref(), Some(USER));
    assert_eq!(
        param(&url, "code_challenge_method").as_deref(),
        Some("S256")
    );
    assert_eq!(param(&url, "prompt").as_deref(), Some("select_account"));
    assert!(param(&url, "scope").unwrap().contains("offline_access"));
    let challenge = param(&url, "code_challenge").unwrap();

    let location = follow_authorize(&url).await;
    assert!(location.starts_with(&redirect_uri), "{location}");
    let code = param(&location, "code").unwrap();
    // The listener binds 127.0.0.1 for `localhost`; the test stays on 127.0.0.1.
    let loopback = location.replacen("://localhost:", "://127.0.0.1:", 1);
    // A forged redirect (wrong state) is refused and does not end the wait.
    let forged = loopback.replace(
        &format!("state={}", param(&location, "state").unwrap()),
        "state=forged",
    );
    assert_eq!(
        browser()
            .get(&forged)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
        400
    );
    let page = browser().get(&loopback).send().await.unwrap();
    assert_eq!(page.status().as_u16(), 200);
    assert!(
        page.text()
            .await
            .unwrap()
            .contains("You can close this tab")
    );

    let out = tokio::task::spawn_blocking(move || run.finish())
        .await
        .unwrap()
        .ok();
    assert!(
        out.stdout.contains(
            "authorized `contoso`: refresh token stored (sealed); access token valid until"
        ),
        "{}",
        out.stdout
    );
    let (rt, at, status) = stored_tokens(&home, "contoso").await;
    assert_eq!(status, ConnectionStatus::Authorized);
    assert_eq!(
        idp.current_refresh_token_for(USER).as_deref(),
        Some(rt.as_str())
    );
    assert!(idp.validate_access_token(&at).is_some());
    assert_eq!(idp.counters().authorization_code, 1);
    assert!(
        home.run(&["connection", "list"])
            .ok()
            .stdout
            .contains("authorized")
    );
    // Every log level was on: no secret may appear anywhere.
    assert!(
        out.stderr.contains("TRACE") || out.stderr.contains("DEBUG"),
        "logs were captured"
    );
    assert_no_secrets(&out.all(), &[SECRET, &code, &rt, &at], Some(&challenge));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paste_mode_accepts_the_redirected_address() {
    let idp = start_idp(idp_config()).await;
    let home = TestHome::new();
    add_connection(&home, &idp, "contoso", &[]);
    let mut run = Running::spawn(
        &home,
        &["connection", "authorize", "contoso", "--paste"],
        true,
    );
    let url = run.authorize_url();
    assert_eq!(
        param(&url, "redirect_uri").as_deref(),
        Some("http://localhost"),
        "sent exactly as registered"
    );
    let location = follow_authorize(&url).await;
    let code = param(&location, "code").unwrap();
    run.type_line("this is not it");
    run.type_line(&location);
    let out = tokio::task::spawn_blocking(move || run.finish())
        .await
        .unwrap()
        .ok();
    assert!(out.stderr.contains("Try again"), "{}", out.stderr);
    assert!(out.stdout.contains("authorized `contoso`"));
    let (rt, at, status) = stored_tokens(&home, "contoso").await;
    assert_eq!(status, ConnectionStatus::Authorized);
    assert_no_secrets(
        &out.all(),
        &[SECRET, &code, &rt, &at],
        Some(&param(&url, "code_challenge").unwrap()),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_loopback_redirect_implies_paste_mode_and_a_bare_code_is_enough() {
    let callback = "https://postern.contoso.example/oauth/callback";
    let client = ClientRegistration::confidential(CLIENT_ID, SECRET)
        .with_redirects(RedirectPolicy::Exact(vec![callback.to_string()]));
    let idp = start_idp(idp_config().with_client(client)).await;
    let home = TestHome::new();
    add_connection(&home, &idp, "contoso", &["--redirect-uri", callback]);
    let mut run = Running::spawn(&home, &["connection", "authorize", "contoso"], false);
    let url = run.authorize_url();
    assert_eq!(param(&url, "redirect_uri").as_deref(), Some(callback));
    let location = follow_authorize(&url).await;
    assert!(location.starts_with(callback));
    run.type_line(&param(&location, "code").unwrap());
    let out = tokio::task::spawn_blocking(move || run.finish())
        .await
        .unwrap()
        .ok();
    assert!(out.stderr.contains("paste mode"), "{}", out.stderr);
    assert_eq!(
        stored_tokens(&home, "contoso").await.2,
        ConnectionStatus::Authorized
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unregistered_redirect_uri_is_explained_with_the_value_to_register() {
    let client = ClientRegistration::confidential(CLIENT_ID, SECRET).with_redirects(
        RedirectPolicy::Exact(vec!["http://localhost:1/elsewhere".into()]),
    );
    let idp = start_idp(idp_config().with_client(client)).await;
    let home = TestHome::new();
    add_connection(&home, &idp, "contoso", &[]);
    let mut run = Running::spawn(
        &home,
        &["connection", "authorize", "contoso", "--no-browser"],
        false,
    );
    let url = run.authorize_url();
    let redirect_uri = param(&url, "redirect_uri").unwrap();
    let location = follow_authorize(&url).await;
    assert!(param(&location, "error").is_some());
    browser()
        .get(location.replacen("://localhost:", "://127.0.0.1:", 1))
        .send()
        .await
        .unwrap();
    let out = tokio::task::spawn_blocking(move || run.finish())
        .await
        .unwrap();
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(
        out.stderr.contains("error: invalid_request"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("AADSTS code: 50011"), "{}", out.stderr);
    assert!(
        out.stderr
            .contains(&format!("add exactly `{redirect_uri}`")),
        "{}",
        out.stderr
    );
    assert_eq!(idp.counters().authorization_code, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_flow_prints_the_code_and_authorizes() {
    let mut config = idp_config();
    config.device_interval = 1;
    config.auto_approve_after_polls = Some(1);
    let idp = start_idp(config).await;
    let home = TestHome::new();
    add_connection(&home, &idp, "contoso", &[]);
    let run = Running::spawn(
        &home,
        &["connection", "authorize", "contoso", "--device"],
        false,
    );
    let out = tokio::task::spawn_blocking(move || run.finish())
        .await
        .unwrap()
        .ok();
    assert!(
        out.stdout.contains("/devicelogin and enter the code "),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains("authorized `contoso`: refresh token stored (sealed)")
    );
    assert_eq!(
        stored_tokens(&home, "contoso").await.2,
        ConnectionStatus::Authorized
    );
    assert_eq!(idp.counters().devicecode, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nobody_signing_in_times_out() {
    let idp = start_idp(idp_config()).await;
    let home = TestHome::new();
    add_connection(&home, &idp, "contoso", &[]);
    let out = home.run(&[
        "connection",
        "authorize",
        "contoso",
        "--no-browser",
        "--timeout",
        "1",
    ]);
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(
        out.stderr.contains("no sign-in response within 1 seconds"),
        "{}",
        out.stderr
    );
    assert_eq!(home.run(&["connection", "authorize", "nope"]).code, 2);
}
