//! SASL codecs: XOAUTH2 and OAUTHBEARER initial responses, and the provider's error challenge.
//!
//! This is one of the few places allowed to expose a token, and only to the wire: encoders take a
//! [`SecretString`] and return the base64 line as a [`SecretString`]; the cleartext they build on
//! the way is zeroized. Decoders exist for the fake provider and for fuzzing.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use secrecy::{ExposeSecret, SecretString};
use zeroize::Zeroizing;

/// A SASL message that could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SaslError {
    #[error("not valid base64")]
    Base64,
    #[error("not valid UTF-8")]
    Utf8,
    #[error("malformed {mechanism} response: {reason}")]
    Malformed {
        mechanism: &'static str,
        reason: &'static str,
    },
    #[error("malformed error challenge: {0}")]
    Challenge(String),
}

/// `base64("user=" USER "\x01auth=Bearer " TOKEN "\x01\x01")`, Google's and Microsoft's XOAUTH2.
pub fn xoauth2_initial_response(user: &str, token: &SecretString) -> SecretString {
    let raw = Zeroizing::new(format!(
        "user={user}\x01auth=Bearer {}\x01\x01",
        token.expose_secret()
    ));
    SecretString::from(BASE64.encode(raw.as_bytes()))
}

/// RFC 7628 OAUTHBEARER: the GS2 header `n,a=USER,` then `\x01host=H\x01port=P\x01auth=Bearer T\x01\x01`.
pub fn oauthbearer_initial_response(
    user: &str,
    host: &str,
    port: u16,
    token: &SecretString,
) -> SecretString {
    let raw = Zeroizing::new(format!(
        "n,a={},\x01host={host}\x01port={port}\x01auth=Bearer {}\x01\x01",
        gs2_escape(user),
        token.expose_secret()
    ));
    SecretString::from(BASE64.encode(raw.as_bytes()))
}

/// The parts of a decoded XOAUTH2 initial response.
#[derive(Debug)]
pub struct Xoauth2Response {
    pub user: String,
    pub token: SecretString,
}

/// Decodes what [`xoauth2_initial_response`] produced (the fake provider's side).
pub fn decode_xoauth2(line: &str) -> Result<Xoauth2Response, SaslError> {
    const MECH: &str = "XOAUTH2";
    let raw = decode_base64_text(line)?;
    let body = raw
        .strip_suffix("\x01\x01")
        .ok_or(malformed(MECH, "missing the final \\x01\\x01"))?;
    let mut user = None;
    let mut token = None;
    for field in body.split('\x01') {
        if let Some(u) = field.strip_prefix("user=") {
            user = Some(u.to_string());
        } else if let Some(auth) = field.strip_prefix("auth=") {
            token = Some(bearer_token(MECH, auth)?);
        } else {
            return Err(malformed(MECH, "unknown field"));
        }
    }
    Ok(Xoauth2Response {
        user: user.ok_or(malformed(MECH, "missing user="))?,
        token: token.ok_or(malformed(MECH, "missing auth="))?,
    })
}

/// The parts of a decoded OAUTHBEARER initial response (RFC 7628 §3.1).
#[derive(Debug)]
pub struct OAuthBearerResponse {
    /// The authorization identity from the GS2 header (`a=`), unescaped.
    pub user: Option<String>,
    pub host: Option<String>,
    pub port: Option<u16>,
    pub token: SecretString,
}

/// Decodes what [`oauthbearer_initial_response`] produced (the fake provider's side).
pub fn decode_oauthbearer(line: &str) -> Result<OAuthBearerResponse, SaslError> {
    const MECH: &str = "OAUTHBEARER";
    let raw = decode_base64_text(line)?;
    let body = raw
        .strip_suffix("\x01\x01")
        .ok_or(malformed(MECH, "missing the final \\x01\\x01"))?;
    let (gs2, kvpairs) = body
        .split_once('\x01')
        .ok_or(malformed(MECH, "missing the GS2 header"))?;
    // gs2-header = gs2-cbind-flag "," [ authzid ] ","; channel binding is never used with OAuth.
    let mut gs2_parts = gs2.split(',');
    if !matches!(gs2_parts.next(), Some("n" | "y")) {
        return Err(malformed(MECH, "bad GS2 channel-binding flag"));
    }
    let user = match gs2_parts.next() {
        Some("") => None,
        Some(a) => Some(gs2_unescape(
            a.strip_prefix("a=").ok_or(malformed(MECH, "bad authzid"))?,
        )?),
        None => return Err(malformed(MECH, "truncated GS2 header")),
    };
    if gs2_parts.next() != Some("") || gs2_parts.next().is_some() {
        return Err(malformed(MECH, "bad GS2 header"));
    }
    let (mut host, mut port, mut token) = (None, None, None);
    for pair in kvpairs.split('\x01') {
        let (key, value) = pair
            .split_once('=')
            .ok_or(malformed(MECH, "a field without `=`"))?;
        match key {
            "host" => host = Some(value.to_string()),
            "port" => port = Some(value.parse().map_err(|_| malformed(MECH, "bad port"))?),
            "auth" => token = Some(bearer_token(MECH, value)?),
            // RFC 7628 allows other key/value pairs; they carry nothing we use.
            _ => {}
        }
    }
    Ok(OAuthBearerResponse {
        user,
        host,
        port,
        token: token.ok_or(malformed(MECH, "missing auth="))?,
    })
}

/// The JSON a server sends in a `334` challenge when it refuses a token (Gmail, RFC 7628 §3.2.2):
/// `{"status":"401","schemes":"bearer","scope":"https://mail.google.com/"}`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct OAuthErrorChallenge {
    pub status: String,
    #[serde(default)]
    pub schemes: Option<String>,
    #[serde(default)]
    pub scope: Option<String>,
}

impl OAuthErrorChallenge {
    /// 401: the token is invalid or expired; a refreshed token may succeed.
    pub fn is_token_rejected(&self) -> bool {
        self.status == "401" || self.status.eq_ignore_ascii_case("invalid_token")
    }
}

/// Decodes the base64 text of a `334` error challenge.
pub fn decode_error_challenge(text: &str) -> Result<OAuthErrorChallenge, SaslError> {
    let raw = decode_base64_text(text)?;
    serde_json::from_str(&raw).map_err(|e| SaslError::Challenge(e.to_string()))
}

/// The JSON of [`OAuthErrorChallenge`], base64-encoded (for the fake provider).
pub fn encode_error_challenge(status: &str, scope: &str) -> String {
    let json = serde_json::json!({ "status": status, "schemes": "bearer", "scope": scope });
    BASE64.encode(json.to_string())
}

fn decode_base64_text(line: &str) -> Result<Zeroizing<String>, SaslError> {
    let bytes = Zeroizing::new(
        BASE64
            .decode(line.trim().as_bytes())
            .map_err(|_| SaslError::Base64)?,
    );
    let text = std::str::from_utf8(&bytes).map_err(|_| SaslError::Utf8)?;
    Ok(Zeroizing::new(text.to_string()))
}

fn bearer_token(mechanism: &'static str, auth: &str) -> Result<SecretString, SaslError> {
    // The scheme name is case-insensitive (RFC 6750 §2.1).
    match auth.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") && !token.is_empty() => {
            Ok(SecretString::from(token.to_string()))
        }
        _ => Err(malformed(mechanism, "auth= is not `Bearer <token>`")),
    }
}

fn malformed(mechanism: &'static str, reason: &'static str) -> SaslError {
    SaslError::Malformed { mechanism, reason }
}

/// RFC 5801 saslname: `,` and `=` are escaped as `=2C` and `=3D`.
fn gs2_escape(name: &str) -> String {
    name.replace('=', "=3D").replace(',', "=2C")
}

fn gs2_unescape(name: &str) -> Result<String, SaslError> {
    let mut out = String::with_capacity(name.len());
    let mut rest = name;
    while let Some(i) = rest.find('=') {
        out.push_str(&rest[..i]);
        match rest.get(i..i + 3) {
            Some("=2C") => out.push(','),
            Some("=3D") => out.push('='),
            _ => return Err(malformed("OAUTHBEARER", "bad escape in authzid")),
        }
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const USER: &str = "someuser@example.com";
    const TOKEN: &str = "ya29.vF9dft4qmTc2Nvb3RlckBhdHRhdmlzdGEuY29tCg";

    fn token() -> SecretString {
        SecretString::from(TOKEN)
    }

    #[test]
    fn xoauth2_matches_googles_documented_example() {
        let line = xoauth2_initial_response(USER, &token());
        assert_eq!(
            line.expose_secret(),
            "dXNlcj1zb21ldXNlckBleGFtcGxlLmNvbQFhdXRoPUJlYXJlciB5YTI5LnZGOWRmdDRxbVRjMk52YjNSbGNrQmhkSFJoZG1semRHRXVZMjl0Q2cBAQ=="
        );
    }

    #[test]
    fn xoauth2_round_trips() {
        let line = xoauth2_initial_response(USER, &token());
        let decoded = decode_xoauth2(line.expose_secret()).unwrap();
        assert_eq!(decoded.user, USER);
        assert_eq!(decoded.token.expose_secret(), TOKEN);
    }

    #[test]
    fn oauthbearer_matches_rfc_7628_layout() {
        let line = oauthbearer_initial_response(USER, "smtp.gmail.com", 587, &token());
        let raw = BASE64.decode(line.expose_secret()).unwrap();
        assert_eq!(
            String::from_utf8(raw).unwrap(),
            format!(
                "n,a={USER},\x01host=smtp.gmail.com\x01port=587\x01auth=Bearer {TOKEN}\x01\x01"
            )
        );
        // The RFC 7628 §4.1 example, byte for byte.
        let rfc = oauthbearer_initial_response(
            "user@example.com",
            "server.example.com",
            143,
            &SecretString::from("vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg=="),
        );
        assert_eq!(
            rfc.expose_secret(),
            "bixhPXVzZXJAZXhhbXBsZS5jb20sAWhvc3Q9c2VydmVyLmV4YW1wbGUuY29tAXBvcnQ9MTQzAWF1dGg9QmVhcmVyIHZGOWRmdDRxbVRjMk52YjNSbGNrQmhiSFJoZG1semRHRXVZMjl0Q2c9PQEB"
        );
    }

    #[test]
    fn oauthbearer_round_trips_with_escaped_user() {
        let line = oauthbearer_initial_response("a,b=c@example.com", "h", 465, &token());
        let decoded = decode_oauthbearer(line.expose_secret()).unwrap();
        assert_eq!(decoded.user.as_deref(), Some("a,b=c@example.com"));
        assert_eq!(decoded.host.as_deref(), Some("h"));
        assert_eq!(decoded.port, Some(465));
        assert_eq!(decoded.token.expose_secret(), TOKEN);
    }

    #[test]
    fn decoders_reject_garbage() {
        assert_eq!(decode_xoauth2("!!!").unwrap_err(), SaslError::Base64);
        let no_tail = BASE64.encode("user=a\x01auth=Bearer t");
        assert!(matches!(
            decode_xoauth2(&no_tail),
            Err(SaslError::Malformed { .. })
        ));
        let basic = BASE64.encode("user=a\x01auth=Basic t\x01\x01");
        assert!(decode_xoauth2(&basic).is_err());
        let bad_gs2 = BASE64.encode("p=x,,\x01auth=Bearer t\x01\x01");
        assert!(decode_oauthbearer(&bad_gs2).is_err());
    }

    #[test]
    fn gmail_error_challenge_is_decoded() {
        // What Gmail sends after a bad token.
        let text = "eyJzdGF0dXMiOiI0MDEiLCJzY2hlbWVzIjoiYmVhcmVyIiwic2NvcGUiOiJodHRwczovL21haWwuZ29vZ2xlLmNvbS8ifQ==";
        let challenge = decode_error_challenge(text).unwrap();
        assert_eq!(challenge.status, "401");
        assert_eq!(challenge.scope.as_deref(), Some("https://mail.google.com/"));
        assert!(challenge.is_token_rejected());
        let other = decode_error_challenge(&encode_error_challenge("400", "s")).unwrap();
        assert!(!other.is_token_rejected());
        assert!(decode_error_challenge(&BASE64.encode("not json")).is_err());
    }

    #[test]
    fn secrets_do_not_leak_through_debug() {
        let decoded = decode_xoauth2(xoauth2_initial_response(USER, &token()).expose_secret());
        assert!(!format!("{decoded:?}").contains(TOKEN));
    }
}
