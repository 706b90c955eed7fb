//! The world of a test: the fake provider (in this process, behind gates), a Postern home
//! with a connection and a relay user made by the real CLI, and `postern serve` as a child
//! process that can be killed with SIGKILL and started again on the same ports.

#![allow(dead_code)]

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fake_provider::idp::{DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, DEFAULT_USER, IdpConfig};
use fake_provider::smtp::{SmtpConfig, TokenValidator};
use fake_provider::{FakeIdp, FakeSmtp};

use crate::gate::Gate;

pub const USER: &str = DEFAULT_USER;
pub const TENANT: &str = "contoso.example";
pub const CLIENT_SECRET: &str = DEFAULT_CLIENT_SECRET;

/// Whether this run is CI, where skipping for a missing package or root is a failure.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Skips (outside CI) or fails (in CI) a test whose prerequisite is missing.
/// Returns true when the test should stop.
pub fn skip(why: &str) -> bool {
    assert!(!in_ci(), "CI must run this test, but: {why}");
    eprintln!("SKIPPED: {why}");
    true
}

/// A number from the environment (long runs in `scripts/`), else the CI default.
pub fn figure(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The user to run Postern as (`POSTERN_PROVE_RUN_AS`), if any; needs root.
pub fn run_as() -> Option<String> {
    std::env::var("POSTERN_PROVE_RUN_AS")
        .ok()
        .filter(|u| !u.is_empty())
}

/// Whether `program` is on the PATH.
pub fn have(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The fake IdP and fake Office 365 SMTP server, each reached through a [`Gate`].
pub struct Providers {
    pub idp: FakeIdp,
    pub smtp: FakeSmtp,
    pub idp_gate: Gate,
    pub smtp_gate: Gate,
    /// Every access token presented at SMTP AUTH, for the secrets audit.
    pub tokens_seen: Arc<Mutex<Vec<String>>>,
}

impl Providers {
    pub async fn start() -> Providers {
        Self::start_with(SmtpConfig::office365()).await
    }

    pub async fn start_with(smtp_config: SmtpConfig) -> Providers {
        let idp = FakeIdp::start(IdpConfig::default())
            .await
            .expect("fake IdP");
        let tokens_seen: Arc<Mutex<Vec<String>>> = Arc::default();
        let (check_idp, seen) = (idp.clone(), tokens_seen.clone());
        let validator = TokenValidator::from_fn(move |_user, token| {
            seen.lock().unwrap().push(token.to_string());
            check_idp.validate_access_token(token).is_some()
        });
        let smtp = FakeSmtp::start(smtp_config, validator)
            .await
            .expect("fake SMTP");
        let idp_gate = Gate::open_to(idp.addr()).await;
        let smtp_gate = Gate::open_to(smtp.addr()).await;
        Providers {
            idp,
            smtp,
            idp_gate,
            smtp_gate,
            tokens_seen,
        }
    }

    /// The token endpoint as Postern sees it (through the gate).
    pub fn token_url(&self) -> String {
        format!("http://{}/{TENANT}/oauth2/v2.0/token", self.idp_gate.addr())
    }

    pub fn authorize_url(&self) -> String {
        format!(
            "http://{}/{TENANT}/oauth2/v2.0/authorize",
            self.idp_gate.addr()
        )
    }

    /// How many messages the provider accepted that carry `marker` in their bytes.
    pub fn count_with(&self, marker: &str) -> usize {
        self.smtp
            .messages()
            .iter()
            .filter(|m| contains(&m.data, marker.as_bytes()))
            .count()
    }
}

pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// How the connection gets its tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// App-only: the client secret buys access tokens, no refresh token.
    ClientCredentials,
    /// Delegated: `connection authorize --paste`, a refresh token is kept.
    AuthorizationCode,
}

/// A temporary Postern home: its data directory, environment and everything the CLI printed.
pub struct Home {
    pub dir: tempfile::TempDir,
    pub data_dir: PathBuf,
    env: Vec<(String, String)>,
    pub relay_user: String,
    pub relay_password: String,
    /// Every CLI output so far (the secrets audit greps them).
    pub printed: Vec<String>,
}

impl Home {
    /// A home whose data directory is `data_dir` (default: inside the temporary directory).
    pub fn new(data_dir: Option<PathBuf>) -> Home {
        let dir = tempfile::tempdir().expect("tempdir");
        let data_dir = data_dir.unwrap_or_else(|| dir.path().join("data"));
        let mut home = Home {
            dir,
            data_dir: data_dir.clone(),
            env: Vec::new(),
            relay_user: "app".into(),
            relay_password: String::new(),
            printed: Vec::new(),
        };
        home.set_env("POSTERN_STORE__DATA_DIR", &data_dir.display().to_string());
        // Outages in tests last seconds, not hours.
        home.set_env("POSTERN_DELIVERY__FIRST_RETRY_SECS", "1");
        home.set_env("POSTERN_DELIVERY__MAX_RETRY_SECS", "2");
        home.set_env("POSTERN_SERVER__SHUTDOWN_GRACE_SECS", "2");
        if let Some(user) = run_as() {
            // Postern runs as `user` and keeps its data under the home: hand the home over.
            let chown = Command::new("chown")
                .arg(format!("{user}:"))
                .arg(home.path())
                .status()
                .expect("run chown");
            assert!(chown.success(), "chown {user}: {}", home.path().display());
        }
        home
    }

    pub fn set_env(&mut self, key: &str, value: &str) {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.into(), value.into()));
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `postern ARGS` in this home, with this home's environment only.
    pub fn cmd(&self, args: &[&str]) -> Command {
        // POSTERN_PROVE_BIN runs the same test against another build (an older commit's, to
        // show that a new test fails there).
        let bin = std::env::var("POSTERN_PROVE_BIN")
            .unwrap_or_else(|_| env!("CARGO_BIN_EXE_postern").to_string());
        // POSTERN_PROVE_RUN_AS runs it as that user (the installed package's `postern`), as
        // systemd does. setpriv execs Postern itself, so signals and the pid reach it directly.
        let mut c = match run_as() {
            Some(user) => {
                let gid = Command::new("id").args(["-g", &user]).output().unwrap();
                let gid = String::from_utf8_lossy(&gid.stdout).trim().to_string();
                let mut c = Command::new("setpriv");
                c.args(["--reuid", &user, "--regid", &gid, "--init-groups", "--"]);
                c.arg(bin);
                c
            }
            None => Command::new(bin),
        };
        c.current_dir(self.path()).args(args).stdin(Stdio::null());
        for (k, _) in std::env::vars() {
            if k.starts_with("POSTERN_") || k == "RUST_LOG" {
                c.env_remove(k);
            }
        }
        c.envs(self.env.iter().map(|(k, v)| (k, v)));
        c
    }

    /// Runs a command to its end; panics on failure. Returns stdout.
    pub fn run(&mut self, args: &[&str]) -> String {
        let out = self.cmd(args).output().expect("run postern");
        self.check(args, out)
    }

    fn check(&mut self, args: &[&str], out: Output) -> String {
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        self.printed.push(format!("{stdout}{stderr}"));
        assert!(
            out.status.success(),
            "postern {args:?} failed\nstdout: {stdout}\nstderr: {stderr}"
        );
        stdout
    }

    /// Adds connection `fake` pointing at `p` (SMTP through its gate, trusting its CA),
    /// authorizes it with `flow`, and adds relay user `app` with a generated password.
    pub async fn setup(&mut self, p: &Providers, flow: Flow) {
        let secret = self.path().join("client-secret");
        std::fs::write(&secret, CLIENT_SECRET).unwrap();
        let ca = self.path().join("provider-ca.pem");
        std::fs::write(&ca, p.smtp.ca_pem()).unwrap();
        let port = p.smtp_gate.port().to_string();
        let (token_url, authorize_url) = (p.token_url(), p.authorize_url());
        let flow_name = match flow {
            Flow::ClientCredentials => "client-credentials",
            Flow::AuthorizationCode => "authorization-code",
        };
        #[rustfmt::skip]
        let args = [
            "connection", "add", "fake", "--provider", "microsoft", "--flow", flow_name,
            "--tenant", TENANT, "--user", USER, "--client-id", DEFAULT_CLIENT_ID,
            "--client-secret-file", &secret.display().to_string(), "--host", "127.0.0.1",
            "--port", &port, "--ca-file", &ca.display().to_string(),
            "--token-url", &token_url, "--authorize-url", &authorize_url,
            // The fake has no rate limit; Microsoft's 30 a minute would pace every test.
            "--limit", "messages-per-minute=0",
        ];
        self.run(&args);
        if flow == Flow::AuthorizationCode {
            self.authorize_by_paste("fake").await;
        }
        let out = self.run(&["relay-user", "add", "app", "--connection", "fake"]);
        self.relay_password = out
            .lines()
            .find_map(|l| l.split_once("Password (shown once, store it in the app now): "))
            .map(|(_, pw)| pw.trim().to_string())
            .expect("the generated relay password");
    }

    /// `connection authorize NAME --paste`: the test plays the browser and pastes the
    /// redirect back. Returns the authorize URL Postern printed.
    pub async fn authorize_by_paste(&mut self, name: &str) -> String {
        let mut child = self
            .cmd(&["connection", "authorize", name, "--paste"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn authorize");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead as _;
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut seen = String::new();
        let url = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(l) if l.trim().starts_with("http") && l.contains("/authorize?") => {
                    break l.trim().to_string();
                }
                Ok(l) => seen.push_str(&format!("{l}\n")),
                Err(_) => panic!("no authorize URL printed:\n{seen}"),
            }
        };
        let location = follow_redirect(&url).await;
        assert!(location.contains("code="), "{location}");
        let stdin = child.stdin.as_mut().unwrap();
        stdin.write_all(format!("{location}\n").as_bytes()).unwrap();
        drop(child.stdin.take());
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("authorize did not finish:\n{seen}");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        // The reader thread ends when stdout closes; bounded in case a grandchild holds it.
        let mut rest = Vec::new();
        while let Ok(l) = rx.recv_timeout(Duration::from_secs(2)) {
            rest.push(l);
        }
        let mut stderr = String::new();
        if let Some(mut e) = child.stderr.take() {
            use std::io::Read as _;
            let _ = e.read_to_string(&mut stderr);
        }
        let all = format!("{seen}{}\n{stderr}", rest.join("\n"));
        self.printed.push(all.clone());
        assert!(status.success(), "authorize failed: {all}");
        url
    }

    /// Starts `postern serve` on fresh ports.
    pub fn serve(&self) -> Server {
        self.serve_on("127.0.0.1:0", "127.0.0.1:0")
    }

    /// Starts `postern serve` on these listen addresses; waits (bounded) until it listens.
    pub fn serve_on(&self, relay: &str, http: &str) -> Server {
        let n = std::fs::read_dir(self.path())
            .map(|d| d.count())
            .unwrap_or(0);
        let out_path = self.path().join(format!("serve-{n}.out"));
        let log_path = self.path().join(format!("serve-{n}.log"));
        let child = self
            .cmd(&["serve", "--smtp-listen", relay, "--http-listen", http])
            .stdout(std::fs::File::create(&out_path).unwrap())
            .stderr(std::fs::File::create(&log_path).unwrap())
            .spawn()
            .expect("spawn postern serve");
        let mut server = Server {
            child,
            relay: "0.0.0.0:0".parse().unwrap(),
            http: "0.0.0.0:0".parse().unwrap(),
            out_path,
            log_path,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let out = std::fs::read_to_string(&server.out_path).unwrap_or_default();
            let relay = after(&out, "postern: SMTP relay on ");
            let http = after(&out, "postern: HTTP on http://");
            if let (Some(r), Some(h)) = (relay, http) {
                server.relay = r.parse().expect("relay address");
                server.http = h.parse().expect("HTTP address");
                return server;
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("serve exited with {status}:\n{}", server.log());
            }
            assert!(
                Instant::now() < deadline,
                "serve did not start:\n{}",
                server.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Every file of the data directory, as raw bytes (database, WAL, keys, certificates).
    pub fn data_bytes(&self) -> Vec<u8> {
        let mut all = Vec::new();
        for entry in std::fs::read_dir(&self.data_dir).unwrap() {
            let p = entry.unwrap().path();
            if p.is_file() {
                all.extend(std::fs::read(&p).unwrap());
            }
        }
        all
    }

    /// The SQLite database file.
    pub fn database(&self) -> PathBuf {
        let db = std::fs::read_dir(&self.data_dir)
            .unwrap()
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|e| e == "db" || e == "sqlite"));
        db.expect("a database file in the data directory")
    }
}

/// The first word after `prefix` on the line that has it.
fn after(text: &str, prefix: &str) -> Option<String> {
    let line = text.lines().find(|l| l.starts_with(prefix))?;
    line[prefix.len()..]
        .split_whitespace()
        .next()
        .map(str::to_string)
}

/// GETs `url` without following redirects and returns the `Location`.
pub async fn follow_redirect(url: &str) -> String {
    let resp = http().get(url).send().await.expect("GET authorize");
    assert_eq!(resp.status().as_u16(), 302, "authorize: {}", resp.status());
    resp.headers()["location"].to_str().unwrap().to_string()
}

pub fn http() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("HTTP client")
}

/// A running `postern serve`.
pub struct Server {
    child: Child,
    pub relay: SocketAddr,
    pub http: SocketAddr,
    pub out_path: PathBuf,
    pub log_path: PathBuf,
}

impl Server {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL: no drain, no flush, nothing.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and wait (bounded) for a graceful stop.
    pub fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        panic!("serve did not stop on SIGTERM:\n{}", self.log());
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Peak resident memory (VmHWM) and current (VmRSS), in KiB.
    pub fn memory_kib(&self) -> (u64, u64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
                .unwrap_or(0)
        };
        (field("VmHWM:"), field("VmRSS:"))
    }

    /// `GET /metrics`.
    pub async fn metrics(&self) -> String {
        let url = format!("http://{}/metrics", self.http);
        let resp = http().get(url).send().await.expect("GET /metrics");
        resp.text().await.expect("metrics body")
    }

    /// The `postern_messages` gauge for `status` (0 when absent).
    pub async fn messages_with_status(&self, status: &str) -> u64 {
        let needle = format!("status=\"{status}\"}} ");
        self.metrics()
            .await
            .lines()
            .filter(|l| l.starts_with("postern_messages{") && l.contains(&needle))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
