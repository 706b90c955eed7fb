//! The `fake-provider` binary: announces its services, serves them, exits on SIGTERM.

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::client::SmtpClient;

#[tokio::test]
async fn binary_prints_its_services_and_stops_on_sigterm() {
    let dir = std::env::temp_dir().join(format!("fake-provider-bin-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca_out = dir.join("ca.pem");
    let mut child = Command::new(env!("CARGO_BIN_EXE_fake-provider"))
        .args([
            "--client",
            "my-app:my-secret",
            "--expires-in",
            "600",
            "--ca-out",
        ])
        .arg(&ca_out)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut next = || lines.next().unwrap().unwrap();
    let idp = next();
    let smtp = next();
    let ca = next();
    assert!(idp.starts_with("idp http://127.0.0.1:"), "{idp}");
    assert_eq!(ca, format!("ca-file {}", ca_out.display()));
    assert_eq!(next(), "client my-app");
    assert!(
        std::fs::read_to_string(&ca_out)
            .unwrap()
            .contains("BEGIN CERTIFICATE")
    );

    let addr = smtp.strip_prefix("smtp ").unwrap().parse().unwrap();
    let mut c = SmtpClient::connect(addr).await;
    assert_eq!(c.reply().await.code, 220);

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let mut exited = None;
    for _ in 0..500 {
        if let Some(s) = child.try_wait().unwrap() {
            exited = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    if exited.is_none() {
        let _ = child.kill();
    }
    assert!(
        exited.is_some_and(|s| s.success()),
        "exits cleanly on SIGTERM"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
