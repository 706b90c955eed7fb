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

/// CHUNKING offered (as Exchange Online and Gmail do): MAIL, RCPT, `BDAT n LAST` and the message
/// go out together, and what arrives is the message byte for byte (dots included, line endings
/// repaired); without CHUNKING the same message goes through DATA and arrives the same.
#[tokio::test]
async fn bdat_when_offered_and_data_otherwise_deliver_the_same_bytes() {
    let raw: &[u8] = b"From: app@contoso.example\nSubject: dots\n\n.leading dot\n..two\n.\nend";
    let want: &[u8] =
        b"From: app@contoso.example\r\nSubject: dots\r\n\r\n.leading dot\r\n..two\r\n.\r\nend\r\n";
    for chunking in [true, false] {
        let (smtp, _dir, cfg) = fake(SmtpConfig {
            chunking,
            ..SmtpConfig::office365()
        })
        .await;
        let mut transport = SmtpClient::new(cfg, FakeTokens::good())
            .unwrap()
            .transport();
        let envelope = Envelope::new("app@contoso.example", ["a@example.org"]);
        for _ in 0..3 {
            let report = transport.send(&envelope, raw).await.unwrap();
            assert!(report.all_accepted(), "{report:?}");
        }
        transport.close().await;
        let messages = smtp.messages();
        assert_eq!(messages.len(), 3);
        for m in &messages {
            assert_eq!(m.chunked, chunking, "BDAT exactly when CHUNKING is offered");
            assert_eq!(m.data, want, "chunking {chunking}");
            let size = format!("SIZE={}", want.len());
            assert!(m.mail_params.contains(&size), "{:?}", m.mail_params);
        }
        assert_eq!(smtp.counters().connections, 1);
    }
}

#[tokio::test]
async fn bdat_with_every_recipient_refused_delivers_nothing_and_the_session_goes_on() {
    let (smtp, _dir, cfg) = fake(SmtpConfig::office365()).await;
    smtp.inject(FakeStage::Rcpt(None), replies::UNKNOWN_RECIPIENT, 2);
    let mut transport = SmtpClient::new(cfg, FakeTokens::good())
        .unwrap()
        .transport();
    let to = Envelope::new("app@contoso.example", ["x@example.org", "y@example.org"]);
    let err = transport.send(&to, MESSAGE).await.unwrap_err();
    let SmtpError::RecipientsRefused { report } = &err else {
        panic!("{err}");
    };
    assert_eq!(report.refused().count(), 2);
    assert!(smtp.messages().is_empty());
    let ok = Envelope::new("app@contoso.example", ["z@example.org"]);
    transport.send(&ok, MESSAGE).await.unwrap();
    let messages = smtp.messages();
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].rcpt_to, ["z@example.org"]);
    assert_eq!(smtp.counters().connections, 1);
}

/// After a pause the server may have closed the session unseen: the message then goes the DATA
/// way, where a closed session shows before any of it is sent.
#[tokio::test]
async fn after_a_pause_the_next_message_uses_data_then_bdat_again() {
    let (smtp, _dir, cfg) = fake(SmtpConfig::office365()).await;
    let mut transport = SmtpClient::new(cfg, FakeTokens::good())
        .unwrap()
        .transport();
    let envelope = Envelope::new("app@contoso.example", ["a@example.org"]);
    transport.send(&envelope, MESSAGE).await.unwrap();
    tokio::time::sleep(Duration::from_millis(2100)).await;
    transport.send(&envelope, MESSAGE).await.unwrap();
    transport.send(&envelope, MESSAGE).await.unwrap();
    let chunked: Vec<bool> = smtp.messages().iter().map(|m| m.chunked).collect();
    assert_eq!(chunked, [true, false, true]);
    assert!(smtp.messages().iter().all(|m| m.data == MESSAGE));
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

/// A slow provider without CHUNKING: each message's envelope goes out with the previous one's
/// final dot, and the independent fake takes five messages, intact and each once, on one session.
#[tokio::test]
async fn messages_sent_ahead_arrive_intact_and_once() {
    let (smtp, _dir, cfg) = fake(SmtpConfig {
        chunking: false,
        reply_delay: Duration::from_millis(20),
        ..SmtpConfig::office365()
    })
    .await;
    let mut transport = SmtpClient::new(cfg, FakeTokens::good())
        .unwrap()
        .transport();
    let messages: Vec<(Envelope, Vec<u8>)> = (0..5)
        .map(|i| {
            let to = format!("r{i}@example.org");
            let body = format!("Subject: m{i}\r\n\r\n.line {i}\r\nbody\r\n").into_bytes();
            (Envelope::new("app@contoso.example", [to]), body)
        })
        .collect();
    for (i, (envelope, body)) in messages.iter().enumerate() {
        let next = messages.get(i + 1).map(|(e, b)| (e, b.as_slice()));
        let report = transport.send_then(envelope, body, next).await.unwrap();
        assert!(report.all_accepted(), "{report:?}");
    }
    transport.close().await;
    let got: Vec<(Vec<String>, Vec<u8>)> = smtp
        .messages()
        .into_iter()
        .map(|m| (m.rcpt_to, m.data))
        .collect();
    let sent: Vec<(Vec<String>, Vec<u8>)> = messages.into_iter().map(|(e, b)| (e.to, b)).collect();
    assert_eq!(got, sent);
    assert_eq!(smtp.counters().connections, 1);
}
