//! The relay's SMTP session as a state machine without I/O: bytes in, actions out.
//!
//! The async shell ([`super::listener`]) feeds what it reads and performs the returned
//! [`Action`]s in order. When an action needs an answer (credentials checked, message stored,
//! TLS started) the session stops, keeps unread input buffered, and carries on when the shell
//! reports back. Pipelined commands are all answered in one write.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use secrecy::SecretString;

use super::command::{self, Command};
use super::config::{PeerInfo, SessionConfig};
use super::data::{DataFailure, Progress};
use super::envelope::{Envelope, StoreFailure};
use super::identity::{AuthOutcome, Identity};
use super::reply::Reply;

/// RFC 5321 §4.5.3.1.4: a command line is at most 512 octets including CRLF.
const MAX_COMMAND_LINE: usize = 512;
/// RFC 4954 §4: AUTH lines and SASL responses may be up to 12288 octets.
const MAX_AUTH_LINE: usize = 12288;
/// Input a client may pipeline while the session waits for the shell.
const MAX_PENDING_INPUT: usize = 256 * 1024;

/// What the shell must do, in order.
pub enum Action {
    /// Write these bytes: every reply produced by one call, batched into one write.
    Send(Vec<u8>),
    /// Wait this long before the next action (failed-AUTH throttling).
    Delay(Duration),
    /// Run a TLS server handshake on the connection, then call [`Session::tls_started`].
    StartTls,
    /// Check these credentials, then call [`Session::auth_result`].
    Authenticate {
        username: String,
        password: SecretString,
    },
    /// Store this message durably, then call [`Session::message_stored`].
    Deliver {
        envelope: Envelope,
        message: Vec<u8>,
    },
    /// Close the connection.
    Close,
}

impl fmt::Debug for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::Send(bytes) => write!(f, "Send({:?})", String::from_utf8_lossy(bytes)),
            Action::Delay(d) => write!(f, "Delay({d:?})"),
            Action::StartTls => f.write_str("StartTls"),
            Action::Authenticate { username, .. } => write!(f, "Authenticate({username:?})"),
            Action::Deliver { envelope, message } => {
                write!(f, "Deliver({envelope:?}, {} octets)", message.len())
            }
            Action::Close => f.write_str("Close"),
        }
    }
}

mod security;
mod transaction;

use transaction::{DataPhase, Transaction};

enum Phase {
    Command,
    Sasl(SaslStep),
    Data(Box<DataPhase>),
    Waiting(Wait),
    Closed,
}

enum SaslStep {
    Plain,
    LoginUser,
    LoginPassword { username: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wait {
    Auth,
    Store,
    Tls,
}

enum Greeting {
    Helo(String),
    Ehlo(String),
}

/// One client connection's SMTP state. See the module documentation.
pub struct Session {
    config: Arc<SessionConfig>,
    peer: PeerInfo,
    id: String,
    phase: Phase,
    greeting: Option<Greeting>,
    identity: Option<Identity>,
    /// The relay user bound to the client's network (a device): who the session is without
    /// AUTH, and again after STARTTLS.
    device: Option<Identity>,
    tx: Option<Transaction>,
    /// Unprocessed input: a partial line, or what arrived while waiting for the shell.
    buf: Vec<u8>,
    out: Vec<u8>,
    actions: Vec<Action>,
    errors: u32,
    auth_failures: u32,
    /// Inside a line already known to be too long: dropped until its LF.
    discarding: bool,
    /// Command lines and messages read to their end: the shell's deadline for the next one
    /// starts when this moves.
    completed: u64,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("id", &self.id)
            .field("peer", &self.peer)
            .field("user", &self.identity.as_ref().map(|i| &i.user))
            .field("device", &self.device.is_some())
            .finish_non_exhaustive()
    }
}

impl Session {
    pub fn new(config: Arc<SessionConfig>, peer: PeerInfo) -> Self {
        Self {
            config,
            peer,
            id: uuid::Uuid::now_v7().simple().to_string(),
            phase: Phase::Command,
            greeting: None,
            identity: None,
            device: None,
            tx: None,
            buf: Vec::new(),
            out: Vec::new(),
            actions: Vec::new(),
            errors: 0,
            auth_failures: 0,
            discarding: false,
            completed: 0,
        }
    }

    /// The client's address is bound to this relay user (a device): the session is that user
    /// without AUTH, and lenient about line endings (see [`PeerInfo::lenient`]).
    pub fn bind_device(&mut self, identity: Identity) {
        self.peer.lenient = true;
        self.identity = Some(identity.clone());
        self.device = Some(identity);
    }

    /// `220 <hostname> Postern ESMTP ready`, sent when the connection opens.
    pub fn greeting(&self) -> Reply {
        Reply::plain(220, format!("{} Postern ESMTP ready", self.config.hostname))
    }

    /// Unique per connection; names the session in logs and in the `Received:` header.
    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn peer(&self) -> &PeerInfo {
        &self.peer
    }

    pub fn identity(&self) -> Option<&Identity> {
        self.identity.as_ref()
    }

    /// Reading message content: the shell applies the data timeout instead of the command one.
    pub fn is_receiving_data(&self) -> bool {
        matches!(self.phase, Phase::Data(_))
    }

    /// A message is under way (MAIL given, not yet answered): a graceful shutdown waits for it.
    pub fn in_transaction(&self) -> bool {
        self.tx.is_some() || matches!(self.phase, Phase::Data(_) | Phase::Waiting(Wait::Store))
    }

    pub fn is_closed(&self) -> bool {
        matches!(self.phase, Phase::Closed)
    }

    #[cfg(test)]
    pub(crate) fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// How many command lines and messages have been read to their end so far. A client must
    /// complete each one in time, not merely send a byte now and then.
    pub fn completed(&self) -> u64 {
        self.completed
    }

    /// Octets of message content held in memory, while reading a message that has not failed.
    pub fn message_in_memory(&self) -> Option<usize> {
        match &self.phase {
            Phase::Data(data) => data.reader.in_memory(),
            _ => None,
        }
    }

    /// The shell could not find memory for more of the message: its content is dropped, the
    /// rest is read and discarded, and its final dot is answered `452 4.3.1`.
    pub fn out_of_memory(&mut self) {
        if let Phase::Data(data) = &mut self.phase {
            data.reader.abandon(DataFailure::NoMemory);
        }
    }

    /// Feeds bytes read from the connection. Must not be called while an `Authenticate`,
    /// `Deliver` or `StartTls` action is outstanding (input is buffered, within limits).
    pub fn feed(&mut self, input: &[u8]) -> Vec<Action> {
        if self.buf.is_empty() {
            let n = self.run(input);
            self.buf.extend_from_slice(&input[n..]);
        } else {
            let mut pending = std::mem::take(&mut self.buf);
            pending.extend_from_slice(input);
            let n = self.run(&pending);
            pending.drain(..n);
            self.buf = pending;
        }
        if self.buf.len() > MAX_PENDING_INPUT {
            self.buf.clear();
            self.reply(Reply::status(421, "4.7.0", "Too much pipelined input"));
            self.close();
        }
        self.finish_batch()
    }

    /// The answer to [`Action::Authenticate`].
    pub fn auth_result(&mut self, outcome: AuthOutcome) -> Vec<Action> {
        if !matches!(self.phase, Phase::Waiting(Wait::Auth)) {
            return Vec::new();
        }
        self.phase = Phase::Command;
        match outcome {
            AuthOutcome::Success(identity) => {
                self.identity = Some(identity);
                self.reply(Reply::status(235, "2.7.0", "Authentication successful"));
            }
            AuthOutcome::Failure => self.auth_failed(),
            AuthOutcome::TemporaryFailure => {
                self.reply(Reply::status(
                    454,
                    "4.7.0",
                    "Temporary authentication failure",
                ));
            }
        }
        self.resume()
    }

    /// The answer to [`Action::Deliver`]: the queue id, or why storing failed.
    pub fn message_stored(&mut self, result: Result<String, StoreFailure>) -> Vec<Action> {
        if !matches!(self.phase, Phase::Waiting(Wait::Store)) {
            return Vec::new();
        }
        self.phase = Phase::Command;
        self.reply(match result {
            Ok(id) => Reply::status(250, "2.0.0", format!("Ok: queued as {id}")),
            Err(StoreFailure::DiskFull) => {
                Reply::status(452, "4.3.1", "Insufficient system storage")
            }
            Err(StoreFailure::Temporary) => {
                Reply::status(451, "4.3.0", "Temporary storage failure, try again later")
            }
            Err(StoreFailure::Rejected(reason)) => Reply::status(554, "5.7.1", reason),
        });
        self.resume()
    }

    /// The TLS handshake after [`Action::StartTls`] succeeded. The client speaks next (EHLO).
    pub fn tls_started(&mut self) -> Vec<Action> {
        if matches!(self.phase, Phase::Waiting(Wait::Tls)) {
            self.peer.tls_active = true;
            self.phase = Phase::Command;
            self.buf.clear();
        }
        Vec::new()
    }

    /// The shell's read timed out: `421 4.4.2` and close.
    pub fn timed_out(&mut self) -> Vec<Action> {
        let host = &self.config.hostname;
        self.reply(Reply::status(
            421,
            "4.4.2",
            format!("{host} Timeout, closing connection"),
        ));
        self.close();
        self.finish_batch()
    }

    /// The server is stopping: `421 4.3.2` and close.
    pub fn shutting_down(&mut self) -> Vec<Action> {
        let host = &self.config.hostname;
        self.reply(Reply::status(
            421,
            "4.3.2",
            format!("{host} Service shutting down"),
        ));
        self.close();
        self.finish_batch()
    }

    /// Processes `input` as far as possible; returns how much of it was consumed.
    fn run(&mut self, input: &[u8]) -> usize {
        let mut pos = 0;
        loop {
            match &mut self.phase {
                // RFC 3207 §4.2: whatever followed STARTTLS in cleartext is discarded.
                Phase::Closed | Phase::Waiting(Wait::Tls) => return input.len(),
                Phase::Waiting(_) => return pos,
                Phase::Data(data) => {
                    let (n, progress) = data.reader.ingest(&input[pos..]);
                    pos += n;
                    let Progress::Done(result) = progress else {
                        return pos;
                    };
                    self.completed += 1;
                    if let Phase::Data(data) = std::mem::replace(&mut self.phase, Phase::Command) {
                        self.end_of_data(result, data.tx);
                    }
                }
                Phase::Command | Phase::Sasl(_) => {
                    let rest = &input[pos..];
                    let Some(lf) = rest.iter().position(|&b| b == b'\n') else {
                        if self.discarding || rest.len() >= self.line_limit(rest) {
                            // Never buffer an over-long line: drop it and answer at its end.
                            self.discarding = true;
                            return input.len();
                        }
                        return pos;
                    };
                    pos += lf + 1;
                    self.completed += 1;
                    let too_long =
                        std::mem::take(&mut self.discarding) || lf + 1 > self.line_limit(rest);
                    if too_long {
                        self.phase = Phase::Command;
                        self.error(Reply::status(500, "5.5.2", "Line too long"));
                        continue;
                    }
                    let line = &rest[..lf];
                    self.line(line.strip_suffix(b"\r").unwrap_or(line));
                }
            }
        }
    }

    fn line_limit(&self, rest: &[u8]) -> usize {
        let is_auth = rest
            .get(..5)
            .is_some_and(|p| p.eq_ignore_ascii_case(b"AUTH "));
        if is_auth || matches!(self.phase, Phase::Sasl(_)) {
            MAX_AUTH_LINE
        } else {
            MAX_COMMAND_LINE
        }
    }

    fn line(&mut self, line: &[u8]) {
        match std::mem::replace(&mut self.phase, Phase::Command) {
            Phase::Sasl(step) => self.sasl_line(step, line),
            Phase::Command => match command::parse(line) {
                Ok(cmd) => self.command(cmd),
                Err(e) => self.error(e.reply()),
            },
            other => self.phase = other,
        }
    }

    fn command(&mut self, cmd: Command) {
        match cmd {
            Command::Ehlo(host) => self.ehlo(host),
            Command::Helo(host) => {
                self.tx = None;
                self.greeting = Some(Greeting::Helo(host));
                self.reply(Reply::plain(250, self.config.hostname.to_string()));
            }
            Command::StartTls => self.starttls(),
            Command::Auth {
                mechanism,
                initial_response,
            } => self.auth(mechanism, initial_response),
            Command::Mail { from, params } => self.mail(from, params),
            Command::Rcpt { to } => self.rcpt(to),
            Command::Data => self.data(),
            Command::Rset => {
                self.tx = None;
                self.reply(Reply::status(250, "2.0.0", "Ok"));
            }
            Command::Noop => self.reply(Reply::status(250, "2.0.0", "Ok")),
            Command::Quit => {
                self.reply(Reply::status(221, "2.0.0", "Bye"));
                self.close();
            }
            Command::Vrfy => self.reply(Reply::status(
                252,
                "2.5.0",
                "Cannot VRFY user, but will accept message and attempt delivery",
            )),
            Command::Expn => self.reply(Reply::status(502, "5.5.1", "EXPN not available")),
            Command::Help => self.reply(Reply::status(
                214,
                "2.0.0",
                "Commands: EHLO HELO STARTTLS AUTH MAIL RCPT DATA RSET NOOP VRFY QUIT",
            )),
            Command::Bdat => self.error(Reply::status(502, "5.5.1", "BDAT not supported")),
            Command::Http => self.close(),
        }
    }

    fn ehlo(&mut self, host: String) {
        self.tx = None;
        let mut lines = vec![
            self.config.hostname.to_string(),
            "PIPELINING".to_string(),
            format!("SIZE {}", self.config.max_message_size),
            "8BITMIME".to_string(),
            "SMTPUTF8".to_string(),
            "ENHANCEDSTATUSCODES".to_string(),
        ];
        if self.config.starttls_available && !self.peer.tls_active {
            lines.push("STARTTLS".to_string());
        }
        if self.auth_allowed() {
            lines.push("AUTH PLAIN LOGIN".to_string());
        }
        self.greeting = Some(Greeting::Ehlo(host));
        self.reply(Reply::multiline(250, lines));
    }

    fn reply(&mut self, reply: Reply) {
        reply.write_to(&mut self.out);
    }

    /// A syntax or sequence error: counted, and too many of them end the session.
    fn error(&mut self, reply: Reply) {
        self.reply(reply);
        self.errors += 1;
        if self.errors >= self.config.max_errors {
            let host = &self.config.hostname;
            self.reply(Reply::status(
                421,
                "4.7.0",
                format!("{host} Too many errors, closing connection"),
            ));
            self.close();
        }
    }

    fn close(&mut self) {
        self.phase = Phase::Closed;
        self.buf.clear();
        self.push(Action::Close);
    }

    /// Queues an action after the replies produced so far.
    fn push(&mut self, action: Action) {
        self.flush();
        self.actions.push(action);
    }

    fn flush(&mut self) {
        if !self.out.is_empty() {
            self.actions
                .push(Action::Send(std::mem::take(&mut self.out)));
        }
    }

    /// Continues with input buffered while waiting for the shell.
    fn resume(&mut self) -> Vec<Action> {
        let mut pending = std::mem::take(&mut self.buf);
        let n = self.run(&pending);
        pending.drain(..n);
        self.buf = pending;
        self.finish_batch()
    }

    fn finish_batch(&mut self) -> Vec<Action> {
        self.flush();
        std::mem::take(&mut self.actions)
    }
}
