//! What every handler can reach: the store, the settings and the login limiter.

use std::sync::Arc;
use std::time::Duration;

use crate::outbox::Outbox;
use crate::settings::Settings;
use crate::store::Store;

use super::auth::{ApiKeyCheck, LoginLimiter};
use super::budget::MessageBudget;
use super::consent::PendingConsents;
use crate::oauth::{TokenError, TokenManager};

/// How long an admin stays logged in.
pub const SESSION_LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// How long a started web consent may take.
pub const CONSENT_LIFETIME: Duration = Duration::from_secs(15 * 60);
/// Largest request body outside message submission (forms, JSON).
pub const SMALL_BODY_LIMIT: usize = 256 * 1024;

/// Shared by every request; cheap to clone.
#[derive(Debug, Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: Store,
    settings: Settings,
    limiter: LoginLimiter,
    public_url: Option<url::Url>,
    request_timeout: Duration,
    outbox: Option<Outbox>,
    tokens: std::sync::OnceLock<TokenManager>,
    consents: PendingConsents,
    message_budget: MessageBudget,
    api_keys: ApiKeyCheck,
}

impl AppState {
    pub fn new(store: Store, settings: Settings) -> Self {
        let message_budget = MessageBudget::new(settings.server.http_message_memory_budget);
        let request_timeout = Duration::from_secs(settings.server.http_request_timeout_secs);
        Self {
            inner: Arc::new(Inner {
                store,
                settings,
                limiter: LoginLimiter::default(),
                public_url: None,
                request_timeout,
                outbox: None,
                tokens: std::sync::OnceLock::new(),
                consents: PendingConsents,
                message_budget,
                api_keys: ApiKeyCheck::default(),
            }),
        }
    }

    /// The URL admins reach Postern at (e.g. `https://postern.example.com`), when it sits behind
    /// a proxy: the OAuth redirect URI is built from it. Without it, from the request's `Host`.
    pub fn with_public_url(mut self, url: Option<url::Url>) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.public_url = url;
        }
        self
    }

    /// Count failed admin logins with the other instances on the store.
    pub fn with_shared_failures(
        mut self,
        failures: crate::store::auth_failures::SharedFailures,
    ) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.limiter = LoginLimiter::new(Some(failures));
        }
        self
    }

    /// The queue that `POST /api/v1/messages` submits to (the one the delivery workers drain).
    pub fn with_outbox(mut self, outbox: Outbox) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.outbox = Some(outbox);
        }
        self
    }

    /// The token manager the delivery workers use, so tokens from a web consent are seen by
    /// them at once (one cache, single-flight refresh).
    pub fn with_tokens(self, tokens: TokenManager) -> Self {
        let _ = self.inner.tokens.set(tokens);
        self
    }

    /// The shared token manager, or one of our own when none was given (tests, tools).
    pub fn tokens(&self) -> Result<&TokenManager, TokenError> {
        if let Some(t) = self.inner.tokens.get() {
            return Ok(t);
        }
        let own = TokenManager::new(self.inner.store.clone(), self.inner.settings.tokens.clone())?;
        Ok(self.inner.tokens.get_or_init(|| own))
    }

    pub fn consents(&self) -> &PendingConsents {
        &self.inner.consents
    }

    /// Memory that message submissions in flight may hold.
    pub fn message_budget(&self) -> &MessageBudget {
        &self.inner.message_budget
    }

    pub(crate) fn api_keys(&self) -> &ApiKeyCheck {
        &self.inner.api_keys
    }

    pub fn outbox(&self) -> Option<&Outbox> {
        self.inner.outbox.as_ref()
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    pub fn settings(&self) -> &Settings {
        &self.inner.settings
    }

    pub fn limiter(&self) -> &LoginLimiter {
        &self.inner.limiter
    }

    pub fn public_url(&self) -> Option<&url::Url> {
        self.inner.public_url.as_ref()
    }

    pub fn request_timeout(&self) -> Duration {
        self.inner.request_timeout
    }

    /// Largest `POST /api/v1/messages` body: the largest message, base64-encoded in JSON, plus room.
    pub fn message_body_limit(&self) -> usize {
        let max =
            usize::try_from(self.inner.settings.server.max_message_size).unwrap_or(usize::MAX);
        max.saturating_mul(4) / 3 + 64 * 1024
    }
}
