//! The token endpoint: one form POST per grant, the answer parsed, failures classified
//! (transient: retry later, tokens kept; provider error: usually an admin must act).

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::error::{ProviderError, redact};
use super::http::{self, HttpClientError};
use crate::domain::{ConnectionSettings, Provider};

pub const DEVICE_CODE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";

/// What Postern offers the token endpoint in exchange for tokens.
#[derive(Debug, Clone, Copy)]
pub enum Grant<'a> {
    AuthorizationCode {
        code: &'a SecretString,
        redirect_uri: &'a str,
        verifier: &'a SecretString,
    },
    RefreshToken(&'a SecretString),
    ClientCredentials,
    DeviceCode(&'a SecretString),
    /// RFC 7523: a signed JWT (a Google service account's) in place of any client secret.
    JwtBearer(&'a SecretString),
}

impl Grant<'_> {
    pub fn grant_type(&self) -> &'static str {
        match self {
            Grant::AuthorizationCode { .. } => "authorization_code",
            Grant::RefreshToken(_) => "refresh_token",
            Grant::ClientCredentials => "client_credentials",
            Grant::DeviceCode(_) => DEVICE_CODE_GRANT,
            Grant::JwtBearer(_) => super::service_account::JWT_BEARER_GRANT,
        }
    }

    /// The secrets this grant sends, to redact from anything the provider echoes back.
    fn secrets(&self) -> Vec<&SecretString> {
        match self {
            Grant::AuthorizationCode { code, verifier, .. } => vec![code, verifier],
            Grant::RefreshToken(t) | Grant::DeviceCode(t) | Grant::JwtBearer(t) => vec![t],
            Grant::ClientCredentials => vec![],
        }
    }
}

/// A successful token answer. `Debug` shows no token (they are `SecretString`).
#[derive(Debug, Clone)]
pub struct TokenResponse {
    pub access_token: SecretString,
    /// A new refresh token (Microsoft rotates on every use; Google sends none on refresh).
    pub refresh_token: Option<SecretString>,
    /// Seconds the access token lives.
    pub expires_in: u64,
    /// The scopes granted, when the provider says.
    pub scope: Option<String>,
}

/// Why the token endpoint gave no tokens.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ExchangeError {
    /// Connect error, timeout, HTTP 5xx/429, an answer that is not OAuth: try again later.
    #[error("{message}")]
    Transient {
        message: String,
        retry_after: Option<Duration>,
    },
    /// The provider answered with an OAuth error.
    #[error("{0}")]
    Provider(ProviderError),
    /// The connection lacks what the request needs (no token endpoint, say).
    #[error("{0}")]
    Config(String),
}

impl ExchangeError {
    pub fn is_transient(&self) -> bool {
        match self {
            ExchangeError::Transient { .. } => true,
            ExchangeError::Provider(p) => p.is_transient(),
            ExchangeError::Config(_) => false,
        }
    }

    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ExchangeError::Transient { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// Talks to token and device endpoints. Cheap to clone.
#[derive(Debug, Clone)]
pub struct TokenClient {
    http: reqwest::Client,
}

#[derive(Deserialize)]
struct RawToken {
    access_token: String,
    refresh_token: Option<String>,
    #[serde(default, deserialize_with = "number_or_string")]
    expires_in: Option<u64>,
    scope: Option<String>,
}

#[derive(Deserialize)]
struct RawError {
    error: String,
    error_description: Option<String>,
    #[serde(default)]
    error_codes: Vec<u32>,
}

/// `expires_in` arrives as `3599` or `"3599"` depending on the provider (both seen in the wild).
pub(crate) fn number_or_string<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<u64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum NumOrStr {
        Num(u64),
        Float(f64),
        Str(String),
    }
    Ok(match Option::<NumOrStr>::deserialize(d)? {
        None => None,
        Some(NumOrStr::Num(n)) => Some(n),
        Some(NumOrStr::Float(f)) if f.is_finite() && f >= 0.0 => Some(f as u64),
        Some(NumOrStr::Float(_)) => None,
        Some(NumOrStr::Str(s)) => Some(s.trim().parse().map_err(serde::de::Error::custom)?),
    })
}

/// `Retry-After` in seconds or as an HTTP date.
pub(crate) fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let secs = (at.timestamp() - chrono::Utc::now().timestamp()).max(0);
    Some(Duration::from_secs(secs as u64))
}

/// Google's token endpoint wants no `scope` on code and refresh requests; everyone else does
/// (Microsoft's v2 endpoint requires it on refresh).
fn sends_scope(settings: &ConnectionSettings, grant: &Grant<'_>) -> bool {
    match grant {
        Grant::ClientCredentials => true,
        Grant::JwtBearer(_) => false,
        _ => settings.provider != Provider::Google,
    }
}

/// Default lifetime when the provider leaves `expires_in` out (RFC 6749 only recommends it).
const DEFAULT_EXPIRES_IN: u64 = 3600;

impl TokenClient {
    pub fn new(timeout: Duration) -> Result<Self, HttpClientError> {
        Ok(Self {
            http: http::client(timeout)?,
        })
    }

    /// POSTs `grant` to the connection's token endpoint.
    pub async fn request(
        &self,
        settings: &ConnectionSettings,
        client_secret: Option<&SecretString>,
        grant: Grant<'_>,
    ) -> Result<TokenResponse, ExchangeError> {
        self.request_scoped(settings, client_secret, grant, None)
            .await
    }

    /// Like [`TokenClient::request`], asking for `scope` instead of the connection's own when
    /// given (a Microsoft refresh token also buys a Graph token for the Graph fallback).
    pub async fn request_scoped(
        &self,
        settings: &ConnectionSettings,
        client_secret: Option<&SecretString>,
        grant: Grant<'_>,
        scope: Option<&str>,
    ) -> Result<TokenResponse, ExchangeError> {
        let url = settings.token_endpoint().ok_or_else(|| {
            ExchangeError::Config(format!(
                "connection `{}` has no token endpoint: set one with --token-url",
                settings.name
            ))
        })?;
        let mut form: Vec<(&str, &str)> = vec![("grant_type", grant.grant_type())];
        // The assertion names the client and the scope itself (RFC 7523 §2.1).
        let client_secret = client_secret.filter(|_| !matches!(grant, Grant::JwtBearer(_)));
        if !matches!(grant, Grant::JwtBearer(_)) {
            form.push(("client_id", settings.client_id.as_str()));
        }
        let scope = scope.map_or_else(|| settings.scopes.to_string(), str::to_string);
        if sends_scope(settings, &grant) {
            form.push(("scope", &scope));
        }
        match &grant {
            Grant::AuthorizationCode {
                code,
                redirect_uri,
                verifier,
            } => {
                form.push(("code", code.expose_secret()));
                form.push(("redirect_uri", redirect_uri));
                form.push(("code_verifier", verifier.expose_secret()));
            }
            Grant::RefreshToken(t) => form.push(("refresh_token", t.expose_secret())),
            Grant::DeviceCode(c) => form.push(("device_code", c.expose_secret())),
            Grant::JwtBearer(a) => form.push(("assertion", a.expose_secret())),
            Grant::ClientCredentials => {}
        }
        if let Some(s) = client_secret {
            form.push(("client_secret", s.expose_secret()));
        }
        tracing::debug!(connection = %settings.name, grant = grant.grant_type(), endpoint = %url, "token request");
        let mut secrets = grant.secrets();
        secrets.extend(client_secret);
        let (status, headers, body) = self.post_form(url.as_str(), &form, &secrets).await?;
        tracing::debug!(connection = %settings.name, grant = grant.grant_type(), status, "token response");
        if (200..300).contains(&status) {
            return parse_success(&body);
        }
        Err(classify(status, &headers, &body, &secrets))
    }

    /// POSTs a form; returns status, headers and body. Network failures are transient.
    pub(crate) async fn post_form(
        &self,
        url: &str,
        form: &[(&str, &str)],
        secrets: &[&SecretString],
    ) -> Result<(u16, reqwest::header::HeaderMap, Vec<u8>), ExchangeError> {
        let transient = |what: &str, e: reqwest::Error| ExchangeError::Transient {
            // reqwest errors name the URL, never the form body; redact anyway, cheaply.
            message: redact(&format!("{what} {url}: {}", error_chain(&e)), secrets),
            retry_after: None,
        };
        let resp = self
            .http
            .post(url)
            .header(reqwest::header::ACCEPT, "application/json")
            .form(form)
            .send()
            .await
            .map_err(|e| transient("cannot reach", e))?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp
            .bytes()
            .await
            .map_err(|e| transient("reading the answer of", e))?;
        Ok((status, headers, body.to_vec()))
    }
}

/// `e` with its sources, which carry the useful part ("connection refused", "timed out").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        source = cause.source();
    }
    s
}

fn parse_success(body: &[u8]) -> Result<TokenResponse, ExchangeError> {
    let raw: RawToken = serde_json::from_slice(body).map_err(|e| ExchangeError::Transient {
        // Never echo the body: it may hold tokens.
        message: format!(
            "the token endpoint's answer is not a token response ({})",
            e.classify_name()
        ),
        retry_after: None,
    })?;
    if raw.access_token.is_empty() {
        return Err(ExchangeError::Transient {
            message: "the token endpoint answered without an access token".into(),
            retry_after: None,
        });
    }
    let expires_in = raw.expires_in.unwrap_or(DEFAULT_EXPIRES_IN);
    Ok(TokenResponse {
        access_token: SecretString::from(raw.access_token),
        refresh_token: raw
            .refresh_token
            .filter(|r| !r.is_empty())
            .map(SecretString::from),
        expires_in,
        scope: raw.scope,
    })
}

trait ClassifyName {
    fn classify_name(&self) -> &'static str;
}

impl ClassifyName for serde_json::Error {
    fn classify_name(&self) -> &'static str {
        match self.classify() {
            serde_json::error::Category::Io => "I/O",
            serde_json::error::Category::Syntax => "not JSON",
            serde_json::error::Category::Data => "unexpected fields",
            serde_json::error::Category::Eof => "truncated",
        }
    }
}

/// An error answer: an OAuth error when the body says so, otherwise transient (a proxy page, a
/// 404 from a wrong URL) so that an intermediary's hiccup never marks a connection broken.
pub(crate) fn classify(
    status: u16,
    headers: &reqwest::header::HeaderMap,
    body: &[u8],
    secrets: &[&SecretString],
) -> ExchangeError {
    let retry_after = headers
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_retry_after);
    match serde_json::from_slice::<RawError>(body) {
        Ok(raw) => {
            let err =
                ProviderError::new(status, &raw.error, raw.error_description, raw.error_codes)
                    .redacted(secrets);
            if err.is_transient() {
                ExchangeError::Transient {
                    message: err.to_string(),
                    retry_after,
                }
            } else {
                ExchangeError::Provider(err)
            }
        }
        Err(_) => {
            let hint = match status {
                404 | 405 => " (check the token URL)",
                _ => "",
            };
            ExchangeError::Transient {
                message: format!(
                    "the token endpoint answered HTTP {status} without an OAuth error{hint}"
                ),
                retry_after,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{HeaderMap, HeaderValue, RETRY_AFTER};

    #[test]
    fn expires_in_as_number_or_string() {
        for body in [
            r#"{"access_token":"a","expires_in":3599}"#,
            r#"{"access_token":"a","expires_in":"3599"}"#,
            r#"{"access_token":"a","expires_in":3599.0}"#,
        ] {
            assert_eq!(
                parse_success(body.as_bytes()).unwrap().expires_in,
                3599,
                "{body}"
            );
        }
        let r = parse_success(br#"{"access_token":"a","refresh_token":"r","scope":"s"}"#).unwrap();
        assert_eq!(r.expires_in, DEFAULT_EXPIRES_IN);
        assert!(r.refresh_token.is_some());
        assert!(parse_success(br#"{"access_token":"a","expires_in":"soon"}"#).is_err());
        assert!(parse_success(b"<html>").unwrap_err().is_transient());
    }

    #[test]
    fn classification_table() {
        let none = HeaderMap::new();
        let oauth = |status: u16, error: &str, desc: &str| {
            let body = serde_json::json!({"error": error, "error_description": desc}).to_string();
            classify(status, &none, body.as_bytes(), &[])
        };
        for (status, error, desc) in [
            (400, "invalid_grant", "AADSTS70000: bad grant"),
            (
                401,
                "invalid_client",
                "AADSTS7000215: Invalid client secret",
            ),
            (400, "unauthorized_client", "AADSTS700016: app not found"),
            (
                400,
                "invalid_grant",
                "AADSTS65001: The user or administrator has not consented",
            ),
            (400, "interaction_required", "AADSTS50076: MFA required"),
        ] {
            let e = oauth(status, error, desc);
            assert!(!e.is_transient(), "{error} {desc}");
            assert!(matches!(e, ExchangeError::Provider(_)));
        }
        assert!(oauth(503, "temporarily_unavailable", "busy").is_transient());
        assert!(oauth(500, "server_error", "oops").is_transient());
        assert!(classify(502, &none, b"Bad Gateway", &[]).is_transient());
        assert!(
            classify(404, &none, b"<html>", &[])
                .to_string()
                .contains("token URL")
        );
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, HeaderValue::from_static("7"));
        let e = classify(429, &h, b"Too Many Requests", &[]);
        assert!(e.is_transient());
        assert_eq!(e.retry_after(), Some(Duration::from_secs(7)));
    }

    #[test]
    fn retry_after_forms() {
        assert_eq!(parse_retry_after("120"), Some(Duration::from_secs(120)));
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("later"), None);
    }

    #[test]
    fn echoed_secrets_are_redacted() {
        let rt = SecretString::from("0.AXfake.refresh-token-value");
        let body = serde_json::json!({
            "error": "invalid_grant",
            "error_description": "refresh token 0.AXfake.refresh-token-value is not valid"
        })
        .to_string();
        let e = classify(400, &HeaderMap::new(), body.as_bytes(), &[&rt]);
        assert!(!e.to_string().contains("refresh-token-value"), "{e}");
    }
}
