//! The authorization request: PKCE (S256), a random `state`, the authorize URL built from the
//! connection, and the checks on what comes back (the redirect's `code`, `state` or `error`).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

use super::error::{ProviderError, TokenError};
use crate::domain::scope::OFFLINE_ACCESS;
use crate::domain::{ConnectionSettings, Provider};

/// Why an interactive authorization did not end with stored tokens.
#[derive(Debug, thiserror::Error)]
pub enum AuthorizeError {
    /// The provider said no (at the authorize redirect, the token endpoint or while polling).
    #[error("{0}")]
    Provider(ProviderError),
    #[error(
        "the sign-in response does not belong to this request (its `state` differs): it came from an \
         older or foreign sign-in; start again"
    )]
    StateMismatch,
    #[error("no sign-in response within {0} seconds; start again (or raise --timeout)")]
    Timeout(u64),
    #[error("cancelled")]
    Cancelled,
    /// What was pasted is neither a redirected URL nor a code.
    #[error("{0}")]
    Input(String),
    /// The loopback listener could not start.
    #[error("{0}")]
    Listener(String),
    /// The connection lacks what the flow needs.
    #[error("{0}")]
    Config(String),
    #[error(
        "the provider issued no refresh token, so Postern could not keep the connection alive: \
         {0}"
    )]
    NoRefreshToken(&'static str),
    /// Network trouble or the store: try again.
    #[error(transparent)]
    Token(#[from] TokenError),
}

impl AuthorizeError {
    /// The provider error, for hints.
    pub fn provider(&self) -> Option<&ProviderError> {
        match self {
            AuthorizeError::Provider(p) => Some(p),
            _ => None,
        }
    }
}

/// RFC 7636 proof key: a random verifier (kept secret) and its S256 challenge (sent).
#[derive(Debug)]
pub struct Pkce {
    verifier: SecretString,
    challenge: String,
}

/// 64 random bytes: an 86-character verifier, inside RFC 7636's 43-128.
const VERIFIER_BYTES: usize = 64;

fn random_b64url(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rngs::OsRng.fill_bytes(&mut buf);
    URL_SAFE_NO_PAD.encode(buf)
}

impl Pkce {
    pub fn generate() -> Self {
        Self::from_verifier(SecretString::from(random_b64url(VERIFIER_BYTES)))
    }

    pub fn from_verifier(verifier: SecretString) -> Self {
        let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.expose_secret().as_bytes()));
        Self {
            verifier,
            challenge,
        }
    }

    pub fn verifier(&self) -> &SecretString {
        &self.verifier
    }

    pub fn challenge(&self) -> &str {
        &self.challenge
    }
}

/// What the provider's redirect carried (or what was pasted back).
#[derive(Debug, Default)]
pub struct Callback {
    pub code: Option<SecretString>,
    pub state: Option<String>,
    pub error: Option<String>,
    pub error_description: Option<String>,
}

impl Callback {
    /// Reads `code`, `state`, `error` and `error_description` from a query string.
    pub fn from_query(query: &str) -> Self {
        let mut cb = Callback::default();
        for (k, v) in url::form_urlencoded::parse(query.trim_start_matches('?').as_bytes()) {
            let v = v.into_owned();
            match k.as_ref() {
                "code" if cb.code.is_none() => cb.code = Some(SecretString::from(v)),
                "state" if cb.state.is_none() => cb.state = Some(v),
                "error" if cb.error.is_none() => cb.error = Some(v),
                "error_description" if cb.error_description.is_none() => {
                    cb.error_description = Some(v)
                }
                _ => {}
            }
        }
        cb
    }

    /// Whether this looks like an OAuth redirect at all.
    pub fn is_empty(&self) -> bool {
        self.code.is_none() && self.error.is_none()
    }
}

/// One authorization attempt: the URL to open, and what is needed to redeem its code.
#[derive(Debug)]
pub struct AuthorizationRequest {
    url: url::Url,
    state: String,
    pkce: Pkce,
    redirect_uri: String,
}

impl AuthorizationRequest {
    /// Builds the authorize URL for `settings`, redirecting to `redirect_uri` (the connection's
    /// own, or the loopback listener's with the port it picked).
    pub fn new(settings: &ConnectionSettings, redirect_uri: &str) -> Result<Self, AuthorizeError> {
        Self::build(settings, redirect_uri, random_b64url(32), Pkce::generate())
    }

    /// The request started earlier (possibly by another instance) with this `state` and PKCE
    /// verifier, kept in the store until the provider's redirect comes back.
    pub fn resume(
        settings: &ConnectionSettings,
        redirect_uri: &str,
        state: String,
        verifier: SecretString,
    ) -> Result<Self, AuthorizeError> {
        Self::build(settings, redirect_uri, state, Pkce::from_verifier(verifier))
    }

    fn build(
        settings: &ConnectionSettings,
        redirect_uri: &str,
        state: String,
        pkce: Pkce,
    ) -> Result<Self, AuthorizeError> {
        let mut url = settings.authorize_endpoint().ok_or_else(|| {
            AuthorizeError::Config(format!(
                "connection `{}` has no authorize endpoint: set one with --authorize-url",
                settings.name
            ))
        })?;
        let mut scopes: Vec<&str> = settings.scopes.iter().collect();
        // Without offline_access Microsoft issues no refresh token; the domain adds it, but a
        // record edited by hand might lack it.
        if settings.provider.is_microsoft() && !scopes.contains(&OFFLINE_ACCESS) {
            scopes.push(OFFLINE_ACCESS);
        }
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("client_id", settings.client_id.as_str())
                .append_pair("response_type", "code")
                .append_pair("redirect_uri", redirect_uri)
                .append_pair("scope", &scopes.join(" "))
                .append_pair("state", &state)
                .append_pair("code_challenge", pkce.challenge())
                .append_pair("code_challenge_method", "S256")
                .append_pair("login_hint", settings.user.as_str());
            match settings.provider {
                Provider::Microsoft
                | Provider::Outlook
                | Provider::MicrosoftUsGov
                | Provider::MicrosoftChina => {
                    q.append_pair("prompt", "select_account")
                        .append_pair("response_mode", "query");
                }
                // Google issues a refresh token only with offline access, and again only on consent.
                Provider::Google => {
                    q.append_pair("access_type", "offline")
                        .append_pair("prompt", "consent");
                }
                Provider::Custom => {
                    q.append_pair("response_mode", "query");
                }
            }
        }
        Ok(Self {
            url,
            state,
            pkce,
            redirect_uri: redirect_uri.to_string(),
        })
    }

    pub fn url(&self) -> &url::Url {
        &self.url
    }

    pub fn state(&self) -> &str {
        &self.state
    }

    pub fn redirect_uri(&self) -> &str {
        &self.redirect_uri
    }

    pub fn verifier(&self) -> &SecretString {
        self.pkce.verifier()
    }

    /// Checks `state` and returns the code. `state` may be absent only when the admin pasted a
    /// bare code (`allow_missing_state`): then there is no response to check.
    pub fn code_from(
        &self,
        cb: Callback,
        allow_missing_state: bool,
    ) -> Result<SecretString, AuthorizeError> {
        match cb.state.as_deref() {
            Some(s) if s != self.state => return Err(AuthorizeError::StateMismatch),
            None if !allow_missing_state => return Err(AuthorizeError::StateMismatch),
            _ => {}
        }
        if let Some(error) = cb.error {
            return Err(AuthorizeError::Provider(ProviderError::new(
                0,
                &error,
                cb.error_description,
                vec![],
            )));
        }
        match cb.code {
            Some(code) if !code.expose_secret().is_empty() => Ok(code),
            _ => Err(AuthorizeError::Input(
                "the response carries no `code`".into(),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ConnectionInput;

    fn settings(provider: &str) -> ConnectionSettings {
        let input = ConnectionInput {
            name: Some("contoso".into()),
            provider: Some(provider.into()),
            user: Some("ops@contoso.com".into()),
            tenant: Some("contoso.onmicrosoft.com".into()),
            client_id: Some("1b2c3d4e-0000-1111-2222-333344445555".into()),
            ..Default::default()
        };
        input.validate().unwrap().0
    }

    fn params(url: &url::Url) -> std::collections::HashMap<String, String> {
        url.query_pairs().into_owned().collect()
    }

    #[test]
    fn rfc7636_appendix_b() {
        let p = Pkce::from_verifier(SecretString::from(
            "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk",
        ));
        assert_eq!(p.challenge(), "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM");
    }

    #[test]
    fn verifier_length_and_alphabet() {
        let v = Pkce::generate().verifier().expose_secret().to_string();
        assert!((43..=128).contains(&v.len()), "{}", v.len());
        assert!(
            v.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        );
        assert_ne!(v, Pkce::generate().verifier().expose_secret());
    }

    #[test]
    fn microsoft_url() {
        let s = settings("microsoft");
        let r = AuthorizationRequest::new(&s, "http://localhost:53123").unwrap();
        assert!(r.url().as_str().starts_with(
            "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/authorize?"
        ));
        let p = params(r.url());
        assert_eq!(p["client_id"], "1b2c3d4e-0000-1111-2222-333344445555");
        assert_eq!(p["response_type"], "code");
        assert_eq!(p["redirect_uri"], "http://localhost:53123");
        assert_eq!(
            p["scope"],
            "https://outlook.office.com/SMTP.Send offline_access"
        );
        assert_eq!(p["state"], r.state());
        assert_eq!(p["code_challenge"], r.pkce.challenge());
        assert_eq!(p["code_challenge_method"], "S256");
        assert_eq!(p["login_hint"], "ops@contoso.com");
        assert_eq!(p["prompt"], "select_account");
        assert_eq!(p["response_mode"], "query");
        assert!(!r.url().as_str().contains(r.verifier().expose_secret()));
    }

    #[test]
    fn google_url() {
        let s = settings("google");
        let p = params(
            AuthorizationRequest::new(&s, "http://127.0.0.1:8080/cb")
                .unwrap()
                .url(),
        );
        assert_eq!(p["access_type"], "offline");
        assert_eq!(p["prompt"], "consent");
        assert_eq!(p["scope"], "https://mail.google.com/");
    }

    #[test]
    fn callback_checks() {
        let s = settings("microsoft");
        let r = AuthorizationRequest::new(&s, "http://localhost").unwrap();
        let ok = Callback::from_query(&format!("code=abc&state={}&session_state=x", r.state()));
        assert_eq!(r.code_from(ok, false).unwrap().expose_secret(), "abc");
        let wrong = Callback::from_query("code=abc&state=other");
        assert!(matches!(
            r.code_from(wrong, true),
            Err(AuthorizeError::StateMismatch)
        ));
        let missing = Callback::from_query("code=abc");
        assert!(matches!(
            r.code_from(missing, false),
            Err(AuthorizeError::StateMismatch)
        ));
        assert!(r.code_from(Callback::from_query("code=abc"), true).is_ok());
        let denied = Callback::from_query(&format!(
            "error=access_denied&error_description=AADSTS65004%3A+User+declined&state={}",
            r.state()
        ));
        let e = r.code_from(denied, false).unwrap_err();
        assert_eq!(e.provider().unwrap().aadsts(), Some(65004));
    }
}
