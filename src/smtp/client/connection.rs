//! One authenticated session with the provider, carrying any number of messages.

use std::time::{Duration, Instant};

use super::command::Command;
use super::config::{SmtpClientConfig, Timeouts};
use super::ehlo::Capabilities;
use super::error::{SmtpError, Stage};
use super::wire::Wire;

/// A session after TLS and EHLO, and (once handed out by [`SmtpClient`](super::SmtpClient))
/// after AUTH. Send with [`send`](Self::send); check [`is_usable`](Self::is_usable) before reusing
/// it after a pause; end it with [`quit`](Self::quit).
pub struct SmtpConnection {
    pub(super) wire: Wire,
    pub(super) caps: Capabilities,
    pub(super) timeouts: Timeouts,
    pub(super) host: String,
    /// When the token this session authenticated with was obtained.
    pub(super) token_acquired: Instant,
    pub(super) max_token_age: Duration,
    /// Something went wrong that leaves the session unknown (I/O error, timeout, desync).
    pub(super) broken: bool,
    /// A transaction happened since the last reset: the next one starts with RSET.
    pub(super) needs_rset: bool,
    pub(super) messages_sent: u64,
    /// When the server last answered: a session that spoke just now is not a stale one.
    pub(super) last_reply: Instant,
    /// The encoded message, kept to reuse its allocation.
    pub(super) body: Vec<u8>,
    /// The next message's transaction, sent ahead (see `ahead`): this session must send exactly
    /// that message next, or be closed without `QUIT`.
    pub(super) ahead: Option<super::ahead::Ahead>,
}

impl std::fmt::Debug for SmtpConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpConnection")
            .field("host", &self.host)
            .field("server", &self.caps.server_name)
            .field("token_age", &self.token_age())
            .field("broken", &self.broken)
            .field("messages_sent", &self.messages_sent)
            .finish_non_exhaustive()
    }
}

impl SmtpConnection {
    pub(super) fn new(wire: Wire, caps: Capabilities, config: &SmtpClientConfig) -> Self {
        Self {
            wire,
            caps,
            timeouts: config.timeouts,
            host: config.host.clone(),
            token_acquired: Instant::now(),
            max_token_age: config.max_token_age,
            broken: false,
            needs_rset: false,
            messages_sent: 0,
            last_reply: Instant::now(),
            body: Vec::new(),
            ahead: None,
        }
    }

    /// What the server offered in its EHLO after TLS.
    pub fn capabilities(&self) -> &Capabilities {
        &self.caps
    }

    /// How long ago the token behind this session was obtained.
    pub fn token_age(&self) -> Duration {
        self.token_acquired.elapsed()
    }

    /// Messages accepted on this session so far.
    pub fn messages_sent(&self) -> u64 {
        self.messages_sent
    }

    /// Can this session take another message? No if it broke, if its token is older than the
    /// configured maximum age, or if the server closed it or spoke unasked (a `421` idle timeout).
    /// Checks the socket without waiting.
    pub fn is_usable(&mut self) -> bool {
        if self.broken || self.token_age() >= self.max_token_age {
            return false;
        }
        // With a transaction sent ahead, its replies are on their way: expected, not unasked.
        if self.ahead.is_none() && self.wire.peer_has_spoken() {
            self.broken = true;
            return false;
        }
        true
    }

    /// Ends the session politely: `QUIT`, its reply, then a TLS close.
    /// With a transaction sent ahead, the server is reading message text: the session is
    /// closed without `QUIT`, and the server drops that unfinished message.
    pub async fn quit(mut self) -> Result<(), SmtpError> {
        let t = self.timeouts.command;
        if self.ahead.is_some() {
            self.wire.shutdown(t).await;
            return Ok(());
        }
        self.wire.queue(Command::Quit);
        self.wire.flush(Stage::Quit, t).await?;
        let reply = self.wire.read_reply(Stage::Quit, t).await;
        self.wire.shutdown(t).await;
        match reply {
            Ok(r) if r.is_positive() => Ok(()),
            Ok(reply) => Err(SmtpError::Rejected {
                stage: Stage::Quit,
                reply,
            }),
            // The server may close without answering QUIT; the session is over either way.
            Err(SmtpError::Closed { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }
}
