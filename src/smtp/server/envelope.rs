//! What a relay session hands to storage: the envelope of one message and how storing can fail.

use std::fmt;

use crate::domain::EmailAddress;

/// The MAIL FROM path: an address, or `<>` (null reverse-path).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReversePath {
    Null,
    Address(EmailAddress),
}

impl ReversePath {
    pub fn address(&self) -> Option<&EmailAddress> {
        match self {
            ReversePath::Null => None,
            ReversePath::Address(a) => Some(a),
        }
    }

    pub(crate) fn is_ascii(&self) -> bool {
        self.address().is_none_or(EmailAddress::is_ascii)
    }
}

/// Shown as it appears in SMTP: `<a@b.c>` or `<>`.
impl fmt::Display for ReversePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReversePath::Null => f.write_str("<>"),
            ReversePath::Address(a) => write!(f, "<{a}>"),
        }
    }
}

/// The `BODY=` parameter of MAIL FROM (RFC 6152).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BodyType {
    /// No `BODY=` given.
    #[default]
    Unspecified,
    SevenBit,
    EightBitMime,
}

/// The envelope of an accepted message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    pub from: ReversePath,
    /// At least one, at most the configured maximum, without duplicates.
    pub recipients: Vec<EmailAddress>,
    pub body: BodyType,
    /// The client asked for SMTPUTF8 (internationalised addresses or headers).
    pub smtputf8: bool,
    /// The `SIZE=` the client declared, if any (the real size is the message's length).
    pub declared_size: Option<u64>,
}

/// Why storing an accepted message failed. Every variant is answered to the client, which
/// keeps the message (4xx: tries again later) or gives up (5xx).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreFailure {
    /// The store is out of space: `452 4.3.1 Insufficient system storage`.
    #[error("insufficient storage")]
    DiskFull,
    /// Any other temporary failure (database busy, I/O error): `451 4.3.0`.
    #[error("temporary storage failure")]
    Temporary,
    /// Policy refused the message (e.g. no connection for this sender): `554 5.7.1 <reason>`.
    /// The reason is shown to the client, so it must not contain anything secret.
    #[error("message rejected: {0}")]
    Rejected(String),
}

impl StoreFailure {
    pub fn is_transient(&self) -> bool {
        !matches!(self, StoreFailure::Rejected(_))
    }
}
