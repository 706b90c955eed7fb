//! The example alerting rules in monitoring/alerts.yml: valid for Prometheus, and every metric
//! they use is one Postern exports.

use std::time::Duration;

use postern::domain::{Connection, ConnectionInput, ConnectionStatus, Expiry};
use postern::metrics::{Metrics, render_expiry};

const RULES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/monitoring/alerts.yml");

#[test]
fn promtool_accepts_the_rules() {
    let out = match std::process::Command::new("promtool")
        .args(["check", "rules", RULES])
        .output()
    {
        Ok(o) => o,
        Err(_) if std::env::var("CI").as_deref() != Ok("true") => {
            eprintln!(
                "skipped: promtool missing (Debian package `prometheus`, see scripts/install-peers.sh)"
            );
            return;
        }
        Err(e) => panic!("promtool: {e}"),
    };
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("SUCCESS: 6 rules found"), "{text}");
}

#[test]
fn every_metric_in_the_rules_is_exported() {
    let (settings, _) = ConnectionInput {
        name: Some("contoso".into()),
        provider: Some("microsoft".into()),
        user: Some("ops@contoso.example".into()),
        client_id: Some("1b2c3d4e-0000-1111-2222-333344445555".into()),
        ..Default::default()
    }
    .validate()
    .unwrap();
    let now = chrono::Utc::now();
    let conn = Connection {
        id: 1,
        settings,
        status: ConnectionStatus::Authorized,
        client_secret_set: true,
        refresh_token_set: true,
        expiry: Expiry {
            secret_expires: Some(now.date_naive()),
            refresh_obtained_at: Some(now),
            access_expires_at: Some(now),
            last_used_at: Some(now),
        },
        created_at: now,
        updated_at: now,
        managed_by_file: false,
    };
    let m = Metrics::default();
    m.delivery("failed", Duration::from_millis(5));
    let store = postern::metrics::StoreGauges {
        by_status: vec![("held".into(), 1)],
        connections: vec![postern::metrics::ConnectionGauge {
            name: "contoso".into(),
            status: "authorized",
            waiting: 1,
            overrides: Default::default(),
        }],
        presets: Vec::new(),
    };
    let mut text = m.render(&store, &Default::default(), &[]);
    text.push_str(&render_expiry(&[conn], Some(now.timestamp())));
    let rules = std::fs::read_to_string(RULES).unwrap();
    let mut used: Vec<&str> = rules
        .match_indices("postern_")
        .map(|(at, _)| {
            let rest = &rules[at..];
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            &rest[..end]
        })
        .collect();
    used.sort_unstable();
    used.dedup();
    assert!(used.len() >= 6, "{used:?}");
    for name in used {
        assert!(
            text.lines()
                .any(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} "))),
            "{name} is not exported:\n{text}"
        );
    }
}
