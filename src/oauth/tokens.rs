//! The token manager: hands out access tokens, refreshing them early, once at a time per
//! connection (single flight), committing rotated refresh tokens before anyone uses the new
//! access token, and telling transient trouble (retry, keep everything) from a refusal (the
//! connection needs re-authorization; its tokens are kept for the admin to retry).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};

use super::audience::Audience;
pub(crate) use super::cache::now;
pub use super::cache::{AccessToken, TokenOrigin};
use super::cache::{Cached, Slot, to_time};
use super::error::{ProviderError, TokenError};
use super::exchange::{ExchangeError, Grant, TokenClient, TokenResponse};
use super::gate::Gates;
use super::retry::RetryPolicy;
use super::source::TokenSource;
use crate::domain::{Connection, ConnectionStatus, OAuthFlow};
use crate::settings::TokenSettings;
use crate::store::{RefreshLock, SecretKind, Store, StoreError};

struct Inner {
    store: Store,
    settings: TokenSettings,
    client: TokenClient,
    retry: RetryPolicy,
    /// One cache per connection and audience: a Graph refresh never replaces the SMTP token.
    slots: Mutex<HashMap<(i64, Audience), Arc<Slot>>>,
    /// A few token requests at a time per endpoint, none while it asked to wait.
    gates: Gates,
}

/// Keeps access tokens for every connection. Cheap to clone; share one per process.
///
/// ```no_run
/// # async fn demo(store: postern::store::Store) -> Result<(), postern::oauth::TokenError> {
/// use postern::oauth::{TokenManager, TokenSource};
/// use postern::settings::TokenSettings;
///
/// let tokens = TokenManager::new(store, TokenSettings::default())?;
/// let conn = tokens.store().connection("contoso").await?;
/// let token = tokens.access_token(&conn).await?; // cached, or refreshed once for all callers
/// println!("valid until {}", token.expires_at);
///
/// // What the SMTP client takes: one connection's tokens, with `force_refresh` after a 535.
/// let source = tokens.for_connection(conn.id);
/// let _bearer = source.access_token().await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct TokenManager {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for TokenManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenManager")
            .field("settings", &self.inner.settings)
            .finish_non_exhaustive()
    }
}

/// How one token request (with its retries) failed.
pub(crate) enum Failure {
    Transient(TokenError),
    Refused(ProviderError),
    Config(String),
}

/// Store errors are transient for token callers, except a connection that no longer exists.
fn store_error(e: StoreError) -> TokenError {
    match e {
        StoreError::NoSuchConnection(_) => TokenError::NotUsable(e.to_string()),
        other => TokenError::from(other),
    }
}

/// Disabled and refused connections never reach the provider.
pub(crate) fn check_usable(conn: &Connection) -> Result<(), TokenError> {
    if !conn.settings.enabled {
        let name = conn.name();
        return Err(TokenError::NotUsable(format!(
            "connection `{name}` is disabled (enable it with `postern connection enable {name}`)"
        )));
    }
    if let ConnectionStatus::NeedsReauthorization { reason } = &conn.status {
        return Err(TokenError::NeedsReauthorization {
            reason: reason.clone(),
        });
    }
    Ok(())
}

/// Longest status reason kept; descriptions can be long, the list view is not.
const MAX_REASON: usize = 400;

impl TokenManager {
    pub fn new(store: Store, settings: TokenSettings) -> Result<Self, TokenError> {
        Self::with_retry_policy(store, settings, RetryPolicy::default())
    }

    pub fn with_retry_policy(
        store: Store,
        settings: TokenSettings,
        retry: RetryPolicy,
    ) -> Result<Self, TokenError> {
        let timeout = Duration::from_secs(settings.http_timeout_secs.max(1));
        let client = TokenClient::new(timeout).map_err(|e| TokenError::NotUsable(e.to_string()))?;
        Ok(Self {
            inner: Arc::new(Inner {
                store,
                settings,
                client,
                retry,
                slots: Mutex::default(),
                gates: Gates::default(),
            }),
        })
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    pub fn client(&self) -> &TokenClient {
        &self.inner.client
    }

    pub fn settings(&self) -> &TokenSettings {
        &self.inner.settings
    }

    /// A handle for one connection, implementing [`TokenSource`] for the SMTP client.
    pub fn for_connection(&self, connection_id: i64) -> ConnectionTokens {
        self.for_audience(connection_id, Audience::Own)
    }

    /// A handle for one connection's tokens for `audience` (Graph, for the fallback).
    pub fn for_audience(&self, connection_id: i64, audience: Audience) -> ConnectionTokens {
        ConnectionTokens {
            manager: self.clone(),
            connection_id,
            audience,
            last_serial: Arc::new(AtomicU64::new(0)),
        }
    }

    fn margin(&self) -> i64 {
        i64::try_from(self.inner.settings.refresh_margin_secs).unwrap_or(i64::MAX)
    }

    fn slot(&self, id: i64, audience: Audience) -> Arc<Slot> {
        let mut slots = self
            .inner
            .slots
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        slots.entry((id, audience)).or_default().clone()
    }

    /// A token with at least the refresh margin left: cached, or read back from the store, or
    /// refreshed (once, however many callers ask at the same time).
    pub async fn access_token(&self, conn: &Connection) -> Result<AccessToken, TokenError> {
        self.access_token_for(conn, Audience::Own).await
    }

    /// Like [`TokenManager::access_token`], for `audience` (its own cache and stored token).
    pub async fn access_token_for(
        &self,
        conn: &Connection,
        audience: Audience,
    ) -> Result<AccessToken, TokenError> {
        check_usable(conn)?;
        let audience = audience.for_connection(conn);
        audience.scope(conn)?;
        let slot = self.slot(conn.id, audience);
        let seen = {
            let st = slot.lock();
            if let Some(t) = st.with_margin(self.margin()) {
                return Ok(t);
            }
            st.attempts
        };
        self.obtain(
            conn.id,
            audience,
            &slot,
            Want::Fresh {
                seen_attempts: seen,
            },
        )
        .await
    }

    /// Like [`TokenManager::access_token`], reading the connection (and its status) first.
    pub async fn access_token_by_id(&self, connection_id: i64) -> Result<AccessToken, TokenError> {
        self.access_token_by_id_for(connection_id, Audience::Own)
            .await
    }

    async fn access_token_by_id_for(
        &self,
        connection_id: i64,
        audience: Audience,
    ) -> Result<AccessToken, TokenError> {
        let conn = self
            .inner
            .store
            .connection_by_id(connection_id)
            .await
            .map_err(store_error)?;
        self.access_token_for(&conn, audience).await
    }

    /// Discards the cached token and obtains a new one (after the server refused a token).
    pub async fn force_refresh(&self, connection_id: i64) -> Result<AccessToken, TokenError> {
        let slot = self.slot(connection_id, Audience::Own);
        let serial = slot.lock().serial;
        self.obtain(
            connection_id,
            Audience::Own,
            &slot,
            Want::Replace {
                refused_serial: serial,
            },
        )
        .await
    }

    /// Replaces the token numbered `refused_serial`, unless another caller already did.
    pub(crate) async fn refresh_after(
        &self,
        connection_id: i64,
        audience: Audience,
        refused_serial: u64,
    ) -> Result<AccessToken, TokenError> {
        let slot = self.slot(connection_id, audience);
        self.obtain(
            connection_id,
            audience,
            &slot,
            Want::Replace { refused_serial },
        )
        .await
    }

    /// Replaces the token with a refresh under `lock`, the connection's refresh lock already
    /// taken (keep-alive: it tries the lock and skips a connection another instance holds).
    pub(crate) async fn force_refresh_holding(
        &self,
        connection_id: i64,
        lock: RefreshLock,
    ) -> Result<AccessToken, TokenError> {
        let slot = self.slot(connection_id, Audience::Own);
        let serial = slot.lock().serial;
        let want = Want::Replace {
            refused_serial: serial,
        };
        self.obtain_holding(connection_id, Audience::Own, &slot, want, Some(lock))
            .await
    }

    async fn obtain(
        &self,
        id: i64,
        audience: Audience,
        slot: &Slot,
        want: Want,
    ) -> Result<AccessToken, TokenError> {
        self.obtain_holding(id, audience, slot, want, None).await
    }

    /// One refresh at a time per connection: in this process (the slot's flight), and across
    /// instances sharing the store (the store's refresh lock, held across the token request;
    /// `held` when the caller took it already). The lock is the connection's, not the
    /// audience's: every audience's refresh sends the same refresh token.
    async fn obtain_holding(
        &self,
        id: i64,
        audience: Audience,
        slot: &Slot,
        want: Want,
        held: Option<RefreshLock>,
    ) -> Result<AccessToken, TokenError> {
        let _flight = slot.refresh.lock().await;
        {
            let st = slot.lock();
            match want {
                Want::Fresh { seen_attempts } => {
                    // An attempt ended while we waited: share its outcome.
                    if st.attempts != seen_attempts {
                        if let Some(e) = &st.last_error {
                            return Err(e.clone());
                        }
                        if let Some(t) = st.still_valid(0) {
                            return Ok(t);
                        }
                    }
                    if let Some(t) = st.with_margin(self.margin()) {
                        return Ok(t);
                    }
                }
                Want::Replace { refused_serial } => {
                    if st.serial != refused_serial
                        && let Some(t) = st.still_valid(0)
                    {
                        return Ok(t);
                    }
                }
            }
        }
        let store = &self.inner.store;
        // Fresh status: another process (the CLI) may have disabled or re-authorized it.
        let conn = store.connection_by_id(id).await.map_err(store_error)?;
        check_usable(&conn)?;
        let audience = audience.for_connection(&conn);
        if let Want::Fresh { .. } = want
            && let Some(stored) = store
                .secret(id, audience.secret_kind())
                .await
                .map_err(store_error)?
            && let Some(expires_at) = stored.expires_at
            && expires_at - now() >= self.margin()
        {
            // A restart, or another process refreshed: no need to ask the provider.
            return Ok(use_stored(slot, stored.value, expires_at));
        }
        // Another instance may be refreshing this connection: wait for it, then read back what
        // it committed; only if that will not do, refresh while holding the lock, so that the
        // refresh token it sends is the newest and no one else sends it.
        let lock = match held {
            Some(lock) => lock,
            None => store.lock_refresh(id).await.map_err(store_error)?,
        };
        // Read back only if another instance may have committed since the read above: on
        // SQLite (no lock across instances) a fresh token was read a moment ago, unchanged.
        let read_just_now = matches!(want, Want::Fresh { .. }) && !lock.spans_instances();
        let meanwhile = if read_just_now {
            Ok(None)
        } else {
            self.committed_meanwhile(id, audience, slot, want).await
        };
        let committed = match meanwhile {
            Ok(Some((value, expires_at))) => {
                lock.release().await;
                return Ok(use_stored(slot, value, expires_at));
            }
            Ok(None) => None,
            Err(e) => Some(e),
        };
        let result = match committed {
            Some(e) => Err(e),
            None => self.refresh(&conn, audience).await,
        };
        // The new tokens are committed (`refresh` saves them before it returns).
        lock.release().await;
        let mut st = slot.lock();
        match result {
            Ok(tokens) => {
                let t = st.replace(tokens, TokenOrigin::Provider);
                st.finish_attempt(None);
                Ok(t)
            }
            Err(e) => {
                // A token still valid (just inside the margin) beats no token, unless the
                // server has refused it already.
                if e.is_transient()
                    && matches!(want, Want::Fresh { .. })
                    && let Some(t) = st.still_valid(30)
                {
                    tracing::warn!(connection = %conn.name(), error = %e, "refresh failed; using the current token while it lasts");
                    st.finish_attempt(None);
                    return Ok(t);
                }
                if e.needs_reauthorization() {
                    st.token = None;
                }
                st.finish_attempt(Some(e.clone()));
                Err(e)
            }
        }
    }

    /// The access token committed to the store, if it serves `want`: for a fresh token, one with
    /// the margin left; to replace a refused one, a different one (another instance replaced
    /// it) still valid for a while.
    async fn committed_meanwhile(
        &self,
        id: i64,
        audience: Audience,
        slot: &Slot,
        want: Want,
    ) -> Result<Option<(SecretString, i64)>, TokenError> {
        let stored = self
            .inner
            .store
            .secret(id, audience.secret_kind())
            .await
            .map_err(store_error)?;
        let Some((stored, expires_at)) = stored.and_then(|s| s.expires_at.map(|e| (s.value, e)))
        else {
            return Ok(None);
        };
        let left = expires_at - now();
        let serves = match want {
            Want::Fresh { .. } => left >= self.margin(),
            Want::Replace { refused_serial } => {
                let st = slot.lock();
                let refused = st.token.as_ref().filter(|_| st.serial == refused_serial);
                refused.is_some_and(|r| r.value.expose_secret() != stored.expose_secret())
                    && left >= 60
            }
        };
        Ok(serves.then_some((stored, expires_at)))
    }

    /// Asks the provider (with retries), commits the answer, flips the status on a refusal.
    async fn refresh(&self, conn: &Connection, audience: Audience) -> Result<Cached, TokenError> {
        let store = &self.inner.store;
        let id = conn.id;
        let name = conn.name();
        let scope = audience.scope(conn)?;
        let secret = store
            .secret(id, SecretKind::ClientSecret)
            .await
            .map_err(store_error)?
            .map(|s| s.value);
        let refresh_token = match conn.settings.flow {
            OAuthFlow::ClientCredentials | OAuthFlow::ServiceAccount => None,
            OAuthFlow::AuthorizationCode => {
                let stored = store
                    .secret(id, SecretKind::RefreshToken)
                    .await
                    .map_err(store_error)?;
                Some(stored.map(|s| s.value).ok_or_else(|| {
                    TokenError::NotUsable(format!(
                        "connection `{name}` has not been authorized yet: run `postern connection authorize {name}`"
                    ))
                })?)
            }
        };
        let assertion = match conn.settings.flow {
            OAuthFlow::ServiceAccount => Some(
                super::service_account::assertion_for(&conn.settings, secret.as_ref(), now())
                    .map_err(TokenError::NotUsable)?,
            ),
            _ => None,
        };
        let grant = match (&refresh_token, &assertion) {
            (Some(rt), _) => Grant::RefreshToken(rt),
            (None, Some(a)) => Grant::JwtBearer(a),
            (None, None) => Grant::ClientCredentials,
        };
        let tokens = match self
            .request_with_retries(conn, secret.as_ref(), grant, scope)
            .await
        {
            Ok(t) => t,
            Err(Failure::Transient(e)) => return Err(e),
            Err(Failure::Config(m)) => return Err(TokenError::NotUsable(m)),
            Err(Failure::Refused(p)) if audience != Audience::Own => {
                // The grant itself still serves the connection's own transport: only the
                // Graph permission is missing. Say so; leave the connection's status alone.
                tracing::warn!(connection = %name, error = %p, "Microsoft Graph token refused");
                return Err(TokenError::NotUsable(format!(
                    "Microsoft Graph refused a token for connection `{name}` ({p}): the Graph fallback \
                     needs the Graph permission too: in Entra add Microsoft Graph > Mail.Send \
                     (delegated; application for app-only) and grant admin consent, then run \
                     `postern connection authorize {name}` again"
                )));
            }
            Err(Failure::Refused(p)) => {
                return Err(self.refused(conn, refresh_token.as_ref(), p).await);
            }
        };
        let expires_at =
            now().saturating_add(i64::try_from(tokens.expires_in).unwrap_or(i64::MAX / 2));
        // Commit before handing out: a crash after this line loses nothing, and one before it
        // leaves the previous refresh token in place (Microsoft keeps it valid for a while).
        store
            .save_tokens(
                id,
                tokens.refresh_token.as_ref(),
                audience.secret_kind(),
                &tokens.access_token,
                expires_at,
            )
            .await
            .map_err(store_error)?;
        tracing::info!(
            connection = %name,
            grant = grant.grant_type(),
            audience = audience.as_str(),
            rotated = tokens.refresh_token.is_some(),
            expires_at = %to_time(expires_at),
            "access token obtained"
        );
        Ok(Cached {
            value: tokens.access_token,
            expires_at,
            scope: tokens.scope,
        })
    }

    /// The provider refused: mark the connection, keep its tokens, say why.
    async fn refused(
        &self,
        conn: &Connection,
        used: Option<&SecretString>,
        p: ProviderError,
    ) -> TokenError {
        let store = &self.inner.store;
        // Re-authorized while we were refreshing? Then the refusal concerns a token already replaced.
        if let Some(used) = used
            && let Ok(Some(now_stored)) = store.secret(conn.id, SecretKind::RefreshToken).await
            && now_stored.value.expose_secret() != used.expose_secret()
        {
            return TokenError::Transient {
                message: "the refresh token was replaced while refreshing; try again".into(),
                retry_after: None,
            };
        }
        let mut reason = p.to_string();
        if reason.len() > MAX_REASON {
            let mut cut = MAX_REASON;
            while !reason.is_char_boundary(cut) {
                cut -= 1;
            }
            reason.truncate(cut);
            reason.push('…');
        }
        // What Postern knows beside the provider's words (a Google refresh token 7 days old).
        let age = match used {
            Some(_) => store
                .secret_updated_at(conn.id, SecretKind::RefreshToken)
                .await
                .ok()
                .flatten()
                .map(|obtained| now() - obtained),
            None => None,
        };
        if let Some(note) = crate::explain::diagnose_refusal(
            conn.settings.provider,
            conn.settings.flow,
            &p.error,
            age,
        ) {
            reason.push(' ');
            reason.push_str(&note);
        }
        // The same explanation as `connection token`, notifications and the UI give.
        let fix = crate::explain::reauthorization_fix(conn.name().as_str(), &reason);
        tracing::error!(connection = %conn.name(), error = %reason, fix = %fix, "the provider refused the grant: the connection needs re-authorization");
        let status = ConnectionStatus::NeedsReauthorization {
            reason: reason.clone(),
        };
        if let Err(e) = store.set_status(conn.id, &status).await {
            tracing::error!(connection = %conn.name(), error = %e, "could not record the connection's status");
        }
        TokenError::NeedsReauthorization { reason }
    }

    /// One grant request, retried with backoff while the failure is transient.
    pub(crate) async fn request_with_retries(
        &self,
        conn: &Connection,
        secret: Option<&SecretString>,
        grant: Grant<'_>,
        scope: Option<&str>,
    ) -> Result<TokenResponse, Failure> {
        let policy = &self.inner.retry;
        let endpoint = conn
            .settings
            .token_endpoint()
            .map(|u| u.to_string())
            .unwrap_or_default();
        let mut failed = 0;
        loop {
            let permit = self.inner.gates.enter(&endpoint).await;
            let result = self
                .inner
                .client
                .request_scoped(&conn.settings, secret, grant, scope)
                .await;
            drop(permit);
            match result {
                Ok(t) => return Ok(t),
                Err(ExchangeError::Provider(p)) => return Err(Failure::Refused(p)),
                Err(ExchangeError::Config(m)) => return Err(Failure::Config(m)),
                Err(ExchangeError::Transient {
                    message,
                    retry_after,
                }) => {
                    failed += 1;
                    if let Some(ra) = retry_after {
                        // Everyone's requests to this endpoint wait, not only this one's.
                        self.inner.gates.pause(&endpoint, ra);
                    }
                    let Some(wait) = policy.delay(failed, retry_after) else {
                        tracing::warn!(connection = %conn.name(), tries = failed, error = %message, "token endpoint unavailable; giving up for now");
                        return Err(Failure::Transient(TokenError::Transient {
                            message,
                            retry_after,
                        }));
                    };
                    tracing::warn!(connection = %conn.name(), try_ = failed, error = %message, wait_ms = wait.as_millis() as u64, "token endpoint unavailable; retrying");
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    /// Commits tokens from a completed authorization and caches the access token, making the
    /// connection usable again (status `authorized`).
    pub(crate) async fn commit_authorization(
        &self,
        conn_id: i64,
        tokens: &TokenResponse,
    ) -> Result<DateTime<Utc>, TokenError> {
        let slot = self.slot(conn_id, Audience::Own);
        let _flight = slot.refresh.lock().await;
        // Not while another instance refreshes: its commit, from the old refresh token, would
        // land after this one and replace the new consent's tokens.
        let lock = self
            .inner
            .store
            .lock_refresh(conn_id)
            .await
            .map_err(store_error)?;
        let expires_at =
            now().saturating_add(i64::try_from(tokens.expires_in).unwrap_or(i64::MAX / 2));
        let saved = self
            .inner
            .store
            .save_tokens(
                conn_id,
                tokens.refresh_token.as_ref(),
                SecretKind::AccessToken,
                &tokens.access_token,
                expires_at,
            )
            .await
            .map_err(store_error);
        lock.release().await;
        saved?;
        let mut st = slot.lock();
        let cached = Cached {
            value: tokens.access_token.clone(),
            expires_at,
            scope: tokens.scope.clone(),
        };
        st.replace(cached, TokenOrigin::Provider);
        st.finish_attempt(None);
        Ok(to_time(expires_at))
    }
}

/// Caches and hands out a token read back from the store.
fn use_stored(slot: &Slot, value: SecretString, expires_at: i64) -> AccessToken {
    let mut st = slot.lock();
    let t = st.replace(
        Cached {
            value,
            expires_at,
            scope: None,
        },
        TokenOrigin::Store,
    );
    st.finish_attempt(None);
    t
}

#[derive(Debug, Clone, Copy)]
enum Want {
    /// A token with the margin left; `seen_attempts` as read before waiting for the lock.
    Fresh { seen_attempts: u64 },
    /// Anything but the token numbered `refused_serial`.
    Replace { refused_serial: u64 },
}

/// One connection's tokens, for the SMTP client. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ConnectionTokens {
    manager: TokenManager,
    connection_id: i64,
    audience: Audience,
    /// The serial of the token last handed out, so `force_refresh` replaces exactly that one.
    last_serial: Arc<AtomicU64>,
}

impl ConnectionTokens {
    pub fn connection_id(&self) -> i64 {
        self.connection_id
    }
}

impl TokenSource for ConnectionTokens {
    async fn access_token(&self) -> Result<SecretString, TokenError> {
        let t = self
            .manager
            .access_token_by_id_for(self.connection_id, self.audience)
            .await?;
        self.last_serial.store(t.serial, Ordering::Relaxed);
        Ok(t.value)
    }

    async fn force_refresh(&self) -> Result<SecretString, TokenError> {
        let refused = self.last_serial.load(Ordering::Relaxed);
        let conn = self
            .manager
            .store()
            .connection_by_id(self.connection_id)
            .await
            .map_err(store_error)?;
        check_usable(&conn)?;
        let t = self
            .manager
            .refresh_after(
                self.connection_id,
                self.audience.for_connection(&conn),
                refused,
            )
            .await?;
        self.last_serial.store(t.serial, Ordering::Relaxed);
        Ok(t.value)
    }
}
