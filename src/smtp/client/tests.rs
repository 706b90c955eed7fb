//! Async tests of the client against a scripted local server over real TCP and TLS.

mod ahead;
mod interop;
mod server;

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use secrecy::SecretString;

use self::server::{AuthStyle, Options, TestServer};
use super::*;
use crate::domain::TlsMode;
use crate::oauth::{TokenError, TokenSource};

/// Hands out `first` until refreshed, then `after_refresh`; counts both.
#[derive(Clone)]
struct FakeTokens(Arc<TokensInner>);

struct TokensInner {
    current: Mutex<String>,
    after_refresh: String,
    fetches: AtomicUsize,
    refreshes: AtomicUsize,
}

impl FakeTokens {
    fn new(first: &str, after_refresh: &str) -> Self {
        Self(Arc::new(TokensInner {
            current: Mutex::new(first.into()),
            after_refresh: after_refresh.into(),
            fetches: AtomicUsize::new(0),
            refreshes: AtomicUsize::new(0),
        }))
    }

    fn good() -> Self {
        Self::new("good-token", "good-token")
    }

    fn refreshes(&self) -> usize {
        self.0.refreshes.load(Ordering::SeqCst)
    }
}

impl TokenSource for FakeTokens {
    fn access_token(&self) -> impl Future<Output = Result<SecretString, TokenError>> + Send {
        self.0.fetches.fetch_add(1, Ordering::SeqCst);
        let token = self.0.current.lock().unwrap().clone();
        async move { Ok(SecretString::from(token)) }
    }

    fn force_refresh(&self) -> impl Future<Output = Result<SecretString, TokenError>> + Send {
        self.0.refreshes.fetch_add(1, Ordering::SeqCst);
        let token = self.0.after_refresh.clone();
        *self.0.current.lock().unwrap() = token.clone();
        async move { Ok(SecretString::from(token)) }
    }
}

const MESSAGE: &[u8] = b"From: app@contoso.example\r\nTo: a@example.org\r\nSubject: test\r\n\r\nHello.\r\n.a line starting with a dot\r\n";

fn config(server: &TestServer) -> SmtpClientConfig {
    let mut c = SmtpClientConfig::new(
        "localhost",
        server.addr.port(),
        TlsMode::Starttls,
        "app@contoso.example",
    );
    c.ca_file = Some(server.ca_file.clone());
    c.hello_name = "client.test".into();
    let five = Duration::from_secs(5);
    c.timeouts = Timeouts {
        connect: five,
        greeting: five,
        tls_handshake: five,
        command: five,
        data_end: five,
    };
    c
}

fn client(server: &TestServer, tokens: FakeTokens) -> SmtpClient<FakeTokens> {
    SmtpClient::new(config(server), tokens).unwrap()
}

fn envelope(to: &[&str]) -> Envelope {
    Envelope::new("app@contoso.example", to.iter().copied())
}

#[tokio::test]
async fn starttls_then_xoauth2_in_two_steps_then_send() {
    let server = TestServer::start(Options::default()).await;
    let client = client(&server, FakeTokens::good());
    let mut steps = Vec::new();
    let mut conn = client.connect_traced(&mut steps).await.unwrap();
    let report = conn
        .send(&envelope(&["a@example.org"]), MESSAGE)
        .await
        .unwrap();
    conn.quit().await.unwrap();

    assert!(report.all_accepted());
    let queued = report.data_reply.as_ref().unwrap();
    assert_eq!(queued.code, 250);
    assert!(queued.text().contains("QUEUE-1"), "{queued}");

    let record = server.record();
    assert_eq!(
        record.commands(),
        [
            "EHLO client.test",
            "STARTTLS",
            "EHLO client.test",
            "AUTH XOAUTH2",
            "<sasl>",
            &format!("MAIL FROM:<app@contoso.example> SIZE={}", MESSAGE.len()),
            "RCPT TO:<a@example.org>",
            "DATA",
            "QUIT",
        ]
    );
    assert_eq!(record.tokens, ["good-token"]);
    assert_eq!(record.messages.len(), 1);
    assert_eq!(
        record.messages[0].data, MESSAGE,
        "the dot-stuffing was undone exactly"
    );
    assert_eq!(record.messages[0].rcpt_to, ["a@example.org"]);

    let names: Vec<&str> = steps.iter().filter(|s| s.ok).map(|s| s.name).collect();
    assert_eq!(
        names,
        [
            "dns", "tcp", "greeting", "ehlo", "starttls", "tls", "ehlo", "token", "auth"
        ]
    );
    let tls = steps.iter().find(|s| s.name == "tls").unwrap();
    assert!(
        tls.detail.contains("TLSv1_3") && tls.detail.contains("SHA-256"),
        "{tls}"
    );
    let auth = steps.iter().find(|s| s.name == "auth").unwrap();
    assert!(auth.detail.contains("235 2.7.0"), "{auth}");
    assert!(!steps.iter().any(|s| s.detail.contains("good-token")));
}

#[tokio::test]
async fn implicit_tls_on_465_style_port() {
    let server = TestServer::start(Options {
        implicit_tls: true,
        offer_starttls: false,
        ..Options::default()
    })
    .await;
    let mut cfg = config(&server);
    cfg.tls = TlsMode::Implicit;
    let mut transport = SmtpClient::new(cfg, FakeTokens::good())
        .unwrap()
        .transport();
    let report = transport
        .send(&envelope(&["a@example.org"]), MESSAGE)
        .await
        .unwrap();
    assert!(report.all_accepted());
    assert_eq!(server.record().commands()[0], "EHLO client.test");
}

#[tokio::test]
async fn a_server_without_starttls_is_refused_before_auth() {
    let server = TestServer::start(Options {
        offer_starttls: false,
        ..Options::default()
    })
    .await;
    let err = client(&server, FakeTokens::good())
        .connect()
        .await
        .unwrap_err();
    assert!(matches!(err, SmtpError::StartTlsNotOffered { .. }), "{err}");
    assert!(err.explanation().unwrap().contains("cleartext"));
    assert!(err.is_connection_problem() && !err.is_transient());
    let record = server.record();
    assert_eq!(record.commands(), ["EHLO client.test"]);
    assert!(record.tokens.is_empty(), "no token went out in cleartext");
}

#[tokio::test]
async fn an_unknown_ca_is_refused_and_accepted_with_the_ca_file() {
    let server = TestServer::start(Options::default()).await;
    let mut cfg = config(&server);
    cfg.ca_file = None;
    let err = SmtpClient::new(cfg.clone(), FakeTokens::good())
        .unwrap()
        .connect()
        .await
        .unwrap_err();
    assert!(matches!(err, SmtpError::Tls { .. }), "{err}");
    assert!(err.to_string().contains("certificate"), "{err}");
    assert!(!err.is_transient() && err.is_connection_problem());
    assert!(server.record().tokens.is_empty());

    cfg.ca_file = Some(server.ca_file.clone());
    let conn = SmtpClient::new(cfg.clone(), FakeTokens::good())
        .unwrap()
        .connect()
        .await;
    assert!(conn.is_ok(), "{:?}", conn.err());

    // The loudly named opt-out, for tests only.
    cfg.ca_file = None;
    cfg.insecure_skip_tls_verify = true;
    let conn = SmtpClient::new(cfg, FakeTokens::good())
        .unwrap()
        .connect()
        .await;
    assert!(conn.is_ok(), "{:?}", conn.err());
}

#[tokio::test]
async fn a_certificate_for_another_name_is_refused_even_from_a_trusted_ca() {
    let server = TestServer::start(Options {
        cert_names: vec!["smtp.other.example".into()],
        ..Options::default()
    })
    .await;
    let err = client(&server, FakeTokens::good())
        .connect()
        .await
        .unwrap_err();
    assert!(matches!(err, SmtpError::Tls { .. }), "{err}");
    assert!(err.to_string().contains("not valid for name"), "{err}");
}

#[tokio::test]
async fn a_rejected_token_is_refreshed_once_and_auth_retried() {
    let server = TestServer::start(Options::default()).await;
    let tokens = FakeTokens::new("stale-token", "good-token");
    let mut transport = client(&server, tokens.clone()).transport();
    let report = transport
        .send(&envelope(&["a@example.org"]), MESSAGE)
        .await
        .unwrap();
    assert!(report.all_accepted());
    assert_eq!(tokens.refreshes(), 1);
    let record = server.record();
    assert_eq!(record.tokens, ["stale-token", "good-token"]);
    assert_eq!(record.connections, 1, "the server kept the session open");
}

#[tokio::test]
async fn a_server_that_hangs_up_after_535_gets_a_new_connection_for_the_retry() {
    let server = TestServer::start(Options {
        close_after_auth_failure: true,
        ..Options::default()
    })
    .await;
    let tokens = FakeTokens::new("stale-token", "good-token");
    let mut transport = client(&server, tokens.clone()).transport();
    transport
        .send(&envelope(&["a@example.org"]), MESSAGE)
        .await
        .unwrap();
    assert_eq!(tokens.refreshes(), 1);
    let record = server.record();
    assert_eq!(record.connections, 2);
    assert_eq!(record.messages.len(), 1);
}

#[tokio::test]
async fn a_token_still_rejected_after_refresh_is_reported_with_advice() {
    let server = TestServer::start(Options::default()).await;
    let tokens = FakeTokens::new("graph-token", "another-graph-token");
    let err = client(&server, tokens.clone()).connect().await.unwrap_err();
    assert!(err.is_token_rejected(), "{err}");
    assert!(err.reply().unwrap().has_enhanced(5, 7, 3));
    assert!(
        err.explanation()
            .unwrap()
            .contains("https://outlook.office.com/SMTP.Send")
    );
    assert_eq!(tokens.refreshes(), 1, "one refresh, one retry, no more");
    assert_eq!(server.record().count("AUTH "), 2);
}

#[tokio::test]
async fn smtp_auth_disabled_is_not_retried_and_is_explained() {
    let server = TestServer::start(Options {
        auth: AuthStyle::SmtpAuthDisabled,
        ..Options::default()
    })
    .await;
    let tokens = FakeTokens::good();
    let err = client(&server, tokens.clone()).connect().await.unwrap_err();
    assert!(!err.is_token_rejected(), "{err}");
    assert!(err.reply().unwrap().has_enhanced(5, 7, 139));
    let advice = err.explanation().unwrap();
    assert!(
        advice.contains(
            "Set-CASMailbox -Identity <mailbox> -SmtpClientAuthenticationDisabled $false"
        ),
        "{advice}"
    );
    assert!(advice.contains("security defaults"));
    assert_eq!(tokens.refreshes(), 0);
    assert_eq!(server.record().count("AUTH "), 1);
}

#[tokio::test]
async fn gmail_challenge_gets_an_empty_line_then_the_refreshed_token_passes() {
    let server = TestServer::start(Options {
        auth: AuthStyle::Gmail,
        auth_mechanisms: "LOGIN PLAIN XOAUTH2 PLAIN-CLIENTTOKEN OAUTHBEARER XOAUTH",
        ..Options::default()
    })
    .await;
    let tokens = FakeTokens::new("expired-token", "good-token");
    let mut steps = Vec::new();
    let conn = client(&server, tokens.clone())
        .connect_traced(&mut steps)
        .await
        .unwrap();
    conn.quit().await.unwrap();
    assert_eq!(tokens.refreshes(), 1);
    let commands = server.record().commands();
    assert_eq!(
        &commands[3..8],
        ["AUTH XOAUTH2", "<sasl>", "", "AUTH XOAUTH2", "<sasl>"],
        "an empty line answers the challenge"
    );
    let challenge = steps.iter().find(|s| s.name == "challenge").unwrap();
    assert!(challenge.detail.contains("status 401"), "{challenge}");
}

#[tokio::test]
async fn oauthbearer_when_chosen() {
    let server = TestServer::start(Options {
        auth_mechanisms: "XOAUTH2 OAUTHBEARER",
        ..Options::default()
    })
    .await;
    let mut cfg = config(&server);
    cfg.mechanism = AuthMechanism::OAuthBearer;
    let conn = SmtpClient::new(cfg, FakeTokens::good())
        .unwrap()
        .connect()
        .await
        .unwrap();
    conn.quit().await.unwrap();
    assert_eq!(server.record().commands()[3], "AUTH OAUTHBEARER");

    let xoauth_only = TestServer::start(Options::default()).await;
    let mut cfg = config(&xoauth_only);
    cfg.mechanism = AuthMechanism::OAuthBearer;
    let err = SmtpClient::new(cfg, FakeTokens::good())
        .unwrap()
        .connect()
        .await
        .unwrap_err();
    assert!(
        matches!(&err, SmtpError::AuthNotOffered { offered, .. } if offered == "LOGIN XOAUTH2"),
        "{err}"
    );
}

#[tokio::test]
async fn oauthbearer_preferred_falls_back_to_xoauth2_when_not_offered() {
    let both = TestServer::start(Options {
        auth_mechanisms: "XOAUTH2 OAUTHBEARER",
        ..Options::default()
    })
    .await;
    let xoauth_only = TestServer::start(Options::default()).await;
    for (server, want) in [(&both, "AUTH OAUTHBEARER"), (&xoauth_only, "AUTH XOAUTH2")] {
        let mut cfg = config(server);
        cfg.mechanism = AuthMechanism::OAuthBearer;
        cfg.fallback_mechanism = Some(AuthMechanism::Xoauth2);
        let conn = SmtpClient::new(cfg, FakeTokens::good())
            .unwrap()
            .connect()
            .await
            .unwrap();
        conn.quit().await.unwrap();
        assert_eq!(server.record().commands()[3], want);
    }
}

async fn one_bad_recipient_of_three(pipelining: bool) {
    let server = TestServer::start(Options {
        pipelining,
        refused_recipients: ["nobody@example.org".to_string()].into(),
        ..Options::default()
    })
    .await;
    let mut transport = client(&server, FakeTokens::good()).transport();
    let to = ["a@example.org", "nobody@example.org", "c@example.org"];
    let report = transport.send(&envelope(&to), MESSAGE).await.unwrap();
    assert!(!report.all_accepted());
    let accepted: Vec<&str> = report.accepted().map(|r| r.recipient.as_str()).collect();
    assert_eq!(accepted, ["a@example.org", "c@example.org"]);
    let refused: Vec<_> = report.refused().collect();
    assert_eq!(refused.len(), 1);
    assert_eq!(refused[0].recipient, "nobody@example.org");
    assert!(refused[0].reply.has_enhanced(5, 1, 1));
    let record = server.record();
    assert_eq!(record.messages.len(), 1);
    assert_eq!(
        record.messages[0].rcpt_to,
        ["a@example.org", "c@example.org"]
    );
}

#[tokio::test]
async fn one_refused_recipient_does_not_stop_the_others() {
    one_bad_recipient_of_three(true).await;
    one_bad_recipient_of_three(false).await;
}

#[tokio::test]
async fn when_every_recipient_is_refused_no_data_is_sent_and_the_session_is_reset() {
    for pipelining in [true, false] {
        let server = TestServer::start(Options {
            pipelining,
            refused_recipients: ["x@example.org".to_string(), "y@example.org".to_string()].into(),
            ..Options::default()
        })
        .await;
        let mut transport = client(&server, FakeTokens::good()).transport();
        let err = transport
            .send(&envelope(&["x@example.org", "y@example.org"]), MESSAGE)
            .await
            .unwrap_err();
        let SmtpError::RecipientsRefused { report } = &err else {
            panic!("{err}");
        };
        assert_eq!(report.refused().count(), 2);
        assert!(err.is_permanent());
        let commands = server.record().commands();
        assert_eq!(commands.last().unwrap(), "RSET");
        assert_eq!(commands.iter().any(|c| c == "DATA"), pipelining);
        assert!(server.record().messages.is_empty());
        // The session survives for the next message.
        transport
            .send(&envelope(&["z@example.org"]), MESSAGE)
            .await
            .unwrap();
        assert_eq!(server.record().connections, 1);
    }
}

#[tokio::test]
async fn one_session_carries_many_messages_with_rset_between() {
    let server = TestServer::start(Options::default()).await;
    let mut transport = client(&server, FakeTokens::good()).transport();
    for to in ["a@example.org", "b@example.org"] {
        let report = transport.send(&envelope(&[to]), MESSAGE).await.unwrap();
        assert!(report.all_accepted());
    }
    assert!(transport.has_idle_connection());
    transport.close().await;
    let record = server.record();
    assert_eq!(record.connections, 1);
    assert_eq!(record.count("AUTH "), 1);
    let transactions: Vec<&str> = record
        .lines
        .iter()
        .map(|(_, l)| l.as_str())
        .filter(|l| {
            ["MAIL", "RSET", "DATA", "QUIT"]
                .iter()
                .any(|p| l.starts_with(p))
        })
        .map(|l| l.split(':').next().unwrap())
        .collect();
    assert_eq!(
        transactions,
        ["MAIL FROM", "DATA", "RSET", "MAIL FROM", "DATA", "QUIT"]
    );
    assert_eq!(record.messages.len(), 2);
}

#[tokio::test]
async fn pipelining_sends_the_envelope_in_one_batch() {
    let server = TestServer::start(Options::default()).await;
    let mut transport = client(&server, FakeTokens::good()).transport();
    let to = ["a@example.org", "b@example.org"];
    transport.send(&envelope(&to), MESSAGE).await.unwrap();
    transport.send(&envelope(&to), MESSAGE).await.unwrap();
    let record = server.record();
    let envelopes: Vec<&Vec<String>> = record
        .batches
        .iter()
        .filter(|b| b.iter().any(|l| l.starts_with("MAIL")))
        .collect();
    assert_eq!(envelopes.len(), 2);
    assert_eq!(
        envelopes[0].len(),
        4,
        "MAIL, 2 RCPT, DATA in one read: {envelopes:?}"
    );
    assert_eq!(envelopes[1][0], "RSET");
    assert_eq!(envelopes[1].len(), 5, "{envelopes:?}");
}

#[tokio::test]
async fn without_pipelining_each_command_waits_for_its_reply() {
    let server = TestServer::start(Options {
        pipelining: false,
        ..Options::default()
    })
    .await;
    let mut transport = client(&server, FakeTokens::good()).transport();
    transport
        .send(&envelope(&["a@example.org", "b@example.org"]), MESSAGE)
        .await
        .unwrap();
    assert!(server.record().batches.iter().all(|b| b.len() == 1));
}

#[tokio::test]
async fn a_session_closed_by_the_server_is_replaced_transparently() {
    let server = TestServer::start(Options {
        rset_421: true,
        ..Options::default()
    })
    .await;
    let mut transport = client(&server, FakeTokens::good()).transport();
    for _ in 0..2 {
        transport
            .send(&envelope(&["a@example.org"]), MESSAGE)
            .await
            .unwrap();
    }
    let record = server.record();
    assert_eq!(record.connections, 2);
    assert_eq!(record.messages.len(), 2, "sent once each, no duplicate");
}

#[tokio::test]
async fn a_session_whose_token_is_too_old_is_replaced() {
    let server = TestServer::start(Options::default()).await;
    let mut cfg = config(&server);
    cfg.max_token_age = Duration::ZERO;
    let tokens = FakeTokens::good();
    let mut transport = SmtpClient::new(cfg, tokens.clone()).unwrap().transport();
    for _ in 0..2 {
        transport
            .send(&envelope(&["a@example.org"]), MESSAGE)
            .await
            .unwrap();
    }
    let record = server.record();
    assert_eq!(record.connections, 2);
    assert_eq!(
        record.count("QUIT"),
        1,
        "the old session was ended politely"
    );
    assert_eq!(tokens.0.fetches.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn size_8bitmime_and_smtputf8_follow_the_server() {
    let small = TestServer::start(Options {
        size: Some(64),
        ..Options::default()
    })
    .await;
    let mut conn = client(&small, FakeTokens::good()).connect().await.unwrap();
    let err = conn
        .send(&envelope(&["a@example.org"]), MESSAGE)
        .await
        .unwrap_err();
    assert!(
        matches!(err, SmtpError::MessageTooLarge { limit: 64, .. }),
        "{err}"
    );
    assert!(err.is_permanent());
    assert_eq!(small.record().count("MAIL"), 0, "refused before sending");
    assert!(conn.is_usable());

    let seven_bit = TestServer::start(Options {
        eight_bit_mime: false,
        smtputf8: false,
        ..Options::default()
    })
    .await;
    let mut conn = client(&seven_bit, FakeTokens::good())
        .connect()
        .await
        .unwrap();
    let latin = "Subject: café\r\n\r\nété\r\n".as_bytes();
    let err = conn
        .send(&envelope(&["a@example.org"]), latin)
        .await
        .unwrap_err();
    assert!(matches!(err, SmtpError::EightBitNotOffered), "{err}");
    let err = conn
        .send(&envelope(&["josé@example.org"]), MESSAGE)
        .await
        .unwrap_err();
    assert!(matches!(err, SmtpError::SmtpUtf8NotOffered), "{err}");

    let modern = TestServer::start(Options::default()).await;
    let mut conn = client(&modern, FakeTokens::good()).connect().await.unwrap();
    conn.send(&envelope(&["josé@example.org"]), latin)
        .await
        .unwrap();
    let record = modern.record();
    let mail = &record.messages[0].mail_from;
    assert!(
        mail.ends_with(&format!("SIZE={} BODY=8BITMIME SMTPUTF8", latin.len())),
        "{mail}"
    );
    assert_eq!(record.messages[0].data, latin);
}

#[tokio::test]
async fn a_silent_server_times_out() {
    let server = TestServer::start(Options {
        silent: true,
        ..Options::default()
    })
    .await;
    let mut cfg = config(&server);
    cfg.timeouts.greeting = Duration::from_millis(200);
    let err = SmtpClient::new(cfg, FakeTokens::good())
        .unwrap()
        .connect()
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            SmtpError::Timeout {
                stage: Stage::Greeting,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.is_transient());
}

#[tokio::test]
async fn mail_from_before_auth_is_explained() {
    // A session that skipped AUTH (here: driven by hand) gets 530 5.7.57 from Exchange.
    let server = TestServer::start(Options::default()).await;
    let cfg = config(&server);
    let tls = tls::client_config(cfg.ca_file.as_deref(), false).unwrap();
    let mut conn = handshake::open(&cfg, &tls, &mut trace::Trace::off())
        .await
        .unwrap();
    let err = conn
        .send(&envelope(&["a@example.org"]), MESSAGE)
        .await
        .unwrap_err();
    assert!(err.reply().unwrap().has_enhanced(5, 7, 57), "{err}");
    assert!(err.explanation().unwrap().contains("not authenticated"));
    assert!(err.is_connection_problem());
}
