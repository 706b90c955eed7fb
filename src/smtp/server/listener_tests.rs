//! The relay listener over real TCP on 127.0.0.1 with an in-memory backend.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use secrecy::{ExposeSecret, SecretString};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_rustls::TlsConnector;
use tokio_util::sync::CancellationToken;

use super::*;
use crate::domain::Host;
use crate::outbox::arrivals::{Arrivals, Arriving};

/// Every wait in these tests is bounded by this.
pub(super) const WAIT: Duration = Duration::from_secs(10);

#[derive(Debug)]
pub(super) struct Stored {
    pub(super) user: Option<String>,
    pub(super) envelope: Envelope,
    pub(super) message: String,
    /// Messages counted on their way while this one was being stored (its own included).
    pub(super) on_the_way: usize,
}

/// Relay user `app`/`secret` may send as `@example.com`; messages are kept in memory.
#[derive(Debug, Default)]
pub(super) struct MemoryBackend {
    pub(super) stored: Mutex<Vec<Stored>>,
    pub(super) arrivals: Arrivals,
}

impl RelayBackend for MemoryBackend {
    async fn authenticate(
        &self,
        username: &str,
        password: &SecretString,
        _peer: &PeerInfo,
    ) -> Result<Option<Identity>, BackendError> {
        if username == "app" && password.expose_secret() == "secret" {
            let allowed_from = AllowedFrom::parse(["@example.com"]).unwrap();
            return Ok(Some(Identity {
                user: "app".into(),
                allowed_from,
                rewrite_from: None,
            }));
        }
        Ok(None)
    }

    fn arriving(&self) -> Arriving {
        self.arrivals.arriving()
    }

    async fn accept(
        &self,
        identity: Option<&Identity>,
        envelope: Envelope,
        message: Vec<u8>,
        arriving: Arriving,
    ) -> Result<String, StoreFailure> {
        let mut stored = self.stored.lock().unwrap();
        stored.push(Stored {
            user: identity.map(|i| i.user.clone()),
            envelope,
            message: String::from_utf8(message).unwrap(),
            on_the_way: self.arrivals.on_the_way(),
        });
        drop(arriving);
        Ok(format!("Q{}", stored.len()))
    }
}

pub(super) enum Security {
    None,
    StartTls,
    Implicit,
}

pub(super) struct Relay {
    pub(super) addr: SocketAddr,
    pub(super) backend: Arc<MemoryBackend>,
    pub(super) stats: RelayStats,
    pub(super) shutdown: CancellationToken,
    pub(super) task: JoinHandle<std::io::Result<()>>,
    connector: TlsConnector,
    _dir: tempfile::TempDir,
}

pub(super) fn listener_config() -> ListenerConfig {
    ListenerConfig::new(Host::parse("relay.test").unwrap())
}

pub(super) async fn start(config: ListenerConfig, security: Security) -> Relay {
    let dir = tempfile::tempdir().unwrap();
    let cert = tls::self_signed_acceptor(dir.path(), &config.hostname).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend = Arc::new(MemoryBackend::default());
    let mut server = RelayServer::new(listener, config, Arc::clone(&backend));
    server = match security {
        Security::None => server,
        Security::StartTls => server.with_starttls(cert.acceptor),
        Security::Implicit => server.with_implicit_tls(cert.acceptor),
    };
    let addr = server.local_addr().unwrap();
    let stats = server.stats();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(server.run(shutdown.clone()));
    Relay {
        addr,
        backend,
        stats,
        shutdown,
        task,
        connector: connector(&cert.cert_path),
        _dir: dir,
    }
}

/// A client that trusts exactly the relay's generated certificate.
fn connector(cert: &std::path::Path) -> TlsConnector {
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(cert).unwrap())
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    TlsConnector::from(Arc::new(config))
}

pub(super) struct Client<S> {
    io: BufReader<S>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Client<S> {
    fn new(io: S) -> Self {
        Self {
            io: BufReader::new(io),
        }
    }

    /// One whole reply (all its lines), or "" at end of stream.
    pub(super) async fn reply(&mut self) -> String {
        let mut reply = String::new();
        loop {
            let mut line = String::new();
            let n = tokio::time::timeout(WAIT, self.io.read_line(&mut line))
                .await
                .unwrap()
                .unwrap();
            reply.push_str(&line);
            if n == 0 || line.as_bytes().get(3) == Some(&b' ') {
                return reply;
            }
        }
    }

    pub(super) async fn send(&mut self, text: &str) {
        self.io.get_mut().write_all(text.as_bytes()).await.unwrap();
    }

    /// Sends, ignoring a connection the relay has closed.
    pub(super) async fn send_lossy(&mut self, text: &str) {
        let _ = self.io.get_mut().write_all(text.as_bytes()).await;
    }

    pub(super) async fn cmd(&mut self, line: &str) -> String {
        self.send(&format!("{line}\r\n")).await;
        self.reply().await
    }
}

pub(super) async fn connect(addr: SocketAddr) -> Client<TcpStream> {
    Client::new(TcpStream::connect(addr).await.unwrap())
}

pub(super) fn auth_plain() -> String {
    format!("AUTH PLAIN {}", STANDARD.encode("\0app\0secret"))
}

pub(super) async fn stop(relay: Relay) -> StatsSnapshot {
    relay.shutdown.cancel();
    tokio::time::timeout(WAIT, relay.task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    relay.stats.snapshot()
}

#[tokio::test]
async fn starttls_auth_and_submit() {
    let relay = start(listener_config(), Security::StartTls).await;
    let mut c = connect(relay.addr).await;
    assert_eq!(c.reply().await, "220 relay.test Postern ESMTP ready\r\n");
    assert!(c.cmd("EHLO app.test").await.contains("250-STARTTLS\r\n"));
    assert_eq!(c.cmd("STARTTLS").await, "220 2.0.0 Ready to start TLS\r\n");
    let tcp = c.io.into_inner();
    let name = ServerName::try_from("localhost").unwrap();
    let tls = relay.connector.connect(name, tcp).await.unwrap();
    let mut c = Client::new(tls);
    let ehlo = c.cmd("EHLO app.test").await;
    assert!(
        !ehlo.contains("STARTTLS") && ehlo.ends_with("250 AUTH PLAIN LOGIN\r\n"),
        "{ehlo}"
    );
    assert_eq!(
        c.cmd(&auth_plain()).await,
        "235 2.7.0 Authentication successful\r\n"
    );
    // Pipelined, as PIPELINING allows.
    c.send("MAIL FROM:<app@example.com>\r\nRCPT TO:<someone@contoso.com>\r\nDATA\r\n")
        .await;
    assert_eq!(c.reply().await, "250 2.1.0 Sender OK\r\n");
    assert_eq!(c.reply().await, "250 2.1.5 Recipient OK\r\n");
    assert!(c.reply().await.starts_with("354 "));
    let reply = c.cmd("Subject: hello\r\n\r\n..dotted\r\n.").await;
    assert_eq!(reply, "250 2.0.0 Ok: queued as Q1\r\n");
    assert_eq!(c.cmd("QUIT").await, "221 2.0.0 Bye\r\n");

    let stored = relay.backend.stored.lock().unwrap().pop().unwrap();
    assert_eq!(stored.user.as_deref(), Some("app"));
    assert_eq!(
        stored.envelope.recipients[0].as_str(),
        "someone@contoso.com"
    );
    assert!(
        stored
            .message
            .starts_with("Received: from app.test ([127.0.0.1])"),
        "{}",
        stored.message
    );
    assert!(
        stored.message.contains("with ESMTPSA id ")
            && stored.message.contains("(authenticated as app)")
    );
    assert!(
        stored.message.contains("\r\nSubject: hello\r\nDate: "),
        "{}",
        stored.message
    );
    assert!(
        stored.message.ends_with(">\r\n\r\n.dotted\r\n"),
        "{}",
        stored.message
    );
    let stats = stop(relay).await;
    assert_eq!(
        (
            stats.auth_successes,
            stats.messages_accepted,
            stats.sessions_total
        ),
        (1, 1, 1)
    );
    assert_eq!(stats.open_sessions, 0);
}

#[tokio::test]
async fn implicit_tls_and_failed_auth_is_counted() {
    let relay = start(listener_config(), Security::Implicit).await;
    let tcp = TcpStream::connect(relay.addr).await.unwrap();
    let tls = relay
        .connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    let mut c = Client::new(tls);
    assert!(c.reply().await.starts_with("220 relay.test"));
    let ehlo = c.cmd("EHLO app.test").await;
    assert!(
        !ehlo.contains("STARTTLS") && ehlo.contains("AUTH PLAIN LOGIN"),
        "{ehlo}"
    );
    let wrong = format!("AUTH PLAIN {}", STANDARD.encode("\0app\0guess"));
    assert_eq!(
        c.cmd(&wrong).await,
        "535 5.7.8 Authentication credentials invalid\r\n"
    );
    assert_eq!(c.cmd("QUIT").await, "221 2.0.0 Bye\r\n");
    let stats = stop(relay).await;
    assert_eq!(stats.auth_failures, 1);
}

#[tokio::test]
async fn connection_limit_answers_421() {
    let mut config = listener_config();
    config.max_connections = 1;
    let relay = start(config, Security::None).await;
    let mut first = connect(relay.addr).await;
    assert!(first.reply().await.starts_with("220 "));
    let mut second = connect(relay.addr).await;
    assert_eq!(
        second.reply().await,
        "421 4.7.0 Too many connections, try again later\r\n"
    );
    assert_eq!(second.reply().await, "", "refused connection is closed");
    assert_eq!(first.cmd("QUIT").await, "221 2.0.0 Bye\r\n");
    // The slot comes back once the first session has ended.
    let mut greeted = false;
    for _ in 0..100 {
        let mut again = connect(relay.addr).await;
        if again.reply().await.starts_with("220 ") {
            greeted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(greeted, "no slot after the first session quit");
    assert!(relay.stats.snapshot().connections_refused >= 1);
    stop(relay).await;
}

#[tokio::test]
async fn shutdown_lets_a_message_finish_and_closes_idle_sessions() {
    let mut config = listener_config();
    config.trusted_networks = vec!["127.0.0.0/8".parse().unwrap()];
    let relay = start(config, Security::None).await;
    let mut busy = connect(relay.addr).await;
    busy.reply().await;
    busy.cmd("HELO app.test").await;
    // A trusted network needs no AUTH; the backend sees no identity.
    assert_eq!(
        busy.cmd("MAIL FROM:<anyone@anywhere.test>").await,
        "250 2.1.0 Sender OK\r\n"
    );
    busy.cmd("RCPT TO:<r@contoso.com>").await;
    assert!(busy.cmd("DATA").await.starts_with("354 "));
    busy.send("Subject: in flight\r\n\r\nfirst half\r\n").await;
    let mut idle = connect(relay.addr).await;
    idle.reply().await;
    idle.cmd("EHLO idle.test").await;

    relay.shutdown.cancel();
    assert_eq!(
        idle.reply().await,
        "421 4.3.2 relay.test Service shutting down\r\n"
    );
    assert_eq!(idle.reply().await, "");
    // The message under way is still accepted, then the session is closed.
    assert_eq!(
        busy.cmd("second half\r\n.").await,
        "250 2.0.0 Ok: queued as Q1\r\n"
    );
    assert_eq!(
        busy.reply().await,
        "421 4.3.2 relay.test Service shutting down\r\n"
    );
    tokio::time::timeout(WAIT, relay.task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(
        TcpStream::connect(relay.addr).await.is_err(),
        "still accepting after shutdown"
    );
    let stored = relay.backend.stored.lock().unwrap().pop().unwrap();
    assert_eq!(stored.user, None);
    assert!(stored.message.ends_with("first half\r\nsecond half\r\n"));
    assert_eq!(relay.stats.snapshot().open_sessions, 0);
}

#[tokio::test]
async fn grace_period_and_timeouts_end_stuck_sessions() {
    let mut config = listener_config();
    config.trusted_networks = vec!["127.0.0.1".parse().unwrap()];
    config.shutdown_grace = Duration::from_millis(200);
    let relay = start(config, Security::None).await;
    let mut stuck = connect(relay.addr).await;
    stuck.reply().await;
    stuck.cmd("HELO app.test").await;
    stuck.cmd("MAIL FROM:<a@b.test>").await;
    stuck.cmd("RCPT TO:<c@d.test>").await;
    stuck.cmd("DATA").await;
    relay.shutdown.cancel();
    assert_eq!(
        stuck.reply().await,
        "421 4.3.2 relay.test Service shutting down\r\n"
    );
    tokio::time::timeout(WAIT, relay.task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(relay.backend.stored.lock().unwrap().is_empty());

    let mut config = listener_config();
    config.command_timeout = Duration::from_millis(200);
    let relay = start(config, Security::None).await;
    let mut silent = connect(relay.addr).await;
    silent.reply().await;
    assert_eq!(
        silent.reply().await,
        "421 4.4.2 relay.test Timeout, closing connection\r\n"
    );
    assert_eq!(silent.reply().await, "");
    stop(relay).await;
}

#[tokio::test]
async fn bare_lf_networks_end_messages_at_lf_dot_lf_and_allow_auth_after_helo() {
    let script = format!(
        "HELO mfp.test\n{}\nMAIL FROM:<app@example.com>\nRCPT TO:<r@contoso.com>\nDATA\nSubject: scan\n\nPage 1\n.\n",
        auth_plain()
    );
    let mut config = listener_config();
    config.bare_lf_networks = vec!["127.0.0.1".parse().unwrap()];
    let relay = start(config, Security::None).await;
    let mut c = connect(relay.addr).await;
    c.reply().await;
    c.send(&script).await;
    let mut replies = Vec::new();
    for _ in 0..6 {
        replies.push(c.reply().await);
    }
    let codes: Vec<&str> = replies.iter().map(|r| &r[..3]).collect();
    assert_eq!(
        codes,
        ["250", "235", "250", "250", "354", "250"],
        "{replies:?}"
    );
    let stored = relay.backend.stored.lock().unwrap().pop().unwrap();
    assert_eq!(stored.user.as_deref(), Some("app"));
    assert!(
        stored.message.contains("Subject: scan\r\n")
            && stored.message.ends_with("\r\n\r\nPage 1\r\n"),
        "{}",
        stored.message
    );
    stop(relay).await;

    // Elsewhere (the default): AUTH wants EHLO, so no mail at all.
    let relay = start(listener_config(), Security::None).await;
    let mut c = connect(relay.addr).await;
    c.reply().await;
    c.send(&script).await;
    assert!(c.reply().await.starts_with("250 "));
    assert_eq!(c.reply().await, "503 5.5.1 Send EHLO first\r\n");
    assert_eq!(c.reply().await, "530 5.7.0 Authentication required\r\n");
    stop(relay).await;
}

/// Polls `f` until it holds (every wait here is bounded by [`WAIT`]).
async fn eventually(what: &str, f: impl Fn() -> bool) {
    let start = tokio::time::Instant::now();
    while !f() {
        assert!(start.elapsed() < WAIT, "never happened: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn a_body_is_counted_on_its_way_from_354_until_stored_or_abandoned() {
    let mut config = listener_config();
    config.trusted_networks = vec!["127.0.0.0/8".parse().unwrap()];
    let relay = start(config, Security::None).await;
    let arrivals = relay.backend.arrivals.clone();
    let mut c = connect(relay.addr).await;
    c.reply().await;
    c.cmd("HELO app.test").await;
    c.cmd("MAIL FROM:<a@example.com>").await;
    c.cmd("RCPT TO:<r@contoso.com>").await;
    assert_eq!(arrivals.on_the_way(), 0, "nothing counted before DATA");
    assert!(c.cmd("DATA").await.starts_with("354 "));
    c.send("Subject: half\r\n\r\nfirst half\r\n").await;
    eventually("the body is counted on its way", || {
        arrivals.on_the_way() == 1
    })
    .await;
    assert_eq!(
        c.cmd("second half\r\n.").await,
        "250 2.0.0 Ok: queued as Q1\r\n"
    );
    // The count went with the message to the store, and ended there.
    assert_eq!(relay.backend.stored.lock().unwrap()[0].on_the_way, 1);
    assert_eq!(arrivals.on_the_way(), 0);

    // A client that leaves in the middle of a body is no longer waited for.
    c.cmd("MAIL FROM:<a@example.com>").await;
    c.cmd("RCPT TO:<r@contoso.com>").await;
    c.cmd("DATA").await;
    c.send("Subject: never finished\r\n\r\n").await;
    eventually("the unfinished body is counted", || {
        arrivals.on_the_way() == 1
    })
    .await;
    drop(c);
    eventually("the abandoned body is no longer counted", || {
        arrivals.on_the_way() == 0
    })
    .await;
    assert_eq!(relay.backend.stored.lock().unwrap().len(), 1);
    stop(relay).await;
}
