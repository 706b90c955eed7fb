//! Checks of the installation itself: key file, store, disk, relay certificate, notifications.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use super::Check;
use crate::settings::Settings;
use crate::store::Store;

/// Below this much free space the store may soon refuse mail.
const LOW_DISK_BYTES: u64 = 1 << 30;
const CERT_WARN_DAYS: i64 = 21;

pub fn key_file(settings: &Settings) -> Vec<Check> {
    let backup = Check::ok(
        "backup",
        "keep a copy of the key file apart from `postern backup` files: a backup is useless without it, \
         and whoever holds both can read every secret",
    );
    if std::env::var_os("POSTERN_SECRET_KEY").is_some() {
        return vec![
            Check::ok("key file", "the key comes from POSTERN_SECRET_KEY"),
            backup,
        ];
    }
    let path = settings
        .store
        .key_file
        .clone()
        .unwrap_or_else(|| settings.store.data_dir.join(crate::store::KEY_FILE));
    let check = match std::fs::metadata(&path) {
        Ok(m) if m.permissions().mode() & 0o077 != 0 => Check::fail(
            "key file",
            format!(
                "{} is readable by others (mode {:o})",
                path.display(),
                m.permissions().mode() & 0o777
            ),
            format!("chmod 600 {}", path.display()),
        ),
        Ok(_) => Check::ok("key file", format!("{} is private (0600)", path.display())),
        Err(e) => Check::fail(
            "key file",
            format!("{}: {e}", path.display()),
            "Restore the key file from your copy.",
        ),
    };
    vec![check, backup]
}

pub async fn store_integrity(store: &Store) -> Check {
    match store.quick_check().await {
        Ok(r) if r == "ok" => Check::ok("store", "PRAGMA quick_check: ok"),
        Ok(r) => Check::fail(
            "store",
            format!("PRAGMA quick_check: {r}"),
            "Stop serve and restore the latest backup (`postern restore FILE`).",
        ),
        Err(e) => Check::fail(
            "store",
            e.to_string(),
            "Check the data directory and its disk.",
        ),
    }
}

/// Free space via `df` (no unsafe statvfs call in this crate).
pub fn disk_space(dir: &Path) -> Check {
    let out = std::process::Command::new("df")
        .arg("-Pk")
        .arg(dir)
        .output();
    let free_kib = out.ok().and_then(|o| {
        let text = String::from_utf8_lossy(&o.stdout).into_owned();
        text.lines()
            .nth(1)?
            .split_whitespace()
            .nth(3)?
            .parse::<u64>()
            .ok()
    });
    match free_kib.map(|k| k * 1024) {
        Some(b) if b < LOW_DISK_BYTES => Check::warn(
            "disk",
            format!("{} MiB free on {}", b >> 20, dir.display()),
            "Free space: when the disk fills, the relay defers new mail (452 4.3.1).",
        ),
        Some(b) => Check::ok("disk", format!("{} MiB free on {}", b >> 20, dir.display())),
        None => Check::warn(
            "disk",
            "cannot measure free space (`df` failed)",
            format!("Check `df -h {}`.", dir.display()),
        ),
    }
}

pub fn relay_certificate(settings: &Settings) -> Check {
    let path = settings.server.tls_cert.clone().unwrap_or_else(|| {
        settings
            .store
            .data_dir
            .join(crate::smtp::server::tls::SELF_SIGNED_CERT_FILE)
    });
    if !path.exists() {
        return Check::ok(
            "relay certificate",
            "none yet: serve generates a self-signed one at start",
        );
    }
    let Some(not_after) = crate::smtp::server::tls::certificate_not_after(&path) else {
        return Check::fail(
            "relay certificate",
            format!("{} cannot be read as a PEM certificate", path.display()),
            "Set server.tls_cert to a PEM certificate chain.",
        );
    };
    let left = (not_after - chrono::Utc::now().timestamp()) / 86_400;
    let when = chrono::DateTime::from_timestamp(not_after, 0)
        .unwrap_or_default()
        .date_naive();
    let renew = format!(
        "Renew {} (or remove a self-signed one: serve makes a new one).",
        path.display()
    );
    if left < 0 {
        Check::fail("relay certificate", format!("expired on {when}"), renew)
    } else if left < CERT_WARN_DAYS {
        Check::warn(
            "relay certificate",
            format!("expires on {when}, in {left} day(s)"),
            renew,
        )
    } else {
        Check::ok("relay certificate", format!("valid until {when}"))
    }
}

pub async fn notifications(settings: &Settings, store: &Store) -> Vec<Check> {
    let n = &settings.notifications;
    let mut out = Vec::new();
    if !n.any_channel() {
        out.push(Check::warn(
            "notifications",
            "no channel configured: nobody is told when a connection stops",
            "Set webhook_url, email_connection + email_to, or command under [notifications].",
        ));
        return out;
    }
    if let Some(url) = &n.webhook_url {
        out.push(webhook(url, n.webhook_secret_file.as_deref()).await);
    }
    if let Some(name) = &n.email_connection {
        out.push(match store.connection(name).await {
            Ok(c) if crate::outbox::worker::hold_reason(&c).is_none() => Check::ok(
                "notifications: email",
                format!("through `{name}` to {}", n.email_to.join(", ")),
            ),
            Ok(c) => Check::fail(
                "notifications: email",
                format!(
                    "`{name}` cannot send: {}",
                    crate::outbox::worker::hold_reason(&c).unwrap_or_default()
                ),
                "Fix that connection, or name another in notifications.email_connection.",
            ),
            Err(e) => Check::fail(
                "notifications: email",
                e.to_string(),
                "Name an existing connection in notifications.email_connection.",
            ),
        });
    }
    if let Some(program) = n.command.first() {
        let found = Path::new(program).is_absolute() && Path::new(program).exists()
            || std::env::var_os("PATH")
                .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()));
        out.push(if found {
            Check::ok("notifications: command", format!("`{program}` found"))
        } else {
            Check::fail(
                "notifications: command",
                format!("`{program}` not found"),
                "Give the program's absolute path in notifications.command.",
            )
        });
    }
    out
}

/// The secret is readable and something accepts connections at the URL's host and port.
async fn webhook(url: &str, secret: Option<&Path>) -> Check {
    if let Some(path) = secret
        && std::fs::read_to_string(path)
            .map(|s| s.trim().is_empty())
            .unwrap_or(true)
    {
        return Check::fail(
            "notifications: webhook",
            format!("the secret file {} is missing or empty", path.display()),
            "Put the shared secret in notifications.webhook_secret_file.",
        );
    }
    let Some((host, port)) = url::Url::parse(url)
        .ok()
        .and_then(|u| Some((u.host_str()?.to_string(), u.port_or_known_default()?)))
    else {
        return Check::fail(
            "notifications: webhook",
            "the URL has no host",
            "Fix notifications.webhook_url.",
        );
    };
    let connect = tokio::net::TcpStream::connect((host.as_str(), port));
    match tokio::time::timeout(Duration::from_secs(5), connect).await {
        Ok(Ok(_)) => Check::ok(
            "notifications: webhook",
            format!("{host}:{port} accepts connections"),
        ),
        Ok(Err(e)) => Check::fail(
            "notifications: webhook",
            format!("{host}:{port}: {e}"),
            "Check the receiver runs and the firewall; `postern notifications test` sends a sample.",
        ),
        Err(_) => Check::fail(
            "notifications: webhook",
            format!("{host}:{port}: no answer in 5 s"),
            "Check the receiver and the firewall.",
        ),
    }
}
