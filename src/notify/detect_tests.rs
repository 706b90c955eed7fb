//! One event per state change: the table of what the notifier sees and what it says.

use super::*;
use crate::domain::{Connection, ConnectionInput, ConnectionStatus, Expiry};
use crate::store::connection_watch::WatchedConnection;

fn conn(name: &str, status: ConnectionStatus, secret_expires: Option<&str>) -> Connection {
    let (settings, _) = ConnectionInput {
        name: Some(name.into()),
        provider: Some("microsoft".into()),
        user: Some("ops@contoso.example".into()),
        client_id: Some("1b2c3d4e-0000-1111-2222-333344445555".into()),
        ..Default::default()
    }
    .validate()
    .unwrap();
    Connection {
        id: 1,
        settings,
        status,
        client_secret_set: true,
        refresh_token_set: true,
        expiry: Expiry {
            secret_expires: secret_expires.map(|d| d.parse().unwrap()),
            ..Default::default()
        },
        created_at: chrono::Utc::now(),
        updated_at: chrono::Utc::now(),
        managed_by_file: false,
    }
}

fn refused() -> ConnectionStatus {
    ConnectionStatus::NeedsReauthorization {
        reason: "invalid_grant: AADSTS700082: The refresh token has expired due to inactivity."
            .into(),
    }
}

fn today() -> NaiveDate {
    "2026-12-06".parse().unwrap()
}

/// Runs `transitions` and applies the new states, as the notifier does; returns the events.
fn step(
    conns: &[Connection],
    mail: &MailWatch,
    states: &mut States,
    now_ms: i64,
) -> Vec<NewNotification> {
    let conns: Vec<WatchedConnection> = conns.iter().map(Into::into).collect();
    let ts = transitions(&conns, mail, states, today(), now_ms, 60);
    let mut events = Vec::new();
    for t in ts {
        states.insert((t.subject, t.topic.to_string()), t.state);
        events.extend(t.event);
    }
    events
}

#[test]
fn a_refusal_is_told_once_with_the_catalogue_fix_then_recovery_once() {
    let mut states = States::new();
    let mail = MailWatch::default();
    assert!(
        step(
            &[conn("c", ConnectionStatus::Authorized, None)],
            &mail,
            &mut states,
            0
        )
        .is_empty()
    );
    let broken = [conn("c", refused(), None)];
    let events = step(&broken, &mail, &mut states, 0);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].event, "connection.needs_reauthorization");
    assert!(events[0].reason.contains("AADSTS700082"));
    assert!(
        events[0].fix.contains("postern connection authorize c"),
        "{}",
        events[0].fix
    );
    assert!(step(&broken, &mail, &mut states, 0).is_empty(), "no storm");
    let events = step(
        &[conn("c", ConnectionStatus::Authorized, None)],
        &mail,
        &mut states,
        0,
    );
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].event, "connection.recovered");
    assert!(
        step(
            &[conn("c", ConnectionStatus::Authorized, None)],
            &mail,
            &mut states,
            0
        )
        .is_empty()
    );
}

#[test]
fn a_connection_broken_when_first_seen_is_told_and_a_disabled_one_is_not() {
    let mut states = States::new();
    let mail = MailWatch::default();
    assert_eq!(
        step(&[conn("c", refused(), None)], &mail, &mut states, 0).len(),
        1
    );
    let mut off = conn("d", refused(), None);
    off.settings.enabled = false;
    assert!(step(&[off], &mail, &mut states, 0).is_empty());
}

#[test]
fn an_expired_secret_gets_the_7000222_explanation() {
    let mut states = States::new();
    let c = conn(
        "c",
        ConnectionStatus::NeedsReauthorization {
            reason: "invalid_client: AADSTS7000222: The provided client secret keys for app 'x' are expired.".into(),
        },
        None,
    );
    let events = step(&[c], &MailWatch::default(), &mut states, 0);
    assert!(
        events[0].fix.contains("--secret-expires"),
        "{}",
        events[0].fix
    );
}

#[test]
fn secret_warnings_at_30_7_and_1_days_once_each() {
    let mut states = States::new();
    let mail = MailWatch::default();
    let at = |date: &str| [conn("c", ConnectionStatus::Authorized, Some(date))];
    assert!(
        step(&at("2027-03-01"), &mail, &mut states, 0).is_empty(),
        "far away"
    );
    // 6 days left: only the 7-day warning, not the 30-day one as well.
    let events = step(&at("2026-12-12"), &mail, &mut states, 0);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].event, "secret.expiring.7d");
    assert!(
        events[0].reason.contains("in 6 day(s)"),
        "{}",
        events[0].reason
    );
    assert!(step(&at("2026-12-12"), &mail, &mut states, 0).is_empty());
    assert_eq!(
        step(&at("2026-12-07"), &mail, &mut states, 0)[0].event,
        "secret.expiring.1d"
    );
    // A renewed secret is quiet, and its own warnings come later.
    assert!(step(&at("2028-12-01"), &mail, &mut states, 0).is_empty());
    assert_eq!(
        step(&at("2027-01-01"), &mail, &mut states, 0)[0].event,
        "secret.expiring.30d"
    );
}

#[test]
fn failed_messages_and_old_mail() {
    let mut states = States::new();
    let c = [conn("c", ConnectionStatus::Authorized, None)];
    let mut mail = MailWatch {
        oldest_waiting_ms: Some(0),
        failed: 0,
        last_failure: None,
    };
    assert!(step(&c, &mail, &mut states, 60_000).is_empty());
    mail.failed = 2;
    mail.last_failure = Some((
        "m1".into(),
        "c".into(),
        Some("535 5.7.139 Authentication unsuccessful".into()),
    ));
    let events = step(&c, &mail, &mut states, 60_000);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].event, "message.failed");
    assert!(events[0].reason.starts_with("2 message(s) failed"));
    assert!(
        events[0].fix.contains("Set-CASMailbox"),
        "{}",
        events[0].fix
    );
    assert!(step(&c, &mail, &mut states, 60_000).is_empty());
    // The oldest waiting message passes the hour: once; then the queue drains: quiet.
    let events = step(&c, &mail, &mut states, 61 * 60_000 + 1);
    assert_eq!(
        events.iter().map(|e| e.event.as_str()).collect::<Vec<_>>(),
        ["queue.old"]
    );
    assert!(step(&c, &mail, &mut states, 62 * 60_000).is_empty());
    mail.oldest_waiting_ms = None;
    assert!(step(&c, &mail, &mut states, 62 * 60_000).is_empty());
}

#[test]
fn an_idle_refresh_token_is_told_once_and_renewal_is_quiet() {
    let mut states = States::new();
    let mail = MailWatch::default();
    let now = chrono::Utc::now();
    let mut c = conn("c", ConnectionStatus::Authorized, None);
    c.expiry.refresh_obtained_at = Some(now - chrono::Duration::days(59));
    assert!(step(&[c.clone()], &mail, &mut states, now.timestamp_millis()).is_empty());
    c.expiry.refresh_obtained_at = Some(now - chrono::Duration::days(61));
    let events = step(&[c.clone()], &mail, &mut states, now.timestamp_millis());
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].event, "refresh_token.idle");
    assert!(events[0].reason.contains("61 days"), "{}", events[0].reason);
    assert!(step(&[c.clone()], &mail, &mut states, now.timestamp_millis()).is_empty());
    c.expiry.refresh_obtained_at = Some(now);
    assert!(step(&[c], &mail, &mut states, now.timestamp_millis()).is_empty());
}
