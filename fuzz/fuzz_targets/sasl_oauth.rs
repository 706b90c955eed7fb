//! XOAUTH2 and OAUTHBEARER decoders and the `334` error challenge: arbitrary lines must not
//! panic, and what the encoders produce must decode to what went in.
#![no_main]

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use postern::smtp::sasl::{
    decode_error_challenge, decode_oauthbearer, decode_xoauth2, oauthbearer_initial_response,
    xoauth2_initial_response,
};
use secrecy::{ExposeSecret, SecretString};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // As a line on the wire, and as the base64 of a decoded response.
    let encoded = STANDARD.encode(data);
    for line in [text, encoded.as_str()] {
        if let Ok(r) = decode_xoauth2(line) {
            assert!(!r.token.expose_secret().is_empty());
        }
        if let Ok(r) = decode_oauthbearer(line) {
            assert!(!r.token.expose_secret().is_empty());
        }
        if let Ok(c) = decode_error_challenge(line) {
            let _ = c.is_token_rejected();
        }
    }
    round_trip(text);
});

/// Splits the input at NULs into user, host, token and port, encodes, decodes and compares.
fn round_trip(text: &str) {
    let mut parts = text.split('\0');
    let user = parts.next().unwrap_or_default();
    let host = parts.next().unwrap_or("smtp.example.com");
    let token = parts.next().unwrap_or("t0ken");
    let port = parts.next().map_or(587, |p| p.len() as u16);
    // \x01 separates the fields of both mechanisms, so no field can carry one.
    if [user, host, token].iter().any(|f| f.contains('\x01')) || token.is_empty() {
        return;
    }
    let secret = SecretString::from(token.to_string());

    let line = xoauth2_initial_response(user, &secret);
    let r = decode_xoauth2(line.expose_secret()).expect("XOAUTH2 round trip");
    assert_eq!(r.user, user);
    assert_eq!(r.token.expose_secret(), token);

    let line = oauthbearer_initial_response(user, host, port, &secret);
    let r = decode_oauthbearer(line.expose_secret()).expect("OAUTHBEARER round trip");
    assert_eq!(r.user.as_deref(), Some(user));
    assert_eq!(r.host.as_deref(), Some(host));
    assert_eq!(r.port, Some(port));
    assert_eq!(r.token.expose_secret(), token);
}
