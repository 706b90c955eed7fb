//! The relay's TCP listener: accepts connections within a limit, runs a session on each, and
//! drains gracefully on shutdown.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::backend::RelayBackend;
use super::budget::Budget;
use super::config::{
    BareLfPolicy, DEFAULT_MAX_MESSAGE_SIZE, DEFAULT_MAX_RECIPIENTS, SessionConfig,
};
use super::connection;
use super::guard::FailureMemory;
use super::live::LiveConfig;
use super::load::Load;
use super::network::IpNetwork;
use super::stats::RelayStats;
use crate::domain::Host;
use crate::store::auth_failures::SharedFailures;

/// Wait after an accept error (such as running out of file descriptors) before trying again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// How long a refused connection may take to receive its `421`.
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(5);
/// After the grace period, how long sessions get to say `421` and go.
const FORCED_CLOSE_WAIT: Duration = Duration::from_secs(5);

/// 500 bytes a second, Postfix's default: a 35 MB message may take 20 hours, yet a client that
/// dribbles a byte a minute is gone after `data_timeout`.
pub const DEFAULT_MIN_DATA_RATE: u32 = 500;
/// 256 MiB: seven 35 MB messages buffered at once, or hundreds of ordinary ones.
pub const DEFAULT_MESSAGE_MEMORY_BUDGET: usize = 256 * 1024 * 1024;

/// Settings of one relay listener.
#[derive(Debug, Clone)]
pub struct ListenerConfig {
    /// Name in the greeting, EHLO reply, `Received:` header and generated `Message-ID`s.
    pub hostname: Host,
    /// Concurrent sessions; more connections get `421 4.7.0 Too many connections`.
    pub max_connections: usize,
    /// Longest wait for a whole command line, from when the relay starts waiting for it until
    /// its end (RFC 5321 §4.5.3.2.7 suggests 5 minutes). A byte now and then does not extend it.
    pub command_timeout: Duration,
    /// Longest wait for the next block of message content (10 minutes).
    pub data_timeout: Duration,
    /// Message content must arrive at this many bytes per second on average (Postfix's
    /// `smtpd_min_data_rate`): each read extends the deadline by its size over this rate, never
    /// past `data_timeout` from now. 0 turns the rate check off (a per-read timeout remains).
    pub min_data_rate: u32,
    /// In stress mode (over 80 % of `max_connections` in use), the longest wait for a command
    /// line, a block of message content, a TLS handshake or a reply write. Sessions that see
    /// stress mode keep this timeout to their end.
    pub stress_timeout: Duration,
    /// Bytes of message content that all sessions together may hold in memory. A message
    /// that finds none left waits (`memory_wait` in all), then is refused with `452 4.3.1`.
    pub message_memory_budget: usize,
    /// How long one message may wait for memory from the budget, in all, before it is refused.
    pub memory_wait: Duration,
    /// Largest message accepted, in octets (announced as `SIZE`).
    pub max_message_size: usize,
    /// Recipients per message.
    pub max_recipients: usize,
    /// Allow AUTH over unencrypted non-loopback connections: passwords cross the network in clear.
    pub allow_cleartext_auth: bool,
    /// Loopback clients may AUTH without TLS (off when a local proxy forwards remote clients).
    pub cleartext_auth_on_loopback: bool,
    /// Clients in these networks may AUTH without TLS (`server.plain_networks`, on the plain
    /// listener). Their passwords cross the network in clear: LAN segments only.
    pub cleartext_auth_networks: Vec<IpNetwork>,
    /// Clients in these networks may send without AUTH. None by default: never an open relay.
    pub trusted_networks: Vec<IpNetwork>,
    /// Clients in these networks may end lines and messages with a bare LF (`LF.LF`) and AUTH
    /// after HELO. None by default: elsewhere only `CRLF.CRLF` ends a message (no smuggling).
    pub bare_lf_networks: Vec<IpNetwork>,
    /// Add a `Received:` header naming the relay and the relay user.
    pub received_header: bool,
    /// What to do with bare LFs in message content.
    pub bare_lf: BareLfPolicy,
    /// On shutdown, how long running sessions may take to finish their message.
    pub shutdown_grace: Duration,
}

impl ListenerConfig {
    pub fn new(hostname: Host) -> Self {
        Self {
            hostname,
            max_connections: 100,
            command_timeout: Duration::from_secs(5 * 60),
            data_timeout: Duration::from_secs(10 * 60),
            min_data_rate: DEFAULT_MIN_DATA_RATE,
            stress_timeout: Duration::from_secs(10),
            message_memory_budget: DEFAULT_MESSAGE_MEMORY_BUDGET,
            memory_wait: Duration::from_secs(5),
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            max_recipients: DEFAULT_MAX_RECIPIENTS,
            allow_cleartext_auth: false,
            cleartext_auth_on_loopback: true,
            cleartext_auth_networks: Vec::new(),
            trusted_networks: Vec::new(),
            bare_lf_networks: Vec::new(),
            received_header: true,
            bare_lf: BareLfPolicy::default(),
            shutdown_grace: Duration::from_secs(30),
        }
    }

    pub fn is_trusted(&self, ip: IpAddr) -> bool {
        self.trusted_networks.iter().any(|net| net.contains(ip))
    }

    pub fn is_bare_lf_allowed(&self, ip: IpAddr) -> bool {
        self.bare_lf_networks.iter().any(|net| net.contains(ip))
    }

    pub(crate) fn session_config(&self, starttls_available: bool) -> SessionConfig {
        let mut c = SessionConfig::new(self.hostname.clone());
        c.max_message_size = self.max_message_size;
        c.max_recipients = self.max_recipients;
        c.allow_cleartext_auth = self.allow_cleartext_auth;
        c.cleartext_auth_on_loopback = self.cleartext_auth_on_loopback;
        c.cleartext_auth_networks = self.cleartext_auth_networks.clone();
        c.starttls_available = starttls_available;
        c.received_header = self.received_header;
        c.bare_lf = self.bare_lf;
        c
    }
}

/// How the listener uses TLS.
#[derive(Clone)]
pub(crate) enum TlsSetup {
    None,
    /// Plain connect, STARTTLS offered (port 587).
    StartTls(TlsAcceptor),
    /// TLS from the first byte (port 465, RFC 8314).
    Implicit(TlsAcceptor),
}

/// What every session of one listener shares.
pub(crate) struct Shared<B> {
    pub backend: Arc<B>,
    /// As the listener started: timeouts, budget and limits that size shared structures.
    pub config: ListenerConfig,
    /// What new sessions start from; a reload replaces it.
    pub live: LiveConfig,
    pub tls: TlsSetup,
    pub stats: RelayStats,
    /// Failed AUTHs by client address, across this listener's connections.
    pub failures: FailureMemory,
    /// Session slots in use, and whether that is stress.
    pub load: Arc<Load>,
    /// Memory for message content in flight, shared by all sessions of this listener.
    pub budget: Budget,
    /// Set when shutdown starts: sessions finish their message, then say `421`.
    pub soft: CancellationToken,
    /// Set when the grace period is over: sessions say `421` at once.
    pub hard: CancellationToken,
}

/// A relay listener on an already-bound socket.
///
/// ```no_run
/// # async fn demo(backend: std::sync::Arc<impl postern::smtp::server::RelayBackend>) -> std::io::Result<()> {
/// use postern::smtp::server::{ListenerConfig, RelayServer};
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
/// let config = ListenerConfig::new("relay.example".parse().unwrap());
/// let server = RelayServer::new(listener, config, backend);
/// let shutdown = tokio_util::sync::CancellationToken::new();
/// server.run(shutdown).await
/// # }
/// ```
pub struct RelayServer<B> {
    listener: TcpListener,
    config: ListenerConfig,
    live: LiveConfig,
    backend: Arc<B>,
    tls: TlsSetup,
    stats: RelayStats,
    shared_failures: Option<SharedFailures>,
}

impl<B> std::fmt::Debug for RelayServer<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelayServer")
            .field("local_addr", &self.listener.local_addr().ok())
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl<B: RelayBackend> RelayServer<B> {
    pub fn new(listener: TcpListener, config: ListenerConfig, backend: Arc<B>) -> Self {
        Self {
            live: LiveConfig::new(config.clone(), false),
            listener,
            config,
            backend,
            tls: TlsSetup::None,
            stats: RelayStats::default(),
            shared_failures: None,
        }
    }

    /// Takes a bound std listener (call inside a Tokio runtime).
    pub fn from_std(
        listener: std::net::TcpListener,
        config: ListenerConfig,
        backend: Arc<B>,
    ) -> io::Result<Self> {
        listener.set_nonblocking(true)?;
        Ok(Self::new(TcpListener::from_std(listener)?, config, backend))
    }

    /// Offer STARTTLS with this certificate (submission port 587).
    pub fn with_starttls(mut self, acceptor: TlsAcceptor) -> Self {
        self.tls = TlsSetup::StartTls(acceptor);
        self.live = LiveConfig::new(self.config.clone(), true);
        self
    }

    /// Speak TLS from the first byte (submissions port 465).
    pub fn with_implicit_tls(mut self, acceptor: TlsAcceptor) -> Self {
        self.tls = TlsSetup::Implicit(acceptor);
        self
    }

    /// Count failed AUTHs with the other instances on the store (and the other listeners).
    pub fn with_shared_failures(mut self, failures: SharedFailures) -> Self {
        self.shared_failures = Some(failures);
        self
    }

    /// Count into these (shared) counters, e.g. one set for the 587 and 465 listeners.
    pub fn with_stats(mut self, stats: RelayStats) -> Self {
        self.stats = stats;
        self
    }

    /// The handle a reload uses to change what new sessions start from (take it after the TLS
    /// mode is set).
    pub fn live_config(&self) -> LiveConfig {
        self.live.clone()
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The listener's counters; keep the handle, it stays live while the server runs.
    pub fn stats(&self) -> RelayStats {
        self.stats.clone()
    }

    /// Accepts connections until `shutdown` is cancelled, then stops accepting, lets running
    /// sessions finish their message within the grace period, closes the rest with `421`, and
    /// returns.
    pub async fn run(self, shutdown: CancellationToken) -> io::Result<()> {
        let max = self
            .config
            .max_connections
            .clamp(1, Semaphore::MAX_PERMITS.min(u32::MAX as usize));
        let load = Load::new(max);
        let budget = Budget::new(self.config.message_memory_budget);
        let shared = Arc::new(Shared {
            backend: self.backend,
            live: self.live,
            config: self.config,
            tls: self.tls,
            stats: self.stats,
            failures: FailureMemory::new(self.shared_failures),
            load,
            budget,
            soft: shutdown.clone(),
            hard: CancellationToken::new(),
        });
        let addr = self.listener.local_addr()?;
        let tls = match &shared.tls {
            TlsSetup::None => "none",
            TlsSetup::StartTls(_) => "starttls",
            TlsSetup::Implicit(_) => "implicit",
        };
        info!(%addr, tls, max_connections = max, "relay listening");
        loop {
            let accepted = tokio::select! {
                _ = shutdown.cancelled() => break,
                accepted = self.listener.accept() => accepted,
            };
            match accepted {
                Ok((stream, peer)) => admit(&shared, stream, peer),
                Err(e) => {
                    warn!(error = %e, "relay accept failed");
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(ACCEPT_BACKOFF) => {}
                    }
                }
            }
        }
        drop(self.listener);
        drain(&shared).await;
        info!(%addr, "relay stopped");
        Ok(())
    }
}

fn admit<B: RelayBackend>(shared: &Arc<Shared<B>>, mut stream: TcpStream, peer: SocketAddr) {
    // Replies are small and interactive: do not let Nagle hold them back.
    let _ = stream.set_nodelay(true);
    match shared.load.try_enter() {
        Some(slot) => {
            tokio::spawn(connection::serve(Arc::clone(shared), stream, peer, slot));
        }
        None => {
            shared.stats.connection_refused();
            warn!(%peer, "relay connection refused: connection limit reached");
            tokio::spawn(async move {
                let refuse = async {
                    stream
                        .write_all(b"421 4.7.0 Too many connections, try again later\r\n")
                        .await?;
                    stream.shutdown().await
                };
                let _ = tokio::time::timeout(REFUSAL_TIMEOUT, refuse).await;
            });
        }
    }
}

/// Every session holds a slot: all slots free means all sessions are done.
async fn drain<B>(shared: &Shared<B>) {
    let grace = shared.config.shutdown_grace;
    if shared.load.all_free(grace).await {
        return;
    }
    warn!(
        ?grace,
        "relay sessions still running after the grace period: closing them"
    );
    shared.hard.cancel();
    shared.load.all_free(FORCED_CLOSE_WAIT).await;
}
