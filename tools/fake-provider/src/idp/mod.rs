//! Fake Microsoft-style OAuth identity provider over real HTTP on 127.0.0.1.
//!
//! Endpoints: `GET /{tenant}/oauth2/v2.0/authorize` (auto-consent, 302 to the redirect URI),
//! `POST /{tenant}/oauth2/v2.0/token`, `POST /{tenant}/oauth2/v2.0/devicecode`, and
//! `POST /introspect` (RFC 7662; also `GET ?token=` and `Authorization: Bearer`).

mod config;
mod device;
mod error;
mod grants;
mod jwt;
mod routes;
mod tokens;

use std::collections::VecDeque;
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use config::{
    ClientRegistration, DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, DEFAULT_TENANT_ID, DEFAULT_USER,
    IdpConfig, RedirectPolicy,
};
pub use device::DeviceStatus;
pub use error::InjectedError;
pub use jwt::ServiceAccount;
pub use tokens::{RefreshState, TokenInfo};

use crate::Error;
use crate::util::now_unix;
use device::Devices;
use tokens::{Grants, Mint, parse_scope};

/// Requests seen by the IdP. `total` counts token-endpoint requests of every grant type.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IdpCounters {
    /// Token endpoint requests, all grant types (including injected failures).
    pub total: u64,
    /// `grant_type=authorization_code`.
    pub authorization_code: u64,
    /// `grant_type=refresh_token`.
    pub refresh_token: u64,
    /// `grant_type=client_credentials`.
    pub client_credentials: u64,
    /// `grant_type=urn:ietf:params:oauth:grant-type:device_code` (polls).
    pub device_code: u64,
    /// `grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer` (service accounts).
    pub jwt_bearer: u64,
    /// Authorize endpoint requests.
    pub authorize: u64,
    /// Device authorization (devicecode endpoint) requests.
    pub devicecode: u64,
    /// Introspection requests.
    pub introspect: u64,
}

/// How a token request authenticated its client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// No secret sent.
    None,
    /// `client_secret` in the form body.
    Form,
    /// HTTP Basic.
    Basic,
}

/// One token-endpoint request, as recorded for assertions (no secrets, no tokens).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRequest {
    /// Tenant segment of the path.
    pub tenant: String,
    /// `grant_type` form field (empty when missing).
    pub grant_type: String,
    /// Client id, from the form or Basic auth.
    pub client_id: Option<String>,
    /// How the client authenticated.
    pub client_auth: ClientAuth,
    /// `scope` form field.
    pub scope: Option<String>,
    /// HTTP status of the answer.
    pub status: u16,
    /// `error` of the answer, if it failed.
    pub error: Option<String>,
}

#[derive(Debug, Default)]
pub(crate) struct CounterCells {
    total: AtomicU64,
    authorization_code: AtomicU64,
    refresh_token: AtomicU64,
    client_credentials: AtomicU64,
    device_code: AtomicU64,
    jwt_bearer: AtomicU64,
    authorize: AtomicU64,
    devicecode: AtomicU64,
    introspect: AtomicU64,
}

/// Counter names, so handlers bump them without touching atomics directly.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Count {
    Grant(&'static str),
    Authorize,
    Devicecode,
    Introspect,
}

impl CounterCells {
    pub(crate) fn bump(&self, c: Count) {
        let cell = match c {
            Count::Grant(g) => {
                self.total.fetch_add(1, Ordering::Relaxed);
                match g {
                    "authorization_code" => &self.authorization_code,
                    "refresh_token" => &self.refresh_token,
                    "client_credentials" => &self.client_credentials,
                    grants::DEVICE_GRANT => &self.device_code,
                    jwt::JWT_BEARER_GRANT => &self.jwt_bearer,
                    _ => return,
                }
            }
            Count::Authorize => &self.authorize,
            Count::Devicecode => &self.devicecode,
            Count::Introspect => &self.introspect,
        };
        cell.fetch_add(1, Ordering::Relaxed);
    }

    fn snapshot(&self) -> IdpCounters {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        IdpCounters {
            total: g(&self.total),
            authorization_code: g(&self.authorization_code),
            refresh_token: g(&self.refresh_token),
            client_credentials: g(&self.client_credentials),
            device_code: g(&self.device_code),
            jwt_bearer: g(&self.jwt_bearer),
            authorize: g(&self.authorize),
            devicecode: g(&self.devicecode),
            introspect: g(&self.introspect),
        }
    }
}

/// State shared by the HTTP handlers and the test-facing [`FakeIdp`] handle.
#[derive(Debug)]
pub(crate) struct Shared {
    pub config: IdpConfig,
    pub base_url: String,
    pub expires_in: AtomicU64,
    /// Artificial latency in microseconds (changeable at run time).
    pub latency_us: AtomicU64,
    pub down: AtomicBool,
    pub consent_denied: AtomicBool,
    pub grants: Mutex<Grants>,
    pub devices: Mutex<Devices>,
    pub service_accounts: Mutex<jwt::Registry>,
    pub injected: Mutex<VecDeque<InjectedError>>,
    pub requests: Mutex<Vec<TokenRequest>>,
    pub counters: CounterCells,
}

/// Lock a mutex, ignoring poisoning: a panicking test thread must not wedge the fake.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Shared {
    /// `tid` for a tenant path segment: a GUID stands for itself.
    pub(crate) fn tid_for(&self, tenant: &str) -> String {
        let is_guid =
            tenant.len() == 36 && tenant.chars().all(|c| c.is_ascii_hexdigit() || c == '-');
        if is_guid {
            tenant.to_ascii_lowercase()
        } else {
            self.config.tenant_id.clone()
        }
    }

    pub(crate) fn lookup_access(&self, token: &str) -> Option<TokenInfo> {
        let grants = lock(&self.grants);
        let rec = grants.access.get(token)?;
        (!rec.revoked && rec.info.exp > now_unix()).then(|| rec.info.clone())
    }
}

struct ServerHandle {
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

/// A running fake identity provider. Cheap to clone; all clones drive the same server.
/// The server stops when [`shutdown`](Self::shutdown) is called or the last clone is dropped.
#[derive(Clone)]
pub struct FakeIdp {
    shared: Arc<Shared>,
    addr: SocketAddr,
    server: Arc<Mutex<ServerHandle>>,
}

impl fmt::Debug for FakeIdp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FakeIdp")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl FakeIdp {
    /// Bind `config.listen` (default `127.0.0.1:0`) and serve in a background task.
    pub async fn start(config: IdpConfig) -> Result<FakeIdp, Error> {
        let listener = tokio::net::TcpListener::bind(config.listen).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            base_url: format!("http://{addr}"),
            expires_in: AtomicU64::new(config.expires_in),
            latency_us: AtomicU64::new(
                u64::try_from(config.latency.as_micros()).unwrap_or(u64::MAX),
            ),
            down: AtomicBool::new(false),
            consent_denied: AtomicBool::new(false),
            grants: Mutex::default(),
            devices: Mutex::default(),
            service_accounts: Mutex::default(),
            injected: Mutex::default(),
            requests: Mutex::default(),
            counters: CounterCells::default(),
            config,
        });
        let app = routes::router(shared.clone());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let serve = axum::serve(listener, app).with_graceful_shutdown(async move {
                // A dropped sender (last handle gone) also stops the server.
                let _ = stopped.await;
            });
            if let Err(e) = serve.await {
                tracing::warn!(error = %e, "fake IdP server stopped with an error");
            }
        });
        let server = ServerHandle {
            stop: Some(stop),
            task: Some(task),
        };
        Ok(FakeIdp {
            shared,
            addr,
            server: Arc::new(Mutex::new(server)),
        })
    }

    /// Bound socket address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT` (no trailing slash).
    pub fn base_url(&self) -> String {
        self.shared.base_url.clone()
    }

    /// `{base}/{tenant}/oauth2/v2.0/authorize`.
    pub fn authorize_url(&self, tenant: &str) -> String {
        format!("{}/{tenant}/oauth2/v2.0/authorize", self.shared.base_url)
    }

    /// `{base}/{tenant}/oauth2/v2.0/token`.
    pub fn token_url(&self, tenant: &str) -> String {
        format!("{}/{tenant}/oauth2/v2.0/token", self.shared.base_url)
    }

    /// `{base}/{tenant}/oauth2/v2.0/devicecode`.
    pub fn device_url(&self, tenant: &str) -> String {
        format!("{}/{tenant}/oauth2/v2.0/devicecode", self.shared.base_url)
    }

    /// `{base}/introspect`.
    pub fn introspect_url(&self) -> String {
        format!("{}/introspect", self.shared.base_url)
    }

    /// Request counters so far.
    pub fn counters(&self) -> IdpCounters {
        self.shared.counters.snapshot()
    }

    /// Every token-endpoint request so far, oldest first.
    pub fn token_requests(&self) -> Vec<TokenRequest> {
        lock(&self.shared.requests).clone()
    }

    /// What an access token grants, if it was issued here, is not revoked and has not expired.
    pub fn validate_access_token(&self, token: &str) -> Option<TokenInfo> {
        self.shared.lookup_access(token)
    }

    /// Revoke one access token (SMTP AUTH with it fails from now on; refresh still works).
    /// Returns false when the token is unknown.
    pub fn revoke_access_token(&self, token: &str) -> bool {
        match lock(&self.shared.grants).access.get_mut(token) {
            Some(rec) => {
                rec.revoked = true;
                true
            }
            None => false,
        }
    }

    /// Revoke every access token issued so far.
    pub fn revoke_all_access_tokens(&self) {
        for rec in lock(&self.shared.grants).access.values_mut() {
            rec.revoked = true;
        }
    }

    /// Know `account` (its public key) and grant domain-wide delegation of `delegated_scopes` to
    /// its client id; no scopes: the Workspace admin has not granted delegation.
    pub fn register_service_account(&self, account: &ServiceAccount, delegated_scopes: &[&str]) {
        jwt::register(&self.shared, account, delegated_scopes);
    }

    /// Seed a refresh token as if `user` had consented (new token family), without the browser flow.
    pub fn issue_refresh_token(&self, client_id: &str, user: &str, scope: &str) -> String {
        let tid = self.shared.config.tenant_id.clone();
        lock(&self.shared.grants).add_refresh(None, client_id, user, scope, &tid)
    }

    /// Mint a delegated access token directly (for SMTP tests that skip the token endpoint).
    ///
    /// # Panics
    /// If `scope` is not a valid single-resource scope.
    pub fn issue_access_token(&self, client_id: &str, user: &str, scope: &str) -> String {
        let parsed = parse_scope(scope).unwrap_or_else(|e| panic!("bad scope {scope:?}: {e:?}"));
        let mint = Mint {
            client_id,
            user,
            tid: &self.shared.config.tenant_id,
            scope: &parsed,
            app_only: false,
            roles: &[],
            expires_in: self.shared.expires_in.load(Ordering::Relaxed),
        };
        grants::store_access(&self.shared, &mint)
    }

    /// The newest still-usable refresh token of `user`.
    pub fn current_refresh_token_for(&self, user: &str) -> Option<String> {
        lock(&self.shared.grants).current_refresh_for(user)
    }

    /// State of a refresh token issued here.
    pub fn refresh_token_state(&self, token: &str) -> Option<RefreshState> {
        lock(&self.shared.grants)
            .refresh
            .get(token)
            .map(|r| r.state)
    }

    /// Revoke every active refresh token of `user` (next refresh: `invalid_grant` AADSTS50173).
    pub fn revoke_refresh_tokens_for(&self, user: &str) -> usize {
        lock(&self.shared.grants).set_user_refresh_state(user, RefreshState::Revoked)
    }

    /// Expire every active refresh token of `user` (next refresh: `invalid_grant` AADSTS700082).
    pub fn expire_refresh_tokens_for(&self, user: &str) -> usize {
        lock(&self.shared.grants).set_user_refresh_state(user, RefreshState::Expired)
    }

    /// Lifetime (`expires_in`) of access tokens issued from now on. 0 makes them expire at once.
    pub fn set_expires_in(&self, secs: u64) {
        self.shared.expires_in.store(secs, Ordering::Relaxed);
    }

    /// Delay added before every answer from now on.
    pub fn set_latency(&self, latency: Duration) {
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.shared.latency_us.store(us, Ordering::Relaxed);
    }

    /// The next `n` token-endpoint requests (any grant type) fail with `error`.
    pub fn inject(&self, n: usize, error: InjectedError) {
        let mut q = lock(&self.shared.injected);
        q.extend(std::iter::repeat_n(error, n));
    }

    /// Forget injected failures not yet used.
    pub fn clear_injections(&self) {
        lock(&self.shared.injected).clear();
    }

    /// While down, every endpoint answers HTTP 503 (`Retry-After: 1`); TCP is still accepted.
    /// To refuse connections entirely, use [`shutdown`](Self::shutdown).
    pub fn set_down(&self, down: bool) {
        self.shared.down.store(down, Ordering::Relaxed);
    }

    /// While set, the authorize endpoint redirects with `error=access_denied` (user declined).
    pub fn set_consent_denied(&self, denied: bool) {
        self.shared.consent_denied.store(denied, Ordering::Relaxed);
    }

    /// Approve a pending device code as the configured default user. False if unknown.
    pub fn approve_device(&self, user_code: &str) -> bool {
        let user = self.shared.config.default_user.clone();
        self.approve_device_as(user_code, &user)
    }

    /// Approve a pending device code as `user`. False if unknown.
    pub fn approve_device_as(&self, user_code: &str, user: &str) -> bool {
        lock(&self.shared.devices).set_status(user_code, DeviceStatus::Approved(user.to_owned()))
    }

    /// Decline a device code (polls get `access_denied`). False if unknown.
    pub fn deny_device(&self, user_code: &str) -> bool {
        lock(&self.shared.devices).set_status(user_code, DeviceStatus::Denied)
    }

    /// Expire a device code now (polls get `expired_token`). False if unknown.
    pub fn expire_device(&self, user_code: &str) -> bool {
        lock(&self.shared.devices).set_status(user_code, DeviceStatus::Expired)
    }

    /// The next `n` polls of a pending device code get `slow_down` instead of `authorization_pending`.
    pub fn inject_slow_down(&self, n: u32) {
        lock(&self.shared.devices).slow_downs += n;
    }

    /// User codes of device authorizations still pending, oldest first is not guaranteed.
    pub fn pending_device_codes(&self) -> Vec<String> {
        lock(&self.shared.devices)
            .grants
            .values()
            .filter(|g| g.status == DeviceStatus::Pending)
            .map(|g| g.user_code.clone())
            .collect()
    }

    /// Wait until a device authorization is pending (bounded by `timeout`) and return its user code.
    pub async fn wait_for_device_code(&self, timeout: Duration) -> Option<String> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(code) = self.pending_device_codes().into_iter().next() {
                return Some(code);
            }
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Stop listening (new connections are refused) and wait up to 5 s for the server to end.
    pub async fn shutdown(&self) {
        let (stop, task) = {
            let mut s = lock(&self.server);
            (s.stop.take(), s.task.take())
        };
        if let Some(stop) = stop {
            let _ = stop.send(());
        }
        if let Some(mut task) = task
            && tokio::time::timeout(Duration::from_secs(5), &mut task)
                .await
                .is_err()
        {
            task.abort();
        }
    }
}
