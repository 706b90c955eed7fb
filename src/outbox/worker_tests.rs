//! A sender's steps against the fake provider: batches stay within `CLAIM_BYTES`, and a claim
//! cut short by bytes is not taken for a drained store.

use fake_provider::idp::{DEFAULT_CLIENT_ID, IdpConfig};
use fake_provider::smtp::{SmtpConfig, TokenValidator};
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

struct IdpSource(FakeIdp);

impl TokenSource for IdpSource {
    async fn access_token(&self) -> Result<SecretString, TokenError> {
        Ok(SecretString::from(self.0.issue_access_token(
            DEFAULT_CLIENT_ID,
            USER,
            "https://outlook.office.com/SMTP.Send",
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
        IdpSource(self.0.clone())
    }
}

struct World {
    _dir: tempfile::TempDir,
    store: Store,
    smtp: FakeSmtp,
    conn: Connection,
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
    let store = Store::open(&dir.path().join("data"), None).await.unwrap();
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
        ..Default::default()
    }
    .validate()
    .unwrap();
    let conn = store.insert_connection(&settings).await.unwrap();
    let (outbox, _) = Outbox::start(store.clone(), Wakers::default());
    let delivery = Delivery::new(
        store.clone(),
        DeliverySettings::default(),
        IdpTokens(idp),
        outbox,
        Default::default(),
    );
    World {
        _dir: dir,
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
async fn step(w: &World, transport: &mut Transport<IdpSource>) -> Vec<String> {
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
    let handed = w.store.claim_ready(w.conn.id, 1, LEASE_MS).await.unwrap();
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
