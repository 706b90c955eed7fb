//! The outcome of one message: each recipient's answer and the reply to the final dot.

use super::reply::Reply;

/// One recipient's answer to `RCPT TO`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecipientResult {
    pub recipient: String,
    pub accepted: bool,
    pub reply: Reply,
}

/// What happened to a message that was sent to at least one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendReport {
    /// In envelope order.
    pub recipients: Vec<RecipientResult>,
    /// The reply to the final dot; its text carries the provider's queue id. `None` only inside
    /// [`SmtpError::RecipientsRefused`](super::SmtpError::RecipientsRefused), where no data was sent.
    pub data_reply: Option<Reply>,
}

impl SendReport {
    /// Every recipient accepted and the message taken.
    pub fn all_accepted(&self) -> bool {
        self.data_reply.as_ref().is_some_and(Reply::is_positive)
            && self.recipients.iter().all(|r| r.accepted)
    }

    pub fn accepted(&self) -> impl Iterator<Item = &RecipientResult> {
        self.recipients.iter().filter(|r| r.accepted)
    }

    pub fn refused(&self) -> impl Iterator<Item = &RecipientResult> {
        self.recipients.iter().filter(|r| !r.accepted)
    }
}
