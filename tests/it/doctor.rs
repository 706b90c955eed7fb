//! `postern doctor` on a healthy, a warned and a broken installation: the lines an admin reads
//! and the exit codes monitoring acts on.

use std::os::unix::fs::PermissionsExt;

use crate::notify::{BROKEN, World};

fn line<'a>(out: &'a str, level: &str, name: &str) -> &'a str {
    out.lines()
        .find(|l| l.starts_with(level) && l.contains(&format!(" {name}: ")))
        .unwrap_or_else(|| panic!("no `{level} {name}` line in:\n{out}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_on_a_healthy_a_warned_and_a_broken_installation() {
    let w = World::start().await;
    w.run(&["connection", "token", "mailer"]).ok();
    w.run(&["connection", "token", "broken"]).ok();

    // Healthy: every check ok, AUTH tried at the provider without sending mail.
    let out = w.run(&["doctor", "mailer", "broken"]);
    assert_eq!(out.code, 0, "{}", out.all());
    line(&out.stdout, "ok", "key file");
    line(&out.stdout, "ok", "store");
    line(&out.stdout, "ok", "connection broken: token");
    assert!(line(&out.stdout, "ok", "connection mailer: AUTH").contains("no mail sent"));
    line(&out.stdout, "ok", "notifications: webhook");
    line(&out.stdout, "ok", "notifications: email");
    assert!(
        out.stdout
            .lines()
            .all(|l| !l.starts_with("warn") && !l.starts_with("fail")),
        "{}",
        out.stdout
    );

    // A secret expiring in 10 days: a warning, exit 1, and the fix.
    let date = (chrono::Utc::now().date_naive() + chrono::Days::new(10)).to_string();
    w.run(&["connection", "edit", "mailer", "--secret-expires", &date])
        .ok();
    let out = w.run(&["doctor", "mailer"]);
    assert_eq!(out.code, 1, "{}", out.all());
    assert!(line(&out.stdout, "warn", "connection mailer: client secret").contains("in 10 day(s)"));
    assert!(
        out.stdout.contains("fix: Create a new secret"),
        "{}",
        out.stdout
    );

    // Broken: a key file readable by others. The store then refuses to open: said, not hidden.
    let key = w.home.data_dir().join("secret.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = w.run(&["doctor"]);
    assert_eq!(out.code, 2, "{}", out.all());
    line(&out.stdout, "fail", "key file");
    assert!(out.stdout.contains("fix: chmod 600 "), "{}", out.stdout);
    line(&out.stdout, "fail", "store");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();

    // Broken: the provider refuses a refresh token (invalid_grant).
    w.idp.revoke_refresh_tokens_for(BROKEN);
    let out = w.run(&["doctor", "--json"]);
    assert_eq!(out.code, 2, "{}", out.all());
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["verdict"], "fail");
    let check = |name: &str| {
        v["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("no check {name}: {v:#}"))
            .clone()
    };
    assert_eq!(check("key file")["level"], "ok");
    let t = check("connection broken: token");
    assert_eq!(t["level"], "fail");
    assert!(
        t["message"].as_str().unwrap().contains("invalid_grant"),
        "{t}"
    );
    assert!(
        t["fix"]
            .as_str()
            .unwrap()
            .contains("postern connection authorize broken"),
        "{t}"
    );
    assert_eq!(check("connection mailer: AUTH")["level"], "ok");

    // An unknown name is a failure, not silence.
    let out = w.run(&["doctor", "nosuch"]);
    assert_eq!(out.code, 2);
    line(&out.stdout, "fail", "connection nosuch");
}
