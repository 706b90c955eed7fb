//! The session's mail transaction: MAIL, RCPT, DATA and handing the message over.

use super::{Action, Greeting, Phase, Session, Wait};
use crate::domain::EmailAddress;
use crate::smtp::server::command::MailParams;
use crate::smtp::server::data::{DataFailure, DataReader};
use crate::smtp::server::envelope::{Envelope, ReversePath};
use crate::smtp::server::message::{self, Trace};
use crate::smtp::server::reply::Reply;

/// MAIL accepted: the sender, its parameters and the recipients so far.
pub(super) struct Transaction {
    from: ReversePath,
    params: MailParams,
    recipients: Vec<EmailAddress>,
}

/// Reading the content of a message; the transaction waits alongside.
pub(super) struct DataPhase {
    pub(super) reader: DataReader,
    pub(super) tx: Transaction,
}

impl Session {
    pub(super) fn mail(&mut self, from: ReversePath, params: MailParams) {
        if self.greeting.is_none() {
            return self.error(Reply::status(503, "5.5.1", "Send EHLO or HELO first"));
        }
        if self.tx.is_some() {
            return self.error(Reply::status(503, "5.5.1", "Nested MAIL command"));
        }
        // Never an open relay: only authenticated users and explicitly trusted networks.
        if self.identity.is_none() && !self.peer.trusted {
            return self.error(Reply::status(530, "5.7.0", "Authentication required"));
        }
        if params
            .size
            .is_some_and(|s| s > self.config.max_message_size as u64)
        {
            return self.reply(Reply::status(
                552,
                "5.3.4",
                "Message size exceeds fixed maximum message size",
            ));
        }
        if !from.is_ascii() && !params.smtputf8 {
            return self.reply(Reply::status(
                553,
                "5.6.7",
                "Non-ASCII address requires SMTPUTF8",
            ));
        }
        if let Some(identity) = &self.identity
            && !identity.may_send_as(&from)
        {
            let text = format!(
                "{from} is not allowed: relay user {} may send as {}",
                identity.user, identity.allowed_from
            );
            return self.reply(Reply::status(550, "5.7.1", text));
        }
        self.tx = Some(Transaction {
            from,
            params,
            recipients: Vec::new(),
        });
        self.reply(Reply::status(250, "2.1.0", "Sender OK"));
    }

    pub(super) fn rcpt(&mut self, to: EmailAddress) {
        let max = self.config.max_recipients;
        let Some(tx) = self.tx.as_mut() else {
            return self.error(Reply::status(503, "5.5.1", "Need MAIL command first"));
        };
        let reply = if !to.is_ascii() && !tx.params.smtputf8 {
            Reply::status(553, "5.6.7", "Non-ASCII address requires SMTPUTF8")
        } else if tx.recipients.contains(&to) {
            Reply::status(250, "2.1.5", "Recipient OK")
        } else if tx.recipients.len() >= max {
            Reply::status(452, "4.5.3", "Too many recipients")
        } else {
            tx.recipients.push(to);
            Reply::status(250, "2.1.5", "Recipient OK")
        };
        self.reply(reply);
    }

    pub(super) fn data(&mut self) {
        let Some(tx) = self.tx.take() else {
            return self.error(Reply::status(503, "5.5.1", "Need MAIL command first"));
        };
        if tx.recipients.is_empty() {
            self.tx = Some(tx);
            return self.error(Reply::status(554, "5.5.1", "No valid recipients"));
        }
        let reader = DataReader::new(
            self.config.max_message_size,
            self.config.bare_lf,
            tx.params.size,
        )
        .lenient(self.peer.lenient);
        self.reply(Reply::plain(
            354,
            "Start mail input; end with <CRLF>.<CRLF>",
        ));
        self.phase = Phase::Data(Box::new(DataPhase { reader, tx }));
    }

    pub(super) fn end_of_data(&mut self, result: Result<Vec<u8>, DataFailure>, tx: Transaction) {
        let content = match result {
            Ok(content) => content,
            Err(failure) => return self.reply(failure.reply()),
        };
        let protocol = match (
            &self.greeting,
            self.peer.tls_active,
            self.identity.is_some(),
        ) {
            (Some(Greeting::Helo(_)) | None, _, _) => "SMTP",
            (Some(Greeting::Ehlo(_)), false, false) => "ESMTP",
            (Some(Greeting::Ehlo(_)), false, true) => "ESMTPA",
            (Some(Greeting::Ehlo(_)), true, false) => "ESMTPS",
            (Some(Greeting::Ehlo(_)), true, true) => "ESMTPSA",
        };
        let helo = match &self.greeting {
            Some(Greeting::Helo(h) | Greeting::Ehlo(h)) => h.as_str(),
            None => "unknown",
        };
        let hostname = self.config.hostname.as_str();
        let trace = Trace {
            helo,
            peer: self.peer.addr.ip(),
            hostname,
            protocol,
            user: self.identity.as_ref().map(|i| i.user.as_str()),
            session_id: &self.id,
        };
        let trace = self.config.received_header.then_some(&trace);
        let now = chrono::Local::now().fixed_offset();
        let message = message::complete(content, hostname, trace, now);
        let envelope = Envelope {
            from: tx.from,
            recipients: tx.recipients,
            body: tx.params.body,
            smtputf8: tx.params.smtputf8,
            declared_size: tx.params.size,
        };
        self.phase = Phase::Waiting(Wait::Store);
        self.push(Action::Deliver { envelope, message });
    }
}
