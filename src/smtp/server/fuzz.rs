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
    run(input);
}

/// What a fuzz run reached, so tests can check the harness goes deep.
#[derive(Debug, Default, PartialEq, Eq)]
struct Reached {
    authenticated: usize,
    delivered: usize,
    tls_started: usize,
    closed: bool,
}

fn run(input: &[u8]) -> Reached {
    let mut reached = Reached::default();
    let Some((&first, data)) = input.split_first() else {
        return reached;
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
                        reached.authenticated += 1;
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
                    reached.delivered += 1;
                    pending.extend(session.message_stored(Ok("fuzz".into())));
                }
                Action::StartTls => {
                    reached.tls_started += 1;
                    pending.extend(session.tls_started());
                }
                Action::Close => reached.closed = true,
                Action::Delay(_) => {}
            }
        }
    }
    reached
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
        lenient: false,
    }
}

fn identity() -> Identity {
    let allowed_from = AllowedFrom::parse(["@example.com"]).expect("a valid domain");
    Identity {
        user: "fuzz".into(),
        allowed_from,
        rewrite_from: None,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scripted_input_goes_all_the_way() {
        let script = concat!(
            "EHLO x\r\nAUTH PLAIN AGZ1enoAZnV6eg==\r\nMAIL FROM:<a@example.com>\r\n",
            "RCPT TO:<b@c.com>\r\nDATA\r\nhi\n.\nthere\r\n.\r\nSTARTTLS\r\nQUIT\r\n",
            "EHLO x\r\nQUIT\r\n"
        );
        for chunk in [0u8, 6, 63] {
            let input = [&[chunk][..], script.as_bytes()].concat();
            let reached = run(&input);
            assert_eq!(
                reached,
                Reached {
                    authenticated: 1,
                    delivered: 1,
                    tls_started: 1,
                    closed: true
                },
                "read size {}",
                chunk + 1
            );
        }
    }
}
