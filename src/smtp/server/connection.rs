//! One relay connection: reads within deadlines, feeds the session, performs its actions, and
//! reserves memory from the listener's budget as a message grows.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tracing::{Instrument, debug, info, warn};

use super::backend::{Arriving, RelayBackend};
use super::budget::Reservation;
use super::config::PeerInfo;
use super::deadline::Deadlines;
use super::envelope::StoreFailure;
use super::identity::AuthOutcome;
use super::listener::{Shared, TlsSetup};
use super::load::Slot;
use super::session::{Action, Session};

/// Per session: 1,000 idle sessions hold 8 MiB of these. Bigger reads save nothing under TLS,
/// which hands over at most one 16 KiB record at a time anyway.
const READ_BUFFER: usize = 8 * 1024;
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// Finding the relay user bound to the client's address is a lookup in memory, or a reload
/// of the list every few seconds.
const DEVICE_LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

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
    _slot: Slot,
) {
    let _open = shared.stats.session_opened();
    // The policy as it is now: a reload during the session does not change it.
    let policy = shared.live.get();
    let peer = PeerInfo {
        addr,
        tls_active: matches!(shared.tls, TlsSetup::Implicit(_)),
        trusted: policy.config.is_trusted(addr.ip()),
        lenient: policy.config.is_bare_lf_allowed(addr.ip()),
    };
    let device = timeout(DEVICE_LOOKUP_TIMEOUT, shared.backend.device(&peer))
        .await
        .unwrap_or_else(|_| {
            warn!(peer = %addr, "relay device lookup timed out");
            None
        });
    let mut session = Session::new(Arc::clone(&policy.session), peer);
    if let Some(device) = device {
        session.bind_device(device);
    }
    // A guesser who reconnects picks up where the last connection left off.
    session.remember_auth_failures(shared.failures.recent(addr.ip()));
    let span = tracing::info_span!("relay_session", id = session.id(), peer = %addr);
    async {
        debug!(
            trusted = session.peer().trusted,
            lenient = session.peer().lenient,
            device = session.identity().map(|i| i.user.as_str()),
            "relay connection opened"
        );
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
    let limit = if shared.load.is_stressed() {
        HANDSHAKE_TIMEOUT.min(shared.config.stress_timeout)
    } else {
        HANDSHAKE_TIMEOUT
    };
    let result = tokio::select! {
        r = timeout(limit, acceptor.accept(stream)) => r,
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
    let mut stress = shared.load.stress();
    let mut deadlines = Deadlines::new(&shared.config, Instant::now(), session.completed());
    let mut memory = Reservation::default();
    let mut memory_waited = Duration::ZERO;
    // A session that has seen stress mode keeps its short timeouts (as Postfix's smtpd
    // processes started under stress do): the slots held by slow clients all free up, not
    // just enough of them to end the stress.
    let mut stressed = false;
    // The body being read, counted by the store until it is handed over (see `arriving`).
    let mut arriving: Option<Arriving> = None;
    loop {
        let reserved = reserve_memory(
            shared,
            session,
            &mut memory,
            &mut memory_waited,
            &mut deadlines,
        );
        if let Some(actions) = reserved.await {
            if let Some(flow) = perform(shared, io, session, actions, &mut arriving).await? {
                return Ok(flow);
            }
            continue;
        }
        // On shutdown an idle session stops now; one in the middle of a message finishes it.
        let idle = !session.in_transaction();
        stressed |= *stress.borrow_and_update();
        let expires = deadlines.expires(stressed);
        let mut read = 0;
        let event = tokio::select! {
            biased;
            _ = shared.hard.cancelled() => Event::Stop,
            _ = shared.soft.cancelled(), if idle => Event::Stop,
            // Stress mode came: wait again with the shorter deadline.
            Ok(()) = stress.changed(), if !stressed => continue,
            () = tokio::time::sleep_until(expires.into()) => Event::TimedOut,
            r = io.read(&mut buf) => match r {
                Ok(0) => return Ok(Flow::Closed),
                Ok(n) => Event::Read(n),
                Err(e) => return Err(e.into()),
            },
        };
        let actions = match event {
            Event::Read(n) => {
                read = n;
                session.feed(&buf[..n])
            }
            Event::TimedOut => {
                shared.stats.timed_out();
                debug!("relay client timed out");
                session.timed_out()
            }
            Event::Stop => session.shutting_down(),
        };
        if let Some(flow) = perform(shared, io, session, actions, &mut arriving).await? {
            return Ok(flow);
        }
        // A body on its way (after `354`): the store may wait a moment for it before its next
        // commit. A message left unfinished stops being waited for.
        match (session.is_receiving_data(), arriving.is_some()) {
            (true, false) => arriving = Some(shared.backend.arriving()),
            (false, true) => arriving = None,
            _ => {}
        }
        deadlines.after(
            Instant::now(),
            read,
            session.is_receiving_data(),
            session.completed(),
        );
    }
}

/// Before reading more of a message: makes sure the budget covers what the next read may add
/// (twice its size: a bare LF becomes CRLF), waiting in line for it if need be. A message that
/// cannot get it within `memory_wait` (`waited` so far, in all) is dropped and its final dot
/// answered `452 4.3.1`. Between messages the reservation is given back. Returns actions only
/// when shutdown ended the wait.
async fn reserve_memory<B>(
    shared: &Shared<B>,
    session: &mut Session,
    memory: &mut Reservation,
    waited: &mut Duration,
    deadlines: &mut Deadlines,
) -> Option<Vec<Action>> {
    let Some(held) = session.message_in_memory() else {
        memory.shrink_to(0);
        *waited = Duration::ZERO;
        return None;
    };
    let want = held + 2 * READ_BUFFER;
    memory.shrink_to(want);
    if memory.covers(want) {
        return None;
    }
    let started = Instant::now();
    let got = tokio::select! {
        biased;
        _ = shared.hard.cancelled() => return Some(session.shutting_down()),
        got = shared.budget.reserve(memory, want, shared.config.memory_wait.saturating_sub(*waited)) => got,
    };
    // The client waited on us, not we on it.
    *waited += started.elapsed();
    deadlines.paused(started.elapsed());
    if !got {
        shared.stats.memory_refused();
        warn!(
            held,
            budget = shared.config.message_memory_budget,
            "relay message memory budget exhausted: the message will be refused with 452 4.3.1"
        );
        session.out_of_memory();
        memory.shrink_to(0);
    }
    None
}

/// Performs the actions in order, feeding answers back to the session.
async fn perform<B, S>(
    shared: &Shared<B>,
    io: &mut S,
    session: &mut Session,
    actions: Vec<Action>,
    arriving: &mut Option<Arriving>,
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
                        if e.is_busy() {
                            debug!(error = %e, "relay AUTH refused for now");
                        } else {
                            warn!(error = %e, "relay backend could not check credentials");
                        }
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
                let store = shared.backend.accept(
                    identity.as_ref(),
                    envelope,
                    message,
                    arriving.take().unwrap_or_default(),
                );
                let result = timeout(shared.config.data_timeout, store)
                    .await
                    .unwrap_or(Err(StoreFailure::Temporary));
                let user = identity.as_ref().map(|i| i.user.as_str());
                match &result {
                    Ok(id) => {
                        info!(queue_id = %id, %from, recipients, size, user, "relay accepted message")
                    }
                    Err(e) => {
                        warn!(error = %e, %from, recipients, size, user, "relay message not stored")
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
    let limit = if shared.load.is_stressed() {
        shared
            .config
            .command_timeout
            .min(shared.config.stress_timeout)
    } else {
        shared.config.command_timeout
    };
    match timeout(limit, send).await {
        Ok(result) => Ok(result?),
        Err(_) => Err(ConnError::Timeout("writing a reply")),
    }
}
