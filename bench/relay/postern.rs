//! `postern serve` as a child process with a fresh data dir, set up through the real CLI, and
//! what /proc says about it (CPU time, resident memory).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fake_provider::idp::{DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET};
use fake_provider::{FakeIdp, FakeSmtp};

use crate::load::FROM;

/// The release binary built with this benchmark.
const POSTERN: &str = env!("CARGO_BIN_EXE_postern");
/// The relay password with `RELAY_BENCH_CHOSEN_PASSWORD=1`.
const CHOSEN_PASSWORD: &str = "correct horse battery staple";

/// Resident set sizes in KiB: the peak (VmHWM) and now, split into anonymous memory (heap,
/// stacks) and file pages (mostly the binary's code, shared with the page cache).
#[derive(Debug, Clone, Copy, Default)]
pub struct Memory {
    pub peak_kib: u64,
    pub rss_kib: u64,
    pub anon_kib: u64,
    pub file_kib: u64,
}

pub struct Postern {
    child: Child,
    pub relay: SocketAddr,
    pub password: String,
    pub relay_cert: PathBuf,
    _dir: tempfile::TempDir,
}

/// User and system CPU time of process `pid` so far (all its threads).
pub fn process_cpu(pid: u32) -> (Duration, Duration) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after `(comm)`: utime and stime are the 12th and 13th (clock ticks of 10 ms).
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let f: Vec<u64> = after
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    let ticks = |i: usize| Duration::from_millis(f.get(i).copied().unwrap_or(0) * 10);
    (ticks(11), ticks(12))
}

/// CPU time (user + system) of this benchmark process: the load generator and the fake provider.
/// A reader of `/proc/PID/status` fields (`VmRSS:` …, in kB; 0 when absent).
pub fn status_fields(pid: u32) -> impl Fn(&str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    move |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }
}

pub fn own_cpu() -> Duration {
    let (u, s) = process_cpu(std::process::id());
    u + s
}

/// The binary to measure: the release build, or `BENCH_POSTERN=/path/to/postern` (another
/// build, for a before/after comparison on the same machine).
pub fn binary() -> String {
    std::env::var("BENCH_POSTERN")
        .ok()
        .filter(|p| !p.trim().is_empty())
        .unwrap_or_else(|| POSTERN.to_string())
}

/// `postern` with a data dir under `dir` and none of this shell's POSTERN_* settings.
pub fn postern(dir: &Path) -> Command {
    let mut c = Command::new(binary());
    c.arg("--data-dir").arg(dir.join("data")).current_dir(dir);
    for (k, _) in std::env::vars() {
        if k.starts_with("POSTERN_") || k == "RUST_LOG" {
            c.env_remove(k);
        }
    }
    c
}

/// A store several instances share: the database URL and the data key every instance needs.
pub struct SharedStore {
    pub url: String,
    /// Base64, as `POSTERN_SECRET_KEY` takes it; never printed.
    key: String,
}

impl SharedStore {
    /// `url` with a new random data key.
    pub fn new(url: String) -> Self {
        use base64::Engine;
        let key = base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 32]>());
        SharedStore { url, key }
    }
}

/// [`postern`], on `store` when given (`POSTERN_STORE__URL` and `POSTERN_SECRET_KEY`).
pub fn postern_on(dir: &Path, store: Option<&SharedStore>) -> Command {
    let mut c = postern(dir);
    if let Some(s) = store {
        c.env("POSTERN_STORE__URL", &s.url)
            .env("POSTERN_SECRET_KEY", &s.key);
    }
    c
}

/// Runs `cmd` to its end; its stdout, or a panic with its stderr.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd.stdin(Stdio::null()).output().expect("run postern");
    assert!(
        out.status.success(),
        "postern failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl Postern {
    /// A fresh data dir with connection `fake` (client credentials against the fake IdP) and
    /// relay user `app`, then `serve` on port 0. Logs (info level) go to a file, as in production.
    pub fn start(idp: &FakeIdp, smtp: &FakeSmtp) -> Self {
        Self::start_with(idp, smtp, None)
    }

    /// Like [`Postern::start`]; with `graph`, the connection has `--transport graph` pointed at it.
    pub fn start_with(
        idp: &FakeIdp,
        smtp: &FakeSmtp,
        graph: Option<&fake_provider::FakeGraph>,
    ) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let password = setup(dir.path(), idp, smtp, graph, None);
        Self::serve(dir, password, None)
    }

    /// `n` instances of `serve` on one shared store (a fresh PostgreSQL database), set up once
    /// through the first; each has its own data dir (its lock and relay certificate).
    pub fn start_shared(
        idp: &FakeIdp,
        smtp: &FakeSmtp,
        store: &SharedStore,
        n: usize,
    ) -> Vec<Self> {
        let first = tempfile::tempdir().expect("temp dir");
        let password = setup(first.path(), idp, smtp, None, Some(store));
        let mut all = vec![Self::serve(first, password.clone(), Some(store))];
        for _ in 1..n {
            let dir = tempfile::tempdir().expect("temp dir");
            all.push(Self::serve(dir, password.clone(), Some(store)));
        }
        all
    }

    /// `serve` on port 0 in `dir`. Logs (info level) go to a file, as in production.
    fn serve(dir: tempfile::TempDir, password: String, store: Option<&SharedStore>) -> Self {
        let log = std::fs::File::create(dir.path().join("serve.log")).unwrap();
        // For profiling: `RELAY_BENCH_WRAP="valgrind --tool=callgrind"` runs serve under it.
        let mut serve = match std::env::var("RELAY_BENCH_WRAP") {
            Ok(wrap) if !wrap.trim().is_empty() => {
                let plain = postern_on(dir.path(), store);
                let mut words = wrap.split_whitespace();
                let mut c = Command::new(words.next().unwrap_or_default());
                c.args(words).arg(binary()).args(plain.get_args());
                c.envs(plain.get_envs().filter_map(|(k, v)| Some((k, v?))));
                c.current_dir(dir.path());
                c
            }
            _ => postern_on(dir.path(), store),
        };
        let mut child = serve
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
        let relay = read_relay_addr(&mut child, &dir.path().join("serve.log"));
        Postern {
            child,
            relay,
            password,
            relay_cert: dir.path().join("data").join("relay-cert.pem"),
            _dir: dir,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// User and system CPU time of the whole process so far.
    pub fn cpu(&self) -> (Duration, Duration) {
        process_cpu(self.pid())
    }

    /// Resident memory now, from /proc/PID/status.
    pub fn memory(&self) -> Memory {
        let field = status_fields(self.pid());
        Memory {
            peak_kib: field("VmHWM:"),
            rss_kib: field("VmRSS:"),
            anon_kib: field("RssAnon:"),
            file_kib: field("RssFile:"),
        }
    }

    pub fn log_path(&self) -> PathBuf {
        self._dir.path().join("serve.log")
    }
}

impl Drop for Postern {
    /// SIGTERM (a profiler wrapping serve writes its output then), SIGKILL after 30 s.
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

/// Connection `fake` (client credentials against the fake IdP) and relay user `app`, through
/// the real CLI, in data dir `dir` (and `store`, if shared); returns the relay password.
fn setup(
    dir: &Path,
    idp: &FakeIdp,
    smtp: &FakeSmtp,
    graph: Option<&fake_provider::FakeGraph>,
    store: Option<&SharedStore>,
) -> String {
    let ca = dir.join("provider-ca.pem");
    std::fs::write(&ca, graph.map_or_else(|| smtp.ca_pem(), |g| g.ca_pem())).unwrap();
    let graph_args: Vec<String> = graph
        .map(|g| {
            vec![
                "--transport".into(),
                "graph".into(),
                "--graph-url".into(),
                g.base_url(),
            ]
        })
        .unwrap_or_default();
    let secret = dir.join("client-secret");
    std::fs::write(&secret, DEFAULT_CLIENT_SECRET).unwrap();
    run(postern_on(dir, store)
        .args(["connection", "add", "fake", "--provider", "microsoft"])
        // The fake has no rate limit (Microsoft's 30 a minute would measure the pacing).
        .args(["--limit", "messages-per-minute=0"])
        .args([
            "--flow",
            "client-credentials",
            "--tenant",
            "contoso.example",
        ])
        .args(["--user", FROM, "--client-id", DEFAULT_CLIENT_ID])
        .arg("--client-secret-file")
        .arg(&secret)
        .args(["--host", "127.0.0.1", "--port", &smtp.port().to_string()])
        .arg("--ca-file")
        .arg(&ca)
        .args(["--token-url", &idp.token_url("contoso.example")])
        .args(&graph_args));
    let mut add = postern_on(dir, store);
    add.args(["relay-user", "add", "app", "--connection", "fake"]);
    // `RELAY_BENCH_CHOSEN_PASSWORD=1`: an admin-chosen password, stored with argon2id, as
    // many sites will have; otherwise a generated one (checked with one HMAC).
    let chosen = std::env::var("RELAY_BENCH_CHOSEN_PASSWORD").is_ok_and(|v| v == "1");
    if chosen {
        let file = dir.join("relay-password");
        std::fs::write(&file, CHOSEN_PASSWORD).unwrap();
        add.arg("--password-file").arg(&file);
    }
    let out = run(&mut add);
    if chosen {
        CHOSEN_PASSWORD.to_string()
    } else {
        out.lines()
            .find_map(|l| l.split_once("(shown once, store it in the app now): "))
            .map(|(_, pw)| pw.trim().to_string())
            .expect("a generated password")
    }
}

/// Reads `serve`'s stdout until it names the relay address (30 s at most).
fn read_relay_addr(child: &mut Child, log: &Path) -> SocketAddr {
    use std::io::BufRead;
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        // Keeps reading (and discarding) so `serve` never blocks on a full pipe.
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if let Some(addr) = line
                .split_once("SMTP relay on ")
                .and_then(|(_, rest)| rest.split_whitespace().next())
                .and_then(|a| a.parse::<SocketAddr>().ok())
            {
                let _ = tx.send(addr);
            }
        }
    });
    let started = Instant::now();
    rx.recv_timeout(Duration::from_secs(30))
        .unwrap_or_else(|_| {
            panic!(
                "serve did not start within {:?}; see {}",
                started.elapsed(),
                log.display()
            )
        })
}
