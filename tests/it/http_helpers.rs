//! Helpers for the HTTP API and admin UI tests: the real router served on 127.0.0.1:0 with a
//! temporary store, a plain-HTTP client, and typed shortcuts for keys and admins.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use postern::http::{AppState, router};
use postern::settings::Settings;
use postern::store::{ApiRole, Store};
use secrecy::{ExposeSecret, SecretString};

pub const ADMIN_PASSWORD: &str = "correct horse battery staple";

/// A running HTTP server over a temporary store.
pub struct HttpApp {
    pub base: String,
    pub addr: SocketAddr,
    pub store: Store,
    pub client: reqwest::Client,
    pub settings: Settings,
    pub dir: tempfile::TempDir,
    stop: tokio_util::sync::CancellationToken,
}

impl Drop for HttpApp {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// A client for plain http on loopback: no redirects followed (tests look at them), bounded.
pub fn client() -> reqwest::Client {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

pub fn test_settings(dir: &std::path::Path) -> Settings {
    let mut settings = Settings::default();
    settings.store.data_dir = dir.join("data");
    settings.store.url = crate::helpers::fresh_store_url();
    settings.server.http_listen = ([127, 0, 0, 1], 0).into();
    settings
}

/// Starts the router alone (no relay, no workers) on 127.0.0.1:0.
pub async fn spawn_http() -> HttpApp {
    let dir = tempfile::tempdir().unwrap();
    let settings = test_settings(dir.path());
    let store = Store::open_settings(&settings.store).await.unwrap();
    // A real outbox (no delivery workers): submitted mail is committed and waits.
    let (outbox, _committer) =
        postern::outbox::Outbox::start(store.clone(), postern::outbox::Wakers::default());
    let state = AppState::new(store.clone(), settings.clone()).with_outbox(outbox);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let s = stop.clone();
    tokio::spawn(async move {
        axum::serve(
            listener,
            router(state).into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move { s.cancelled().await })
        .await
        .unwrap();
    });
    HttpApp {
        base: format!("http://{addr}"),
        addr,
        store,
        client: client(),
        settings,
        dir,
        stop,
    }
}

impl HttpApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A fresh API key with `role`; returns the secret.
    pub async fn key(&self, name: &str, role: ApiRole) -> String {
        let k = self.store.create_api_key(name, role, &[]).await.unwrap();
        k.secret.expose_secret().to_string()
    }

    pub async fn admin_key(&self) -> String {
        self.key("test-admin", ApiRole::Admin).await
    }

    pub async fn send_key(&self) -> String {
        self.key("test-send", ApiRole::Send).await
    }

    pub async fn create_admin(&self, user: &str) {
        self.store
            .create_admin(user, &SecretString::from(ADMIN_PASSWORD.to_string()))
            .await
            .unwrap();
    }

    pub fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        key: Option<&str>,
    ) -> reqwest::RequestBuilder {
        let r = self.client.request(method, self.url(path));
        match key {
            Some(k) => r.bearer_auth(k),
            None => r,
        }
    }
}

/// A Microsoft connection as JSON, with a client secret.
pub fn connection_json(name: &str, secret: &str) -> serde_json::Value {
    serde_json::json!({
        "name": name,
        "provider": "microsoft",
        "user": "ops@contoso.com",
        "tenant": "contoso.onmicrosoft.com",
        "client_id": "1b2c3d4e-0000-1111-2222-333344445555",
        "client_secret": secret,
    })
}

/// The body of a response as JSON, with its status.
pub async fn json(resp: reqwest::Response) -> (u16, serde_json::Value, String) {
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    let v = serde_json::from_str(&text).unwrap_or(serde_json::Value::Null);
    (status, v, text)
}

/// The fake identity provider and SMTP server, with the CA file clients must trust.
pub struct Fakes {
    pub idp: fake_provider::FakeIdp,
    pub smtp: fake_provider::FakeSmtp,
    pub ca_file: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

pub async fn fakes() -> Fakes {
    use fake_provider::idp::IdpConfig;
    use fake_provider::smtp::{SmtpConfig, TokenValidator};
    let dir = tempfile::tempdir().unwrap();
    let idp = fake_provider::FakeIdp::start(IdpConfig::default())
        .await
        .unwrap();
    let smtp =
        fake_provider::FakeSmtp::start(SmtpConfig::office365(), TokenValidator::Idp(idp.clone()))
            .await
            .unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, smtp.ca_pem()).unwrap();
    Fakes {
        idp,
        smtp,
        ca_file,
        _dir: dir,
    }
}

impl Fakes {
    /// A connection against the fakes, as API JSON.
    pub fn connection_json(&self, name: &str) -> serde_json::Value {
        use fake_provider::idp::{DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, DEFAULT_USER};
        serde_json::json!({
            "name": name,
            "provider": "microsoft",
            // The fake has no rate limit; Microsoft's 30 a minute would pace every test.
            "limits": "messages-per-minute=0",
            "user": DEFAULT_USER,
            "tenant": "organizations",
            "client_id": DEFAULT_CLIENT_ID,
            "client_secret": DEFAULT_CLIENT_SECRET,
            "host": "127.0.0.1",
            "port": self.smtp.port(),
            "ca_file": self.ca_file.display().to_string(),
            "authorize_url": self.idp.authorize_url("organizations"),
            "token_url": self.idp.token_url("organizations"),
        })
    }
}

/// Follows the fake IdP's auto-consent: GET `authorize_url`, return its redirect `Location`.
pub async fn consent(client: &reqwest::Client, authorize_url: &str) -> String {
    let resp = client.get(authorize_url).send().await.unwrap();
    assert_eq!(
        resp.status(),
        302,
        "{}",
        resp.text().await.unwrap_or_default()
    );
    resp.headers()["location"].to_str().unwrap().to_string()
}

impl Fakes {
    /// Creates the connection against the fakes directly in the store.
    pub async fn create_connection(
        &self,
        store: &Store,
        name: &str,
    ) -> postern::domain::Connection {
        let v = self.connection_json(name);
        let s = |k: &str| v[k].as_str().map(str::to_string);
        let input = postern::domain::ConnectionInput {
            name: s("name"),
            provider: s("provider"),
            user: s("user"),
            tenant: s("tenant"),
            client_id: s("client_id"),
            host: s("host"),
            port: Some(self.smtp.port().to_string()),
            ca_file: s("ca_file"),
            authorize_url: s("authorize_url"),
            token_url: s("token_url"),
            ..Default::default()
        };
        let (settings, _) = input.validate().unwrap();
        let conn = store.insert_connection(&settings).await.unwrap();
        store
            .put_secret(
                conn.id,
                postern::store::SecretKind::ClientSecret,
                &SecretString::from(fake_provider::idp::DEFAULT_CLIENT_SECRET.to_string()),
                None,
            )
            .await
            .unwrap();
        conn
    }
}
