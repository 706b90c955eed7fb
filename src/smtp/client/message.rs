//! The envelope and the message body on the wire: checks, 8-bit detection, line-ending repair and
//! dot-stuffing (RFC 5321 §4.5.2). No I/O.

use super::command::MailParams;
use super::ehlo::Capabilities;
use super::error::SmtpError;

/// Who the message is from and to, as SMTP sees it (not the headers).
///
/// Plain strings: the edge (CLI, HTTP, relay) has already parsed addresses; the client only checks
/// what would break the protocol (control characters, angle brackets).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// The reverse path; empty for a null sender (`MAIL FROM:<>`).
    pub from: String,
    pub to: Vec<String>,
}

impl Envelope {
    pub fn new(from: impl Into<String>, to: impl IntoIterator<Item = impl Into<String>>) -> Self {
        Self {
            from: from.into(),
            to: to.into_iter().map(Into::into).collect(),
        }
    }

    /// Refuses addresses that would inject commands or break the `<...>` syntax.
    pub(crate) fn check(&self) -> Result<(), SmtpError> {
        if self.to.is_empty() {
            return Err(SmtpError::InvalidEnvelope("no recipients".into()));
        }
        check_address(&self.from, true)?;
        self.to.iter().try_for_each(|to| check_address(to, false))
    }

    /// RFC 6531: a non-ASCII address needs `SMTPUTF8`.
    pub fn needs_smtputf8(&self) -> bool {
        !self.from.is_ascii() || self.to.iter().any(|a| !a.is_ascii())
    }
}

fn check_address(address: &str, may_be_empty: bool) -> Result<(), SmtpError> {
    if address.is_empty() && !may_be_empty {
        return Err(SmtpError::InvalidEnvelope("an empty recipient".into()));
    }
    if address
        .chars()
        .any(|c| c.is_control() || matches!(c, '<' | '>'))
    {
        return Err(SmtpError::InvalidEnvelope(format!(
            "address {address:?} contains a control character or an angle bracket"
        )));
    }
    Ok(())
}

/// What the body requires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyScan {
    /// A byte above 127 somewhere: needs `BODY=8BITMIME`.
    pub eight_bit: bool,
    /// The size on the wire after line-ending repair, before dot-stuffing (what RFC 1870 counts).
    pub size: u64,
}

/// The message encoded for DATA (into `out`, which is cleared first) and what it requires:
/// one pass over the bytes, done before MAIL FROM so SIZE is exact.
pub fn encode_body(message: &[u8], out: &mut Vec<u8>) -> BodyScan {
    out.clear();
    let mut encoder = DataEncoder::default();
    encoder.encode(message, out);
    let stuffed = encoder.stuffed;
    encoder.finish(out);
    BodyScan {
        eight_bit: !message.is_ascii(),
        size: (out.len() - b".\r\n".len()) as u64 - stuffed,
    }
}

/// The message encoded for one `BDAT ... LAST` chunk: line endings repaired, no dot-stuffing
/// and no final dot (the chunk size delimits the message).
pub fn encode_chunk(message: &[u8], out: &mut Vec<u8>) -> BodyScan {
    out.clear();
    let mut encoder = DataEncoder {
        dot_stuffing: false,
        ..DataEncoder::default()
    };
    encoder.encode(message, out);
    encoder.finish(out);
    BodyScan {
        eight_bit: !message.is_ascii(),
        size: out.len() as u64,
    }
}

/// Picks the `MAIL FROM` parameters, or says why this server cannot take this message.
pub fn mail_params(
    caps: &Capabilities,
    envelope: &Envelope,
    body: BodyScan,
) -> Result<MailParams, SmtpError> {
    if let Some(limit) = caps.size_limit()
        && body.size > limit
    {
        return Err(SmtpError::MessageTooLarge {
            size: body.size,
            limit,
        });
    }
    let smtputf8 = envelope.needs_smtputf8();
    if smtputf8 && !caps.smtputf8 {
        return Err(SmtpError::SmtpUtf8NotOffered);
    }
    // An SMTPUTF8 transaction may carry 8-bit data by itself (RFC 6531 §3.2), but BODY=8BITMIME is
    // still the declaration servers expect.
    if body.eight_bit && !caps.eight_bit_mime {
        return Err(SmtpError::EightBitNotOffered);
    }
    Ok(MailParams {
        size: caps.size.map(|_| body.size),
        eight_bit: body.eight_bit,
        smtputf8,
    })
}

/// Turns message bytes into DATA content: CRLF line endings, leading dots doubled, then `.`.
///
/// Works on chunks so a large message is written in bounded pieces, each under its own timeout.
#[derive(Debug)]
pub struct DataEncoder {
    at_line_start: bool,
    pending_cr: bool,
    /// Dots added by stuffing, which RFC 1870 leaves out of the size.
    stuffed: u64,
    /// DATA needs leading dots doubled and a final `.` line; a BDAT chunk needs neither.
    dot_stuffing: bool,
}

impl Default for DataEncoder {
    fn default() -> Self {
        Self {
            at_line_start: true,
            pending_cr: false,
            stuffed: 0,
            dot_stuffing: true,
        }
    }
}

impl DataEncoder {
    pub fn encode(&mut self, chunk: &[u8], out: &mut Vec<u8>) {
        out.reserve(chunk.len() + chunk.len() / 64 + 8);
        let mut rest = chunk;
        while !rest.is_empty() {
            if self.pending_cr {
                // The CR already written ends a line whatever comes next.
                self.pending_cr = false;
                out.push(b'\n');
                self.at_line_start = true;
                if rest[0] == b'\n' {
                    rest = &rest[1..];
                    continue;
                }
            }
            if self.dot_stuffing && self.at_line_start && rest[0] == b'.' {
                out.push(b'.');
                self.stuffed += 1;
            }
            // Copy plain bytes up to the next line break in one go.
            match rest.iter().position(|&b| b == b'\r' || b == b'\n') {
                None => {
                    out.extend_from_slice(rest);
                    self.at_line_start = false;
                    return;
                }
                Some(i) => {
                    out.extend_from_slice(&rest[..i]);
                    out.push(b'\r');
                    if rest[i] == b'\r' {
                        self.pending_cr = true;
                    } else {
                        out.push(b'\n');
                        self.at_line_start = true;
                    }
                    rest = &rest[i + 1..];
                }
            }
        }
    }

    /// Ends the last line if needed and appends the terminating `.` line (for DATA).
    pub fn finish(self, out: &mut Vec<u8>) {
        if self.pending_cr {
            out.push(b'\n');
        } else if !self.at_line_start {
            out.extend_from_slice(b"\r\n");
        }
        if self.dot_stuffing {
            out.extend_from_slice(b".\r\n");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(msg: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut enc = DataEncoder::default();
        enc.encode(msg, &mut out);
        enc.finish(&mut out);
        out
    }

    fn encode_in_pieces(msg: &[u8], piece: usize) -> Vec<u8> {
        let mut out = Vec::new();
        let mut enc = DataEncoder::default();
        for chunk in msg.chunks(piece) {
            enc.encode(chunk, &mut out);
        }
        enc.finish(&mut out);
        out
    }

    #[test]
    fn dot_stuffing() {
        let cases: &[(&[u8], &[u8])] = &[
            (
                b"Subject: x\r\n\r\nhi\r\n",
                b"Subject: x\r\n\r\nhi\r\n.\r\n",
            ),
            (b".\r\n", b"..\r\n.\r\n"),
            (b"a\r\n.b\r\n..c\r\n", b"a\r\n..b\r\n...c\r\n.\r\n"),
            (b"a\r\n.", b"a\r\n..\r\n.\r\n"),
            (b"x.y\r\n", b"x.y\r\n.\r\n"),
            (b"", b".\r\n"),
        ];
        for (input, want) in cases {
            assert_eq!(encode(input), *want, "{:?}", String::from_utf8_lossy(input));
        }
    }

    #[test]
    fn bare_line_endings_become_crlf() {
        assert_eq!(encode(b"a\nb\n"), b"a\r\nb\r\n.\r\n");
        assert_eq!(encode(b"a\rb"), b"a\r\nb\r\n.\r\n");
        assert_eq!(encode(b"a\n.b"), b"a\r\n..b\r\n.\r\n");
        assert_eq!(encode(b"a\r\r\nb"), b"a\r\n\r\nb\r\n.\r\n");
        assert_eq!(encode(b"no newline"), b"no newline\r\n.\r\n");
    }

    #[test]
    fn chunk_boundaries_do_not_matter() {
        let msg = b"From: a\r\n.dot\n\r.\r\r\n..x\r\nend.";
        let whole = encode(msg);
        for piece in 1..msg.len() {
            assert_eq!(encode_in_pieces(msg, piece), whole, "piece {piece}");
        }
    }

    fn scan_body(message: &[u8]) -> BodyScan {
        encode_body(message, &mut Vec::new())
    }

    #[test]
    fn scan_counts_repaired_size_and_8bit() {
        assert_eq!(
            scan_body(b"a\r\nb\r\n"),
            BodyScan {
                eight_bit: false,
                size: 6
            }
        );
        assert_eq!(scan_body(b"a\nb\n").size, 6);
        assert_eq!(scan_body(b"a\rb").size, 6);
        assert_eq!(scan_body(b"").size, 0);
        // Stuffed dots do not count; repaired line endings do.
        assert_eq!(scan_body(b".a\n..b").size, 9);
        assert!(scan_body("é\r\n".as_bytes()).eight_bit);
        assert!(!scan_body(b"plain 7-bit\r\n").eight_bit);
        let mut out = b"left over".to_vec();
        encode_body(b"x", &mut out);
        assert_eq!(out, b"x\r\n.\r\n");
    }

    #[test]
    fn a_bdat_chunk_repairs_line_endings_without_dot_stuffing_or_final_dot() {
        let cases: [(&[u8], &[u8]); 5] = [
            (b"Subject: x\r\n\r\n.dot\r\n", b"Subject: x\r\n\r\n.dot\r\n"),
            (b"a\n.\nb", b"a\r\n.\r\nb\r\n"),
            (b"a\r", b"a\r\n"),
            (b"\xc3\xa9", b"\xc3\xa9\r\n"),
            (b"", b""),
        ];
        for (input, want) in cases {
            let mut out = b"left over".to_vec();
            let scan = encode_chunk(input, &mut out);
            assert_eq!(out, want, "{:?}", String::from_utf8_lossy(input));
            assert_eq!(scan.size, want.len() as u64, "BDAT counts every octet sent");
            assert_eq!(scan.eight_bit, !input.is_ascii());
        }
    }

    fn caps(size: Option<u64>, eight_bit_mime: bool, smtputf8: bool) -> Capabilities {
        Capabilities {
            size,
            eight_bit_mime,
            smtputf8,
            ..Default::default()
        }
    }

    #[test]
    fn mail_params_follow_the_message_and_the_server() {
        let ascii = Envelope::new("a@example.com", ["b@example.com"]);
        let body = scan_body(b"hi\r\n");
        let p = mail_params(&caps(Some(0), false, false), &ascii, body).unwrap();
        assert_eq!(
            p,
            MailParams {
                size: Some(4),
                eight_bit: false,
                smtputf8: false
            }
        );
        let p = mail_params(&caps(None, true, true), &ascii, body).unwrap();
        assert_eq!(p.size, None);

        let eight = scan_body("héllo\r\n".as_bytes());
        let p = mail_params(&caps(None, true, false), &ascii, eight).unwrap();
        assert!(p.eight_bit && !p.smtputf8);
        assert!(matches!(
            mail_params(&caps(None, false, false), &ascii, eight),
            Err(SmtpError::EightBitNotOffered)
        ));

        let utf8 = Envelope::new("a@example.com", ["josé@example.com"]);
        assert!(utf8.needs_smtputf8() && !ascii.needs_smtputf8());
        assert!(
            mail_params(&caps(None, true, true), &utf8, body)
                .unwrap()
                .smtputf8
        );
        assert!(matches!(
            mail_params(&caps(None, true, false), &utf8, body),
            Err(SmtpError::SmtpUtf8NotOffered)
        ));
    }

    #[test]
    fn too_large_is_refused_before_sending() {
        let env = Envelope::new("a@example.com", ["b@example.com"]);
        let body = scan_body(&[b'x'; 100]);
        match mail_params(&caps(Some(50), true, true), &env, body) {
            Err(SmtpError::MessageTooLarge { size, limit }) => assert_eq!((size, limit), (102, 50)),
            other => panic!("{other:?}"),
        }
        assert!(mail_params(&caps(Some(102), true, true), &env, body).is_ok());
    }

    #[test]
    fn envelope_checks_stop_injection() {
        assert!(Envelope::new("", ["b@example.com"]).check().is_ok());
        for bad in [
            Envelope::new("a@example.com", Vec::<String>::new()),
            Envelope::new("a@example.com", [""]),
            Envelope::new(
                "a@example.com>\r\nRCPT TO:<x@evil.example",
                ["b@example.com"],
            ),
            Envelope::new("a@example.com", ["b@example.com\nDATA"]),
            Envelope::new("a@example.com", ["<b@example.com>"]),
        ] {
            assert!(
                matches!(bad.check(), Err(SmtpError::InvalidEnvelope(_))),
                "{bad:?}"
            );
        }
    }
}
