//! Finishing an authorization: redeem the code, poll the device grant, or try the app's own
//! credentials; then commit the first tokens, which makes the connection usable again.

use chrono::{DateTime, Utc};
use secrecy::SecretString;

use super::authorize::{AuthorizationRequest, AuthorizeError};
use super::device::{self, DeviceAuthorization, DevicePolling, PollEvent};
use super::error::TokenError;
use super::exchange::{ExchangeError, Grant, TokenResponse};
use super::tokens::{Failure, TokenManager};
use crate::domain::{Connection, OAuthFlow, Provider};
use crate::store::SecretKind;

/// What a successful authorization left in the store.
#[derive(Debug, Clone)]
pub struct Authorized {
    /// When the access token obtained on the way expires.
    pub access_expires_at: DateTime<Utc>,
    /// A refresh token was stored (sealed); false for client-credentials connections.
    pub refresh_token_stored: bool,
    /// The scopes granted, when the provider said.
    pub scope: Option<String>,
}

fn exchange_failed(e: ExchangeError) -> AuthorizeError {
    match e {
        ExchangeError::Provider(p) => AuthorizeError::Provider(p),
        ExchangeError::Config(m) => AuthorizeError::Config(m),
        ExchangeError::Transient {
            message,
            retry_after,
        } => AuthorizeError::Token(TokenError::Transient {
            message,
            retry_after,
        }),
    }
}

impl TokenManager {
    async fn client_secret(
        &self,
        conn: &Connection,
    ) -> Result<Option<SecretString>, AuthorizeError> {
        let stored = self
            .store()
            .secret(conn.id, SecretKind::ClientSecret)
            .await
            .map_err(TokenError::from)?;
        Ok(stored.map(|s| s.value))
    }

    /// Redeems the code of `request` (with its PKCE verifier) and stores the tokens.
    pub async fn redeem_code(
        &self,
        conn: &Connection,
        request: &AuthorizationRequest,
        code: &SecretString,
    ) -> Result<Authorized, AuthorizeError> {
        let secret = self.client_secret(conn).await?;
        let grant = Grant::AuthorizationCode {
            code,
            redirect_uri: request.redirect_uri(),
            verifier: request.verifier(),
        };
        // One try only: a code is single-use, and a retry after a lost answer would be refused.
        let tokens = self
            .client()
            .request(&conn.settings, secret.as_ref(), grant)
            .await
            .map_err(exchange_failed)?;
        self.finish(conn, tokens).await
    }

    /// Starts the device grant: the code and URL to show the user.
    pub async fn start_device(
        &self,
        conn: &Connection,
    ) -> Result<DeviceAuthorization, AuthorizeError> {
        device::start(self.client(), &conn.settings).await
    }

    /// Polls the device grant until the user finishes, then stores the tokens.
    pub async fn finish_device(
        &self,
        conn: &Connection,
        auth: &DeviceAuthorization,
        polling: &DevicePolling,
        on_event: impl FnMut(PollEvent),
    ) -> Result<Authorized, AuthorizeError> {
        let secret = self.client_secret(conn).await?;
        let tokens = device::poll(
            self.client(),
            &conn.settings,
            secret.as_ref(),
            auth,
            polling,
            on_event,
        )
        .await?;
        self.finish(conn, tokens).await
    }

    /// App-only connections need no consent: check that the app's credentials get a token.
    pub async fn authorize_client_credentials(
        &self,
        conn: &Connection,
    ) -> Result<Authorized, AuthorizeError> {
        if !conn.settings.flow.is_app_only() {
            return Err(AuthorizeError::Config(format!(
                "connection `{}` uses the authorization-code flow: it needs a sign-in",
                conn.name()
            )));
        }
        let secret = self.client_secret(conn).await?;
        let assertion = match conn.settings.flow {
            OAuthFlow::ServiceAccount => Some(
                super::service_account::assertion_for(
                    &conn.settings,
                    secret.as_ref(),
                    super::tokens::now(),
                )
                .map_err(AuthorizeError::Config)?,
            ),
            _ => None,
        };
        let grant = match &assertion {
            Some(a) => Grant::JwtBearer(a),
            None => Grant::ClientCredentials,
        };
        match self
            .request_with_retries(conn, secret.as_ref(), grant, None)
            .await
        {
            Ok(tokens) => self.finish(conn, tokens).await,
            Err(Failure::Refused(p)) => Err(AuthorizeError::Provider(p)),
            Err(Failure::Transient(e)) => Err(AuthorizeError::Token(e)),
            Err(Failure::Config(m)) => Err(AuthorizeError::Config(m)),
        }
    }

    async fn finish(
        &self,
        conn: &Connection,
        tokens: TokenResponse,
    ) -> Result<Authorized, AuthorizeError> {
        let delegated = conn.settings.flow == OAuthFlow::AuthorizationCode;
        if delegated && tokens.refresh_token.is_none() {
            return Err(AuthorizeError::NoRefreshToken(
                match conn.settings.provider {
                    Provider::Google => {
                        "Google sends one only on a fresh consent: remove the app's access at \
                     https://myaccount.google.com/permissions and authorize again"
                    }
                    Provider::Microsoft
                    | Provider::Outlook
                    | Provider::MicrosoftUsGov
                    | Provider::MicrosoftChina => {
                        "the scope must include `offline_access` (see `postern connection show`)"
                    }
                    Provider::Custom => {
                        "ask the provider for offline access (often the `offline_access` scope)"
                    }
                },
            ));
        }
        let access_expires_at = self.commit_authorization(conn.id, &tokens).await?;
        tracing::info!(connection = %conn.name(), expires_at = %access_expires_at, "connection authorized");
        Ok(Authorized {
            access_expires_at,
            refresh_token_stored: tokens.refresh_token.is_some(),
            scope: tokens.scope,
        })
    }
}
