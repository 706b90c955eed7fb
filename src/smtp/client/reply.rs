//! Server replies (RFC 5321 §4.2) and their sans-IO parser, with RFC 3463 enhanced status codes.
//!
//! Written here rather than taken from `smtp-proto`: its receiver folds the lines into one string
//! and keeps one enhanced code, while errors and `connection test` must show every line verbatim.

use std::fmt;

/// The most a single reply may take (all lines); a server sending more is broken or hostile.
pub const MAX_REPLY_BYTES: usize = 64 * 1024;

/// An RFC 3463 enhanced status code such as `5.7.139`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EnhancedCode {
    pub class: u8,
    pub subject: u16,
    pub detail: u16,
}

impl EnhancedCode {
    pub const fn new(class: u8, subject: u16, detail: u16) -> Self {
        Self {
            class,
            subject,
            detail,
        }
    }

    /// Parses the code at the start of `text` (`5.7.3 Authentication unsuccessful`).
    fn parse_prefix(text: &str) -> Option<Self> {
        let word = text.split(' ').next()?;
        let mut parts = word.split('.');
        let class: u8 = parse_digits(parts.next()?, 1)?;
        let subject: u16 = parse_digits(parts.next()?, 3)?;
        let detail: u16 = parse_digits(parts.next()?, 3)?;
        if parts.next().is_some() || !matches!(class, 2 | 4 | 5) {
            return None;
        }
        Some(Self::new(class, subject, detail))
    }
}

fn parse_digits<T: std::str::FromStr>(s: &str, max_len: usize) -> Option<T> {
    if s.is_empty() || s.len() > max_len || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

impl fmt::Display for EnhancedCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.class, self.subject, self.detail)
    }
}

/// A complete server reply: the code, the enhanced code of the first line if any, and every text line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    pub enhanced: Option<EnhancedCode>,
    /// The text of each line after `NNN-`/`NNN `, as sent (enhanced codes included).
    pub lines: Vec<String>,
}

impl Reply {
    pub fn new(code: u16, lines: Vec<String>) -> Self {
        let enhanced = lines.first().and_then(|l| EnhancedCode::parse_prefix(l));
        Self {
            code,
            enhanced,
            lines,
        }
    }

    pub fn is_positive(&self) -> bool {
        (200..400).contains(&self.code)
    }

    pub fn is_transient(&self) -> bool {
        (400..500).contains(&self.code)
    }

    pub fn is_permanent(&self) -> bool {
        (500..600).contains(&self.code)
    }

    /// Whether the enhanced code is `class.subject.detail`.
    pub fn has_enhanced(&self, class: u8, subject: u16, detail: u16) -> bool {
        self.enhanced == Some(EnhancedCode::new(class, subject, detail))
    }

    /// Whether any line contains `needle` (ASCII case-insensitive).
    pub fn text_contains(&self, needle: &str) -> bool {
        let needle = needle.to_ascii_lowercase();
        self.lines
            .iter()
            .any(|l| l.to_ascii_lowercase().contains(&needle))
    }

    /// All text lines joined by a space: the form for one-line log and error messages.
    pub fn text(&self) -> String {
        self.lines.join(" ")
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.code)?;
        for (i, line) in self.lines.iter().enumerate() {
            f.write_str(if i == 0 { " " } else { " / " })?;
            f.write_str(line)?;
        }
        Ok(())
    }
}

/// Why bytes from the server are not a reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    #[error("malformed reply line {0:?}")]
    Malformed(String),
    #[error("reply lines carry different codes ({0} then {1})")]
    MixedCodes(u16, u16),
    #[error("reply longer than {MAX_REPLY_BYTES} bytes")]
    TooLong,
}

/// Parses one reply from the start of `buf`.
///
/// `Ok(None)` means more bytes are needed; `Ok(Some((reply, n)))` means the reply used the first
/// `n` bytes (a pipelining server may already have sent the next ones). Lines end in CRLF; a bare
/// LF is tolerated because some servers send it.
pub fn parse_reply(buf: &[u8]) -> Result<Option<(Reply, usize)>, ReplyError> {
    let mut pos = 0;
    let mut code = None;
    let mut lines = Vec::new();
    loop {
        let Some(lf) = buf[pos..].iter().position(|&b| b == b'\n') else {
            return if buf.len() > MAX_REPLY_BYTES {
                Err(ReplyError::TooLong)
            } else {
                Ok(None)
            };
        };
        let end = pos + lf + 1;
        if end > MAX_REPLY_BYTES {
            return Err(ReplyError::TooLong);
        }
        let raw = &buf[pos..pos + lf];
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        let (line_code, last, text) = parse_line(raw)?;
        match code {
            None => code = Some(line_code),
            Some(first) if first != line_code => {
                return Err(ReplyError::MixedCodes(first, line_code));
            }
            Some(_) => {}
        }
        lines.push(text);
        pos = end;
        if last {
            return Ok(Some((Reply::new(line_code, lines), pos)));
        }
    }
}

/// One line: `NNN-text` (more follow), `NNN text` or a bare `NNN` (the last).
fn parse_line(raw: &[u8]) -> Result<(u16, bool, String), ReplyError> {
    let malformed = || ReplyError::Malformed(String::from_utf8_lossy(raw).into_owned());
    let digits = raw.get(..3).ok_or_else(malformed)?;
    if !digits.iter().all(u8::is_ascii_digit) || !(b'2'..=b'5').contains(&digits[0]) {
        return Err(malformed());
    }
    let code = digits
        .iter()
        .fold(0u16, |acc, d| acc * 10 + u16::from(d - b'0'));
    let (last, text) = match raw.get(3) {
        None => (true, &[][..]),
        Some(b' ') => (true, &raw[4..]),
        Some(b'-') => (false, &raw[4..]),
        Some(_) => return Err(malformed()),
    };
    // Servers are supposed to send ASCII; keep whatever they sent readable rather than failing.
    Ok((code, last, String::from_utf8_lossy(text).into_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(buf: &[u8]) -> Reply {
        let (reply, used) = parse_reply(buf).unwrap().unwrap();
        assert_eq!(used, buf.len());
        reply
    }

    #[test]
    fn single_line_with_enhanced_code() {
        let r = parse_all(b"535 5.7.3 Authentication unsuccessful [AM0PR01CA0001]\r\n");
        assert_eq!(r.code, 535);
        assert_eq!(r.enhanced, Some(EnhancedCode::new(5, 7, 3)));
        assert!(r.has_enhanced(5, 7, 3) && r.is_permanent());
        assert_eq!(
            r.lines,
            ["5.7.3 Authentication unsuccessful [AM0PR01CA0001]"]
        );
        assert_eq!(
            r.to_string(),
            "535 5.7.3 Authentication unsuccessful [AM0PR01CA0001]"
        );
    }

    #[test]
    fn three_digit_detail_and_subject() {
        let r = parse_all(b"535 5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the Tenant.\r\n");
        assert_eq!(r.enhanced, Some(EnhancedCode::new(5, 7, 139)));
        let r = parse_all(b"554 5.2.252 SendAsDenied; x@y not allowed to send as z@y\r\n");
        assert_eq!(r.enhanced.unwrap().to_string(), "5.2.252");
    }

    #[test]
    fn multi_line_keeps_every_line() {
        let r = parse_all(b"250-smtp.example.com Hello\r\n250-SIZE 35882577\r\n250 8BITMIME\r\n");
        assert_eq!(r.code, 250);
        assert_eq!(r.enhanced, None);
        assert_eq!(
            r.lines,
            ["smtp.example.com Hello", "SIZE 35882577", "8BITMIME"]
        );
        assert_eq!(
            r.to_string(),
            "250 smtp.example.com Hello / SIZE 35882577 / 8BITMIME"
        );
    }

    #[test]
    fn not_enhanced_when_it_only_looks_like_it() {
        for line in [
            "250 2.0 ok",
            "250 1.2.3 bad class",
            "250 2.0.0.1 too long",
            "250 2.1234.0 x",
        ] {
            let r = parse_all(format!("{line}\r\n").as_bytes());
            assert_eq!(r.enhanced, None, "{line}");
        }
        let r = parse_all(b"250 2.0.0\r\n");
        assert_eq!(r.enhanced, Some(EnhancedCode::new(2, 0, 0)));
    }

    #[test]
    fn bare_code_and_bare_lf() {
        let r = parse_all(b"354\n");
        assert_eq!((r.code, r.lines.len()), (354, 1));
        assert_eq!(r.lines[0], "");
        let r = parse_all(b"334 \r\n");
        assert_eq!(r.code, 334);
    }

    #[test]
    fn partial_input_needs_more() {
        assert_eq!(parse_reply(b"").unwrap(), None);
        assert_eq!(parse_reply(b"250-first\r\n250 sec").unwrap(), None);
        assert_eq!(parse_reply(b"250-first\r\n").unwrap(), None);
    }

    #[test]
    fn pipelined_replies_are_parsed_one_at_a_time() {
        let buf = b"250 2.1.0 Sender OK\r\n550 5.1.1 no such user\r\n354 go\r\n";
        let (first, used) = parse_reply(buf).unwrap().unwrap();
        assert_eq!(first.code, 250);
        let (second, used2) = parse_reply(&buf[used..]).unwrap().unwrap();
        assert_eq!(second.code, 550);
        assert!(second.has_enhanced(5, 1, 1));
        let (third, _) = parse_reply(&buf[used + used2..]).unwrap().unwrap();
        assert_eq!(third.code, 354);
    }

    #[test]
    fn garbage_is_an_error() {
        for bad in [
            &b"hello\r\n"[..],
            b"25\r\n",
            b"2500 x\r\n",
            b"250_x\r\n",
            b"650 x\r\n",
        ] {
            assert!(
                matches!(parse_reply(bad), Err(ReplyError::Malformed(_))),
                "{bad:?}"
            );
        }
        assert_eq!(
            parse_reply(b"250-a\r\n251 b\r\n"),
            Err(ReplyError::MixedCodes(250, 251))
        );
    }

    #[test]
    fn endless_replies_are_cut_off() {
        let mut buf = Vec::new();
        while buf.len() <= MAX_REPLY_BYTES {
            buf.extend_from_slice(b"250-more and more\r\n");
        }
        assert_eq!(parse_reply(&buf), Err(ReplyError::TooLong));
        let line_without_end = vec![b'2'; MAX_REPLY_BYTES + 1];
        assert_eq!(parse_reply(&line_without_end), Err(ReplyError::TooLong));
    }
}
