//! A fuzzing entry point for the relay's SASL PLAIN and LOGIN decoders, with invariants checked.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use secrecy::{ExposeSecret, SecretString};

use super::auth::{login_password, login_username, plain};

/// Decodes `input` as a client's PLAIN line and as both LOGIN lines, then checks that
/// credentials built from `input` survive an encode/decode round trip.
///
/// Panics if an invariant breaks: accepted user names are non-empty, at most 256 octets and
/// free of control characters; accepted passwords are non-empty; PLAIN and LOGIN agree on the
/// same user name and password; a round trip gives back what was encoded.
pub fn fuzz_auth_decoders(input: &[u8]) {
    let line = SecretString::from(String::from_utf8_lossy(input).into_owned());
    if let Ok(c) = plain(&line) {
        check_username(&c.username);
        assert!(!c.password.expose_secret().is_empty(), "empty password");
    }
    if let Ok(name) = login_username(&line) {
        check_username(&name);
    }
    if let Ok(password) = login_password(&line) {
        assert!(!password.expose_secret().is_empty(), "empty password");
    }
    round_trip(input);
}

fn check_username(name: &str) {
    assert!(!name.is_empty() && name.len() <= 256, "user name {name:?}");
    assert!(!name.chars().any(char::is_control), "control in {name:?}");
}

/// Splits `input` at its first NUL into a user name and a password (what a client would
/// send), encodes them both ways and decodes them again.
fn round_trip(input: &[u8]) {
    let Ok(text) = std::str::from_utf8(input) else {
        return;
    };
    let (user, password) = text.split_once('\0').unwrap_or((text, "secret"));
    let valid_user = !user.is_empty() && user.len() <= 256 && !user.chars().any(char::is_control);
    let plain_line = encode(format!("\0{user}\0{password}").as_bytes());
    let decoded = plain(&plain_line);
    // A NUL inside the password makes four fields, which PLAIN cannot carry.
    if valid_user && !password.is_empty() && !password.contains('\0') {
        let c = decoded.unwrap_or_else(|e| panic!("PLAIN round trip failed: {e:?}"));
        assert_eq!(c.username, user);
        assert_eq!(c.password.expose_secret(), password);
    } else {
        assert!(decoded.is_err(), "accepted unusable PLAIN credentials");
    }
    let login_user = login_username(&encode(user.as_bytes()));
    assert_eq!(login_user.is_ok(), valid_user, "LOGIN and PLAIN disagree");
    if let Ok(name) = login_user {
        assert_eq!(name, user);
    }
    let login_pass = login_password(&encode(password.as_bytes()));
    assert_eq!(login_pass.is_ok(), !password.is_empty());
    if let Ok(p) = login_pass {
        assert_eq!(p.expose_secret(), password);
    }
}

fn encode(raw: &[u8]) -> SecretString {
    SecretString::from(STANDARD.encode(raw))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_inputs_do_not_panic() {
        for input in [
            &b"AHRpbQB0YW5zdGFhZnRhbnN0YWFm"[..],
            b"=",
            b"",
            b"app\0pw",
            b"\0\0",
            b"a\x01b\0pw",
            b"\xff\xfe",
            b"dXNlcg==",
        ] {
            fuzz_auth_decoders(input);
        }
    }
}
