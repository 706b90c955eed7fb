//! A data dir filled with many connections through `postern connection import`, and `postern
//! serve` (the release binary) on it as a child process, with what /proc says about it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fake_provider::idp::{DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET};
use fake_provider::{FakeIdp, FakeSmtp};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use crate::load::{Auth, Target};
use crate::postern::{postern, process_cpu, run, status_fields};

/// The environment variable the import file names for the client secret.
const SECRET_ENV: &str = "CONNECTIONS_BENCH_CLIENT_SECRET";

/// One row of the import file.
pub struct Row {
    pub name: String,
    /// The customer's Entra tenant: its token URL is `…/{tenant}/oauth2/v2.0/token`.
    pub tenant: String,
    pub user: String,
    /// `messages-per-minute=N`. The Microsoft preset's 10,000 recipients a day is lifted for
    /// every row (`recipients-per-day=0`): a 50,000-message backlog would otherwise wait a day.
    pub per_minute: u32,
    pub enabled: bool,
}

impl Row {
    /// `c{i}`: a vendor's customer `i` with its own tenant `tenant{i}.example` (so its own
    /// token URL, as each customer has its own app registration) and mailbox, no pacing (the
    /// fake has no limit).
    pub fn numbered(i: usize) -> Self {
        Row {
            name: format!("c{i}"),
            tenant: tenant(i),
            user: mailbox(i),
            per_minute: 0,
            enabled: true,
        }
    }
}

pub fn tenant(i: usize) -> String {
    format!("tenant{i}.example")
}

pub fn mailbox(i: usize) -> String {
    format!("user{i}@{}", tenant(i))
}

/// The tenant of the rows that stand for one organisation's own mailboxes.
pub const OWN_TENANT: &str = "contoso.example";

/// A data dir with connections imported from a CSV file (how long the import took is kept).
pub struct DataDir {
    dir: tempfile::TempDir,
    pub import_time: Duration,
}

impl DataDir {
    /// Writes `rows` as CSV (client credentials against the fakes) and imports them.
    pub fn import(idp: &FakeIdp, smtp: &FakeSmtp, rows: &[Row]) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let ca = dir.path().join("provider-ca.pem");
        std::fs::write(&ca, smtp.ca_pem()).unwrap();
        let mut csv = String::from(
            "name,provider,flow,tenant,client_id,client_secret_env,user,host,port,ca_file,token_url,limits,enabled\r\n",
        );
        let port = smtp.port();
        for r in rows {
            csv.push_str(&format!(
                "{},microsoft,client-credentials,{},{DEFAULT_CLIENT_ID},{SECRET_ENV},{},127.0.0.1,{port},{},{},\"messages-per-minute={},recipients-per-day=0\",{}\r\n",
                r.name,
                r.tenant,
                r.user,
                ca.display(),
                idp.token_url(&r.tenant),
                r.per_minute,
                r.enabled
            ));
        }
        let file = dir.path().join("connections.csv");
        std::fs::write(&file, csv).unwrap();
        let t0 = Instant::now();
        run(postern(dir.path())
            .args(["connection", "import"])
            .arg(&file)
            .env(SECRET_ENV, DEFAULT_CLIENT_SECRET));
        DataDir {
            import_time: t0.elapsed(),
            dir,
        }
    }

    /// Runs `postern ARGS` on this data dir and returns its stdout.
    pub fn cli(&self, args: &[&str]) -> String {
        run(postern(self.dir.path()).args(args))
    }

    /// A send-role API key for every connection.
    pub fn api_key(&self) -> String {
        self.cli(&["api-key", "create", "bench", "--role", "send"])
            .trim()
            .to_string()
    }

    /// Relay user `name` for `connection`; returns its generated password.
    pub fn relay_user(&self, name: &str, connection: &str) -> String {
        self.cli(&["relay-user", "add", name, "--connection", connection])
            .lines()
            .find_map(|l| l.split_once("(shown once, store it in the app now): "))
            .map(|(_, pw)| pw.trim().to_string())
            .expect("a generated password")
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// Resident memory of a process in KiB: now (VmRSS) and the peak (VmHWM), and its threads.
#[derive(Debug, Clone, Copy, Default)]
pub struct Memory {
    pub rss_kib: u64,
    pub peak_kib: u64,
    pub threads: u64,
}

pub struct Serve {
    child: Child,
    pub http: SocketAddr,
    pub relay: SocketAddr,
    /// From spawning until /healthz answered 200.
    pub startup: Duration,
    log: PathBuf,
}

/// `delivery.max_sessions` for every `serve` (`--max-sessions N`); `None`: the default (256).
pub static MAX_SESSIONS: std::sync::OnceLock<u32> = std::sync::OnceLock::new();

impl Serve {
    /// `serve` on port 0; returns once /healthz answers (60 s at most).
    pub async fn start(data: &DataDir) -> Self {
        let log_path = data.path().join("serve.log");
        let log = std::fs::File::create(&log_path).unwrap();
        let t0 = Instant::now();
        let mut command = postern(data.path());
        if let Some(n) = MAX_SESSIONS.get() {
            command.env("POSTERN_DELIVERY__MAX_SESSIONS", n.to_string());
        }
        let mut child = command
            .args([
                "serve",
                "--smtp-listen",
                "127.0.0.1:0",
                "--http-listen",
                "127.0.0.1:0",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("spawn postern serve");
        let (relay, http) = read_addrs(&mut child);
        let client = reqwest::Client::new();
        let url = format!("http://{http}/healthz");
        loop {
            let ok = client
                .get(&url)
                .timeout(Duration::from_secs(5))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ok {
                break;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(60),
                "no /healthz within 60 s; see {}",
                log_path.display()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Serve {
            child,
            http,
            relay,
            startup: t0.elapsed(),
            log: log_path,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// User + system CPU time so far.
    pub fn cpu(&self) -> Duration {
        let (u, s) = process_cpu(self.pid());
        u + s
    }

    pub fn memory(&self) -> Memory {
        let field = status_fields(self.pid());
        Memory {
            rss_kib: field("VmRSS:"),
            peak_kib: field("VmHWM:"),
            threads: field("Threads:"),
        }
    }

    /// The last lines of serve's log (info level), to show why something did not arrive.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(10)..].join("\n")
    }

    /// The relay as a legacy app sees it, logged in as `user`.
    pub fn relay_target(&self, data: &DataDir, user: &str, password: &str) -> Target {
        let cert = data.path().join("data").join("relay-cert.pem");
        let ca = CertificateDer::from_pem_file(&cert).expect("relay-cert.pem");
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca).expect("a usable CA certificate");
        let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
        config.resumption = rustls::client::Resumption::disabled();
        Target {
            addr: self.relay,
            tls: Arc::new(config),
            auth: Auth::Plain {
                user: user.into(),
                password: password.into(),
            },
        }
    }
}

impl Drop for Serve {
    /// SIGTERM to this child by its PID, SIGKILL after 30 s.
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads `serve`'s stdout until it named the relay and HTTP addresses (60 s at most); keeps
/// reading (and discarding) afterwards so `serve` never blocks on a full pipe.
fn read_addrs(child: &mut Child) -> (SocketAddr, SocketAddr) {
    use std::io::BufRead;
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut relay = None;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let addr = |marker: &str| {
                line.split_once(marker)
                    .and_then(|(_, rest)| rest.split_whitespace().next())
                    .and_then(|a| a.parse::<SocketAddr>().ok())
            };
            if let Some(a) = addr("SMTP relay on ") {
                relay = Some(a);
            }
            if let (Some(r), Some(h)) = (relay, addr("HTTP on http://")) {
                let _ = tx.send((r, h));
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(60))
        .expect("serve did not name its addresses within 60 s")
}
