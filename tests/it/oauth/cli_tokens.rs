//! `postern connection token` and the token lifecycle as an admin sees it from the command line.

use postern::store::SecretKind;
use secrecy::ExposeSecret;

use super::{
    Running, SCOPE, SECRET, TENANT, USER, add_connection, assert_no_secrets, endpoint_args,
    follow_authorize, idp_config, start_idp,
};
use crate::helpers::{CLIENT_ID, TestHome};

async fn access_token(home: &TestHome, name: &str) -> String {
    let store = home.store().await;
    let conn = store.connection(name).await.unwrap();
    let at = store
        .secret(conn.id, SecretKind::AccessToken)
        .await
        .unwrap()
        .expect("access token");
    store.close().await;
    at.value.expose_secret().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_credentials_authorize_checks_the_app_and_token_shows_roles() {
    let idp = start_idp(idp_config()).await;
    let home = TestHome::new();
    add_connection(&home, &idp, "app", &["--flow", "client-credentials"]);
    let out = home.run(&["-vv", "connection", "authorize", "app"]).ok();
    assert!(
        out.stdout.contains("authorized `app` (app-only)"),
        "{}",
        out.stdout
    );
    assert_eq!(idp.counters().client_credentials, 1);
    assert_eq!(idp.counters().authorize, 0, "no consent for app-only");
    let out = home.run(&["-vv", "connection", "token", "app"]).ok();
    assert!(
        out.stdout
            .contains("audience:    https://outlook.office365.com"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("roles:       SMTP.SendAsApp"),
        "{}",
        out.stdout
    );
    let at = access_token(&home, "app").await;
    assert_no_secrets(&out.all(), &[SECRET, &at], None);
    assert_eq!(
        idp.counters().client_credentials,
        1,
        "the sealed token was reused"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_shows_expiry_scopes_and_audience_but_never_the_token() {
    let idp = start_idp(idp_config()).await;
    let home = TestHome::new();
    let rt = idp.issue_refresh_token(CLIENT_ID, USER, SCOPE);
    let rt_file = home.file("rt.txt", &rt);
    add_connection(&home, &idp, "contoso", &["--refresh-token-file", &rt_file]);
    let out = home.run(&["-vv", "connection", "token", "contoso"]).ok();
    assert!(
        out.stdout.contains("just obtained from the token endpoint"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("expires:     "));
    assert!(
        out.stdout.contains("scp:         SMTP.Send"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains("audience:    https://outlook.office.com")
    );
    assert!(out.stdout.contains(&format!("user:        {USER}")));
    assert!(!out.stderr.contains("warning"), "{}", out.stderr);
    let at = access_token(&home, "contoso").await;
    let new_rt = idp.current_refresh_token_for(USER).unwrap();
    assert_no_secrets(&out.all(), &[SECRET, &rt, &new_rt, &at], None);
    // A second process reads the sealed token back: no refresh.
    let out = home.run(&["connection", "token", "contoso"]).ok();
    assert!(out.stdout.contains("cached"), "{}", out.stdout);
    assert_eq!(idp.counters().refresh_token, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graph_token_is_flagged() {
    let idp = start_idp(idp_config()).await;
    let home = TestHome::new();
    let scope = "https://graph.microsoft.com/Mail.Send offline_access";
    let rt = idp.issue_refresh_token(CLIENT_ID, USER, scope);
    let rt_file = home.file("rt.txt", &rt);
    let secret_file = home.file("secret.txt", SECRET);
    let endpoints = endpoint_args(&idp);
    let mut args = vec![
        "connection",
        "add",
        "graph",
        "--provider",
        "custom",
        "--host",
        "smtp.contoso.example",
        "--user",
        USER,
        "--tenant",
        TENANT,
        "--client-id",
        CLIENT_ID,
        "--client-secret-file",
        &secret_file,
        "--scope",
        scope,
        "--refresh-token-file",
        &rt_file,
    ];
    args.extend(endpoints.iter().map(String::as_str));
    home.run(&args).ok();
    let out = home.run(&["connection", "token", "graph"]).ok();
    assert!(
        out.stdout
            .contains("audience:    https://graph.microsoft.com"),
        "{}",
        out.stdout
    );
    assert!(
        out.stderr
            .contains("warning: this token is for Microsoft Graph"),
        "{}",
        out.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_grant_shows_in_the_list_until_authorized_again() {
    let idp = start_idp(idp_config()).await;
    let home = TestHome::new();
    let rt = idp.issue_refresh_token(CLIENT_ID, USER, SCOPE);
    let rt_file = home.file("rt.txt", &rt);
    add_connection(&home, &idp, "contoso", &["--refresh-token-file", &rt_file]);
    idp.revoke_refresh_tokens_for(USER);
    let out = home.run(&["connection", "token", "contoso"]);
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(
        out.stderr
            .contains("needs re-authorization: invalid_grant: AADSTS50173"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("hint: ")
            && out.stderr.contains("postern connection authorize contoso")
    );
    let list = home.run(&["connection", "list"]).ok().stdout;
    assert!(
        list.contains("needs-reauthorization: invalid_grant: AADSTS50173"),
        "{list}"
    );
    assert!(
        !list.contains("Trace ID"),
        "the reason is kept short: {list}"
    );
    let refreshes = idp.counters().refresh_token;
    assert_eq!(home.run(&["connection", "token", "contoso"]).code, 1);
    assert_eq!(
        idp.counters().refresh_token,
        refreshes,
        "no provider call while refused"
    );
    // The admin signs in again: usable.
    let mut run = Running::spawn(
        &home,
        &["connection", "authorize", "contoso", "--paste"],
        false,
    );
    let location = follow_authorize(&run.authorize_url()).await;
    run.type_line(&location);
    tokio::task::spawn_blocking(move || run.finish())
        .await
        .unwrap()
        .ok();
    let list = home.run(&["connection", "list"]).ok().stdout;
    assert!(
        list.contains("authorized") && !list.contains("needs-reauthorization"),
        "{list}"
    );
    home.run(&["connection", "token", "contoso"]).ok();
}
