//! Interoperability with mail software no one here wrote: Python's smtplib and swaks submit
//! to the relay; Dovecot submission (validating tokens by RFC 7662 introspection) stands in
//! for the provider, relaying to Postfix's smtp-sink; oauth2-mock-server is a second IdP.
//! `.ci/run` installs them; outside CI a test without its program skips, saying why.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::gate::Gate;
use crate::world::{CLIENT_SECRET, Flow, Home, Providers, TENANT, USER, have, skip};

fn interop_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop")
}

/// A child process killed when dropped.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Waits (bounded) until something listens on `addr`.
fn wait_listening(addr: SocketAddr, what: &str, log: impl Fn() -> String) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(
            Instant::now() < deadline,
            "{what} did not start:\n{}",
            log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_smtplib_submits_with_plain_and_login() {
    if !have("python3") && skip("python3 is not installed") {
        return;
    }
    let p = Providers::start().await;
    let mut home = Home::new(None);
    home.setup(&p, Flow::ClientCredentials).await;
    let server = home.serve();
    let cert = home.data_dir.join("relay-cert.pem");
    for mech in ["PLAIN", "LOGIN"] {
        let out = Command::new("python3")
            .arg(interop_dir().join("smtplib_client.py"))
            .args(["localhost", &server.relay.port().to_string()])
            .arg(&cert)
            .args(["app", &home.relay_password, mech, USER, "rcpt@example.org"])
            .arg(format!("py-{mech}"))
            .output()
            .expect("python3");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "smtplib {mech}: {stdout}\n{}\n{}",
            String::from_utf8_lossy(&out.stderr),
            server.log()
        );
        println!("smtplib {mech}: {}", stdout.trim().replace('\n', " "));
    }
    assert!(p.smtp.wait_for_count(6, Duration::from_secs(30)).await);
    let got = p.smtp.messages();
    for mech in ["PLAIN", "LOGIN"] {
        let eight = got
            .iter()
            .find(|m| crate::world::contains(&m.data, format!("py-{mech}-8bit").as_bytes()))
            .expect("the 8-bit message");
        assert!(crate::world::contains(
            &eight.data,
            "café naïve über".as_bytes()
        ));
        let utf8 = got
            .iter()
            .find(|m| crate::world::contains(&m.data, format!("py-{mech}-utf8").as_bytes()))
            .expect("the UTF-8 message");
        assert_eq!(utf8.rcpt_to, ["jürgen@bücher.example"]);
        assert!(crate::world::contains(
            &utf8.data,
            "UTF-8 everywhere ☃".as_bytes()
        ));
    }
    println!("smtplib: 6 of 6 messages (ASCII, 8-bit, SMTPUTF8; PLAIN and LOGIN) delivered intact");
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swaks_submits_with_tls_auth_and_pipelining() {
    if !have("swaks") && skip("swaks is not installed (apt-get install swaks)") {
        return;
    }
    let p = Providers::start().await;
    let mut home = Home::new(None);
    home.setup(&p, Flow::ClientCredentials).await;
    let server = home.serve();
    let port = server.relay.port().to_string();
    let runs: [(&str, &[&str]); 3] = [
        ("tls-plain", &["--tls", "--auth", "PLAIN"]),
        ("tls-login", &["--tls", "--auth", "LOGIN"]),
        ("pipeline", &["--tls", "--auth", "PLAIN", "--pipeline"]),
    ];
    for (name, flags) in runs {
        let out = Command::new("swaks")
            .args(["--server", "127.0.0.1", "--port", &port])
            .args(flags)
            .args([
                "--auth-user",
                "app",
                "--auth-password",
                &home.relay_password,
            ])
            .args(["--from", USER, "--to", "rcpt@example.org"])
            .args(["--header", &format!("Subject: swaks-{name}")])
            .args(["--body", &format!("sent by swaks ({name})")])
            .args(["--timeout", "30"])
            .output()
            .expect("swaks");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "swaks {name}:\n{text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(text.contains("<~  250 "), "swaks {name}: {text}");
        println!("swaks {name}: ok");
    }
    assert!(p.smtp.wait_for_count(3, Duration::from_secs(30)).await);
    println!("swaks: 3 of 3 messages (TLS + PLAIN, TLS + LOGIN, PIPELINING) delivered");
    server.stop();
}

/// A CA and a server certificate for 127.0.0.1 / localhost, as PEM files in `dir`.
fn certificates(dir: &Path) -> PathBuf {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, SanType};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    params
        .subject_alt_names
        .push(SanType::IpAddress([127, 0, 0, 1].into()));
    let cert = params.signed_by(&key, &ca_cert, &ca_key).unwrap();
    std::fs::write(dir.join("cert.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), key.serialize_pem()).unwrap();
    let ca_path = dir.join("ca.pem");
    std::fs::write(&ca_path, ca_cert.pem()).unwrap();
    ca_path
}

fn fill(template: &str, values: &[(&str, String)]) -> String {
    values
        .iter()
        .fold(template.to_string(), |t, (k, v)| t.replace(k, v))
}

fn smtp_sink() -> Option<PathBuf> {
    ["/usr/sbin/smtp-sink", "/usr/lib/postfix/sbin/smtp-sink"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dovecot_submission_validates_tokens_and_relays() {
    let Some(sink_bin) = smtp_sink() else {
        skip("smtp-sink is not installed (apt-get install postfix)");
        return;
    };
    if !Path::new("/usr/sbin/dovecot").exists()
        && skip("dovecot is not installed (apt-get install dovecot-core dovecot-submissiond)")
    {
        return;
    }
    let base = tempfile::tempdir().unwrap();
    let dir = base.path();
    // Dovecot's unprivileged processes must reach their sockets and the sink its folder.
    std::process::Command::new("chmod")
        .args(["0755"])
        .arg(dir)
        .status()
        .unwrap();
    let ca = certificates(dir);
    let sink_dir = dir.join("sink");
    for d in [&sink_dir, &dir.join("home"), &dir.join("mail")] {
        std::fs::create_dir_all(d).unwrap();
        Command::new("chmod").arg("0777").arg(d).status().unwrap();
    }

    let sink_port = free_port();
    let sink = Daemon(
        Command::new(&sink_bin)
            .arg("-u")
            .arg("nobody")
            .arg("-d")
            .arg(format!("{}/%M.", sink_dir.display()))
            .arg(format!("127.0.0.1:{sink_port}"))
            .arg("200")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("smtp-sink"),
    );
    wait_listening(([127, 0, 0, 1], sink_port).into(), "smtp-sink", String::new);

    let p = Providers::start().await;
    let port = free_port();
    let values = [
        ("@BASE@", dir.display().to_string()),
        ("@PORT@", port.to_string()),
        ("@SINK_PORT@", sink_port.to_string()),
        ("@UID@", "65534".to_string()),
        ("@GID@", "65534".to_string()),
        ("@INTROSPECT@", p.idp.introspect_url()),
    ];
    let read = |f: &str| std::fs::read_to_string(interop_dir().join(f)).unwrap();
    std::fs::write(
        dir.join("dovecot.conf"),
        fill(&read("dovecot.conf.in"), &values),
    )
    .unwrap();
    std::fs::write(
        dir.join("dovecot-oauth2.conf.ext"),
        fill(&read("dovecot-oauth2.conf.ext.in"), &values),
    )
    .unwrap();
    let dovecot_log = dir.join("dovecot.log");
    let log = || std::fs::read_to_string(&dovecot_log).unwrap_or_default();
    let dovecot = Daemon(
        Command::new("/usr/sbin/dovecot")
            .arg("-F")
            .arg("-c")
            .arg(dir.join("dovecot.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("dovecot"),
    );
    wait_listening(([127, 0, 0, 1], port).into(), "dovecot", log);
    let gate = Gate::open_to(([127, 0, 0, 1], port).into()).await;

    // Postern's connection points at Dovecot (through a gate), trusting our CA.
    let mut home = Home::new(None);
    let secret = home.path().join("client-secret");
    std::fs::write(&secret, CLIENT_SECRET).unwrap();
    #[rustfmt::skip]
    home.run(&[
        "connection", "add", "dovecot", "--provider", "microsoft", "--flow", "authorization-code",
        "--tenant", TENANT, "--user", USER, "--client-id", fake_provider::idp::DEFAULT_CLIENT_ID,
        "--client-secret-file", &secret.display().to_string(), "--host", "127.0.0.1",
        "--port", &gate.port().to_string(), "--ca-file", &ca.display().to_string(),
        "--token-url", &p.token_url(), "--authorize-url", &p.authorize_url(),
        // No pacing: a released batch goes out back to back (see the last part).
        "--limit", "messages-per-minute=0",
    ]);
    home.authorize_by_paste("dovecot").await;
    let out = home.run(&["relay-user", "add", "app", "--connection", "dovecot"]);
    home.relay_password = password_in(&out);
    let server = home.serve();

    crate::outage::submit(&server, &home, "dovecot-1", 1).await;
    let first = wait_for_sink(&sink_dir, "dovecot-1", &log);
    let introspections = p.idp.counters().introspect;

    // Revoke the token Postern holds and cut its session: Dovecot refuses the token with its
    // 334 JSON challenge; Postern refreshes once and tries again.
    let refreshes = p.idp.counters().refresh_token;
    p.idp.revoke_all_access_tokens();
    gate.close();
    gate.reopen().await;
    crate::outage::submit(&server, &home, "dovecot-2", 1).await;
    let second = wait_for_sink(&sink_dir, "dovecot-2", &log);
    let refreshed = p.idp.counters().refresh_token - refreshes;
    let dlog = log();
    println!(
        "dovecot: delivered through Dovecot submission into smtp-sink ({} and {}); {} \
         introspections; after revocation: {refreshed} refresh, delivered; Dovecot logged the \
         refusal: {}",
        first.display(),
        second.display(),
        introspections,
        dlog.contains("oauth2") && dlog.to_lowercase().contains("fail")
    );
    assert_eq!(refreshed, 1, "refreshed once");
    assert!(introspections >= 1, "Dovecot really asked the IdP");

    // Six messages held, then released together: claimed as one batch and sent back to back
    // over the kept session (Dovecot offers CHUNKING, so each goes as MAIL/RCPT/BDAT in one
    // write). Dovecot relays each, intact and once.
    home.run(&["connection", "disable", "dovecot"]);
    crate::outage::submit(&server, &home, "dovecot-3", 6).await;
    home.run(&["connection", "enable", "dovecot"]);
    for i in 0..6 {
        let marker = format!("dovecot-3-{i}");
        wait_for_sink(&sink_dir, &marker, &log);
        let copies = std::fs::read_dir(&sink_dir)
            .unwrap()
            .filter_map(Result::ok)
            .filter(|e| {
                let bytes = std::fs::read(e.path()).unwrap_or_default();
                crate::world::contains(&bytes, marker.as_bytes())
            })
            .count();
        assert_eq!(copies, 1, "{marker} arrived {copies} times");
    }
    server.stop();
    drop((dovecot, sink));
}

fn password_in(out: &str) -> String {
    out.lines()
        .find_map(|l| l.split_once("Password (shown once, store it in the app now): "))
        .map(|(_, pw)| pw.trim().to_string())
        .expect("relay password")
}

/// Waits (bounded) for a sink file containing `marker`; returns its path.
fn wait_for_sink(dir: &Path, marker: &str, log: &dyn Fn() -> String) -> PathBuf {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        for entry in std::fs::read_dir(dir).unwrap().filter_map(Result::ok) {
            let bytes = std::fs::read(entry.path()).unwrap_or_default();
            if crate::world::contains(&bytes, marker.as_bytes()) {
                return entry.path();
            }
        }
        assert!(
            Instant::now() < deadline,
            "{marker} never reached smtp-sink; Dovecot log:\n{}",
            log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_identity_provider_oauth2_mock_server() {
    let module = interop_dir().join("node_modules/oauth2-mock-server");
    if !module.exists()
        && skip("oauth2-mock-server is not installed (npm ci --prefix tests/interop)")
    {
        return;
    }
    let mut child = Command::new("node")
        .arg(interop_dir().join("oauth2_mock.mjs"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("node");
    let stdout = child.stdout.take().unwrap();
    let _mock = Daemon(child);
    let issuer = {
        use std::io::BufRead as _;
        let mut line = String::new();
        std::io::BufReader::new(stdout)
            .read_line(&mut line)
            .unwrap();
        line.trim()
            .strip_prefix("issuer ")
            .expect("issuer line")
            .to_string()
    };

    let mut home = Home::new(None);
    let secret = home.path().join("client-secret");
    std::fs::write(&secret, "mock-client-secret").unwrap();
    let (authorize, token) = (format!("{issuer}/authorize"), format!("{issuer}/token"));
    for (name, flow) in [
        ("mock-code", "authorization-code"),
        ("mock-app", "client-credentials"),
    ] {
        #[rustfmt::skip]
        home.run(&[
            "connection", "add", name, "--provider", "microsoft", "--flow", flow,
            "--tenant", TENANT, "--user", USER, "--client-id", "00000000-0000-4000-8000-000000000c4a",
            "--client-secret-file", &secret.display().to_string(),
            "--authorize-url", &authorize, "--token-url", &token,
        ]);
    }
    // Authorization code + PKCE: the mock checks the S256 challenge against the verifier.
    let url = home.authorize_by_paste("mock-code").await;
    assert!(url.contains("code_challenge_method=S256"), "{url}");
    let shown = home.run(&["connection", "show", "mock-code", "--json"]);
    let view: serde_json::Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(view["status"], "authorized", "{view}");
    assert_eq!(view["refresh_token"], "set", "{view}");
    let code_token = home.run(&["connection", "token", "mock-code"]);
    // Client credentials: a token straight from the secret.
    let app_token = home.run(&["connection", "token", "mock-app"]);
    for out in [&code_token, &app_token] {
        assert!(out.contains("expires:"), "{out}");
    }
    println!(
        "oauth2-mock-server: authorization code + PKCE (S256) authorized, refresh token kept; \
         client credentials token obtained:\n{}\n{}",
        code_token.trim(),
        app_token.trim()
    );
}
