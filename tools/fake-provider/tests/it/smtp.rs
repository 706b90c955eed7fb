//! The fake SMTP server, driven by the hand-written client over real TLS.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use fake_provider::idp::{DEFAULT_CLIENT_ID, IdpConfig};
use fake_provider::smtp::{SmtpConfig, SmtpTls, Stage, TokenValidator, replies};
use fake_provider::{FakeIdp, FakeSmtp};

use crate::client::{SmtpClient, xoauth2};

const USER: &str = "mailbox@contoso.example";
const OUTLOOK: &str = "https://outlook.office.com/SMTP.Send";

async fn office() -> (FakeIdp, FakeSmtp) {
    let idp = FakeIdp::start(IdpConfig::default()).await.unwrap();
    let smtp = FakeSmtp::start(SmtpConfig::default(), TokenValidator::Idp(idp.clone()))
        .await
        .unwrap();
    (idp, smtp)
}

/// Connect, EHLO, STARTTLS, EHLO again; returns the client and the second EHLO text.
async fn secure(smtp: &FakeSmtp) -> (SmtpClient, String) {
    let mut c = SmtpClient::connect(smtp.addr()).await;
    c.reply().await;
    c.cmd("EHLO client.example").await;
    c.starttls(smtp.ca().client_config().unwrap())
        .await
        .unwrap();
    let ehlo = c.cmd("EHLO client.example").await;
    assert_eq!(ehlo.code, 250);
    (c, ehlo.text)
}

#[tokio::test]
async fn office_session_over_starttls_records_the_exact_message() {
    let (idp, smtp) = office().await;
    let token = idp.issue_access_token(DEFAULT_CLIENT_ID, USER, OUTLOOK);
    assert!(token.len() > 1000, "tokens are long like Microsoft's");

    let mut c = SmtpClient::connect(smtp.addr()).await;
    let banner = c.reply().await;
    assert_eq!(
        (banner.code, banner.text.as_str()),
        (220, "fake.outlook.test Microsoft ESMTP MAIL Service ready")
    );
    let ehlo = c.cmd("EHLO client.example").await;
    for cap in [
        "SIZE 157286400",
        "PIPELINING",
        "STARTTLS",
        "8BITMIME",
        "CHUNKING",
        "SMTPUTF8",
    ] {
        assert!(
            ehlo.text.lines().any(|l| l == cap),
            "missing {cap} in {}",
            ehlo.text
        );
    }
    assert!(!ehlo.text.contains("AUTH"), "no AUTH before TLS");
    c.starttls(smtp.ca().client_config().unwrap())
        .await
        .unwrap();
    let ehlo = c.cmd("EHLO client.example").await;
    assert!(
        ehlo.text.lines().any(|l| l == "AUTH LOGIN XOAUTH2"),
        "{}",
        ehlo.text
    );
    assert!(!ehlo.text.contains("STARTTLS"));

    let r = c.cmd("MAIL FROM:<mailbox@contoso.example>").await;
    assert_eq!(r.code, 530);
    assert!(
        r.text
            .starts_with("5.7.57 Client not authenticated to send mail."),
        "{}",
        r.text
    );

    assert_eq!(c.cmd("AUTH XOAUTH2").await.code, 334);
    assert_eq!(c.cmd(&xoauth2(USER, &token)).await.code, 235);

    assert_eq!(
        c.cmd("MAIL FROM:<mailbox@contoso.example> SIZE=60 BODY=8BITMIME")
            .await
            .code,
        250
    );
    assert_eq!(c.cmd("RCPT TO:<a@example.net>").await.code, 250);
    assert_eq!(c.cmd("RCPT TO:<b@example.net>").await.code, 250);
    assert_eq!(c.cmd("DATA").await.code, 354);
    // "..dots" is the dot-stuffed form of ".dots"; a bare LF stays as it is.
    let r = c.cmd("Subject: hi\r\n\r\n..dots\r\nline\nnext\r\n.").await;
    assert_eq!(r.code, 250, "{r:?}");
    assert_eq!(c.cmd("QUIT").await.code, 221);

    let msgs = smtp.wait_for_messages(1, Duration::from_secs(5)).await;
    assert_eq!(msgs.len(), 1);
    let m = &msgs[0];
    assert_eq!(m.data, b"Subject: hi\r\n\r\n.dots\r\nline\nnext\r\n");
    assert_eq!(m.mail_from, USER);
    assert_eq!(m.rcpt_to, vec!["a@example.net", "b@example.net"]);
    assert_eq!(m.auth_user.as_deref(), Some(USER));
    assert!(m.tls);
    assert_eq!(m.mail_params, vec!["SIZE=60", "BODY=8BITMIME"]);
    let n = smtp.counters();
    assert_eq!(
        (
            n.auth_successes,
            n.messages,
            n.tls_handshakes,
            n.cleartext_auth_attempts
        ),
        (1, 1, 1, 0)
    );
}

#[tokio::test]
async fn pipelined_commands_are_answered_in_order_and_long_one_line_auth_works() {
    let (idp, smtp) = office().await;
    let token = idp.issue_access_token(DEFAULT_CLIENT_ID, USER, OUTLOOK);
    let (mut c, _) = secure(&smtp).await;
    // One-line form, longer than 512 octets: allowed for AUTH (RFC 4954).
    assert_eq!(
        c.cmd(&format!("AUTH XOAUTH2 {}", xoauth2(USER, &token)))
            .await
            .code,
        235
    );
    c.write(b"MAIL FROM:<mailbox@contoso.example>\r\nRCPT TO:<a@example.net>\r\nRCPT TO:<b@example.net>\r\nDATA\r\n")
        .await;
    let codes = [
        c.reply().await.code,
        c.reply().await.code,
        c.reply().await.code,
        c.reply().await.code,
    ];
    assert_eq!(codes, [250, 250, 250, 354]);
    c.write(b"x\r\n.\r\nRSET\r\nNOOP\r\n").await;
    let codes = [
        c.reply().await.code,
        c.reply().await.code,
        c.reply().await.code,
    ];
    assert_eq!(codes, [250, 250, 250]);
    let long = format!("NOOP {}", "x".repeat(600));
    assert_eq!(
        c.cmd(&long).await.code,
        500,
        "other commands keep the 512-octet limit"
    );
    assert_eq!(
        smtp.wait_for_messages(1, Duration::from_secs(5)).await[0].data,
        b"x\r\n"
    );
}

#[tokio::test]
async fn bad_graph_or_revoked_tokens_get_535_5_7_3() {
    let (idp, smtp) = office().await;
    let graph = idp.issue_access_token(
        DEFAULT_CLIENT_ID,
        USER,
        "https://graph.microsoft.com/Mail.Send",
    );
    let good = idp.issue_access_token(DEFAULT_CLIENT_ID, USER, OUTLOOK);
    let (mut c, _) = secure(&smtp).await;
    for (user, token) in [
        (USER, "garbage"),
        (USER, graph.as_str()),
        ("other@contoso.example", good.as_str()),
    ] {
        let r = c
            .cmd(&format!("AUTH XOAUTH2 {}", xoauth2(user, token)))
            .await;
        assert_eq!(r.code, 535);
        assert!(
            r.text.starts_with("5.7.3 Authentication unsuccessful"),
            "{}",
            r.text
        );
    }
    idp.revoke_access_token(&good);
    assert_eq!(
        c.cmd(&format!("AUTH XOAUTH2 {}", xoauth2(USER, &good)))
            .await
            .code,
        535
    );
    assert_eq!(smtp.counters().auth_failures, 4);
}

#[tokio::test]
async fn gmail_mode_challenges_then_535_and_accepts_oauthbearer() {
    let idp = FakeIdp::start(IdpConfig::default()).await.unwrap();
    let smtp = FakeSmtp::start(SmtpConfig::gmail(), TokenValidator::Idp(idp.clone()))
        .await
        .unwrap();
    let (mut c, ehlo) = secure(&smtp).await;
    assert!(
        ehlo.contains("OAUTHBEARER") && ehlo.contains("XOAUTH2"),
        "{ehlo}"
    );
    let r = c
        .cmd(&format!("AUTH XOAUTH2 {}", xoauth2(USER, "expired")))
        .await;
    assert_eq!(r.code, 334);
    let json: serde_json::Value =
        serde_json::from_slice(&STANDARD.decode(&r.text).unwrap()).unwrap();
    assert_eq!(json["status"], "401");
    let r = c.cmd("").await;
    assert_eq!(r.code, 535);
    assert!(
        r.text
            .starts_with("5.7.8 Username and Password not accepted"),
        "{}",
        r.text
    );

    let token = idp.issue_access_token(DEFAULT_CLIENT_ID, USER, "https://mail.google.com/");
    let msg = format!("n,a={USER},\x01host=localhost\x01port=587\x01auth=Bearer {token}\x01\x01");
    assert_eq!(c.cmd("AUTH OAUTHBEARER").await.code, 334);
    assert_eq!(c.cmd(&STANDARD.encode(msg)).await.code, 235);
}

#[tokio::test]
async fn gmail_mode_oauthbearer_refusal_wants_the_x01_answer() {
    let idp = FakeIdp::start(IdpConfig::default()).await.unwrap();
    let smtp = FakeSmtp::start(SmtpConfig::gmail(), TokenValidator::Idp(idp.clone()))
        .await
        .unwrap();
    let bad = format!("n,a={USER},\x01host=localhost\x01port=587\x01auth=Bearer expired\x01\x01");
    for (answer, code) in [("AQ==", 535), ("", 501)] {
        let (mut c, _) = secure(&smtp).await;
        assert_eq!(c.cmd("AUTH OAUTHBEARER").await.code, 334);
        let r = c.cmd(&STANDARD.encode(&bad)).await;
        assert_eq!(r.code, 334);
        let json: serde_json::Value =
            serde_json::from_slice(&STANDARD.decode(&r.text).unwrap()).unwrap();
        assert_eq!(json["status"], "400");
        assert_eq!(json["schemes"], "Bearer");
        assert_eq!(json["scope"], "https://mail.google.com/");
        assert_eq!(c.cmd(answer).await.code, code, "answer {answer:?}");
    }
}

#[tokio::test]
async fn injected_replies() {
    let smtp = FakeSmtp::start(SmtpConfig::default(), TokenValidator::AcceptAny)
        .await
        .unwrap();
    smtp.inject(Stage::Connect, replies::CONCURRENT_LIMIT, 1);
    let mut c = SmtpClient::connect(smtp.addr()).await;
    assert_eq!(c.reply().await.code, 432);
    assert!(c.closed().await);

    smtp.inject(Stage::Auth, replies::AUTH_DISABLED, 1);
    smtp.inject(
        Stage::Rcpt(Some("gone@example.net".into())),
        replies::UNKNOWN_RECIPIENT,
        1,
    );
    smtp.inject(Stage::DataEnd, replies::SEND_AS_DENIED, 1);
    let (mut c, _) = secure(&smtp).await;
    let r = c.cmd(&format!("AUTH XOAUTH2 {}", xoauth2(USER, "t"))).await;
    assert_eq!(r.code, 535);
    assert!(r.text.starts_with("5.7.139"), "{}", r.text);
    assert_eq!(
        c.cmd(&format!("AUTH XOAUTH2 {}", xoauth2(USER, "t")))
            .await
            .code,
        235
    );
    assert_eq!(c.cmd("MAIL FROM:<x@contoso.example>").await.code, 250);
    assert_eq!(c.cmd("RCPT TO:<gone@example.net>").await.code, 550);
    assert_eq!(c.cmd("RCPT TO:<ok@example.net>").await.code, 250);
    assert_eq!(c.cmd("DATA").await.code, 354);
    let r = c.cmd("body\r\n.").await;
    assert_eq!(r.code, 554);
    assert!(r.text.contains("SendAsDenied"));
    assert!(smtp.messages().is_empty());

    smtp.inject(Stage::Data, replies::TEMP_ERROR, 1);
    assert_eq!(c.cmd("MAIL FROM:<x@contoso.example>").await.code, 250);
    assert_eq!(c.cmd("RCPT TO:<ok@example.net>").await.code, 250);
    assert_eq!(c.cmd("DATA").await.code, 451);

    smtp.set_down(true);
    assert_eq!(c.cmd("NOOP").await.code, 421);
    assert!(c.closed().await);
    let mut c = SmtpClient::connect(smtp.addr()).await;
    assert_eq!(c.reply().await.code, 421);
}

#[tokio::test]
async fn wrong_certificate_name_is_refused_by_a_verifying_client() {
    let config = SmtpConfig {
        cert_names: vec!["wrong.example".into()],
        ..SmtpConfig::default()
    };
    let smtp = FakeSmtp::start(config, TokenValidator::AcceptAny)
        .await
        .unwrap();
    let mut c = SmtpClient::connect(smtp.addr()).await;
    c.reply().await;
    c.cmd("EHLO client.example").await;
    assert!(
        c.starttls(smtp.ca().client_config().unwrap())
            .await
            .is_err()
    );
    // Give the server a moment to see the aborted handshake (bounded).
    for _ in 0..100 {
        if smtp.counters().tls_failures == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(smtp.counters().tls_failures, 1);
}

#[tokio::test]
async fn implicit_tls_and_no_starttls_modes() {
    let config = SmtpConfig {
        tls: SmtpTls::Implicit,
        ..SmtpConfig::default()
    };
    let smtp = FakeSmtp::start(config, TokenValidator::AcceptAny)
        .await
        .unwrap();
    let mut c = SmtpClient::connect_tls(smtp.addr(), smtp.ca().client_config().unwrap())
        .await
        .unwrap();
    assert_eq!(c.reply().await.code, 220);
    let ehlo = c.cmd("EHLO client.example").await;
    assert!(ehlo.text.contains("AUTH LOGIN XOAUTH2") && !ehlo.text.contains("STARTTLS"));

    let config = SmtpConfig {
        tls: SmtpTls::NoStartTls,
        ..SmtpConfig::default()
    };
    let smtp = FakeSmtp::start(config, TokenValidator::AcceptAny)
        .await
        .unwrap();
    let mut c = SmtpClient::connect(smtp.addr()).await;
    c.reply().await;
    let ehlo = c.cmd("EHLO client.example").await;
    assert!(!ehlo.text.contains("STARTTLS") && ehlo.text.contains("AUTH"));
    assert_eq!(c.cmd("STARTTLS").await.code, 500);
    c.cmd(&format!("AUTH XOAUTH2 {}", xoauth2(USER, "t"))).await;
    assert_eq!(smtp.counters().cleartext_auth_attempts, 1);
}

#[tokio::test]
async fn bdat_size_limit_and_stop_listening() {
    let config = SmtpConfig {
        max_size: 100,
        ..SmtpConfig::default()
    };
    let smtp = FakeSmtp::start(config, TokenValidator::AcceptAny)
        .await
        .unwrap();
    let (mut c, _) = secure(&smtp).await;
    assert_eq!(
        c.cmd(&format!("AUTH XOAUTH2 {}", xoauth2(USER, "t")))
            .await
            .code,
        235
    );
    assert_eq!(
        c.cmd("MAIL FROM:<x@contoso.example> SIZE=101").await.code,
        552
    );
    assert_eq!(
        c.cmd("MAIL FROM:<x@contoso.example> SIZE=10 SMTPUTF8")
            .await
            .code,
        250
    );
    assert_eq!(c.cmd("RCPT TO:<ok@example.net>").await.code, 250);
    c.write(b"BDAT 3\r\nab.BDAT 5 LAST\r\n\r\n.\r\n").await;
    assert_eq!(c.reply().await.code, 250);
    assert_eq!(c.reply().await.code, 250);
    assert_eq!(
        smtp.wait_for_messages(1, Duration::from_secs(5)).await[0].data,
        b"ab.\r\n.\r\n"
    );

    smtp.stop_listening();
    let mut refused = false;
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(smtp.addr()).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(refused, "listener closed");
}

#[tokio::test]
async fn sessions_are_counted_per_mailbox_and_arrivals_reach_the_hook() {
    let (idp, smtp) = office().await;
    let arrived = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = arrived.clone();
    smtp.on_arrival(move |m| seen.lock().unwrap().push(m.data.clone()));
    let other = "other@contoso.example";
    let login = |user: &'static str| {
        let (idp, smtp) = (idp.clone(), smtp.clone());
        async move {
            let token = idp.issue_access_token(DEFAULT_CLIENT_ID, user, OUTLOOK);
            let (mut c, _) = secure(&smtp).await;
            let auth = format!("AUTH XOAUTH2 {}", xoauth2(user, &token));
            assert_eq!(c.cmd(&auth).await.code, 235);
            c
        }
    };
    // An unauthenticated session counts for nobody.
    let (_anonymous, _) = secure(&smtp).await;
    let mut a1 = login(USER).await;
    let a2 = login(USER).await;
    let b = login(other).await;
    let peaks = smtp.session_peaks();
    assert_eq!((peaks[USER], peaks[other], peaks.len()), (2, 1, 2));

    assert_eq!(a1.cmd(&format!("MAIL FROM:<{USER}>")).await.code, 250);
    assert_eq!(a1.cmd("RCPT TO:<a@example.net>").await.code, 250);
    assert_eq!(a1.cmd("DATA").await.code, 354);
    assert_eq!(a1.cmd("Subject: hook\r\n\r\nbody\r\n.").await.code, 250);
    assert_eq!(
        arrived.lock().unwrap().as_slice(),
        [b"Subject: hook\r\n\r\nbody\r\n".to_vec()]
    );

    // Closed sessions stop counting: after a reset the peak is what is open now.
    for mut c in [a1, a2, b] {
        assert_eq!(c.cmd("QUIT").await.code, 221);
        assert!(c.closed().await);
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        smtp.reset_session_peaks();
        if smtp.session_peaks().values().all(|&p| p == 0) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "sessions never closed"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut again = login(other).await;
    assert_eq!(smtp.session_peaks()[other], 1);
    assert_eq!(again.cmd("QUIT").await.code, 221);
}
