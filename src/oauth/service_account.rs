//! Google Workspace app-only sending: a service account with domain-wide delegation signs a JWT
//! (RS256) naming the mailbox to impersonate, and trades it for an access token with the JWT
//! bearer grant (RFC 7523). No consent and no refresh token: a new assertion whenever a token is
//! due. No I/O here: the key file is parsed and the assertion signed from plain values.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ring::rand::SystemRandom;
use ring::signature::{RSA_PKCS1_SHA256, RsaKeyPair};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::domain::{ConnectionSettings, OAuthFlow, ValidationErrors};

/// RFC 7523 §2.1.
pub const JWT_BEARER_GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

/// Google refuses an assertion that lives longer than an hour.
pub const ASSERTION_LIFETIME_SECS: i64 = 3600;

/// Why a key file cannot be used. Never carries the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyFileError {
    #[error(
        "the service account key is not Google's JSON key file ({0}): download it in the Google Cloud \
         console > IAM & Admin > Service accounts > your account > Keys > Add key > JSON"
    )]
    NotJson(String),
    #[error(
        "the key file is of type `{0}`, not `service_account`: use the JSON key of a service account \
         (an OAuth client's file is not a key)"
    )]
    WrongType(String),
    #[error("the service account key file has no `{0}`")]
    Missing(&'static str),
    #[error(
        "the key file's `private_key` is not a PEM PKCS#8 RSA key ({0}): download a new JSON key"
    )]
    BadKey(String),
}

/// A service account's JSON key file, as Google hands it out. `Debug` hides the private key.
#[derive(Clone)]
pub struct ServiceAccountKey {
    kind: String,
    pub client_email: String,
    /// The numeric id the Workspace admin enters for domain-wide delegation.
    pub client_id: String,
    pub private_key_id: String,
    private_key: SecretString,
    /// Where Google wants the assertion sent (and its `aud`).
    pub token_uri: String,
}

#[derive(Deserialize)]
struct RawKey {
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    client_email: String,
    #[serde(default)]
    client_id: String,
    #[serde(default)]
    private_key_id: String,
    #[serde(default)]
    private_key: String,
    #[serde(default)]
    token_uri: String,
}

impl std::fmt::Debug for ServiceAccountKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceAccountKey")
            .field("client_email", &self.client_email)
            .field("client_id", &self.client_id)
            .field("private_key_id", &self.private_key_id)
            .finish_non_exhaustive()
    }
}

/// The claims of one assertion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssertionClaims<'a> {
    /// The mailbox to impersonate (`sub`).
    pub subject: &'a str,
    pub scope: &'a str,
    /// The token endpoint the assertion is sent to (`aud`).
    pub audience: &'a str,
    /// Unix seconds (`iat`); `exp` is an hour later.
    pub issued_at: i64,
}

impl ServiceAccountKey {
    /// Parses and checks a key file: the private key must load, so a bad file is refused when it
    /// is stored rather than at the first message.
    pub fn parse(json: &str) -> Result<Self, KeyFileError> {
        let raw: RawKey = serde_json::from_str(json).map_err(|e| {
            // Only the place: serde's message may quote the value.
            KeyFileError::NotJson(format!("line {} column {}", e.line(), e.column()))
        })?;
        let key = ServiceAccountKey {
            kind: raw.kind,
            client_email: raw.client_email,
            client_id: raw.client_id,
            private_key_id: raw.private_key_id,
            private_key: SecretString::from(raw.private_key),
            token_uri: raw.token_uri,
        };
        if key.kind != "service_account" {
            return Err(KeyFileError::WrongType(if key.kind.is_empty() {
                "(none)".into()
            } else {
                key.kind.clone()
            }));
        }
        for (field, value) in [
            ("client_email", &key.client_email),
            ("client_id", &key.client_id),
        ] {
            if value.trim().is_empty() {
                return Err(KeyFileError::Missing(field));
            }
        }
        if key.private_key.expose_secret().trim().is_empty() {
            return Err(KeyFileError::Missing("private_key"));
        }
        key.key_pair()?;
        Ok(key)
    }

    fn key_pair(&self) -> Result<RsaKeyPair, KeyFileError> {
        let der = pem_pkcs8_der(self.private_key.expose_secret())?;
        RsaKeyPair::from_pkcs8(&der).map_err(|e| KeyFileError::BadKey(e.to_string()))
    }

    /// `header.claims.signature`, RS256-signed with the service account's key (RFC 7523 §3).
    pub fn assertion(&self, claims: &AssertionClaims<'_>) -> Result<SecretString, KeyFileError> {
        let header = serde_json::json!({"alg": "RS256", "typ": "JWT", "kid": self.private_key_id});
        let body = serde_json::json!({
            "iss": self.client_email,
            "sub": claims.subject,
            "scope": claims.scope,
            "aud": claims.audience,
            "iat": claims.issued_at,
            "exp": claims.issued_at + ASSERTION_LIFETIME_SECS,
        });
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(body.to_string())
        );
        let pair = self.key_pair()?;
        let mut signature = vec![0; pair.public().modulus_len()];
        pair.sign(
            &RSA_PKCS1_SHA256,
            &SystemRandom::new(),
            signing_input.as_bytes(),
            &mut signature,
        )
        .map_err(|_| KeyFileError::BadKey("signing failed".into()))?;
        Ok(SecretString::from(format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(signature)
        )))
    }
}

/// A fresh assertion for a service-account connection: its sealed key file (stored as the
/// client secret), impersonating the connection's mailbox, for its scope, addressed to its token
/// endpoint. The error says what the admin must fix.
pub fn assertion_for(
    settings: &ConnectionSettings,
    key_file: Option<&SecretString>,
    now: i64,
) -> Result<SecretString, String> {
    let name = &settings.name;
    let json = key_file.ok_or_else(|| {
        format!(
            "connection `{name}` has no service account key: store it with \
             `postern connection edit {name} --service-account-key FILE`"
        )
    })?;
    let key = ServiceAccountKey::parse(json.expose_secret())
        .map_err(|e| format!("connection `{name}`: {e}"))?;
    let audience = settings
        .token_endpoint()
        .map(|u| u.to_string())
        .unwrap_or_else(|| key.token_uri.clone());
    let scope = settings.scopes.to_string();
    key.assertion(&AssertionClaims {
        subject: settings.user.as_str(),
        scope: &scope,
        audience: &audience,
        issued_at: now,
    })
    .map_err(|e| format!("connection `{name}`: {e}"))
}

/// The API's and the web form's check of a service-account connection's key (its "client
/// secret") before anything is saved: the same refusal the CLI gives, on the field.
pub fn check_key_field(
    flow: OAuthFlow,
    secret: Option<&SecretString>,
) -> Result<(), ValidationErrors> {
    match secret.filter(|s| !s.expose_secret().trim().is_empty()) {
        Some(s) if flow == OAuthFlow::ServiceAccount => ServiceAccountKey::parse(s.expose_secret())
            .map(|_| ())
            .map_err(|e| ValidationErrors::single("client_secret", e.to_string())),
        _ => Ok(()),
    }
}

/// The DER inside `-----BEGIN PRIVATE KEY-----` (Google's keys are PKCS#8).
fn pem_pkcs8_der(pem: &str) -> Result<zeroize::Zeroizing<Vec<u8>>, KeyFileError> {
    const BEGIN: &str = "-----BEGIN PRIVATE KEY-----";
    const END: &str = "-----END PRIVATE KEY-----";
    let start = pem.find(BEGIN).ok_or_else(|| {
        KeyFileError::BadKey(if pem.contains("BEGIN RSA PRIVATE KEY") {
            "a PKCS#1 key; Google's JSON keys are PKCS#8".into()
        } else {
            "no `BEGIN PRIVATE KEY` line".into()
        })
    })? + BEGIN.len();
    let end = pem[start..]
        .find(END)
        .ok_or_else(|| KeyFileError::BadKey("no `END PRIVATE KEY` line".into()))?;
    let body: String = pem[start..start + end]
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    let body = zeroize::Zeroizing::new(body);
    STANDARD
        .decode(body.as_bytes())
        .map(zeroize::Zeroizing::new)
        .map_err(|_| KeyFileError::BadKey("the PEM body is not base64".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_what_is_not_a_service_account_key_and_never_echoes_it() {
        assert!(matches!(
            ServiceAccountKey::parse("{not json"),
            Err(KeyFileError::NotJson(_))
        ));
        let oauth_client = r#"{"installed":{"client_id":"x","client_secret":"GOCSPX-secret"}}"#;
        let err = ServiceAccountKey::parse(oauth_client).unwrap_err();
        assert_eq!(err, KeyFileError::WrongType("(none)".into()));
        assert!(!err.to_string().contains("GOCSPX"));
        let no_email = r#"{"type":"service_account","client_id":"1","private_key":"k"}"#;
        assert_eq!(
            ServiceAccountKey::parse(no_email).unwrap_err(),
            KeyFileError::Missing("client_email")
        );
        let bad_key = r#"{"type":"service_account","client_email":"a@p.iam.gserviceaccount.com",
            "client_id":"1","private_key":"-----BEGIN PRIVATE KEY-----\nc2VjcmV0LWJ5dGVz\n-----END PRIVATE KEY-----\n"}"#;
        let err = ServiceAccountKey::parse(bad_key).unwrap_err();
        assert!(matches!(err, KeyFileError::BadKey(_)), "{err}");
        assert!(!format!("{err} {err:?}").contains("c2VjcmV0"));
        let pkcs1 = r#"{"type":"service_account","client_email":"a@p","client_id":"1",
            "private_key":"-----BEGIN RSA PRIVATE KEY-----\nAA==\n-----END RSA PRIVATE KEY-----"}"#;
        assert!(
            ServiceAccountKey::parse(pkcs1)
                .unwrap_err()
                .to_string()
                .contains("PKCS#1")
        );
    }

    #[test]
    fn web_and_api_fields_are_checked_for_service_accounts_only() {
        let not_a_key = SecretString::from("GOCSPX-plain-client-secret");
        let err = check_key_field(OAuthFlow::ServiceAccount, Some(&not_a_key)).unwrap_err();
        assert_eq!(err.0[0].field, "client_secret");
        assert!(!err.to_string().contains("GOCSPX"), "{err}");
        assert!(check_key_field(OAuthFlow::AuthorizationCode, Some(&not_a_key)).is_ok());
        // Nothing typed keeps the stored key.
        assert!(check_key_field(OAuthFlow::ServiceAccount, None).is_ok());
    }

    #[test]
    fn assertion_carries_the_claims_google_checks() {
        let account = fake_provider::idp::ServiceAccount::generate(
            "sa@p.iam.gserviceaccount.com",
            "1234567890",
            "https://oauth2.googleapis.com/token",
        );
        let key = ServiceAccountKey::parse(&account.key_json).unwrap();
        assert_eq!(key.client_id, "1234567890");
        assert!(!format!("{key:?}").contains("PRIVATE KEY"));
        let jwt = key
            .assertion(&AssertionClaims {
                subject: "ops@example.com",
                scope: "https://mail.google.com/",
                audience: "https://oauth2.googleapis.com/token",
                issued_at: 1_700_000_000,
            })
            .unwrap();
        let parts: Vec<&str> = jwt.expose_secret().split('.').collect();
        assert_eq!(parts.len(), 3);
        let json = |p: &str| -> serde_json::Value {
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(p).unwrap()).unwrap()
        };
        let (header, claims) = (json(parts[0]), json(parts[1]));
        assert_eq!(header["alg"], "RS256");
        assert_eq!(claims["iss"], "sa@p.iam.gserviceaccount.com");
        assert_eq!(claims["sub"], "ops@example.com");
        assert_eq!(claims["scope"], "https://mail.google.com/");
        assert_eq!(claims["aud"], "https://oauth2.googleapis.com/token");
        assert_eq!(claims["iat"], 1_700_000_000);
        assert_eq!(claims["exp"], 1_700_000_000 + 3600);
        // RS256 with a 2048-bit key: a 256-byte signature.
        assert_eq!(URL_SAFE_NO_PAD.decode(parts[2]).unwrap().len(), 256);
    }
}
