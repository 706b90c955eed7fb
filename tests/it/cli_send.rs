//! `postern send`, `postern connection test` and `postern messages`: the real binary against the
//! fake identity provider and the fake Office 365 SMTP server, all on 127.0.0.1.

use fake_provider::idp::{ClientRegistration, IdpConfig};
use fake_provider::smtp::{ALWAYS, SmtpConfig, SmtpTls, Stage, TokenValidator, replies};
use fake_provider::{FakeIdp, FakeSmtp};

use crate::helpers::{CLIENT_ID, Run, TestHome};

const SECRET: &str = "fake~client~secret~postern~send~0123456789";
const USER: &str = "ops@contoso.com";
const SCOPE: &str = "https://outlook.office.com/SMTP.Send offline_access";

/// A Postern home with a delegated (authorization-code) connection `fake`, its refresh token
/// seeded at the fake IdP, pointing at the fake SMTP server.
struct World {
    home: TestHome,
    idp: FakeIdp,
    smtp: FakeSmtp,
}

impl World {
    async fn start(smtp: SmtpConfig) -> Self {
        Self::start_with(smtp, true).await
    }

    /// `trust_ca`: whether the connection is given the fake's CA file.
    async fn start_with(smtp: SmtpConfig, trust_ca: bool) -> Self {
        let idp = FakeIdp::start(
            IdpConfig::default().with_client(ClientRegistration::confidential(CLIENT_ID, SECRET)),
        )
        .await
        .expect("start fake IdP");
        let smtp = FakeSmtp::start(smtp, TokenValidator::Idp(idp.clone()))
            .await
            .expect("start fake SMTP");
        let home = TestHome::new();
        let ca = home.file("ca.pem", &smtp.ca_pem());
        let refresh = home.file(
            "refresh.token",
            &idp.issue_refresh_token(CLIENT_ID, USER, SCOPE),
        );
        let port = smtp.port().to_string();
        let token_url = idp.token_url("contoso.onmicrosoft.com");
        let mut extra = vec![
            "--host",
            "127.0.0.1",
            "--port",
            &port,
            "--token-url",
            &token_url,
            "--refresh-token-file",
            &refresh,
        ];
        if trust_ca {
            extra.extend(["--ca-file", ca.as_str()]);
        }
        home.add_connection("fake", SECRET, &extra).ok();
        World { home, idp, smtp }
    }

    /// Runs the binary; `block_in_place` lets the fakes keep running on this runtime meanwhile.
    fn run(&self, args: &[&str]) -> Run {
        tokio::task::block_in_place(|| self.home.run(args))
    }

    fn run_with_stdin(&self, args: &[&str], input: &str) -> Run {
        tokio::task::block_in_place(|| self.home.run_with_stdin(args, input))
    }

    fn send_eml(&self, name: &str, eml: &str, extra: &[&str]) -> Run {
        let path = self.home.file(name, eml);
        let mut args = vec!["send", "--connection", "fake", "--eml", &path];
        args.extend_from_slice(extra);
        self.run(&args)
    }

    fn messages_json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = vec!["messages"];
        all.extend_from_slice(args);
        all.push("--json");
        serde_json::from_str(&self.run(&all).ok().stdout).expect("messages --json")
    }
}

fn eml(to: &str, subject: &str, body: &str) -> String {
    format!(
        "From: Ops <{USER}>\r\nTo: {to}\r\nSubject: {subject}\r\nMessage-ID: <{subject}@contoso.com>\r\n\
         Date: Fri, 31 Jan 2025 08:00:00 +0000\r\nMIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\r\n{body}"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_test_and_send_deliver_byte_exact_messages() {
    let w = World::start(SmtpConfig::office365()).await;

    let out = w.run(&["connection", "test", "fake", "--to", "me@example.org"]);
    assert_eq!(out.code, 0, "{}", out.all());
    for step in [
        "dns ",
        "tcp ",
        "greeting ",
        "starttls ",
        "tls ",
        "ehlo ",
        "token ",
        "auth ",
        "send ",
    ] {
        assert!(
            out.stdout
                .lines()
                .any(|l| l.starts_with(step) && l.contains(" ok ")),
            "step {step:?} missing or failed:\n{}",
            out.stdout
        );
    }
    assert!(out.stdout.contains("TLSv1_3"), "{}", out.stdout);
    assert!(out.stdout.contains("XOAUTH2"), "{}", out.stdout);
    assert!(out.stdout.contains("valid until"), "{}", out.stdout);
    assert!(out.stdout.contains("PASSED"), "{}", out.stdout);
    assert!(out.stdout.contains("250 2.6.0"), "{}", out.stdout);
    assert!(
        out.stdout
            .contains("delivery to the final mailbox is not tracked")
    );
    let got = w.smtp.messages();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].rcpt_to, ["me@example.org"]);
    assert_eq!(got[0].mail_from, USER);
    let text = String::from_utf8_lossy(&got[0].data);
    assert!(
        text.contains("Subject: Postern test message via connection fake ("),
        "{text}"
    );

    // A ready message goes out byte for byte, envelope from its headers, leading dot and all.
    let message = eml(
        "a@example.org, B <b@example.org>",
        "exact",
        "Line one\r\n.leading dot survives\r\n\r\nlast line\r\n",
    );
    let out = w.send_eml("exact.eml", &message, &[]);
    assert_eq!(out.code, 0, "{}", out.all());
    let sent = out
        .stdout
        .lines()
        .filter(|l| l.starts_with("sent "))
        .count();
    assert_eq!(sent, 2, "{}", out.stdout);
    assert!(out.stdout.contains("250 2.6.0"), "{}", out.stdout);
    assert!(
        out.stdout
            .contains("delivery to the final mailbox is not tracked")
    );
    let got = w.smtp.messages();
    assert_eq!(got.len(), 2);
    assert_eq!(got[1].data, message.as_bytes());
    assert_eq!(got[1].rcpt_to, ["a@example.org", "b@example.org"]);
    assert_eq!(got[1].mail_from, USER);
    assert!(got[1].tls);

    // The same from standard input, with the envelope from the flags.
    let out = w.run_with_stdin(
        &["send", "--connection", "fake", "--to", "c@example.org", "-"],
        &message,
    );
    assert_eq!(out.code, 0, "{}", out.all());
    let got = w.smtp.messages();
    assert_eq!(got[2].data, message.as_bytes());
    assert_eq!(got[2].rcpt_to, ["c@example.org"]);

    // Built from flags: Date, Message-ID, MIME; Bcc in the envelope only.
    let out = w.run(&[
        "send",
        "--connection",
        "fake",
        "--to",
        "d@example.org",
        "--bcc",
        "hidden@example.org",
        "--subject",
        "Built",
        "--text",
        "Hello from the CLI",
    ]);
    assert_eq!(out.code, 0, "{}", out.all());
    let got = w.smtp.messages();
    assert_eq!(got[3].rcpt_to, ["d@example.org", "hidden@example.org"]);
    let text = String::from_utf8_lossy(&got[3].data);
    for header in [
        "Subject: Built\r\n",
        "Date: ",
        "Message-ID: <",
        "MIME-Version: 1.0",
        "From: <ops@contoso.com>",
    ] {
        assert!(text.contains(header), "{header:?} missing:\n{text}");
    }
    assert!(
        !text.contains("hidden@"),
        "Bcc leaked into the message:\n{text}"
    );
    assert!(text.contains("Hello from the CLI"), "{text}");

    // Every one of them is in the sent-mail log.
    let list = w.messages_json(&["list", "--connection", "fake", "--since", "1h"]);
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 4);
    assert!(
        list.iter()
            .all(|m| m["status"] == "sent" && m["source"] == "cli")
    );
    let exact = list.iter().find(|m| m["subject"] == "exact").unwrap();
    assert_eq!(exact["message_id"], "<exact@contoso.com>");
    assert_eq!(exact["size"], message.len());
    assert_eq!(exact["attempts"], 1);
    let id = exact["id"].as_str().unwrap();
    let show = w.run(&["messages", "show", id]).ok();
    assert!(
        show.stdout.contains("<exact@contoso.com>"),
        "{}",
        show.stdout
    );
    assert!(show.stdout.contains("250 2.6.0"), "{}", show.stdout);
    assert!(show.stdout.contains("not tracked"), "{}", show.stdout);
    assert!(
        show.stdout
            .contains("not kept: dropped when the provider accepted the message"),
        "{}",
        show.stdout
    );
    let table = w.run(&["messages", "list", "--to", "d@example.org"]).ok();
    assert!(table.stdout.contains("Built"), "{}", table.stdout);
    assert!(!table.stdout.contains("exact"), "{}", table.stdout);
    let gone = w.run(&["messages", "show", "nope"]);
    assert_eq!(gone.code, 2);
    assert!(
        gone.stderr
            .contains("deleted 90 days after they finish (retention.log_days)"),
        "{}",
        gone.stderr
    );
    assert_eq!(w.run(&["messages", "list", "--since", "soon"]).code, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_token_gets_one_forced_refresh_and_the_message_goes_through() {
    let w = World::start(SmtpConfig::office365()).await;
    let message = eml("a@example.org", "first", "one\r\n");
    w.send_eml("1.eml", &message, &[]).ok();
    assert_eq!(w.idp.counters().refresh_token, 1);

    w.idp.revoke_all_access_tokens();
    let message = eml("a@example.org", "second", "two\r\n");
    let out = w.send_eml("2.eml", &message, &[]);
    assert_eq!(out.code, 0, "{}", out.all());
    // The cached token was refused once (535 5.7.3), refreshed once, and AUTH passed.
    assert_eq!(w.idp.counters().refresh_token, 2);
    assert_eq!(w.smtp.counters().auth_failures, 1);
    let got = w.smtp.messages();
    assert_eq!(got.len(), 2);
    assert_eq!(got[1].data, message.as_bytes());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smtp_auth_disabled_is_explained_without_a_retry() {
    let w = World::start(SmtpConfig::office365()).await;
    w.smtp.inject(Stage::Auth, replies::AUTH_DISABLED, ALWAYS);
    let out = w.send_eml("m.eml", &eml("a@example.org", "blocked", "x\r\n"), &[]);
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(out.stdout.contains("535 5.7.139"), "{}", out.stdout);
    assert!(out.stdout.contains("Set-CASMailbox"), "{}", out.stdout);
    // One AUTH, one token: a fresh token cannot help, so none was asked for.
    assert_eq!(w.smtp.counters().auth_failures, 1);
    assert_eq!(w.smtp.counters().auth_successes, 0);
    assert_eq!(w.idp.counters().refresh_token, 1);
    assert!(w.smtp.messages().is_empty());

    let out = w.run(&["connection", "test", "fake"]);
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(out.stdout.contains("FAILED at AUTH"), "{}", out.stdout);
    assert!(out.stdout.contains("Set-CASMailbox"), "{}", out.stdout);

    let failed = w.messages_json(&["list", "--status", "failed"]);
    assert_eq!(failed.as_array().unwrap().len(), 2);
    assert!(
        failed[0]["last_error"]
            .as_str()
            .unwrap()
            .contains("5.7.139")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_bad_recipient_among_three() {
    let w = World::start(SmtpConfig::office365()).await;
    w.smtp.inject(
        Stage::Rcpt(Some("nobody@example.org".into())),
        replies::UNKNOWN_RECIPIENT,
        1,
    );
    let out = w.run(&[
        "send",
        "--connection",
        "fake",
        "--to",
        "a@example.org,nobody@example.org",
        "--cc",
        "c@example.org",
        "--subject",
        "three",
        "--text",
        "hello",
    ]);
    assert_eq!(out.code, 1, "{}", out.all());
    let line = |addr: &str| {
        out.stdout
            .lines()
            .find(|l| l.contains(addr))
            .unwrap_or_else(|| panic!("{addr} missing:\n{}", out.stdout))
            .to_string()
    };
    assert!(line("a@example.org").starts_with("sent "), "{}", out.stdout);
    assert!(line("c@example.org").starts_with("sent "), "{}", out.stdout);
    let bad = line("nobody@example.org");
    assert!(
        bad.starts_with("failed ") && bad.contains("550 5.1.1"),
        "{bad}"
    );
    assert!(out.stderr.contains("1 of 3"), "{}", out.stderr);
    let got = w.smtp.messages();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].rcpt_to, ["a@example.org", "c@example.org"]);

    let list = w.messages_json(&["list"]);
    let id = list[0]["id"].as_str().unwrap();
    let detail: serde_json::Value =
        serde_json::from_str(&w.run(&["messages", "show", id, "--json"]).ok().stdout).unwrap();
    let statuses: Vec<&str> = detail["recipient_results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["sent", "failed", "sent"]);
    assert!(
        detail["recipient_results"][1]["reply"]
            .as_str()
            .unwrap()
            .contains("550 5.1.1")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_bit_bodies_and_utf8_addresses() {
    let w = World::start(SmtpConfig::office365()).await;
    let body = "Grüße aus Köln — 8-bit, not encoded\r\n";
    let message = eml("a@example.org", "eightbit", body);
    w.send_eml("8bit.eml", &message, &[]).ok();
    let got = w.smtp.messages();
    assert_eq!(got[0].data, message.as_bytes());
    assert!(
        got[0].mail_params.iter().any(|p| p == "BODY=8BITMIME"),
        "{:?}",
        got[0].mail_params
    );
    assert!(!got[0].mail_params.iter().any(|p| p == "SMTPUTF8"));

    let message = eml("jürgen@exämple.de", "utf8", "Hallo Jürgen\r\n");
    w.send_eml("utf8.eml", &message, &[]).ok();
    let got = w.smtp.messages();
    assert_eq!(got[1].data, message.as_bytes());
    assert_eq!(got[1].rcpt_to, ["jürgen@exämple.de"]);
    assert!(
        got[1].mail_params.iter().any(|p| p == "SMTPUTF8"),
        "{:?}",
        got[1].mail_params
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_without_starttls_is_refused_and_nothing_goes_in_cleartext() {
    let w = World::start(SmtpConfig {
        tls: SmtpTls::NoStartTls,
        ..SmtpConfig::office365()
    })
    .await;
    let out = w.run(&["connection", "test", "fake", "--to", "a@example.org"]);
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(out.stdout.contains("FAILED at STARTTLS"), "{}", out.stdout);
    assert!(out.stdout.contains("cleartext"), "{}", out.stdout);
    let out = w.send_eml("m.eml", &eml("a@example.org", "plain", "x\r\n"), &[]);
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(
        out.stdout.contains("does not offer STARTTLS"),
        "{}",
        out.stdout
    );
    let c = w.smtp.counters();
    assert_eq!((c.cleartext_auth_attempts, c.messages), (0, 0));
    // The token was never even fetched: the session stopped before AUTH.
    assert_eq!(w.idp.counters().total, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_certificate_is_refused_until_its_ca_file_is_configured() {
    let w = World::start_with(SmtpConfig::office365(), false).await;
    let out = w.run(&["connection", "test", "fake", "--to", "a@example.org"]);
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(
        out.stdout.contains("FAILED at TLS handshake"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("--ca-file"), "{}", out.stdout);
    let c = w.smtp.counters();
    assert_eq!((c.auth_successes + c.auth_failures, c.messages), (0, 0));
    assert_eq!(w.idp.counters().total, 0);

    let ca = w.home.path().join("ca.pem").display().to_string();
    w.run(&["connection", "edit", "fake", "--ca-file", &ca])
        .ok();
    let out = w.run(&["connection", "test", "fake", "--to", "a@example.org"]);
    assert_eq!(out.code, 0, "{}", out.all());
    assert_eq!(w.smtp.messages().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_for_another_name_is_refused_even_with_the_ca() {
    let w = World::start(SmtpConfig {
        cert_names: vec!["smtp.elsewhere.example".into()],
        ..SmtpConfig::office365()
    })
    .await;
    let out = w.run(&["connection", "test", "fake", "--to", "a@example.org"]);
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(
        out.stdout.contains("not issued for `127.0.0.1`"),
        "{}",
        out.stdout
    );
    assert_eq!(w.smtp.counters().messages, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_as_another_address_explains_the_sendas_right_when_denied() {
    let w = World::start(SmtpConfig::office365()).await;
    w.smtp.inject(Stage::DataEnd, replies::SEND_AS_DENIED, 1);
    let out = w.run(&[
        "send",
        "--connection",
        "fake",
        "--from",
        "shared@contoso.com",
        "--to",
        "a@example.org",
        "--subject",
        "as shared",
        "--text",
        "x",
    ]);
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(
        out.stderr.contains("needs the SendAs right"),
        "{}",
        out.stderr
    );
    assert!(out.stdout.contains("SendAsDenied"), "{}", out.stdout);
    assert!(
        out.stdout.contains("Add-RecipientPermission"),
        "{}",
        out.stdout
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_a_usage_error_and_nothing_is_sent() {
    let w = World::start(SmtpConfig::office365()).await;
    let base = ["send", "--connection", "fake"];
    let cases: [&[&str]; 5] = [
        &[
            "--to",
            "a@example.org\r\nRCPT TO:<x@y>",
            "--subject",
            "s",
            "--text",
            "t",
        ],
        &["--to", "a@example.org", "--text", "no subject"],
        &["--to", "a@example.org", "--subject", "no body"],
        &[
            "--to",
            "a@example.org",
            "--subject",
            "two\r\nBcc: x@y.z",
            "--text",
            "t",
        ],
        &[
            "--from",
            "not-an-address",
            "--to",
            "a@example.org",
            "--subject",
            "s",
            "--text",
            "t",
        ],
    ];
    for extra in cases {
        let args = [&base[..], extra].concat();
        let out = w.run(&args);
        assert_eq!(out.code, 2, "{extra:?}: {}", out.all());
    }
    assert_eq!(
        w.run(&[
            "send",
            "--connection",
            "nope",
            "--to",
            "a@example.org",
            "--subject",
            "s",
            "--text",
            "t"
        ])
        .code,
        2
    );
    assert_eq!(w.smtp.counters().connections, 0);
    assert!(w.messages_json(&["list"]).as_array().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_cannot_send_says_what_to_run_and_records_nothing() {
    let w = World::start(SmtpConfig::office365()).await;
    let port = w.smtp.port().to_string();
    w.home
        .add_connection(
            "unauthorized",
            SECRET,
            &["--host", "127.0.0.1", "--port", &port],
        )
        .ok();
    let out = w.run(&[
        "connection",
        "test",
        "unauthorized",
        "--to",
        "a@example.org",
    ]);
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(out.stdout.contains("FAILED at status"), "{}", out.stdout);
    assert!(
        out.stdout
            .contains("postern connection authorize unauthorized"),
        "{}",
        out.stdout
    );

    w.run(&["connection", "disable", "fake"]).ok();
    let out = w.send_eml("m.eml", &eml("a@example.org", "off", "x\r\n"), &[]);
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(
        out.stderr.contains("postern connection enable fake"),
        "{}",
        out.stderr
    );
    assert_eq!(w.smtp.counters().connections, 0);
    assert!(w.messages_json(&["list"]).as_array().unwrap().is_empty());
}
