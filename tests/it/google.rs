//! Google end to end: the real binary against the fake IdP and the fake SMTP server in Gmail
//! mode. Consent parameters, the scopes Google refuses, OAUTHBEARER and XOAUTH2 with Gmail's
//! `334` refusal challenge, the 7-day refresh tokens of apps in 'Testing' status, and Workspace
//! service accounts (JWT bearer grant) delivering a message.

use fake_provider::idp::{ClientRegistration, IdpConfig, ServiceAccount};
use fake_provider::smtp::{SmtpConfig, TokenValidator};
use fake_provider::{FakeIdp, FakeSmtp};

use crate::helpers::{Run, TestHome, contains_bytes};

const CLIENT: &str = "123456789-fake.apps.googleusercontent.com";
const SECRET: &str = "GOCSPX-fake-google-client-secret";
const USER: &str = "ops@example.com";
const SCOPE: &str = "https://mail.google.com/";

struct World {
    home: TestHome,
    idp: FakeIdp,
    smtp: FakeSmtp,
}

impl World {
    async fn start(smtp: SmtpConfig) -> Self {
        let idp = FakeIdp::start(
            IdpConfig::default().with_client(ClientRegistration::confidential(CLIENT, SECRET)),
        )
        .await
        .expect("start fake IdP");
        let smtp = FakeSmtp::start(smtp, TokenValidator::Idp(idp.clone()))
            .await
            .expect("start fake SMTP");
        World {
            home: TestHome::new(),
            idp,
            smtp,
        }
    }

    fn run(&self, args: &[&str]) -> Run {
        tokio::task::block_in_place(|| self.home.run(args))
    }

    /// `connection add NAME --provider google` pointed at the fakes, plus `extra`.
    fn add(&self, name: &str, extra: &[&str]) -> Run {
        let ca = self.home.file("ca.pem", &self.smtp.ca_pem());
        let port = self.smtp.port().to_string();
        let token_url = self.idp.token_url("google");
        let authorize_url = self.idp.authorize_url("google");
        let device_url = self.idp.device_url("google");
        let mut args = vec![
            "connection",
            "add",
            name,
            "--provider",
            "google",
            "--user",
            USER,
            "--host",
            "127.0.0.1",
            "--port",
            &port,
            "--ca-file",
            &ca,
            "--token-url",
            &token_url,
            "--authorize-url",
            &authorize_url,
            "--device-url",
            &device_url,
        ];
        args.extend_from_slice(extra);
        self.run(&args)
    }

    /// A delegated Google connection with a refresh token the fake IdP knows.
    fn add_delegated(&self, name: &str) -> Run {
        let secret = self.home.file(&format!("{name}.secret"), SECRET);
        let refresh = self.home.file(
            &format!("{name}.refresh"),
            &self.idp.issue_refresh_token(CLIENT, USER, SCOPE),
        );
        self.add(
            name,
            &[
                "--client-id",
                CLIENT,
                "--client-secret-file",
                &secret,
                "--refresh-token-file",
                &refresh,
            ],
        )
    }

    /// Moves the time the connection's refresh token was obtained `secs` into the past, as if
    /// it had been stored then: the store keeps it as the refresh token row's `updated_at`.
    async fn age_refresh_token(&self, name: &str, secs: i64) {
        let store = self.home.store().await;
        let sql = format!(
            "UPDATE secrets SET updated_at = updated_at - {secs} WHERE kind = 'refresh_token' \
             AND connection_id = (SELECT id FROM connections WHERE name = '{name}')"
        );
        let sql = sqlx::AssertSqlSafe(sql);
        let changed = match store.db() {
            postern::store::On::Sqlite(pool) => sqlx::query(sql)
                .execute(pool)
                .await
                .map(|r| r.rows_affected()),
            postern::store::On::Postgres(pool) => sqlx::query(sql)
                .execute(pool)
                .await
                .map(|r| r.rows_affected()),
        }
        .expect("age the refresh token");
        assert_eq!(changed, 1, "no refresh token stored for {name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consent_url_asks_for_offline_access_and_consent_and_warns_about_testing_status() {
    let w = World::start(SmtpConfig::gmail()).await;
    w.add_delegated("gmail").ok();
    // Paste mode with no input: the URL is printed, then the command ends for lack of a paste.
    let out = w.run(&[
        "connection",
        "authorize",
        "gmail",
        "--paste",
        "--timeout",
        "5",
    ]);
    let url = out
        .stdout
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with(&w.idp.authorize_url("google")))
        .unwrap_or_else(|| panic!("no authorize URL printed:\n{}", out.all()));
    let url = url::Url::parse(url).unwrap();
    let q: std::collections::HashMap<_, _> = url.query_pairs().into_owned().collect();
    assert_eq!(q["access_type"], "offline", "{url}");
    assert_eq!(q["prompt"], "consent", "{url}");
    assert_eq!(q["scope"], SCOPE);
    assert_eq!(q["client_id"], CLIENT);
    assert_eq!(q["code_challenge_method"], "S256");
    assert!(
        out.stderr.contains("'Testing'") && out.stderr.contains("Publish app"),
        "no Testing-status warning:\n{}",
        out.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_flow_is_refused_up_front_for_gmail_scopes() {
    let w = World::start(SmtpConfig::gmail()).await;
    w.add_delegated("gmail").ok();
    let out = w.run(&["connection", "authorize", "gmail", "--device"]);
    assert_eq!(out.code, 2, "{}", out.all());
    assert!(
        out.stderr.contains("device flow does not allow"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("--paste"), "{}", out.stderr);
    assert!(
        out.stderr
            .contains("postern connection authorize gmail` (a loopback"),
        "{}",
        out.stderr
    );
    assert_eq!(
        w.idp.counters().devicecode,
        0,
        "nothing may reach the device endpoint"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gmail_api_scopes_are_refused_for_smtp_naming_the_right_scope() {
    let w = World::start(SmtpConfig::gmail()).await;
    let secret = w.home.file("s", SECRET);
    for scope in [
        "https://www.googleapis.com/auth/gmail.send",
        "https://www.googleapis.com/auth/gmail.compose",
    ] {
        let out = w.add(
            "gmail",
            &[
                "--client-id",
                CLIENT,
                "--client-secret-file",
                &secret,
                "--scope",
                scope,
            ],
        );
        assert_eq!(out.code, 2, "{}", out.all());
        assert!(
            out.stderr.contains("rejects its tokens for SMTP"),
            "{}",
            out.stderr
        );
        assert!(
            out.stderr.contains("--scope https://mail.google.com/"),
            "{}",
            out.stderr
        );
    }
    let list = w.run(&["connection", "list", "--json"]).ok();
    assert!(!list.stdout.contains("\"gmail\""), "{}", list.stdout);
}

/// A refused token (Gmail's `334` challenge, answered, then `535`) is refreshed once and the
/// retry delivers, with the mechanism `want`.
async fn refused_token_is_refreshed(smtp: SmtpConfig, want: &str, status: &str) {
    let w = World::start(smtp).await;
    w.add_delegated("gmail").ok();
    let out = w.run(&["connection", "test", "gmail", "--to", "me@example.org"]);
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(
        out.stdout.contains(&format!("{want} as {USER}")),
        "{}",
        out.stdout
    );
    assert_eq!(w.idp.counters().refresh_token, 1);

    // The stored access token is now refused by the server.
    w.idp.revoke_all_access_tokens();
    let out = w.run(&["connection", "test", "gmail", "--to", "me@example.org"]);
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(
        out.stdout.contains(&format!("status {status}")),
        "the challenge is not reported:\n{}",
        out.stdout
    );
    assert_eq!(
        w.idp.counters().refresh_token,
        2,
        "one forced refresh after the refusal"
    );
    let c = w.smtp.counters();
    assert_eq!((c.auth_failures, c.auth_successes), (1, 2));
    let got = w.smtp.messages();
    assert_eq!(got.len(), 2);
    assert_eq!(got[1].auth_user.as_deref(), Some(USER));
    assert_eq!(got[1].rcpt_to, ["me@example.org"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oauthbearer_refusal_challenge_is_answered_then_the_refreshed_token_delivers() {
    refused_token_is_refreshed(SmtpConfig::gmail(), "OAUTHBEARER", "400").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xoauth2_is_used_when_oauthbearer_is_not_offered() {
    let mut smtp = SmtpConfig::gmail();
    smtp.oauthbearer = false;
    refused_token_is_refreshed(smtp, "XOAUTH2", "401").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_grant_of_a_seven_day_old_refresh_token_explains_testing_status() {
    let w = World::start(SmtpConfig::gmail()).await;
    w.add_delegated("week").ok();
    w.add_delegated("day").ok();
    w.age_refresh_token("week", 7 * 86_400 - 600).await;
    w.age_refresh_token("day", 86_400).await;
    w.idp.expire_refresh_tokens_for(USER);

    let out = w.run(&["connection", "test", "week", "--to", "me@example.org"]);
    assert_ne!(out.code, 0, "{}", out.all());
    assert!(out.all().contains("Publish app"), "{}", out.all());
    let show = w.run(&["connection", "show", "week", "--json"]).ok();
    assert!(
        show.stdout.contains("'Testing' publishing status") && show.stdout.contains("7.0 days old"),
        "{}",
        show.stdout
    );

    // A refresh token refused after one day is something else: no Testing-status story.
    let out = w.run(&["connection", "test", "day", "--to", "me@example.org"]);
    assert_ne!(out.code, 0, "{}", out.all());
    assert!(!out.all().contains("Publish app"), "{}", out.all());
    let show = w.run(&["connection", "show", "day", "--json"]).ok();
    assert!(show.stdout.contains("invalid_grant"), "{}", show.stdout);
    assert!(!show.stdout.contains("'Testing'"), "{}", show.stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_account_gets_a_token_from_its_signed_assertion_and_delivers() {
    let w = World::start(SmtpConfig::gmail()).await;
    let token_uri = w.idp.token_url("google");
    let account = ServiceAccount::generate(
        "postern@fake-project.iam.gserviceaccount.com",
        "109876543210987654321",
        &token_uri,
    );
    w.idp.register_service_account(&account, &[SCOPE]);
    let key = w.home.file("sa.json", &account.key_json);
    w.add("workspace", &["--service-account-key", &key]).ok();

    let show = w.run(&["connection", "show", "workspace", "--json"]).ok();
    assert!(show.stdout.contains("service-account"), "{}", show.stdout);
    assert!(
        show.stdout.contains("109876543210987654321"),
        "the key's client id is the connection's:\n{}",
        show.stdout
    );

    let out = w.run(&["connection", "authorize", "workspace"]);
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(out.stdout.contains("app-only"), "{}", out.stdout);
    let out = w.run(&["connection", "test", "workspace", "--to", "me@example.org"]);
    assert_eq!(out.code, 0, "{}", out.all());
    let got = w.smtp.messages();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].auth_user.as_deref(), Some(USER), "impersonated");
    assert_eq!(got[0].mail_from, USER);
    assert!(w.idp.counters().jwt_bearer >= 1);
    let grant = w
        .idp
        .token_requests()
        .into_iter()
        .find(|r| r.grant_type == "urn:ietf:params:oauth:grant-type:jwt-bearer")
        .unwrap();
    assert_eq!(grant.status, 200);

    // The private key is sealed: not in the data directory, not in any output.
    let pem_line =
        serde_json::from_str::<serde_json::Value>(&account.key_json).unwrap()["private_key"]
            .as_str()
            .unwrap()
            .lines()
            .nth(3)
            .unwrap()
            .to_string();
    assert!(pem_line.len() > 40);
    assert!(!contains_bytes(&w.home.data_bytes(), &pem_line));
    assert!(!contains_bytes(&w.home.data_bytes(), "PRIVATE KEY"));
    let show = w.run(&["connection", "show", "workspace"]).ok();
    assert!(!show.all().contains(&pem_line) && !show.all().contains("PRIVATE KEY"));

    // Without domain-wide delegation for the scope, the explanation names the Admin console step.
    let other = ServiceAccount::generate(
        "other@fake-project.iam.gserviceaccount.com",
        "200000000000000000002",
        &token_uri,
    );
    w.idp.register_service_account(&other, &[]);
    let key = w.home.file("other.json", &other.key_json);
    w.add("undelegated", &["--service-account-key", &key]).ok();
    let out = w.run(&["connection", "authorize", "undelegated"]);
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(out.all().contains("unauthorized_client"), "{}", out.all());
    assert!(
        out.all().contains("Manage Domain Wide Delegation"),
        "{}",
        out.all()
    );

    // A file that is not a service account key is refused before anything is stored.
    let oauth_client = w.home.file(
        "client.json",
        r#"{"installed":{"client_id":"x.apps.googleusercontent.com","client_secret":"GOCSPX-x"}}"#,
    );
    let out = w.add("bad", &["--service-account-key", &oauth_client]);
    assert_eq!(out.code, 2, "{}", out.all());
    assert!(out.stderr.contains("service_account"), "{}", out.stderr);
    assert!(!out.all().contains("GOCSPX-x"));
}

#[tokio::test]
async fn api_checks_a_service_account_key_before_saving_it() {
    use crate::http_helpers::{json, spawn_http};
    use reqwest::Method;

    let app = spawn_http().await;
    let key = app.admin_key().await;
    let body = |name: &str, secret: &str| {
        serde_json::json!({
            "name": name,
            "provider": "google",
            "flow": "service-account",
            "user": USER,
            "client_id": "109876543210987654321",
            "client_secret": secret,
        })
    };
    let (status, problem, text) = json(
        app.request(Method::POST, "/api/v1/connections", Some(&key))
            .json(&body("sa", SECRET))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 422, "{text}");
    assert_eq!(problem["errors"][0]["field"], "client_secret", "{text}");
    assert!(text.contains("service account key"), "{text}");
    assert!(!text.contains(SECRET));

    let account = ServiceAccount::generate(
        "postern@fake-project.iam.gserviceaccount.com",
        "109876543210987654321",
        "https://oauth2.googleapis.com/token",
    );
    let (status, saved, text) = json(
        app.request(Method::POST, "/api/v1/connections", Some(&key))
            .json(&body("sa", &account.key_json))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 201, "{text}");
    assert_eq!(saved["flow"], "service-account");
    assert_eq!(saved["client_secret"], "set");
    assert!(!text.contains("PRIVATE KEY"));
}
