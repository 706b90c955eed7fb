//! A fuzzing entry point: arbitrary bytes through a session, with invariants checked.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;

use super::config::{AuthThrottle, PeerInfo, SessionConfig};
use super::identity::{AllowedFrom, AuthOutcome, Identity};
use super::session::{Action, Session};
use crate::domain::Host;

/// Feeds `input` to a session (loopback peer, small limits, STARTTLS offered) and answers
/// every action: user `fuzz` authenticates (may send as `@example.com`), every message is
/// stored. The first byte sets the read size, so split reads are explored too.
///
/// Panics if an invariant breaks: every reply line is `NNN[ -]text CRLF` within 512 octets,
/// and a stored message has CRLF line endings only (nothing left that could smuggle).
pub fn fuzz_session(input: &[u8]) {
    let Some((&first, data)) = input.split_first() else {
        return;
    };
    let chunk = usize::from(first % 64) + 1;
    let mut session = Session::new(Arc::new(config()), peer());
    let mut pending = VecDeque::new();
    for piece in data.chunks(chunk) {
        pending.extend(session.feed(piece));
        while let Some(action) = pending.pop_front() {
            match action {
                Action::Send(bytes) => check_replies(&bytes),
                Action::Authenticate { username, .. } => {
                    let outcome = if username == "fuzz" {
                        AuthOutcome::Success(identity())
                    } else {
                        AuthOutcome::Failure
                    };
                    pending.extend(session.auth_result(outcome));
                }
                Action::Deliver { envelope, message } => {
                    assert!(
                        !envelope.recipients.is_empty(),
                        "delivered without recipients"
                    );
                    check_line_endings(&message);
                    assert!(message.len() <= config().max_message_size + 4096);
                    pending.extend(session.message_stored(Ok("fuzz".into())));
                }
                Action::StartTls => pending.extend(session.tls_started()),
                Action::Delay(_) | Action::Close => {}
            }
        }
    }
}

fn config() -> SessionConfig {
    let mut c = SessionConfig::new(Host::parse("relay.fuzz").expect("a valid host name"));
    c.max_message_size = 8192;
    c.max_recipients = 5;
    c.starttls_available = true;
    c.max_errors = 50;
    c.auth_throttle = AuthThrottle {
        max_failures: 20,
        ..AuthThrottle::default()
    };
    c
}

fn peer() -> PeerInfo {
    PeerInfo {
        addr: SocketAddr::from(([127, 0, 0, 1], 40000)),
        tls_active: false,
        trusted: false,
    }
}

fn identity() -> Identity {
    let allowed_from = AllowedFrom::parse(["@example.com"]).expect("a valid domain");
    Identity {
        user: "fuzz".into(),
        allowed_from,
    }
}

fn check_replies(bytes: &[u8]) {
    assert!(bytes.ends_with(b"\r\n"), "reply without CRLF: {bytes:?}");
    for line in bytes.split_inclusive(|&b| b == b'\n') {
        assert!(line.len() <= 512, "reply line too long");
        assert!(
            line.len() >= 6 && line.ends_with(b"\r\n"),
            "bad reply line {line:?}"
        );
        assert!(
            line[..3].iter().all(u8::is_ascii_digit),
            "bad reply code {line:?}"
        );
        assert!(
            matches!(line[3], b' ' | b'-'),
            "bad reply separator {line:?}"
        );
        assert!(
            !line[..line.len() - 2].contains(&b'\r'),
            "bare CR in reply {line:?}"
        );
    }
}

fn check_line_endings(message: &[u8]) {
    for (i, &b) in message.iter().enumerate() {
        match b {
            b'\r' => assert_eq!(message.get(i + 1), Some(&b'\n'), "bare CR at {i}"),
            b'\n' => assert_eq!(
                i.checked_sub(1).map(|p| message[p]),
                Some(b'\r'),
                "bare LF at {i}"
            ),
            _ => {}
        }
    }
}
