//! SMTP replies as values: a code and text lines, written in the wire format.

use std::fmt;

/// RFC 5321 §4.5.3.1.5: a reply line is at most 512 octets including CRLF.
const MAX_REPLY_TEXT: usize = 512 - "250-".len() - "\r\n".len();

/// One SMTP reply (possibly multi-line). Its `Display` is the exact wire text, CRLFs included.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    code: u16,
    lines: Vec<String>,
}

impl Reply {
    /// A reply without an enhanced status code (greeting, EHLO, `334` challenges).
    pub(crate) fn plain(code: u16, text: impl Into<String>) -> Self {
        Self::multiline(code, vec![text.into()])
    }

    /// A reply with an RFC 3463 enhanced status code, e.g. `Reply::status(250, "2.1.0", "Ok")`.
    pub(crate) fn status(code: u16, enhanced: &str, text: impl fmt::Display) -> Self {
        Self::plain(code, format!("{enhanced} {text}"))
    }

    /// Text lines are cleaned here once, so user-supplied text (an address, a backend's reason)
    /// can never inject a CRLF or exceed the line limit.
    pub(crate) fn multiline(code: u16, lines: Vec<String>) -> Self {
        debug_assert!((200..600).contains(&code), "reply code {code}");
        let mut lines: Vec<String> = lines.into_iter().map(|l| clean_line(&l)).collect();
        if lines.is_empty() {
            lines.push(String::new());
        }
        Self { code, lines }
    }

    pub fn code(&self) -> u16 {
        self.code
    }

    pub fn lines(&self) -> &[String] {
        &self.lines
    }

    /// True for 4xx and 5xx replies.
    pub fn is_negative(&self) -> bool {
        self.code >= 400
    }

    pub(crate) fn write_to(&self, out: &mut Vec<u8>) {
        let last = self.lines.len() - 1;
        for (i, line) in self.lines.iter().enumerate() {
            let sep = if i == last { ' ' } else { '-' };
            out.extend_from_slice(format!("{}{sep}{line}\r\n", self.code).as_bytes());
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write_to(&mut out);
        out
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from_utf8_lossy(&self.to_bytes()))
    }
}

fn clean_line(line: &str) -> String {
    let mut out = String::with_capacity(line.len().min(MAX_REPLY_TEXT));
    for c in line.chars() {
        if out.len() + c.len_utf8() > MAX_REPLY_TEXT {
            break;
        }
        out.push(if c.is_control() { '?' } else { c });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_format_single_and_multi_line() {
        assert_eq!(
            Reply::status(250, "2.0.0", "Ok").to_string(),
            "250 2.0.0 Ok\r\n"
        );
        let ehlo = Reply::multiline(250, vec!["host".into(), "PIPELINING".into()]);
        assert_eq!(ehlo.to_string(), "250-host\r\n250 PIPELINING\r\n");
    }

    #[test]
    fn injected_crlf_and_long_text_are_neutralised() {
        let r = Reply::status(550, "5.7.1", "<a@b>\r\n250 fake");
        assert_eq!(r.to_string(), "550 5.7.1 <a@b>??250 fake\r\n");
        let long = Reply::status(550, "5.7.1", "é".repeat(600));
        assert!(long.to_bytes().len() <= 512, "{}", long.to_bytes().len());
    }
}
