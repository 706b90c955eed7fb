//! A Postern home wired to the fake IdP and provider SMTP (in-process), and the real
//! `postern serve` binary as a child process on port 0.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use fake_provider::idp::{DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, DEFAULT_USER, IdpConfig};
use fake_provider::smtp::{SmtpConfig, TokenValidator};
use fake_provider::{FakeGraph, FakeIdp, FakeSmtp};
use postern::store::Store;
use postern::store::messages::MessageDetail;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdout};

use crate::helpers::{Run, TestHome};

/// The connection's mailbox (the fake IdP's user).
pub const USER: &str = DEFAULT_USER;
pub const SCOPE: &str = "https://outlook.office.com/SMTP.Send offline_access";
pub const GRAPH_SCOPE: &str = "https://graph.microsoft.com/Mail.Send offline_access";

/// How the test connection gets its tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    ClientCredentials,
    /// With a refresh token issued by the fake IdP, as if consent had run.
    AuthorizationCode,
}

pub struct World {
    pub home: TestHome,
    pub idp: FakeIdp,
    pub smtp: FakeSmtp,
    /// The fake Microsoft Graph, when the connection sends through Graph.
    pub graph: Option<FakeGraph>,
    /// The relay user `app`'s generated password.
    pub password: String,
    env: Vec<(String, String)>,
}

/// A running `postern serve`; killed (SIGKILL) when dropped.
pub struct Serve {
    child: Child,
    _stdout: BufReader<ChildStdout>,
    pub relay: SocketAddr,
    pub http: SocketAddr,
    /// The cleartext listener, when `POSTERN_SERVER__PLAIN_LISTEN` is set.
    pub plain: Option<SocketAddr>,
}

impl World {
    pub async fn new(flow: Flow) -> Self {
        Self::build(flow, false, false).await
    }

    /// A world whose connection `fake` has `--transport graph` (delegated, with a Graph refresh
    /// token), pointed at a fake Graph that trusts the fake IdP's tokens.
    pub async fn graph() -> Self {
        Self::build(Flow::AuthorizationCode, true, false).await
    }

    /// A world whose SMTP connection `fake` has `--fallback graph` (the SMTP scope's refresh
    /// token, or client credentials), trusting both the fake SMTP server and the fake Graph.
    pub async fn graph_fallback(flow: Flow) -> Self {
        Self::build(flow, true, true).await
    }

    /// A world whose provider SMTP runs with `config` (a reply delay, say).
    pub async fn with_provider(flow: Flow, config: SmtpConfig) -> Self {
        Self::build_with(flow, false, false, config).await
    }

    async fn build(flow: Flow, graph: bool, fallback: bool) -> Self {
        Self::build_with(flow, graph, fallback, SmtpConfig::office365()).await
    }

    async fn build_with(flow: Flow, graph: bool, fallback: bool, config: SmtpConfig) -> Self {
        let home = TestHome::new();
        let idp = FakeIdp::start(IdpConfig::default()).await.unwrap();
        let smtp = FakeSmtp::start(config, TokenValidator::Idp(idp.clone()))
            .await
            .unwrap();
        let ca = home.file("provider-ca.pem", &smtp.ca_pem());
        let secret = home.file("client-secret", DEFAULT_CLIENT_SECRET);
        let port = smtp.port().to_string();
        let token_url = idp.token_url("contoso.example");
        let fake_graph = if graph {
            Some(FakeGraph::start(idp.clone()).await.unwrap())
        } else {
            None
        };
        let graph_ca = fake_graph
            .as_ref()
            .map(|g| home.file("graph-ca.pem", &g.ca_pem()));
        let graph_url = fake_graph.as_ref().map(FakeGraph::base_url);
        let scope = if graph && !fallback {
            GRAPH_SCOPE
        } else {
            SCOPE
        };
        // Both CAs in one file: the fallback reaches the SMTP server and Graph.
        let both_ca = home.file(
            "both-ca.pem",
            &format!(
                "{}\n{}",
                smtp.ca_pem(),
                fake_graph.as_ref().map(|g| g.ca_pem()).unwrap_or_default()
            ),
        );
        let mut args = vec![
            "connection",
            "add",
            "fake",
            "--provider",
            "microsoft",
            // The fake has no rate limit; Microsoft's 30 a minute would pace every test.
            "--limit",
            "messages-per-minute=0",
            "--tenant",
            "contoso.example",
            "--user",
            USER,
            "--client-id",
            DEFAULT_CLIENT_ID,
            "--client-secret-file",
            &secret,
            "--host",
            "127.0.0.1",
            "--port",
            &port,
            "--token-url",
            &token_url,
        ];
        match (&graph_ca, &graph_url) {
            (Some(_), Some(url)) if fallback => args.extend([
                "--fallback",
                "graph",
                "--graph-url",
                url,
                "--ca-file",
                &both_ca,
            ]),
            (Some(ca), Some(url)) => {
                args.extend(["--transport", "graph", "--graph-url", url, "--ca-file", ca])
            }
            _ => args.extend(["--ca-file", &ca]),
        }
        let refresh;
        match flow {
            Flow::ClientCredentials => args.extend(["--flow", "client-credentials"]),
            Flow::AuthorizationCode => {
                refresh = home.file(
                    "refresh-token",
                    &idp.issue_refresh_token(DEFAULT_CLIENT_ID, USER, scope),
                );
                args.extend([
                    "--flow",
                    "authorization-code",
                    "--refresh-token-file",
                    &refresh,
                ]);
            }
        }
        home.run(&args).ok();
        let out = home
            .run(&["relay-user", "add", "app", "--connection", "fake"])
            .ok();
        let password = generated_password(&out.stdout);
        // PostgreSQL: a restarted instance takes over only claims whose lease ran out (others
        // may be alive): short leases, so the restart tests need not wait a minute.
        let env = match home.store_url {
            Some(_) => vec![("POSTERN_DELIVERY__LEASE_SECS".to_string(), "3".to_string())],
            None => Vec::new(),
        };
        World {
            home,
            idp,
            smtp,
            graph: fake_graph,
            password,
            env,
        }
    }

    /// A `POSTERN_*` setting for every later `serve`.
    pub fn setting(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    pub fn relay_cert(&self) -> PathBuf {
        self.home.data_dir().join("relay-cert.pem")
    }

    /// Starts `postern serve` on port 0 and waits for the addresses it prints.
    pub async fn serve(&self) -> Serve {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.home.path().join("serve.log"))
            .unwrap();
        let mut cmd = tokio::process::Command::from(self.home.cmd(&[
            "serve",
            "--smtp-listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
        ]));
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::piped())
            .stderr(log)
            .kill_on_drop(true);
        let mut child = cmd.spawn().expect("spawn postern serve");
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let (mut relay, mut http, mut plain) = (None, None, None);
        let deadline = Instant::now() + Duration::from_secs(30);
        while relay.is_none() || http.is_none() {
            let mut line = String::new();
            let left = deadline.saturating_duration_since(Instant::now());
            let n = tokio::time::timeout(left, stdout.read_line(&mut line))
                .await
                .unwrap_or_else(|_| panic!("serve did not start: {}", self.log()))
                .unwrap();
            assert!(n > 0, "serve exited: {}", self.log());
            let addr = |after: &str| {
                line.split_once(after)
                    .and_then(|(_, rest)| rest.split_whitespace().next())
                    .and_then(|a| a.parse::<SocketAddr>().ok())
            };
            relay = relay.or(addr("SMTP relay on "));
            http = http.or(addr("HTTP on http://"));
            // Printed before the HTTP line, so it is in when the loop ends.
            plain = plain.or(addr("SMTP relay without TLS on "));
        }
        Serve {
            child,
            _stdout: stdout,
            relay: relay.unwrap(),
            http: http.unwrap(),
            plain,
        }
    }

    /// What `serve` logged so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.home.path().join("serve.log")).unwrap_or_default()
    }

    /// Runs a `postern` command without blocking the fakes' runtime.
    pub async fn postern(&self, args: &[&str]) -> Run {
        let mut cmd = tokio::process::Command::from(self.home.cmd(args));
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd.output().await.expect("run postern").into()
    }

    /// `postern ARGS --json`, parsed.
    pub async fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = args.to_vec();
        all.push("--json");
        let out = self.postern(&all).await.ok();
        serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", out.stdout))
    }

    /// The store, opened beside the running server (SQLite WAL allows it).
    pub async fn store(&self) -> Store {
        self.home.store().await
    }

    /// Waits until message `id` has `status`; returns its detail.
    pub async fn wait_status(&self, store: &Store, id: &str, status: &str) -> MessageDetail {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let d = store.message_detail(id).await.unwrap();
            match d {
                Some(d) if d.summary.status == status => return d,
                _ if Instant::now() > deadline => {
                    panic!("message {id} never became {status}: {d:?}\n{}", self.log())
                }
                _ => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }
}

impl Serve {
    /// `GET /metrics` (Prometheus text) over plain HTTP/1.0.
    pub async fn metrics(&self) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut tcp = tokio::net::TcpStream::connect(self.http).await.unwrap();
        tcp.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
            .await
            .unwrap();
        let mut body = String::new();
        tokio::time::timeout(Duration::from_secs(10), tcp.read_to_string(&mut body))
            .await
            .expect("metrics in time")
            .unwrap();
        body
    }

    /// The server's process id (to signal it).
    pub fn pid(&self) -> u32 {
        self.child.id().expect("serve is running")
    }

    /// SIGKILL: no graceful shutdown, as in a crash or power loss.
    pub async fn kill(mut self) {
        self.child.start_kill().unwrap();
        let _ = tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await;
    }
}

/// The generated password `relay-user add` printed (once).
pub fn generated_password(stdout: &str) -> String {
    stdout
        .lines()
        .find_map(|l| l.split_once("(shown once, store it in the app now): "))
        .map(|(_, pw)| pw.trim().to_string())
        .unwrap_or_else(|| panic!("no password in {stdout:?}"))
}
