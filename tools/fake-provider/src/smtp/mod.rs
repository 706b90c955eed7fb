//! Fake provider SMTP server (Exchange Online or Gmail flavour) over real TCP and rustls.

mod config;
mod conn;
mod sasl;
mod session;
pub mod tls;

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::task::{AbortHandle, JoinHandle};
use tokio_rustls::TlsAcceptor;

pub use config::{AuthAdvert, Flavor, SmtpConfig, SmtpTls};
pub use tls::TestCa;

use crate::idp::lock;
use crate::{Error, FakeIdp};

/// Ready-made replies for [`FakeSmtp::inject`], worded like Exchange Online.
pub mod replies {
    /// Temporary failure (any stage).
    pub const TEMP_ERROR: &str = "451 4.7.0 Temporary server error. Please try again later.";
    /// Service shutting down (closes the connection).
    pub const SERVICE_UNAVAILABLE: &str =
        "421 4.3.2 Service not available, closing transmission channel";
    /// Concurrent connection limit at connect (closes the connection).
    pub const CONCURRENT_LIMIT: &str =
        "432 4.3.2 STOREDRV.ClientSubmit; sender thread limit exceeded";
    /// SMTP AUTH disabled for the tenant (at AUTH).
    pub const AUTH_DISABLED: &str = "535 5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the Tenant. Visit https://aka.ms/smtp_auth_disabled for more information.";
    /// From is not the mailbox (at end of data).
    pub const SEND_AS_DENIED: &str = "554 5.2.0 STOREDRV.Submission.Exception:SendAsDeniedException.MapiExceptionSendAsDenied; Failed to process message due to a permanent exception with message Cannot submit message.";
    /// Unknown recipient (at RCPT).
    pub const UNKNOWN_RECIPIENT: &str = "550 5.1.1 RESOLVER.ADR.RecipNotFound; not found";
    /// Daily quota (at end of data).
    pub const QUOTA_EXCEEDED: &str = "554 5.2.0 STOREDRV.Submission.Exception:SubmissionQuotaExceededException; Failed to process message due to a permanent exception with message Cannot submit message.";
}

/// Where an injected reply replaces the normal one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stage {
    /// The greeting; a 4xx/5xx greeting closes the connection.
    Connect,
    /// The final AUTH reply (after the client sent its credentials).
    Auth,
    /// MAIL FROM.
    MailFrom,
    /// RCPT TO: `None` for any recipient, or one address (case-insensitive).
    Rcpt(Option<String>),
    /// The reply to DATA (normally 354).
    Data,
    /// The reply after the final dot (or BDAT LAST); the message is recorded only on 2xx.
    DataEnd,
}

/// Use as `times` for an injection that never runs out.
pub const ALWAYS: u32 = u32::MAX;

#[derive(Debug, Clone)]
struct Injection {
    stage: Stage,
    reply: String,
    left: u32,
}

/// Called with every accepted message as it arrives (see [`FakeSmtp::on_arrival`]).
pub type ArrivalFn = Arc<dyn Fn(&ReceivedMessage) + Send + Sync>;

/// A custom token check: `(user, token) -> accepted`.
pub type CheckFn = Arc<dyn Fn(&str, &str) -> bool + Send + Sync>;

/// Decides whether an XOAUTH2/OAUTHBEARER token is good for `user`.
#[derive(Clone)]
pub enum TokenValidator {
    /// Look the token up in this IdP: active, issued for `user` (or app-only), right audience.
    Idp(FakeIdp),
    /// Custom check `(user, token) -> accepted` (benchmarks without an IdP).
    Fn(CheckFn),
    /// Every token is good.
    AcceptAny,
}

impl TokenValidator {
    /// Wrap a closure.
    pub fn from_fn(f: impl Fn(&str, &str) -> bool + Send + Sync + 'static) -> Self {
        TokenValidator::Fn(Arc::new(f))
    }

    fn check(&self, user: Option<&str>, token: &str, audiences: &[String]) -> Option<String> {
        match self {
            TokenValidator::AcceptAny => Some(user.unwrap_or("").to_owned()),
            TokenValidator::Fn(f) => {
                f(user.unwrap_or(""), token).then(|| user.unwrap_or("").to_owned())
            }
            TokenValidator::Idp(idp) => {
                let info = idp.validate_access_token(token)?;
                if !audiences.iter().any(|a| a.eq_ignore_ascii_case(&info.aud)) {
                    return None;
                }
                match user {
                    // App-only tokens may send as any mailbox the app was granted: the fake grants all.
                    Some(u) if info.app_only || u.eq_ignore_ascii_case(&info.user) => {
                        Some(u.to_owned())
                    }
                    None if !info.app_only => Some(info.user),
                    _ => None,
                }
            }
        }
    }
}

impl fmt::Debug for TokenValidator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenValidator::Idp(idp) => f.debug_tuple("Idp").field(idp).finish(),
            TokenValidator::Fn(_) => f.write_str("Fn(..)"),
            TokenValidator::AcceptAny => f.write_str("AcceptAny"),
        }
    }
}

/// A message as the server received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedMessage {
    /// Reverse path without angle brackets (empty for `<>`).
    pub mail_from: String,
    /// Accepted recipients, in order.
    pub rcpt_to: Vec<String>,
    /// Exact bytes after dot-unstuffing, without the final `.CRLF` (or the BDAT chunks joined).
    pub data: Vec<u8>,
    /// The authenticated user.
    pub auth_user: Option<String>,
    /// Whether the session was encrypted.
    pub tls: bool,
    /// MAIL FROM parameters as sent (`SIZE=123`, `BODY=8BITMIME`, `SMTPUTF8`).
    pub mail_params: Vec<String>,
    /// The content came in BDAT chunks (RFC 3030), not after DATA.
    pub chunked: bool,
}

/// What the server has seen so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SmtpCounters {
    /// TCP connections accepted.
    pub connections: u64,
    /// Completed TLS handshakes (STARTTLS or implicit).
    pub tls_handshakes: u64,
    /// Failed TLS handshakes (e.g. a client that rejected the certificate).
    pub tls_failures: u64,
    /// Successful AUTH exchanges.
    pub auth_successes: u64,
    /// Failed AUTH exchanges (bad token, injected failure, basic auth).
    pub auth_failures: u64,
    /// AUTH commands sent before TLS: a correct client never does this.
    pub cleartext_auth_attempts: u64,
    /// Messages accepted (250 after the data).
    pub messages: u64,
}

#[derive(Debug, Default)]
struct CounterCells {
    connections: AtomicU64,
    tls_handshakes: AtomicU64,
    tls_failures: AtomicU64,
    auth_successes: AtomicU64,
    auth_failures: AtomicU64,
    cleartext_auth_attempts: AtomicU64,
    messages: AtomicU64,
}

fn bump(a: &AtomicU64) {
    a.fetch_add(1, Ordering::Relaxed);
}

/// State shared by the sessions and the test-facing handle.
struct Shared {
    config: SmtpConfig,
    audiences: Vec<String>,
    validator: TokenValidator,
    acceptor: TlsAcceptor,
    down: AtomicBool,
    injections: Mutex<Vec<Injection>>,
    messages: Mutex<Vec<ReceivedMessage>>,
    counters: CounterCells,
    arrived: Notify,
    on_arrival: Mutex<Option<ArrivalFn>>,
    /// Per authenticated user (lower case): sessions open now and the most seen at once.
    user_sessions: Mutex<HashMap<String, SessionCount>>,
}

#[derive(Debug, Clone, Copy, Default)]
struct SessionCount {
    open: u32,
    peak: u32,
}

/// One authenticated session of a user, counted while it lives.
struct UserSession {
    shared: Arc<Shared>,
    user: String,
}

impl UserSession {
    fn start(shared: &Arc<Shared>, user: &str) -> Self {
        let user = user.to_ascii_lowercase();
        let mut map = lock(&shared.user_sessions);
        let c = map.entry(user.clone()).or_default();
        c.open += 1;
        c.peak = c.peak.max(c.open);
        UserSession {
            shared: shared.clone(),
            user,
        }
    }
}

impl Drop for UserSession {
    fn drop(&mut self) {
        if let Some(c) = lock(&self.shared.user_sessions).get_mut(&self.user) {
            c.open = c.open.saturating_sub(1);
        }
    }
}

impl Shared {
    /// The injected reply for this stage, if any (consumes one use).
    fn take_injection(&self, stage: &Stage) -> Option<String> {
        let mut list = lock(&self.injections);
        let matches = |inj: &Injection| match (&inj.stage, stage) {
            (Stage::Rcpt(None), Stage::Rcpt(_)) => true,
            (Stage::Rcpt(Some(a)), Stage::Rcpt(Some(b))) => a.eq_ignore_ascii_case(b),
            (a, b) => a == b,
        };
        let i = list.iter().position(|inj| inj.left > 0 && matches(inj))?;
        let inj = &mut list[i];
        if inj.left != ALWAYS {
            inj.left -= 1;
        }
        let reply = inj.reply.clone();
        if inj.left == 0 {
            list.remove(i);
        }
        Some(reply)
    }

    /// Bodies are read when kept, or when an arrival hook wants to see them.
    fn wants_bodies(&self) -> bool {
        self.config.keep_bodies || lock(&self.on_arrival).is_some()
    }

    fn record(&self, msg: ReceivedMessage) {
        bump(&self.counters.messages);
        let hook = lock(&self.on_arrival).clone();
        if let Some(hook) = hook {
            hook(&msg);
        }
        if self.config.keep_bodies {
            lock(&self.messages).push(msg);
        }
        self.arrived.notify_waiters();
    }
}

/// Aborts the accept loop and every session when the last handle is dropped.
struct Tasks {
    accept: Mutex<Option<JoinHandle<()>>>,
    sessions: Mutex<Vec<AbortHandle>>,
}

impl Drop for Tasks {
    fn drop(&mut self) {
        if let Some(t) = lock(&self.accept).take() {
            t.abort();
        }
        for s in lock(&self.sessions).drain(..) {
            s.abort();
        }
    }
}

/// A running fake SMTP server. Cheap to clone; dropping the last clone stops it.
#[derive(Clone)]
pub struct FakeSmtp {
    shared: Arc<Shared>,
    tasks: Arc<Tasks>,
    addr: SocketAddr,
    ca: Arc<TestCa>,
}

impl fmt::Debug for FakeSmtp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FakeSmtp")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl FakeSmtp {
    /// Generate a CA and a server certificate, bind `config.listen`, and accept in the background.
    pub async fn start(config: SmtpConfig, validator: TokenValidator) -> Result<FakeSmtp, Error> {
        let ca = TestCa::generate()?;
        let acceptor = conn::acceptor(ca.server_config(&config.cert_names)?);
        let listener = tokio::net::TcpListener::bind(config.listen).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            audiences: config.accepted_audiences(),
            config,
            validator,
            acceptor,
            down: AtomicBool::new(false),
            injections: Mutex::default(),
            messages: Mutex::default(),
            counters: CounterCells::default(),
            arrived: Notify::new(),
            on_arrival: Mutex::default(),
            user_sessions: Mutex::default(),
        });
        let tasks = Arc::new(Tasks {
            accept: Mutex::new(None),
            sessions: Mutex::default(),
        });
        let accept = tokio::spawn(accept_loop(
            listener,
            shared.clone(),
            Arc::downgrade(&tasks),
        ));
        *lock(&tasks.accept) = Some(accept);
        Ok(FakeSmtp {
            shared,
            tasks,
            addr,
            ca: Arc::new(ca),
        })
    }

    /// Bound address (`127.0.0.1:PORT`).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Bound port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// PEM of the CA that signed the server certificate (what a client must trust).
    pub fn ca_pem(&self) -> String {
        self.ca.ca_pem()
    }

    /// The test CA itself (DER, client configs).
    pub fn ca(&self) -> &TestCa {
        &self.ca
    }

    /// Make `reply` replace the normal answer at `stage`, `times` times ([`ALWAYS`] = forever).
    /// A reply may hold several lines separated by CRLF; a 421 reply also closes the connection.
    pub fn inject(&self, stage: Stage, reply: impl Into<String>, times: u32) {
        let inj = Injection {
            stage,
            reply: reply.into(),
            left: times,
        };
        lock(&self.shared.injections).push(inj);
    }

    /// Forget every injection not yet used.
    pub fn clear_injections(&self) {
        lock(&self.shared.injections).clear();
    }

    /// While down, connections are accepted but greeted with 421 and closed, and running
    /// sessions get 421 to their next command.
    pub fn set_down(&self, down: bool) {
        self.shared.down.store(down, Ordering::Relaxed);
    }

    /// Close the listening socket (new connections are refused); running sessions go on.
    pub fn stop_listening(&self) {
        if let Some(t) = lock(&self.tasks.accept).take() {
            t.abort();
        }
    }

    /// Stop listening and abort every running session.
    pub fn shutdown(&self) {
        self.stop_listening();
        for s in lock(&self.tasks.sessions).drain(..) {
            s.abort();
        }
    }

    /// Messages accepted so far (empty when `keep_bodies` is false).
    pub fn messages(&self) -> Vec<ReceivedMessage> {
        lock(&self.shared.messages).clone()
    }

    /// Forget the recorded messages (counters stay).
    pub fn clear_messages(&self) {
        lock(&self.shared.messages).clear();
    }

    /// Call `f` with every message accepted from now on, as it arrives (before `keep_bodies`
    /// decides whether to keep it): arrival times for latency figures without keeping bodies.
    /// With a hook the content is read even when `keep_bodies` is false.
    /// Replaces an earlier hook.
    pub fn on_arrival(&self, f: impl Fn(&ReceivedMessage) + Send + Sync + 'static) {
        *lock(&self.shared.on_arrival) = Some(Arc::new(f));
    }

    /// Per authenticated user (lower case): the most sessions open at once since the start or
    /// the last [`reset_session_peaks`](Self::reset_session_peaks). A session counts from its
    /// successful AUTH until it closes.
    pub fn session_peaks(&self) -> HashMap<String, u32> {
        lock(&self.shared.user_sessions)
            .iter()
            .map(|(u, c)| (u.clone(), c.peak))
            .collect()
    }

    /// Start counting peaks afresh: each user's peak becomes the sessions open now.
    pub fn reset_session_peaks(&self) {
        for c in lock(&self.shared.user_sessions).values_mut() {
            c.peak = c.open;
        }
    }

    /// Counters so far.
    pub fn counters(&self) -> SmtpCounters {
        let c = &self.shared.counters;
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        SmtpCounters {
            connections: g(&c.connections),
            tls_handshakes: g(&c.tls_handshakes),
            tls_failures: g(&c.tls_failures),
            auth_successes: g(&c.auth_successes),
            auth_failures: g(&c.auth_failures),
            cleartext_auth_attempts: g(&c.cleartext_auth_attempts),
            messages: g(&c.messages),
        }
    }

    /// Wait until at least `n` messages were accepted or `timeout` passed; returns
    /// [`messages`](Self::messages) (fewer than `n` on timeout).
    pub async fn wait_for_messages(&self, n: usize, timeout: Duration) -> Vec<ReceivedMessage> {
        self.wait_for_count(n as u64, timeout).await;
        self.messages()
    }

    /// Wait until the `messages` counter reaches `n` (works with `keep_bodies = false`).
    /// Returns whether it did before `timeout`.
    pub async fn wait_for_count(&self, n: u64, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.shared.arrived.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.shared.counters.messages.load(Ordering::Relaxed) >= n {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.shared.counters.messages.load(Ordering::Relaxed) >= n;
            }
        }
    }
}

async fn accept_loop(
    listener: tokio::net::TcpListener,
    shared: Arc<Shared>,
    tasks: std::sync::Weak<Tasks>,
) {
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                // EMFILE and friends: back off briefly instead of spinning.
                tracing::warn!(error = %e, "fake SMTP accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        bump(&shared.counters.connections);
        let _ = tcp.set_nodelay(true);
        let handle = tokio::spawn(session::run(shared.clone(), tcp, peer)).abort_handle();
        let Some(tasks) = tasks.upgrade() else { return };
        let mut sessions = lock(&tasks.sessions);
        if sessions.len() >= 1024 {
            sessions.retain(|h| !h.is_finished());
        }
        sessions.push(handle);
    }
}
