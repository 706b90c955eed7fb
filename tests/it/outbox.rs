//! The outbox and delivery workers against the fake provider over real TCP + TLS.

use std::time::Duration;

use fake_provider::idp::{DEFAULT_CLIENT_ID, IdpConfig};
use fake_provider::smtp::{SmtpConfig, Stage, TokenValidator, replies};
use fake_provider::{FakeIdp, FakeSmtp};
use postern::domain::{Connection, ConnectionInput};
use postern::oauth::{TokenError, TokenSource};
use postern::outbox::{Delivery, Outbox, TokenFactory, Wakers};
use postern::settings::DeliverySettings;
use postern::store::Store;
use postern::store::messages::{MessageFilter, MessageStatus, NewMessage, Source};
use secrecy::SecretString;
use tokio_util::sync::CancellationToken;

const USER: &str = "user@contoso.example";

/// Tokens minted directly by the fake IdP (the token manager is tested on its own).
#[derive(Clone)]
struct IdpTokens(FakeIdp);

/// Tokens of the fake IdP for one scope (SMTP's, or Graph's for the fallback).
struct IdpSource(FakeIdp, &'static str);

impl TokenSource for IdpSource {
    async fn access_token(&self) -> Result<SecretString, TokenError> {
        Ok(SecretString::from(self.0.issue_access_token(
            DEFAULT_CLIENT_ID,
            USER,
            self.1,
        )))
    }
    async fn force_refresh(&self) -> Result<SecretString, TokenError> {
        self.access_token().await
    }
}

impl TokenFactory for IdpTokens {
    type Source = IdpSource;
    fn token_source(&self, _: &Connection) -> IdpSource {
        IdpSource(self.0.clone(), "https://outlook.office.com/SMTP.Send")
    }
    fn graph_token_source(&self, _: &Connection) -> IdpSource {
        IdpSource(self.0.clone(), "https://graph.microsoft.com/Mail.Send")
    }
}

struct World {
    _dir: tempfile::TempDir,
    store: Store,
    smtp: FakeSmtp,
    conn: Connection,
    outbox: Outbox,
    delivery: Delivery<IdpTokens>,
}

async fn world() -> World {
    let dir = tempfile::tempdir().unwrap();
    let idp = FakeIdp::start(IdpConfig::default()).await.unwrap();
    let smtp = FakeSmtp::start(SmtpConfig::office365(), TokenValidator::Idp(idp.clone()))
        .await
        .unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, smtp.ca_pem()).unwrap();
    let store = postern::store::test_store(&dir.path().join("data")).await;
    let input = ConnectionInput {
        name: Some("fake".into()),
        provider: Some("microsoft".into()),
        user: Some(USER.into()),
        client_id: Some(DEFAULT_CLIENT_ID.into()),
        host: Some("127.0.0.1".into()),
        port: Some(smtp.port().to_string()),
        ca_file: Some(ca.display().to_string()),
        token_url: Some(idp.token_url("organizations")),
        flow: Some("client-credentials".into()),
        tenant: Some("contoso.example".into()),
        ..Default::default()
    };
    let (settings, _) = input.validate().unwrap();
    let conn = store.insert_connection(&settings).await.unwrap();
    let (outbox, _) = Outbox::start(store.clone(), Wakers::default());
    let delivery_settings = DeliverySettings {
        first_retry_secs: 0,
        ..Default::default()
    };
    let delivery = Delivery::new(
        store.clone(),
        delivery_settings,
        IdpTokens(idp),
        outbox.clone(),
        Default::default(),
    );
    World {
        _dir: dir,
        store,
        smtp,
        conn,
        outbox,
        delivery,
    }
}

fn message(conn: &Connection, n: usize, to: &[&str]) -> NewMessage {
    let body = format!(
        "From: {USER}\r\nTo: {}\r\nSubject: test {n}\r\nMessage-ID: <{n}@test>\r\n\r\nbody {n}\r\n.leading dot\r\n",
        to.join(", ")
    );
    NewMessage {
        connection_id: conn.id,
        connection_name: conn.name().to_string(),
        source: Source::Api,
        submitter: Some("tests".into()),
        mail_from: USER.into(),
        recipients: to.iter().map(|s| s.to_string()).collect(),
        body: body.into_bytes(),
        idempotency_key: None,
    }
}

async fn drain(w: &World) {
    let mut transport = w.delivery.transport(&w.conn).unwrap();
    let stop = CancellationToken::new();
    for _ in 0..50 {
        let conn = w.store.connection_by_id(w.conn.id).await.unwrap();
        match w
            .delivery
            .try_deliver_next(&conn, &mut transport, &stop)
            .await
            .unwrap()
        {
            postern::outbox::Outcome::Empty => return,
            postern::outbox::Outcome::Held(r) => panic!("held: {r}"),
            postern::outbox::Outcome::Attempted(_) => {}
        }
    }
    panic!("queue did not drain in 50 steps");
}

#[tokio::test]
async fn queued_messages_arrive_byte_exact_over_one_reused_session() {
    let w = world().await;
    let mut handles = Vec::new();
    for n in 0..20 {
        let outbox = w.outbox.clone();
        let m = message(&w.conn, n, &["a@example.org"]);
        handles.push(tokio::spawn(
            async move { outbox.enqueue(m).await.unwrap() },
        ));
    }
    for h in handles {
        assert!(!h.await.unwrap().duplicate);
    }
    drain(&w).await;
    let got = w.smtp.messages();
    assert_eq!(got.len(), 20);
    let expected = message(&w.conn, 7, &["a@example.org"]).body;
    assert!(
        got.iter().any(|m| m.data == expected),
        "byte-exact, dot-stuffing undone by the server"
    );
    assert_eq!(
        w.smtp.counters().connections,
        1,
        "one upstream session carried every message"
    );
    let sent = w
        .store
        .list_messages(&MessageFilter {
            status: Some(MessageStatus::Sent),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(sent.len(), 20);
    assert!(
        sent.iter()
            .all(|m| m.subject.as_deref().is_some_and(|s| s.starts_with("test ")))
    );
    assert!(
        w.store.message_body(&sent[0].id).await.unwrap().is_none(),
        "sent bodies are dropped"
    );
}

#[tokio::test]
async fn idempotency_key_queues_once() {
    let w = world().await;
    let mut m = message(&w.conn, 1, &["a@example.org"]);
    m.idempotency_key = Some("k1".into());
    let first = w.outbox.enqueue(m.clone()).await.unwrap();
    let again = w.outbox.enqueue(m).await.unwrap();
    assert_eq!(first.id, again.id);
    assert!(again.duplicate);
}

#[tokio::test]
async fn temporary_failure_defers_then_delivers() {
    let w = world().await;
    w.smtp.inject(Stage::DataEnd, replies::TEMP_ERROR, 1);
    let q = w
        .outbox
        .enqueue(message(&w.conn, 1, &["a@example.org"]))
        .await
        .unwrap();
    let mut transport = w.delivery.transport(&w.conn).unwrap();
    let stop = CancellationToken::new();
    w.delivery
        .try_deliver_next(&w.conn, &mut transport, &stop)
        .await
        .unwrap();
    let d = w.store.message_detail(&q.id).await.unwrap().unwrap();
    assert_eq!(d.summary.status, "deferred");
    assert!(d.summary.last_error.unwrap().contains("451"));
    tokio::time::sleep(Duration::from_millis(1500)).await; // first_retry_secs = 0 → due within jitter
    drain(&w).await;
    let d = w.store.message_detail(&q.id).await.unwrap().unwrap();
    assert_eq!(d.summary.status, "sent");
    assert_eq!(d.summary.attempts, 2);
    assert_eq!(d.attempt_log.len(), 2);
    assert_eq!(w.smtp.messages().len(), 1);
}

#[tokio::test]
async fn one_refused_recipient_fails_alone_and_a_permanent_refusal_fails_the_message() {
    let w = world().await;
    w.smtp.inject(
        Stage::Rcpt(Some("nobody@example.org".into())),
        replies::UNKNOWN_RECIPIENT,
        fake_provider::smtp::ALWAYS,
    );
    let q = w
        .outbox
        .enqueue(message(
            &w.conn,
            1,
            &["a@example.org", "nobody@example.org", "b@example.org"],
        ))
        .await
        .unwrap();
    let only_bad = w
        .outbox
        .enqueue(message(&w.conn, 2, &["nobody@example.org"]))
        .await
        .unwrap();
    drain(&w).await;
    let d = w.store.message_detail(&q.id).await.unwrap().unwrap();
    assert_eq!(d.summary.status, "sent");
    let statuses: Vec<_> = d
        .recipient_results
        .iter()
        .map(|r| r.status.as_str())
        .collect();
    assert_eq!(statuses, ["sent", "failed", "sent"]);
    assert!(
        d.recipient_results[1]
            .reply
            .as_deref()
            .unwrap()
            .contains("550 5.1.1")
    );
    assert_eq!(
        w.smtp.messages()[0].rcpt_to,
        ["a@example.org", "b@example.org"]
    );
    let d = w.store.message_detail(&only_bad.id).await.unwrap().unwrap();
    assert_eq!(d.summary.status, "failed");
}

#[tokio::test]
async fn send_as_denied_fails_with_the_explanation() {
    let w = world().await;
    w.smtp.inject(Stage::DataEnd, replies::SEND_AS_DENIED, 1);
    let q = w
        .outbox
        .enqueue(message(&w.conn, 1, &["a@example.org"]))
        .await
        .unwrap();
    drain(&w).await;
    let d = w.store.message_detail(&q.id).await.unwrap().unwrap();
    assert_eq!(d.summary.status, "failed");
    let reply = d.recipient_results[0].reply.clone().unwrap();
    assert!(
        reply.contains("554 5.2.0") && reply.contains("SendAs"),
        "{reply}"
    );
}

#[tokio::test]
async fn a_disabled_connection_holds_its_mail_and_releases_it_when_enabled() {
    let w = world().await;
    w.store.set_enabled("fake", false).await.unwrap();
    let q = w
        .outbox
        .enqueue(message(&w.conn, 1, &["a@example.org"]))
        .await
        .unwrap();
    let conn = w.store.connection("fake").await.unwrap();
    let mut transport = w.delivery.transport(&conn).unwrap();
    let out = w
        .delivery
        .try_deliver_next(&conn, &mut transport, &CancellationToken::new())
        .await
        .unwrap();
    assert!(
        matches!(out, postern::outbox::Outcome::Held(ref r) if r.contains("disabled")),
        "{out:?}"
    );
    assert_eq!(
        w.store
            .message_detail(&q.id)
            .await
            .unwrap()
            .unwrap()
            .summary
            .status,
        "held"
    );

    // The running workers notice the change and release the mail.
    w.store.set_enabled("fake", true).await.unwrap();
    let stop = CancellationToken::new();
    let run = tokio::spawn(w.delivery.clone().run(stop.clone()));
    assert!(
        w.smtp.wait_for_count(1, Duration::from_secs(20)).await,
        "held mail delivered after enabling"
    );
    stop.cancel();
    run.await.unwrap();
    assert_eq!(
        w.store
            .message_detail(&q.id)
            .await
            .unwrap()
            .unwrap()
            .summary
            .status,
        "sent"
    );
}

#[tokio::test]
async fn messages_claimed_by_a_dead_worker_are_delivered_after_restart() {
    let w = world().await;
    for n in 0..5 {
        w.outbox
            .enqueue(message(&w.conn, n, &["a@example.org"]))
            .await
            .unwrap();
    }
    // A worker claims them and dies before delivering. On PostgreSQL other instances may be
    // alive, so only a lease that ran out is taken over: a short one here.
    let lease_ms = if w.store.backend().is_postgres() {
        1_000
    } else {
        60_000
    };
    let claimed = w.store.claim_ready(w.conn.id, 10, lease_ms).await.unwrap();
    assert_eq!(claimed.len(), 5);
    let stop = CancellationToken::new();
    let run = tokio::spawn(w.delivery.clone().run(stop.clone()));
    assert!(
        w.smtp.wait_for_count(5, Duration::from_secs(20)).await,
        "recovered claims delivered"
    );
    stop.cancel();
    run.await.unwrap();
}
