//! The secrets audit: a full flow at trace level, then every place a secret could end up is
//! searched for every secret value (and its base64 wire forms). Also: header injection
//! through the HTTP API is refused.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use postern::smtp::sasl::xoauth2_initial_response;
use secrecy::{ExposeSecret, SecretString};

use crate::client::{Client, message, trusting};
use crate::world::{CLIENT_SECRET, Flow, Home, Providers, Server, USER, contains, http};

/// Creates an API key with `role`; returns it.
fn api_key(home: &mut Home, name: &str, role: &str) -> String {
    let out = home.run(&["api-key", "create", name, "--role", role]);
    // The key is printed once, on purpose: that output is not part of the audit.
    home.printed.pop();
    out.lines()
        .map(str::trim)
        .find(|l| l.starts_with("pk_"))
        .expect("the new API key")
        .to_string()
}

async fn submit_relay(server: &Server, home: &Home, marker: &str) {
    let tls = trusting(&home.data_dir.join("relay-cert.pem"));
    let mut c = Client::submission(server.relay, &tls, "app", &home.relay_password)
        .await
        .unwrap();
    let r = c
        .send_mail(USER, "rcpt@example.org", &message(marker))
        .await
        .unwrap();
    assert_eq!(r.code, 250, "{r}");
    c.quit().await;
}

/// GETs `path` with the API key; returns status line, headers and body as one text.
async fn get(server: &Server, key: &str, path: &str) -> String {
    let resp = http()
        .get(format!("http://{}{path}", server.http))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    let head = format!("{} {:?}", resp.status(), resp.headers());
    format!("{head}\n{}", resp.text().await.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_disk_logs_responses_or_ps() {
    let p = Providers::start().await;
    let mut home = Home::new(None);
    home.set_env("RUST_LOG", "trace");
    home.set_env("POSTERN_LOG__LEVEL", "trace");
    home.setup(&p, Flow::AuthorizationCode).await;
    // `relay-user add` showed the password once, on purpose.
    home.printed.retain(|o| !o.contains("shown once"));
    let mut refresh_tokens = vec![
        p.idp
            .current_refresh_token_for(USER)
            .expect("refresh token"),
    ];
    let key = api_key(&mut home, "audit", "admin");
    let server = home.serve();
    let mut responses = Vec::new();

    // Mail through the relay and the API; then force a refresh (new refresh token) and send again.
    submit_relay(&server, &home, "audit-1").await;
    let resp = http()
        .post(format!("http://{}/api/v1/messages", server.http))
        .bearer_auth(&key)
        .json(
            &serde_json::json!({"from": USER, "to": ["rcpt@example.org"],
            "subject": "audit-2", "text": "via the API"}),
        )
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let body = resp.text().await.unwrap();
    assert_eq!(status.as_u16(), 202, "{body}");
    responses.push(body);
    assert!(p.smtp.wait_for_count(2, Duration::from_secs(30)).await);
    p.idp.revoke_all_access_tokens();
    p.smtp_gate.close();
    p.smtp_gate.reopen().await;
    submit_relay(&server, &home, "audit-3").await;
    assert!(p.smtp.wait_for_count(3, Duration::from_secs(30)).await);
    refresh_tokens.push(p.idp.current_refresh_token_for(USER).expect("rotated"));
    assert_ne!(
        refresh_tokens[0], refresh_tokens[1],
        "the refresh token rotated"
    );

    for path in [
        "/healthz",
        "/metrics",
        "/api/v1/connections",
        "/api/v1/connections/fake",
        "/api/v1/messages",
        "/api/v1/api-keys",
        "/api/v1/openapi.json",
        "/admin",
        "/admin/login",
    ] {
        responses.push(get(&server, &key, path).await);
    }
    for args in [
        &["connection", "show", "fake", "--json"][..],
        &["connection", "list"],
        &["relay-user", "list"],
        &["api-key", "list"],
    ] {
        home.run(args);
    }
    let ps = std::process::Command::new("ps")
        .args(["-eww", "-o", "pid,args"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    assert!(ps.contains("postern"), "ps shows the server");
    let environ = std::fs::read(format!("/proc/{}/environ", server.pid())).unwrap();
    server.stop();
    let log = std::fs::read_to_string(server_log(&home)).unwrap_or_default();

    // Every secret value, as text and in the base64 forms that cross the wire.
    let access_tokens: Vec<String> = p.tokens_seen.lock().unwrap().clone();
    assert!(access_tokens.len() >= 2, "tokens were used");
    let mut secrets: Vec<(String, String)> = vec![
        ("client secret".into(), CLIENT_SECRET.into()),
        ("relay password".into(), home.relay_password.clone()),
        (
            "relay AUTH PLAIN line".into(),
            STANDARD.encode(format!("\0app\0{}", home.relay_password)),
        ),
        ("API key".into(), key.clone()),
    ];
    for (i, t) in refresh_tokens.iter().enumerate() {
        secrets.push((format!("refresh token {i}"), t.clone()));
    }
    for (i, t) in access_tokens.iter().enumerate() {
        secrets.push((format!("access token {i}"), t.clone()));
        let line = xoauth2_initial_response(USER, &SecretString::from(t.clone()));
        secrets.push((
            format!("XOAUTH2 line {i}"),
            line.expose_secret().to_string(),
        ));
    }
    let data = home.data_bytes();
    let printed = home.printed.join("\n");
    let responses_text = responses.join("\n");
    let places: [(&str, &[u8]); 6] = [
        ("data directory (raw bytes)", &data),
        ("serve log at trace level", log.as_bytes()),
        ("CLI output", printed.as_bytes()),
        ("HTTP responses", responses_text.as_bytes()),
        ("ps output", ps.as_bytes()),
        ("serve environment", &environ),
    ];
    let mut found = Vec::new();
    for (what, value) in &secrets {
        for (place, bytes) in &places {
            if contains(bytes, value.as_bytes()) {
                found.push(format!("{what} in {place}"));
            }
        }
    }
    println!(
        "secrets audit: {} secret values ({} access tokens, {} refresh tokens) searched in {} KiB \
         of data directory, {} KiB of trace log, {} CLI outputs, {} HTTP responses, ps and the \
         environment: {} found",
        secrets.len(),
        access_tokens.len(),
        refresh_tokens.len(),
        data.len() >> 10,
        log.len() >> 10,
        home.printed.len(),
        responses.len(),
        found.len()
    );
    assert!(log.len() > 10_000, "the trace log is really there");
    assert!(found.is_empty(), "secrets leaked: {found:?}");
}

fn server_log(home: &Home) -> std::path::PathBuf {
    let mut logs: Vec<_> = std::fs::read_dir(home.path())
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    logs.sort();
    logs.pop().expect("a serve log")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_injection_through_the_api_is_refused() {
    let p = Providers::start().await;
    let mut home = Home::new(None);
    home.setup(&p, Flow::ClientCredentials).await;
    let key = api_key(&mut home, "injector", "send");
    let server = home.serve();
    let base = serde_json::json!({"from": USER, "to": ["rcpt@example.org"],
        "subject": "ok", "text": "body"});
    let attacks: Vec<(&str, serde_json::Value)> = vec![
        (
            "subject",
            serde_json::json!("hi\r\nBcc: victim@evil.example"),
        ),
        ("subject", serde_json::json!("hi\nBcc: victim@evil.example")),
        ("subject", serde_json::json!("hi\rBcc: victim@evil.example")),
        (
            "to",
            serde_json::json!(["rcpt@example.org\r\nBcc: victim@evil.example"]),
        ),
        (
            "cc",
            serde_json::json!(["a@example.org>\r\nBcc: <victim@evil.example"]),
        ),
        (
            "from",
            serde_json::json!(format!("{USER}\r\nBcc: victim@evil.example")),
        ),
        (
            "reply_to",
            serde_json::json!(["x@example.org\nBcc: victim@evil.example"]),
        ),
        (
            "headers",
            serde_json::json!({"X-Priority": "1\r\nBcc: victim@evil.example"}),
        ),
        (
            "headers",
            serde_json::json!({"X-Priority\r\nBcc": "victim@evil.example"}),
        ),
        ("headers", serde_json::json!({"Bcc": "victim@evil.example"})),
        (
            "headers",
            serde_json::json!({"References": "<a@b>\r\n\r\nfake body"}),
        ),
    ];
    let mut refused = 0;
    for (field, value) in &attacks {
        let mut body = base.clone();
        body[*field] = value.clone();
        let resp = http()
            .post(format!("http://{}/api/v1/messages", server.http))
            .bearer_auth(&key)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        println!("API injection via {field}: {status} {text}");
        assert!(
            (400..500).contains(&status),
            "{field} = {value} was accepted: {status} {text}"
        );
        refused += 1;
    }
    // A clean message still goes through, and nothing injected reached the provider.
    let resp = http()
        .post(format!("http://{}/api/v1/messages", server.http))
        .bearer_auth(&key)
        .json(&base)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 202);
    assert!(p.smtp.wait_for_count(1, Duration::from_secs(30)).await);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let got = p.smtp.messages();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].rcpt_to, ["rcpt@example.org"]);
    assert!(!contains(&got[0].data, b"evil.example"));
    println!(
        "API injection: {refused} of {} CRLF/header attacks refused, 0 delivered",
        attacks.len()
    );
    server.stop();
}
