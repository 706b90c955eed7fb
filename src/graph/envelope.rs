//! Graph takes the recipients from the message headers, not from an envelope. Postern makes the
//! envelope win: envelope recipients missing from To/Cc/Bcc are added in one `Bcc:` header at the
//! top, and header recipients that are not in the envelope are removed from the copy sent (their
//! To/Cc/Bcc field is rewritten without them), so Graph mails exactly the envelope. Sans-IO.
//!
//! Why remove rather than refuse: an MTA that splits a message by recipient domain (and Postern's own
//! per-message recipient limit) hands over the same headers with part of the envelope; refusing
//! would fail legitimate mail, sending as-is would mail people twice or uninvited.

/// The message to send, and what was changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prepared {
    pub mime: Vec<u8>,
    /// Envelope recipients added as Bcc.
    pub added_bcc: Vec<String>,
    /// Header recipients removed because the envelope does not name them.
    pub removed: Vec<String>,
}

/// A header field's byte range and what replaces it (`None`: the field is dropped).
type Rewrite = ((usize, usize), Option<Vec<u8>>);

const RECIPIENT_FIELDS: [&str; 3] = ["to", "cc", "bcc"];

/// The header block's fields as byte ranges (each with its folded continuation lines and CRLF),
/// and where the body starts.
fn fields(mime: &[u8]) -> (Vec<(usize, usize)>, usize) {
    let mut out = Vec::new();
    let mut i = 0;
    while i < mime.len() {
        // The empty line ends the header block.
        if mime[i..].starts_with(b"\r\n") {
            return (out, i);
        }
        if mime[i] == b'\n' {
            return (out, i);
        }
        let start = i;
        loop {
            match mime[i..].iter().position(|&b| b == b'\n') {
                Some(n) => i += n + 1,
                None => {
                    i = mime.len();
                    break;
                }
            }
            // A line starting with space or tab continues the field.
            if !matches!(mime.get(i), Some(b' ' | b'\t')) {
                break;
            }
        }
        out.push((start, i));
    }
    (out, mime.len())
}

fn field_name(raw: &[u8]) -> Option<String> {
    let colon = raw.iter().position(|&b| b == b':')?;
    Some(
        String::from_utf8_lossy(&raw[..colon])
            .trim()
            .to_ascii_lowercase(),
    )
}

/// The addresses of one To/Cc/Bcc field, with their display names.
fn addresses(raw: &[u8], name: &str) -> Vec<(Option<String>, String)> {
    let mut msg = raw.to_vec();
    msg.extend_from_slice(b"\r\n");
    let Some(parsed) = mail_parser::MessageParser::default().parse(&msg) else {
        return Vec::new();
    };
    let list = match name {
        "to" => parsed.to(),
        "cc" => parsed.cc(),
        _ => parsed.bcc(),
    };
    list.map(|a| {
        a.iter()
            .filter_map(|x| {
                x.address()
                    .map(|e| (x.name().map(str::to_string), e.to_string()))
            })
            .collect()
    })
    .unwrap_or_default()
}

fn quote_name(name: &str) -> String {
    let clean: String = name.chars().filter(|c| !c.is_control()).collect();
    format!("\"{}\"", clean.replace('\\', "\\\\").replace('"', "\\\""))
}

fn display_name(name: &str) -> String {
    match name {
        "to" => "To".into(),
        "cc" => "Cc".into(),
        _ => "Bcc".into(),
    }
}

/// Makes `mime`'s header recipients equal the envelope's `recipients`.
pub fn prepare(mime: &[u8], recipients: &[String]) -> Prepared {
    let in_envelope = |a: &str| recipients.iter().any(|r| r.eq_ignore_ascii_case(a));
    let (ranges, _) = fields(mime);
    let mut seen: Vec<String> = Vec::new();
    let mut removed: Vec<String> = Vec::new();
    // Rewritten fields: (range, replacement or None to drop).
    let mut rewrites: Vec<Rewrite> = Vec::new();
    for &(start, end) in &ranges {
        let raw = &mime[start..end];
        let Some(name) = field_name(raw) else {
            continue;
        };
        if !RECIPIENT_FIELDS.contains(&name.as_str()) {
            continue;
        }
        let addrs = addresses(raw, &name);
        let (keep, drop): (Vec<_>, Vec<_>) = addrs.into_iter().partition(|(_, a)| in_envelope(a));
        seen.extend(keep.iter().map(|(_, a)| a.to_ascii_lowercase()));
        if drop.is_empty() {
            continue;
        }
        removed.extend(drop.into_iter().map(|(_, a)| a));
        let replacement = (!keep.is_empty()).then(|| {
            let list: Vec<String> = keep
                .iter()
                .map(|(n, a)| match n {
                    Some(n) if !n.is_empty() => format!("{} <{a}>", quote_name(n)),
                    _ => a.clone(),
                })
                .collect();
            format!("{}: {}\r\n", display_name(&name), list.join(", ")).into_bytes()
        });
        rewrites.push(((start, end), replacement));
    }
    let added_bcc: Vec<String> = {
        let mut v: Vec<String> = Vec::new();
        for r in recipients {
            let lower = r.to_ascii_lowercase();
            if !seen.contains(&lower) && !v.iter().any(|x| x.eq_ignore_ascii_case(r)) {
                v.push(r.clone());
            }
        }
        v
    };
    let mut out = Vec::with_capacity(mime.len() + 64 * added_bcc.len().min(100));
    if !added_bcc.is_empty() {
        out.extend_from_slice(format!("Bcc: {}\r\n", added_bcc.join(", ")).as_bytes());
    }
    let mut at = 0;
    for ((start, end), replacement) in rewrites {
        out.extend_from_slice(&mime[at..start]);
        if let Some(r) = replacement {
            out.extend_from_slice(&r);
        }
        at = end;
    }
    out.extend_from_slice(&mime[at..]);
    Prepared {
        mime: out,
        added_bcc,
        removed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    const MSG: &str = "From: App <app@contoso.com>\r\nTo: Ann <ann@example.org>,\r\n bob@example.org\r\nCc: carl@example.net\r\nSubject: hi\r\n\r\nTo: not-a-header@example.org\r\nbody\r\n";

    #[test]
    fn an_envelope_matching_the_headers_leaves_the_message_byte_for_byte() {
        let p = prepare(
            MSG.as_bytes(),
            &env(&["ann@example.org", "BOB@example.org", "carl@example.net"]),
        );
        assert_eq!(p.mime, MSG.as_bytes());
        assert!(p.added_bcc.is_empty() && p.removed.is_empty());
    }

    #[test]
    fn envelope_only_recipients_are_added_as_one_bcc_header_on_top() {
        let p = prepare(
            MSG.as_bytes(),
            &env(&[
                "ann@example.org",
                "bob@example.org",
                "carl@example.net",
                "dan@example.com",
                "eve@example.com",
            ]),
        );
        let expected = format!("Bcc: dan@example.com, eve@example.com\r\n{MSG}");
        assert_eq!(String::from_utf8(p.mime).unwrap(), expected);
        assert_eq!(p.added_bcc, ["dan@example.com", "eve@example.com"]);
    }

    #[test]
    fn header_recipients_not_in_the_envelope_are_removed_from_the_copy_sent() {
        let p = prepare(MSG.as_bytes(), &env(&["bob@example.org"]));
        let out = String::from_utf8(p.mime).unwrap();
        assert_eq!(
            out,
            "From: App <app@contoso.com>\r\nTo: bob@example.org\r\nSubject: hi\r\n\r\nTo: not-a-header@example.org\r\nbody\r\n",
            "the Cc field is gone (nobody left), the body is untouched"
        );
        assert_eq!(p.removed, ["ann@example.org", "carl@example.net"]);
        // Display names are kept for those who stay.
        let p = prepare(
            MSG.as_bytes(),
            &env(&["ann@example.org", "carl@example.net"]),
        );
        let out = String::from_utf8(p.mime).unwrap();
        assert!(
            out.contains("\r\nTo: \"Ann\" <ann@example.org>\r\nCc: carl@example.net\r\n"),
            "{out}"
        );
    }

    #[test]
    fn a_message_without_recipient_headers_gets_the_envelope_as_bcc() {
        let msg = b"Subject: x\r\n\r\nbody";
        let p = prepare(msg, &env(&["a@example.org"]));
        assert_eq!(p.mime, b"Bcc: a@example.org\r\nSubject: x\r\n\r\nbody");
    }
}
