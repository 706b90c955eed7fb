//! The web consent ("Connect"): start an authorization request for a connection, keep it
//! server-side until the provider sends the browser back, then redeem the code once.
//!
//! Pending requests (state, PKCE verifier, redirect URI) live in memory: they last minutes, a
//! restart only means pressing Connect again, and the verifier never touches the disk. Each is
//! bound to its connection and, when an admin started it, to that browser through a random
//! binding cookie (`SameSite=Lax`, so it comes back on the provider's cross-site redirect, where
//! the `Strict` session cookie does not).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use secrecy::SecretString;

use super::state::CONSENT_LIFETIME;
use crate::domain::{Connection, OAuthFlow};
use crate::oauth::diagnose::{HintContext, hint};
use crate::oauth::{AuthorizationRequest, AuthorizeError, Authorized, Callback, TokenManager};
use crate::store::{hash_token, new_token};

/// The binding cookie's name; its path is the callback's.
pub const BINDING_COOKIE: &str = "postern_oauth";
/// Most consents in progress at once (old ones are dropped first).
const MAX_PENDING: usize = 1000;

#[derive(Debug)]
struct Pending {
    request: AuthorizationRequest,
    connection_id: i64,
    binding_hash: Option<Vec<u8>>,
    started: Instant,
}

/// Consents in progress, by `state`.
#[derive(Debug, Default)]
pub struct PendingConsents {
    map: Mutex<HashMap<String, Pending>>,
}

/// A consent just started: where to send the browser, and (for the web UI) the binding cookie.
#[derive(Debug)]
pub struct Started {
    pub authorize_url: url::Url,
    pub redirect_uri: String,
    pub binding: Option<String>,
}

/// Why a callback did not end with stored tokens, in words for the admin.
#[derive(Debug)]
pub struct ConsentFailure {
    pub connection: Option<String>,
    pub message: String,
    pub hint: Option<String>,
}

impl PendingConsents {
    /// Starts a consent for `conn` redirecting to `redirect_uri`; `bind_browser` adds the cookie.
    pub fn start(
        &self,
        conn: &Connection,
        redirect_uri: &str,
        bind_browser: bool,
    ) -> Result<Started, AuthorizeError> {
        if conn.settings.flow != OAuthFlow::AuthorizationCode {
            return Err(AuthorizeError::Config(format!(
                "connection `{}` is app-only (client credentials): it needs no sign-in",
                conn.name()
            )));
        }
        let request = AuthorizationRequest::new(&conn.settings, redirect_uri)?;
        let binding = bind_browser.then(new_token);
        let started = Started {
            authorize_url: request.url().clone(),
            redirect_uri: request.redirect_uri().to_string(),
            binding: binding.clone(),
        };
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, p| p.started.elapsed() < CONSENT_LIFETIME);
        if map.len() >= MAX_PENDING
            && let Some(oldest) = map
                .iter()
                .min_by_key(|(_, p)| p.started)
                .map(|(k, _)| k.clone())
        {
            map.remove(&oldest);
        }
        map.insert(
            request.state().to_string(),
            Pending {
                connection_id: conn.id,
                binding_hash: binding.as_deref().map(hash_token),
                started: Instant::now(),
                request,
            },
        );
        Ok(started)
    }

    /// Takes the consent for `state` (once), checking the binding cookie when it has one.
    fn take(
        &self,
        state: &str,
        binding: Option<&str>,
    ) -> Result<(AuthorizationRequest, i64), ConsentFailure> {
        let unknown = || {
            ConsentFailure {
            connection: None,
            message: "This sign-in response is unknown or has expired (or was already used). Start again \
                      with Connect on the connection's page."
                .into(),
            hint: None,
        }
        };
        let pending = {
            let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
            map.remove(state).ok_or_else(unknown)?
        };
        if pending.started.elapsed() >= CONSENT_LIFETIME {
            return Err(unknown());
        }
        if let Some(expected) = &pending.binding_hash {
            let presented = binding.map(hash_token);
            if presented.as_ref() != Some(expected) {
                return Err(ConsentFailure {
                    connection: None,
                    message:
                        "This sign-in was started in another browser (or its cookie is gone). \
                              Press Connect again in this browser."
                            .into(),
                    hint: None,
                });
            }
        }
        Ok((pending.request, pending.connection_id))
    }

    /// Completes the consent the provider's redirect answers: checks `state`, redeems the
    /// code (once) and stores the tokens.
    pub async fn finish(
        &self,
        tokens: &TokenManager,
        store: &crate::store::Store,
        callback: Callback,
        binding: Option<&str>,
    ) -> Result<(Connection, Authorized), ConsentFailure> {
        let state = callback.state.clone().unwrap_or_default();
        let (request, connection_id) = self.take(&state, binding)?;
        let conn = store
            .connection_by_id(connection_id)
            .await
            .map_err(|_| ConsentFailure {
                connection: None,
                message: "The connection was removed while signing in.".into(),
                hint: None,
            })?;
        let explain = |e: AuthorizeError| ConsentFailure {
            connection: Some(conn.name().to_string()),
            hint: e.provider().and_then(|p| {
                hint(
                    p,
                    HintContext {
                        connection: conn.name().as_str(),
                        redirect_uri: Some(request.redirect_uri()),
                    },
                )
            }),
            message: e.to_string(),
        };
        let code: SecretString = request.code_from(callback, false).map_err(explain)?;
        let authorized = tokens
            .redeem_code(&conn, &request, &code)
            .await
            .map_err(explain)?;
        let conn = store
            .connection_by_id(connection_id)
            .await
            .map_err(|e| ConsentFailure {
                connection: None,
                message: e.to_string(),
                hint: None,
            })?;
        Ok((conn, authorized))
    }
}
