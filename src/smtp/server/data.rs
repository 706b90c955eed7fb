//! The DATA phase: finds the end of a message, undoes dot-stuffing and enforces the limits
//! while reading, so nothing beyond the size limit is ever buffered.
//!
//! Only `CRLF . CRLF` ends a message (the first CRLF may be the end of the DATA command).
//! `LF.LF`, `LF.CRLF`, `CRLF.LF` and `CR.CR` do not: reading them as an end is how SMTP
//! smuggling splits one message into two. The stored message only ever has CRLF line endings.
//!
//! The one exception is a *lenient* reader, made for clients the admin named (devices bound
//! to networks, `server.bare_lf_networks`), as Postfix exempts `$mynetworks` from
//! `smtpd_forbid_bare_newline`: there a `.` line ending in LF or CRLF after a line ending in
//! LF or CRLF ends the message, since such devices end every line with a bare LF. What
//! follows is read as commands of that same client's session, so it can only ever submit
//! mail as that client. A bare CR still never ends anything.

use super::config::BareLfPolicy;
use super::reply::Reply;

/// RFC 5321 §4.5.3.1.6: 1000 octets per text line including the CRLF.
const MAX_LINE_CONTENT: usize = 1000 - 2;
/// Pre-allocate at most this much from a client's `SIZE=` claim.
const MAX_PREALLOCATION: usize = 4 * 1024 * 1024;

/// Why a message was refused; reported only after its final dot, as RFC 5321 requires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DataFailure {
    TooLarge,
    BareLf,
    BareCr,
    LineTooLong,
    /// The relay's memory budget for messages in flight ran out (see `super::budget`).
    NoMemory,
}

impl DataFailure {
    pub(crate) fn reply(self) -> Reply {
        match self {
            DataFailure::TooLarge => Reply::status(
                552,
                "5.3.4",
                "Message size exceeds fixed maximum message size",
            ),
            DataFailure::BareLf => Reply::status(
                550,
                "5.6.11",
                "Bare LF not allowed: message lines must end with CRLF",
            ),
            DataFailure::BareCr => Reply::status(
                550,
                "5.6.11",
                "Bare CR not allowed: message lines must end with CRLF",
            ),
            DataFailure::LineTooLong => Reply::status(500, "5.5.2", "Line too long"),
            DataFailure::NoMemory => Reply::status(
                452,
                "4.3.1",
                "Insufficient system resources, try again later",
            ),
        }
    }
}

#[derive(Debug)]
pub(crate) enum Progress {
    NeedMore,
    Done(Result<Vec<u8>, DataFailure>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// At the start of a line; `crlf`: the previous line ended with a real CRLF (or there was
    /// none), so a lone `.` line here is the end of the message.
    LineStart {
        crlf: bool,
    },
    /// Read a `.` at the start of a line (dropped: it is either stuffing or the terminator).
    Dot {
        crlf: bool,
    },
    /// Read `.` CR at the start of a line.
    DotCr {
        crlf: bool,
    },
    Text,
    /// Read a CR; only an LF may follow.
    Cr,
}

#[derive(Debug)]
pub(crate) struct DataReader {
    message: Vec<u8>,
    max_size: usize,
    bare_lf: BareLfPolicy,
    /// `LF . LF` (and its mixes with CRLF) also end the message: see the module header.
    lenient: bool,
    state: State,
    line_len: usize,
    failure: Option<DataFailure>,
}

impl DataReader {
    pub(crate) fn new(max_size: usize, bare_lf: BareLfPolicy, declared_size: Option<u64>) -> Self {
        let hint = declared_size
            .map_or(0, |s| usize::try_from(s).unwrap_or(usize::MAX))
            .min(max_size)
            .min(MAX_PREALLOCATION);
        Self {
            message: Vec::with_capacity(hint),
            max_size,
            bare_lf,
            lenient: false,
            state: State::LineStart { crlf: true },
            line_len: 0,
            failure: None,
        }
    }

    /// Also ends the message at a bare-LF end of data (`LF.LF`, `CRLF.LF`, `LF.CRLF`): only
    /// for clients the admin allowed, whose bare LFs are always line endings.
    pub(crate) fn lenient(mut self, lenient: bool) -> Self {
        self.lenient = lenient;
        self
    }

    /// Consumes `input` up to the end of the message (its final LF included) or entirely.
    pub(crate) fn ingest(&mut self, input: &[u8]) -> (usize, Progress) {
        let mut i = 0;
        while let Some(&b) = input.get(i) {
            match self.state {
                State::Text => {
                    let run = input[i..].iter().position(|&c| c == b'\r' || c == b'\n');
                    let end = run.map_or(input.len(), |p| i + p);
                    if end > i {
                        self.text(&input[i..end]);
                        i = end;
                        continue;
                    }
                    if b == b'\r' {
                        self.state = State::Cr;
                    } else {
                        self.bare_lf();
                    }
                }
                State::LineStart { crlf } => match b {
                    b'.' => self.state = State::Dot { crlf },
                    b'\r' => self.state = State::Cr,
                    b'\n' => self.bare_lf(),
                    _ => {
                        self.state = State::Text;
                        continue;
                    }
                },
                State::Dot { crlf } => match b {
                    b'\r' => self.state = State::DotCr { crlf },
                    b'\n' if self.lenient => return (i + 1, Progress::Done(self.finish())),
                    // The dot was stuffing of an empty line that ends with a bare LF.
                    b'\n' => self.bare_lf(),
                    _ => {
                        self.state = State::Text;
                        continue;
                    }
                },
                State::DotCr { crlf } => {
                    if b != b'\n' {
                        self.fail(DataFailure::BareCr);
                        self.state = State::Text;
                        continue;
                    }
                    if crlf || self.lenient {
                        return (i + 1, Progress::Done(self.finish()));
                    }
                    // `LF . CRLF`: a line holding only a (stuffing) dot, never the end.
                    self.crlf();
                }
                State::Cr => {
                    if b != b'\n' {
                        self.fail(DataFailure::BareCr);
                        self.state = State::Text;
                        continue;
                    }
                    self.crlf();
                }
            }
            i += 1;
        }
        (input.len(), Progress::NeedMore)
    }

    /// Bytes of the message held in memory so far; `None` once it has failed (its content
    /// is dropped and the rest is read and discarded up to the final dot).
    pub(crate) fn in_memory(&self) -> Option<usize> {
        self.failure.is_none().then_some(self.message.len())
    }

    /// Gives up on the message (its content is dropped at once); reported at its final dot.
    pub(crate) fn abandon(&mut self, failure: DataFailure) {
        self.fail(failure);
    }

    fn text(&mut self, bytes: &[u8]) {
        self.line_len = self.line_len.saturating_add(bytes.len());
        if self.line_len > MAX_LINE_CONTENT {
            self.fail(DataFailure::LineTooLong);
        }
        self.emit(bytes);
    }

    fn crlf(&mut self) {
        self.emit(b"\r\n");
        self.line_len = 0;
        self.state = State::LineStart { crlf: true };
    }

    fn bare_lf(&mut self) {
        match self.bare_lf {
            BareLfPolicy::Normalize => self.emit(b"\r\n"),
            BareLfPolicy::Reject => self.fail(DataFailure::BareLf),
        }
        self.line_len = 0;
        self.state = State::LineStart { crlf: false };
    }

    fn emit(&mut self, bytes: &[u8]) {
        if self.failure.is_some() {
            return;
        }
        if self.message.len().saturating_add(bytes.len()) > self.max_size {
            self.fail(DataFailure::TooLarge);
            return;
        }
        self.message.extend_from_slice(bytes);
    }

    /// The first failure is the one reported; the content is dropped at once.
    fn fail(&mut self, failure: DataFailure) {
        if self.failure.is_none() {
            self.failure = Some(failure);
            self.message = Vec::new();
        }
    }

    fn finish(&mut self) -> Result<Vec<u8>, DataFailure> {
        match self.failure {
            Some(f) => Err(f),
            None => Ok(std::mem::take(&mut self.message)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(
        input: &[u8],
        policy: BareLfPolicy,
        max: usize,
    ) -> Option<(usize, Result<Vec<u8>, DataFailure>)> {
        let mut r = DataReader::new(max, policy, None);
        match r.ingest(input) {
            (n, Progress::Done(res)) => Some((n, res)),
            (_, Progress::NeedMore) => None,
        }
    }

    fn ok(input: &str) -> (usize, String) {
        match read(input.as_bytes(), BareLfPolicy::Normalize, 1 << 20) {
            Some((n, Ok(msg))) => (n, String::from_utf8(msg).unwrap()),
            other => panic!("{input:?}: {other:?}"),
        }
    }

    #[test]
    fn ends_only_at_crlf_dot_crlf_and_unstuffs() {
        assert_eq!(ok(".\r\n"), (3, String::new()));
        assert_eq!(ok("a\r\n.\r\nQUIT\r\n"), (6, "a\r\n".into()));
        assert_eq!(ok("..\r\n..x\r\n.\r\n"), (12, ".\r\n.x\r\n".into()));
        assert_eq!(ok("a\r\n.x\r\n.\r\n"), (10, "a\r\nx\r\n".into()));
    }

    #[test]
    fn smuggling_sequences_never_end_the_message() {
        for input in [
            "a\n.\nMAIL FROM:<x@y.com>\r\n",
            "a\n.\r\nRSET\r\n",
            "a\r\n.\nRSET\r\n",
            "a\r\n.\n",
        ] {
            assert!(
                read(input.as_bytes(), BareLfPolicy::Normalize, 1 << 20).is_none(),
                "{input:?}"
            );
            assert!(
                read(input.as_bytes(), BareLfPolicy::Reject, 1 << 20).is_none(),
                "{input:?}"
            );
        }
        // With normalisation the smuggled lines stay content, and only CRLF line endings remain.
        assert_eq!(
            ok("a\n.\nMAIL FROM:<x@y.com>\r\n.\r\n").1,
            "a\r\n\r\nMAIL FROM:<x@y.com>\r\n"
        );
        assert_eq!(ok("a\n.\r\nb\r\n.\r\n").1, "a\r\n\r\nb\r\n");
    }

    fn lenient(input: &str, policy: BareLfPolicy) -> Option<(usize, Result<String, DataFailure>)> {
        let mut r = DataReader::new(1 << 20, policy, None).lenient(true);
        match r.ingest(input.as_bytes()) {
            (n, Progress::Done(res)) => Some((n, res.map(|m| String::from_utf8(m).unwrap()))),
            (_, Progress::NeedMore) => None,
        }
    }

    #[test]
    fn lenient_reader_ends_at_bare_lf_dot_and_leaves_the_rest_as_commands() {
        let n = BareLfPolicy::Normalize;
        assert_eq!(lenient("a\nb\n.\n", n), Some((6, Ok("a\r\nb\r\n".into()))));
        assert_eq!(lenient(".\n", n), Some((2, Ok(String::new()))));
        // The three mixed endings end it too; what follows is not part of the message.
        for (input, end) in [
            ("a\n.\nMAIL FROM:<x@y.com>\r\n", 4),
            ("a\r\n.\nRSET\r\n", 5),
            ("a\n.\r\nRSET\r\n", 5),
            ("a\r\n.\r\nRSET\r\n", 6),
        ] {
            assert_eq!(
                lenient(input, n),
                Some((end, Ok("a\r\n".into()))),
                "{input:?}"
            );
        }
        // Dot-stuffing is still undone, and a bare CR is still refused and ends nothing.
        assert_eq!(
            lenient("..x\n..\n.\n", n).unwrap().1,
            Ok(".x\r\n.\r\n".into())
        );
        assert_eq!(lenient("a\r.\r", n), None);
        assert_eq!(
            lenient("a\r.\rb\n.\n", n).unwrap().1,
            Err(DataFailure::BareCr)
        );
        // Lenient about the end, yet `reject` still refuses bare LFs in the content.
        assert_eq!(
            lenient("a\n.\n", BareLfPolicy::Reject).unwrap().1,
            Err(DataFailure::BareLf)
        );
        // A strict reader is unchanged: no end at all.
        assert!(read(b"a\nb\n.\n", n, 1 << 20).is_none());
    }

    #[test]
    fn bare_cr_is_refused_and_does_not_end() {
        for input in [
            "a\r.\r\n.\r\n",
            "a\r.\rRSET\r\n.\r\n",
            "x\r\n.\r\r\n.\r\n",
            "\r\r\n.\r\n",
        ] {
            let (_, res) = read(input.as_bytes(), BareLfPolicy::Normalize, 1 << 20).unwrap();
            assert_eq!(res, Err(DataFailure::BareCr), "{input:?}");
        }
    }

    #[test]
    fn bare_lf_policy() {
        let (_, res) = read(b"a\nb\r\n.\r\n", BareLfPolicy::Reject, 1 << 20).unwrap();
        assert_eq!(res, Err(DataFailure::BareLf));
        assert_eq!(ok("a\nb\r\n.\r\n").1, "a\r\nb\r\n");
    }

    #[test]
    fn limits_are_enforced_without_buffering() {
        let big = format!("{}\r\n.\r\n", "x".repeat(998));
        assert_eq!(
            read(big.as_bytes(), BareLfPolicy::Normalize, 2000)
                .unwrap()
                .1
                .unwrap()
                .len(),
            1000
        );
        let long = format!("{}\r\n.\r\n", "x".repeat(999));
        assert_eq!(
            read(long.as_bytes(), BareLfPolicy::Normalize, 1 << 20)
                .unwrap()
                .1,
            Err(DataFailure::LineTooLong)
        );
        let mut r = DataReader::new(100, BareLfPolicy::Normalize, Some(u64::MAX));
        for _ in 0..1000 {
            assert!(matches!(
                r.ingest(b"0123456789\r\n"),
                (12, Progress::NeedMore)
            ));
            assert!(
                r.message.capacity() <= 128,
                "buffered {}",
                r.message.capacity()
            );
        }
        assert!(matches!(
            r.ingest(b".\r\n"),
            (3, Progress::Done(Err(DataFailure::TooLarge)))
        ));
    }
}
