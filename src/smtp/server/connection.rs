//! One relay connection: reads with timeouts, feeds the session, performs its actions.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::timeout;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tracing::{Instrument, debug, info, warn};

use super::backend::RelayBackend;
use super::config::PeerInfo;
use super::envelope::StoreFailure;
use super::identity::AuthOutcome;
use super::listener::{Shared, TlsSetup};
use super::session::{Action, Session};

/// Per session: 1,000 idle sessions hold 8 MiB of these. Bigger reads save nothing under TLS,
/// which hands over at most one 16 KiB record at a time anyway.
const READ_BUFFER: usize = 8 * 1024;
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
enum ConnError {
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("timed out {0}")]
    Timeout(&'static str),
    #[error("server shutting down during the TLS handshake")]
    Shutdown,
}

enum Flow {
    StartTls,
    Closed,
}

pub(crate) async fn serve<B: RelayBackend>(
    shared: Arc<Shared<B>>,
    stream: TcpStream,
    addr: SocketAddr,
    _permit: OwnedSemaphorePermit,
) {
    let _open = shared.stats.session_opened();
    let peer = PeerInfo {
        addr,
        tls_active: matches!(shared.tls, TlsSetup::Implicit(_)),
        trusted: shared.config.is_trusted(addr.ip()),
    };
    let mut session = Session::new(Arc::clone(&shared.session_config), peer);
    // A guesser who reconnects picks up where the last connection left off.
    session.remember_auth_failures(shared.failures.recent(addr.ip()));
    let span = tracing::info_span!("relay_session", id = session.id(), peer = %addr);
    async {
        debug!(trusted = session.peer().trusted, "relay connection opened");
        match run(&shared, stream, &mut session).await {
            Ok(()) => debug!("relay connection closed"),
            Err(e) => debug!(error = %e, "relay connection ended"),
        }
    }
    .instrument(span)
    .await;
}

async fn run<B: RelayBackend>(
    shared: &Shared<B>,
    stream: TcpStream,
    session: &mut Session,
) -> Result<(), ConnError> {
    let mut stream = stream;
    match &shared.tls {
        TlsSetup::Implicit(acceptor) => {
            let mut tls = handshake(shared, acceptor, stream).await?;
            drive(shared, &mut tls, session, true).await?;
        }
        TlsSetup::StartTls(acceptor) => {
            if let Flow::StartTls = drive(shared, &mut stream, session, true).await? {
                let mut tls = handshake(shared, acceptor, stream).await?;
                session.tls_started();
                drive(shared, &mut tls, session, false).await?;
            }
        }
        TlsSetup::None => {
            drive(shared, &mut stream, session, true).await?;
        }
    }
    Ok(())
}

async fn handshake<B>(
    shared: &Shared<B>,
    acceptor: &TlsAcceptor,
    stream: TcpStream,
) -> Result<TlsStream<TcpStream>, ConnError> {
    let result = tokio::select! {
        r = timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)) => r,
        _ = shared.hard.cancelled() => return Err(ConnError::Shutdown),
    };
    match result {
        Ok(Ok(tls)) => Ok(tls),
        Ok(Err(e)) => {
            shared.stats.tls_failed();
            debug!(error = %e, "relay TLS handshake failed");
            Err(e.into())
        }
        Err(_) => {
            shared.stats.tls_failed();
            Err(ConnError::Timeout("during the TLS handshake"))
        }
    }
}

enum Event {
    Read(usize),
    TimedOut,
    Stop,
}

/// Runs the session over `io` until it closes or asks for TLS.
async fn drive<B, S>(
    shared: &Shared<B>,
    io: &mut S,
    session: &mut Session,
    greet: bool,
) -> Result<Flow, ConnError>
where
    B: RelayBackend,
    S: AsyncRead + AsyncWrite + Unpin,
{
    if greet {
        write(shared, io, &session.greeting().to_bytes()).await?;
    }
    let mut buf = vec![0u8; READ_BUFFER];
    loop {
        // On shutdown an idle session stops now; one in the middle of a message finishes it.
        let idle = !session.in_transaction();
        let limit = if session.is_receiving_data() {
            shared.config.data_timeout
        } else {
            shared.config.command_timeout
        };
        let event = tokio::select! {
            biased;
            _ = shared.hard.cancelled() => Event::Stop,
            _ = shared.soft.cancelled(), if idle => Event::Stop,
            read = timeout(limit, io.read(&mut buf)) => match read {
                Err(_) => Event::TimedOut,
                Ok(Ok(0)) => return Ok(Flow::Closed),
                Ok(Ok(n)) => Event::Read(n),
                Ok(Err(e)) => return Err(e.into()),
            },
        };
        let actions = match event {
            Event::Read(n) => session.feed(&buf[..n]),
            Event::TimedOut => {
                debug!("relay client timed out");
                session.timed_out()
            }
            Event::Stop => session.shutting_down(),
        };
        if let Some(flow) = perform(shared, io, session, actions).await? {
            return Ok(flow);
        }
    }
}

/// Performs the actions in order, feeding answers back to the session.
async fn perform<B, S>(
    shared: &Shared<B>,
    io: &mut S,
    session: &mut Session,
    actions: Vec<Action>,
) -> Result<Option<Flow>, ConnError>
where
    B: RelayBackend,
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut queue = VecDeque::from(actions);
    while let Some(action) = queue.pop_front() {
        match action {
            Action::Send(bytes) => write(shared, io, &bytes).await?,
            Action::Delay(delay) => {
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = shared.hard.cancelled() => {}
                }
            }
            Action::Authenticate { username, password } => {
                let check = shared
                    .backend
                    .authenticate(&username, &password, session.peer());
                let outcome = match timeout(shared.config.command_timeout, check).await {
                    Ok(Ok(Some(identity))) => {
                        shared.stats.auth(true);
                        // The message lines name the user; this one is for tracing a session.
                        debug!(user = %username, "relay user authenticated");
                        AuthOutcome::Success(identity)
                    }
                    Ok(Ok(None)) => {
                        shared.stats.auth(false);
                        shared.failures.failed(session.peer().addr.ip());
                        warn!(user = %username, "relay authentication failed");
                        AuthOutcome::Failure
                    }
                    Ok(Err(e)) => {
                        warn!(error = %e, "relay backend could not check credentials");
                        AuthOutcome::TemporaryFailure
                    }
                    Err(_) => {
                        warn!("relay backend timed out checking credentials");
                        AuthOutcome::TemporaryFailure
                    }
                };
                queue.extend(session.auth_result(outcome));
            }
            Action::Deliver { envelope, message } => {
                let identity = session.identity().cloned();
                let (from, recipients, size) = (
                    envelope.from.to_string(),
                    envelope.recipients.len(),
                    message.len(),
                );
                let store = shared.backend.accept(identity.as_ref(), envelope, message);
                let result = timeout(shared.config.data_timeout, store)
                    .await
                    .unwrap_or(Err(StoreFailure::Temporary));
                let user = identity.as_ref().map(|i| i.user.as_str());
                match &result {
                    Ok(id) => {
                        info!(queue_id = %id, %from, recipients, size, ?user, "relay accepted message")
                    }
                    Err(e) => {
                        warn!(error = %e, %from, recipients, size, ?user, "relay message not stored")
                    }
                }
                shared.stats.message(result.is_ok());
                queue.extend(session.message_stored(result));
            }
            Action::StartTls => return Ok(Some(Flow::StartTls)),
            Action::Close => {
                let _ = timeout(CLOSE_TIMEOUT, io.shutdown()).await;
                return Ok(Some(Flow::Closed));
            }
        }
    }
    Ok(None)
}

async fn write<B, S>(shared: &Shared<B>, io: &mut S, bytes: &[u8]) -> Result<(), ConnError>
where
    S: AsyncWrite + Unpin,
{
    let send = async {
        io.write_all(bytes).await?;
        io.flush().await
    };
    match timeout(shared.config.command_timeout, send).await {
        Ok(result) => Ok(result?),
        Err(_) => Err(ConnError::Timeout("writing a reply")),
    }
}
