//! One mail transaction on an open session: MAIL, RCPT..., DATA, the message, per-recipient results.
//! MAIL/RCPT/DATA go out in one batch when the server offers PIPELINING (RFC 2920). A server that
//! also offers CHUNKING (RFC 3030; Exchange Online and Gmail do) gets MAIL/RCPT/`BDAT n LAST` and
//! the message in one write: one round trip per message instead of two.

use super::command::{Command, MailParams};
use super::connection::SmtpConnection;
use super::error::{SmtpError, Stage};
use super::message::{Envelope, encode_body, encode_chunk, mail_params};
use super::reply::Reply;
use super::report::{RecipientResult, SendReport};

/// Message data is written in blocks of this size, each under the command timeout.
const DATA_BLOCK: usize = 64 * 1024;

/// The encoded-message buffer is kept between messages up to this size, and freed beyond.
const KEEP_BODY_BUFFER: usize = 4 * 1024 * 1024;

/// A message up to this size goes out in the same write as its envelope (BDAT).
const INLINE_CHUNK: usize = 64 * 1024;

/// BDAT puts the message on the wire before the server has answered anything. On a session that
/// answered within this time that is safe; after a longer pause the server may have closed it,
/// and only the DATA way tells that apart (nothing sent yet) so the message can go again at once.
const BDAT_FRESH: std::time::Duration = std::time::Duration::from_secs(2);

impl SmtpConnection {
    /// Sends one message. Refused recipients do not stop the others: the report says who took it.
    ///
    /// Errors: [`SmtpError::RecipientsRefused`] if nobody was accepted (nothing was sent); the
    /// message is checked against SIZE, 8BITMIME and SMTPUTF8 before anything is sent.
    pub async fn send(
        &mut self,
        envelope: &Envelope,
        message: &[u8],
    ) -> Result<SendReport, SmtpError> {
        self.send_then(envelope, message, None).await
    }

    /// Sends one message, and when `next` is given (the message the caller sends next on this
    /// session), sends that one's envelope ahead with this one's data (see `ahead`). The next
    /// call must then be for exactly that message; any other finds the session unusable
    /// (`Closed` before MAIL FROM, so a [`Transport`](super::Transport) sends it on a new one).
    pub async fn send_then(
        &mut self,
        envelope: &Envelope,
        message: &[u8],
        next: Option<(&Envelope, &[u8])>,
    ) -> Result<SendReport, SmtpError> {
        if self.broken {
            return Err(SmtpError::Closed {
                stage: Stage::MailFrom,
            });
        }
        let result = match self.ahead.take() {
            Some(ahead) if ahead.is_for(envelope, message) => {
                self.transaction_ahead(envelope, ahead.body, next).await
            }
            // Its DATA is open on the server and cannot be taken back.
            Some(_) => Err(SmtpError::Closed {
                stage: Stage::MailFrom,
            }),
            None => self.send_now(envelope, message, next).await,
        };
        self.last_reply = std::time::Instant::now();
        match &result {
            Ok(_) => self.messages_sent += 1,
            Err(e) if !e.leaves_session_usable() => self.broken = true,
            Err(_) => {}
        }
        result
    }

    async fn send_now(
        &mut self,
        envelope: &Envelope,
        message: &[u8],
        next: Option<(&Envelope, &[u8])>,
    ) -> Result<SendReport, SmtpError> {
        envelope.check()?;
        if let Some(limit) = self.caps.size_limit()
            && message.len() as u64 > limit
        {
            // Clearly too large: refuse before spending time encoding it.
            return Err(SmtpError::MessageTooLarge {
                size: message.len() as u64,
                limit,
            });
        }
        // Encoded once, before MAIL FROM, so SIZE is exact and nothing is sent for a message
        // the server cannot take.
        let mut body = std::mem::take(&mut self.body);
        let chunking =
            self.caps.chunking && self.caps.pipelining && self.last_reply.elapsed() < BDAT_FRESH;
        let scan = if chunking {
            encode_chunk(message, &mut body)
        } else {
            encode_body(message, &mut body)
        };
        let result = match mail_params(&self.caps, envelope, scan) {
            Ok(params) if chunking => self.transaction_chunked(envelope, &body, params).await,
            Ok(params) => self.transaction(envelope, &body, params, next).await,
            Err(e) => Err(e),
        };
        self.keep_body_buffer(body);
        result
    }

    /// Keeps an encoding buffer for the next message, unless one is kept already or it grew big.
    fn keep_body_buffer(&mut self, body: Vec<u8>) {
        if self.body.capacity() == 0 && body.capacity() <= KEEP_BODY_BUFFER {
            self.body = body;
        }
    }

    async fn transaction(
        &mut self,
        envelope: &Envelope,
        body: &[u8],
        params: MailParams,
        next: Option<(&Envelope, &[u8])>,
    ) -> Result<SendReport, SmtpError> {
        let rset = std::mem::replace(&mut self.needs_rset, true);
        let (mail, rcpts, data) = if self.caps.pipelining {
            self.envelope_pipelined(envelope, params, rset).await?
        } else {
            self.envelope_in_turn(envelope, params, rset).await?
        };
        self.complete(envelope, body, mail, rcpts, data, next).await
    }

    /// A transaction whose envelope went out with the previous message: its replies are due.
    async fn transaction_ahead(
        &mut self,
        envelope: &Envelope,
        body: Vec<u8>,
        next: Option<(&Envelope, &[u8])>,
    ) -> Result<SendReport, SmtpError> {
        self.needs_rset = true;
        let (mail, rcpts) = self.read_envelope_replies(envelope, true, false).await?;
        let data = self
            .wire
            .read_reply(Stage::Data, self.timeouts.command)
            .await?;
        let result = self
            .complete(envelope, &body, mail, rcpts, Some(data), next)
            .await;
        self.keep_body_buffer(body);
        result
    }

    /// The rest of a DATA transaction once the envelope's replies are in: the message if anyone
    /// took it (with the next message's envelope behind it, when there is one), then its reply.
    async fn complete(
        &mut self,
        envelope: &Envelope,
        body: &[u8],
        mail: Reply,
        rcpts: Vec<Reply>,
        data: Option<Reply>,
        next: Option<(&Envelope, &[u8])>,
    ) -> Result<SendReport, SmtpError> {
        let recipients = recipient_results(envelope, rcpts);

        if !mail.is_positive() {
            self.end_unwanted_data(data.as_ref()).await?;
            return Err(SmtpError::Rejected {
                stage: Stage::MailFrom,
                reply: mail,
            });
        }
        if !recipients.iter().any(|r| r.accepted) {
            self.end_unwanted_data(data.as_ref()).await?;
            self.reset().await?;
            return Err(SmtpError::RecipientsRefused {
                report: SendReport {
                    recipients,
                    data_reply: None,
                },
            });
        }
        let data = match data {
            Some(reply) => reply,
            None => self.round_trip(Command::Data, Stage::Data).await?,
        };
        if data.code != 354 {
            return Err(SmtpError::Rejected {
                stage: Stage::Data,
                reply: data,
            });
        }
        if let Some((envelope, message)) = next {
            self.queue_ahead(envelope, message);
        }
        let reply = self.write_message(body).await?;
        if !reply.is_positive() {
            return Err(SmtpError::Rejected {
                stage: Stage::Message,
                reply,
            });
        }
        Ok(SendReport {
            recipients,
            data_reply: Some(reply),
        })
    }

    /// `[RSET] MAIL RCPT... BDAT n LAST` and the message in one write, then every reply in order
    /// (all of them, whatever the first say, so the session stays in step).
    async fn transaction_chunked(
        &mut self,
        envelope: &Envelope,
        body: &[u8],
        params: MailParams,
    ) -> Result<SendReport, SmtpError> {
        let t = self.timeouts.command;
        let rset = std::mem::replace(&mut self.needs_rset, true);
        self.queue_envelope(envelope, params, rset);
        self.wire.queue(Command::BdatLast(body.len()));
        let stage = if rset { Stage::Rset } else { Stage::MailFrom };
        if body.len() <= INLINE_CHUNK {
            self.wire.queue_bytes(body);
            // A failed write means the server cannot have the whole chunk: nothing delivered.
            self.wire.flush(stage, t).await?;
        } else {
            self.wire.flush(stage, t).await?;
            self.wire
                .write_blocks(body, DATA_BLOCK, Stage::Message, t)
                .await?;
        }
        // The server has the message now: a failure from here on is after the body, so the
        // message is not sent again on a new session (it could arrive twice).
        let (mail, rcpts) = self.read_envelope_replies(envelope, rset, true).await?;
        let chunk = self
            .wire
            .read_reply(Stage::Message, self.timeouts.data_end)
            .await?;
        let recipients = recipient_results(envelope, rcpts);
        if !mail.is_positive() {
            return Err(SmtpError::Rejected {
                stage: Stage::MailFrom,
                reply: mail,
            });
        }
        if !recipients.iter().any(|r| r.accepted) {
            // The server refused the chunk too (no valid recipient): nothing was delivered.
            return Err(SmtpError::RecipientsRefused {
                report: SendReport {
                    recipients,
                    data_reply: None,
                },
            });
        }
        if !chunk.is_positive() {
            return Err(SmtpError::Rejected {
                stage: Stage::Message,
                reply: chunk,
            });
        }
        Ok(SendReport {
            recipients,
            data_reply: Some(chunk),
        })
    }

    /// `[RSET] MAIL RCPT... DATA` in one write, then their replies in order.
    async fn envelope_pipelined(
        &mut self,
        envelope: &Envelope,
        params: MailParams,
        rset: bool,
    ) -> Result<(Reply, Vec<Reply>, Option<Reply>), SmtpError> {
        let t = self.timeouts.command;
        self.queue_envelope(envelope, params, rset);
        self.wire.queue(Command::Data);
        let stage = if rset { Stage::Rset } else { Stage::MailFrom };
        self.wire.flush(stage, t).await?;
        let (mail, rcpts) = self.read_envelope_replies(envelope, rset, false).await?;
        let data = self.wire.read_reply(Stage::Data, t).await?;
        Ok((mail, rcpts, Some(data)))
    }

    /// Queues `[RSET] MAIL RCPT...` for one pipelined write.
    pub(super) fn queue_envelope(&mut self, envelope: &Envelope, params: MailParams, rset: bool) {
        if rset {
            self.wire.queue(Command::Rset);
        }
        self.wire.queue(Command::Mail(&envelope.from, params));
        for to in &envelope.to {
            self.wire.queue(Command::Rcpt(to));
        }
    }

    /// Reads the replies to `[RSET] MAIL RCPT...`. `after_body`: the message went out in the same
    /// write, so a failure to read counts as after the body.
    async fn read_envelope_replies(
        &mut self,
        envelope: &Envelope,
        rset: bool,
        after_body: bool,
    ) -> Result<(Reply, Vec<Reply>), SmtpError> {
        let t = self.timeouts.command;
        let stage = |s| if after_body { Stage::Message } else { s };
        if rset {
            let reply = self.wire.read_reply(stage(Stage::Rset), t).await?;
            if !reply.is_positive() {
                // The rest of the batch is unaccounted for: give the session up.
                self.broken = true;
                return Err(SmtpError::Rejected {
                    stage: Stage::Rset,
                    reply,
                });
            }
        }
        let mail = self.wire.read_reply(stage(Stage::MailFrom), t).await?;
        let mut rcpts = Vec::with_capacity(envelope.to.len());
        for _ in &envelope.to {
            rcpts.push(self.wire.read_reply(stage(Stage::RcptTo), t).await?);
        }
        Ok((mail, rcpts))
    }

    /// One command, one reply, stopping at the first sign that the rest is pointless.
    async fn envelope_in_turn(
        &mut self,
        envelope: &Envelope,
        params: MailParams,
        rset: bool,
    ) -> Result<(Reply, Vec<Reply>, Option<Reply>), SmtpError> {
        if rset {
            self.reset().await?;
            self.needs_rset = true;
        }
        let mail = self
            .round_trip(Command::Mail(&envelope.from, params), Stage::MailFrom)
            .await?;
        let mut rcpts = Vec::with_capacity(envelope.to.len());
        if mail.is_positive() {
            for to in &envelope.to {
                rcpts.push(self.round_trip(Command::Rcpt(to), Stage::RcptTo).await?);
            }
        }
        Ok((mail, rcpts, None))
    }

    /// A pipelining server may answer `354` to DATA even though MAIL or every RCPT failed:
    /// end that empty message so the session returns to command state (RFC 2920 §3.1).
    async fn end_unwanted_data(&mut self, data: Option<&Reply>) -> Result<(), SmtpError> {
        if data.is_some_and(|d| d.code == 354) {
            self.wire.queue_bytes(b".\r\n");
            self.wire
                .flush(Stage::Message, self.timeouts.command)
                .await?;
            self.wire
                .read_reply(Stage::Message, self.timeouts.data_end)
                .await?;
        }
        Ok(())
    }

    async fn reset(&mut self) -> Result<(), SmtpError> {
        let reply = self.round_trip(Command::Rset, Stage::Rset).await?;
        if !reply.is_positive() {
            self.broken = true;
            return Err(SmtpError::Rejected {
                stage: Stage::Rset,
                reply,
            });
        }
        self.needs_rset = false;
        Ok(())
    }

    async fn round_trip(&mut self, command: Command<'_>, stage: Stage) -> Result<Reply, SmtpError> {
        let t = self.timeouts.command;
        self.wire.queue(command);
        self.wire.flush(stage, t).await?;
        self.wire.read_reply(stage, t).await
    }

    /// The encoded message (dot-stuffed, final dot included) in blocks, with whatever is queued
    /// (a transaction sent ahead) in the last write; then the reply, which may take a while.
    async fn write_message(&mut self, body: &[u8]) -> Result<Reply, SmtpError> {
        self.wire
            .write_blocks(body, DATA_BLOCK, Stage::Message, self.timeouts.command)
            .await?;
        self.wire
            .read_reply(Stage::Message, self.timeouts.data_end)
            .await
    }
}

/// Each recipient with its reply, in envelope order.
fn recipient_results(envelope: &Envelope, rcpts: Vec<Reply>) -> Vec<RecipientResult> {
    envelope
        .to
        .iter()
        .zip(rcpts)
        .map(|(to, reply)| RecipientResult {
            recipient: to.clone(),
            accepted: reply.is_positive(),
            reply,
        })
        .collect()
}
