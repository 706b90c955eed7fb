//! A sender's steps against the fake provider: batches stay within `CLAIM_BYTES`, and a claim
//! cut short by bytes is not taken for a drained store.

use std::time::Instant;

use fake_provider::idp::{DEFAULT_CLIENT_ID, IdpConfig};
use fake_provider::smtp::{SmtpConfig, Stage, TokenValidator, replies};
use fake_provider::{FakeIdp, FakeSmtp};
use secrecy::SecretString;
use tokio_util::sync::CancellationToken;

use super::*;
use crate::domain::ConnectionInput;
use crate::oauth::{TokenError, TokenSource};
use crate::outbox::Wakers;
use crate::store::messages::{NewMessage, Source};

const USER: &str = "user@contoso.example";
const MIB: usize = 1024 * 1024;

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

struct IdpTokens(FakeIdp);

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
    idp: FakeIdp,
    store: Store,
    smtp: FakeSmtp,
    conn: Connection,
    delivery: Delivery<IdpTokens>,
}

async fn world() -> World {
    // The fake has no rate limit; Microsoft's 30 a minute would pace every test.
    world_with("messages-per-minute=0").await
}

/// A world whose connection has these limit overrides.
async fn world_with(limits: &str) -> World {
    world_on(SmtpConfig::office365(), limits).await
}

/// A world whose provider is configured so, and whose connection has these limit overrides.
async fn world_on(provider: SmtpConfig, limits: &str) -> World {
    let dir = tempfile::tempdir().unwrap();
    let idp = FakeIdp::start(IdpConfig::default()).await.unwrap();
    let smtp = FakeSmtp::start(provider, TokenValidator::Idp(idp.clone()))
        .await
        .unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, smtp.ca_pem()).unwrap();
    let store = crate::store::test_store(&dir.path().join("data")).await;
    let (settings, _) = ConnectionInput {
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
        limits: Some(limits.into()),
        ..Default::default()
    }
    .validate()
    .unwrap();
    let conn = store.insert_connection(&settings).await.unwrap();
    let (outbox, _) = Outbox::start(store.clone(), Wakers::default());
    let delivery = Delivery::new(
        store.clone(),
        DeliverySettings::default(),
        IdpTokens(idp.clone()),
        outbox,
        Default::default(),
    );
    World {
        _dir: dir,
        idp,
        store,
        smtp,
        conn,
        delivery,
    }
}

/// A message of about `size` bytes.
fn message(conn: &Connection, n: usize, size: usize) -> NewMessage {
    let mut body =
        format!("From: {USER}\r\nTo: a@example.org\r\nSubject: {n}\r\n\r\n").into_bytes();
    while body.len() < size {
        body.extend_from_slice(
            b"0123456789012345678901234567890123456789012345678901234567890123456789\r\n",
        );
    }
    NewMessage {
        connection_id: conn.id,
        connection_name: conn.name().to_string(),
        source: Source::Api,
        submitter: Some("tests".into()),
        mail_from: USER.into(),
        recipients: vec!["a@example.org".into()],
        body,
        idempotency_key: None,
    }
}

/// One step; the ids it attempted, all of which must have been sent.
async fn step(w: &World, transport: &mut crate::outbox::MailTransport<IdpSource>) -> Vec<String> {
    let stop = CancellationToken::new();
    match w
        .delivery
        .try_deliver_next(&w.conn, transport, &stop)
        .await
        .unwrap()
    {
        Outcome::Empty => Vec::new(),
        Outcome::Held(r) => panic!("held: {r}"),
        Outcome::Attempted(done) => done
            .into_iter()
            .map(|(id, status)| {
                assert_eq!(status, MessageStatus::Sent, "{id}");
                id
            })
            .collect(),
    }
}

#[tokio::test]
async fn big_mail_goes_in_batches_within_the_byte_cap_oldest_first() {
    let w = world().await;
    let sizes = [5 * MIB, 0, 5 * MIB, 5 * MIB, 0];
    let batch: Vec<NewMessage> = (0..sizes.len())
        .map(|n| message(&w.conn, n, sizes[n]))
        .collect();
    let bodies: Vec<Vec<u8>> = batch.iter().map(|m| m.body.clone()).collect();
    let ids: Vec<String> = w
        .store
        .insert_messages(&batch)
        .await
        .unwrap()
        .into_iter()
        .map(|q| q.id)
        .collect();
    drop(batch);
    let mut transport = w.delivery.transport(&w.conn).unwrap();
    let mut steps = Vec::new();
    loop {
        let done = step(&w, &mut transport).await;
        if done.is_empty() {
            break;
        }
        steps.push(done);
        assert!(steps.len() <= sizes.len(), "every step sends something");
    }
    transport.close().await;
    let counts: Vec<usize> = steps.iter().map(Vec::len).collect();
    assert_eq!(counts, [2, 1, 2], "5 MiB with a small one where it fits");
    assert_eq!(steps.concat(), ids, "each once, oldest first");
    let arrived: Vec<Vec<u8>> = w.smtp.messages().into_iter().map(|m| m.data).collect();
    assert_eq!(arrived, bodies, "byte for byte, in order");
}

#[tokio::test]
async fn due_mail_too_big_to_join_the_lane_closes_it_and_goes_next() {
    let w = world().await;
    let lane = w.delivery.inner.outbox.wakers().lane(w.conn.id);
    // Relay mail handed over in the lane (claimed, as the writer does), and big mail due in the
    // store that cannot join it within the cap.
    w.store
        .insert_messages(&[message(&w.conn, 0, 0)])
        .await
        .unwrap();
    let handed = w
        .store
        .claim_ready(w.conn.id, 1, w.store.lease_ms())
        .await
        .unwrap();
    let big = w
        .store
        .insert_messages(&[message(&w.conn, 1, CLAIM_BYTES as usize + MIB)])
        .await
        .unwrap();
    lane.sender_started();
    lane.open();
    let small = handed[0].id.clone();
    assert!(lane.push(handed).is_empty());

    let mut transport = w.delivery.transport(&w.conn).unwrap();
    assert_eq!(step(&w, &mut transport).await, [small]);
    assert!(
        !lane.admit(0, 1),
        "the store is not drained: new mail queues behind the big one"
    );
    assert_eq!(step(&w, &mut transport).await, [big[0].id.clone()]);
    assert!(lane.admit(0, 1), "drained: the lane opens again");
    assert!(step(&w, &mut transport).await.is_empty());
    transport.close().await;
    assert_eq!(w.smtp.messages().len(), 2);
}

/// Steps until one finds nothing due; every (id, status) attempted, in order.
async fn drain(w: &World, delivery: &Delivery<IdpTokens>) -> Vec<(String, MessageStatus)> {
    let mut transport = delivery.transport(&w.conn).unwrap();
    let stop = CancellationToken::new();
    let mut all = Vec::new();
    for _ in 0..20 {
        match delivery
            .try_deliver_next(&w.conn, &mut transport, &stop)
            .await
            .unwrap()
        {
            Outcome::Empty => break,
            Outcome::Held(r) => panic!("held: {r}"),
            Outcome::Attempted(done) => all.extend(done),
        }
    }
    transport.close().await;
    all
}

fn to(mut m: NewMessage, recipients: usize) -> NewMessage {
    m.recipients = (0..recipients)
        .map(|i| format!("r{i}@example.org"))
        .collect();
    m
}

/// Queues `n` small messages, drains them with the world's delivery; each attempt's status.
async fn queue_and_drain(w: &World, n: usize) -> Vec<MessageStatus> {
    let batch: Vec<NewMessage> = (0..n).map(|i| message(&w.conn, i, 0)).collect();
    w.store.insert_messages(&batch).await.unwrap();
    drain(w, &w.delivery)
        .await
        .into_iter()
        .map(|d| d.1)
        .collect()
}

/// The connection's due time, in hours from now, if it has waiting mail.
async fn due_in_hours(w: &World) -> Option<i64> {
    let due = w.store.due_by_connection().await.unwrap();
    due.first()
        .map(|(_, at)| (at - now_ms() + 1_800_000) / 3_600_000)
}

#[tokio::test]
async fn recipients_beyond_the_per_message_limit_go_in_further_transactions() {
    let w = world_with("messages-per-minute=0,recipients-per-message=2").await;
    let q = w
        .store
        .insert_messages(&[to(message(&w.conn, 0, 0), 5)])
        .await
        .unwrap();
    let statuses: Vec<MessageStatus> = drain(&w, &w.delivery)
        .await
        .into_iter()
        .map(|d| d.1)
        .collect();
    assert_eq!(
        statuses,
        [
            MessageStatus::Deferred,
            MessageStatus::Deferred,
            MessageStatus::Sent
        ],
        "{}",
        q[0].id
    );
    let parts: Vec<Vec<String>> = w.smtp.messages().into_iter().map(|m| m.rcpt_to).collect();
    assert_eq!(
        parts,
        [
            vec!["r0@example.org", "r1@example.org"],
            vec!["r2@example.org", "r3@example.org"],
            vec!["r4@example.org"]
        ]
    );
}

#[tokio::test]
async fn the_daily_recipient_limit_defers_the_rest_for_the_window_and_fails_nothing() {
    let w = world_with("messages-per-minute=0,recipients-per-day=3").await;
    let batch: Vec<NewMessage> = (0..3).map(|n| to(message(&w.conn, n, 0), 2)).collect();
    w.store.insert_messages(&batch).await.unwrap();
    let statuses: Vec<MessageStatus> = drain(&w, &w.delivery)
        .await
        .into_iter()
        .map(|d| d.1)
        .collect();
    assert_eq!(statuses, [MessageStatus::Sent, MessageStatus::Deferred]);
    assert_eq!(
        w.smtp.messages().len(),
        1,
        "2 recipients sent; 2 more would pass 3"
    );
    assert_eq!(
        due_in_hours(&w).await,
        Some(24),
        "the rest waits until the first sending leaves the 24-hour window"
    );

    // Another process (a restart) remembers the day's sending.
    w.store
        .defer_connection_mail(w.conn.id, 0, "test")
        .await
        .ok();
    let due_now = "UPDATE messages SET next_attempt_at = 0 WHERE status = 'deferred'";
    // The first process is gone: its ownership of the connection (PostgreSQL) went with it.
    let gone = "DELETE FROM connection_owners";
    for sql in [due_now, gone] {
        match w.store.db() {
            crate::store::On::Sqlite(pool) => {
                sqlx::query(sql).execute(pool).await.unwrap();
            }
            crate::store::On::Postgres(pool) => {
                sqlx::query(sql).execute(pool).await.unwrap();
            }
        }
    }
    let (outbox, _) = Outbox::start(w.store.clone(), Wakers::default());
    let restarted = Delivery::new(
        w.store.clone(),
        DeliverySettings::default(),
        IdpTokens(w.idp.clone()),
        outbox,
        Default::default(),
    );
    let statuses: Vec<MessageStatus> = drain(&w, &restarted)
        .await
        .into_iter()
        .map(|d| d.1)
        .collect();
    assert_eq!(statuses, [MessageStatus::Deferred]);
    assert_eq!(
        w.smtp.messages().len(),
        1,
        "nothing more sent after the restart"
    );
}

#[tokio::test]
async fn submission_quota_exceeded_defers_the_mailbox_for_a_day_and_fails_nothing() {
    let w = world().await;
    w.smtp.inject(Stage::DataEnd, replies::QUOTA_EXCEEDED, 1);
    let statuses = queue_and_drain(&w, 3).await;
    assert_eq!(
        statuses,
        [MessageStatus::Deferred],
        "one tried, none failed"
    );
    assert_eq!(due_in_hours(&w).await, Some(24), "all three wait a day");
    assert!(w.smtp.messages().is_empty());
}

#[tokio::test]
async fn messages_per_minute_spaces_the_messages_and_never_goes_faster() {
    // 600 a minute: one every 100 ms.
    let w = world_with("messages-per-minute=600").await;
    let batch: Vec<NewMessage> = (0..6).map(|n| message(&w.conn, n, 0)).collect();
    w.store.insert_messages(&batch).await.unwrap();
    let started = Instant::now();
    assert_eq!(drain(&w, &w.delivery).await.len(), 6);
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "6 messages take at least 5 intervals: {:?}",
        started.elapsed()
    );
}

/// A provider without CHUNKING: each message's envelope goes out with the previous one's dot.
fn without_chunking() -> SmtpConfig {
    SmtpConfig {
        chunking: false,
        ..SmtpConfig::office365()
    }
}

/// The subjects of the messages the fake took, in order.
fn subjects(w: &World) -> Vec<String> {
    w.smtp
        .messages()
        .iter()
        .map(|m| {
            let text = String::from_utf8_lossy(&m.data);
            let line = text.lines().find(|l| l.starts_with("Subject: ")).unwrap();
            line["Subject: ".len()..].to_string()
        })
        .collect()
}

#[tokio::test]
async fn a_deferral_inside_a_batch_sent_ahead_leaves_the_rest_of_the_batch_going() {
    let w = world_on(without_chunking(), "messages-per-minute=0").await;
    w.smtp.inject(Stage::DataEnd, replies::TEMP_ERROR, 1);
    let statuses = queue_and_drain(&w, 4).await;
    assert_eq!(
        statuses,
        [
            MessageStatus::Deferred,
            MessageStatus::Sent,
            MessageStatus::Sent,
            MessageStatus::Sent
        ]
    );
    assert_eq!(subjects(&w), ["1", "2", "3"]);
    assert_eq!(
        w.smtp.counters().connections,
        1,
        "one session for the batch"
    );
}

#[tokio::test]
async fn a_quota_stop_with_the_next_message_ahead_sends_nothing_more() {
    let w = world_on(without_chunking(), "messages-per-minute=0").await;
    w.smtp.inject(Stage::DataEnd, replies::QUOTA_EXCEEDED, 1);
    let statuses = queue_and_drain(&w, 3).await;
    assert_eq!(statuses, [MessageStatus::Deferred], "one tried");
    // The second message's DATA was open on the session when the first was refused: the
    // session is dropped, not finished, so the provider has nothing.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(w.smtp.messages().is_empty(), "{:?}", subjects(&w));
    assert_eq!(due_in_hours(&w).await, Some(24), "all three wait a day");
}
