//! The device authorization grant (RFC 8628): show a code and a URL, then poll the token
//! endpoint no faster than `interval` until the user has signed in elsewhere.

use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;

use super::authorize::AuthorizeError;
use super::error::ProviderError;
use super::exchange::{
    ExchangeError, Grant, TokenClient, TokenResponse, classify, number_or_string,
};
use crate::domain::{ConnectionSettings, has_gmail_scope};

/// What the device endpoint answered: the code for the user and the secret one for polling.
#[derive(Debug)]
pub struct DeviceAuthorization {
    device_code: SecretString,
    pub user_code: String,
    pub verification_uri: String,
    pub verification_uri_complete: Option<String>,
    /// Seconds until the codes expire.
    pub expires_in: u64,
    /// Seconds between polls, as the provider asked (5 when it did not say).
    pub interval: u64,
    /// The provider's own instructions, when it sends some (Microsoft does).
    pub message: Option<String>,
}

#[derive(Deserialize)]
struct RawDevice {
    device_code: String,
    user_code: String,
    // Google says `verification_url`.
    #[serde(alias = "verification_url")]
    verification_uri: String,
    verification_uri_complete: Option<String>,
    #[serde(default, deserialize_with = "number_or_string")]
    expires_in: Option<u64>,
    #[serde(default, deserialize_with = "number_or_string")]
    interval: Option<u64>,
    message: Option<String>,
}

/// How polling paces itself. The defaults follow RFC 8628; tests shorten them.
#[derive(Debug, Clone)]
pub struct DevicePolling {
    /// Added to the interval on each `slow_down` (RFC 8628 §3.5: 5 seconds).
    pub slow_down_step: Duration,
    /// Never poll faster than this, whatever the provider says.
    pub min_interval: Duration,
}

impl Default for DevicePolling {
    fn default() -> Self {
        Self {
            slow_down_step: Duration::from_secs(5),
            min_interval: Duration::from_secs(1),
        }
    }
}

/// Progress while polling, for a spinner or a log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PollEvent {
    /// `authorization_pending`: the user has not finished yet.
    Pending,
    /// `slow_down`: polling continues at the new interval.
    SlowDown { interval: Duration },
    /// The endpoint could not be reached; polling continues.
    Transient(String),
}

/// RFC 8628 §3.2: when the provider names no interval, 5 seconds.
const DEFAULT_INTERVAL: u64 = 5;
/// RFC 8628 leaves `expires_in` required; guard against a provider that omits it.
const DEFAULT_EXPIRES_IN: u64 = 900;

/// Refuses, before anything goes on the wire, a device flow Google would refuse: its device
/// endpoint answers `invalid_scope` for every Gmail scope, after the admin already went looking for
/// a second device.
pub fn check_device_allowed(settings: &ConnectionSettings) -> Result<(), AuthorizeError> {
    match has_gmail_scope(&settings.scopes) {
        Some(scope) => Err(AuthorizeError::Config(format!(
            "connection `{}` asks for the Gmail scope `{scope}`, and Google's device flow does not allow \
             the Gmail scopes (its device endpoint answers `invalid_scope`). Authorize in a browser \
             instead: `postern connection authorize {}` (a loopback redirect on this machine), or \
             `postern connection authorize {} --paste` on a server without a browser",
            settings.name, settings.name, settings.name
        ))),
        None => Ok(()),
    }
}

/// Asks the device endpoint for a user code.
pub async fn start(
    client: &TokenClient,
    settings: &ConnectionSettings,
) -> Result<DeviceAuthorization, AuthorizeError> {
    check_device_allowed(settings)?;
    let url = settings.device_endpoint().ok_or_else(|| {
        AuthorizeError::Config(format!(
            "connection `{}` has no device-code endpoint: set one with --device-url, or authorize without --device",
            settings.name
        ))
    })?;
    let scope = settings.scopes.to_string();
    let form = [
        ("client_id", settings.client_id.as_str()),
        ("scope", scope.as_str()),
    ];
    let (status, headers, body) = client
        .post_form(url.as_str(), &form, &[])
        .await
        .map_err(exchange_failed)?;
    if !(200..300).contains(&status) {
        return Err(exchange_failed(classify(status, &headers, &body, &[])));
    }
    let raw: RawDevice = serde_json::from_slice(&body).map_err(|e| {
        AuthorizeError::Config(format!(
            "the device-code endpoint {url} answered something unexpected: {e}"
        ))
    })?;
    Ok(DeviceAuthorization {
        device_code: SecretString::from(raw.device_code),
        user_code: raw.user_code,
        verification_uri: raw.verification_uri,
        verification_uri_complete: raw.verification_uri_complete,
        expires_in: raw.expires_in.unwrap_or(DEFAULT_EXPIRES_IN),
        interval: raw.interval.unwrap_or(DEFAULT_INTERVAL),
        message: raw.message,
    })
}

fn exchange_failed(e: ExchangeError) -> AuthorizeError {
    match e {
        ExchangeError::Provider(p) => AuthorizeError::Provider(p),
        ExchangeError::Config(m) => AuthorizeError::Config(m),
        ExchangeError::Transient {
            message,
            retry_after,
        } => AuthorizeError::Token(super::TokenError::Transient {
            message,
            retry_after,
        }),
    }
}

/// Polls until the user finishes (tokens), declines, or the code expires.
pub async fn poll(
    client: &TokenClient,
    settings: &ConnectionSettings,
    client_secret: Option<&SecretString>,
    auth: &DeviceAuthorization,
    polling: &DevicePolling,
    mut on_event: impl FnMut(PollEvent),
) -> Result<TokenResponse, AuthorizeError> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(auth.expires_in);
    let mut interval = Duration::from_secs(auth.interval).max(polling.min_interval);
    loop {
        if tokio::time::Instant::now() + interval > deadline {
            return Err(AuthorizeError::Provider(ProviderError::new(
                0,
                "expired_token",
                Some("the device code expired before the sign-in was completed".into()),
                vec![],
            )));
        }
        tokio::time::sleep(interval).await;
        match client
            .request(
                settings,
                client_secret,
                Grant::DeviceCode(&auth.device_code),
            )
            .await
        {
            Ok(tokens) => return Ok(tokens),
            Err(ExchangeError::Provider(p)) => match p.error.as_str() {
                "authorization_pending" => on_event(PollEvent::Pending),
                "slow_down" => {
                    interval += polling.slow_down_step;
                    on_event(PollEvent::SlowDown { interval });
                }
                // expired_token, access_denied, authorization_declined, bad_verification_code...
                _ => return Err(AuthorizeError::Provider(p)),
            },
            Err(ExchangeError::Transient {
                message,
                retry_after,
            }) => {
                on_event(PollEvent::Transient(message));
                if let Some(wait) = retry_after.filter(|w| *w > interval) {
                    tokio::time::sleep((wait - interval).min(Duration::from_secs(60))).await;
                }
            }
            Err(ExchangeError::Config(m)) => return Err(AuthorizeError::Config(m)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn microsoft_and_google_answers() {
        let ms: RawDevice = serde_json::from_str(
            r#"{"device_code":"d","user_code":"ABC","verification_uri":"https://microsoft.com/devicelogin",
                "expires_in":900,"interval":5,"message":"To sign in..."}"#,
        )
        .unwrap();
        assert_eq!(ms.interval, Some(5));
        let g: RawDevice = serde_json::from_str(
            r#"{"device_code":"d","user_code":"ABC","verification_url":"https://www.google.com/device",
                "expires_in":"1800"}"#,
        )
        .unwrap();
        assert_eq!(g.verification_uri, "https://www.google.com/device");
        assert_eq!(g.expires_in, Some(1800));
        assert_eq!(g.interval, None);
    }
}
