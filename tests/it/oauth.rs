//! OAuth consent flows and the token manager against the fake identity provider, over real HTTP
//! on 127.0.0.1: the CLI flows run the real binary, the token manager runs in-process.

mod cli_flows;
mod cli_tokens;
mod manager;

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use fake_provider::FakeIdp;
use fake_provider::idp::{ClientRegistration, IdpConfig};
use postern::domain::{Connection, ConnectionInput};
use postern::oauth::{RetryPolicy, TokenManager};
use postern::settings::TokenSettings;
use postern::store::{SecretKind, Store};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

use crate::helpers::{CLIENT_ID, Run, TestHome};

pub const SECRET: &str = "fake~client~secret~postern~it~0123456789";
pub const USER: &str = "ops@contoso.com";
pub const TENANT: &str = "contoso.onmicrosoft.com";
pub const SCOPE: &str = "https://outlook.office.com/SMTP.Send offline_access";
pub const APP_SCOPE: &str = "https://outlook.office365.com/.default";

/// The fake registers the helpers' client id with our secret, any loopback redirect.
pub fn idp_config() -> IdpConfig {
    IdpConfig::default().with_client(ClientRegistration::confidential(CLIENT_ID, SECRET))
}

pub async fn start_idp(config: IdpConfig) -> FakeIdp {
    FakeIdp::start(config).await.expect("start fake IdP")
}

/// `--authorize-url`, `--token-url`, `--device-url` pointing at the fake.
pub fn endpoint_args(idp: &FakeIdp) -> Vec<String> {
    vec![
        "--authorize-url".into(),
        idp.authorize_url(TENANT),
        "--token-url".into(),
        idp.token_url(TENANT),
        "--device-url".into(),
        idp.device_url(TENANT),
    ]
}

/// Adds connection `name` (Microsoft preset, our secret) pointing at the fake.
pub fn add_connection(home: &TestHome, idp: &FakeIdp, name: &str, extra: &[&str]) {
    let endpoints = endpoint_args(idp);
    let mut args: Vec<&str> = endpoints.iter().map(String::as_str).collect();
    args.extend_from_slice(extra);
    home.add_connection(name, SECRET, &args).ok();
}

/// An HTTP client for the test acting as the browser: never follows redirects.
pub fn browser() -> reqwest::Client {
    static PROVIDER: Once = Once::new();
    PROVIDER.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("browser client")
}

/// GETs the authorize URL like a browser and returns the `Location` of the redirect.
pub async fn follow_authorize(url: &str) -> String {
    let resp = browser().get(url).send().await.expect("GET authorize");
    assert_eq!(
        resp.status().as_u16(),
        302,
        "authorize answered {}",
        resp.status()
    );
    resp.headers()
        .get("location")
        .expect("Location")
        .to_str()
        .unwrap()
        .to_string()
}

/// A query parameter of `url`.
pub fn param(url: &str, name: &str) -> Option<String> {
    url::Url::parse(url)
        .ok()?
        .query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// The real binary running in the background, its output collected by reader threads.
pub struct Running {
    child: Child,
    lines: mpsc::Receiver<String>,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
    seen: Vec<String>,
}

fn collect(
    stream: impl Read + Send + 'static,
    into: Arc<Mutex<String>>,
    lines: Option<mpsc::Sender<String>>,
) {
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            into.lock().unwrap().push_str(&format!("{line}\n"));
            if let Some(tx) = &lines {
                let _ = tx.send(line);
            }
        }
    });
}

impl Running {
    /// Starts `postern ARGS` in `home`; with `trace`, every log level is on (`-vv`, `RUST_LOG=trace`).
    pub fn spawn(home: &TestHome, args: &[&str], trace: bool) -> Self {
        let mut all: Vec<&str> = if trace { vec!["-vv"] } else { vec![] };
        all.extend_from_slice(args);
        let mut cmd = home.cmd(&all);
        if trace {
            cmd.env("RUST_LOG", "trace");
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn postern");
        let (tx, lines) = mpsc::channel();
        let (stdout, stderr) = (
            Arc::new(Mutex::new(String::new())),
            Arc::new(Mutex::new(String::new())),
        );
        collect(child.stdout.take().unwrap(), stdout.clone(), Some(tx));
        collect(child.stderr.take().unwrap(), stderr.clone(), None);
        Self {
            child,
            lines,
            stdout,
            stderr,
            seen: Vec::new(),
        }
    }

    /// Waits (bounded) for a stdout line containing `needle`.
    pub fn line_with(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        if let Some(l) = self.seen.iter().find(|l| l.contains(needle)) {
            return l.clone();
        }
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(l) if l.contains(needle) => return l,
                Ok(l) => self.seen.push(l),
                Err(_) => break,
            }
        }
        panic!(
            "no line with {needle:?} in time\nstdout: {}\nstderr: {}",
            self.stdout.lock().unwrap(),
            self.stderr.lock().unwrap()
        );
    }

    /// The sign-in URL the binary printed.
    pub fn authorize_url(&mut self) -> String {
        self.line_with("/oauth2/v2.0/authorize?").trim().to_string()
    }

    pub fn type_line(&mut self, text: &str) {
        let stdin = self.child.stdin.as_mut().expect("stdin");
        stdin.write_all(format!("{text}\n").as_bytes()).unwrap();
        stdin.flush().unwrap();
    }

    /// Waits (bounded; killed after 30 s) for the exit, then returns everything it printed.
    pub fn finish(mut self) -> Run {
        drop(self.child.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(30);
        let code = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status.code().unwrap_or(-1);
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "postern did not finish\nstderr: {}",
                    self.stderr.lock().unwrap()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        // The reader threads finish once the pipes close; give them a moment to drain.
        let drained = Instant::now() + Duration::from_secs(2);
        while Instant::now() < drained
            && Arc::strong_count(&self.stdout) + Arc::strong_count(&self.stderr) > 2
        {
            std::thread::sleep(Duration::from_millis(10));
        }
        let stdout = self.stdout.lock().unwrap().clone();
        let stderr = self.stderr.lock().unwrap().clone();
        Run {
            code,
            stdout,
            stderr,
        }
    }
}

/// Asserts that no secret value, and no PKCE verifier matching `challenge`, appears in `text`.
pub fn assert_no_secrets(text: &str, secrets: &[&str], challenge: Option<&str>) {
    for s in secrets {
        assert!(!s.is_empty());
        assert!(
            !text.contains(s),
            "a secret ({}...) leaked into the output:\n{text}",
            &s[..s.len().min(12)]
        );
    }
    if let Some(challenge) = challenge {
        // The verifier is never printed, so look for any word that hashes to the challenge.
        for word in text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_')) {
            if (43..=128).contains(&word.len()) {
                let hashed = URL_SAFE_NO_PAD.encode(Sha256::digest(word.as_bytes()));
                assert_ne!(
                    hashed, challenge,
                    "the PKCE verifier leaked into the output"
                );
            }
        }
    }
}

/// A store with one connection pointing at a fake IdP, for in-process token manager tests.
pub struct Lib {
    pub idp: FakeIdp,
    pub store: Store,
    pub conn: Connection,
    /// The PostgreSQL database of `store`; None on SQLite.
    url: Option<String>,
    _dir: tempfile::TempDir,
}

/// Short backoff so retry tests take milliseconds.
pub fn fast_retries() -> RetryPolicy {
    RetryPolicy {
        attempts: 4,
        base: Duration::from_millis(10),
        cap: Duration::from_millis(40),
        retry_after_cap: Duration::from_secs(2),
    }
}

impl Lib {
    pub async fn new(config: IdpConfig, flow: &str) -> Self {
        let idp = start_idp(config).await;
        let dir = tempfile::tempdir().unwrap();
        let url = crate::helpers::fresh_store_url();
        let store = Store::open_url(
            url.as_deref(),
            dir.path(),
            Some(&dir.path().join("secret.key")),
        )
        .await
        .unwrap();
        let input = ConnectionInput {
            name: Some("contoso".into()),
            provider: Some("microsoft".into()),
            flow: Some(flow.into()),
            user: Some(USER.into()),
            tenant: Some(TENANT.into()),
            client_id: Some(CLIENT_ID.into()),
            authorize_url: Some(idp.authorize_url(TENANT)),
            token_url: Some(idp.token_url(TENANT)),
            device_url: Some(idp.device_url(TENANT)),
            ..ConnectionInput::default()
        };
        let (settings, _) = input.validate().unwrap();
        let conn = store.insert_connection(&settings).await.unwrap();
        store
            .put_secret(
                conn.id,
                SecretKind::ClientSecret,
                &SecretString::from(SECRET),
                None,
            )
            .await
            .unwrap();
        Self {
            idp,
            store,
            conn,
            url,
            _dir: dir,
        }
    }

    /// Another instance's store on the same PostgreSQL database (its own pool, the same data
    /// key); None on SQLite, where one process serves a store.
    pub async fn another_instance(&self) -> Option<Store> {
        let url = self.url.as_deref()?;
        let key = self._dir.path().join("secret.key");
        Some(
            Store::open_url(Some(url), self._dir.path(), Some(&key))
                .await
                .unwrap(),
        )
    }

    /// A token manager of its own (another process) on `store`.
    pub fn manager_on(&self, store: Store) -> TokenManager {
        TokenManager::with_retry_policy(store, TokenSettings::default(), fast_retries()).unwrap()
    }

    pub fn manager(&self) -> TokenManager {
        TokenManager::with_retry_policy(
            self.store.clone(),
            TokenSettings::default(),
            fast_retries(),
        )
        .unwrap()
    }

    /// As if an admin had consented: a refresh token from the fake, stored and authorized, with
    /// an access token that has already expired.
    pub async fn seed(&self) -> String {
        let rt = self.idp.issue_refresh_token(CLIENT_ID, USER, SCOPE);
        let expired = chrono::Utc::now().timestamp() - 60;
        self.store
            .save_tokens(
                self.conn.id,
                Some(&SecretString::from(rt.clone())),
                postern::store::SecretKind::AccessToken,
                &SecretString::from("expired"),
                expired,
            )
            .await
            .unwrap();
        rt
    }

    pub async fn conn(&self) -> Connection {
        self.store.connection_by_id(self.conn.id).await.unwrap()
    }

    pub async fn stored(&self, kind: SecretKind) -> Option<String> {
        let s = self.store.secret(self.conn.id, kind).await.unwrap()?;
        Some(s.value.expose_secret().to_string())
    }
}
