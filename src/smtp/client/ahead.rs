//! Cross-message pipelining (RFC 2920 §3.1, whose example sends the next MAIL after a message's
//! final dot): while one message is being sent and the caller already knows the next, the next
//! one's `RSET MAIL RCPT... DATA` go out in the same write as this message's final dot. Their
//! replies come back behind this message's `250`, so a session carries one message per round
//! trip instead of two. Servers with CHUNKING already get one round trip (BDAT) and never get
//! this; servers without PIPELINING never do either.
//!
//! Once the next message's `DATA` is out the server waits for its content, and an SMTP client
//! cannot take a `DATA` back: a session with a transaction ahead either sends exactly that
//! message next, or is closed without a word (no `QUIT`, which the server would take as message
//! text). The server then drops the unfinished message; nothing is delivered.

use super::command::Command;
use super::connection::SmtpConnection;
use super::message::{Envelope, encode_body, mail_params};

/// A transaction whose envelope and `DATA` went out ahead of its turn.
pub(super) struct Ahead {
    envelope: Envelope,
    /// The message as the caller gave it, to check that the next send is this very message.
    message: Vec<u8>,
    /// The message as it goes on the wire (dot-stuffed, final dot included).
    pub(super) body: Vec<u8>,
}

impl Ahead {
    pub(super) fn is_for(&self, envelope: &Envelope, message: &[u8]) -> bool {
        self.envelope == *envelope && self.message == message
    }
}

impl SmtpConnection {
    /// Queues `RSET MAIL RCPT... DATA` of the next message, to go out after the current one's
    /// data; queues nothing if the next message would not go this way anyway (no PIPELINING,
    /// CHUNKING offered, or the message fails a check the normal way would report).
    pub(super) fn queue_ahead(&mut self, envelope: &Envelope, message: &[u8]) {
        if !self.caps.pipelining || self.caps.chunking || envelope.check().is_err() {
            return;
        }
        if let Some(limit) = self.caps.size_limit()
            && message.len() as u64 > limit
        {
            return;
        }
        // The spare encoding buffer, if the last message left one.
        let mut body = std::mem::take(&mut self.body);
        let scan = encode_body(message, &mut body);
        let Ok(params) = mail_params(&self.caps, envelope, scan) else {
            self.body = body;
            return;
        };
        // Like any transaction on a reused session, it starts with RSET.
        self.queue_envelope(envelope, params, true);
        self.wire.queue(Command::Data);
        self.ahead = Some(Ahead {
            envelope: envelope.clone(),
            message: message.to_vec(),
            body,
        });
    }
}
