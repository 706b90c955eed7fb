//! What users install: the Debian package's `/usr/bin/postern serve`, run as the `postern`
//! system user as the unit runs it (`scripts/package-test.sh`, after `dpkg -i`, with
//! `POSTERN_PROVE_BIN=/usr/bin/postern POSTERN_PROVE_RUN_AS=postern`), and the container image
//! (`scripts/container-test.sh`, `POSTERN_PROVE_BIN` a wrapper running each command in it),
//! each delivering a message. Ignored by default: they need root and the package or image.

use std::os::unix::fs::MetadataExt as _;
use std::os::unix::fs::PermissionsExt as _;
use std::process::Command;
use std::time::Duration;

use crate::outage::submit;
use crate::world::{Flow, Home, Providers, Server, run_as, skip};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the package installed and root: scripts/package-test.sh runs it"]
async fn installed_package_serves_as_its_user_and_delivers() {
    let (Ok(bin), Some(user)) = (std::env::var("POSTERN_PROVE_BIN"), run_as()) else {
        skip("set POSTERN_PROVE_BIN=/usr/bin/postern and POSTERN_PROVE_RUN_AS=postern");
        return;
    };
    let uid = user_id(&user);
    let p = Providers::start().await;
    let mut home = Home::new(None);
    home.setup(&p, Flow::ClientCredentials).await;
    let server = home.serve();

    // What `ps` would show: the installed binary, running as the user, not root.
    let exe = std::fs::read_link(format!("/proc/{}/exe", server.pid())).unwrap();
    assert_eq!(exe.display().to_string(), bin);
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.pid())).unwrap();
    let uids = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert!(
        uids.split_whitespace()
            .skip(1)
            .all(|id| id == uid.to_string()),
        "serve must run as {user} ({uid}): {uids}"
    );
    // The key file it made is the user's alone.
    let key = std::fs::metadata(home.data_dir.join("secret.key")).unwrap();
    assert_eq!((key.uid(), key.permissions().mode() & 0o777), (uid, 0o600));

    delivers_one(&p, &home, server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the image built and root: scripts/container-test.sh runs it"]
async fn container_image_delivers() {
    if std::env::var("POSTERN_PROVE_CONTAINER").is_err() {
        skip("set POSTERN_PROVE_CONTAINER=1 and POSTERN_PROVE_BIN to a wrapper running the image");
        return;
    }
    let p = Providers::start().await;
    let mut home = Home::new(None);
    home.setup(&p, Flow::ClientCredentials).await;
    let server = home.serve();
    // The image's user (10001), not root, made the key file.
    let key = std::fs::metadata(home.data_dir.join("secret.key")).unwrap();
    assert_eq!(
        (key.uid(), key.permissions().mode() & 0o777),
        (10001, 0o600)
    );
    delivers_one(&p, &home, server).await;
}

/// A relay client submits one message; it reaches the provider; serve stops on SIGTERM.
async fn delivers_one(p: &Providers, home: &Home, server: Server) {
    submit(&server, home, "packaged", 1).await;
    assert!(
        p.smtp.wait_for_count(1, Duration::from_secs(30)).await,
        "the message did not reach the provider:\n{}",
        server.log()
    );
    assert_eq!(p.count_with("packaged-0"), 1);
    server.stop();
}

fn user_id(user: &str) -> u32 {
    let out = Command::new("id").args(["-u", user]).output().unwrap();
    assert!(
        out.status.success(),
        "no user {user}: is the package installed?"
    );
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}
