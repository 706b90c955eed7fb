//! The web consent ("Connect"): start an authorization request for a connection, keep it
//! until the provider sends the browser back, then redeem the code once.
//!
//! Pending requests (hashed `state`, sealed PKCE verifier, redirect URI) live in the store, not in
//! memory: behind a load balancer the callback may reach another instance than the one that
//! started the consent (`store::consents`). Each is bound to its connection and, when an admin
//! started it, to that browser through a random binding cookie (`SameSite=Lax`, so it comes back
//! on the provider's cross-site redirect, where the `Strict` session cookie does not).

use secrecy::SecretString;

use super::state::CONSENT_LIFETIME;
use crate::domain::{Connection, OAuthFlow};
use crate::oauth::diagnose::{HintContext, hint};
use crate::oauth::{AuthorizationRequest, AuthorizeError, Authorized, Callback, TokenManager};
use crate::store::{NewConsent, Store, hash_token, new_token};

/// The binding cookie's name; its path is the callback's.
pub const BINDING_COOKIE: &str = "postern_oauth";
/// Most consents in progress at once, cluster-wide (the oldest are dropped first).
const MAX_PENDING: u32 = 1000;

/// Starts and finishes web consents; the pending ones are in the store.
#[derive(Debug, Default)]
pub struct PendingConsents;

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

fn failure(message: impl Into<String>) -> ConsentFailure {
    ConsentFailure {
        connection: None,
        message: message.into(),
        hint: None,
    }
}

impl PendingConsents {
    /// Starts a consent for `conn` redirecting to `redirect_uri`; `bind_browser` adds the cookie.
    pub async fn start(
        &self,
        store: &Store,
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
        store
            .put_pending_consent(
                NewConsent {
                    state: request.state(),
                    connection_id: conn.id,
                    verifier: request.verifier(),
                    redirect_uri: request.redirect_uri(),
                    binding_hash: binding.as_deref().map(hash_token),
                    lifetime: CONSENT_LIFETIME,
                },
                MAX_PENDING,
            )
            .await
            .map_err(crate::oauth::TokenError::from)?;
        Ok(Started {
            authorize_url: request.url().clone(),
            redirect_uri: request.redirect_uri().to_string(),
            binding,
        })
    }

    /// Takes the consent for `state` (once, cluster-wide), checking the binding cookie when it
    /// has one; returns the connection's id, the verifier and the redirect URI.
    async fn take(
        &self,
        store: &Store,
        state: &str,
        binding: Option<&str>,
    ) -> Result<(i64, SecretString, String), ConsentFailure> {
        let unknown = || {
            failure(
                "This sign-in response is unknown or has expired (or was already used). Start \
                 again with Connect on the connection's page.",
            )
        };
        if state.is_empty() {
            return Err(unknown());
        }
        let pending = store
            .take_pending_consent(state)
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "reading a pending consent");
                failure("Postern could not read the sign-in in progress from its store; try Connect again.")
            })?
            .ok_or_else(unknown)?;
        if !pending.live {
            return Err(unknown());
        }
        if let Some(expected) = &pending.binding_hash {
            let presented = binding.map(hash_token);
            if presented.as_ref() != Some(expected) {
                return Err(failure(
                    "This sign-in was started in another browser (or its cookie is gone). \
                     Press Connect again in this browser.",
                ));
            }
        }
        Ok((
            pending.connection_id,
            pending.verifier,
            pending.redirect_uri,
        ))
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
        let (connection_id, verifier, redirect_uri) = self.take(store, &state, binding).await?;
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
                        redirect_uri: Some(&redirect_uri),
                    },
                )
            }),
            message: e.to_string(),
        };
        let request = AuthorizationRequest::resume(&conn.settings, &redirect_uri, state, verifier)
            .map_err(explain)?;
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
