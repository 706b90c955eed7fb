//! The token cache: per connection, the current access token, a serial that changes with it, and
//! the outcome of the last attempt to obtain one (shared by the callers that waited for it).

use std::sync::{Mutex, MutexGuard};

use chrono::{DateTime, Utc};
use secrecy::SecretString;

use super::error::TokenError;

/// An access token and what is known about it. `Debug` never shows the token.
#[derive(Debug, Clone)]
pub struct AccessToken {
    pub value: SecretString,
    pub expires_at: DateTime<Utc>,
    /// The granted scopes, when the provider said (not known for tokens read back from the store).
    pub scope: Option<String>,
    pub origin: TokenOrigin,
    /// Changes whenever the cached token is replaced; lets `force_refresh` tell "the token I was
    /// refused" from "a newer one someone else already fetched".
    pub(crate) serial: u64,
}

/// Where a token handed out came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenOrigin {
    /// The in-memory cache.
    Memory,
    /// The sealed copy in the store (after a restart).
    Store,
    /// The token endpoint, just now.
    Provider,
}

#[derive(Clone)]
pub(super) struct Cached {
    pub(super) value: SecretString,
    pub(super) expires_at: i64,
    pub(super) scope: Option<String>,
}

#[derive(Default)]
pub(super) struct SlotState {
    pub(super) token: Option<Cached>,
    /// Bumped when `token` changes.
    pub(super) serial: u64,
    /// Bumped when an attempt to obtain a token ends, with `last_error` set if it failed:
    /// callers that waited for it share its result instead of trying again.
    pub(super) attempts: u64,
    pub(super) last_error: Option<TokenError>,
}

/// One connection's cache and its refresh lock.
#[derive(Default)]
pub(super) struct Slot {
    state: Mutex<SlotState>,
    pub(super) refresh: tokio::sync::Mutex<()>,
}

impl Slot {
    pub(super) fn lock(&self) -> MutexGuard<'_, SlotState> {
        // The state is plain data, valid after any panic: ignore poisoning.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

pub(crate) fn now() -> i64 {
    Utc::now().timestamp()
}

pub(super) fn to_time(unix: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(unix, 0).unwrap_or_default()
}

impl SlotState {
    pub(super) fn hand_out(&self, origin: TokenOrigin) -> Option<AccessToken> {
        self.token.as_ref().map(|t| AccessToken {
            value: t.value.clone(),
            expires_at: to_time(t.expires_at),
            scope: t.scope.clone(),
            origin,
            serial: self.serial,
        })
    }

    pub(super) fn with_margin(&self, margin: i64) -> Option<AccessToken> {
        self.token
            .as_ref()
            .filter(|t| t.expires_at - now() >= margin)?;
        self.hand_out(TokenOrigin::Memory)
    }

    /// The cached token if it has not expired, however little is left.
    pub(super) fn still_valid(&self, spare_secs: i64) -> Option<AccessToken> {
        self.token
            .as_ref()
            .filter(|t| t.expires_at > now() + spare_secs)?;
        self.hand_out(TokenOrigin::Memory)
    }

    pub(super) fn replace(&mut self, token: Cached, origin: TokenOrigin) -> AccessToken {
        self.serial += 1;
        let out = AccessToken {
            value: token.value.clone(),
            expires_at: to_time(token.expires_at),
            scope: token.scope.clone(),
            origin,
            serial: self.serial,
        };
        self.token = Some(token);
        out
    }

    pub(super) fn finish_attempt(&mut self, error: Option<TokenError>) {
        self.attempts += 1;
        self.last_error = error;
    }
}
