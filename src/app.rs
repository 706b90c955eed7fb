//! Start-up as a type: [`Application::build`] binds every listener (port 0 allowed) and exposes
//! the bound addresses; [`Application::run_until_stopped`] runs the relay, the delivery workers,
//! the token keep-alive and the HTTP endpoints until shutdown, then drains them.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::domain::Host;
use crate::metrics::{ConnectionGauge, Metrics, StoreGauges};
use crate::oauth::TokenManager;
use crate::outbox::{Delivery, Outbox, RelayIntake, Wakers};
use crate::reload::{Live, Reloader, SettingsSource};
use crate::settings::Settings;
use crate::smtp::server::{IpNetwork, ListenerConfig, LiveCert, RelayServer, RelayStats, tls};
use crate::store::Store;
use crate::store::auth_failures::SharedFailures;
use crate::store::password_check::{self, PasswordChecks};
use crate::systemd::Notifier;
use crate::telemetry::LogControl;

/// How often idle connections are checked for a keep-alive refresh.
const KEEPALIVE_EVERY: Duration = Duration::from_secs(3600);

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind {
        addr: SocketAddr,
        what: &'static str,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("relay TLS: {0}")]
    Tls(#[from] tls::TlsSetupError),
    #[error("setting {key}: {message}")]
    Setting { key: &'static str, message: String },
    #[error("settings file connections: {0}")]
    Declared(#[from] crate::declared::DeclaredError),
    #[error("token manager: {0}")]
    Tokens(#[from] crate::oauth::TokenError),
    #[error("notifications: {0}")]
    Notify(#[from] crate::notify::NotifyError),
}

/// Everything `serve` runs, bound and ready.
pub struct Application {
    settings: Settings,
    store: Store,
    tokens: TokenManager,
    outbox: Outbox,
    committer: tokio::task::JoinHandle<()>,
    metrics: Metrics,
    stats: RelayStats,
    http: TcpListener,
    http_addr: SocketAddr,
    relay: RelayServer<RelayIntake>,
    relay_addr: SocketAddr,
    /// Failed relay AUTHs and admin logins, counted with the other instances on the store.
    failures: SharedFailures,
    relay_tls: Option<(RelayServer<RelayIntake>, SocketAddr)>,
    /// The LAN-only cleartext listener (`server.plain_listen`), when configured.
    relay_plain: Option<(RelayServer<RelayIntake>, SocketAddr)>,
    /// The relay's certificate file, read at scrape time for its expiry.
    relay_cert: std::path::PathBuf,
    notifier: crate::notify::Notifier,
    /// What a reload may change in the running listeners.
    live: Live,
    /// Where a reload reads the settings again; without it SIGHUP keeps its default (exit).
    reload: Option<(SettingsSource, Option<LogControl>)>,
    notify: Notifier,
}

impl std::fmt::Debug for Application {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Application")
            .field("http", &self.http_addr)
            .field("relay", &self.relay_addr)
            .finish_non_exhaustive()
    }
}

/// Pending connections the kernel may hold for us (clamped to `net.core.somaxconn`). The
/// standard library's 128 overflows in a burst of app connections: the overflow then waits for
/// SYN-ACK retransmissions, seconds per connection.
const LISTEN_BACKLOG: u32 = 4096;

async fn bind(
    addr: SocketAddr,
    what: &'static str,
) -> Result<(TcpListener, SocketAddr), StartError> {
    let err = |source| StartError::Bind { addr, what, source };
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()
    } else {
        tokio::net::TcpSocket::new_v6()
    }
    .map_err(err)?;
    // As std's bind does: a restart may rebind while old connections sit in TIME_WAIT.
    socket.set_reuseaddr(true).map_err(err)?;
    socket.bind(addr).map_err(err)?;
    let l = socket.listen(LISTEN_BACKLOG).map_err(err)?;
    let bound = l.local_addr().map_err(err)?;
    Ok((l, bound))
}

pub(crate) fn listener_config(settings: &Settings) -> Result<ListenerConfig, StartError> {
    let s = &settings.server;
    let hostname = Host::parse(&s.hostname).map_err(|e| StartError::Setting {
        key: "server.hostname",
        message: e.to_string(),
    })?;
    let mut c = ListenerConfig::new(hostname);
    c.max_connections = s.max_connections as usize;
    c.max_message_size = usize::try_from(s.max_message_size).unwrap_or(usize::MAX);
    c.message_memory_budget = usize::try_from(s.message_memory_budget).unwrap_or(usize::MAX);
    c.max_recipients = s.max_recipients as usize;
    c.allow_cleartext_auth = s.allow_cleartext_auth;
    c.cleartext_auth_on_loopback = s.cleartext_auth_on_loopback;
    c.received_header = s.received_header;
    c.shutdown_grace = Duration::from_secs(s.shutdown_grace_secs);
    c.trusted_networks = s
        .trusted_networks
        .iter()
        .map(|n| IpNetwork::parse(n))
        .collect::<Result<_, _>>()
        .map_err(|e| StartError::Setting {
            key: "server.trusted_networks",
            message: e.to_string(),
        })?;
    if !c.trusted_networks.is_empty() {
        tracing::warn!(
            networks = ?s.trusted_networks,
            "server.trusted_networks lets these clients send as any connection's mailbox without AUTH; \
             bind each device's network to a relay user instead \
             (`postern relay-user add NAME --connection C --network CIDR`), then empty this setting"
        );
    }
    c.bare_lf_networks = s
        .bare_lf_networks
        .iter()
        .map(|n| IpNetwork::parse(n))
        .collect::<Result<_, _>>()
        .map_err(|e| StartError::Setting {
            key: "server.bare_lf_networks",
            message: e.to_string(),
        })?;
    Ok(c)
}

/// The plain listener's policy: no TLS at all (a device that sees STARTTLS offered tries its
/// TLS 1.0 and fails rather than go on in clear), and AUTH without TLS only from
/// `server.plain_networks` (others get `538 5.7.11`), whatever `allow_cleartext_auth` says.
pub(crate) fn plain_listener_config(
    settings: &Settings,
    base: &ListenerConfig,
) -> Result<ListenerConfig, StartError> {
    let s = &settings.server;
    let mut c = base.clone();
    c.allow_cleartext_auth = false;
    c.cleartext_auth_networks = s
        .plain_networks
        .iter()
        .map(|n| IpNetwork::parse(n))
        .collect::<Result<_, _>>()
        .map_err(|e| StartError::Setting {
            key: "server.plain_networks",
            message: e.to_string(),
        })?;
    if c.cleartext_auth_networks.is_empty() {
        return Err(StartError::Setting {
            key: "server.plain_networks",
            message: "plain_listen needs the networks allowed to AUTH without TLS".into(),
        });
    }
    tracing::warn!(
        networks = ?s.plain_networks,
        "server.plain_listen accepts AUTH without TLS from these networks: their relay passwords \
         cross the network in clear text"
    );
    Ok(c)
}

fn password_checks(settings: &Settings) -> PasswordChecks {
    let parallel = match settings.server.max_password_checks {
        0 => password_check::default_parallel(),
        n => n as usize,
    };
    PasswordChecks::new(parallel, password_check::DEFAULT_WAIT)
}

impl Application {
    pub async fn build(settings: Settings) -> Result<Self, StartError> {
        let store = Store::open_settings(&settings.store)
            .await?
            .with_password_checks(password_checks(&settings))
            .with_lease_secs(settings.delivery.lease_secs);
        crate::declared::sync(&store, &settings.connections).await?;
        let tokens = TokenManager::new(store.clone(), settings.tokens.clone())?;
        let wakers = Wakers::default();
        let (outbox, committer) = Outbox::start(store.clone(), wakers);
        let intake = Arc::new(RelayIntake::new(store.clone(), outbox.clone()));
        let stats = RelayStats::default();

        // Built here so that a missing webhook secret stops start-up, not a notification later.
        let notifier = crate::notify::Notifier::new(
            store.clone(),
            settings.notifications.clone(),
            tokens.clone(),
            settings.delivery.clone(),
        )?;
        let config = listener_config(&settings)?;
        // A live certificate, so that a reload can renew it for new handshakes.
        let (cert, relay_cert) = match (&settings.server.tls_cert, &settings.server.tls_key) {
            (Some(cert), Some(key)) => (LiveCert::from_pem_files(cert, key)?, cert.clone()),
            _ => {
                let s = tls::self_signed_acceptor(&settings.store.data_dir, &config.hostname)?;
                tracing::warn!(
                    cert = %s.cert_path.display(),
                    "the relay uses a self-signed certificate: apps must trust it (or set server.tls_cert and server.tls_key)"
                );
                (
                    LiveCert::from_pem_files(&s.cert_path, &s.key_path)?,
                    s.cert_path,
                )
            }
        };
        let acceptor = cert.acceptor()?;
        let (l, relay_addr) = bind(settings.server.smtp_listen, "SMTP relay").await?;
        let failures = SharedFailures::new(store.clone());
        let relay = RelayServer::new(l, config.clone(), intake.clone())
            .with_starttls(acceptor.clone())
            .with_stats(stats.clone())
            .with_shared_failures(failures.clone());
        let relay_plain = match settings.server.plain_listen {
            Some(addr) => {
                let plain = plain_listener_config(&settings, &config)?;
                let (l, bound) = bind(addr, "SMTP relay, cleartext (LAN only)").await?;
                Some((
                    RelayServer::new(l, plain, intake.clone())
                        .with_stats(stats.clone())
                        .with_shared_failures(failures.clone()),
                    bound,
                ))
            }
            None => None,
        };
        let relay_tls = match settings.server.smtps_listen {
            Some(addr) => {
                let (l, bound) = bind(addr, "SMTP relay, implicit TLS").await?;
                Some((
                    RelayServer::new(l, config, intake)
                        .with_implicit_tls(acceptor)
                        .with_stats(stats.clone())
                        .with_shared_failures(failures.clone()),
                    bound,
                ))
            }
            None => None,
        };
        let (http, http_addr) = bind(settings.server.http_listen, "HTTP").await?;
        let live = Live {
            cert,
            relay: relay.live_config(),
            relay_tls: relay_tls.as_ref().map(|(r, _)| r.live_config()),
            relay_plain: relay_plain.as_ref().map(|(r, _)| r.live_config()),
        };
        Ok(Self {
            failures,
            settings,
            store,
            tokens,
            outbox,
            committer,
            metrics: Metrics::default(),
            stats,
            http,
            http_addr,
            relay,
            relay_addr,
            relay_tls,
            relay_plain,
            relay_cert,
            notifier,
            live,
            reload: None,
            notify: Notifier::default(),
        })
    }

    /// Reload the settings from `source` on SIGHUP (`postern reload`), and the log level with
    /// `log` when the level comes from the settings.
    pub fn with_reload(mut self, source: SettingsSource, log: Option<LogControl>) -> Self {
        self.reload = Some((source, log));
        self
    }

    /// Tell systemd when serve is ready, reloading and stopping.
    pub fn with_notifier(mut self, notify: Notifier) -> Self {
        self.notify = notify;
        self
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    pub fn relay_addr(&self) -> SocketAddr {
        self.relay_addr
    }

    pub fn relay_tls_addr(&self) -> Option<SocketAddr> {
        self.relay_tls.as_ref().map(|(_, a)| *a)
    }

    /// The LAN-only cleartext listener's address (`server.plain_listen`), when configured.
    pub fn relay_plain_addr(&self) -> Option<SocketAddr> {
        self.relay_plain.as_ref().map(|(_, a)| *a)
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Serves until `shutdown` completes; then stops accepting, lets sessions and in-flight
    /// deliveries finish (within the grace period) and closes the store.
    pub async fn run_until_stopped(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let stop = CancellationToken::new();
        let grace = Duration::from_secs(self.settings.server.shutdown_grace_secs);
        let mut tasks = tokio::task::JoinSet::new();

        let delivery = Delivery::new(
            self.store.clone(),
            self.settings.delivery.clone(),
            self.tokens.clone(),
            self.outbox.clone(),
            self.metrics.clone(),
        );
        tasks.spawn(delivery.run(stop.clone()));
        tasks.spawn(keepalive(self.tokens.clone(), stop.clone()));
        tasks.spawn(self.notifier.run(stop.clone()));
        tasks.spawn(self.failures.clone().run(stop.clone()));
        tasks.spawn(crate::retention::run(
            self.store.clone(),
            self.settings.retention.clone(),
            self.metrics.clone(),
            stop.clone(),
        ));
        let relay_stop = stop.clone();
        tasks.spawn(async move {
            if let Err(e) = self.relay.run(relay_stop).await {
                tracing::error!(error = %e, "relay listener failed");
            }
        });
        if let Some((server, _)) = self.relay_tls {
            let s = stop.clone();
            tasks.spawn(async move {
                if let Err(e) = server.run(s).await {
                    tracing::error!(error = %e, "implicit-TLS relay listener failed");
                }
            });
        }
        if let Some((server, _)) = self.relay_plain {
            let s = stop.clone();
            tasks.spawn(async move {
                if let Err(e) = server.run(s).await {
                    tracing::error!(error = %e, "cleartext relay listener failed");
                }
            });
        }

        let public_url = self
            .settings
            .server
            .public_url
            .as_deref()
            .and_then(|u| url::Url::parse(u).ok());
        let state = crate::http::AppState::new(self.store.clone(), self.settings.clone())
            .with_public_url(public_url)
            .with_outbox(self.outbox.clone())
            .with_tokens(self.tokens.clone())
            .with_shared_failures(self.failures.clone());
        let instance = match self.settings.server.instance.trim() {
            "" => std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_string())
                .unwrap_or_else(|_| "postern".into()),
            name => name.to_string(),
        };
        let metrics_state = MetricsState {
            instance,
            store: self.store.clone(),
            metrics: self.metrics.clone(),
            stats: self.stats.clone(),
            relay_cert: self.relay_cert.clone(),
        };
        let router = crate::http::router(state).merge(
            Router::new()
                .route("/metrics", get(metrics))
                .with_state(metrics_state),
        );
        let http_stop = stop.clone();
        let limits = crate::http::ConnectionLimits::from_settings(&self.settings.server);
        tasks.spawn(async move {
            let serve = crate::http::serve(self.http, router, limits, async move {
                http_stop.cancelled().await
            });
            if let Err(e) = serve.await {
                tracing::error!(error = %e, "HTTP server failed");
            }
        });

        // Signal handlers first, READY after: systemd may send SIGHUP or SIGTERM as soon as it
        // hears READY, and a signal without a handler ends the process.
        let mut shutdown = std::pin::pin!(shutdown);
        let stopped = futures::poll!(shutdown.as_mut()).is_ready();
        let reload = self.reload.map(|(source, log)| {
            let reloader = Reloader {
                store: self.store.clone(),
                source,
                current: self.settings.clone(),
                live: self.live.clone(),
                log,
            };
            let hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup());
            (reloader, hangups)
        });
        self.notify.ready();
        match reload {
            _ if stopped => {}
            None => shutdown.await,
            Some((_, Err(e))) => {
                tracing::warn!(error = %e, "cannot listen for SIGHUP: reloads need a restart");
                shutdown.await
            }
            Some((reloader, Ok(hangups))) => {
                reload_until(reloader, hangups, &self.notify, shutdown).await
            }
        }
        self.notify.stopping();
        tracing::info!(
            grace_secs = grace.as_secs(),
            "shutting down: no new sessions; finishing what is in flight"
        );
        stop.cancel();
        let drained = tokio::time::timeout(grace + Duration::from_secs(5), async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                "some tasks did not finish within the grace period; their messages stay queued"
            );
            tasks.abort_all();
        }
        drop(self.outbox);
        let _ = self.committer.await;
        self.store.close().await;
        Ok(())
    }
}

/// Reloads on every SIGHUP until `shutdown` completes.
async fn reload_until(
    mut reloader: Reloader,
    mut hangups: tokio::signal::unix::Signal,
    notify: &Notifier,
    mut shutdown: std::pin::Pin<&mut impl std::future::Future<Output = ()>>,
) {
    loop {
        tokio::select! {
            () = &mut shutdown => return,
            Some(()) = hangups.recv() => {
                notify.reloading();
                // Reading files and parsing PEM: quick, and no other task waits on it.
                reloader.reload_and_log().await;
                notify.reloaded();
            }
        }
    }
}

async fn keepalive(tokens: TokenManager, stop: CancellationToken) {
    loop {
        match tokens.keepalive().await {
            Ok(report) => tracing::debug!(?report, "token keep-alive"),
            Err(e) => tracing::warn!(error = %e, "token keep-alive failed"),
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(KEEPALIVE_EVERY) => {}
        }
    }
}

#[derive(Clone)]
struct MetricsState {
    /// `server.instance`, or the host name.
    instance: String,
    store: Store,
    metrics: Metrics,
    stats: RelayStats,
    relay_cert: std::path::PathBuf,
}

async fn metrics(
    State(s): State<MetricsState>,
) -> Result<([(axum::http::HeaderName, &'static str); 1], String), axum::http::StatusCode> {
    let store = store_gauges(&s.store).await.map_err(|e| {
        tracing::error!(error = %e, "metrics: cannot read the store");
        axum::http::StatusCode::INTERNAL_SERVER_ERROR
    })?;
    let passwords = s.store.password_checks().counters();
    let mut body = s.metrics.render(&store, &s.stats.snapshot(), &passwords);
    let conns = s.store.list_connections().await.map_err(|e| {
        tracing::error!(error = %e, "metrics: cannot list connections");
        axum::http::StatusCode::INTERNAL_SERVER_ERROR
    })?;
    let cert = tls::certificate_not_after(&s.relay_cert);
    body.push_str(&crate::metrics::render_expiry(&conns, cert));
    match s.store.store_bytes().await {
        Ok(bytes) => body.push_str(&s.metrics.render_store(bytes)),
        Err(e) => tracing::warn!(error = %e, "metrics: cannot read the store's size"),
    }
    // Which instance answered (several may share one PostgreSQL store) and on which store.
    body.push_str(&format!(
        "# HELP postern_instance_info This instance (server.instance, default the host name) and its store.\n\
         # TYPE postern_instance_info gauge\npostern_instance_info{{instance=\"{}\",store=\"{}\"}} 1\n",
        crate::metrics::escape(&s.instance),
        s.store.backend().name()
    ));
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        body,
    ))
}

async fn store_gauges(store: &Store) -> Result<StoreGauges, crate::store::StoreError> {
    let mut by_status: std::collections::BTreeMap<String, i64> = Default::default();
    for (_, status, n) in store.message_counts().await? {
        *by_status.entry(status).or_default() += n;
    }
    let waiting: std::collections::HashMap<i64, i64> =
        store.waiting_by_connection().await?.into_iter().collect();
    let connections = store
        .list_connections()
        .await?
        .iter()
        .map(|c| ConnectionGauge {
            name: c.name().to_string(),
            status: c.effective_status().as_str(),
            waiting: waiting.get(&c.id).copied().unwrap_or(0),
            overrides: c.settings.limits,
        })
        .collect();
    let presets = ["microsoft", "google"]
        .into_iter()
        .filter_map(|p| {
            Some((
                p,
                p.parse::<crate::domain::Provider>().ok()?.preset().limits,
            ))
        })
        .collect();
    Ok(StoreGauges {
        by_status: by_status.into_iter().collect(),
        connections,
        presets,
    })
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
