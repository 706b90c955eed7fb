//! The client against the shared fake provider (`tools/fake-provider`), written independently of
//! this client: a second opinion on the wire format.

use std::time::Duration;

use fake_provider::FakeSmtp;
use fake_provider::smtp::{
    AuthAdvert, SmtpConfig, SmtpTls, Stage as FakeStage, TokenValidator, replies,
};

use super::FakeTokens;
use crate::domain::TlsMode;
use crate::smtp::client::{Envelope, SmtpClient, SmtpClientConfig, SmtpError, Stage};

async fn fake(config: SmtpConfig) -> (FakeSmtp, tempfile::TempDir, SmtpClientConfig) {
    let smtp = FakeSmtp::start(
        config,
        TokenValidator::from_fn(|user, token| {
            user == "app@contoso.example" && token == "good-token"
        }),
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, smtp.ca_pem()).unwrap();
    let mut cfg = SmtpClientConfig::new(
        "localhost",
        smtp.port(),
        TlsMode::Starttls,
        "app@contoso.example",
    );
    cfg.ca_file = Some(ca_file);
    cfg.timeouts.command = Duration::from_secs(5);
    (smtp, dir, cfg)
}

const MESSAGE: &[u8] =
    "From: app@contoso.example\r\nSubject: héllo\r\n\r\n.dot\r\nbody\r\n".as_bytes();

#[tokio::test]
async fn office365_with_the_legacy_auth_form_and_a_stale_token() {
    let (smtp, _dir, cfg) = fake(SmtpConfig {
        auth_advert: AuthAdvert::EqualsOnly,
        ..SmtpConfig::office365()
    })
    .await;
    let tokens = FakeTokens::new("stale-token", "good-token");
    let mut transport = SmtpClient::new(cfg, tokens.clone()).unwrap().transport();
    let envelope = Envelope::new("app@contoso.example", ["a@example.org", "b@example.org"]);
    for _ in 0..2 {
        let report = transport.send(&envelope, MESSAGE).await.unwrap();
        assert!(report.all_accepted(), "{report:?}");
    }
    transport.close().await;
    assert_eq!(tokens.refreshes(), 1);
    let counters = smtp.counters();
    assert_eq!(
        (
            counters.connections,
            counters.auth_successes,
            counters.messages
        ),
        (1, 1, 2)
    );
    let messages = smtp.messages();
    assert_eq!(messages[0].data, MESSAGE);
    assert!(messages[0].tls);
    assert_eq!(messages[0].rcpt_to, ["a@example.org", "b@example.org"]);
    assert!(
        messages[0].mail_params.iter().any(|p| p == "BODY=8BITMIME"),
        "{:?}",
        messages[0].mail_params
    );
}

#[tokio::test]
async fn office365_send_as_denied_is_explained() {
    let (smtp, _dir, cfg) = fake(SmtpConfig::office365()).await;
    smtp.inject(FakeStage::DataEnd, replies::SEND_AS_DENIED, 1);
    let mut transport = SmtpClient::new(cfg, FakeTokens::good())
        .unwrap()
        .transport();
    let envelope = Envelope::new("boss@contoso.example", ["a@example.org"]);
    let err = transport.send(&envelope, MESSAGE).await.unwrap_err();
    assert_eq!(err.stage(), Some(Stage::Message));
    assert!(err.is_permanent());
    assert!(err.explanation().unwrap().contains("SendAs"), "{err}");
    // The session is still good for the next message.
    transport.send(&envelope, MESSAGE).await.unwrap();
    assert_eq!(smtp.counters().connections, 1);
}

#[tokio::test]
async fn gmail_challenge_then_refresh() {
    let (smtp, _dir, cfg) = fake(SmtpConfig::gmail()).await;
    let tokens = FakeTokens::new("expired-token", "good-token");
    let conn = SmtpClient::new(cfg, tokens.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    conn.quit().await.unwrap();
    assert_eq!(tokens.refreshes(), 1);
    let counters = smtp.counters();
    assert_eq!((counters.auth_failures, counters.auth_successes), (1, 1));
}

#[tokio::test]
async fn no_starttls_means_no_token_on_the_wire() {
    let (smtp, _dir, cfg) = fake(SmtpConfig {
        tls: SmtpTls::NoStartTls,
        ..SmtpConfig::office365()
    })
    .await;
    let err = SmtpClient::new(cfg, FakeTokens::good())
        .unwrap()
        .connect()
        .await
        .unwrap_err();
    assert!(matches!(err, SmtpError::StartTlsNotOffered { .. }), "{err}");
    assert_eq!(smtp.counters().cleartext_auth_attempts, 0);
}
