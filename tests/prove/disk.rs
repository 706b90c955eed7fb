//! Disk full on the data directory (a small tmpfs mounted by the test; needs root): clients
//! get `452 4.3.1`, nothing acknowledged is lost, the store stays sound, and the relay works
//! again once space returns.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::client::{Client, message, trusting};
use crate::world::{Flow, Home, Providers, USER, skip};

/// A tmpfs mounted for the test's lifetime.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(dir).ok()?;
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Tmpfs(dir.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Fills the file system under `dir` until a write fails.
fn fill(path: &Path) -> u64 {
    let mut f = std::fs::File::create(path).unwrap();
    let chunk = vec![0u8; 64 * 1024];
    let mut written = 0u64;
    while f.write_all(&chunk).is_ok() {
        written += chunk.len() as u64;
    }
    // The last partial chunk: byte by byte would be slow; small writes get the tail.
    while f.write_all(&chunk[..512]).is_ok() {
        written += 512;
    }
    let _ = f.sync_all();
    written
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_full_defers_clients_and_recovers() {
    if !is_root() && skip("mounting a tmpfs for the data directory needs root") {
        return;
    }
    let outer = tempfile::tempdir().unwrap();
    let mount_point = outer.path().join("data");
    let Some(tmpfs) = Tmpfs::mount(&mount_point, "24m") else {
        if skip("mount -t tmpfs failed (no permission in this container?)") {
            return;
        }
        unreachable!();
    };
    let p = Providers::start().await;
    let mut home = Home::new(Some(mount_point.clone()));
    home.setup(&p, Flow::ClientCredentials).await;
    let server = home.serve();
    let tls = trusting(&home.data_dir.join("relay-cert.pem"));
    let connect = || Client::submission(server.relay, &tls, "app", &home.relay_password);

    let mut c = connect().await.unwrap();
    let r = c
        .send_mail(USER, "rcpt@example.org", &message("disk-before"))
        .await
        .unwrap();
    assert_eq!(r.code, 250, "{r}");
    assert!(p.smtp.wait_for_count(1, Duration::from_secs(30)).await);

    // Full: the provider is also kept away so the queue has to hold what was acknowledged.
    p.smtp_gate.close();
    let filler = mount_point.join("filler");
    let filled = fill(&filler);
    // 200 KiB of ordinary 78-octet lines per message.
    let mut filler_lines = vec![b'z'; 76];
    filler_lines.extend_from_slice(b"\r\n");
    let big = filler_lines.repeat(2600);
    let mut codes = Vec::new();
    let mut acked_while_full = 0u64;
    let mut first_refusal = None;
    for i in 0..50 {
        let mut m = message(&format!("disk-full-{i}"));
        m.extend_from_slice(&big);
        let r = match c.send_mail(USER, "rcpt@example.org", &m).await {
            Ok(r) => r,
            Err(_) => {
                codes.push(0);
                c = connect().await.unwrap();
                continue;
            }
        };
        codes.push(r.code);
        if r.code == 250 {
            acked_while_full += 1;
        } else if first_refusal.is_none() {
            first_refusal = Some(r.to_string());
        }
        if codes.iter().filter(|&&c| c == 452).count() >= 3 {
            break;
        }
    }
    println!(
        "disk full: filled {} MiB; replies {codes:?}; first refusal: {first_refusal:?}",
        filled >> 20
    );
    assert!(codes.contains(&452), "clients are told to retry: {codes:?}");
    assert!(
        !codes.iter().any(|&c| c >= 500),
        "no permanent refusal: {codes:?}"
    );
    assert!(
        first_refusal
            .as_deref()
            .is_some_and(|r| r.starts_with("452 4.3.1")),
        "{first_refusal:?}"
    );

    // Space returns: the same session goes on, and everything acknowledged is delivered.
    std::fs::remove_file(&filler).unwrap();
    p.smtp_gate.reopen().await;
    let mut c = connect().await.unwrap();
    let r = c
        .send_mail(USER, "rcpt@example.org", &message("disk-after"))
        .await
        .unwrap();
    assert_eq!(r.code, 250, "after space returned: {r}");
    c.quit().await;
    let expected = 2 + acked_while_full;
    assert!(
        p.smtp
            .wait_for_count(expected, Duration::from_secs(60))
            .await,
        "{} of {expected} delivered:\n{}",
        p.smtp.counters().messages,
        server.log()
    );
    server.stop();
    let check = integrity_check(&home.database()).await;
    println!(
        "disk full: {acked_while_full} acknowledged while filling, all {expected} delivered after \
         space returned; integrity_check: {check}"
    );
    assert_eq!(check, "ok");
    drop(home);
    drop(tmpfs);
}

async fn integrity_check(db: &Path) -> String {
    use sqlx::ConnectOptions as _;
    let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(db)
        .read_only(true)
        .connect()
        .await
        .expect("open the database");
    let rows: Vec<String> = sqlx::query_scalar("PRAGMA integrity_check")
        .fetch_all(&mut conn)
        .await
        .expect("integrity_check");
    rows.join("; ")
}
