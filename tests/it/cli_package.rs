//! What the Debian package ships besides the binary: the manual pages (`postern man DIR`) and
//! the settings file installed as /etc/postern/postern.toml.

use std::path::Path;
use std::process::Command;

use crate::helpers::TestHome;

/// The top-level commands `postern --help` lists (without clap's own `help`).
fn listed_commands(home: &TestHome) -> Vec<String> {
    let help = home.run(&["--help"]).ok().stdout;
    let commands = help
        .split("Commands:")
        .nth(1)
        .and_then(|rest| rest.split("\n\n").next())
        .expect("a Commands: section in --help");
    commands
        .lines()
        // A command's line starts with two spaces; a wrapped description with more.
        .filter(|l| l.starts_with("  ") && !l.starts_with("   "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .map(str::to_string)
        .collect()
}

#[test]
fn man_writes_a_page_per_command_that_groff_reads() {
    let home = TestHome::new();
    let commands = listed_commands(&home);
    assert!(commands.len() >= 10, "{commands:?}");
    // The packager's command is not advertised.
    assert!(!commands.iter().any(|c| c == "man"), "{commands:?}");

    let dir = home.path().join("man");
    home.run(&["man", &dir.display().to_string()]).ok();
    let mut pages = vec!["postern".to_string()];
    pages.extend(commands.iter().map(|c| format!("postern-{c}")));
    pages.push("postern-connection-add".into());
    for page in &pages {
        let path = dir.join(format!("{page}.1"));
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("no page {}: {e}", path.display()));
        assert!(
            text.lines()
                .any(|l| l.starts_with(&format!(".TH {page} 1"))),
            "{page}: no .TH header:\n{text}"
        );
    }
    let connection_add = std::fs::read_to_string(dir.join("postern-connection-add.1")).unwrap();
    assert!(connection_add.contains("client\\-secret\\-file"));
    assert!(!dir.join("postern-man.1").exists() && !dir.join("postern-help.1").exists());
    groff_renders(&dir.join("postern-connection.1"));
}

/// groff (installed with man-db) formats the page without warnings.
fn groff_renders(page: &Path) {
    if Command::new("groff").arg("--version").output().is_err() {
        let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
        assert!(!ci, "CI needs groff (groff-base) for this test");
        eprintln!("SKIPPED the groff check: groff is not installed");
        return;
    }
    let out = Command::new("groff")
        // Plain text: no bold or underline escapes to search through.
        .args(["-man", "-Tutf8", "-ww", "-P-cbu"])
        .arg(page)
        .output()
        .expect("run groff");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stderr.is_empty(), "groff: {stderr}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("postern-connection - Create and manage") && text.contains("SYNOPSIS"),
        "{text}"
    );
}

#[test]
fn the_packaged_settings_file_loads_with_loopback_listeners() {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/postern.toml");
    let settings = postern::settings::Loader::new()
        .file(&file, true)
        .and_then(|l| l.build())
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(settings.store.data_dir, Path::new("/var/lib/postern"));
    assert!(settings.server.smtp_listen.ip().is_loopback());
    assert!(settings.server.http_listen.ip().is_loopback());
    assert!(settings.server.plain_listen.is_none() && settings.server.tls_cert.is_none());

    // The binary takes it too (with a private data dir, as /var/lib/postern is not ours here).
    let home = TestHome::new();
    let data = home.data_dir().display().to_string();
    let out = home.run(&[
        "--config",
        &file.display().to_string(),
        "--data-dir",
        &data,
        "connection",
        "list",
    ]);
    assert_eq!(out.code, 0, "{}", out.all());
}
