//! The admin UI without a browser: requests go straight into the router (`oneshot`). Login and
//! sessions, CSRF on every form, and no secret ever in a page.

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use postern::http::{AppState, router};
use postern::store::Store;
use tower::ServiceExt;

use crate::http_helpers::{ADMIN_PASSWORD, test_settings};

const SECRET: &str = "Zx8Q~client-secret-never-shown";

pub(crate) struct Ui {
    router: Router,
    pub(crate) store: Store,
    _dir: tempfile::TempDir,
}

pub(crate) struct Page {
    pub(crate) status: StatusCode,
    headers: axum::http::HeaderMap,
    pub(crate) body: String,
}

impl Page {
    fn location(&self) -> &str {
        self.headers[header::LOCATION].to_str().unwrap()
    }

    fn set_cookies(&self) -> Vec<String> {
        self.headers
            .get_all(header::SET_COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect()
    }

    /// The value of the first hidden `csrf` field.
    pub(crate) fn csrf(&self) -> String {
        let at = self
            .body
            .find("name=\"csrf\" value=\"")
            .expect("a csrf field")
            + 19;
        self.body[at..].split('"').next().unwrap().to_string()
    }
}

fn cookie_pair(set_cookie: &str) -> String {
    set_cookie.split(';').next().unwrap().to_string()
}

pub(crate) fn form(pairs: &[(&str, &str)]) -> String {
    let mut s = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        s.append_pair(k, v);
    }
    s.finish()
}

impl Ui {
    pub(crate) async fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let settings = test_settings(dir.path());
        let store = Store::open_settings(&settings.store).await.unwrap();
        store
            .create_admin(
                "alice",
                &secrecy::SecretString::from(ADMIN_PASSWORD.to_string()),
            )
            .await
            .unwrap();
        let router = router(AppState::new(store.clone(), settings));
        Ui {
            router,
            store,
            _dir: dir,
        }
    }

    async fn send(&self, req: Request<Body>) -> Page {
        let resp = self.router.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        Page {
            status,
            headers,
            body: String::from_utf8_lossy(&bytes).into_owned(),
        }
    }

    pub(crate) async fn get(&self, path: &str, cookie: Option<&str>) -> Page {
        let mut req = Request::get(path).header(header::HOST, "127.0.0.1:8025");
        if let Some(c) = cookie {
            req = req.header(header::COOKIE, c);
        }
        self.send(req.body(Body::empty()).unwrap()).await
    }

    pub(crate) async fn post(&self, path: &str, cookie: Option<&str>, body: String) -> Page {
        let mut req = Request::post(path)
            .header(header::HOST, "127.0.0.1:8025")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
        if let Some(c) = cookie {
            req = req.header(header::COOKIE, c);
        }
        self.send(req.body(Body::from(body)).unwrap()).await
    }

    /// Logs in as alice; returns the session cookie (`name=value`).
    pub(crate) async fn login(&self) -> String {
        let page = self.get("/admin/login", None).await;
        let csrf_cookie = cookie_pair(&page.set_cookies()[0]);
        let done = self
            .post(
                "/admin/login",
                Some(&csrf_cookie),
                form(&[
                    ("csrf", &page.csrf()),
                    ("username", "alice"),
                    ("password", ADMIN_PASSWORD),
                    ("next", "/admin"),
                ]),
            )
            .await;
        assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.body);
        let session = done
            .set_cookies()
            .into_iter()
            .find(|c| c.starts_with("postern_session="))
            .unwrap();
        cookie_pair(&session)
    }
}

pub(crate) fn connection_form(csrf: &str) -> String {
    form(&[
        ("csrf", csrf),
        ("provider", "microsoft"),
        ("name", "contoso"),
        ("user", "ops@contoso.com"),
        ("tenant", "contoso.onmicrosoft.com"),
        ("client_id", "1b2c3d4e-0000-1111-2222-333344445555"),
        ("client_secret", SECRET),
        (
            "scope",
            "https://outlook.office.com/SMTP.Send offline_access",
        ),
        ("enabled", "true"),
    ])
}

#[tokio::test]
async fn pages_need_a_login_and_come_back_after_it() {
    let ui = Ui::new().await;
    for path in [
        "/admin",
        "/admin/connections/new",
        "/admin/connections/x",
        "/admin/guide",
    ] {
        let page = ui.get(path, None).await;
        assert_eq!(page.status, StatusCode::SEE_OTHER, "{path}");
        assert!(page.location().starts_with("/admin/login?next="), "{path}");
    }
    let page = ui.get("/admin", Some("postern_session=forged")).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);

    let login = ui
        .get("/admin/login?next=/admin/connections/new", None)
        .await;
    assert_eq!(login.status, StatusCode::OK);
    assert!(login.body.contains("<label for=\"username\">"));
    assert!(login.body.contains("<label for=\"password\">"));
    // An external `next` is never followed.
    let evil = ui
        .get("/admin/login?next=https://evil.example/", None)
        .await;
    assert!(evil.body.contains("name=\"next\" value=\"/admin\""));

    let session = ui.login().await;
    let page = ui.get("/admin", Some(&session)).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("No connections yet"));
    assert!(
        page.headers[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap()
            .contains("frame-ancestors 'none'")
    );
    assert_eq!(page.headers[header::CACHE_CONTROL], "no-store");
}

#[tokio::test]
async fn session_cookies_are_strict_and_secure_behind_https() {
    let ui = Ui::new().await;
    let page = ui.get("/admin/login", None).await;
    let csrf_cookie = cookie_pair(&page.set_cookies()[0]);
    let body = form(&[
        ("csrf", &page.csrf()),
        ("username", "alice"),
        ("password", ADMIN_PASSWORD),
    ]);
    let plain = ui
        .post("/admin/login", Some(&csrf_cookie), body.clone())
        .await;
    let cookie = plain
        .set_cookies()
        .into_iter()
        .find(|c| c.starts_with("postern_session="))
        .unwrap();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    assert!(
        !cookie.contains("Secure"),
        "plain-http loopback: a Secure cookie would never return"
    );

    let req = Request::post("/admin/login")
        .header(header::HOST, "postern.example.com")
        .header("x-forwarded-proto", "https")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header(header::COOKIE, &csrf_cookie)
        .body(Body::from(body))
        .unwrap();
    let https = ui.send(req).await;
    let cookie = https
        .set_cookies()
        .into_iter()
        .find(|c| c.starts_with("__Host-postern_session="))
        .unwrap();
    assert!(
        cookie.contains("Secure") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
}

#[tokio::test]
async fn login_rejects_wrong_passwords_missing_csrf_and_too_many_tries() {
    let ui = Ui::new().await;
    let page = ui.get("/admin/login", None).await;
    let csrf_cookie = cookie_pair(&page.set_cookies()[0]);
    let csrf = page.csrf();
    // Without the cookie, or with another token: refused before the password is even checked.
    let no_cookie = ui
        .post(
            "/admin/login",
            None,
            form(&[
                ("csrf", &csrf),
                ("username", "alice"),
                ("password", ADMIN_PASSWORD),
            ]),
        )
        .await;
    assert_eq!(no_cookie.status, StatusCode::FORBIDDEN);
    let wrong_token = ui
        .post(
            "/admin/login",
            Some(&csrf_cookie),
            form(&[
                ("csrf", "x"),
                ("username", "alice"),
                ("password", ADMIN_PASSWORD),
            ]),
        )
        .await;
    assert_eq!(wrong_token.status, StatusCode::FORBIDDEN);

    for _ in 0..5 {
        let wrong = ui
            .post(
                "/admin/login",
                Some(&csrf_cookie),
                form(&[
                    ("csrf", &csrf),
                    ("username", "alice"),
                    ("password", "guess"),
                ]),
            )
            .await;
        assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
        assert!(wrong.body.contains("Wrong user name or password"));
        assert!(!wrong.body.contains("guess"));
    }
    // Now even the right password waits.
    let limited = ui
        .post(
            "/admin/login",
            Some(&csrf_cookie),
            form(&[
                ("csrf", &csrf),
                ("username", "alice"),
                ("password", ADMIN_PASSWORD),
            ]),
        )
        .await;
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(limited.headers.contains_key(header::RETRY_AFTER));
}

#[tokio::test]
async fn every_form_needs_the_sessions_csrf_token() {
    let ui = Ui::new().await;
    let session = ui.login().await;
    let other = ui.login().await;
    let new = ui.get("/admin/connections/new", Some(&session)).await;
    let csrf = new.csrf();

    // No token, a wrong token, another session's token: 403 and nothing happens.
    let other_csrf = ui.get("/admin/connections/new", Some(&other)).await.csrf();
    for token in ["", "forged", other_csrf.as_str()] {
        let page = ui
            .post("/admin/connections", Some(&session), connection_form(token))
            .await;
        assert_eq!(page.status, StatusCode::FORBIDDEN, "token {token:?}");
    }
    assert!(ui.store.list_connections().await.unwrap().is_empty());
    // Without a session: to the login page.
    let page = ui
        .post("/admin/connections", None, connection_form(&csrf))
        .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert!(ui.store.list_connections().await.unwrap().is_empty());

    let page = ui
        .post("/admin/connections", Some(&session), connection_form(&csrf))
        .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
    assert_eq!(page.location(), "/admin/connections/contoso?done=created");
    assert_eq!(ui.store.list_connections().await.unwrap().len(), 1);

    // Removal and logout are forms too.
    let page = ui
        .post(
            "/admin/connections/contoso/delete",
            Some(&session),
            form(&[("confirm", "yes")]),
        )
        .await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    let page = ui
        .post("/admin/logout", Some(&session), String::new())
        .await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    let page = ui
        .post("/admin/logout", Some(&session), form(&[("csrf", &csrf)]))
        .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    // The session is gone on the server, not just in the browser.
    let page = ui.get("/admin", Some(&session)).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn the_connection_pages_never_show_secrets() {
    let ui = Ui::new().await;
    let session = ui.login().await;
    let csrf = ui.get("/admin", Some(&session)).await.csrf();
    let page = ui
        .post("/admin/connections", Some(&session), connection_form(&csrf))
        .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    let conn = ui.store.connection("contoso").await.unwrap();
    ui.store
        .put_secret(
            conn.id,
            postern::store::SecretKind::RefreshToken,
            &secrecy::SecretString::from("0.AAAA-refresh-token".to_string()),
            None,
        )
        .await
        .unwrap();

    let mut seen = String::new();
    for path in [
        "/admin",
        "/admin/connections/contoso?done=created",
        "/admin/connections/contoso/edit",
    ] {
        let page = ui.get(path, Some(&session)).await;
        assert_eq!(page.status, StatusCode::OK, "{path}");
        seen.push_str(&page.body);
    }
    assert!(seen.contains("Client secret</dt><dd>set"));
    assert!(
        seen.contains("http://127.0.0.1:8025/oauth/callback"),
        "the redirect URI to register"
    );
    // A failed edit re-renders the form: still without the secret the admin typed.
    let mut body = connection_form(&csrf);
    body = body.replace(
        "SMTP.Send",
        "SMTP.Send+https%3A%2F%2Fgraph.microsoft.com%2FMail.Send",
    );
    let page = ui
        .post("/admin/connections/contoso", Some(&session), body)
        .await;
    assert_eq!(page.status, StatusCode::UNPROCESSABLE_ENTITY);
    seen.push_str(&page.body);
    assert!(!seen.contains(SECRET), "a page contained the client secret");
    assert!(
        !seen.contains("0.AAAA-refresh-token"),
        "a page contained the refresh token"
    );
}

#[tokio::test]
async fn a_connection_managed_by_postern_toml_is_read_only_here() {
    let ui = Ui::new().await;
    let session = ui.login().await;
    let (settings, _) = postern::domain::ConnectionInput {
        name: Some("contoso".into()),
        provider: Some("microsoft".into()),
        user: Some("ops@contoso.com".into()),
        tenant: Some("contoso.onmicrosoft.com".into()),
        client_id: Some("1b2c3d4e-0000-1111-2222-333344445555".into()),
        ..Default::default()
    }
    .validate()
    .unwrap();
    let declared = postern::store::declared::Declared {
        settings,
        client_secret: None,
    };
    ui.store.sync_declared(&[declared]).await.unwrap();

    let page = ui.get("/admin/connections/contoso", Some(&session)).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        page.body.contains("Managed by postern.toml"),
        "{}",
        page.body
    );
    assert!(
        !page.body.contains("/admin/connections/contoso/edit"),
        "no Edit button"
    );

    let csrf = page.csrf();
    let edit = ui
        .post(
            "/admin/connections/contoso",
            Some(&session),
            connection_form(&csrf),
        )
        .await;
    let remove = ui
        .post(
            "/admin/connections/contoso/delete",
            Some(&session),
            form(&[("csrf", &csrf), ("confirm", "yes")]),
        )
        .await;
    for page in [edit, remove] {
        assert_eq!(page.status, StatusCode::BAD_REQUEST, "{}", page.body);
        assert!(
            page.body.contains("managed by postern.toml"),
            "{}",
            page.body
        );
    }
    assert!(
        ui.store
            .connection("contoso")
            .await
            .unwrap()
            .managed_by_file
    );
}

#[tokio::test]
async fn the_form_explains_wrong_values_like_the_cli_and_labels_every_input() {
    let ui = Ui::new().await;
    let session = ui.login().await;
    let new = ui
        .get("/admin/connections/new?provider=google", Some(&session))
        .await;
    assert!(
        new.body.contains("value=\"smtp.gmail.com\""),
        "the Google preset is filled in"
    );
    // Every visible input has a label pointing at it.
    for chunk in new.body.split("<input").skip(1) {
        let tag = chunk.split('>').next().unwrap();
        if tag.contains("type=\"hidden\"") {
            continue;
        }
        let id = tag
            .split("id=\"")
            .nth(1)
            .expect("an id")
            .split('"')
            .next()
            .unwrap();
        assert!(
            new.body.contains(&format!("for=\"{id}\"")),
            "no label for {id}"
        );
    }
    assert!(new.body.contains("name=\"viewport\""));

    let body = connection_form(&new.csrf()).replace(
        "https%3A%2F%2Foutlook.office.com%2FSMTP.Send",
        "https%3A%2F%2Fgraph.microsoft.com%2FSMTP.Send",
    );
    let page = ui.post("/admin/connections", Some(&session), body).await;
    assert_eq!(page.status, StatusCode::UNPROCESSABLE_ENTITY);
    let cli_words =
        postern::domain::ScopeList::parse("https://graph.microsoft.com/SMTP.Send offline_access")
            .and_then(|l| {
                l.check(
                    postern::domain::Provider::Microsoft,
                    postern::domain::OAuthFlow::AuthorizationCode,
                )
            })
            .unwrap_err()
            .to_string();
    let escaped = cli_words
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#x27;");
    assert!(
        page.body.contains(&escaped) || page.body.contains(&cli_words),
        "{}",
        page.body
    );
    assert!(page.body.contains("aria-invalid=\"true\""));
    assert!(ui.store.list_connections().await.unwrap().is_empty());
}

/// The path and query of an absolute URL (to replay a redirect into the router).
fn path_of(url: &str) -> String {
    let u = url::Url::parse(url).unwrap();
    format!("{}?{}", u.path(), u.query().unwrap_or(""))
}

#[tokio::test]
async fn connect_is_bound_to_the_browser_then_the_test_e_mail_shows_each_step() {
    let ui = Ui::new().await;
    let fakes = crate::http_helpers::fakes().await;
    fakes.create_connection(&ui.store, "fake").await;
    let session = ui.login().await;
    let client = crate::http_helpers::client();

    let page = ui.get("/admin/connections/fake", Some(&session)).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("Connect with Microsoft"));
    let idp_origin = fakes.idp.base_url();
    let csp = page.headers[header::CONTENT_SECURITY_POLICY]
        .to_str()
        .unwrap();
    assert!(
        csp.contains(&format!(
            "form-action 'self' {}",
            idp_origin.trim_end_matches('/')
        )),
        "{csp}"
    );
    let csrf = page.csrf();

    // Started in one browser, finished in another (no binding cookie): refused.
    let start = ui
        .post(
            "/admin/connections/fake/connect",
            Some(&session),
            form(&[("csrf", &csrf)]),
        )
        .await;
    assert_eq!(start.status, StatusCode::SEE_OTHER, "{}", start.body);
    assert!(
        start
            .location()
            .starts_with(&fakes.idp.authorize_url("organizations"))
    );
    let binding = start
        .set_cookies()
        .into_iter()
        .find(|c| c.starts_with("postern_oauth="))
        .unwrap();
    assert!(
        binding.contains("SameSite=Lax") && binding.contains("Path=/oauth/callback"),
        "{binding}"
    );
    let back = crate::http_helpers::consent(&client, start.location()).await;
    assert!(
        back.starts_with("http://127.0.0.1:8025/oauth/callback?"),
        "{back}"
    );
    let stray = ui.get(&path_of(&back), None).await;
    assert_eq!(stray.status, StatusCode::BAD_REQUEST);
    assert!(stray.body.contains("another browser"));
    assert!(!ui.store.connection("fake").await.unwrap().refresh_token_set);

    // The same browser: connected, and back to the connection page.
    let start = ui
        .post(
            "/admin/connections/fake/connect",
            Some(&session),
            form(&[("csrf", &csrf)]),
        )
        .await;
    let binding = start
        .set_cookies()
        .into_iter()
        .find(|c| c.starts_with("postern_oauth="))
        .unwrap();
    let back = crate::http_helpers::consent(&client, start.location()).await;
    let done = ui.get(&path_of(&back), Some(&cookie_pair(&binding))).await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.body);
    assert!(done.body.contains("/admin/connections/fake?done=connected"));
    let page = ui
        .get("/admin/connections/fake?done=connected", Some(&session))
        .await;
    assert!(page.body.contains("badge authorized"), "{}", page.body);

    let tested = ui
        .post(
            "/admin/connections/fake/test",
            Some(&session),
            form(&[("csrf", &csrf), ("to", "someone@example.com")]),
        )
        .await;
    assert_eq!(tested.status, StatusCode::OK);
    assert!(
        tested
            .body
            .contains("Test e-mail sent to someone@example.com"),
        "{}",
        tested.body
    );
    assert!(
        tested.body.contains("step-ok\"><strong>auth</strong>"),
        "{}",
        tested.body
    );
    assert_eq!(fakes.smtp.messages().len(), 1);

    let list = ui.get("/admin/messages?status=sent", Some(&session)).await;
    assert!(
        list.body
            .contains("Postern test message via connection fake"),
        "{}",
        list.body
    );
    assert!(list.body.contains("badge sent"));
    assert!(list.body.contains("accepted the message"));
    let at = list.body.find("href=\"/admin/messages/").unwrap() + 6;
    let href = list.body[at..].split('"').next().unwrap().to_string();
    let detail = ui.get(&href, Some(&session)).await;
    assert!(
        detail.body.contains("someone@example.com") && detail.body.contains("250"),
        "{}",
        detail.body
    );
    assert!(
        !detail.body.contains("Retry now"),
        "sent mail cannot be retried"
    );
    let dashboard = ui.get("/admin", Some(&session)).await;
    assert!(dashboard.body.contains("1 sent"), "{}", dashboard.body);
}

#[tokio::test]
async fn keys_and_relay_passwords_are_shown_once() {
    let ui = Ui::new().await;
    let session = ui.login().await;
    let csrf = ui.get("/admin/api-keys", Some(&session)).await.csrf();
    let created = ui
        .post(
            "/admin/api-keys",
            Some(&session),
            form(&[("csrf", &csrf), ("name", "billing"), ("role", "send")]),
        )
        .await;
    assert_eq!(created.status, StatusCode::OK);
    let at = created.body.find("id=\"new-key\">").unwrap() + "id=\"new-key\">".len();
    let key = created.body[at..].split('<').next().unwrap().to_string();
    assert!(key.starts_with("pk_"));
    assert!(
        ui.store
            .authenticate_api_key(&secrecy::SecretString::from(key.clone()))
            .await
            .unwrap()
            .is_some()
    );
    let list = ui.get("/admin/api-keys", Some(&session)).await;
    assert!(list.body.contains("billing") && !list.body.contains(&key));
    let bad = ui
        .post(
            "/admin/api-keys",
            Some(&session),
            form(&[("csrf", &csrf), ("name", "billing"), ("role", "send")]),
        )
        .await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(bad.body.contains("already exists"));
    let revoked = ui
        .post(
            "/admin/api-keys/billing/revoke",
            Some(&session),
            form(&[("csrf", &csrf)]),
        )
        .await;
    assert_eq!(revoked.status, StatusCode::SEE_OTHER);
    assert!(ui.store.list_api_keys().await.unwrap().is_empty());

    let page = ui.get("/admin/relay-users", Some(&session)).await;
    assert!(page.body.contains("connection</a> first"));
    let body = connection_form(&csrf);
    ui.post("/admin/connections", Some(&session), body).await;
    let created = ui
        .post(
            "/admin/relay-users",
            Some(&session),
            form(&[
                ("csrf", &csrf),
                ("name", "erp"),
                ("connection", "contoso"),
                ("allow_from", "@contoso.com"),
            ]),
        )
        .await;
    assert_eq!(created.status, StatusCode::OK, "{}", created.body);
    let at = created.body.find("id=\"new-pw\">").unwrap() + "id=\"new-pw\">".len();
    let password = created.body[at..].split('<').next().unwrap().to_string();
    assert!(password.len() >= 20);
    let ok = ui
        .store
        .verify_relay_user("erp", &secrecy::SecretString::from(password.clone()), None)
        .await
        .unwrap();
    assert!(ok.is_some());
    let list = ui.get("/admin/relay-users", Some(&session)).await;
    assert!(list.body.contains("erp") && !list.body.contains(&password));
    let bad = ui
        .post(
            "/admin/relay-users",
            Some(&session),
            form(&[
                ("csrf", &csrf),
                ("name", "x"),
                ("connection", "contoso"),
                ("allow_from", "not an address"),
            ]),
        )
        .await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
}

/// The Chromium end-to-end test (`browser/e2e.mjs`) against the whole application: relay,
/// workers, HTTP, with the fake provider. Skipped (with a note) when Chromium or
/// `browser/node_modules` are missing, unless `POSTERN_BROWSER_TEST=1` demands it (as `.ci/run`
/// does). Screenshots land in `target/browser-e2e/`.
#[tokio::test]
async fn browser_end_to_end() {
    use fake_provider::idp::{DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, DEFAULT_USER};
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let ready = std::path::Path::new(&chromium).exists()
        && root.join("browser/node_modules/playwright-core").is_dir()
        && std::process::Command::new("node")
            .arg("--version")
            .output()
            .is_ok();
    if !ready {
        assert!(
            std::env::var("POSTERN_BROWSER_TEST").as_deref() != Ok("1"),
            "POSTERN_BROWSER_TEST=1 but Chromium ({chromium}), node or browser/node_modules is missing"
        );
        eprintln!(
            "browser_end_to_end skipped: needs {chromium}, node and `npm install --prefix browser`"
        );
        return;
    }
    let fakes = crate::http_helpers::fakes().await;
    let dir = tempfile::tempdir().unwrap();
    let mut settings = test_settings(dir.path());
    settings.server.smtp_listen = ([127, 0, 0, 1], 0).into();
    let app = postern::app::Application::build(settings).await.unwrap();
    let base = format!("http://{}", app.http_addr());
    app.store()
        .create_admin(
            "admin",
            &secrecy::SecretString::from(ADMIN_PASSWORD.to_string()),
        )
        .await
        .unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let s = stop.clone();
    let server = tokio::spawn(app.run_until_stopped(async move { s.cancelled().await }));

    let shots = root.join("target/browser-e2e");
    let run = tokio::process::Command::new("node")
        .arg(root.join("browser/e2e.mjs"))
        .env("POSTERN_URL", &base)
        .env("POSTERN_SCREENSHOTS", &shots)
        .env("POSTERN_ADMIN", "admin")
        .env("POSTERN_PASSWORD", ADMIN_PASSWORD)
        .env("CHROMIUM", &chromium)
        .env("FAKE_USER", DEFAULT_USER)
        .env("FAKE_CLIENT_ID", DEFAULT_CLIENT_ID)
        .env("FAKE_CLIENT_SECRET", DEFAULT_CLIENT_SECRET)
        .env("FAKE_SMTP_PORT", fakes.smtp.port().to_string())
        .env(
            "FAKE_AUTHORIZE_URL",
            fakes.idp.authorize_url("organizations"),
        )
        .env("FAKE_TOKEN_URL", fakes.idp.token_url("organizations"))
        .env("FAKE_CA_FILE", &fakes.ca_file)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(std::time::Duration::from_secs(180), run)
        .await
        .expect("the browser test finishes within 3 minutes")
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stdout}{stderr}\nscreenshots: {}", shots.display());
    assert!(out.status.success(), "the browser test failed");
    assert!(stdout.contains("e2e: passed"));

    // What a user would check at the provider: the message arrived, from the mailbox.
    let received = fakes.smtp.messages();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].rcpt_to, ["someone@example.com"]);
    assert_eq!(received[0].auth_user.as_deref(), Some(DEFAULT_USER));
    stop.cancel();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(30), server).await;
}

#[tokio::test]
async fn the_health_page_shows_the_doctor_checks_and_what_the_admin_was_told() {
    let ui = Ui::new().await;
    assert_eq!(
        ui.get("/admin/health", None).await.status,
        StatusCode::SEE_OTHER
    );
    let event = postern::store::notifications::NewNotification {
        event: "connection.needs_reauthorization".into(),
        connection: Some("contoso".into()),
        reason: "invalid_grant: AADSTS700082: expired".into(),
        fix: "Run `postern connection authorize contoso` to sign in again.".into(),
    };
    ui.store
        .record_transition(
            "contoso",
            "status",
            None,
            "needs-reauthorization",
            Some(&event),
        )
        .await
        .unwrap();
    let id = ui.store.pending_notifications(1).await.unwrap()[0].id;
    ui.store
        .record_notification_attempt(id, "webhook", false, "attempt 1/4: HTTP 500")
        .await
        .unwrap();
    let session = ui.login().await;
    let page = ui.get("/admin/health", Some(&session)).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let body = &page.body;
    assert!(body.contains("aria-current=\"page\">Health"), "{body}");
    assert!(
        body.contains("<td>store</td><td>PRAGMA quick_check: ok</td>"),
        "{body}"
    );
    assert!(body.contains("No channel configured"), "{body}");
    assert!(body.contains("connection.needs_reauthorization") && body.contains("AADSTS700082"));
    assert!(
        body.contains("webhook failed: attempt 1/4: HTTP 500"),
        "{body}"
    );
}

#[tokio::test]
async fn the_form_takes_the_secret_expiry_and_refuses_a_bad_date() {
    let ui = Ui::new().await;
    let session = ui.login().await;
    let csrf = ui.get("/admin", Some(&session)).await.csrf();
    let bad = connection_form(&csrf) + "&secret_expires=31%2F03%2F2027";
    let page = ui.post("/admin/connections", Some(&session), bad).await;
    assert_eq!(page.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(page.body.contains("is not a date"), "{}", page.body);
    assert!(
        ui.store.connection("contoso").await.is_err(),
        "nothing saved"
    );

    let good = connection_form(&csrf) + "&secret_expires=2027-03-31";
    let page = ui.post("/admin/connections", Some(&session), good).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
    let shown = ui.get("/admin/connections/contoso", Some(&session)).await;
    assert!(
        shown.body.contains("Secret expires</dt><dd>2027-03-31"),
        "{}",
        shown.body
    );
    let edit = ui
        .get("/admin/connections/contoso/edit", Some(&session))
        .await;
    assert!(
        edit.body
            .contains("name=\"secret_expires\" value=\"2027-03-31\""),
        "{}",
        edit.body
    );
}
