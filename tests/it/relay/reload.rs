//! Reloading a running `serve` (SIGHUP, `postern reload`): a renewed certificate is served to
//! new handshakes while sessions in progress go on; a broken file changes nothing and the log
//! says why; a key that needs a restart is named.

use std::path::Path;
use std::time::{Duration, Instant};

use super::client::{Client, message, queued_id};
use super::world::{Flow, USER, World};
use crate::helpers::TestHome;

const TO: &str = "someone@example.org";

/// A self-signed certificate for `localhost` and its key, written as PEM files.
fn write_pair(cert: &Path, key: &Path) {
    let pair = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    std::fs::write(key, pair.key_pair.serialize_pem()).unwrap();
    std::fs::write(cert, pair.cert.pem()).unwrap();
}

fn settings(home: &Path, extra: &str) {
    let cert = home.join("relay.pem");
    let key = home.join("relay.key");
    std::fs::write(
        home.join("postern.toml"),
        format!(
            "[server]\ntls_cert = \"{}\"\ntls_key = \"{}\"\n{extra}",
            cert.display(),
            key.display()
        ),
    )
    .unwrap();
}

/// Waits until the log holds `n` lines containing `what`; returns the log.
async fn wait_log(w: &World, what: &str, n: usize) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let log = w.log();
        if log.matches(what).count() >= n {
            return log;
        }
        assert!(Instant::now() < deadline, "no {n}× `{what}` in:\n{log}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// RCPT replies for two recipients in a new session that trusts only `cert`.
async fn two_recipients(w: &World, relay: std::net::SocketAddr, cert: &Path) -> (u16, u16) {
    let mut c = Client::connect_tls(relay, cert).await;
    assert_eq!(c.auth_plain("app", &w.password).await.code, 235);
    assert_eq!(c.cmd(&format!("MAIL FROM:<{USER}>")).await.code, 250);
    let first = c.cmd(&format!("RCPT TO:<{TO}>")).await.code;
    let second = c.cmd("RCPT TO:<other@example.net>").await.code;
    (first, second)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_serves_the_renewed_certificate_keeps_old_settings_on_a_bad_file_and_names_restart_keys()
 {
    let w = World::new(Flow::ClientCredentials).await;
    let home = w.home.path().to_path_buf();
    let (cert, key) = (home.join("relay.pem"), home.join("relay.key"));
    write_pair(&cert, &key);
    let cert_a = home.join("a.pem");
    std::fs::copy(&cert, &cert_a).unwrap();
    settings(&home, "");
    let serve = w.serve().await;

    // A session that started with certificate A, before the renewal.
    let mut old = Client::connect_tls(serve.relay, &cert_a).await;
    assert_eq!(old.auth_plain("app", &w.password).await.code, 235);

    // Renewal: new files at the same paths, then `postern reload`.
    write_pair(&cert, &key);
    let cert_b = home.join("b.pem");
    std::fs::copy(&cert, &cert_b).unwrap();
    let out = w.postern(&["reload"]).await.ok();
    assert!(out.stdout.contains("asked serve"), "{}", out.stdout);
    let log = wait_log(&w, "settings reloaded", 1).await;
    assert!(log.contains("new relay certificate"), "{log}");

    // A new handshake trusting only B succeeds: B is served.
    assert_eq!(two_recipients(&w, serve.relay, &cert_b).await, (250, 250));
    // The session from before goes on with its own TLS and delivers.
    let r = old
        .send(USER, &[TO], &message(USER, TO, "across a reload"))
        .await;
    queued_id(&r);

    // A broken certificate, with a lower recipient limit in the same file: refused as a whole.
    std::fs::write(&cert, "not a certificate\n").unwrap();
    settings(&home, "max_recipients = 1\n");
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(serve.pid() as i32).unwrap(),
        rustix::process::Signal::HUP,
    )
    .unwrap();
    let log = wait_log(&w, "reload refused", 1).await;
    let refused = log.lines().find(|l| l.contains("reload refused")).unwrap();
    assert!(
        refused.contains("server.tls_cert") && refused.contains("relay.pem"),
        "{refused}"
    );
    assert_eq!(
        two_recipients(&w, serve.relay, &cert_b).await,
        (250, 250),
        "certificate B and the old limit stay"
    );

    // Fixed, with a listener that needs a restart: the limit applies, the listener is named.
    std::fs::copy(&cert_b, &cert).unwrap();
    settings(
        &home,
        "max_recipients = 1\nsmtps_listen = \"127.0.0.1:0\"\n",
    );
    w.postern(&["reload"]).await.ok();
    let log = wait_log(&w, "settings reloaded", 2).await;
    assert!(
        log.contains("server.smtps_listen changed: needs a restart"),
        "{log}"
    );
    let summary = log
        .lines()
        .rfind(|l| l.contains("settings reloaded"))
        .unwrap();
    assert!(
        summary.contains("applied server.max_recipients"),
        "{summary}"
    );
    let (first, second) = two_recipients(&w, serve.relay, &cert_b).await;
    assert_eq!(
        (first, second),
        (250, 452),
        "the new limit, for new sessions"
    );

    // Until the restart, every reload names it again; what was applied is not repeated.
    w.postern(&["reload"]).await.ok();
    let log = wait_log(&w, "settings reloaded", 3).await;
    assert_eq!(
        log.matches("server.smtps_listen changed: needs a restart")
            .count(),
        2,
        "{log}"
    );
    let summary = log
        .lines()
        .rfind(|l| l.contains("settings reloaded"))
        .unwrap();
    assert!(summary.contains("applied none"), "{summary}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_tells_systemd_ready_reloading_and_stopping() {
    let socket_dir = tempfile::tempdir().unwrap();
    let socket = socket_dir.path().join("notify");
    let systemd = tokio::net::UnixDatagram::bind(&socket).unwrap();
    let w = World::new(Flow::ClientCredentials)
        .await
        .setting("NOTIFY_SOCKET", socket.to_str().unwrap());
    let serve = w.serve().await;
    // Signals follow each notification at once, as systemd may send them: serve must already
    // handle them (a SIGHUP without a handler ends the process).
    let next = async || {
        let mut buf = [0u8; 512];
        let n = tokio::time::timeout(Duration::from_secs(30), systemd.recv(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("no notification: {}", w.log()))
            .unwrap();
        String::from_utf8(buf[..n].to_vec()).unwrap()
    };
    let signal = |sig| {
        rustix::process::kill_process(
            rustix::process::Pid::from_raw(serve.pid() as i32).unwrap(),
            sig,
        )
        .unwrap()
    };
    assert!(next().await.lines().any(|l| l == "READY=1"));
    signal(rustix::process::Signal::HUP);
    let reloading = next().await;
    assert!(
        reloading.contains("RELOADING=1\nMONOTONIC_USEC="),
        "{reloading}"
    );
    assert!(next().await.lines().any(|l| l == "READY=1"));
    signal(rustix::process::Signal::TERM);
    assert!(next().await.lines().any(|l| l == "STOPPING=1"));
}

#[test]
fn reload_without_a_running_serve_says_so() {
    let home = TestHome::new();
    let out = home.run(&["reload"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr.contains("no running `postern serve`") && out.stderr.contains("postern-data"),
        "{}",
        out.stderr
    );
}

fn declared(home: &Path, user: Option<&str>) {
    let secret = home.join("filed.secret");
    std::fs::write(&secret, "declared-secret-value\n").unwrap();
    let entry = user
        .map(|u| {
            format!(
                "[[connections]]\nname = \"filed\"\nprovider = \"microsoft\"\nuser = \"{u}\"\n\
                 tenant = \"contoso.onmicrosoft.com\"\nclient_id = \"{}\"\nclient_secret_file = \"{}\"\n",
                crate::helpers::CLIENT_ID,
                secret.display()
            )
        })
        .unwrap_or_default();
    std::fs::write(home.join("postern.toml"), entry).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_declared_in_the_file_are_created_updated_on_reload_and_not_edited_elsewhere() {
    let w = World::new(Flow::ClientCredentials).await;
    let home = w.home.path().to_path_buf();
    declared(&home, Some("ops@contoso.com"));
    let _serve = w.serve().await;

    let c = w.json(&["connection", "show", "filed"]).await;
    assert_eq!(c["user"], "ops@contoso.com", "{c}");
    assert_ne!(c["client_secret"], "not set", "{c}");
    assert!(
        !crate::helpers::contains_bytes(&w.home.data_bytes(), "declared-secret-value"),
        "the secret is sealed in the store"
    );

    for args in [
        &["connection", "edit", "filed", "--display-name", "Ops"][..],
        &["connection", "remove", "filed", "--yes"][..],
        &["connection", "disable", "filed"][..],
    ] {
        let out = w.postern(args).await;
        assert_eq!(out.code, 2, "{args:?}: {out:?}");
        assert!(
            out.stderr.contains("managed by postern.toml") && out.stderr.contains("postern reload"),
            "{args:?}: {}",
            out.stderr
        );
    }

    declared(&home, Some("sales@contoso.com"));
    w.postern(&["reload"]).await.ok();
    let log = wait_log(&w, "settings reloaded", 1).await;
    assert!(log.contains("connections.filed"), "{log}");
    let c = w.json(&["connection", "show", "filed"]).await;
    assert_eq!(c["user"], "sales@contoso.com", "{c}");

    // Out of the file: kept, and the CLI may manage it again.
    declared(&home, None);
    w.postern(&["reload"]).await.ok();
    let log = wait_log(&w, "settings reloaded", 2).await;
    assert!(
        log.contains("connection `filed` is no longer in postern.toml"),
        "{log}"
    );
    w.postern(&["connection", "disable", "filed"]).await.ok();
}
