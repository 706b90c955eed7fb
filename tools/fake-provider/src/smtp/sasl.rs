//! SASL payloads the fake server understands: XOAUTH2 and OAUTHBEARER (RFC 7628). No I/O.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

/// The credentials carried by an OAuth SASL message.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Bearer {
    /// `user=` (XOAUTH2) or `a=` (OAUTHBEARER); OAUTHBEARER may omit it.
    pub user: Option<String>,
    pub token: String,
}

/// `user=U\x01auth=Bearer T\x01\x01`.
pub(crate) fn parse_xoauth2(msg: &[u8]) -> Option<Bearer> {
    let text = std::str::from_utf8(msg).ok()?;
    let mut user = None;
    let mut token = None;
    for part in text.split('\x01') {
        if let Some(u) = part.strip_prefix("user=") {
            user = Some(u.to_owned());
        } else if let Some(a) = part.strip_prefix("auth=") {
            token = Some(strip_bearer(a)?.to_owned());
        }
    }
    Some(Bearer {
        user: Some(user?),
        token: token?,
    })
}

/// `n,a=U,\x01host=H\x01port=P\x01auth=Bearer T\x01\x01` (GS2 header, then key=value pairs).
pub(crate) fn parse_oauthbearer(msg: &[u8]) -> Option<Bearer> {
    let text = std::str::from_utf8(msg).ok()?;
    let (gs2, rest) = text.split_once('\x01')?;
    let mut fields = gs2.split(',');
    let flag = fields.next()?;
    if !matches!(flag, "n" | "y") && !flag.starts_with("p=") {
        return None;
    }
    let user = fields
        .next()
        .and_then(|a| a.strip_prefix("a="))
        .filter(|a| !a.is_empty())
        .map(|a| a.replace("=2C", ",").replace("=3D", "="));
    let token = rest
        .split('\x01')
        .find_map(|kv| kv.strip_prefix("auth="))
        .and_then(strip_bearer)?;
    Some(Bearer {
        user,
        token: token.to_owned(),
    })
}

fn strip_bearer(auth: &str) -> Option<&str> {
    let (scheme, token) = auth.split_once(' ')?;
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Gmail's failure challenge: `334 <base64 JSON>`, as Gmail words it after XOAUTH2 and after
/// OAUTHBEARER.
pub(crate) fn gmail_challenge(oauthbearer: bool) -> String {
    STANDARD.encode(if oauthbearer {
        r#"{"status":"400","schemes":"Bearer","scope":"https://mail.google.com/"}"#
    } else {
        r#"{"status":"401","schemes":"bearer","scope":"https://mail.google.com/"}"#
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xoauth2_known_answer() {
        let b = parse_xoauth2(b"user=someuser@example.com\x01auth=Bearer ya29.vF9dft4qmTc2Nvb3RlckBhdHRhdmlzdGEuY29tCg\x01\x01")
            .unwrap();
        assert_eq!(b.user.as_deref(), Some("someuser@example.com"));
        assert_eq!(b.token, "ya29.vF9dft4qmTc2Nvb3RlckBhdHRhdmlzdGEuY29tCg");
        assert_eq!(parse_xoauth2(b"user=a\x01auth=Basic x\x01\x01"), None);
        assert_eq!(parse_xoauth2(b"auth=Bearer x\x01\x01"), None);
    }

    #[test]
    fn oauthbearer_rfc7628_example() {
        let b = parse_oauthbearer(
            b"n,a=user@example.com,\x01host=server.example.com\x01port=143\x01auth=Bearer vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg==\x01\x01",
        )
        .unwrap();
        assert_eq!(b.user.as_deref(), Some("user@example.com"));
        assert_eq!(b.token, "vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg==");
        let b = parse_oauthbearer(b"n,,\x01auth=Bearer t\x01\x01").unwrap();
        assert_eq!(b.user, None);
    }

    #[test]
    fn gmail_challenge_decodes_to_json() {
        let json = STANDARD.decode(gmail_challenge(false)).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(v["status"], "401");
        let json = STANDARD.decode(gmail_challenge(true)).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(v["status"], "400");
        assert_eq!(v["scope"], "https://mail.google.com/");
    }
}
