//! Two thousand connections on one instance: the idle ones cost no token and no session, the
//! ones with mail each get theirs delivered through their own mailbox with one token request.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use fake_provider::idp::{DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, IdpConfig};
use fake_provider::smtp::{SmtpConfig, TokenValidator};
use fake_provider::{FakeIdp, FakeSmtp};
use postern::domain::ConnectionInput;
use postern::metrics::Metrics;
use postern::oauth::TokenManager;
use postern::outbox::{Delivery, Outbox, Wakers};
use postern::settings::{DeliverySettings, TokenSettings};
use postern::store::SecretKind;
use postern::store::messages::{NewMessage, Source};
use secrecy::SecretString;
use tokio_util::sync::CancellationToken;

const CONNECTIONS: usize = 2_000;
/// Every seventh connection gets a message.
const EVERY: usize = 7;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_connections_idle_costs_nothing_and_each_sender_uses_its_own_mailbox() {
    let dir = tempfile::tempdir().unwrap();
    let idp = FakeIdp::start(IdpConfig::default()).await.unwrap();
    let smtp = FakeSmtp::start(SmtpConfig::office365(), TokenValidator::Idp(idp.clone()))
        .await
        .unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, smtp.ca_pem()).unwrap();
    let store = postern::store::test_store(&dir.path().join("data")).await;
    let secret = SecretString::from(DEFAULT_CLIENT_SECRET.to_string());
    let mut ids = Vec::with_capacity(CONNECTIONS);
    for i in 0..CONNECTIONS {
        // Each customer its own tenant (so its token requests can be told apart) and mailbox.
        let (settings, _) = ConnectionInput {
            name: Some(format!("customer-{i:04}")),
            provider: Some("microsoft".into()),
            flow: Some("client-credentials".into()),
            tenant: Some(format!("tenant{i}.example")),
            user: Some(format!("u{i}@contoso.example")),
            client_id: Some(DEFAULT_CLIENT_ID.into()),
            host: Some("127.0.0.1".into()),
            port: Some(smtp.port().to_string()),
            ca_file: Some(ca.display().to_string()),
            token_url: Some(idp.token_url(&format!("tenant{i}.example"))),
            limits: Some("messages-per-minute=0".into()),
            ..Default::default()
        }
        .validate()
        .unwrap();
        let conn = store.insert_connection(&settings).await.unwrap();
        store
            .put_secret(conn.id, SecretKind::ClientSecret, &secret, None)
            .await
            .unwrap();
        ids.push(conn.id);
    }

    let (outbox, _writer) = Outbox::start(store.clone(), Wakers::default());
    let tokens = TokenManager::new(store.clone(), TokenSettings::default()).unwrap();
    let settings = DeliverySettings {
        max_sessions: 64,
        ..Default::default()
    };
    let delivery = Delivery::new(
        store.clone(),
        settings,
        tokens,
        outbox.clone(),
        Metrics::default(),
    );
    let stop = CancellationToken::new();
    let running = tokio::spawn(delivery.run(stop.clone()));

    // Idle: more than one look at the store, and nothing reaches the provider or the IdP.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        idp.counters().total,
        0,
        "no token for connections without mail"
    );
    assert_eq!(smtp.counters().connections, 0, "no session without mail");

    let senders: Vec<usize> = (0..CONNECTIONS).step_by(EVERY).collect();
    for &i in &senders {
        let from = format!("u{i}@contoso.example");
        outbox
            .enqueue(NewMessage {
                connection_id: ids[i],
                connection_name: format!("customer-{i:04}"),
                source: Source::Api,
                submitter: Some("tests".into()),
                mail_from: from.clone(),
                recipients: vec!["someone@example.org".into()],
                body: format!(
                    "From: {from}\r\nTo: someone@example.org\r\nSubject: from {i}\r\n\r\nhello\r\n"
                )
                .into_bytes(),
                idempotency_key: None,
            })
            .await
            .unwrap();
    }
    let started = Instant::now();
    let got = smtp
        .wait_for_messages(senders.len(), Duration::from_secs(90))
        .await;
    assert_eq!(got.len(), senders.len(), "every message is delivered");
    println!(
        "{} messages through {} connections delivered in {:?}",
        got.len(),
        senders.len(),
        started.elapsed()
    );
    for m in &got {
        let body = String::from_utf8_lossy(&m.data);
        let i: usize = body
            .split("Subject: from ")
            .nth(1)
            .and_then(|s| s.split("\r\n").next())
            .and_then(|s| s.parse().ok())
            .expect("the subject names its connection");
        assert_eq!(
            m.auth_user.as_deref(),
            Some(format!("u{i}@contoso.example").as_str()),
            "connection {i}'s message went through its own mailbox"
        );
    }
    let mut per_tenant: HashMap<String, usize> = HashMap::new();
    for r in idp.token_requests() {
        *per_tenant.entry(r.tenant).or_default() += 1;
    }
    assert_eq!(
        per_tenant.len(),
        senders.len(),
        "tokens only for connections that sent"
    );
    assert!(
        per_tenant.values().all(|&n| n == 1),
        "one token request per sending connection"
    );
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(30), running)
        .await
        .expect("delivery stops")
        .unwrap();
}
