//! Server side of SASL PLAIN (RFC 4616) and LOGIN: base64 lines in, a user name and password out.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use secrecy::{ExposeSecret, SecretString};
use zeroize::Zeroize;

/// Longest relay user name accepted; longer ones are answered as bad credentials.
const MAX_USERNAME: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SaslError {
    /// `501 5.5.2`: the line is not base64.
    Base64,
    /// `501 5.5.2`: PLAIN without its two NUL separators.
    Malformed,
    /// Decoded fine but cannot be valid credentials (empty, control characters, another
    /// authorization identity): answered as a failed login.
    Unacceptable,
}

#[derive(Debug)]
pub(crate) struct Credentials {
    pub username: String,
    pub password: SecretString,
}

/// Decodes one base64 SASL line; the decoded bytes are wiped once converted.
fn decode(line: &SecretString) -> Result<Vec<u8>, SaslError> {
    let text = line.expose_secret().trim();
    // RFC 4954: a lone `=` is an empty response.
    if text == "=" {
        return Ok(Vec::new());
    }
    STANDARD.decode(text).map_err(|_| SaslError::Base64)
}

/// PLAIN: `authzid NUL authcid NUL passwd`; an authzid other than the authcid is refused
/// because relay users cannot act for one another.
pub(crate) fn plain(line: &SecretString) -> Result<Credentials, SaslError> {
    let mut raw = decode(line)?;
    let result = split_plain(&raw);
    raw.zeroize();
    result
}

fn split_plain(raw: &[u8]) -> Result<Credentials, SaslError> {
    let mut parts = raw.split(|&b| b == 0);
    let (Some(authzid), Some(authcid), Some(password), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(SaslError::Malformed);
    };
    if !authzid.is_empty() && authzid != authcid {
        return Err(SaslError::Unacceptable);
    }
    Ok(Credentials {
        username: username(authcid)?,
        password: password_of(password)?,
    })
}

/// LOGIN, first step: the user name.
pub(crate) fn login_username(line: &SecretString) -> Result<String, SaslError> {
    let mut raw = decode(line)?;
    let result = username(&raw);
    raw.zeroize();
    result
}

/// LOGIN, second step: the password.
pub(crate) fn login_password(line: &SecretString) -> Result<SecretString, SaslError> {
    let mut raw = decode(line)?;
    let result = password_of(&raw);
    raw.zeroize();
    result
}

fn username(raw: &[u8]) -> Result<String, SaslError> {
    let name = std::str::from_utf8(raw).map_err(|_| SaslError::Unacceptable)?;
    if name.is_empty() || name.len() > MAX_USERNAME || name.chars().any(char::is_control) {
        return Err(SaslError::Unacceptable);
    }
    Ok(name.to_string())
}

fn password_of(raw: &[u8]) -> Result<SecretString, SaslError> {
    let password = std::str::from_utf8(raw).map_err(|_| SaslError::Unacceptable)?;
    if password.is_empty() {
        return Err(SaslError::Unacceptable);
    }
    Ok(SecretString::from(password.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(s: &str) -> SecretString {
        SecretString::from(s.to_string())
    }

    fn b64(raw: &[u8]) -> SecretString {
        line(&STANDARD.encode(raw))
    }

    #[test]
    fn plain_known_answers() {
        // RFC 4616 §4 example: "\0tim\0tanstaaftanstaaf".
        let c = plain(&line("AHRpbQB0YW5zdGFhZnRhbnN0YWFm")).unwrap();
        assert_eq!(c.username, "tim");
        assert_eq!(c.password.expose_secret(), "tanstaaftanstaaf");
        let c = plain(&b64(b"app\0app\0pw")).unwrap();
        assert_eq!(c.username, "app");
    }

    #[test]
    fn plain_refusals() {
        assert_eq!(plain(&line("%%%")).unwrap_err(), SaslError::Base64);
        assert_eq!(plain(&line("=")).unwrap_err(), SaslError::Malformed);
        assert_eq!(plain(&b64(b"user\0pw")).unwrap_err(), SaslError::Malformed);
        assert_eq!(plain(&b64(b"\0a\0b\0c")).unwrap_err(), SaslError::Malformed);
        assert_eq!(
            plain(&b64(b"admin\0app\0pw")).unwrap_err(),
            SaslError::Unacceptable
        );
        assert_eq!(plain(&b64(b"\0\0pw")).unwrap_err(), SaslError::Unacceptable);
        assert_eq!(
            plain(&b64(b"\0app\0")).unwrap_err(),
            SaslError::Unacceptable
        );
        assert_eq!(
            plain(&b64(b"\0a\r\nb\0pw")).unwrap_err(),
            SaslError::Unacceptable
        );
    }

    #[test]
    fn login_steps() {
        assert_eq!(login_username(&line("dXNlcg==")).unwrap(), "user");
        assert_eq!(
            login_password(&line("cGFzcw==")).unwrap().expose_secret(),
            "pass"
        );
        assert_eq!(
            login_username(&line("=")).unwrap_err(),
            SaslError::Unacceptable
        );
        assert_eq!(
            login_password(&line("not base64!")).unwrap_err(),
            SaslError::Base64
        );
    }
}
