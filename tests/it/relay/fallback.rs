//! The Graph fallback end to end: the real `postern serve`, an SMTP connection with
//! `--fallback graph`, a fake provider SMTP answering `535 5.7.139` at AUTH, and the fake Graph.

use std::time::Duration;

use fake_provider::smtp::{ALWAYS, Stage, replies};

use super::client::{Client, message, queued_id};
use super::world::{Flow, USER, World};

const TO: &str = "someone@example.org";

async fn relay(w: &World, addr: std::net::SocketAddr, content: &[u8]) -> String {
    let mut c = Client::connect_tls(addr, &w.relay_cert()).await;
    c.cmd("EHLO app.example").await;
    assert_eq!(c.auth_plain("app", &w.password).await.code, 235);
    let id = queued_id(&c.send(USER, &[TO], content).await);
    assert_eq!(c.cmd("QUIT").await.code, 221);
    id
}

/// Each attempt's transport, as `messages show --json` (the API's message JSON) gives it.
async fn transports(w: &World, id: &str) -> Vec<serde_json::Value> {
    let json = w.json(&["messages", "show", id]).await;
    json["attempt_log"]
        .as_array()
        .unwrap_or_else(|| panic!("no attempt_log: {json}"))
        .iter()
        .map(|a| a["transport"].clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smtp_auth_off_sends_through_graph_byte_for_byte_and_then_straight_to_graph() {
    let w = World::graph_fallback(Flow::AuthorizationCode).await;
    let show = w.json(&["connection", "show", "fake"]).await;
    assert_eq!(
        (show["transport"].as_str(), show["fallback"].as_str()),
        (Some("smtp"), Some("graph"))
    );
    w.smtp.inject(Stage::Auth, replies::AUTH_DISABLED, ALWAYS);
    let serve = w.serve().await;
    let graph = w.graph.as_ref().unwrap();
    let store = w.store().await;

    let content = message(USER, TO, "smtp auth is off");
    let id = relay(&w, serve.relay, &content).await;
    let got = graph.wait_for_messages(1, Duration::from_secs(30)).await;
    assert_eq!(got.len(), 1, "{}", w.log());
    assert_eq!(got[0].mailbox, USER);
    // The relay's trace header, then the app's message exactly as it was sent.
    let mime = String::from_utf8(got[0].mime.clone()).unwrap();
    let sent = String::from_utf8(content).unwrap();
    let (headers, body) = sent.split_once("\r\n\r\n").unwrap();
    assert!(
        mime.starts_with("Received: ")
            && mime.contains(headers)
            && mime.ends_with(&format!("\r\n\r\n{body}")),
        "the app's headers and body arrive unchanged: {mime}"
    );
    let d = w.wait_status(&store, &id, "sent").await;
    assert_eq!(d.attempt_log.len(), 1, "{d:?}");
    assert_eq!(d.attempt_log[0].transport.as_deref(), Some("graph"));
    let reply = d.recipient_results[0].reply.as_deref().unwrap_or("");
    assert!(
        reply.starts_with("202 Accepted") && reply.contains("5.7.139"),
        "{reply}"
    );
    assert_eq!(transports(&w, &id).await, [serde_json::json!("graph")]);
    let text = w.postern(&["messages", "show", &id]).await.ok();
    assert!(text.stdout.contains("via graph"), "{}", text.stdout);
    assert_eq!(w.smtp.counters().auth_failures, 1);
    assert!(w.smtp.messages().is_empty());

    // The next message goes straight to Graph: no second AUTH at the SMTP server.
    let id2 = relay(&w, serve.relay, &message(USER, TO, "second")).await;
    w.wait_status(&store, &id2, "sent").await;
    assert_eq!(graph.messages().len(), 2);
    assert_eq!(
        (
            w.smtp.counters().auth_failures,
            w.smtp.counters().auth_successes
        ),
        (1, 0),
        "SMTP AUTH was not tried again"
    );
    assert_eq!(transports(&w, &id2).await, [serde_json::json!("graph")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_only_without_graph_mail_send_fails_naming_both_refusals() {
    // The fake IdP's app-only tokens carry SMTP.SendAsApp only: Graph answers 403, as Microsoft
    // does for an app registration without the Graph Mail.Send application permission.
    let w = World::graph_fallback(Flow::ClientCredentials).await;
    w.smtp.inject(Stage::Auth, replies::AUTH_DISABLED, ALWAYS);
    let serve = w.serve().await;
    let store = w.store().await;
    let id = relay(&w, serve.relay, &message(USER, TO, "app-only")).await;
    let d = w.wait_status(&store, &id, "failed").await;
    let error = d.summary.last_error.clone().unwrap_or_default();
    assert!(
        error.contains("5.7.139") && error.contains("ErrorAccessDenied"),
        "Graph's explanation and SMTP's refusal: {error}"
    );
    assert_eq!(d.attempt_log[0].transport.as_deref(), Some("graph"));
    assert!(w.graph.as_ref().unwrap().messages().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_fallback_smtp_auth_off_waits_with_its_explanation() {
    let w = World::new(Flow::AuthorizationCode).await;
    w.smtp.inject(Stage::Auth, replies::AUTH_DISABLED, ALWAYS);
    let serve = w.serve().await;
    let store = w.store().await;
    let id = relay(&w, serve.relay, &message(USER, TO, "blocked")).await;
    // As before the fallback existed: deferred (an admin may turn SMTP AUTH on), explained.
    let d = w.wait_status(&store, &id, "deferred").await;
    let error = d.summary.last_error.clone().unwrap_or_default();
    assert!(
        error.contains("5.7.139") && error.contains("Set-CASMailbox"),
        "{error}"
    );
    assert_eq!(d.attempt_log[0].transport.as_deref(), Some("smtp"));
    assert!(w.smtp.messages().is_empty());
}
