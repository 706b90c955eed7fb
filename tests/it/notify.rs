//! Telling the admin: the real `postern serve` against the fake IdP and SMTP server, with a
//! webhook receiver on 127.0.0.1 that checks each call's signature.

use std::io::BufRead;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fake_provider::idp::{ClientRegistration, IdpConfig};
use fake_provider::smtp::{SmtpConfig, TokenValidator};
use fake_provider::{FakeIdp, FakeSmtp};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::helpers::{CLIENT_ID, Run, TestHome};

const SECRET: &str = "fake~client~secret~notify~0123456789";
const WEBHOOK_SECRET: &str = "whsec-notify-test-5f0c2a9e";
const MAILER: &str = "ops@contoso.com";
pub(crate) const BROKEN: &str = "sales@contoso.com";
const SCOPE: &str = "https://outlook.office.com/SMTP.Send offline_access";

/// Calls the receiver got: (Postern-Signature header, body).
type Calls = Arc<Mutex<Vec<(String, String)>>>;

async fn webhook_receiver() -> (String, Calls) {
    let calls: Calls = Arc::default();
    let seen = calls.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: axum::http::HeaderMap, body: String| {
            let seen = seen.clone();
            async move {
                let sig = headers
                    .get("postern-signature")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string();
                seen.lock().unwrap().push((sig, body));
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, calls)
}

/// What a receiver must do: recompute the HMAC over "<t>.<body>" and refuse stale timestamps.
fn verify(sig: &str, body: &str) -> serde_json::Value {
    let (t, v1) = sig
        .strip_prefix("t=")
        .and_then(|r| r.split_once(",v1="))
        .unwrap_or_else(|| panic!("malformed signature {sig:?}"));
    let t: i64 = t.parse().unwrap();
    assert!(
        (chrono::Utc::now().timestamp() - t).abs() < 300,
        "stale timestamp"
    );
    let mut mac = Hmac::<Sha256>::new_from_slice(WEBHOOK_SECRET.as_bytes()).unwrap();
    mac.update(format!("{t}.{body}").as_bytes());
    let want: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(v1, want, "signature does not match the body");
    serde_json::from_str(body).unwrap()
}

pub(crate) struct World {
    pub(crate) home: TestHome,
    pub(crate) idp: FakeIdp,
    smtp: FakeSmtp,
    calls: Calls,
}

impl World {
    pub(crate) async fn start() -> Self {
        let idp = FakeIdp::start(
            IdpConfig::default().with_client(ClientRegistration::confidential(CLIENT_ID, SECRET)),
        )
        .await
        .unwrap();
        let smtp = FakeSmtp::start(SmtpConfig::office365(), TokenValidator::Idp(idp.clone()))
            .await
            .unwrap();
        // Inside the refresh margin: every token request goes to the IdP, as after an hour.
        idp.set_expires_in(60);
        let (url, calls) = webhook_receiver().await;
        let home = TestHome::new();
        let ca = home.file("ca.pem", &smtp.ca_pem());
        let token_url = idp.token_url("contoso.onmicrosoft.com");
        let port = smtp.port().to_string();
        let rt = home.file(
            "mailer.rt",
            &idp.issue_refresh_token(CLIENT_ID, MAILER, SCOPE),
        );
        home.add_connection(
            "mailer",
            SECRET,
            &[
                "--host",
                "127.0.0.1",
                "--port",
                &port,
                "--ca-file",
                &ca,
                "--token-url",
                &token_url,
                "--refresh-token-file",
                &rt,
            ],
        )
        .ok();
        let rt = home.file(
            "broken.rt",
            &idp.issue_refresh_token(CLIENT_ID, BROKEN, SCOPE),
        );
        home.add_connection(
            "broken",
            SECRET,
            &[
                "--host",
                "127.0.0.1",
                "--port",
                &port,
                "--ca-file",
                &ca,
                "--token-url",
                &token_url,
                "--refresh-token-file",
                &rt,
            ],
        )
        .ok();
        home.run(&["connection", "edit", "broken", "--user", BROKEN])
            .ok();
        home.file("webhook.secret", &format!("{WEBHOOK_SECRET}\n"));
        home.file(
            "postern.toml",
            &format!(
                "[notifications]\nwebhook_url = \"{url}\"\nwebhook_secret_file = \"webhook.secret\"\n\
                 email_connection = \"mailer\"\nemail_to = [\"admin1@example.com\", \"admin2@example.com\"]\n\
                 poll_secs = 1\n"
            ),
        );
        World {
            home,
            idp,
            smtp,
            calls,
        }
    }

    pub(crate) fn run(&self, args: &[&str]) -> Run {
        tokio::task::block_in_place(|| self.home.run(args))
    }

    /// Starts `serve`; returns it and its HTTP address.
    fn serve(&self) -> (Child, String) {
        let log = std::fs::File::create(self.home.path().join("serve.log")).unwrap();
        let mut child = self
            .home
            .cmd(&[
                "serve",
                "--http-listen",
                "127.0.0.1:0",
                "--smtp-listen",
                "127.0.0.1:0",
            ])
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let addr = loop {
            let line = lines.next().expect("serve printed its address").unwrap();
            if let Some(rest) = line.split("http://").nth(1) {
                break rest.split_whitespace().next().unwrap().to_string();
            }
        };
        (child, addr)
    }

    fn webhook_events(&self) -> Vec<serde_json::Value> {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .map(|(s, b)| verify(s, b))
            .collect()
    }

    /// Waits (at most 20 s) for `n` webhook calls and `n` e-mails.
    async fn wait_for(&self, n: usize) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + Duration::from_secs(20);
        while (self.calls.lock().unwrap().len() < n || self.smtp.messages().len() < n)
            && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let events = self.webhook_events();
        assert_eq!(events.len(), n, "webhook calls: {events:#?}");
        assert_eq!(self.smtp.messages().len(), n, "e-mails");
        events
    }

    /// Several poll periods pass and nothing more is sent.
    async fn quiet(&self, n: usize) {
        tokio::time::sleep(Duration::from_millis(3500)).await;
        assert_eq!(self.webhook_events().len(), n, "no more webhook calls");
        assert_eq!(self.smtp.messages().len(), n, "no more e-mails");
    }
}

fn stop(mut child: Child) {
    let _ = child.kill();
    let _ = child.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_token_is_told_once_by_webhook_and_email_then_recovery_once_across_restarts() {
    let w = World::start().await;
    w.run(&["connection", "token", "broken"]).ok();
    let (serve, _) = w.serve();
    w.quiet(0).await;

    // The provider starts refusing the refresh token (invalid_grant).
    w.idp.revoke_refresh_tokens_for(BROKEN);
    let out = w.run(&["connection", "token", "broken"]);
    assert_eq!(out.code, 1, "{}", out.all());
    let events = w.wait_for(1).await;
    let e = &events[0];
    assert_eq!(e["schema_version"], 1);
    assert_eq!(e["event"], "connection.needs_reauthorization");
    assert_eq!(e["connection"], "broken");
    assert!(
        e["reason"].as_str().unwrap().contains("invalid_grant"),
        "{e}"
    );
    assert!(
        e["fix"]
            .as_str()
            .unwrap()
            .contains("postern connection authorize broken"),
        "{e}"
    );
    assert!(e["at"].as_str().unwrap().ends_with('Z'));
    let mail = &w.smtp.messages()[0];
    assert_eq!(mail.rcpt_to, ["admin1@example.com", "admin2@example.com"]);
    assert_eq!(
        mail.auth_user.as_deref(),
        Some(MAILER),
        "sent through `mailer`"
    );
    // Undo quoted-printable soft line breaks: the text as the admin's mail client shows it.
    let text = String::from_utf8_lossy(&mail.data).replace("=\r\n", "");
    assert!(
        text.contains("Subject: [Postern] connection.needs_reauthorization (broken)")
            && text.contains("postern connection authorize broken"),
        "{text}"
    );
    w.quiet(1).await;

    // A restart repeats nothing.
    stop(serve);
    let (serve, _) = w.serve();
    w.quiet(1).await;

    // Recovery: a new refresh token, a token obtained.
    let rt = w.home.file(
        "new.rt",
        &w.idp.issue_refresh_token(CLIENT_ID, BROKEN, SCOPE),
    );
    w.run(&["connection", "edit", "broken", "--refresh-token-file", &rt])
        .ok();
    w.run(&["connection", "token", "broken"]).ok();
    let events = w.wait_for(2).await;
    assert_eq!(events[1]["event"], "connection.recovered");
    assert_eq!(events[1]["connection"], "broken");
    w.quiet(2).await;
    stop(serve);

    let list = w.run(&["notifications", "list", "--json"]).ok();
    let list: Vec<serde_json::Value> = serde_json::from_str(&list.stdout).unwrap();
    assert_eq!(list.len(), 2);
    for e in &list {
        let ok: Vec<&str> = e["attempts"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["ok"] == true)
            .map(|a| a["channel"].as_str().unwrap())
            .collect();
        assert_eq!(ok, ["webhook", "email"], "{e}");
    }
    let log = std::fs::read_to_string(w.home.path().join("serve.log")).unwrap();
    assert!(
        !log.contains(WEBHOOK_SECRET) && !log.contains(SECRET),
        "secrets in the log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_expiring_in_6_days_gets_the_7_day_warning_once_and_shows_in_metrics() {
    let w = World::start().await;
    let date = (chrono::Utc::now().date_naive() + chrono::Days::new(6)).to_string();
    w.run(&["connection", "edit", "mailer", "--secret-expires", &date])
        .ok();
    let (serve, addr) = w.serve();
    let events = w.wait_for(1).await;
    assert_eq!(events[0]["event"], "secret.expiring.7d");
    assert_eq!(events[0]["connection"], "mailer");
    assert!(
        events[0]["reason"].as_str().unwrap().contains(&date),
        "{}",
        events[0]
    );
    let http = postern::oauth::http_client(Duration::from_secs(10)).unwrap();
    let metrics = http
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let midnight = chrono::NaiveDate::parse_from_str(&date, "%Y-%m-%d")
        .unwrap()
        .and_hms_opt(0, 0, 0)
        .unwrap()
        .and_utc()
        .timestamp();
    assert!(
        metrics.contains(&format!(
            "postern_connection_secret_expiry_timestamp_seconds{{connection=\"mailer\"}} {midnight}"
        )),
        "{metrics}"
    );
    assert!(
        metrics.contains("postern_relay_certificate_expiry_timestamp_seconds "),
        "{metrics}"
    );
    assert!(metrics.contains(
        "postern_connection_refresh_token_obtained_timestamp_seconds{connection=\"mailer\"}"
    ));
    stop(serve);
    let (serve, _) = w.serve();
    w.quiet(1).await;
    stop(serve);
}

#[test]
fn notifications_test_runs_the_command_with_the_event_on_stdin_and_kills_a_slow_one() {
    let home = TestHome::new();
    let none = home.run(&["notifications", "test"]);
    assert_eq!(none.code, 2, "{}", none.all());
    assert!(
        none.stderr
            .contains("no notification channel is configured"),
        "{}",
        none.stderr
    );

    home.file(
        "postern.toml",
        "[notifications]\ncommand = [\"sh\", \"-c\", \"cat > event.json\"]\n",
    );
    let out = home.run(&["notifications", "test"]);
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(
        out.stdout.contains("command  ok: exit status 0"),
        "{}",
        out.stdout
    );
    let event: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(home.path().join("event.json")).unwrap())
            .unwrap();
    assert_eq!(event["schema_version"], 1);
    assert_eq!(event["event"], "test");

    home.file(
        "postern.toml",
        "[notifications]\ncommand = [\"sleep\", \"30\"]\ncommand_timeout_secs = 1\n",
    );
    let started = Instant::now();
    let out = home.run(&["notifications", "test"]);
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(
        out.stdout
            .contains("command  FAILED: `sleep` killed after 1s"),
        "{}",
        out.stdout
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "not waited for"
    );

    // A webhook without its secret stops at the settings, naming the key.
    home.file(
        "postern.toml",
        "[notifications]\nwebhook_url = \"http://127.0.0.1:9/hook\"\n",
    );
    let out = home.run(&["notifications", "test"]);
    assert_eq!(out.code, 2, "{}", out.all());
    assert!(
        out.stderr.contains("notifications.webhook_secret_file"),
        "{}",
        out.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_client_secret_is_explained_the_same_everywhere() {
    let w = World::start().await;
    w.idp.inject(
        1,
        fake_provider::idp::InjectedError::oauth(
            401,
            "invalid_client",
            "AADSTS7000222: The provided client secret keys for app '1b2c3d4e-0000-1111-2222-333344445555' are expired. Visit the Azure portal to create new keys for your app.",
        ),
    );
    let token = w.run(&["connection", "token", "broken"]);
    assert_eq!(token.code, 1, "{}", token.all());
    assert!(
        token.stderr.contains("has expired") && token.stderr.contains("--secret-expires"),
        "{}",
        token.stderr
    );
    let show = w.run(&["connection", "show", "broken", "--json"]).ok();
    let v: serde_json::Value = serde_json::from_str(&show.stdout).unwrap();
    assert_eq!(v["status"], "needs-reauthorization");
    assert!(
        v["status_reason"]
            .as_str()
            .unwrap()
            .contains("AADSTS7000222"),
        "{v}"
    );
    let doctor = w.run(&["doctor", "broken", "--json"]);
    assert_eq!(doctor.code, 2, "{}", doctor.all());
    let d: serde_json::Value = serde_json::from_str(&doctor.stdout).unwrap();
    let status = d["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "connection broken: status")
        .unwrap();
    assert_eq!(status["level"], "fail");
    assert!(
        status["fix"]
            .as_str()
            .unwrap()
            .contains("Certificates & secrets"),
        "{status}"
    );
}
