//! The Microsoft Graph transport end to end: the real `postern serve`, a connection with
//! `--transport graph`, the fake IdP and the fake Graph sendMail over TLS.

use std::time::{Duration, Instant};

use fake_provider::graph::replies;

use super::client::{Client, message, queued_id};
use super::world::{USER, World};

const TO: &str = "someone@example.org";
const HIDDEN: &str = "hidden@example.net";

/// Relays `content` to `rcpts` through the world's relay; returns the queue id.
async fn relay(w: &World, addr: std::net::SocketAddr, rcpts: &[&str], content: &[u8]) -> String {
    let mut c = Client::connect_tls(addr, &w.relay_cert()).await;
    c.cmd("EHLO app.example").await;
    assert_eq!(c.auth_plain("app", &w.password).await.code, 235);
    let id = queued_id(&c.send(USER, rcpts, content).await);
    assert_eq!(c.cmd("QUIT").await.code, 221);
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relayed_message_goes_through_graph_byte_for_byte_with_a_bcc_for_envelope_only_recipients()
 {
    let w = World::graph().await;
    let show = w.postern(&["connection", "show", "fake"]).await.ok();
    assert!(show.stdout.contains("graph"), "{}", show.stdout);
    let serve = w.serve().await;
    let graph = w.graph.as_ref().unwrap();
    let content = message(USER, TO, "via graph");
    let id = relay(&w, serve.relay, &[TO, HIDDEN], &content).await;
    let got = graph.wait_for_messages(1, Duration::from_secs(30)).await;
    assert_eq!(got.len(), 1, "{}", w.log());
    assert_eq!(got[0].mailbox, USER);
    let mime = String::from_utf8(got[0].mime.clone()).unwrap();
    // The envelope-only recipient is added as Bcc, first; the relay's trace header follows.
    let rest = mime
        .strip_prefix(&format!("Bcc: {HIDDEN}\r\nReceived: "))
        .unwrap_or_else(|| panic!("Bcc then Received first: {mime}"));
    let sent = String::from_utf8(content).unwrap();
    let (headers, body) = sent.split_once("\r\n\r\n").unwrap();
    assert!(
        rest.contains(headers) && mime.ends_with(&format!("\r\n\r\n{body}")),
        "the app's headers and body arrive unchanged: {mime}"
    );
    let store = w.store().await;
    let d = w.wait_status(&store, &id, "sent").await;
    assert!(
        d.recipient_results
            .iter()
            .all(|r| r.status == "sent"
                && r.reply.as_deref().unwrap_or("").starts_with("202 Accepted")),
        "{d:?}"
    );
    assert!(
        d.recipient_results[0]
            .reply
            .as_deref()
            .unwrap()
            .contains(HIDDEN),
        "the log says the Bcc was added: {d:?}"
    );
    // Nothing went through SMTP, and Graph saw one request with a Graph token.
    assert!(w.smtp.messages().is_empty());
    assert_eq!(
        (graph.counters().requests, graph.counters().bad_tokens),
        (1, 0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graph_429_with_retry_after_defers_then_delivers_and_401_refreshes_exactly_once() {
    let w = World::graph().await;
    let serve = w.serve().await;
    let graph = w.graph.as_ref().unwrap();
    let store = w.store().await;

    graph.inject(replies::throttled(2), 1);
    let started = Instant::now();
    let id = relay(&w, serve.relay, &[TO], &message(USER, TO, "throttled")).await;
    let d = w.wait_status(&store, &id, "sent").await;
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "sent again only after Retry-After: {:?}",
        started.elapsed()
    );
    assert_eq!(graph.counters().requests, 2);
    assert!(
        d.attempt_log
            .iter()
            .any(|a| a.outcome.contains("deferred")
                || format!("{a:?}").contains("ApplicationThrottled")),
        "{d:?}"
    );
    let refreshes = w.idp.counters().refresh_token;

    graph.inject(replies::UNAUTHORIZED, 1);
    let id = relay(&w, serve.relay, &[TO], &message(USER, TO, "expired")).await;
    w.wait_status(&store, &id, "sent").await;
    assert_eq!(
        w.idp.counters().refresh_token,
        refreshes + 1,
        "one forced refresh after the 401"
    );
    assert_eq!(graph.counters().requests, 4, "the 401, then the retry");
    assert_eq!(graph.messages().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graph_403_fails_with_its_explanation_and_a_5_mb_message_fails_unsent_and_untruncated() {
    let w = World::graph().await;
    let serve = w.serve().await;
    let graph = w.graph.as_ref().unwrap();
    let store = w.store().await;

    graph.inject(replies::SEND_AS_DENIED, 1);
    let id = relay(&w, serve.relay, &[TO], &message(USER, TO, "denied")).await;
    let d = w.wait_status(&store, &id, "failed").await;
    let text = format!("{d:?}");
    assert!(
        text.contains("ErrorSendAsDenied") && text.contains("Send as"),
        "the reason and what to change: {text}"
    );
    assert_eq!(
        graph.counters().requests,
        1,
        "a permanent failure is not retried"
    );

    // 5 MB: over Graph's 4 MB request limit once in base64. Fails (the default), never truncated.
    let mut big = String::from(
        "From: App <ops@contoso.example>\r\nTo: <someone@example.org>\r\nSubject: big\r\n\r\n",
    );
    let line = "x".repeat(998);
    while big.len() < 5 * 1024 * 1024 {
        big.push_str(&line);
        big.push_str("\r\n");
    }
    let id = relay(&w, serve.relay, &[TO], big.as_bytes()).await;
    let d = w.wait_status(&store, &id, "failed").await;
    let text = format!("{d:?}");
    assert!(
        text.contains("4 MB") && text.contains("never truncates"),
        "{text}"
    );
    assert_eq!(
        graph.counters().requests,
        1,
        "the big message was never sent"
    );
    assert!(graph.messages().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_test_on_graph_prints_each_step_and_names_the_cause_of_a_403() {
    let w = World::graph().await;
    let graph = w.graph.as_ref().unwrap();
    let out = w
        .postern(&["connection", "test", "fake", "--to", TO])
        .await
        .ok();
    let text = out.all();
    for step in ["dns", "tls", "token", "sendMail"] {
        assert!(text.contains(step), "{step} in {text}");
    }
    assert!(
        text.contains("audience https://graph.microsoft.com")
            && text.contains("scp: Mail.Send")
            && text.contains("202 Accepted"),
        "{text}"
    );
    assert_eq!(graph.messages().len(), 1);

    graph.inject(replies::ACCESS_DENIED, 1);
    let out = w.postern(&["connection", "test", "fake", "--to", TO]).await;
    assert_ne!(out.code, 0, "{}", out.all());
    let text = out.all();
    assert!(
        text.contains("ErrorAccessDenied") && text.contains("Grant admin consent"),
        "the likely cause: {text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graph_connection_keeps_at_most_4_requests_in_flight() {
    let w = World::graph().await;
    let view = w.json(&["connection", "show", "fake"]).await;
    assert_eq!(view["transport"], "graph");
    assert_eq!(view["max_concurrent"], 4, "Graph's preset: {view}");
    let serve = w.serve().await;
    let graph = w.graph.as_ref().unwrap();
    graph.set_latency(Duration::from_millis(300));
    let mut c = Client::connect_tls(serve.relay, &w.relay_cert()).await;
    c.cmd("EHLO app.example").await;
    assert_eq!(c.auth_plain("app", &w.password).await.code, 235);
    for n in 0..12 {
        queued_id(
            &c.send(USER, &[TO], &message(USER, TO, &format!("m{n}")))
                .await,
        );
    }
    assert_eq!(c.cmd("QUIT").await.code, 221);
    let got = graph.wait_for_messages(12, Duration::from_secs(30)).await;
    assert_eq!(got.len(), 12, "{}", w.log());
    let most = graph.counters().max_in_flight;
    assert!((1..=4).contains(&most), "at most 4 in flight, saw {most}");
}
